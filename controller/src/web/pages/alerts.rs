//! (being written)

use axum::Router;

use crate::http::HttpState;

/// This area's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
}
