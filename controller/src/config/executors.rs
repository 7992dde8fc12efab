//! Validation of the `http:` and `handler:` executors of a job definition
//! (the `shell:` and `builtin:` checks live with the rest of a job, in
//! [`super::jobs`]). What is checked here is what the agent relies on: a
//! method it knows, an `http(s)://` URL, header names and values it can
//! send, templates it can fill, status patterns it can match.

use std::collections::BTreeMap;

use super::jobs::Checker;
use super::raw::{RawHttp, RawStatus};
use crate::job::{
    ExecutorDef, HTTP_METHODS, HandlerDef, HttpDef, MAX_HTTP_REDIRECTS, MAX_TIMEOUT, valid_handler_name,
    valid_status_pattern,
};

/// Longest URL template, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest body template, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most headers of an `http` job.
pub const MAX_HEADERS: usize = 64;

/// Checks `http:` of job `name`.
pub(crate) fn check_http(c: &mut Checker<'_>, name: &str, raw: RawHttp) -> Option<ExecutorDef> {
    let raw = match raw {
        RawHttp::Url(url) => super::raw::RawHttpFull {
            method: None,
            url,
            headers: None,
            body: None,
            expect_status: None,
            retry_on: None,
            timeout: None,
            max_redirects: None,
        },
        RawHttp::Full(full) => full,
    };
    let errors_before = c.errors.len();
    let at = |field: &'static str| -> [&str; 4] { ["jobs", name, "http", field] };

    let method = raw.method.as_deref().unwrap_or("GET").trim().to_ascii_uppercase();
    if !HTTP_METHODS.contains(&method.as_str()) {
        c.error(
            &at("method"),
            format!(
                "unknown method \"{method}\" (expected one of: {})",
                HTTP_METHODS.join(", ")
            ),
        );
    }
    let url = raw.url.trim().to_string();
    if let Err(e) = check_url(&url) {
        c.error(&at("url"), e);
    } else if let Err(e) = check_template(&url) {
        c.error(&at("url"), e);
    }
    let headers = raw.headers.unwrap_or_default();
    if headers.len() > MAX_HEADERS {
        c.error(
            &at("headers"),
            format!("{} headers, at most {MAX_HEADERS}", headers.len()),
        );
    }
    for (key, value) in &headers {
        let path = ["jobs", name, "http", "headers", key.as_str()];
        if !valid_header_name(key) {
            c.error(
                &path,
                format!("\"{key}\" is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
            );
        } else if value.contains(['\r', '\n', '\0']) {
            c.error(&path, "a header value may not hold line breaks or NUL");
        } else if let Err(e) = check_template(value) {
            c.error(&path, e);
        }
    }
    if headers.values().any(|v| v.contains("${")) && worker_agent::executor::template::templated_origin(&url) {
        c.error(
            &at("url"),
            "the scheme and host must be written out when a header holds ${VAR}: a placeholder there would let \
             whoever enqueues choose who receives the secret",
        );
    }
    let body = raw.body.unwrap_or_default();
    if body.len() > MAX_BODY_BYTES {
        c.error(&at("body"), format!("{} bytes, at most {MAX_BODY_BYTES}", body.len()));
    } else if let Err(e) = check_template(&body) {
        c.error(&at("body"), e);
    }
    let expect_status = statuses(c, &at("expect_status"), raw.expect_status, false);
    let retry_on = statuses(c, &at("retry_on"), raw.retry_on, true);
    let timeout = match raw.timeout.as_deref().map(worker_duration::parse) {
        None => None,
        Some(Err(e)) => {
            c.error(&at("timeout"), e.to_string());
            None
        }
        Some(Ok(d)) if d.is_zero() || d > MAX_TIMEOUT => {
            c.error(
                &at("timeout"),
                format!("must be above 0s and at most {}", worker_duration::format(MAX_TIMEOUT)),
            );
            None
        }
        Some(Ok(d)) => Some(d),
    };
    if let Some(n) = raw.max_redirects.filter(|n| *n > MAX_HTTP_REDIRECTS) {
        c.error(
            &at("max_redirects"),
            format!("{n} is above the limit of {MAX_HTTP_REDIRECTS}"),
        );
    }
    if c.errors.len() > errors_before {
        return None;
    }
    Some(ExecutorDef::Http(HttpDef {
        method,
        url,
        headers: headers.into_iter().collect::<BTreeMap<_, _>>(),
        body,
        expect_status,
        retry_on,
        timeout,
        max_redirects: raw.max_redirects,
    }))
}

/// Checks `handler:` of job `name`.
pub(crate) fn check_handler(c: &mut Checker<'_>, name: &str, handler: String) -> Option<ExecutorDef> {
    let handler = handler.trim().to_string();
    if !valid_handler_name(&handler) {
        c.error(
            &["jobs", name, "handler"],
            format!(
                "\"{handler}\" is not a handler name (1 to 128 letters, digits, `.`, `_`, `:`, `-`, starting with a letter or digit)"
            ),
        );
        return None;
    }
    Some(ExecutorDef::Handler(HandlerDef { name: handler }))
}

fn statuses(c: &mut Checker<'_>, path: &[&str], raw: Option<Vec<RawStatus>>, network: bool) -> Vec<String> {
    let mut out = Vec::new();
    for item in raw.unwrap_or_default() {
        let text = item.text().to_ascii_lowercase();
        if (network && text == "network") || valid_status_pattern(&text) {
            out.push(text);
        } else {
            let also = if network { ", or `network`" } else { "" };
            c.error(
                path,
                format!("\"{text}\" is not a status: expected a code (404), a class (5xx) or a range (500-504){also}"),
            );
        }
    }
    out
}

/// An `http://` or `https://` URL with a host (templates allowed after it).
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("{} bytes, at most {MAX_URL_BYTES}", url.len()));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("\"{url}\" is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
        return Err(format!("\"{url}\" has no host"));
    }
    if url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Err("a URL may not hold spaces or control characters (percent-encode them)".into());
    }
    Ok(())
}

