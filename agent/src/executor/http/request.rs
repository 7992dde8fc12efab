//! From an [`HttpSpec`] and an attempt to the request to make: the method,
//! the URL and body filled from the payload, the header values filled and
//! their `${VAR}` read, the status lists parsed. Everything that can be wrong
//! with a spec is found here, before anything is sent, and the message names
//! the field (`http.headers.Authorization: ...`).

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use worker_proto::v1::HttpSpec;

use super::secrets;
use super::status::{DEFAULT_EXPECT, DEFAULT_RETRY_ON, StatusSet};
use crate::config::EnvPattern;
use crate::executor::Context;
use crate::executor::template::{self, Escape, Fields, Piece};

/// The methods an `http` job may use.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Redirects followed when the job does not say.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// A request ready to be sent, and how its answer is judged.
#[derive(Debug)]
pub struct Prepared {
    /// The method.
    pub method: Method,
    /// The URL, filled.
    pub url: reqwest::Url,
    /// The headers, filled, `${VAR}` read.
    pub headers: HeaderMap,
    /// The body, filled (`None`: no body).
    pub body: Option<String>,
    /// Statuses that mean success.
    pub expect: StatusSet,
    /// Failures that may be retried.
    pub retry_on: StatusSet,
    /// Bound of the request (`None`: only the job's timeout).
    pub timeout: Option<Duration>,
    /// Redirects followed at most.
    pub max_redirects: u32,
    /// The values read from the environment (to redact).
    pub secrets: Vec<String>,
}

impl Prepared {
    /// Prepares `spec` for the attempt `ctx`, reading `${VAR}` through
    /// `lookup` for the variables `allowed`. The error names the field.
    pub fn new(
        spec: &HttpSpec,
        ctx: &Context,
        allowed: &[EnvPattern],
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Prepared, String> {
        let fields = Fields::new(&ctx.run_id, ctx.attempt, &ctx.job, &ctx.payload);
        let method = method(&spec.method)?;
        let url = url(&spec.url, &fields)?;
        let mut secrets = Vec::new();
        let headers = headers(spec, &fields, allowed, lookup, &mut secrets)?;
        if !secrets.is_empty() && template::templated_origin(&spec.url) {
            return Err(
                "http.url: the server is a placeholder while headers carry ${VAR} values: the payload would choose \
                 who receives them (write the scheme and host in the URL)"
                    .into(),
            );
        }
        let body = if spec.body.is_empty() {
            None
        } else {
            Some(template::render(&spec.body, &fields, Escape::None).map_err(|e| format!("http.body: {e}"))?)
        };
        let expect = StatusSet::parse(&spec.expect_status, DEFAULT_EXPECT, false)
            .map_err(|e| format!("http.expect_status: {e}"))?;
        let retry_on =
            StatusSet::parse(&spec.retry_on, DEFAULT_RETRY_ON, true).map_err(|e| format!("http.retry_on: {e}"))?;
        Ok(Prepared {
            method,
            url,
            headers,
            body,
            expect,
            retry_on,
            timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
            max_redirects: spec.max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS),
            secrets,
        })
    }
}

