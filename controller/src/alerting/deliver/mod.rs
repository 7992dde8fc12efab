//! Delivering alerts over HTTP (Slack, Discord, generic webhooks) and SMTP
//! (email), with retries and backoff.
//!
//! A [`Deliverer`] holds one HTTP client (connections are pooled across
//! alerts) and the [`DeliveryPolicy`]; it is cheap to clone and shared by the
//! delivery tasks. [`Deliverer::attempt`] makes one try and says whether a
//! failure is worth retrying; [`Deliverer::deliver`] retries with exponential
//! backoff and ends with a [`Delivery`]: `sent` or `failed`, the number of
//! attempts and the channel's answer (what the alert history shows).
//!
//! # Outcomes
//!
//! * HTTP: a 2xx status is sent (a Slack bot's answer must also say
//!   `"ok": true`). 408, 429, 5xx, timeouts and connection errors are retried;
//!   any other status (400, 401, 403, 404, 3xx: redirects are not followed) is
//!   a refusal that retrying cannot fix and fails at once. On 429 and 503 a
//!   `Retry-After: <seconds>` header replaces the backoff (capped at
//!   [`DeliveryPolicy::max_backoff`]). The answer is the status line and the
//!   first [`ANSWER_BODY_MAX`] characters of the body (`204 No Content`,
//!   `200 OK: ok`).
//! * Slack bot: `chat.postMessage` answering `{"ok": false, "error": E}` fails
//!   with `E` in the answer; it is retried only for `ratelimited` and Slack's
//!   internal errors.
//! * SMTP: the server's final reply is the answer (`250 2.0.0 Ok: queued as
//!   …`). A permanent (5xx) reply fails at once (`535` for bad credentials, a
//!   refused recipient…); transient (4xx) replies, connection, TLS and timeout
//!   errors are retried.
//!
//! # Secrets
//!
//! Slack and Discord webhook URLs and the Slack bot token are credentials.
//! They never appear in an answer or an error: reqwest errors are stripped of
//! their URL ([`reqwest::Error::without_url`]) and worded here, and every
//! message about such a channel is scrubbed of the URL, its path and the token
//! before it leaves this module. The SMTP password is only handed to lettre.
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
//!
//! # TLS
//!
//! TLS is rustls with the *ring* crypto provider for both HTTP and SMTP (no
//! OpenSSL, and no aws-lc, which needs cmake to build). reqwest verifies
//! certificates with the platform's trust store; lettre with the Mozilla roots
//! of `webpki-roots`. [`Deliverer::new`] installs ring as the process's
//! default rustls provider when none is installed yet (reqwest's
//! `rustls-no-provider` build needs one).

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use lettre::message::MultiPart;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::alert::{Alert, AlertStatus};
use super::config::{Channel, ChannelKind, EmailChannel, SlackChannel, SmtpTls, parse_mailbox};
use super::message;

/// At most this many characters of a response body go into an answer.
pub const ANSWER_BODY_MAX: usize = 300;

/// At most this many bytes of a response body are read (enough for any Slack
/// answer; the rest is not needed to judge the delivery).
const BODY_READ_MAX: usize = 256 * 1024;

/// What replaces a secret found in a message.
const SCRUBBED: &str = "<redacted>";

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

/// How hard a delivery tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts in all, the first included (0 is taken as 1).
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each later one.
    pub backoff: Duration,
    /// The longest wait between attempts (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// The time allowed for one attempt: the whole HTTP request, or each SMTP
    /// command (a whole SMTP conversation is allowed
    /// [`SMTP_CONVERSATION_TIMEOUTS`] times as long).
    pub timeout: Duration,
}

/// A whole SMTP attempt (connect, EHLO, TLS, AUTH, MAIL, RCPT…, DATA) may take
/// this many [`DeliveryPolicy::timeout`]s.
pub const SMTP_CONVERSATION_TIMEOUTS: u32 = 5;

impl Default for DeliveryPolicy {
    /// 5 attempts, 2 s backoff doubling up to 5 min, 10 s per attempt.
    fn default() -> Self {
        DeliveryPolicy {
            attempts: 5,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5 * 60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl DeliveryPolicy {
    /// The wait after the `failed`-th failed attempt (1-based) before the next
    /// one: `backoff × 2^(failed-1)` capped at `max_backoff`, or the server's
    /// `retry_after` (also capped) when it gave one.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_backoff);
        }
        let factor = 1u32.checked_shl(failed.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// [`AlertStatus::Sent`] or [`AlertStatus::Failed`].
    pub status: AlertStatus,
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// The channel's answer to the last attempt, or why it failed (never a
    /// secret).
    pub answer: String,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// What happened (status line and body start, or the error), without
    /// secrets.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AttemptError {}

/// A failed attempt, with the wait the server asked for.
#[derive(Debug)]
struct Failure {
    error: AttemptError,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A failure worth retrying.
    fn retryable(message: impl Into<String>) -> Failure {
        Failure {
            error: AttemptError {
                message: message.into(),
                retryable: true,
            },
            retry_after: None,
        }
    }

    /// A failure that a retry cannot fix.
    fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            error: AttemptError {
                message: message.into(),
                retryable: false,
            },
            retry_after: None,
        }
    }
}

/// Sends alerts to channels. Cheap to clone (shared state behind an [`Arc`]).
#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

/// What clones of a [`Deliverer`] share.
struct Inner {
    policy: DeliveryPolicy,
    http: reqwest::Client,
}

impl fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliverer").field("policy", &self.inner.policy).finish()
    }
}

