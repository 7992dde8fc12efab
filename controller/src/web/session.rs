//! Sign-in, sessions and the CSRF guard.
//!
//! * **Sign-in** (`/login`) takes an API token (any role but `agent`); the
//!   browser gets a random session id in the `worker_session` cookie
//!   (`HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the UI is
//!   reached over HTTPS). The token's secret is never stored in the browser
//!   or in the session table: the session holds the token's entry, so a
//!   revoked or expired token ends its sessions at their next request.
//! * Without authentication (no token stored, no bootstrap token: the
//!   controller then listens on loopback only) `/login` signs the browser in
//!   as the anonymous admin at once, with no form.
//! * Sessions live in memory: a restart signs everyone out. A session idle
//!   for [`IDLE_TIMEOUT`] ends; at most [`MAX_SESSIONS`] exist (the least
//!   recently used goes first).
//! * **CSRF**: every request that is not GET or HEAD passes [`csrf_guard`]:
//!   it needs a live session, the session's CSRF token in the form field
//!   `csrf` (or the `X-CSRF-Token` header), and, when the browser sends an
//!   `Origin`, one naming this host. The guard parses the form once and hands
//!   it to the handler as a [`FormData`] extension.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use subtle::ConstantTimeEq;

use super::form::{FormData, MAX_FORM_BYTES, Query};
use super::layout;
use crate::auth::{Principal, Role};
use crate::http::HttpState;
use crate::time::now_ms;

/// The session cookie's name.
pub const COOKIE: &str = "worker_session";
/// A session unused this long ends.
pub const IDLE_TIMEOUT_MS: i64 = 12 * 3600 * 1000;
/// [`IDLE_TIMEOUT_MS`] as a duration, for documentation.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(IDLE_TIMEOUT_MS as u64);
/// Sessions held at most; the least recently used is dropped beyond.
pub const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug)]
pub struct Session {
    /// Who it is: a token's holder, or the anonymous admin.
    pub principal: Principal,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// Last request, Unix ms.
    last_seen: AtomicI64,
    /// A message for the next page shown (after a redirect).
    flash: Mutex<Option<Flash>>,
}

/// A one-time message shown on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// `true`: an error; `false`: a confirmation.
    pub error: bool,
    /// The text.
    pub text: String,
}

/// The session table.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Starts a session for `principal`; returns its id.
    pub fn create(&self, principal: Principal) -> String {
        let id = crate::auth::tokens::generate_secret();
        let session = Arc::new(Session {
            principal,
            csrf: crate::auth::tokens::generate_secret(),
            last_seen: AtomicI64::new(now_ms()),
            flash: Mutex::new(None),
        });
        let mut map = self.by_id.lock().unwrap();
        if map.len() >= MAX_SESSIONS {
            let now = now_ms();
            map.retain(|_, s| now - s.last_seen.load(Ordering::Relaxed) < IDLE_TIMEOUT_MS);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session `id`, touched; `None` (and removed) when it has
    /// expired, its token was revoked or expired, or it is anonymous while
    /// authentication is now on.
    pub fn get(&self, id: &str, auth_on: bool) -> Option<Arc<Session>> {
        let now = now_ms();
        let mut map = self.by_id.lock().unwrap();
        let session = map.get(id)?.clone();
        let idle = now - session.last_seen.load(Ordering::Relaxed) >= IDLE_TIMEOUT_MS;
        let anonymous_now_refused = auth_on && session.principal.is_anonymous();
        if idle || anonymous_now_refused || session.principal.still_valid(now).is_err() {
            map.remove(id);
            return None;
        }
        session.last_seen.store(now, Ordering::Relaxed);
        Some(session)
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        self.by_id.lock().unwrap().remove(id);
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session {
    /// Leaves a message for the next page.
    pub fn flash(&self, error: bool, text: impl Into<String>) {
        *self.flash.lock().unwrap() = Some(Flash {
            error,
            text: text.into(),
        });
    }

    /// Takes the message left for this page, if any.
    pub fn take_flash(&self) -> Option<Flash> {
        self.flash.lock().unwrap().take()
    }
}

/// The signed-in caller of a page request. As an extractor it refuses a
/// request without a live session: a GET is sent to `/login` (and back
/// afterwards), anything else gets 401.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The session.
    pub session: Arc<Session>,
    /// Whether authentication is on (a sign-out button makes sense).
    pub auth_on: bool,
}

impl Caller {
    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.session.principal
    }

    /// Whether the caller's role may call `method` (`ControllerService/X`):
    /// what it may not do is not offered.
    pub fn may(&self, method: &str) -> bool {
        self.principal().authorize(method).is_ok()
    }

    /// A request to the gRPC service for `method` carrying `message`, after
    /// the same role check the gRPC layer makes.
    pub fn request<T>(&self, method: &str, message: T) -> Result<tonic::Request<T>, super::WebError> {
        self.principal().authorize(method)?;
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.principal().clone());
        Ok(request)
    }

    /// The CSRF token for this session's forms.
    pub fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The live session of a request, if any.
pub fn caller_of(headers: &HeaderMap, state: &HttpState) -> Option<Caller> {
    let id = session_id(headers)?;
    let auth_on = state.tokens.enabled();
    let session = state.web.sessions.get(&id, auth_on)?;
    Some(Caller { session, auth_on })
}

impl FromRequestParts<HttpState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Caller, Response> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        if let Some(caller) = caller_of(&parts.headers, state) {
            return Ok(caller);
        }
        if parts.method == Method::GET && !wants_fragment(&parts.headers) {
            let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let to = format!("/login{}", super::form::query_string([("next", next)]));
            return Err(Redirect::to(&to).into_response());
        }
        Err((StatusCode::UNAUTHORIZED, "sign in first (your session ended)\n").into_response())
    }
}