fn method(text: &str) -> Result<Method, String> {
    let name = text.trim().to_ascii_uppercase();
    let name = if name.is_empty() { "GET".to_string() } else { name };
    if !METHODS.contains(&name.as_str()) {
        return Err(format!(
            "http.method: unknown method \"{name}\" (expected one of: {})",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(name.as_bytes()).map_err(|e| format!("http.method: {e}"))
}

fn url(template: &str, fields: &Fields<'_>) -> Result<reqwest::Url, String> {
    let text = template::render(template.trim(), fields, Escape::Url).map_err(|e| format!("http.url: {e}"))?;
    let url = reqwest::Url::parse(&text).map_err(|e| format!("http.url: \"{text}\" is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "http.url: \"{text}\" is not an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// The headers, in name order (so that the first bad one is always the same).
fn headers(
    spec: &HttpSpec,
    fields: &Fields<'_>,
    allowed: &[EnvPattern],
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<HeaderMap, String> {
    let mut names: Vec<&String> = spec.headers.keys().collect();
    names.sort();
    let mut headers = HeaderMap::new();
    for name in names {
        let at = |e: String| format!("http.headers.{name}: {e}");
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| at("not a valid header name".into()))?;
        let mut value = String::new();
        let before = secrets.len();
        for piece in template::parse(&spec.headers[name]).map_err(|e| at(e.to_string()))? {
            match piece {
                Piece::Text(text) => value.push_str(&secrets::interpolate(text, allowed, lookup, secrets).map_err(at)?),
                Piece::Field(field) => value.push_str(&fields.value(&field).map_err(|e| at(e.to_string()))?),
            }
        }
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| at("the value, filled in, holds a line break or another character a header cannot".into()))?;
        if secrets.len() > before {
            value.set_sensitive(true);
        }
        headers.append(header, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::tests::context;

    fn prepare(spec: &HttpSpec, payload: &str, allow: &str) -> Result<Prepared, String> {
        let mut ctx = context();
        ctx.payload = payload.into();
        let env = |name: &str| (name == "API_TOKEN").then(|| "tok-123".to_string());
        Prepared::new(spec, &ctx, &crate::config::parse_allow_env(allow).unwrap(), &env)
    }

    fn spec(url: &str) -> HttpSpec {
        HttpSpec {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let p = prepare(&spec("https://api.example.com/x"), "", "").unwrap();
        assert_eq!(p.method, Method::GET);
        assert_eq!(p.body, None);
        assert!(p.expect.matches(204) && !p.expect.matches(301));
        assert!(p.retry_on.network() && p.retry_on.matches(503) && !p.retry_on.matches(404));
        assert_eq!(p.timeout, None);
        assert_eq!(p.max_redirects, 10);
        assert!(p.secrets.is_empty());
    }

    #[test]
    fn fills_url_headers_and_body() {
        let s = HttpSpec {
            method: "post".into(),
            url: "https://api.example.com/leads/{{payload.id}}?q={{payload.q}}".into(),
            headers: [
                ("Authorization".to_string(), "Bearer ${API_TOKEN}".to_string()),
                ("X-Run".to_string(), "{{run.id}}/{{run.attempt}}".to_string()),
                ("X-Echo".to_string(), "{{payload.q}}".to_string()),
            ]
            .into(),
            body: r#"{"id": {{payload.id}}, "job": "{{run.job}}"}"#.into(),
            timeout_ms: 5000,
            max_redirects: Some(0),
            ..Default::default()
        };
        let p = prepare(&s, r#"{"id": 7, "q": "a b&${API_TOKEN}"}"#, "API_TOKEN").unwrap();
        assert_eq!(p.method, Method::POST);
        assert_eq!(
            p.url.as_str(),
            "https://api.example.com/leads/7?q=a%20b%26%24%7BAPI_TOKEN%7D"
        );
        assert_eq!(p.headers["authorization"], "Bearer tok-123");
        assert!(p.headers["authorization"].is_sensitive());
        assert_eq!(p.headers["x-run"], "run-1/1");
        assert!(!p.headers["x-run"].is_sensitive());
        // A value from the payload is never interpolated.
        assert_eq!(p.headers["x-echo"], "a b&${API_TOKEN}");
        assert_eq!(p.body.as_deref(), Some(r#"{"id": 7, "job": "test.job"}"#));
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.max_redirects, 0);
        assert_eq!(p.secrets, ["tok-123"]);
    }

    #[test]
    fn a_payload_chosen_server_never_gets_secrets_nor_a_climbed_path() {
        let mut s = HttpSpec {
            url: "https://{{payload.host}}/x".into(),
            headers: [("Authorization".to_string(), "Bearer ${API_TOKEN}".to_string())].into(),
            ..Default::default()
        };
        let err = prepare(&s, r#"{"host": "attacker.example"}"#, "API_TOKEN").unwrap_err();
        assert!(err.contains("the server is a placeholder"), "{err}");
        s.url = "https://api.example.com/users/{{payload.id}}/delete".into();
        let err = prepare(&s, r#"{"id": ".."}"#, "API_TOKEN").unwrap_err();
        assert!(err.contains("would move along the URL's path"), "{err}");
    }

    #[test]
    fn env_references_outside_headers_are_text() {
        let s = HttpSpec {
            url: "https://x.example/${API_TOKEN}".into(),
            body: "${API_TOKEN}".into(),
            ..Default::default()
        };
        let p = prepare(&s, "", "API_TOKEN").unwrap();
        assert_eq!(p.url.path(), "/$%7BAPI_TOKEN%7D");
        assert_eq!(p.body.as_deref(), Some("${API_TOKEN}"));
        assert!(p.secrets.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let with = |f: &dyn Fn(&mut HttpSpec)| {
            let mut s = spec("https://x.example/");
            f(&mut s);
            prepare(&s, "", "").unwrap_err()
        };
        let err = with(&|s| s.method = "BREW".into());
        assert!(err.starts_with("http.method: unknown method \"BREW\""), "{err}");
        let err = with(&|s| s.url = "ftp://x.example/".into());
        assert!(err.starts_with("http.url: "), "{err}");
        let err = with(&|s| s.url = "https://x.example/{{oops}}".into());
        assert!(err.starts_with("http.url: unknown placeholder"), "{err}");
        let err = with(&|s| s.headers = [("Bad Name".to_string(), "v".to_string())].into());
        assert_eq!(err, "http.headers.Bad Name: not a valid header name");
        let err = with(&|s| s.headers = [("Authorization".to_string(), "Bearer ${API_TOKEN}".to_string())].into());
        assert!(
            err.starts_with("http.headers.Authorization: ${API_TOKEN} may not be interpolated"),
            "{err}"
        );
        assert!(!err.contains("tok-123"), "{err}");
        let err = with(&|s| s.body = "{{payload".into());
        assert!(err.starts_with("http.body: "), "{err}");
        let err = with(&|s| s.expect_status = vec!["2yy".into()]);
        assert!(err.starts_with("http.expect_status: \"2yy\""), "{err}");
        let err = with(&|s| s.retry_on = vec!["sometimes".into()]);
        assert!(err.starts_with("http.retry_on: \"sometimes\""), "{err}");
    }

    #[test]
    fn a_payload_value_cannot_break_a_header() {
        let s = HttpSpec {
            url: "https://x.example/".into(),
            headers: [("X-Name".to_string(), "{{payload.name}}".to_string())].into(),
            ..Default::default()
        };
        let err = prepare(&s, r#"{"name": "a\r\nX-Evil: 1"}"#, "").unwrap_err();
        assert!(err.starts_with("http.headers.X-Name: the value"), "{err}");
    }
}