impl Deliverer {
    /// A deliverer following `policy`, with its HTTP client (installs ring as
    /// the process's default rustls provider if there is none).
    pub fn new(policy: DeliveryPolicy) -> Result<Deliverer, String> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one in between, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("worker-controller/", env!("CARGO_PKG_VERSION")))
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                format!(
                    "cannot create the HTTP client for alert delivery: {}",
                    chain(&e.without_url())
                )
            })?;
        Ok(Deliverer {
            inner: Arc::new(Inner { policy, http }),
        })
    }

    /// The policy it follows.
    pub fn policy(&self) -> &DeliveryPolicy {
        &self.inner.policy
    }

    /// One attempt to deliver `alert` to `channel`: the channel's answer (`200
    /// OK: ok`, `204 No Content`, `250 2.0.0 Ok: queued as …`, `200 OK: slack
    /// ok …`), or why it failed and whether a retry may help.
    pub async fn attempt(&self, channel: &Channel, alert: &Alert) -> Result<String, AttemptError> {
        self.try_once(channel, alert).await.map_err(|f| f.error)
    }

    /// Delivers `alert` to `channel`: attempts until one succeeds, one fails
    /// for good, or [`DeliveryPolicy::attempts`] have been made, waiting
    /// [`DeliveryPolicy::delay`] between them.
    pub async fn deliver(&self, channel: &Channel, alert: &Alert) -> Delivery {
        self.deliver_gated(channel, alert, None).await
    }

    /// [`Deliverer::deliver`], holding a permit of `gate` (when given) during
    /// each attempt but not while waiting between attempts: a channel that is
    /// backing off does not occupy a slot others could use.
    pub async fn deliver_gated(&self, channel: &Channel, alert: &Alert, gate: Option<&Semaphore>) -> Delivery {
        let policy = self.policy();
        let attempts = policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = match gate {
                    Some(gate) => gate.acquire().await.ok(),
                    None => None,
                };
                self.try_once(channel, alert).await
            };
            match result {
                Ok(answer) => {
                    return Delivery {
                        status: AlertStatus::Sent,
                        attempts: attempt,
                        answer,
                    };
                }
                Err(failure) => {
                    let last = attempt >= attempts || !failure.error.retryable;
                    tracing::debug!(
                        channel = %channel.name,
                        alert = %alert.id,
                        attempt,
                        retryable = failure.error.retryable,
                        error = %failure.error.message,
                        "alert delivery attempt failed"
                    );
                    if last {
                        return Delivery {
                            status: AlertStatus::Failed,
                            attempts: attempt,
                            answer: failure.error.message,
                        };
                    }
                    tokio::time::sleep(policy.delay(attempt, failure.retry_after)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt, by channel type; answers and errors of channels whose
    /// URL or token is a secret are scrubbed of it.
    async fn try_once(&self, channel: &Channel, alert: &Alert) -> Result<String, Failure> {
        match &channel.kind {
            ChannelKind::Slack(SlackChannel::Webhook { webhook_url }) => {
                let url = webhook_url.expose();
                let body = json_bytes(&message::slack_payload(alert, None))?;
                let result = self.post(url, body, &[], None).await.and_then(judge);
                scrub_result(result, &secret_parts(url, None))
            }
            ChannelKind::Slack(SlackChannel::Bot {
                token,
                channel: slack_channel,
                api_url,
            }) => {
                let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
                let body = json_bytes(&message::slack_payload(alert, Some(slack_channel)))?;
                let result = self
                    .post(&url, body, &[], Some(token.expose()))
                    .await
                    .and_then(judge_slack_bot);
                scrub_result(result, &secret_parts(&url, Some(token.expose())))
            }
            ChannelKind::Discord(discord) => {
                let url = discord.webhook_url.expose();
                let body = json_bytes(&message::discord_payload(alert))?;
                let result = self.post(url, body, &[], None).await.and_then(judge);
                scrub_result(result, &secret_parts(url, None))
            }
            ChannelKind::Webhook(hook) => {
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
                scrub_result(result, &[hook.secret.expose().to_string()])
            }
            ChannelKind::Email(email) => self.send_email(email, alert).await,
        }
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

    /// Sends the email of `alert` through the channel's SMTP server.
    async fn send_email(&self, email: &EmailChannel, alert: &Alert) -> Result<String, Failure> {
        let rendered = message::email(alert);
        let from = parse_mailbox(&email.from).map_err(|e| Failure::permanent(format!("from: {e}")))?;
        let domain = from.email.domain().to_string();
        let mut builder = Message::builder()
            .from(from)
            .subject(rendered.subject)
            .message_id(Some(format!("<{}@{domain}>", alert.id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Worker-Alert"),
                message::one_line(&alert.id),
            ));
        for to in &email.to {
            let mailbox = parse_mailbox(to).map_err(|e| Failure::permanent(format!("to: {e}")))?;
            builder = builder.to(mailbox);
        }
        let mail = builder
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
            .map_err(|e| Failure::permanent(format!("cannot build the email: {e}")))?;

        let smtp = &email.smtp;
        let transport = match smtp.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host),
            SmtpTls::Plain => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)),
        }
        .map_err(|e| Failure::permanent(format!("cannot set up TLS for SMTP host {}: {}", smtp.host, chain(&e))))?;
        let mut transport = transport.port(smtp.port).timeout(Some(self.policy().timeout));
        if let Some(credentials) = &smtp.credentials {
            transport = transport.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose().to_string(),
            ));
        }
        let transport: AsyncSmtpTransport<Tokio1Executor> = transport.build();
        let limit = self.policy().timeout.saturating_mul(SMTP_CONVERSATION_TIMEOUTS);
        match tokio::time::timeout(limit, transport.send(mail)).await {
            Err(_) => Err(Failure::retryable(format!(
                "SMTP {}:{} did not finish within {} s",
                smtp.host,
                smtp.port,
                limit.as_secs()
            ))),
            Ok(Ok(reply)) => Ok(smtp_reply_text(reply.code(), reply.message())),
            Ok(Err(e)) => Err(smtp_failure(&e, &smtp.host, smtp.port)),
        }
    }
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

