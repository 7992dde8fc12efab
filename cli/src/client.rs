//! Connection to the controller: a lazily connected channel with a short connect
//! timeout, TLS for an `https://` address (see [`crate::tls`]), and the bearer
//! token attached to every call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use worker_proto::v1::controller_service_client::ControllerServiceClient;

use crate::error::CliError;

/// How long to wait for the TCP/HTTP2 connection before reporting the controller
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The generated `ControllerService` client, with authentication.
pub type Client = ControllerServiceClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Debug, Clone)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Auth {
    /// An interceptor for `token` (none: requests go out unauthenticated).
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        let header = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| CliError::usage("--token: the token contains characters not allowed in a header"))?,
            ),
        };
        Ok(Self { header })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The controller address with a scheme: `127.0.0.1:7070` becomes
/// `http://127.0.0.1:7070`.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// A client of the controller at `url`. Nothing is dialled until the first call;
/// a controller that cannot be reached then fails that call with `Unavailable`
/// within [`CONNECT_TIMEOUT`].
pub fn connect(url: &str, token: Option<&str>) -> Result<Client, CliError> {
    connect_tls(url, token, &crate::tls::TlsArgs::default())
}

/// [`connect`] with the TLS options `tls` (used for an `https://` address;
/// without `--tls-ca` the built-in Mozilla roots are trusted).
pub fn connect_tls(url: &str, token: Option<&str>, tls: &crate::tls::TlsArgs) -> Result<Client, CliError> {
    let normalized = normalize_url(url);
    let endpoint = Endpoint::from_shared(normalized.clone())
        .map_err(|e| CliError::usage(format!("--controller: invalid URL `{url}`: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let endpoint = crate::tls::configure(endpoint, &normalized, tls)?;
    let channel = endpoint.connect_lazy();
    Ok(ControllerServiceClient::with_interceptor(channel, Auth::new(token)?)
        .max_decoding_message_size(64 * 1024 * 1024))
}

/// The generated `CatalogService` client, with authentication.
pub type CatalogClient =
    worker_proto::v1::catalog_service_client::CatalogServiceClient<InterceptedService<Channel, Auth>>;

/// A `CatalogService` client of the controller at `url`, connected as
/// [`connect_tls`] connects.
pub fn connect_catalog(url: &str, token: Option<&str>, tls: &crate::tls::TlsArgs) -> Result<CatalogClient, CliError> {
    let normalized = normalize_url(url);
    let endpoint = Endpoint::from_shared(normalized.clone())
        .map_err(|e| CliError::usage(format!("--controller: invalid URL `{url}`: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let endpoint = crate::tls::configure(endpoint, &normalized, tls)?;
    Ok(
        worker_proto::v1::catalog_service_client::CatalogServiceClient::with_interceptor(
            endpoint.connect_lazy(),
            Auth::new(token)?,
        )
        .max_decoding_message_size(64 * 1024 * 1024),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_becomes_bearer_header() {
        let mut auth = Auth::new(Some("s3cret")).unwrap();
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer s3cret");

        let mut auth = Auth::new(None).unwrap();
        let request = auth.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn bad_token_is_a_usage_error() {
        assert_eq!(Auth::new(Some("a\nb")).unwrap_err().code, 2);
    }

    #[test]
    fn url_gets_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(normalize_url("https://ctl:7070"), "https://ctl:7070");
    }
}
