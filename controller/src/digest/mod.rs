//! The `digest` builtin (the operator's reference is `docs/digest.md`): a
//! daily or weekly email of what happened, composed and sent by the
//! controller.
//!
//! Why the controller: the SMTP settings (an alert email channel, with its
//! `${VAR}` secrets) and the history live here. The job is still an ordinary
//! scheduled job run by an agent: the agent's `digest` builtin asks the
//! controller to send it (`ControllerService.SendDigest`, `api/digest.rs`),
//! so the digest follows the job's schedule, time zone, retries, timeout and
//! history like any other job, and its run's output says what was sent.
//!
//! Layout:
//! * this file: the job's arguments ([`DigestArgs`], read back from the flat
//!   `args` map `config/builtins/digest.rs` produced), the choice of the email
//!   channel, the window, and [`send`], which ties the parts together;
//! * [`facts`] — what happened in the window, from the store's aggregates
//!   ([`crate::store::Store::digest_rows`]) into per-job rows;
//! * [`text`] — the plain-text part;
//! * [`html`] — the HTML part (every value escaped).
//!
//! Delivery reuses the alert email channel's transport
//! ([`crate::alerting::deliver::Deliverer::send_mail`]): one SMTP
//! conversation per attempt; a failure fails the attempt retryably, so the
//! job's retry policy decides how often to try again.

pub mod facts;
pub mod html;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::alerting::config::{AlertsConfig, ChannelKind, EmailChannel};
use crate::alerting::deliver::Mail;
use crate::alerting::detect::Links;
use crate::alerting::message::truncate;
use crate::alerting::{AlertService, message::EMAIL_SUBJECT_MAX};
use crate::job::{ExecutorDef, JobDef};
use crate::store::Store;

pub use facts::{Facts, JobActivity};

/// The builtin's name in `builtin: { name: digest, … }`.
pub const NAME: &str = "digest";
/// Most recipients in `to`.
pub const MAX_RECIPIENTS: usize = 50;
/// Most failures listed (the newest); the total is always given.
pub const FAILURES_SHOWN: u32 = 20;
/// Slowest jobs listed.
pub const SLOWEST_SHOWN: u32 = 5;
/// Most (job, metric) cost sums listed.
pub const COSTS_SHOWN: u32 = 200;
/// Most (job, outcome) rows read for the per-job table.
pub const COUNT_ROWS: u32 = 5_000;
/// Longest error shown per failure, in characters.
pub const ERROR_CHARS: u32 = 1_000;

/// How far back a digest looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The 24 hours before the run's fire time.
    Daily,
    /// The 7 days before the run's fire time.
    Weekly,
}

impl Period {
    /// `daily` or `weekly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
        }
    }

    /// The window's length in milliseconds.
    pub fn span_ms(self) -> i64 {
        match self {
            Period::Daily => 86_400_000,
            Period::Weekly => 7 * 86_400_000,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Period, String> {
        match s {
            "daily" => Ok(Period::Daily),
            "weekly" => Ok(Period::Weekly),
            other => Err(format!(
                "\"{}\" is not a digest period (expected one of: daily, weekly)",
                crate::limits::echo(other)
            )),
        }
    }
}

/// A digest job's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestArgs {
    /// The window's length.
    pub period: Period,
    /// The email channel; `None`: the only email channel there is.
    pub channel: Option<String>,
    /// Recipients instead of the channel's (empty: the channel's).
    pub to: Vec<String>,
    /// Send nothing when nothing finished in the window and the DLQ is empty.
    pub skip_empty: bool,
}