/// `error: source: source…`, each level once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// `250 2.0.0 Ok: queued as ABC`.
fn smtp_reply_text<'a>(code: impl fmt::Display, lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    let text = message::one_line(&lines.join(" "));
    if text.is_empty() {
        code.to_string()
    } else {
        format!("{code} {}", message::truncate(&text, ANSWER_BODY_MAX))
    }
}

/// The failure for an SMTP error: permanent (5xx) replies and client-side
/// errors (a message lettre cannot send) are final; the rest is retried.
fn smtp_failure(error: &lettre::transport::smtp::Error, host: &str, port: u16) -> Failure {
    if let Some(code) = error.status() {
        let detail = error
            .source()
            .map(|s| message::one_line(&s.to_string()))
            .unwrap_or_default();
        let text = if detail.is_empty() {
            code.to_string()
        } else {
            format!("{code} {}", message::truncate(&detail, ANSWER_BODY_MAX))
        };
        return if error.is_permanent() {
            Failure::permanent(text)
        } else {
            Failure::retryable(text)
        };
    }
    let what = if error.is_timeout() {
        "SMTP timed out"
    } else if error.is_tls() {
        "SMTP TLS failed"
    } else {
        "SMTP failed"
    };
    let text = format!("{what} ({host}:{port}): {}", message::one_line(&chain(error)));
    if error.is_client() {
        Failure::permanent(text)
    } else {
        Failure::retryable(text)
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

/// What must never appear in a message about a channel whose `url` (and
/// `token`) is secret: the URL, its form without the scheme, its path and
/// query, and the token.
fn secret_parts(url: &str, token: Option<&str>) -> Vec<String> {
    let mut parts = vec![url.to_string()];
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    parts.push(rest.to_string());
    if let Some(slash) = rest.find('/') {
        let path = &rest[slash..];
        if path.len() > 1 {
            parts.push(path.to_string());
        }
    }
    if let Some(token) = token {
        parts.push(token.to_string());
    }
    parts.retain(|p| p.len() >= 4);
    // Longest first, so that a part inside another is not left behind.
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parts
}

/// `text` with every secret part replaced by [`SCRUBBED`].
fn scrub(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if !secret.is_empty() && text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), SCRUBBED);
        }
    }
    text
}

/// [`scrub`] on an attempt's answer or error.
fn scrub_result(result: Result<String, Failure>, secrets: &[String]) -> Result<String, Failure> {
    match result {
        Ok(answer) => Ok(scrub(answer, secrets)),
        Err(mut failure) => {
            failure.error.message = scrub(failure.error.message, secrets);
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_five_attempts_doubling_from_two_seconds() {
        let policy = DeliveryPolicy::default();
        assert_eq!(
            (policy.attempts, policy.backoff, policy.max_backoff, policy.timeout),
            (
                5,
                Duration::from_secs(2),
                Duration::from_secs(300),
                Duration::from_secs(10)
            )
        );
        let delays: Vec<u64> = (1..=10).map(|n| policy.delay(n, None).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(policy.delay(1000, None), Duration::from_secs(300), "no overflow");
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(300)
        );
    }

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
    fn secrets_are_scrubbed_from_messages() {
        let url = "https://hooks.slack.com/services/T0/B0/s3cret";
        let parts = secret_parts(url, Some("xoxb-t0ken"));
        let message = format!(
            "failed for {url} and hooks.slack.com/services/T0/B0/s3cret, path /services/T0/B0/s3cret, token xoxb-t0ken"
        );
        let clean = scrub(message, &parts);
        assert!(!clean.contains("s3cret") && !clean.contains("t0ken"), "{clean}");
        assert!(clean.contains(SCRUBBED));
    }
}
