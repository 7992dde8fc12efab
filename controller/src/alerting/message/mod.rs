//! Rendering an [`Alert`] for each channel type: pure functions from an alert
//! to the payload a channel receives, with no I/O, so that every limit is
//! tested with plain values ([`super::deliver`] sends what is built here).
//!
//! * [`slack_payload`] (`slack.rs`): Slack Block Kit JSON (incoming webhook,
//!   or `chat.postMessage` with the bot's `channel`);
//! * [`discord_payload`] (`discord.rs`): a Discord webhook message with one
//!   embed;
//! * [`email()`] (`email.rs`): subject, plain-text body and HTML body of a
//!   `multipart/alternative` mail;
//! * [`webhook_body`] (`webhook.rs`): the generic webhook's JSON object, a
//!   stable contract documented on the function.
//!
//! This file holds what they share: the facts every renderer lists, the
//! [`Tone`] of an alert, and cutting and escaping text to fit a limit. Each
//! channel's file holds its limits, its escaping and its renderer, re-exported
//! here.
//!
//! Every renderer lists the same facts ([`facts`]: job, run, attempt, agent,
//! priority, rule, event, the alert's details, and for a summary the count and
//! window), the error, the output tail and the link. Channels refuse payloads
//! over their limits (Slack answers `invalid_blocks`, Discord 400), and an
//! alert whose output is a megabyte of log must still arrive: every value is
//! therefore fitted to the limit of the place it goes, *after* escaping, with
//! [`truncate`] and [`truncate_start`] semantics: cut on a character boundary
//! (never inside a UTF-8 sequence or an escape such as `&amp;`), marked with
//! [`CUT`]. Text is kept from its start, except the output tail, which is kept
//! from its end (its last lines are what explains a failure). Limits count
//! Unicode scalar values (`char`s).
//!
//! Escaping follows each target: Slack `mrkdwn` needs `&`, `<`, `>` as
//! entities; Discord markdown is escaped with backslashes; HTML is escaped
//! everywhere in the email's HTML body; a code block (```` ``` ````) is kept
//! closed by putting a zero-width space after each backtick of its content.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};

use super::alert::{Alert, AlertKind};
use super::rules::Event;

mod discord;
mod email;
mod slack;
mod webhook;

pub use discord::{
    DISCORD_DESCRIPTION_MAX, DISCORD_EMBED_TOTAL_MAX, DISCORD_FIELD_NAME_MAX, DISCORD_FIELD_VALUE_MAX,
    DISCORD_FIELDS_MAX, DISCORD_TITLE_MAX, discord_embed_chars, discord_payload,
};
pub use email::{EMAIL_ERROR_MAX, EMAIL_OUTPUT_MAX, EMAIL_SUBJECT_MAX, EMAIL_TEXT_MAX, Email, email, html_text};
pub use slack::{
    SLACK_FIELD_MAX, SLACK_FIELDS_MAX, SLACK_HEADER_MAX, SLACK_OUTPUT_MAX, SLACK_SECTION_MAX, SLACK_TEXT_MAX,
    slack_payload,
};
pub use webhook::{WEBHOOK_ERROR_MAX, WEBHOOK_OUTPUT_MAX, event_name, webhook_body};

/// Marks where a text was cut.
pub const CUT: char = '…';

/// The product name shown as sender and footer.
pub const PRODUCT: &str = "Worker";

/// How an alert reads at a glance; it picks the Discord embed's colour and the
/// accent of the email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something failed: failed, dead or timed-out runs, consecutive failures,
    /// a schedule fire that could not be created, a lost agent (red).
    Failure,
    /// Something needs a look: a slow run, a backlog, a missed schedule, a
    /// metric above its limit, a change of leader, a throttle summary
    /// (orange).
    Warning,
    /// Back to normal: `recovered` (green).
    Recovery,
    /// Information: a test message, or an alert without an event (blue).
    Info,
}