/// A header name: an HTTP token.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks the `{{...}}` placeholders of a template: each closed, each one of
/// `payload`, `payload.FIELD[.FIELD...]`, `run.id`, `run.attempt`, `run.job`.
pub fn check_template(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "a `{{` is not closed by `}}`".to_string())?;
        let name = after[..close].trim();
        let known = matches!(name, "payload" | "run.id" | "run.attempt" | "run.job")
            || name.strip_prefix("payload.").is_some_and(|path| {
                path.split('.')
                    .all(|seg| !seg.is_empty() && !seg.contains(char::is_whitespace))
            });
        if !known {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}` (expected payload, payload.FIELD, run.id, run.attempt or run.job)"
            ));
        }
        rest = &after[close + 2..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_template("plain").is_ok());
        assert!(check_template("{{payload}} {{ payload.lead.id }} {{run.id}}/{{run.attempt}}/{{run.job}}").is_ok());
        assert!(check_template("${TOKEN}").is_ok());
        assert!(
            check_template("{{payload.}}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(check_template("{{env.HOME}}").unwrap_err().contains("`{{env.HOME}}`"));
        assert!(check_template("x {{payload").unwrap_err().contains("not closed"));
    }

    #[test]
    fn a_payload_cannot_choose_who_receives_a_secret() {
        let yaml = |url: &str, header: &str| {
            format!("jobs:\n  j:\n    http: {{ url: \"{url}\", headers: {{ Authorization: \"{header}\" }} }}\n")
        };
        let parse = |text: &str| {
            crate::config::parse_scheduler_yaml(
                std::path::Path::new("s.yaml"),
                text,
                &crate::config::env::from_pairs(&[]),
            )
        };
        let err = parse(&yaml("https://{{payload.host}}/x", "Bearer ${TOKEN}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jobs.j.http.url") && err.contains("scheme and host must be written out"),
            "{err}"
        );
        assert!(
            parse(&yaml("https://{{payload.host}}/x", "Bearer fixed")).is_ok(),
            "no secret, no rule"
        );
        assert!(parse(&yaml("https://api.example.com/{{payload.id}}", "Bearer ${TOKEN}")).is_ok());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://api.example.com/v1?x={{payload.x}}").is_ok());
        assert!(check_url("HTTP://localhost:8080").is_ok());
        assert!(check_url("ftp://x").unwrap_err().contains("not an http"));
        assert!(check_url("https://").unwrap_err().contains("no host"));
        assert!(check_url("https://a b").unwrap_err().contains("spaces"));
    }

    #[test]
    fn status_patterns() {
        for ok in ["200", "2xx", "5xx", "200-204", "599"] {
            assert!(valid_status_pattern(ok), "{ok}");
        }
        for bad in ["20", "600", "6xx", "204-200", "abc", "", "network"] {
            assert!(!valid_status_pattern(bad), "{bad}");
        }
        assert!(valid_header_name("X-Api-Key"));
        assert!(!valid_header_name("Bad Header"));
    }
}
