//! Delivering alerts to channels, with retries and backoff: Slack, Discord
//! and generic webhooks over HTTP, email over SMTP.
//!
//! A [`Deliverer`] holds one HTTP client (connections are pooled across
//! alerts) and the [`DeliveryPolicy`]; it is cheap to clone and shared by the
//! delivery tasks. [`Deliverer::attempt`] makes one try and says whether a
//! failure is worth retrying; [`Deliverer::deliver`] retries with exponential
//! backoff and ends with a [`Delivery`]: `sent` or `failed`, the number of
//! attempts and the channel's answer (what the alert history shows).
//!
//! This file holds what every channel shares: the policy, the [`Deliverer`]
//! and its retry loop, the dispatch of one attempt by channel type, how an
//! attempt fails, and the scrubbing of secrets. Each transport is a file of
//! its own, its public items re-exported here:
//! * `http.rs`: one attempt to Slack (incoming webhook or bot), Discord or a
//!   generic webhook: the payload, the POST, how statuses and Slack bot
//!   answers are judged, and the generic webhook's headers and [`signature`]
//!   (the contract a receiver verifies is described there);
//! * `email.rs`: one attempt to an email channel: the mail, the SMTP
//!   conversation, and how SMTP replies and errors are judged.
//!
//! # Outcomes
//!
//! An attempt ends with the channel's answer (`200 OK: ok`, `204 No Content`,
//! `250 2.0.0 Ok: queued as …`), or fails: retryably when the channel may
//! accept a later attempt (408, 429 and 5xx statuses, timeouts, connection
//! errors, transient SMTP replies, Slack's rate limit), or at once when a retry
//! cannot fix it (any other status, a permanent SMTP reply, any other Slack bot
//! error). A server's `Retry-After` replaces the backoff (capped at
//! [`DeliveryPolicy::max_backoff`]). An answer quotes at most
//! [`ANSWER_BODY_MAX`] characters of what the channel said. `http.rs` and
//! `email.rs` give each transport's rules.
//!
//! # Secrets
//!
//! Slack and Discord webhook URLs and the Slack bot token are credentials.
//! They never appear in an answer or an error: reqwest errors are stripped of
//! their URL ([`reqwest::Error::without_url`]) and worded in `http.rs`, and every
//! message about such a channel is scrubbed of the URL, its path and the token
//! before it leaves this module. The SMTP password is only handed to lettre.
//!
//! # TLS
//!
//! TLS is rustls with the *ring* crypto provider for both HTTP and SMTP (no
//! OpenSSL, and no aws-lc, which needs cmake to build). reqwest verifies
//! certificates with the platform's trust store; lettre with the Mozilla roots
//! of `webpki-roots`. [`Deliverer::new`] installs ring as the process's
//! default rustls provider when none is installed yet (reqwest's
//! `rustls-no-provider` build needs one).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::alert::{Alert, AlertStatus};
use super::config::{Channel, ChannelKind};

mod email;
mod http;

pub use email::{Mail, SMTP_CONVERSATION_TIMEOUTS};
pub use http::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

/// At most this many characters of a response body go into an answer.
pub const ANSWER_BODY_MAX: usize = 300;

/// What replaces a secret found in a message.
const SCRUBBED: &str = "<redacted>";

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

    /// One attempt, by channel type. Each sender scrubs the channel's secrets
    /// (a URL that embeds a token, the bot token, the signing secret) from its
    /// answer and its errors.
    async fn try_once(&self, channel: &Channel, alert: &Alert) -> Result<String, Failure> {
        match &channel.kind {
            ChannelKind::Slack(slack) => self.send_slack(slack, alert).await,
            ChannelKind::Discord(discord) => self.send_discord(discord, alert).await,
            ChannelKind::Webhook(hook) => self.send_webhook(hook, alert).await,
            ChannelKind::Email(email) => self.send_email(email, alert).await,
        }
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
