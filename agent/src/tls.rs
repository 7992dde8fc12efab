//! TLS of the agent's connection, and the PEM file loading the controller
//! shares.
//!
//! An `https://` controller address turns TLS on (rustls with the ring
//! provider, through tonic). The controller's certificate is verified against
//! the CA file of [`AgentConfig::tls_ca`], or, without one, against the Mozilla
//! root certificates compiled into the binary (`webpki-roots`: the same answer
//! on every machine, whatever its system store holds). A client certificate
//! ([`AgentConfig::tls_cert`] and [`AgentConfig::tls_key`]) is presented when
//! the controller requires one (mTLS). The controller's `--dev` agent instead
//! trusts exactly the controller's own certificate
//! ([`AgentConfig::tls_pinned_cert`]): it runs in the same process, so there
//! is no name to check and no CA to name.
//!
//! Every file is read and parsed up front, before anything is dialled, so a
//! bad file is a configuration error naming the flag and the file rather than
//! a handshake that fails forever in the reconnect loop.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{AgentConfig, AgentError};

/// Largest certificate or key file read (a real one is a few KiB; this keeps a
/// mistaken path such as `/dev/zero` from eating memory).
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// A certificate, key or CA file that cannot be used, with the flag that
/// named it.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {reason}", path.display())]
pub struct TlsFileError {
    /// The command-line flag (`--tls-cert`).
    pub flag: String,
    /// The file as given.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The certificates of a PEM file (a chain, or a CA bundle), as read.
#[derive(Debug, Clone)]
pub struct PemCerts {
    /// The file's text, for tonic.
    pub pem: Vec<u8>,
    /// The certificates in file order (the end-entity first in a chain).
    pub certs: Vec<CertificateDer<'static>>,
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Debug, Clone)]
pub struct PemKeyPair {
    /// The certificate chain.
    pub chain: PemCerts,
    /// The private key file's text, for tonic.
    pub key_pem: Vec<u8>,
}

impl PemKeyPair {
    /// The tonic identity (certificate chain and key).
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.chain.pem, &self.key_pem)
    }
}

