//! `GET /metrics`: the Prometheus text format.
//!
//! With authentication on (a token is stored or a bootstrap token given) the
//! request needs `Authorization: Bearer <token>` of a role that
//! [`crate::auth::roles::HTTP_MATRIX`] allows (viewer, operator, admin):
//! 401 without a valid token, 403 for another role. Without authentication
//! it is open (the controller then listens on loopback only).
//!
//! A scrape holds the engine's core lock only to read index sizes (see
//! [`crate::engine::Engine::gauges`]); encoding happens after it is released.
//!
//! A controller without an engine answers by its leadership: a standby (high
//! availability: another controller leads, or an election is under way)
//! answers 200 with the leadership series only (`worker_leader 0`,
//! `worker_leader_epoch 0`, `worker_leadership_changes_total`); a controller
//! recovering its queue answers 503.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::metrics::{LeadershipGauges, encode_leadership};
use crate::auth::roles::METRICS;
use crate::http::Leadership;

/// `GET /metrics`.
pub async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let principal = match state.tokens.authenticate(authorization, crate::time::now_ms()) {
        Ok(principal) => principal,
        Err(status) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                format!("{}\n", status.message()),
            )
                .into_response();
        }
    };
    if let Err(status) = principal.authorize(METRICS) {
        return (StatusCode::FORBIDDEN, format!("{}\n", status.message())).into_response();
    }
    let leadership = state.readiness.leadership();
    let leadership_gauges = LeadershipGauges::of(&leadership, crate::ha::terms_begun());
    let text = match state.readiness.engine() {
        Some(engine) => {
            let mut gauges = engine.gauges().await;
            gauges.leadership = leadership_gauges;
            engine.metrics().encode(&gauges)
        }
        // A standby (or a controller between terms) has no engine: the
        // leadership series only.
        None if matches!(leadership, Leadership::Unknown | Leadership::Follower { .. }) => {
            encode_leadership(&leadership_gauges)
        }
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "recovering: metrics are served once the queue is rebuilt\n",
            )
                .into_response();
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(super::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}