impl DigestArgs {
    /// Reads the flat `args` map `config/builtins/digest.rs` wrote (`period`,
    /// `channel`, `to.N`, `skip_empty`).
    pub fn from_args(args: &BTreeMap<String, String>) -> Result<DigestArgs, String> {
        let period = args
            .get("period")
            .ok_or("the digest has no `period`")?
            .parse::<Period>()?;
        let skip_empty = match args.get("skip_empty").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("skip_empty: {other:?} is not true or false")),
        };
        let mut to: Vec<(usize, String)> = Vec::new();
        for (key, value) in args {
            if let Some(index) = key.strip_prefix("to.") {
                let index = index
                    .parse::<usize>()
                    .map_err(|_| format!("unexpected argument `{key}`"))?;
                to.push((index, value.clone()));
            } else if !matches!(key.as_str(), "period" | "channel" | "skip_empty") {
                return Err(format!("unexpected argument `{key}`"));
            }
        }
        to.sort();
        Ok(DigestArgs {
            period,
            channel: args.get("channel").cloned(),
            to: to.into_iter().map(|(_, address)| address).collect(),
            skip_empty,
        })
    }

    /// The digest arguments of `job`, when it is a digest job.
    pub fn of_job(job: &JobDef) -> Option<Result<DigestArgs, String>> {
        match &job.executor {
            ExecutorDef::Builtin(b) if b.name == NAME => Some(DigestArgs::from_args(&b.args)),
            _ => None,
        }
    }

    /// The email channel the digest goes through: `channel` when given (it
    /// must exist and be an email channel), else the only email channel of
    /// `config`. The error says what is wrong and what there is.
    pub fn resolve_channel<'a>(&self, config: &'a AlertsConfig) -> Result<(&'a str, &'a EmailChannel), String> {
        let email_channels: Vec<(&'a str, &'a EmailChannel)> = config
            .channels
            .iter()
            .filter_map(|(name, channel)| match &channel.kind {
                ChannelKind::Email(email) => Some((name.as_str(), email)),
                _ => None,
            })
            .collect();
        let names = || {
            if email_channels.is_empty() {
                "none".to_string()
            } else {
                email_channels.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            }
        };
        match &self.channel {
            Some(wanted) => match config.channels.get_key_value(wanted) {
                Some((name, channel)) => match &channel.kind {
                    ChannelKind::Email(email) => Ok((name.as_str(), email)),
                    _ => Err(format!(
                        "alert channel \"{}\" is not an email channel (email channels: {})",
                        crate::limits::echo(wanted),
                        names()
                    )),
                },
                None => Err(format!(
                    "alert channel \"{}\" is not defined (email channels: {})",
                    crate::limits::echo(wanted),
                    names()
                )),
            },
            None => match email_channels.as_slice() {
                [only] => Ok(*only),
                [] => Err(
                    "no email channel is defined in the alerting configuration (alerts.yaml); \
                           add one, or name one with `channel:`"
                        .to_string(),
                ),
                _ => Err(format!(
                    "there are several email channels ({}); name one with `channel:`",
                    names()
                )),
            },
        }
    }
}

/// Problems of the digest jobs among `jobs` with the alerting configuration
/// `config`: (job name, what is wrong), for `ApplyJobs` to refuse.
pub fn check_jobs<'a>(jobs: impl IntoIterator<Item = &'a JobDef>, config: &AlertsConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for job in jobs {
        match DigestArgs::of_job(job) {
            None => {}
            Some(Err(e)) => problems.push((job.name.clone(), e)),
            Some(Ok(args)) => {
                if let Err(e) = args.resolve_channel(config) {
                    problems.push((job.name.clone(), e));
                }
            }
        }
    }
    problems
}

/// The time span a digest covers, and the zone it is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, Unix ms (inclusive).
    pub from: i64,
    /// End, Unix ms (exclusive).
    pub to: i64,
    /// The job's time zone (UTC for a job without a schedule).
    pub tz: Tz,
    /// Daily or weekly.
    pub period: Period,
}

impl Window {
    /// The `period` ending at `end` (Unix ms), shown in `tz`.
    pub fn ending_at(end: i64, period: Period, tz: Tz) -> Window {
        Window {
            from: end - period.span_ms(),
            to: end,
            tz,
            period,
        }
    }