impl Tone {
    /// The tone of `alert`.
    pub fn of(alert: &Alert) -> Tone {
        match alert.kind {
            AlertKind::Test => Tone::Info,
            AlertKind::Summary => Tone::Warning,
            AlertKind::Alert => match alert.event {
                Some(
                    Event::RunFailed
                    | Event::RunDead
                    | Event::RunTimedOut
                    | Event::ConsecutiveFailures
                    | Event::ScheduleFailed
                    | Event::AgentLost,
                ) => Tone::Failure,
                Some(
                    Event::RunSlow
                    | Event::QueueBacklog
                    | Event::ScheduleMissed
                    | Event::MetricHigh
                    | Event::LeaderChanged,
                ) => Tone::Warning,
                Some(Event::Recovered) => Tone::Recovery,
                None => Tone::Info,
            },
        }
    }

    /// The colour as `0xRRGGBB`.
    pub fn rgb(self) -> u32 {
        match self {
            Tone::Failure => 0xD9_2D_20,
            Tone::Warning => 0xF7_90_09,
            Tone::Recovery => 0x12_B7_6A,
            Tone::Info => 0x2E_90_FA,
        }
    }

    /// The colour as CSS `#rrggbb`.
    pub fn css(self) -> String {
        format!("#{:06x}", self.rgb())
    }
}

/// `text` cut to at most `max` characters on a character boundary, keeping its
/// start; a cut text ends with [`CUT`] (which counts towards `max`).
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.char_indices().nth(max).is_none() {
        return Cow::Borrowed(text);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let end = text.char_indices().nth(max - 1).map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!("{}{CUT}", &text[..end]))
}

/// `text` cut to at most `max` characters on a character boundary, keeping its
/// end (for output tails); a cut text starts with [`CUT`] (which counts
/// towards `max`).
pub fn truncate_start(text: &str, max: usize) -> Cow<'_, str> {
    let count = text.chars().count();
    if count <= max {
        return Cow::Borrowed(text);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let skip = count - (max - 1);
    let start = text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!("{CUT}{}", &text[start..]))
}

/// Which end of a text is kept when it is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The start (cut at the end).
    Start,
    /// The end (cut at the start).
    End,
}

/// How a character is written in a target format (`None`: as itself).
type Escape = fn(char) -> Option<&'static str>;

/// No escaping.
fn plain(_: char) -> Option<&'static str> {
    None
}

