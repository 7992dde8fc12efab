//! The stylesheet and the script, compiled into the binary and served with
//! a hash of their content in their path, so browsers may keep them for a
//! year and a changed file is fetched at once.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::HttpState;

/// The stylesheet.
pub const CSS: &str = include_str!("app.css");
/// The script.
pub const JS: &str = include_str!("app.js");

/// Where the stylesheet is served: `/static/app-HASH.css`.
pub static CSS_PATH: LazyLock<String> = LazyLock::new(|| format!("/static/app-{:016x}.css", fnv(CSS)));
/// Where the script is served: `/static/app-HASH.js`.
pub static JS_PATH: LazyLock<String> = LazyLock::new(|| format!("/static/app-{:016x}.js", fnv(JS)));

const CACHE: &str = "public, max-age=31536000, immutable";

/// FNV-1a: enough to tell two versions of a file apart.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn asset(Path(file): Path<String>) -> Response {
    let path = format!("/static/{file}");
    let (body, kind) = if path == *CSS_PATH {
        (CSS, "text/css; charset=utf-8")
    } else if path == *JS_PATH {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, CACHE)], body).into_response()
}

/// `/static/{file}`.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/static/{file}", get(asset))
}
