//! A browser-less web UI client for HTTP-level tests: signs in (with a token,
//! or without one on a controller without authentication), keeps the
//! session cookie, and posts forms with the CSRF token of the last page it
//! read, as a browser would. Browser tests drive a real Chromium instead
//! (`tests/tests/web_browser.rs`).

use std::net::SocketAddr;

use crate::http::{HttpAnswer, request};

/// A signed-in (or not yet signed-in) browser session.
#[derive(Debug, Clone)]
pub struct WebSession {
    /// The controller's HTTP address.
    pub addr: SocketAddr,
    /// `worker_session=...`, once signed in.
    pub cookie: Option<String>,
    /// The CSRF token of the last page read.
    pub csrf: Option<String>,
}

impl WebSession {
    /// A session with no cookie.
    pub fn anonymous(addr: SocketAddr) -> WebSession {
        WebSession {
            addr,
            cookie: None,
            csrf: None,
        }
    }

    /// Signs in with `token` (`None`: a controller without authentication)
    /// and reads the dashboard (for its CSRF token). Panics when sign-in fails.
    pub async fn sign_in(addr: SocketAddr, token: Option<&str>) -> WebSession {
        let mut s = WebSession::anonymous(addr);
        let answer = match token {
            Some(token) => s.post_form_raw("/login", &[("token", token), ("next", "/")]).await,
            None => s.get("/login").await,
        };
        assert_eq!(answer.status, 303, "sign-in refused: {}", answer.body);
        let cookie = answer
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("sign-in set no cookie: {answer:?}"))
            .to_string();
        s.cookie = Some(cookie);
        let home = s.get("/").await;
        assert_eq!(home.status, 200, "dashboard after sign-in: {}", home.body);
        s
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(c) = &self.cookie {
            h.push(("Cookie", c.clone()));
        }
        h
    }

    /// `GET path`; remembers the page's CSRF token, if it has one.
    pub async fn get(&mut self, path: &str) -> HttpAnswer {
        let answer = request(self.addr, "GET", path, &self.headers(), None).await;
        if let Some(token) = csrf_of(&answer.body) {
            self.csrf = Some(token);
        }
        answer
    }

    /// `POST path` with `pairs` and the CSRF token of the last page read.
    pub async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> HttpAnswer {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_form_raw(path, &all).await
    }

    /// `POST path` with exactly `pairs` (no CSRF token added): forged and
    /// stale requests.
    pub async fn post_form_raw(&mut self, path: &str, pairs: &[(&str, &str)]) -> HttpAnswer {
        let body = encode(pairs);
        request(self.addr, "POST", path, &self.headers(), Some(&body)).await
    }

    /// `POST path` with exactly `pairs` and extra `headers` (an `Origin`).
    pub async fn post_with_headers(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
        extra: &[(&str, String)],
    ) -> HttpAnswer {
        let body = encode(pairs);
        let mut headers = self.headers();
        headers.extend(extra.iter().map(|(n, v)| (*n, v.clone())));
        request(self.addr, "POST", path, &headers, Some(&body)).await
    }
}

/// `a=1&b=x+y`: a form body.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The CSRF token of a page: its `<meta name="csrf-token">`, or else what
/// its forms carry (`name="csrf" value="..."`).
pub fn csrf_of(page: &str) -> Option<String> {
    ["name=\"csrf-token\" content=\"", "name=\"csrf\" value=\""]
        .iter()
        .find_map(|marker| {
            let at = page.find(marker)? + marker.len();
            let rest = &page[at..];
            Some(rest[..rest.find('"')?].to_string())
        })
}