/// `text` escaped with `escape` in full.
fn escaped(text: &str, escape: Escape) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match escape(c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

/// `text` escaped with `escape` and fitted to `max` characters *after*
/// escaping: whole escapes are kept or dropped (an entity is never cut), and a
/// cut is marked with [`CUT`] at the end that was cut.
fn fit(text: &str, max: usize, keep: Keep, escape: Escape) -> String {
    if max == 0 {
        return String::new();
    }
    // Escaping never shortens a character, so at most `max` characters of the
    // text can be shown: look at no more than that (and one more to know).
    let raw_cut = text.chars().nth(max).is_some();
    let window: Vec<char> = match keep {
        Keep::Start => text.chars().take(max).collect(),
        Keep::End => {
            let mut tail: Vec<char> = text.chars().rev().take(max).collect();
            tail.reverse();
            tail
        }
    };
    let width = |c: char| escape(c).map_or(1, |s| s.chars().count());
    let total: usize = window.iter().map(|&c| width(c)).sum();
    if !raw_cut && total <= max {
        return escaped(text, escape);
    }
    let budget = max - 1;
    let mut used = 0;
    let mut kept = 0;
    let ordered: Box<dyn Iterator<Item = &char>> = match keep {
        Keep::Start => Box::new(window.iter()),
        Keep::End => Box::new(window.iter().rev()),
    };
    for &c in ordered {
        let w = width(c);
        if used + w > budget {
            break;
        }
        used += w;
        kept += 1;
    }
    let shown: String = match keep {
        Keep::Start => window[..kept].iter().collect(),
        Keep::End => window[window.len() - kept..].iter().collect(),
    };
    match keep {
        Keep::Start => format!("{}{CUT}", escaped(&shown, escape)),
        Keep::End => format!("{CUT}{}", escaped(&shown, escape)),
    }
}

/// `text` on one line: control characters (newlines included) become spaces,
/// runs of whitespace one space, trimmed.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:00:00.000Z`); out-of-range values are clamped to the epoch.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unix milliseconds for people: `2024-05-01 12:00:00 UTC`.
fn human_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// The title on one line, or a generic one when it is empty.
fn title_of(alert: &Alert) -> String {
    let title = one_line(&alert.title);
    if title.is_empty() {
        format!("{PRODUCT} {}", alert.kind)
    } else {
        title
    }
}

/// The facts of an alert as (label, value), in display order: job, run,
/// attempt (`2/3`), agent, priority, rule, event, then the alert's details,
/// then for a summary the count suppressed and the window. Only what is set.
pub fn facts(alert: &Alert) -> Vec<(String, String)> {
    let mut facts: Vec<(String, String)> = Vec::new();
    let mut push = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            facts.push((label.to_string(), value));
        }
    };
    push("Job", alert.job.clone());
    push("Run", alert.run_id.clone());
    push(
        "Attempt",
        alert.attempt.map(|attempt| match alert.max_attempts {
            Some(max) => format!("{attempt}/{max}"),
            None => attempt.to_string(),
        }),
    );
    push("Agent", alert.agent.clone());
    push("Priority", alert.priority.map(|p| p.to_string()));
    push("Rule", alert.rule.clone());
    push("Event", alert.event.map(|e| e.to_string()));
    for (label, value) in &alert.details {
        facts.push((label.clone(), value.clone()));
    }
    if let Some(count) = alert.suppressed {
        let noun = if count == 1 { "alert" } else { "alerts" };
        facts.push(("Suppressed".into(), format!("{count} {noun}")));
    }
    match (alert.window_start, alert.window_end) {
        (Some(start), Some(end)) => {
            facts.push(("Window".into(), format!("{} – {}", human_time(start), human_time(end))))
        }
        (Some(start), None) => facts.push(("Window".into(), format!("from {}", human_time(start)))),
        (None, Some(end)) => facts.push(("Window".into(), format!("until {}", human_time(end)))),
        (None, None) => {}
    }
    facts
}

/// At most `max` facts: when there are more, the last one shown is `More`,
/// holding the rest as `label: value` lines.
fn fold_facts(mut facts: Vec<(String, String)>, max: usize) -> Vec<(String, String)> {
    if facts.len() <= max || max == 0 {
        facts.truncate(max);
        return facts;
    }
    let rest: Vec<String> = facts
        .drain(max - 1..)
        .map(|(label, value)| format!("{label}: {value}"))
        .collect();
    facts.push(("More".into(), rest.join("\n")));
    facts
}

/// The link if it is an `http(s)://` URL without spaces (channels refuse
/// anything else in a link).
fn usable_link(alert: &Alert) -> Option<&str> {
    alert.link.as_deref().filter(|link| {
        (link.starts_with("https://") || link.starts_with("http://"))
            && !link.contains(|c: char| c.is_whitespace() || c.is_control())
    })
}

/// A code block (```` ``` ```` fences on their own lines) of `content` fitted
/// with `escape`, at most `max` characters in all; `None` if there is no room.
fn code_block(content: &str, max: usize, keep: Keep, escape: Escape) -> Option<String> {
    const FENCES: usize = "```\n\n```".len();
    if max < FENCES + 2 {
        return None;
    }
    Some(format!("```\n{}\n```", fit(content, max - FENCES, keep, escape)))
}

#[cfg(test)]
mod tests;
