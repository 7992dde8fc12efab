//! Delivery over SMTP: the `multipart/alternative` mail of an alert (rendered
//! by [`message::email()`]) or any other [`Mail`] (the `digest` builtin's),
//! one SMTP conversation per attempt through the channel's server, and the
//! judgement of its reply.
//!
//! The server's final reply is the answer (`250 2.0.0 Ok: queued as …`). A
//! permanent (5xx) reply fails at once (`535` for bad credentials, a refused
//! recipient…); transient (4xx) replies, connection, TLS and timeout errors
//! are retried. Each SMTP command is allowed the policy's
//! [`timeout`](super::DeliveryPolicy::timeout), the whole conversation
//! [`SMTP_CONVERSATION_TIMEOUTS`] times as long.

use std::error::Error as _;
use std::fmt;

use lettre::message::MultiPart;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{ANSWER_BODY_MAX, AttemptError, Deliverer, Failure, chain};
use crate::alerting::alert::Alert;
use crate::alerting::config::{EmailChannel, SmtpTls, parse_mailbox};
use crate::alerting::message;

/// A whole SMTP attempt (connect, EHLO, TLS, AUTH, MAIL, RCPT…, DATA) may take
/// this many [`DeliveryPolicy::timeout`](super::DeliveryPolicy::timeout)s.
pub const SMTP_CONVERSATION_TIMEOUTS: u32 = 5;

/// A mail to send through an email channel's SMTP server: what the alert
/// email and the `digest` builtin (`crate::digest`) share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The subject (one line).
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part (escaped by its author).
    pub html: String,
    /// Used in the `Message-ID` (`<ID@sender-domain>`) and, for alerts, the
    /// `X-Worker-Alert` header.
    pub id: String,
    /// Recipients instead of the channel's `to` (empty: the channel's).
    pub to: Vec<String>,
    /// Extra header (`X-Worker-Alert`, `X-Worker-Digest`) carrying [`Mail::id`].
    pub id_header: &'static str,
}

impl Deliverer {
    /// Sends the email of `alert` through the channel's SMTP server.
    pub(super) async fn send_email(&self, email: &EmailChannel, alert: &Alert) -> Result<String, Failure> {
        let rendered = message::email(alert);
        let mail = Mail {
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            id: alert.id.clone(),
            to: Vec::new(),
            id_header: "X-Worker-Alert",
        };
        self.smtp_send(email, &mail).await
    }

    /// Sends `mail` through the channel `email` (one SMTP conversation, no
    /// retry): the server's answer (`250 2.0.0 Ok: queued as …`), or why it
    /// failed and whether another attempt may succeed.
    pub async fn send_mail(&self, email: &EmailChannel, mail: &Mail) -> Result<String, AttemptError> {
        self.smtp_send(email, mail).await.map_err(|f| f.error)
    }

    /// One SMTP conversation delivering `mail` through `email`'s server.
    async fn smtp_send(&self, email: &EmailChannel, mail: &Mail) -> Result<String, Failure> {
        let from = parse_mailbox(&email.from).map_err(|e| Failure::permanent(format!("from: {e}")))?;
        let domain = from.email.domain().to_string();
        let mut builder = Message::builder()
            .from(from)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", mail.id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(mail.id_header),
                message::one_line(&mail.id),
            ));
        let recipients = if mail.to.is_empty() { &email.to } else { &mail.to };
        for to in recipients {
            let mailbox = parse_mailbox(to).map_err(|e| Failure::permanent(format!("to: {e}")))?;
            builder = builder.to(mailbox);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
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
        match tokio::time::timeout(limit, transport.send(message)).await {
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