/// Reads a file of at most [`MAX_PEM_FILE_BYTES`].
fn read_limited(flag: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let error = |reason: String| TlsFileError {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        reason,
    };
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

/// Reads the PEM certificates of `path` (at least one, each a parseable X.509
/// certificate); `flag` names the option in errors.
pub fn load_certs(flag: &str, path: &Path) -> Result<PemCerts, TlsFileError> {
    let pem = read_limited(flag, path)?;
    let error = |reason: String| TlsFileError {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        reason,
    };
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
    Ok(PemCerts { pem, certs })
}

/// Reads a certificate chain and its private key and checks that the key is
/// the one the first certificate was issued for.
pub fn load_key_pair(cert_flag: &str, cert: &Path, key_flag: &str, key: &Path) -> Result<PemKeyPair, TlsFileError> {
    let chain = load_certs(cert_flag, cert)?;
    let key_pem = read_limited(key_flag, key)?;
    let key_error = |reason: String| TlsFileError {
        flag: key_flag.to_string(),
        path: key.to_path_buf(),
        reason,
    };
    let parsed = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key_error(format!("holds no usable PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.certs.clone(), parsed, &provider).map_err(|e| {
        key_error(format!(
            "does not match the certificate of {cert_flag} {}: {e}",
            cert.display()
        ))
    })?;
    Ok(PemKeyPair { chain, key_pem })
}

/// Whether `url` asks for TLS.
pub fn is_https(url: &str) -> bool {
    url.trim().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Checks the TLS fields against each other and the controller addresses
/// (files are read later, by [`ClientTls::load`]): TLS options need every
/// address to be `https://`.
pub(crate) fn validate(config: &AgentConfig, urls: &[String]) -> Result<(), AgentError> {
    let bad = |msg: String| Err(AgentError::Config(msg));
    if let Some(plain) = urls.iter().find(|url| tls_options_given(config) && !is_https(url)) {
        return bad(need_https(plain));
    }
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return bad("--tls-cert and --tls-key: give both or neither".into());
    }
    Ok(())
}

fn tls_options_given(config: &AgentConfig) -> bool {
    config.tls_ca.is_some() || config.tls_cert.is_some() || config.tls_key.is_some() || config.tls_pinned_cert.is_some()
}

fn need_https(url: &str) -> String {
    format!("--tls-ca, --tls-cert and --tls-key need an https:// controller address (got `{url}`)")
}

/// The TLS settings of the agent's connections, every file read once, so
/// that an endpoint for any address (one of the list, or a leader a standby
/// names) gets the same settings without reading them again.
#[derive(Clone)]
pub(crate) struct ClientTls {
    tls: ClientTlsConfig,
    pinned: Option<Arc<PinnedServerCert>>,
    /// TLS options were given: a plain `http://` address is refused.
    required: bool,
}

impl ClientTls {
    /// Reads every file named in `config`.
    pub(crate) fn load(config: &AgentConfig) -> Result<Self, AgentError> {
        let file_error = |e: TlsFileError| AgentError::Config(e.to_string());
        let mut tls = ClientTlsConfig::new();
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            tls = tls.identity(
                load_key_pair("--tls-cert", cert, "--tls-key", key)
                    .map_err(file_error)?
                    .identity(),
            );
        }
        let pinned = config.tls_pinned_cert.as_ref().map(|pinned| {
            Arc::new(PinnedServerCert {
                cert: CertificateDer::from(pinned.clone()),
                provider: Arc::new(rustls::crypto::ring::default_provider()),
            })
        });
        if pinned.is_none() {
            tls = match &config.tls_ca {
                Some(ca) => {
                    let ca = load_certs("--tls-ca", ca).map_err(file_error)?;
                    tls.ca_certificate(Certificate::from_pem(ca.pem))
                }
                None => tls.with_webpki_roots(),
            };
        }
        Ok(Self {
            tls,
            pinned,
            required: tls_options_given(config),
        })
    }

    /// Turns on TLS for `endpoint` when `url` is `https://`; a plain `url`
    /// when TLS options were given is refused, as in the configuration.
    pub(crate) fn apply(&self, endpoint: Endpoint, url: &str) -> Result<Endpoint, AgentError> {
        if !is_https(url) {
            if self.required {
                return Err(AgentError::Config(need_https(url)));
            }
            return Ok(endpoint);
        }
        let result = match &self.pinned {
            Some(verifier) => endpoint.tls_config_with_verifier(self.tls.clone(), verifier.clone()),
            None => endpoint.tls_config(self.tls.clone()),
        };
        result.map_err(|source| AgentError::InvalidController {
            url: url.to_string(),
            source,
        })
    }
}

/// Accepts exactly one server certificate, whatever names it carries (the
/// `--dev` agent and its own controller); the handshake signatures are still
/// verified, so only the holder of that certificate's key passes.
#[derive(Debug)]
struct PinnedServerCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("worker-agent-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn bad_files_name_flag_and_file() {
        let err = load_certs("--tls-ca", Path::new("/nonexistent/ca.pem")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("--tls-ca /nonexistent/ca.pem: cannot read"), "{text}");

        let path = temp_file("not-pem", b"hello\n");
        let text = load_certs("--tls-ca", &path).unwrap_err().to_string();
        assert!(text.contains("holds no PEM certificate"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");

        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let path = temp_file("garbage", garbage);
        let text = load_certs("--tls-ca", &path).unwrap_err().to_string();
        assert!(text.contains("not a valid X.509 certificate"), "{text}");
    }

    #[test]
    fn tls_options_need_https() {
        let mut config = AgentConfig::new("http://127.0.0.1:7070");
        config.tls_ca = Some("ca.pem".into());
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("https://"), "{text}");
        // Every address of a list.
        let mut config = AgentConfig::new("https://a:7070,http://b:7070");
        config.tls_ca = Some("ca.pem".into());
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("`http://b:7070`"), "{text}");
        let mut config = AgentConfig::new("https://127.0.0.1:7070");
        config.tls_cert = Some("agent.pem".into());
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("both or neither"), "{text}");
        assert!(is_https("HTTPS://ctl:7070"));
        assert!(!is_https("http://ctl:7070"));
    }
}