    /// `ms` in the window's zone: `2024-05-06 08:00 CEST`.
    pub fn local(&self, ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// `ms` as RFC 3339 in the window's zone.
    pub fn rfc3339(&self, ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .with_timezone(&self.tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }

    /// `2024-05-05 08:00 CEST – 2024-05-06 08:00 CEST`.
    pub fn describe(&self) -> String {
        format!("{} – {}", self.local(self.from), self.local(self.to))
    }
}

/// Why a digest was not sent.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The job's arguments or the alerting configuration do not allow it
    /// (a retry cannot help until an operator changes them).
    #[error("{0}")]
    Config(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    /// The SMTP server did not take the mail.
    #[error("sending the digest through channel \"{channel}\" failed: {message}")]
    Send {
        /// The channel used.
        channel: String,
        /// What the server or the connection said.
        message: String,
    },
}

/// What [`send`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// A mail went out (false: `skip_empty` and nothing to say).
    pub sent: bool,
    /// The email channel used.
    pub channel: String,
    /// Who it went to (empty when not sent).
    pub recipients: Vec<String>,
    /// The SMTP server's answer (empty when not sent).
    pub answer: String,
    /// The facts it was made of.
    pub facts: Facts,
}

/// The digest's subject: `[Worker] daily digest: 12 runs, 3 failures, 1 in the DLQ`.
pub fn subject(facts: &Facts) -> String {
    let text = format!(
        "[{}] {} digest: {} runs finished, {} failed attempts, {} in the DLQ ({})",
        crate::alerting::message::PRODUCT,
        facts.window.period,
        facts.runs_finished(),
        facts.failures_total,
        facts.dead_letter,
        facts.window.local(facts.window.to),
    );
    truncate(&text, EMAIL_SUBJECT_MAX).into_owned()
}

/// Composes the digest `args` asks for over `window` and sends it through
/// the alert email channel (`id` goes into its `Message-ID`). With
/// `skip_empty` and nothing to say, sends nothing.
pub async fn send(
    alerts: &AlertService,
    store: &Store,
    args: &DigestArgs,
    window: Window,
    id: &str,
) -> Result<Sent, DigestError> {
    let config = alerts.config();
    let (channel, email) = args.resolve_channel(&config).map_err(DigestError::Config)?;
    let facts = facts::gather(store, window).await?;
    if args.skip_empty && facts.is_empty() {
        return Ok(Sent {
            sent: false,
            channel: channel.to_string(),
            recipients: Vec::new(),
            answer: String::new(),
            facts,
        });
    }
    let links = Links::new(alerts.web_url().map(str::to_string));
    let mail = Mail {
        subject: subject(&facts),
        text: text::render(&facts, &links),
        html: html::render(&facts, &links),
        id: id.to_string(),
        to: args.to.clone(),
        id_header: "X-Worker-Digest",
    };
    let answer = alerts
        .deliverer()
        .send_mail(email, &mail)
        .await
        .map_err(|e| DigestError::Send {
            channel: channel.to_string(),
            message: e.message,
        })?;
    Ok(Sent {
        sent: true,
        channel: channel.to_string(),
        recipients: if args.to.is_empty() {
            email.to.clone()
        } else {
            args.to.clone()
        },
        answer,
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::config::parse_alerts_yaml;

    fn alerts(yaml: &str) -> AlertsConfig {
        parse_alerts_yaml(
            std::path::Path::new("alerts.yaml"),
            yaml,
            &crate::config::env::from_pairs(&[]),
        )
        .unwrap()
    }

    const MAIL: &str = "    type: email\n    smtp: { host: 127.0.0.1, port: 2525, tls: none }\n    from: w@example.com\n    to: [ops@example.com]\n";

    fn args(channel: Option<&str>) -> DigestArgs {
        DigestArgs {
            period: Period::Daily,
            channel: channel.map(str::to_string),
            to: Vec::new(),
            skip_empty: false,
        }
    }

    #[test]
    fn the_channel_is_named_or_the_only_email_channel() {
        let one = alerts(&format!(
            "channels:\n  mail:\n{MAIL}  hook: {{ type: webhook, url: 'http://127.0.0.1:9/x', secret: s3cret }}\n"
        ));
        assert_eq!(args(None).resolve_channel(&one).unwrap().0, "mail");
        assert_eq!(args(Some("mail")).resolve_channel(&one).unwrap().0, "mail");
        let e = args(Some("hook")).resolve_channel(&one).unwrap_err();
        assert!(
            e.contains("\"hook\" is not an email channel (email channels: mail)"),
            "{e}"
        );
        let e = args(Some("nope")).resolve_channel(&one).unwrap_err();
        assert!(e.contains("\"nope\" is not defined"), "{e}");

        let two = alerts(&format!("channels:\n  mail:\n{MAIL}  mail2:\n{MAIL}"));
        let e = args(None).resolve_channel(&two).unwrap_err();
        assert!(e.contains("several email channels (mail, mail2)"), "{e}");
        assert_eq!(args(Some("mail2")).resolve_channel(&two).unwrap().0, "mail2");

        let none = alerts("channels: {}\n");
        let e = args(None).resolve_channel(&none).unwrap_err();
        assert!(e.contains("no email channel is defined"), "{e}");
    }

    #[test]
    fn windows_end_at_the_fire_time_in_the_job_zone() {
        // 2024-05-06T06:00:00Z is 08:00 in Berlin (CEST).
        let end = 1_714_975_200_000;
        let w = Window::ending_at(end, Period::Weekly, chrono_tz::Europe::Berlin);
        assert_eq!(w.to - w.from, 7 * 86_400_000);
        assert_eq!(w.local(w.to), "2024-05-06 08:00 CEST");
        assert_eq!(w.rfc3339(w.from), "2024-04-29T08:00:00+02:00");
    }

    #[test]
    fn bad_arguments_are_refused_when_read_back() {
        let mut map = BTreeMap::new();
        assert!(DigestArgs::from_args(&map).unwrap_err().contains("period"));
        map.insert("period".to_string(), "daily".to_string());
        map.insert("bcc".to_string(), "x@y.z".to_string());
        assert!(DigestArgs::from_args(&map).unwrap_err().contains("`bcc`"));
    }
}
