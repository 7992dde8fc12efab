//! The `http` executor: one HTTP request per attempt
//! (`docs/executors.md#http`).
//!
//! Layout:
//!
//! * this module: [`run`] — prepare, send, read, judge — and the wording of
//!   failures;
//! * `request`: the spec and the attempt made into a request (templates,
//!   `${VAR}`, status lists); every problem of a spec is found there, before
//!   anything is sent, and fails the attempt permanently naming the field;
//! * `secrets`: `${VAR}` in header values (only variables on the agent's
//!   `--allow-env`) and the redaction of their values, **by value**, from the
//!   output and the error;
//! * `client`: [`HttpSettings`] (TLS roots, `--http-ca`, the allow-list) and
//!   the client of one attempt (redirects, connection timing);
//! * `capture`: the output — the status line, then the body's tail;
//! * `status`: `expect_status` / `retry_on` patterns and `Retry-After`.
//!
//! # Outcomes
//!
//! A status `expect_status` matches (default `2xx`) succeeds. Any other
//! status fails: retryably when `retry_on` matches it (default `408`, `429`,
//! `5xx`), permanently otherwise; a retryable failure's `Retry-After`
//! (seconds or an HTTP date) becomes the report's `retry_after`, which the
//! controller honours. No answer (connect refused, TLS, reset, the request's
//! own `timeout_ms`) is a `network` failure, retryable when `network` is in
//! `retry_on` (it is by default). The job's timeout and a cancel stop the
//! request where it is (the in-flight future is dropped, which closes the
//! connection) and report `timed_out` / `cancelled`.
//!
//! Errors say what happened, `HTTP 503 Service Unavailable from POST
//! https://api.example.com/v1/leads` or `connect to api.example.com:443
//! failed: ...`. URLs in messages have no query, user part or fragment: a
//! query may hold a key.
//!
//! # Output and measures
//!
//! The output is the status line (`HTTP/1.1 200 OK`) and the tail of the
//! response body (lossy UTF-8, capped to the agent's output cap), streamed
//! live as it arrives. Spans: `connect` (TCP and TLS of each new connection),
//! `first_byte` (from sending the request to the response head, connecting
//! excluded; summed over redirects), `total` (from sending to the end of the
//! body); metric `response_bytes` (the final response's body).

mod capture;
mod client;
mod request;
pub(crate) mod secrets;
mod status;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{StatusCode, Url};
use tokio::time::Instant;
use worker_proto::v1::HttpSpec;

pub use client::HttpSettings;
pub use secrets::MASK;

use self::capture::Capture;
use self::client::Trace;
use self::request::Prepared;
use self::secrets::Redactor;
use super::{Context, Report, StopSignal};
use crate::measure::Measures;

/// Makes the request `spec` describes, until it is answered and read, or
/// `stop` fires.
pub async fn run(spec: &HttpSpec, ctx: &Context, stop: StopSignal) -> Report {
    run_with_env(spec, ctx, stop, &secrets::process_env).await
}

/// [`run`], reading `${VAR}` through `env` instead of the process's
/// environment.
async fn run_with_env(
    spec: &HttpSpec,
    ctx: &Context,
    mut stop: StopSignal,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Report {
    let prepared = match Prepared::new(spec, ctx, ctx.http.allow_env(), env) {
        Ok(prepared) => prepared,
        Err(error) => return Report::failed(error, true),
    };
    let mut capture = Capture::new(
        ctx.output_cap,
        Redactor::new(prepared.secrets.iter().cloned()),
        ctx.live.clone(),
    );
    let trace = Arc::new(Trace::default());
    let mut measures = Measures::default();
    let ended = {
        let work = exchange(&prepared, &ctx.http, &trace, &mut capture, &mut measures);
        tokio::pin!(work);
        tokio::select! {
            exchanged = &mut work => Ok(exchanged),
            stop = stop.wait() => Err(stop),
        }
    };
    let mut report = match ended {
        Ok(exchanged) => judge(exchanged, &prepared, &trace),
        Err(stop) => Report::stopped(stop, String::new()),
    };
    for took in trace.connects() {
        measures.span("connect", took);
    }
    report.output = capture.render();
    report.error = capture.redact(&report.error);
    report.measures = measures;
    report
}

/// How the exchange ended, before it is judged.
#[derive(Debug)]
enum Exchanged {
    /// An answer, read to its end.
    Answer {
        status: StatusCode,
        /// The `Retry-After` header, as sent.
        retry_after: Option<String>,
        /// The URL that answered (differs from the request's after redirects).
        url: Url,
    },
    /// No (complete) answer: a `network` failure.
    Network(String),
    /// A failure no retry can fix.
    Refused(String),
}

/// Sends the request and reads the answer into `capture`.
async fn exchange(
    p: &Prepared,
    settings: &HttpSettings,
    trace: &Arc<Trace>,
    capture: &mut Capture,
    measures: &mut Measures,
) -> Exchanged {
    let client = match client::build(settings, p.max_redirects, !p.secrets.is_empty(), trace.clone()) {
        Ok(client) => client,
        Err(e) => return Exchanged::Refused(format!("cannot create the HTTP client: {}", chain(&e.without_url()))),
    };
    let mut request = client
        .request(p.method.clone(), p.url.clone())
        .headers(p.headers.clone());
    if let Some(body) = &p.body {
        request = request.body(body.clone());
    }
    let started = Instant::now();
    let work = async {
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return send_failure(error, p, trace),
        };
        let connecting: Duration = trace.connects().iter().sum();
        measures.span("first_byte", started.elapsed().saturating_sub(connecting));
        capture.status(status_line(&response));
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let url = response.url().clone();
        let mut bytes = 0u64;
        let read = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes += chunk.len() as u64;
                    capture.body(&chunk);
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        measures.metric("response_bytes", bytes as f64);
        measures.span("total", started.elapsed());
        match read {
            Ok(()) => Exchanged::Answer {
                status,
                retry_after,
                url,
            },
            Err(error) => Exchanged::Network(format!(
                "reading the response of {} {} failed: {}",
                p.method,
                describe(&url),
                chain(&error.without_url())
            )),
        }
    };
    match p.timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Exchanged::Network(format!(
                "request timed out after {}: {} {}",
                worker_duration::format(limit),
                p.method,
                describe(&p.url)
            ))
        }),
        None => work.await,
    }
}

