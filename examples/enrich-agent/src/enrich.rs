//! The handler `leads.enrich`: looks a lead up in the enrichment API and logs
//! the enriched record.
//!
//! Payload `{"lead_id": "L1", "email": "ada@example.com"}`. The handler sends
//! it as `POST {api}/enrich` (JSON) and expects `200` with
//! `{"company": "...", "cost_usd": 0.02, ...}`. It reports
//! `api_cost_usd` (from the answer) and `items` (1 per lead) as metrics, and
//! the spans `fetch` (the request) and `transform` (building the record).
//!
//! Failures, as the controller's retry policy needs them:
//!
//! * a network error, `408`, `429` (its `Retry-After` passed on) and `5xx` are
//!   retryable — the API may be back soon;
//! * any other `4xx` (an unknown lead, a bad request) is permanent: retrying
//!   gets the same answer. So is a payload without `lead_id` or `email`.
//!
//! The handler stops as soon as the attempt is cancelled or times out
//! (`ctx.cancelled()` is selected against the request, which is dropped),
//! logging `cancelled: <reason>`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use worker_agent::{HandlerContext, HandlerError};

/// Time to open a connection to the API; the whole request is bounded by the
/// job's `timeout` (the handler stops when it elapses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of an error answer quoted in the attempt's error.
const QUOTE_BYTES: usize = 200;

/// The payload of a `leads.enrich` run.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Lead {
    /// The lead's id in the application.
    pub lead_id: String,
    /// Its e-mail address.
    pub email: String,
}

/// What the API answers (fields beyond these are ignored).
#[derive(Debug, Deserialize)]
struct Answer {
    /// Company of the lead, when known.
    #[serde(default)]
    company: Option<String>,
    /// Job title, when known.
    #[serde(default)]
    title: Option<String>,
    /// What this lookup cost.
    #[serde(default)]
    cost_usd: f64,
}

/// The enrichment API client the handler uses; shared by every attempt.
#[derive(Debug)]
pub struct Enricher {
    http: reqwest::Client,
    endpoint: reqwest::Url,
}

impl Enricher {
    /// A client of the API at `api` (`http://` or `https://`).
    pub fn new(api: &str) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(api).with_context(|| format!("--api: `{api}` is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("--api: `{api}` must be an http:// or https:// URL");
        }
        let endpoint = reqwest::Url::parse(&format!("{}/enrich", api.trim_end_matches('/')))
            .with_context(|| format!("--api: `{api}`"))?;
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one in between, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("enrich-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("creating the HTTP client")?;
        Ok(Self { http, endpoint })
    }

    /// The handler: enriches `lead` (see the module docs).
    pub async fn enrich(self: Arc<Self>, ctx: HandlerContext, lead: Lead) -> Result<(), HandlerError> {
        if lead.lead_id.trim().is_empty() {
            return Err(HandlerError::permanent("payload field lead_id: must not be empty"));
        }
        if !lead.email.contains('@') {
            return Err(HandlerError::permanent(format!(
                "payload field email: `{}` is not an e-mail address",
                lead.email
            )));
        }
        ctx.log(format!(
            "lead {} <{}>: asking {} (attempt {})",
            lead.lead_id,
            lead.email,
            self.endpoint,
            ctx.attempt()
        ));
        let answer = tokio::select! {
            reason = ctx.cancelled() => {
                ctx.log(format!("cancelled: {reason}"));
                return Err(HandlerError::retryable(format!("stopped while asking the API: {reason}")));
            }
            answer = ctx.span_async("fetch", self.fetch(&lead)) => answer?,
        };
        ctx.metric("api_cost_usd", answer.cost_usd);

        let transform = ctx.span("transform");
        let domain = lead.email.rsplit_once('@').map_or("", |(_, d)| d).to_lowercase();
        let record = serde_json::json!({
            "lead_id": lead.lead_id,
            "email": lead.email.to_lowercase(),
            "domain": domain,
            "company": answer.company.as_deref().map(str::trim),
            "title": answer.title.as_deref().map(str::trim),
        });
        drop(transform);

        ctx.log(format!("enriched: {record}"));
        ctx.log(format!("cost: ${:.4}", answer.cost_usd));
        ctx.metric("items", 1);
        Ok(())
    }

    /// `POST {api}/enrich` and the answer, or the failure it means.
    async fn fetch(&self, lead: &Lead) -> Result<Answer, HandlerError> {
        let body = serde_json::to_vec(lead).map_err(|e| HandlerError::permanent(e.to_string()))?;
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| HandlerError::from(e.without_url()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| HandlerError::from(e.without_url()))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                HandlerError::retryable(format!(
                    "the enrichment API answered {status} with an unreadable body: {e}"
                ))
            });
        }
        let quote = String::from_utf8_lossy(&body[..body.len().min(QUOTE_BYTES)])
            .trim()
            .to_string();
        let message = format!("the enrichment API answered {status}: {quote}");
        Err(match classify(status) {
            Failure::Permanent => HandlerError::permanent(message),
            Failure::Retryable => match retry_after {
                Some(delay) => HandlerError::retryable(message).retry_after(delay),
                None => HandlerError::retryable(message),
            },
        })
    }
}

/// Whether a failed answer is worth retrying.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Retryable,
    Permanent,
}

/// `429` and `5xx` may pass; other `4xx` will not; anything else unexpected
/// (a `3xx` left after redirects) is retried.
fn classify(status: StatusCode) -> Failure {
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::REQUEST_TIMEOUT {
        Failure::Permanent
    } else {
        Failure::Retryable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        for code in [429, 408, 500, 502, 503, 304] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                Failure::Retryable,
                "{code}"
            );
        }
        for code in [400, 401, 404, 422] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                Failure::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn the_api_must_be_an_http_url() {
        assert!(Enricher::new("http://127.0.0.1:9/").is_ok());
        let err = Enricher::new("127.0.0.1:9").unwrap_err().to_string();
        assert!(err.contains("--api"), "{err}");
        let err = Enricher::new("ftp://x").unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
    }
}
