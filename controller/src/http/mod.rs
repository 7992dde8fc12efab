//! The controller's HTTP listener (`--http-listen`, default
//! `127.0.0.1:7080`, `off` to disable): probes and metrics for the systems
//! around Worker, on the same tokio runtime as gRPC (docs/operations.md).
//!
//! * [`health`]: `/healthz` (the process answers) and `/readyz` (store
//!   reachable, recovery done, loops running), from a shared [`Readiness`];
//! * [`metrics`]: the Prometheus instruments the engine records into, and
//!   their text;
//! * [`scrape`]: `/metrics`, checked by role when authentication is on;
//! * the web UI ([`crate::web`]) on every other path.
//!
//! The listener is bound after the store is open and the addresses are
//! checked, but before recovery, so that a probe sees "recovering" rather
//! than a closed port while a large queue is rebuilt.

pub mod health;
pub mod metrics;
pub mod scrape;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub use health::{Leadership, Phase, Readiness};

use crate::auth::Tokens;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Whether the controller is ready, and its engine once recovered.
    pub readiness: Arc<Readiness>,
    /// Tokens, for `/metrics` and the web UI's sign-in.
    pub tokens: Arc<Tokens>,
    /// The web UI's sessions and its connection to the API.
    pub web: Arc<crate::web::Web>,
}

/// The routes: `/healthz`, `/readyz`, `/metrics`, and the web UI's
/// ([`crate::web`]).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(scrape::metrics))
        .merge(crate::web::router(state.clone()))
        .with_state(state)
}

/// Serves `state` on `listener` until `stop` completes (in-flight requests
/// finish first).
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(stop).await
}

/// Parses `--http-listen`: an address, or `off`.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| format!("invalid address \"{text}\": {e} (expected HOST:PORT such as 127.0.0.1:7080, or off)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_flag_takes_an_address_or_off() {
        assert_eq!(parse_listen("off").unwrap(), None);
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        let err = parse_listen("localhost").unwrap_err();
        assert!(err.contains("invalid address \"localhost\""), "{err}");
    }
}
