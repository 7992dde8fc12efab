//! TLS to the controller: an `https://` address turns it on (rustls with the
//! ring provider, through tonic).
//!
//! The controller's certificate is verified against `--tls-ca` (env
//! `WORKER_TLS_CA`), or, without it, against the Mozilla root certificates
//! built into `workerctl` (webpki-roots), so the answer does not depend on the
//! machine's certificate store. `--tls-cert`/`--tls-key` present a client
//! certificate; the controller never requires one of `workerctl` (only of
//! agents), but a proxy in front of it may. Files are read and checked before
//! anything is dialled: a bad one is a usage error (exit 2) naming the flag and
//! the file. A certificate the client does not trust is exit 4 with a message
//! that says so and names `--tls-ca` ([`explain_handshake_failure`]).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::CliError;

/// Largest certificate or key file read.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// The TLS options of every command.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM file of the CA that signed the controller's certificate (for an
    /// https:// controller) [default: the Mozilla root certificates built in].
    #[arg(long, global = true, env = "WORKER_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate (chain) to present, with --tls-key.
    #[arg(long, global = true, env = "WORKER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "WORKER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn any(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }
}

/// Whether `url` (with its scheme) asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Turns on TLS for `endpoint` when `url` is `https://`, reading the files of
/// `tls`. TLS options with an `http://` address are a usage error.
pub fn configure(endpoint: Endpoint, url: &str, tls: &TlsArgs) -> Result<Endpoint, CliError> {
    if !is_https(url) {
        if tls.any() {
            return Err(CliError::usage(format!(
                "--tls-ca, --tls-cert and --tls-key need an https:// controller address (got `{url}`)"
            )));
        }
        return Ok(endpoint);
    }
    let mut config = ClientTlsConfig::new();
    config = match &tls.tls_ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(load_certs("--tls-ca", ca)?)),
        None => config.with_webpki_roots(),
    };
    match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = load_certs("--tls-cert", cert)?;
            let key_pem = load_key("--tls-key", key, &cert_pem)?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        _ => return Err(CliError::usage("--tls-cert and --tls-key: give both or neither")),
    }
    endpoint
        .tls_config(config)
        .map_err(|e| CliError::usage(format!("TLS settings for `{url}`: {e}")))
}

/// A file of at most [`MAX_PEM_FILE_BYTES`].
fn read_limited(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let error = |reason: String| CliError::usage(format!("{flag} {}: {reason}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| error(format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(error(format!("larger than {MAX_PEM_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// The PEM text of a certificate file holding at least one valid certificate.
fn load_certs(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let pem = read_limited(flag, path)?;
    let error = |reason: String| CliError::usage(format!("{flag} {}: {reason}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    for (i, cert) in certs.iter().enumerate() {
        rustls::server::ParsedCertificate::try_from(cert)
            .map_err(|e| error(format!("certificate {} is not a valid X.509 certificate: {e}", i + 1)))?;
    }
    Ok(pem)
}

/// The PEM text of a private key file whose key matches `cert_pem`'s first certificate.
fn load_key(flag: &str, path: &Path, cert_pem: &[u8]) -> Result<Vec<u8>, CliError> {
    let pem = read_limited(flag, path)?;
    let error = |reason: String| CliError::usage(format!("{flag} {}: {reason}", path.display()));
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| error(format!("holds no usable PEM private key: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| error(format!("does not match the certificate of --tls-cert: {e}")))?;
    Ok(pem)
}

/// The message for a connection failure whose cause (`detail`, the error
/// chain) is a server certificate this client does not trust; `None` for
/// other failures.
pub fn explain_handshake_failure(controller: &str, detail: &str) -> Option<String> {
    let start = detail.find("invalid peer certificate")?;
    let reason = detail[start..].split(": ").take(2).collect::<Vec<_>>().join(": ");
    Some(format!(
        "the TLS certificate of the controller at {controller} was not trusted ({reason}); give the CA that \
         signed it with --tls-ca FILE (or WORKER_TLS_CA)"
    ))
}

/// The message for a plain-text (`http://`) call that got no HTTP/2 answer
/// it could read, as happens against a controller serving TLS; `None` for
/// other failures. Exit 4: the controller cannot be talked to this way.
pub fn explain_plain_text_to_tls(controller: &str, message: &str) -> Option<String> {
    // Against a TLS port the HTTP/2 handshake fails; depending on timing
    // tonic reports it as an h2 protocol error or a bare "transport error".
    if is_https(controller) || !(message.contains("h2 protocol error") || message == "transport error") {
        return None;
    }
    Some(format!(
        "cannot talk to the controller at {controller}: {message} (if it serves TLS, use an https:// \
         address and --tls-ca)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::from_static("https://127.0.0.1:7070")
    }

    #[test]
    fn tls_options_need_https() {
        let tls = TlsArgs {
            tls_ca: Some("ca.pem".into()),
            ..TlsArgs::default()
        };
        let err = configure(Endpoint::from_static("http://x:1"), "http://x:1", &tls).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("https://"), "{}", err.message);
        assert!(configure(Endpoint::from_static("http://x:1"), "http://x:1", &TlsArgs::default()).is_ok());
    }

    #[test]
    fn bad_files_are_usage_errors_naming_flag_and_file() {
        let tls = TlsArgs {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..TlsArgs::default()
        };
        let err = configure(endpoint(), "https://127.0.0.1:7070", &tls).unwrap_err();
        assert_eq!(err.code, 2);
        assert!(
            err.message.starts_with("--tls-ca /nonexistent/ca.pem: cannot read"),
            "{}",
            err.message
        );

        let path = std::env::temp_dir().join(format!("workerctl-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let tls = TlsArgs {
            tls_ca: Some(path.clone()),
            ..TlsArgs::default()
        };
        let err = configure(endpoint(), "https://127.0.0.1:7070", &tls).unwrap_err();
        assert!(err.message.contains("holds no PEM certificate"), "{}", err.message);
        let _ = std::fs::remove_file(path);

        let tls = TlsArgs {
            tls_cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        let err = configure(endpoint(), "https://127.0.0.1:7070", &tls).unwrap_err();
        assert!(err.message.contains("both or neither"), "{}", err.message);
    }

    #[test]
    fn untrusted_certificate_is_explained() {
        let detail = "transport error: invalid peer certificate: UnknownIssuer: more";
        let text = explain_handshake_failure("https://h:1", detail).unwrap();
        assert!(
            text.contains("was not trusted (invalid peer certificate: UnknownIssuer)"),
            "{text}"
        );
        assert!(text.contains("--tls-ca"), "{text}");
        assert!(explain_handshake_failure("https://h:1", "Connection refused").is_none());
        let text = explain_plain_text_to_tls("http://h:1", "h2 protocol error: http2 error").unwrap();
        assert!(text.contains("https://"), "{text}");
        assert!(explain_plain_text_to_tls("https://h:1", "h2 protocol error").is_none());
    }
}
