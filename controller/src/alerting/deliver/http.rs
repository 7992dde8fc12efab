//! Delivery over HTTP: Slack (incoming webhook or a bot's
//! `chat.postMessage`), Discord and generic webhooks all POST a JSON body, so
//! they share the request, the reading of the response and its judgement;
//! the generic webhook adds its headers and signature.
//!
//! # Outcomes
//!
//! * A 2xx status is sent (a Slack bot's answer must also say `"ok": true`).
//!   408, 429, 5xx, timeouts and connection errors are retried; any other
//!   status (400, 401, 403, 404, 3xx: redirects are not followed) is a refusal
//!   that retrying cannot fix and fails at once. On 429 and 503 a
//!   `Retry-After: <seconds>` header replaces the backoff (capped at
//!   [`max_backoff`](super::DeliveryPolicy::max_backoff)). The answer is the
//!   status line and the first [`ANSWER_BODY_MAX`] characters of the body
//!   (`204 No Content`, `200 OK: ok`).
//! * Slack bot: `chat.postMessage` answering `{"ok": false, "error": E}` fails
//!   with `E` in the answer; it is retried only for `ratelimited` and Slack's
//!   internal errors.
//!
//! # Generic webhook signature
//!
//! A `webhook` channel receives `POST <url>` with the JSON body of
//! [`message::webhook_body`] and these headers:
//!
//! * `Content-Type: application/json`
//! * `X-Worker-Event`: the event (`run_dead`…), or the kind for an alert
//!   without one (`test`);
//! * `X-Worker-Delivery`: the alert's id, the same on every retry (use it to
//!   drop duplicates);
//! * `X-Worker-Timestamp`: when this attempt was made, in Unix seconds;
//! * `X-Worker-Signature`: `sha256=` followed by the lowercase hex
//!   HMAC-SHA256, keyed with the channel's `secret`, of the timestamp, a dot
//!   and the raw body bytes: `HMAC(secret, "<timestamp>.<body>")` (see
//!   [`signature`]).
//!
//! A receiver verifies a request by recomputing the HMAC over the timestamp
//! header, `.` and the body exactly as received (before any JSON parsing),
//! comparing it with the signature header in constant time, and rejecting
//! requests whose timestamp is more than a few minutes away from its own clock
//! (five minutes is usual): the timestamp is signed, so an old request
//! replayed as-is is refused. Each retry is signed anew with a fresh timestamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use super::{ANSWER_BODY_MAX, AttemptError, Deliverer, Failure, chain, scrub_result, secret_parts};
use crate::alerting::alert::Alert;
use crate::alerting::config::{DiscordChannel, SlackChannel, WebhookChannel};
use crate::alerting::message;

/// At most this many bytes of a response body are read (enough for any Slack
/// answer; the rest is not needed to judge the delivery).
const BODY_READ_MAX: usize = 256 * 1024;

/// The generic webhook's header naming the event (or kind).
pub const EVENT_HEADER: &str = "X-Worker-Event";
/// The generic webhook's header carrying the alert id.
pub const DELIVERY_HEADER: &str = "X-Worker-Delivery";
/// The generic webhook's header carrying the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Worker-Timestamp";
/// The generic webhook's signature header (`sha256=<hex>`).
pub const SIGNATURE_HEADER: &str = "X-Worker-Signature";

/// Slack `chat.postMessage` errors that may go away on a retry.
const SLACK_RETRYABLE: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

impl Deliverer {
    /// One attempt to a Slack channel: a POST to its incoming webhook, or to
    /// `chat.postMessage` with the bot's token. The webhook URL and the token
    /// are scrubbed from the answer and errors.
    pub(super) async fn send_slack(&self, slack: &SlackChannel, alert: &Alert) -> Result<String, Failure> {
        match slack {
            SlackChannel::Webhook { webhook_url } => {
                let url = webhook_url.expose();
                let body = json_bytes(&message::slack_payload(alert, None))?;
                let result = self.post(url, body, &[], None).await.and_then(judge);
                scrub_result(result, &secret_parts(url, None))
            }
            SlackChannel::Bot {
                token,
                channel: slack_channel,
                api_url,
            } => {
                let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
                let body = json_bytes(&message::slack_payload(alert, Some(slack_channel)))?;
                let result = self
                    .post(&url, body, &[], Some(token.expose()))
                    .await
                    .and_then(judge_slack_bot);
                scrub_result(result, &secret_parts(&url, Some(token.expose())))
            }
        }
    }

