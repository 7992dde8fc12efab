//! gRPC over TLS, and client certificates required of agents (mTLS).
//!
//! `--tls-cert` and `--tls-key` (PEM, both or neither) make the controller
//! serve gRPC over TLS (rustls with the ring provider, through tonic).
//! `--tls-client-ca` additionally makes agents prove who they are with a
//! client certificate signed by that CA. The TLS layer asks every client for a
//! certificate but lets one without a certificate finish the handshake, because
//! `workerctl` and other applications have none; a certificate signed by
//! another CA fails the handshake. [`check_agent_certificate`], called first
//! thing by `AgentService.Connect`, then refuses an agent stream that came
//! without a verified certificate (`Unauthenticated`).
//!
//! [`ServerTls::from_flags`] reads and parses every file (and builds the
//! rustls configuration once, as the server will) before anything is opened
//! or bound, so a bad file is a usage error naming the flag and the file.

use std::path::Path;

use tonic::transport::{Certificate, ServerTlsConfig};
use worker_agent::tls::{PemCerts, PemKeyPair, TlsFileError, load_certs, load_key_pair};

/// The refusal an agent without a client certificate gets when mTLS is on.
pub const CLIENT_CERTIFICATE_REQUIRED: &str =
    "this controller requires agents to present a client certificate (--tls-cert/--tls-key on the agent)";

/// The controller's TLS files, read and checked.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate chain served and its key.
    pub identity: PemKeyPair,
    /// The CA agents' client certificates must be signed by (`--tls-client-ca`).
    pub client_ca: Option<PemCerts>,
}

impl ServerTls {
    /// Reads the TLS flags of the binary: `None` without `--tls-cert`/`--tls-key`.
    /// `dev` is whether `--dev` runs an in-process agent, which has no client
    /// certificate and so cannot be combined with `--tls-client-ca`. The error
    /// is a message for an operator (exit 2).
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
        dev: bool,
    ) -> Result<Option<ServerTls>, String> {
        let (cert, key) = match (cert, key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if client_ca.is_none() => return Ok(None),
            (None, None) => return Err("--tls-client-ca needs --tls-cert and --tls-key (TLS must be on)".into()),
            _ => return Err("--tls-cert and --tls-key: give both or neither".into()),
        };
        if dev && client_ca.is_some() {
            return Err(
                "--dev cannot be combined with --tls-client-ca: the in-process agent has no client \
                        certificate; run worker-agent with --tls-cert/--tls-key instead of --dev"
                    .into(),
            );
        }
        let tls = ServerTls::load(cert, key, client_ca).map_err(|e| e.to_string())?;
        // Build the rustls configuration once now, as the server will after binding.
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| format!("--tls-cert {}: unusable for TLS: {}", cert.display(), chain(&e)))?;
        Ok(Some(tls))
    }

    /// Reads the certificate chain, its key and the optional client CA.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsFileError> {
        let identity = load_key_pair("--tls-cert", cert, "--tls-key", key)?;
        let client_ca = match client_ca {
            Some(path) => {
                let ca = load_certs("--tls-client-ca", path)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in &ca.certs {
                    roots.add(cert.clone()).map_err(|e| TlsFileError {
                        flag: "--tls-client-ca".into(),
                        path: path.to_path_buf(),
                        reason: format!("not usable as a CA certificate: {e}"),
                    })?;
                }
                Some(ca)
            }
            None => None,
        };
        Ok(ServerTls { identity, client_ca })
    }

    /// The tonic server configuration: the identity, and with a client CA,
    /// client certificates asked for but optional at the TLS layer.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.identity());
        match &self.client_ca {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(&ca.pem))
                .client_auth_optional(true),
            None => config,
        }
    }

    /// Whether agents must present a client certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The served end-entity certificate (DER), which the `--dev` agent trusts.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.identity.chain.certs[0].as_ref().to_vec()
    }
}

/// Refuses a request without a verified client certificate when `required`
/// (a certificate from another CA never gets this far: the handshake fails).
pub fn check_agent_certificate<T>(required: bool, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
    if required && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
        return Err(tonic::Status::unauthenticated(CLIENT_CERTIFICATE_REQUIRED));
    }
    Ok(())
}

/// `error: cause: cause ...`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_go_together() {
        let p = Path::new("x.pem");
        assert_eq!(
            ServerTls::from_flags(None, None, None, false).unwrap().map(|_| ()),
            None
        );
        let err = ServerTls::from_flags(Some(p), None, None, false).unwrap_err();
        assert!(err.contains("both or neither"), "{err}");
        let err = ServerTls::from_flags(None, None, Some(p), false).unwrap_err();
        assert!(err.contains("--tls-client-ca needs"), "{err}");
        let err = ServerTls::from_flags(Some(p), Some(p), Some(p), true).unwrap_err();
        assert!(err.contains("--dev cannot be combined with --tls-client-ca"), "{err}");
        let err = ServerTls::from_flags(Some(Path::new("/nonexistent/c.pem")), Some(p), None, false).unwrap_err();
        assert!(err.starts_with("--tls-cert /nonexistent/c.pem: cannot read"), "{err}");
    }

    #[test]
    fn agent_without_certificate_is_refused_only_when_required() {
        let request = tonic::Request::new(());
        assert!(check_agent_certificate(false, &request).is_ok());
        let status = check_agent_certificate(true, &request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), CLIENT_CERTIFICATE_REQUIRED);
    }
}