/// The failure of a request that got no answer.
fn send_failure(error: reqwest::Error, p: &Prepared, trace: &Trace) -> Exchanged {
    if let Some(refused) = trace.refused_redirect() {
        return Exchanged::Refused(refused);
    }
    let url = error.url().unwrap_or(&p.url).clone();
    // reqwest's own text names the whole URL, query included.
    let error = error.without_url();
    let detail = chain(&error);
    if error.is_builder() {
        Exchanged::Refused(format!(
            "cannot make the request {} {}: {detail}",
            p.method,
            describe(&url)
        ))
    } else if error.is_redirect() {
        Exchanged::Refused(format!("redirect from {} failed: {detail}", describe(&url)))
    } else if error.is_connect() {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        Exchanged::Network(format!("connect to {host}:{port} failed: {detail}"))
    } else {
        Exchanged::Network(format!("{} {} failed: {detail}", p.method, describe(&url)))
    }
}

/// Judges the exchange by the job's status lists.
fn judge(exchanged: Exchanged, p: &Prepared, trace: &Trace) -> Report {
    match exchanged {
        Exchanged::Answer {
            status,
            retry_after,
            url,
        } => {
            let code = status.as_u16();
            if p.expect.matches(code) {
                return Report::succeeded(String::new());
            }
            let mut error = format!("HTTP {} from {} {}", status_text(status), p.method, describe(&p.url));
            if url != p.url {
                error.push_str(&format!(" (redirected to {})", describe(&url)));
            }
            if status.is_redirection() && trace.redirect_limit_hit() {
                error.push_str(&format!(
                    "; redirect not followed: max_redirects is {}",
                    p.max_redirects
                ));
            }
            let retryable = p.retry_on.matches(code);
            let mut report = Report::failed(error, !retryable);
            if retryable {
                report.retry_after = retry_after.and_then(|v| status::retry_after(&v, SystemTime::now()));
            }
            report
        }
        Exchanged::Network(error) => Report::failed(error, !p.retry_on.network()),
        Exchanged::Refused(error) => Report::failed(error, true),
    }
}

/// `HTTP/1.1 200 OK`.
fn status_line(response: &reqwest::Response) -> String {
    format!("{:?} {}", response.version(), status_text(response.status()))
}

/// `503 Service Unavailable` (the code alone when it has no standard reason).
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A URL as messages show it: scheme, host, port when not the default, and
/// path — no user part, query or fragment, which may hold keys.
pub(crate) fn describe(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// Words of reqwest's and hyper's wrappers that say nothing the message does
/// not already say (`connect to ... failed: error sending request: client
/// error (Connect): tcp connect error: ...`).
const WRAPPERS: &[&str] = &[
    "error sending request",
    "client error (Connect)",
    "client error (SendRequest)",
];

/// `error` and its sources, `: `-separated, repeated words said once and the
/// wrappers' words left out (unless nothing else is left).
fn chain(error: &dyn StdError) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    let useful: Vec<&String> = parts.iter().filter(|p| !WRAPPERS.contains(&p.as_str())).collect();
    if useful.is_empty() {
        parts.join(": ")
    } else {
        useful.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(": ")
    }
}