    /// One attempt to a Discord webhook; its URL is scrubbed from the answer
    /// and errors.
    pub(super) async fn send_discord(&self, discord: &DiscordChannel, alert: &Alert) -> Result<String, Failure> {
        let url = discord.webhook_url.expose();
        let body = json_bytes(&message::discord_payload(alert))?;
        let result = self.post(url, body, &[], None).await.and_then(judge);
        scrub_result(result, &secret_parts(url, None))
    }

    /// One attempt to a generic webhook: the body with its headers and a
    /// signature made now. The signing secret, and the keys its URL may carry
    /// (query, user password), are scrubbed from the answer and errors.
    pub(super) async fn send_webhook(&self, hook: &WebhookChannel, alert: &Alert) -> Result<String, Failure> {
        let body = json_bytes(&message::webhook_body(alert))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let headers = [
            (EVENT_HEADER, message::event_name(alert).to_string()),
            (DELIVERY_HEADER, alert.id.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, signature(hook.secret.expose(), timestamp, &body)),
        ];
        let result = self.post(&hook.url, body, &headers, None).await.and_then(judge);
        let mut secrets = url_key_parts(&hook.url);
        secrets.push(hook.secret.expose().to_string());
        scrub_result(result, &secrets)
    }

    /// POSTs a JSON `body` to `url` with extra `headers` and an optional bearer
    /// token; the status, `Retry-After` and the start of the body.
    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
        bearer: Option<&str>,
    ) -> Result<Reply, Failure> {
        let mut request = self
            .inner
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let mut response = request.body(body).send().await.map_err(http_failure)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        // A body cut short is not a failure: the status already says how it went.
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = BODY_READ_MAX - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= BODY_READ_MAX {
                break;
            }
        }
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
}

/// Serializes a payload.
fn json_bytes(value: &serde_json::Value) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| Failure::permanent(format!("cannot serialize the payload: {e}")))
}

/// The generic webhook's signature of `body` sent at `timestamp` (Unix
/// seconds): `sha256=` and the lowercase hex HMAC-SHA256 keyed with `secret`
/// of `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An HTTP response, as far as judging a delivery needs it.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Reply {
    /// `503 Service Unavailable`, then `: ` and the start of the body if any.
    fn text(&self) -> String {
        let line = match self.status.canonical_reason() {
            Some(reason) => format!("{} {reason}", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        };
        let body = message::one_line(&String::from_utf8_lossy(&self.body));
        if body.is_empty() {
            line
        } else {
            format!("{line}: {}", message::truncate(&body, ANSWER_BODY_MAX))
        }
    }
}

/// A plain HTTP channel's verdict: 2xx sent; 408, 429, 5xx retryable; any
/// other status refused.
fn judge(reply: Reply) -> Result<String, Failure> {
    if reply.status.is_success() {
        return Ok(reply.text());
    }
    Err(status_failure(&reply))
}

/// The failure for a non-2xx `reply`.
fn status_failure(reply: &Reply) -> Failure {
    let status = reply.status;
    let retryable =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    let honours_retry_after = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    Failure {
        error: AttemptError {
            message: reply.text(),
            retryable,
        },
        retry_after: reply.retry_after.filter(|_| honours_retry_after),
    }
}

/// A Slack bot's verdict: 2xx and `"ok": true`.
fn judge_slack_bot(reply: Reply) -> Result<String, Failure> {
    if !reply.status.is_success() {
        return Err(status_failure(&reply));
    }
    #[derive(serde::Deserialize)]
    struct SlackAnswer {
        ok: Option<bool>,
        error: Option<String>,
        channel: Option<String>,
        ts: Option<String>,
    }
    let status = reply.status.as_u16();
    let reason = reply.status.canonical_reason().unwrap_or_default();
    let answer: SlackAnswer = serde_json::from_slice(&reply.body)
        .map_err(|_| Failure::permanent(format!("{}: not a Slack API answer", reply.text())))?;
    match answer.ok {
        Some(true) => {
            let mut text = format!("{status} {reason}: slack ok");
            if let Some(channel) = answer.channel {
                text.push_str(&format!(
                    ", channel {}",
                    message::truncate(&message::one_line(&channel), 40)
                ));
            }
            if let Some(ts) = answer.ts {
                text.push_str(&format!(", ts {}", message::truncate(&message::one_line(&ts), 40)));
            }
            Ok(text)
        }
        _ => {
            let error = message::one_line(answer.error.as_deref().unwrap_or("no error given"));
            let error = message::truncate(&error, ANSWER_BODY_MAX).into_owned();
            let retryable = SLACK_RETRYABLE.contains(&error.as_str());
            Err(Failure {
                error: AttemptError {
                    message: format!("{status} {reason}: slack error {error}"),
                    retryable,
                },
                retry_after: reply.retry_after,
            })
        }
    }
}