/// Whether the request comes from the script (fetch or EventSource), which
/// wants a status rather than a redirect to the sign-in page.
fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-requested-with")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"))
}

/// A local path to return to after sign-in: only `/...` (never `//host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.starts_with("/login") => {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn cookie(state: &HttpState, id: &str, max_age: Option<i64>) -> HeaderValue {
    let secure = if state.web.secure_cookies { "; Secure" } else { "" };
    let age = match max_age {
        Some(s) => format!("; Max-Age={s}"),
        None => String::new(),
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .expect("session ids are URL-safe")
}

fn signed_in(state: &HttpState, principal: Principal, next: &str) -> Response {
    let id = state.web.sessions.create(principal);
    let mut response = Redirect::to(next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(state, &id, None));
    response
}

/// `GET /login`: the sign-in form, or, without authentication, a session
/// for the anonymous admin at once.
async fn login_page(State(state): State<HttpState>, headers: HeaderMap, query: Query) -> Response {
    let next = safe_next(query.get("next"));
    if caller_of(&headers, &state).is_some() {
        return Redirect::to(&next).into_response();
    }
    if !state.tokens.enabled() {
        return signed_in(&state, Principal::anonymous(), &next);
    }
    login_form(&next, None, StatusCode::OK)
}

fn login_form(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        form.login method="post" action="/login" {
            h1 { "Sign in to Worker" }
            p { "Paste an API token (" code { "workerctl tokens create NAME --role viewer" } "). The browser keeps a session cookie, never the token." }
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "token-error")];
            @if let Some(error) = error {
                p #token-error .field-error role="alert" { (error) }
            }
            button type="submit" { "Sign in" }
        }
    };
    (status, layout::bare_page("Sign in", body)).into_response()
}

/// `POST /login`.
async fn login(State(state): State<HttpState>, axum::Extension(form): axum::Extension<FormData>) -> Response {
    let next = safe_next(form.get("next"));
    if !state.tokens.enabled() {
        return signed_in(&state, Principal::anonymous(), &next);
    }
    let token = form.text("token");
    let header = format!("Bearer {token}");
    match state.tokens.authenticate(Some(header.as_bytes()), now_ms()) {
        Ok(principal) if principal.role == Role::Agent => login_form(
            &next,
            Some("agent tokens cannot sign in to the web UI; use a viewer, operator or admin token"),
            StatusCode::FORBIDDEN,
        ),
        Ok(principal) => {
            tracing::info!(token = %principal.name, role = %principal.role, "web sign-in");
            signed_in(&state, principal, &next)
        }
        Err(status) => login_form(&next, Some(status.message()), StatusCode::UNAUTHORIZED),
    }
}

/// `POST /logout`.
async fn logout(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        state.web.sessions.remove(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", Some(0)));
    response
}

/// `/login` and `/logout`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

fn refused(status: StatusCode, why: &str) -> Response {
    tracing::debug!(why, "web request refused");
    (status, layout::error_page(status, why)).into_response()
}

/// Whether `Origin` (when sent) names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    authority == host
}

/// The guard in front of every state-changing web request (see the module
/// docs). GET and HEAD pass; the probes and `/metrics` are not behind it.
pub async fn csrf_guard(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    if !same_origin(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "refused: the request came from another site (Origin does not match)",
        );
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("refused: the form is larger than {MAX_FORM_BYTES} bytes"),
            );
        }
    };
    let form = FormData::parse(&bytes);
    if parts.uri.path() != "/login" {
        let Some(caller) = caller_of(&parts.headers, &state) else {
            return refused(StatusCode::FORBIDDEN, "refused: no session (sign in, then try again)");
        };
        let sent = form
            .get("csrf")
            .map(str::to_string)
            .or_else(|| {
                parts
                    .headers
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        if !bool::from(sent.as_bytes().ct_eq(caller.csrf().as_bytes())) {
            return refused(
                StatusCode::FORBIDDEN,
                "refused: the form's CSRF token is missing or stale (reload the page and try again)",
            );
        }
        parts.extensions.insert(caller);
    }
    parts.extensions.insert(form);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/runs/01H?x=1")), "/runs/01H?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/login?next=/x")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; worker_session=abc; b=2"));
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("worker_sessionx=1"));
        assert_eq!(session_id(&h), None);
    }

    #[test]
    fn origin_must_name_this_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn sessions_end_for_anonymous_callers_once_authentication_is_on() {
        let sessions = Sessions::default();
        let id = sessions.create(Principal::anonymous());
        assert!(sessions.get(&id, false).is_some());
        assert!(sessions.get(&id, true).is_none());
        assert!(sessions.get(&id, false).is_none(), "removed for good");
    }
}
