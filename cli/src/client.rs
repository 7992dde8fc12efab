//! Connection to the controller: a lazily connected channel per address with
//! a short connect timeout (several addresses: calls go to the leader, see
//! [`crate::leader`]), TLS for an `https://` address (see [`crate::tls`]), and
//! the bearer token attached to every call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use worker_proto::v1::controller_service_client::ControllerServiceClient;

use crate::error::CliError;
use crate::leader::LeaderChannel;

/// How long to wait for the TCP/HTTP2 connection before reporting the controller
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The generated `ControllerService` client, with authentication, over the
/// transport that finds the leader.
pub type Client = ControllerServiceClient<InterceptedService<LeaderChannel, Auth>>;

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
    worker_agent::controllers::normalize(url)
}

/// The addresses of `--controller` (one, or a comma-separated list), each
/// with a scheme; a bad one is a usage error naming it.
pub fn parse_controllers(text: &str) -> Result<Vec<String>, CliError> {
    worker_agent::controllers::parse_list(text).map_err(|e| CliError::usage(format!("--controller: {e}")))
}

/// How error messages name the controller(s) of `--controller`: the address,
/// or the addresses of a list joined by ", " (as given when it does not parse).
pub fn describe_controllers(text: &str) -> String {
    match worker_agent::controllers::parse_list(text) {
        Ok(urls) => urls.join(", "),
        Err(_) => normalize_url(text),
    }
}

/// A client of the controller at `url`. Nothing is dialled until the first call;
/// a controller that cannot be reached then fails that call with `Unavailable`
/// within [`CONNECT_TIMEOUT`].
pub fn connect(url: &str, token: Option<&str>) -> Result<Client, CliError> {
    connect_tls(url, token, &crate::tls::TlsArgs::default())
}

/// The transport to the controller(s) of `controllers` (one address, or a
/// comma-separated list: calls go to the leader, see [`crate::leader`]), with
/// the TLS options `tls` for `https://` addresses (without `--tls-ca` the
/// built-in Mozilla roots are trusted).
pub fn channel(controllers: &str, tls: &crate::tls::TlsArgs) -> Result<LeaderChannel, CliError> {
    let tls = tls.clone();
    LeaderChannel::new(&parse_controllers(controllers)?, move |url| {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| CliError::usage(format!("--controller: invalid URL `{url}`: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        Ok(crate::tls::configure(endpoint, url, &tls)?.connect_lazy())
    })
}

/// [`connect`] with the TLS options `tls`.
pub fn connect_tls(controllers: &str, token: Option<&str>, tls: &crate::tls::TlsArgs) -> Result<Client, CliError> {
    Ok(
        ControllerServiceClient::with_interceptor(channel(controllers, tls)?, Auth::new(token)?)
            .max_decoding_message_size(64 * 1024 * 1024),
    )
}

/// The generated `CatalogService` client, with authentication.
pub type CatalogClient =
    worker_proto::v1::catalog_service_client::CatalogServiceClient<InterceptedService<LeaderChannel, Auth>>;

/// A `CatalogService` client of the controller(s) `controllers`, connected as
/// [`connect_tls`] connects.
pub fn connect_catalog(
    controllers: &str,
    token: Option<&str>,
    tls: &crate::tls::TlsArgs,
) -> Result<CatalogClient, CliError> {
    Ok(
        worker_proto::v1::catalog_service_client::CatalogServiceClient::with_interceptor(
            channel(controllers, tls)?,
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

    #[test]
    fn controller_lists_parse_and_bad_entries_are_usage_errors() {
        assert_eq!(
            parse_controllers("a:1, https://b:2").unwrap(),
            ["http://a:1", "https://b:2"]
        );
        assert_eq!(describe_controllers("a:1,b:2"), "http://a:1, http://b:2");
        assert_eq!(describe_controllers("127.0.0.1:7070"), "http://127.0.0.1:7070");
        let err = parse_controllers("http://a:1,http://b c:2").unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("`http://b c:2`"), "{}", err.message);
        // The TLS check applies to every address.
        let tls = crate::tls::TlsArgs {
            tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let err = connect_tls("http://b:2,https://a:1", None, &tls).err().unwrap();
        assert!(err.message.contains("`http://b:2`"), "{}", err.message);
    }
}