/// The failure for a request that got no response.
fn http_failure(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    let (what, retryable) = if error.is_timeout() {
        ("request timed out", true)
    } else if error.is_connect() {
        ("cannot connect", true)
    } else if error.is_builder() {
        ("invalid request", false)
    } else {
        ("request failed", true)
    };
    let detail = chain(&error);
    Failure {
        error: AttemptError {
            message: format!("{what}: {detail}"),
            retryable,
        },
        retry_after: None,
    }
}
/// The parts of a webhook URL that may be keys: its query and the password of
/// its user part (at least 4 characters each, to be worth scrubbing).
fn url_key_parts(url: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let without_fragment = url.split('#').next().unwrap_or_default();
    if let Some((_, query)) = without_fragment.split_once('?') {
        parts.push(query.to_string());
        parts.extend(
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
    }
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((user, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = user.split_once(':')
        {
            parts.push(password.to_string());
        }
    }
    parts.retain(|p| p.len() >= 4);
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_judged_sent_retryable_or_refused() {
        let reply = |code: u16, body: &str, retry_after: Option<u64>| Reply {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(judge(reply(200, "ok", None)).unwrap(), "200 OK: ok");
        assert_eq!(judge(reply(204, "", None)).unwrap(), "204 No Content");
        for (code, retryable) in [
            (408, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (404, false),
            (301, false),
        ] {
            let failure = judge(reply(code, "nope", Some(3))).unwrap_err();
            assert_eq!(failure.error.retryable, retryable, "{code}");
            assert!(
                failure.error.message.starts_with(&code.to_string()),
                "{}",
                failure.error.message
            );
            let honoured = matches!(code, 429 | 503);
            assert_eq!(failure.retry_after.is_some(), honoured, "{code}");
        }
        let long = judge(reply(500, &"x\ny ".repeat(1000), None))
            .unwrap_err()
            .error
            .message;
        assert!(long.starts_with("500 Internal Server Error: x y x y"), "{long}");
        assert!(long.chars().count() <= "500 Internal Server Error: ".len() + ANSWER_BODY_MAX);
    }

    #[test]
    fn slack_bot_answers_are_read() {
        let reply = |body: &str| Reply {
            status: StatusCode::OK,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        };
        let ok = judge_slack_bot(reply(r#"{"ok":true,"channel":"C1","ts":"1.2"}"#)).unwrap();
        assert_eq!(ok, "200 OK: slack ok, channel C1, ts 1.2");
        let refused = judge_slack_bot(reply(r#"{"ok":false,"error":"channel_not_found"}"#)).unwrap_err();
        assert_eq!(refused.error.message, "200 OK: slack error channel_not_found");
        assert!(!refused.error.retryable);
        let limited = judge_slack_bot(reply(r#"{"ok":false,"error":"ratelimited"}"#)).unwrap_err();
        assert!(limited.error.retryable);
        let odd = judge_slack_bot(reply("<html>proxy</html>")).unwrap_err();
        assert!(!odd.error.retryable && odd.error.message.contains("not a Slack API answer"));
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        // The signed text is "<timestamp>.<body>".
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            signature("Jefe", 1_700_000_000, b"{\"a\":1}"),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhook_url_keys_are_scrubbed() {
        let parts = url_key_parts("https://user:pa55word@hooks.example.com/h?key=k3y-value&x=1#f");
        assert!(parts.contains(&"pa55word".to_string()), "{parts:?}");
        assert!(parts.contains(&"k3y-value".to_string()), "{parts:?}");
        assert!(url_key_parts("https://hooks.example.com/h").is_empty());
    }
}
