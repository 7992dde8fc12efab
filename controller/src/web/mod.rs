//! The web UI, served by the controller's HTTP listener (`--http-listen`)
//! beside `/healthz`, `/readyz` and `/metrics` (docs/web-ui.md).
//!
//! Pages are rendered on the server from [`maud`] templates (checked at
//! compile time, every interpolation HTML-escaped); one small vendored
//! script (`assets/app.js`, plain JS) adds the live parts: the cron preview as
//! you type, live logs and counters over server-sent events, confirmations.
//! Nothing is fetched from elsewhere and there is no front-end build step.
//!
//! Layout:
//! * [`session`] — sign-in by token, the session cookie, the [`Caller`] of a
//!   request, and the CSRF guard every state-changing request passes;
//! * [`form`] — form bodies and query strings;
//! * [`layout`] — the page shell (navigation, flash messages) and small
//!   shared pieces (badges, times, tables, error texts);
//! * [`assets`] — the stylesheet and the script;
//! * one module per area under [`pages`].
//!
//! **No second implementation of any rule**: every read and every action
//! goes through the gRPC service ([`crate::api::controller::ControllerApi`])
//! in process, with the caller's [`crate::auth::Principal`] checked against
//! the same role matrix first ([`Caller::request`]). What a role may not do is
//! not offered ([`Caller::may`]), and is refused if tried.

pub mod assets;
pub mod form;
pub mod layout;
pub mod pages;
pub mod session;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use session::{Caller, Sessions};

use crate::api::controller::ControllerApi;
use crate::http::HttpState;

/// What the web UI shares between requests.
pub struct Web {
    /// The gRPC service the pages call, set once the engine has recovered.
    api: OnceLock<Arc<ControllerApi>>,
    /// Signed-in browsers.
    pub sessions: Sessions,
    /// Whether session cookies carry `Secure` (the UI is reached over
    /// HTTPS: `--web-url` starts with `https://`).
    pub secure_cookies: bool,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("ready", &self.api.get().is_some())
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

impl Web {
    /// A web UI with no signed-in browser; `secure_cookies` as above.
    pub fn new(secure_cookies: bool) -> Web {
        Web {
            api: OnceLock::new(),
            sessions: Sessions::default(),
            secure_cookies,
        }
    }

    /// Connects the pages to the service (once, after recovery).
    pub fn set_api(&self, api: Arc<ControllerApi>) {
        let _ = self.api.set(api);
    }

    /// The service, or 503 while the controller recovers.
    pub fn api(&self) -> Result<&ControllerApi, WebError> {
        self.api.get().map(|a| a.as_ref()).ok_or_else(|| WebError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the controller is recovering its queue; try again in a moment".into(),
        })
    }
}

/// The web UI's routes, every state-changing one behind the CSRF guard.
pub fn router(state: HttpState) -> Router<HttpState> {
    Router::new()
        .merge(session::routes())
        .merge(assets::routes())
        .merge(pages::routes())
        .fallback(|| async { WebError::not_found("there is no page at this address") })
        .layer(axum::middleware::from_fn_with_state(state, session::csrf_guard))
}

/// An error shown to the user as a page (or, for fragments, as text): the
/// API's message in words, with the HTTP status that matches its code.
#[derive(Debug, Clone)]
pub struct WebError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, in words (already bounded and escaped of controls by
    /// the API; HTML-escaped when rendered).
    pub message: String,
}

impl WebError {
    /// A 404 for `what`.
    pub fn not_found(what: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
        }
    }

    /// A 400 for `what`.
    pub fn bad_request(what: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::BAD_REQUEST,
            message: what.into(),
        }
    }
}

impl From<tonic::Status> for WebError {
    fn from(status: tonic::Status) -> WebError {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        WebError {
            status: http,
            message: status.message().to_string(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = layout::error_page(self.status, &self.message);
        (self.status, body).into_response()
    }
}

/// The result of a page handler.
pub type WebResult<T = Response> = Result<T, WebError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_codes_become_http_statuses() {
        let cases = [
            (tonic::Status::invalid_argument("x"), StatusCode::BAD_REQUEST),
            (tonic::Status::not_found("x"), StatusCode::NOT_FOUND),
            (tonic::Status::permission_denied("x"), StatusCode::FORBIDDEN),
            (tonic::Status::failed_precondition("x"), StatusCode::CONFLICT),
            (tonic::Status::unavailable("x"), StatusCode::SERVICE_UNAVAILABLE),
            (tonic::Status::internal("x"), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (status, http) in cases {
            let e = WebError::from(status);
            assert_eq!(e.status, http);
            assert_eq!(e.message, "x");
        }
    }
}
