//! Rendering an [`Alert`] for each channel type: pure functions from an alert
//! to the payload a channel receives, with no I/O, so that every limit is
//! tested with plain values ([`super::deliver`] sends what is built here).
//!
//! * [`slack_payload`]: Slack Block Kit JSON (incoming webhook, or
//!   `chat.postMessage` with the bot's `channel`);
//! * [`discord_payload`]: a Discord webhook message with one embed;
//! * [`email`]: subject, plain-text body and HTML body of a
//!   `multipart/alternative` mail;
//! * [`webhook_body`]: the generic webhook's JSON object, a stable contract
//!   documented on the function.
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
use serde_json::{Map, Value, json};

use super::alert::{Alert, AlertKind};
use super::rules::Event;

/// Marks where a text was cut.
pub const CUT: char = '…';

/// The product name shown as sender and footer.
pub const PRODUCT: &str = "Worker";

/// Slack: longest `header` block text.
pub const SLACK_HEADER_MAX: usize = 150;
/// Slack: longest `section` block text.
pub const SLACK_SECTION_MAX: usize = 3000;
/// Slack: most fields in one `section`.
pub const SLACK_FIELDS_MAX: usize = 10;
/// Slack: longest text of one field.
pub const SLACK_FIELD_MAX: usize = 2000;
/// Slack: longest output tail shown (inside its code block).
pub const SLACK_OUTPUT_MAX: usize = 2900;
/// Slack: longest top-level `text` (the notification and fallback text).
pub const SLACK_TEXT_MAX: usize = 3000;

/// Discord: longest embed title.
pub const DISCORD_TITLE_MAX: usize = 256;
/// Discord: longest embed description.
pub const DISCORD_DESCRIPTION_MAX: usize = 4096;
/// Discord: most fields in one embed.
pub const DISCORD_FIELDS_MAX: usize = 25;
/// Discord: longest field name.
pub const DISCORD_FIELD_NAME_MAX: usize = 256;
/// Discord: longest field value.
pub const DISCORD_FIELD_VALUE_MAX: usize = 1024;
/// Discord: most characters of an embed (title, description, field names and
/// values, footer text) together.
pub const DISCORD_EMBED_TOTAL_MAX: usize = 6000;
/// Discord: at most this many fact fields are shown one by one (the rest are
/// folded into one field), so that the facts alone stay well within
/// [`DISCORD_EMBED_TOTAL_MAX`].
const DISCORD_FACTS_MAX: usize = 15;
/// Discord: longest value of a fact field (facts are short; the error and the
/// output get the room).
const DISCORD_FACT_VALUE_MAX: usize = 200;
/// Discord: longest name of a fact field.
const DISCORD_FACT_NAME_MAX: usize = 64;

/// Email: longest subject.
pub const EMAIL_SUBJECT_MAX: usize = 200;
/// Email: longest error shown.
pub const EMAIL_ERROR_MAX: usize = 10_000;
/// Email: longest output tail shown.
pub const EMAIL_OUTPUT_MAX: usize = 20_000;
/// Email: longest text shown.
pub const EMAIL_TEXT_MAX: usize = 20_000;
/// Email: longest value of one fact.
const EMAIL_FACT_MAX: usize = 2_000;

/// Generic webhook: longest `error`.
pub const WEBHOOK_ERROR_MAX: usize = 16_384;
/// Generic webhook: longest `output_tail` (kept from its end).
pub const WEBHOOK_OUTPUT_MAX: usize = 65_536;

/// How an alert reads at a glance; it picks the Discord embed's colour and the
/// accent of the email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something failed: failed, dead or timed-out runs, consecutive failures,
    /// a schedule fire that could not be created, a lost agent (red).
    Failure,
    /// Something needs a look: a slow run, a backlog, a missed schedule, a
    /// throttle summary (orange).
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
                Some(Event::RunSlow | Event::QueueBacklog | Event::ScheduleMissed) => Tone::Warning,
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

/// Slack `mrkdwn` (and the `text` field): `&`, `<`, `>` as entities.
fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// Inside a Slack code block: the entities, and backticks followed by a
/// zero-width space so that the content cannot close the block.
fn slack_code_escape(c: char) -> Option<&'static str> {
    match c {
        '`' => Some("`\u{200B}"),
        other => slack_escape(other),
    }
}

/// Discord markdown: a backslash before every character markdown gives a
/// meaning to (Discord accepts a backslash before any punctuation).
fn discord_escape(c: char) -> Option<&'static str> {
    match c {
        '\\' => Some("\\\\"),
        '*' => Some("\\*"),
        '_' => Some("\\_"),
        '~' => Some("\\~"),
        '`' => Some("\\`"),
        '|' => Some("\\|"),
        '>' => Some("\\>"),
        '<' => Some("\\<"),
        '[' => Some("\\["),
        ']' => Some("\\]"),
        '#' => Some("\\#"),
        _ => None,
    }
}

/// Inside a Discord code block: backticks followed by a zero-width space.
fn code_escape(c: char) -> Option<&'static str> {
    match c {
        '`' => Some("`\u{200B}"),
        _ => None,
    }
}

/// HTML text and attribute values.
fn html_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    }
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

/// The Slack message of `alert`: `{"text", "blocks"}` for an incoming
/// webhook, plus `"channel"` when `channel` is given (a bot's
/// `chat.postMessage`).
///
/// Blocks: a `header` with the title (plain text, at most
/// [`SLACK_HEADER_MAX`]), a `section` with the text, a `section` of at most
/// [`SLACK_FIELDS_MAX`] fields (the [`facts`], each at most
/// [`SLACK_FIELD_MAX`]), a `section` with the error in a code block, a
/// `section` with the output tail in a code block (at most
/// [`SLACK_OUTPUT_MAX`] of output), and a `context` with the link and the alert
/// id. `text` is the title and text, for notifications and old clients.
pub fn slack_payload(alert: &Alert, channel: Option<&str>) -> Value {
    let title = title_of(alert);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": fit(&title, SLACK_HEADER_MAX, Keep::Start, plain), "emoji": true },
    })];
    if !alert.text.trim().is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": fit(alert.text.trim(), SLACK_SECTION_MAX, Keep::Start, slack_escape) },
        }));
    }
    let fields: Vec<Value> = fold_facts(facts(alert), SLACK_FIELDS_MAX)
        .into_iter()
        .map(|(label, value)| {
            let label = format!("*{}*\n", escaped(&one_line(&truncate(&label, 100)), slack_escape));
            let room = SLACK_FIELD_MAX - label.chars().count();
            json!({ "type": "mrkdwn", "text": format!("{label}{}", fit(&value, room, Keep::Start, slack_escape)) })
        })
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({ "type": "section", "fields": fields }));
    }
    if let Some(error) = alert.error.as_deref().filter(|e| !e.trim().is_empty()) {
        let label = "*Error*\n";
        if let Some(block) = code_block(
            error.trim_end(),
            SLACK_SECTION_MAX - label.len(),
            Keep::Start,
            slack_code_escape,
        ) {
            blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("{label}{block}") } }));
        }
    }
    if let Some(output) = alert.output_tail.as_deref().filter(|o| !o.trim().is_empty()) {
        let label = "*Output (last lines)*\n";
        if let Some(block) = code_block(output.trim_end(), SLACK_OUTPUT_MAX + 8, Keep::End, slack_code_escape) {
            blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("{label}{block}") } }));
        }
    }
    let mut context = Vec::new();
    if let Some(link) = usable_link(alert).filter(|link| link.chars().count() <= 2000) {
        let target = escaped(link, slack_escape).replace('|', "%7C");
        context.push(json!({ "type": "mrkdwn", "text": format!("<{target}|Open in {PRODUCT}>") }));
    }
    context.push(json!({
        "type": "mrkdwn",
        "text": format!("{PRODUCT} {} {} · {}", alert.kind, escaped(&truncate(&alert.id, 64), slack_escape), human_time(alert.at)),
    }));
    blocks.push(json!({ "type": "context", "elements": context }));

    let text = if alert.text.trim().is_empty() {
        title
    } else {
        format!("{title}\n{}", alert.text.trim())
    };
    let mut payload = json!({
        "text": fit(&text, SLACK_TEXT_MAX, Keep::Start, slack_escape),
        "blocks": blocks,
    });
    if let (Some(channel), Some(object)) = (channel, payload.as_object_mut()) {
        object.insert("channel".into(), Value::String(channel.to_string()));
    }
    payload
}

/// The Discord webhook message of `alert`: `{"username": "Worker",
/// "allowed_mentions": {"parse": []}, "embeds": [embed]}` with one embed:
/// `title` (at most [`DISCORD_TITLE_MAX`]), `description` (the text, at most
/// [`DISCORD_DESCRIPTION_MAX`]), `color` ([`Tone`]), `url` (the link, when
/// set), `timestamp` (RFC 3339), `fields` (the [`facts`] inline, then the
/// error and the output tail in code blocks; at most [`DISCORD_FIELDS_MAX`],
/// names at most [`DISCORD_FIELD_NAME_MAX`], values at most
/// [`DISCORD_FIELD_VALUE_MAX`]) and `footer`. The embed's characters stay
/// within [`DISCORD_EMBED_TOTAL_MAX`]: the output is shortened first, then the
/// error, then the description.
pub fn discord_payload(alert: &Alert) -> Value {
    let title = fit(&title_of(alert), DISCORD_TITLE_MAX, Keep::Start, plain);
    let footer = PRODUCT;
    let facts: Vec<(String, String)> = fold_facts(facts(alert), DISCORD_FACTS_MAX)
        .into_iter()
        .map(|(label, value)| {
            let name = fit(&one_line(&label), DISCORD_FACT_NAME_MAX, Keep::Start, plain);
            let name = if name.is_empty() { "-".to_string() } else { name };
            let value = fit(&value, DISCORD_FACT_VALUE_MAX, Keep::Start, discord_escape);
            (
                name,
                if value.trim().is_empty() {
                    "-".to_string()
                } else {
                    value
                },
            )
        })
        .collect();
    let error = alert
        .error
        .as_deref()
        .map(str::trim_end)
        .filter(|e| !e.trim().is_empty());
    let output = alert
        .output_tail
        .as_deref()
        .map(str::trim_end)
        .filter(|o| !o.trim().is_empty());
    const ERROR_NAME: &str = "Error";
    const OUTPUT_NAME: &str = "Output (last lines)";

    let chars = |s: &str| s.chars().count();
    let fixed = chars(&title)
        + chars(footer)
        + facts.iter().map(|(n, v)| chars(n) + chars(v)).sum::<usize>()
        + error.map_or(0, |_| ERROR_NAME.len())
        + output.map_or(0, |_| OUTPUT_NAME.len());
    let room = DISCORD_EMBED_TOTAL_MAX.saturating_sub(fixed);

    // Full sizes first, then shrink in order: output, error, description.
    let mut description = fit(
        alert.text.trim(),
        DISCORD_DESCRIPTION_MAX.min(room),
        Keep::Start,
        discord_escape,
    );
    let mut error_block = error.and_then(|e| code_block(e, DISCORD_FIELD_VALUE_MAX, Keep::Start, code_escape));
    let size = |d: &str, e: &Option<String>| chars(d) + e.as_deref().map_or(0, chars);
    let output_room = room.saturating_sub(size(&description, &error_block));
    let output_block =
        output.and_then(|o| code_block(o, DISCORD_FIELD_VALUE_MAX.min(output_room), Keep::End, code_escape));
    let used = size(&description, &error_block) + output_block.as_deref().map_or(0, chars);
    if used > room {
        // The output is already as short as it gets: shorten the error, then the description.
        let error_room = room
            .saturating_sub(chars(&description))
            .saturating_sub(output_block.as_deref().map_or(0, chars));
        error_block =
            error.and_then(|e| code_block(e, DISCORD_FIELD_VALUE_MAX.min(error_room), Keep::Start, code_escape));
        let description_room = room
            .saturating_sub(error_block.as_deref().map_or(0, chars))
            .saturating_sub(output_block.as_deref().map_or(0, chars));
        description = fit(alert.text.trim(), description_room, Keep::Start, discord_escape);
    }

    let mut fields: Vec<Value> = facts
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value, "inline": true }))
        .collect();
    if let Some(block) = error_block {
        fields.push(json!({ "name": ERROR_NAME, "value": block, "inline": false }));
    }
    if let Some(block) = output_block {
        fields.push(json!({ "name": OUTPUT_NAME, "value": block, "inline": false }));
    }
    fields.truncate(DISCORD_FIELDS_MAX);

    let mut embed = Map::new();
    embed.insert("title".into(), Value::String(title));
    if !description.is_empty() {
        embed.insert("description".into(), Value::String(description));
    }
    embed.insert("color".into(), json!(Tone::of(alert).rgb()));
    if let Some(link) = usable_link(alert).filter(|link| link.chars().count() <= 2048) {
        embed.insert("url".into(), Value::String(link.to_string()));
    }
    embed.insert("timestamp".into(), Value::String(rfc3339(alert.at)));
    if !fields.is_empty() {
        embed.insert("fields".into(), Value::Array(fields));
    }
    embed.insert("footer".into(), json!({ "text": footer }));
    json!({
        "username": PRODUCT,
        "allowed_mentions": { "parse": [] },
        "embeds": [Value::Object(embed)],
    })
}

/// The characters of a Discord embed that count towards
/// [`DISCORD_EMBED_TOTAL_MAX`] (title, description, field names and values,
/// footer text, author name).
pub fn discord_embed_chars(embed: &Value) -> usize {
    let chars = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, |s| s.chars().count());
    let fields = embed.get("fields").and_then(Value::as_array).map_or(0, |fields| {
        fields
            .iter()
            .map(|f| chars(f.get("name")) + chars(f.get("value")))
            .sum()
    });
    chars(embed.get("title"))
        + chars(embed.get("description"))
        + fields
        + chars(embed.get("footer").and_then(|f| f.get("text")))
        + chars(embed.get("author").and_then(|a| a.get("name")))
}

/// An email's rendered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `[Worker] <title>`: one line, at most [`EMAIL_SUBJECT_MAX`] characters.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (every value escaped; the error and output in `<pre>`).
    pub html: String,
}

/// The email of `alert`: both bodies show the title, the text (at most
/// [`EMAIL_TEXT_MAX`]), the [`facts`], the error (at most
/// [`EMAIL_ERROR_MAX`]), the output tail (at most [`EMAIL_OUTPUT_MAX`], kept
/// from its end) and the link.
pub fn email(alert: &Alert) -> Email {
    let title = title_of(alert);
    let subject = truncate(&format!("[{PRODUCT}] {title}"), EMAIL_SUBJECT_MAX).into_owned();
    let facts: Vec<(String, String)> = facts(alert)
        .into_iter()
        .map(|(label, value)| {
            (
                one_line(&truncate(&label, 200)),
                truncate(&value, EMAIL_FACT_MAX).into_owned(),
            )
        })
        .collect();
    let text_body = truncate(alert.text.trim(), EMAIL_TEXT_MAX);
    let text_body = text_body.as_ref();
    let error = alert
        .error
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(|e| truncate(e.trim_end(), EMAIL_ERROR_MAX));
    let output = alert
        .output_tail
        .as_deref()
        .filter(|o| !o.trim().is_empty())
        .map(|o| truncate_start(o.trim_end(), EMAIL_OUTPUT_MAX));
    let link = usable_link(alert);

    // Plain text.
    let mut text = format!("{title}\n\n");
    if !text_body.is_empty() {
        text.push_str(text_body);
        text.push_str("\n\n");
    }
    let width = facts.iter().map(|(label, _)| label.chars().count()).max().unwrap_or(0) + 1;
    for (label, value) in &facts {
        let value = value.replace('\n', &format!("\n{:width$} ", ""));
        text.push_str(&format!("{:width$} {value}\n", format!("{label}:")));
    }
    if !facts.is_empty() {
        text.push('\n');
    }
    if let Some(error) = &error {
        text.push_str("Error:\n");
        for line in error.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push('\n');
    }
    if let Some(output) = &output {
        text.push_str("Output (last lines):\n");
        for line in output.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push('\n');
    }
    if let Some(link) = link {
        text.push_str(&format!("Open in {PRODUCT}: {link}\n\n"));
    }
    text.push_str(&format!(
        "-- \n{PRODUCT} {} {} at {}\n",
        alert.kind,
        alert.id,
        human_time(alert.at)
    ));

    // HTML.
    let e = |s: &str| escaped(s, html_escape);
    let accent = Tone::of(alert).css();
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    html.push_str(&e(&subject));
    html.push_str("</title></head>\n<body style=\"font-family: sans-serif; color: #1d2939;\">\n");
    html.push_str(&format!(
        "<h2 style=\"border-left: 6px solid {accent}; padding-left: 8px;\">{}</h2>\n",
        e(&title)
    ));
    if !text_body.is_empty() {
        html.push_str(&format!("<p>{}</p>\n", e(text_body).replace('\n', "<br>\n")));
    }
    if !facts.is_empty() {
        html.push_str("<table style=\"border-collapse: collapse;\">\n");
        for (label, value) in &facts {
            html.push_str(&format!(
                "<tr><th style=\"text-align: left; padding: 2px 12px 2px 0; vertical-align: top;\">{}</th><td style=\"padding: 2px 0;\">{}</td></tr>\n",
                e(label),
                e(value).replace('\n', "<br>")
            ));
        }
        html.push_str("</table>\n");
    }
    let pre = "background: #f2f4f7; padding: 8px; white-space: pre-wrap; word-break: break-all;";
    if let Some(error) = &error {
        html.push_str(&format!("<h3>Error</h3>\n<pre style=\"{pre}\">{}</pre>\n", e(error)));
    }
    if let Some(output) = &output {
        html.push_str(&format!(
            "<h3>Output (last lines)</h3>\n<pre style=\"{pre}\">{}</pre>\n",
            e(output)
        ));
    }
    if let Some(link) = link {
        html.push_str(&format!("<p><a href=\"{}\">Open in {PRODUCT}</a></p>\n", e(link)));
    }
    html.push_str(&format!(
        "<p style=\"color: #667085; font-size: small;\">{PRODUCT} {} {} at {}</p>\n</body></html>\n",
        alert.kind,
        e(&alert.id),
        human_time(alert.at)
    ));

    Email { subject, text, html }
}

/// The name of what an alert is about, as the generic webhook's
/// `X-Worker-Event` header: its event (`run_dead`…), or its kind when it has
/// none (`test`).
pub fn event_name(alert: &Alert) -> &'static str {
    alert.event.map_or(alert.kind.as_str(), |event| event.as_str())
}

/// The generic webhook's JSON body: one object whose fields are always all
/// present (`null` when not set), so that receivers can rely on its shape:
///
/// | field | type | meaning |
/// |---|---|---|
/// | `id` | string | the alert's id (a ULID); also the `X-Worker-Delivery` header, the same on every retry |
/// | `kind` | string | `alert`, `summary` (a throttle window's count) or `test` |
/// | `event` | string or null | `run_failed`, `run_dead`, `run_timed_out`, `run_slow`, `consecutive_failures`, `schedule_missed`, `schedule_failed`, `agent_lost`, `queue_backlog`, `recovered` |
/// | `rule` | string or null | the rule that routed it |
/// | `job` | string or null | the job |
/// | `priority` | string or null | `low`, `normal`, `high`, `critical` |
/// | `run_id` | string or null | the run |
/// | `attempt`, `max_attempts` | number or null | the attempt (1-based) and the run's maximum |
/// | `agent` | string or null | the agent's name |
/// | `title` | string | one line |
/// | `text` | string | a sentence or two |
/// | `error` | string or null | the error (at most [`WEBHOOK_ERROR_MAX`] characters) |
/// | `output_tail` | string or null | the end of the output (at most [`WEBHOOK_OUTPUT_MAX`], cut at its start) |
/// | `link` | string or null | the page in the web UI |
/// | `details` | object | further facts, label → string value (a repeated label keeps its last value) |
/// | `suppressed` | number or null | for a summary, how many alerts the window held back |
/// | `window_start`, `window_end` | string or null | for a summary, the window (RFC 3339 UTC) |
/// | `at` | string | when it happened (RFC 3339 UTC, milliseconds) |
///
/// Cut texts are marked with [`CUT`]. New fields may be added; existing ones
/// keep their name and meaning.
pub fn webhook_body(alert: &Alert) -> Value {
    let details: Map<String, Value> = alert
        .details
        .iter()
        .map(|(label, value)| (label.clone(), Value::String(value.clone())))
        .collect();
    json!({
        "id": alert.id,
        "kind": alert.kind,
        "event": alert.event,
        "rule": alert.rule,
        "job": alert.job,
        "priority": alert.priority,
        "run_id": alert.run_id,
        "attempt": alert.attempt,
        "max_attempts": alert.max_attempts,
        "agent": alert.agent,
        "title": alert.title,
        "text": alert.text,
        "error": alert.error.as_deref().map(|e| truncate(e, WEBHOOK_ERROR_MAX)),
        "output_tail": alert.output_tail.as_deref().map(|o| truncate_start(o, WEBHOOK_OUTPUT_MAX)),
        "link": alert.link,
        "details": details,
        "suppressed": alert.suppressed,
        "window_start": alert.window_start.map(rfc3339),
        "window_end": alert.window_end.map(rfc3339),
        "at": rfc3339(alert.at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    /// An alert with every field set to ordinary values.
    fn ordinary() -> Alert {
        let mut alert = Alert::new(
            AlertKind::Alert,
            "run_dead: backup.nightly attempt 3/3 failed",
            "The run failed its last attempt and went to the dead-letter queue.",
            1_714_564_800_123,
        );
        alert.id = "01HXAMPLE0000000000000000".into();
        alert.event = Some(Event::RunDead);
        alert.rule = Some("dead-runs".into());
        alert.job = Some("backup.nightly".into());
        alert.priority = Some(Priority::High);
        alert.run_id = Some("01HRUN".into());
        alert.attempt = Some(3);
        alert.max_attempts = Some(3);
        alert.agent = Some("agent-1".into());
        alert.error = Some("exit status 2".into());
        alert.output_tail = Some("copying...\nerror: disk full\n".into());
        alert.link = Some("https://worker.example.com/runs/01HRUN".into());
        alert.details = vec![("Duration".into(), "12m 3s".into())];
        alert
    }

    /// An alert whose every text is far over every limit, with multi-byte
    /// characters, markup and backticks where they hurt most.
    fn huge() -> Alert {
        let mut alert = ordinary();
        alert.title = format!("{}\n{}", "Tïtle <&> ".repeat(200), "second line");
        alert.text = "text with <markup> & `ticks` ✓ ".repeat(5_000);
        alert.error = Some("error & <b>bold</b> ``` é ".repeat(40_000));
        alert.output_tail = Some(format!("{}THE END", "line of output ``` <x> & ✓\n".repeat(40_000)));
        alert.details = (0..30)
            .map(|i| {
                (
                    format!("Label {i} {}", "l".repeat(300)),
                    format!("value {i} {}", "<v>&".repeat(1_000)),
                )
            })
            .collect();
        alert.suppressed = Some(12);
        alert.window_start = Some(1_714_564_800_000);
        alert.window_end = Some(1_714_565_700_000);
        alert
    }

    fn chars(value: &Value) -> usize {
        value.as_str().expect("a string").chars().count()
    }

    /// Asserts every Slack limit of a payload.
    fn assert_slack_limits(payload: &Value) {
        let text = payload["text"].as_str().expect("text");
        assert!(!text.is_empty() && text.chars().count() <= SLACK_TEXT_MAX);
        let blocks = payload["blocks"].as_array().expect("blocks");
        assert!(!blocks.is_empty() && blocks.len() <= 50);
        for block in blocks {
            match block["type"].as_str() {
                Some("header") => {
                    assert_eq!(block["text"]["type"], "plain_text");
                    assert!(chars(&block["text"]["text"]) <= SLACK_HEADER_MAX, "{block}");
                }
                Some("section") => {
                    if let Some(text) = block.get("text") {
                        assert_eq!(text["type"], "mrkdwn");
                        assert!(chars(&text["text"]) <= SLACK_SECTION_MAX);
                        assert!(chars(&text["text"]) > 0);
                    }
                    if let Some(fields) = block.get("fields") {
                        let fields = fields.as_array().expect("fields");
                        assert!(!fields.is_empty() && fields.len() <= SLACK_FIELDS_MAX);
                        for field in fields {
                            assert!(chars(&field["text"]) <= SLACK_FIELD_MAX);
                        }
                    }
                    assert!(block.get("text").is_some() || block.get("fields").is_some());
                }
                Some("context") => {
                    let elements = block["elements"].as_array().expect("elements");
                    assert!(!elements.is_empty() && elements.len() <= 10);
                }
                other => panic!("unexpected block type {other:?}"),
            }
        }
    }

    /// Asserts every Discord limit of a payload.
    fn assert_discord_limits(payload: &Value) {
        assert_eq!(payload["username"], PRODUCT);
        let embeds = payload["embeds"].as_array().expect("embeds");
        assert_eq!(embeds.len(), 1);
        let embed = &embeds[0];
        assert!(chars(&embed["title"]) <= DISCORD_TITLE_MAX);
        if let Some(description) = embed.get("description") {
            assert!(chars(description) <= DISCORD_DESCRIPTION_MAX);
        }
        let fields = embed["fields"].as_array().expect("fields");
        assert!(fields.len() <= DISCORD_FIELDS_MAX);
        for field in fields {
            let (name, value) = (chars(&field["name"]), chars(&field["value"]));
            assert!(name > 0 && name <= DISCORD_FIELD_NAME_MAX, "{field}");
            assert!(value > 0 && value <= DISCORD_FIELD_VALUE_MAX, "{field}");
        }
        assert!(discord_embed_chars(embed) <= DISCORD_EMBED_TOTAL_MAX);
        assert!(embed["color"].is_u64());
    }

    #[test]
    fn truncation_cuts_on_char_boundaries_and_marks_the_cut() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(truncate("", 3), "");
        assert_eq!(truncate_start("héllo wörld", 6), "…wörld");
        assert_eq!(truncate_start("wörld", 5), "wörld");
        assert_eq!(truncate_start("🦀🦀🦀🦀", 2), "…🦀");
        for max in 0..12 {
            for text in ["", "a", "日本語のテキスト", "mixed ascii and 日本 ✓✓"] {
                assert!(truncate(text, max).chars().count() <= max);
                assert!(truncate_start(text, max).chars().count() <= max);
            }
        }
    }

    #[test]
    fn fitting_never_cuts_an_escape() {
        assert_eq!(fit("a&b", 10, Keep::Start, slack_escape), "a&amp;b");
        // "&amp;" does not fit in 5 with the mark: the whole entity goes.
        assert_eq!(fit("&&&", 5, Keep::Start, slack_escape), "…");
        assert_eq!(fit("&&&", 6, Keep::Start, slack_escape), "&amp;…");
        assert_eq!(fit("x<y>z", 6, Keep::End, slack_escape), "…&gt;z");
        assert_eq!(fit("ab", 0, Keep::Start, plain), "");
        for max in 1..40 {
            let fitted = fit("<é&ü> ``` ✓", max, Keep::Start, slack_code_escape);
            assert!(fitted.chars().count() <= max, "{max}: {fitted}");
            let fitted = fit("<é&ü> ``` ✓", max, Keep::End, html_escape);
            assert!(fitted.chars().count() <= max, "{max}: {fitted}");
        }
    }

    #[test]
    fn slack_payload_shows_every_fact_and_escapes_mrkdwn() {
        let mut alert = ordinary();
        alert.text = "a <b> & c".into();
        let payload = slack_payload(&alert, None);
        assert_slack_limits(&payload);
        assert!(payload.get("channel").is_none());
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["text"], "run_dead: backup.nightly attempt 3/3 failed");
        assert_eq!(blocks[1]["text"]["text"], "a &lt;b&gt; &amp; c");
        let fields: Vec<&str> = blocks[2]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*Job*\nbackup.nightly",
                "*Run*\n01HRUN",
                "*Attempt*\n3/3",
                "*Agent*\nagent-1",
                "*Priority*\nhigh",
                "*Rule*\ndead-runs",
                "*Event*\nrun_dead",
                "*Duration*\n12m 3s",
            ]
        );
        assert_eq!(blocks[3]["text"]["text"], "*Error*\n```\nexit status 2\n```");
        assert_eq!(
            blocks[4]["text"]["text"],
            "*Output (last lines)*\n```\ncopying...\nerror: disk full\n```"
        );
        let context = blocks[5]["elements"][0]["text"].as_str().unwrap();
        assert_eq!(context, "<https://worker.example.com/runs/01HRUN|Open in Worker>");
        assert!(
            payload["text"]
                .as_str()
                .unwrap()
                .starts_with("run_dead: backup.nightly")
        );

        let bot = slack_payload(&alert, Some("C0123"));
        assert_eq!(bot["channel"], "C0123");
        assert_eq!(bot["blocks"], payload["blocks"]);
    }

    #[test]
    fn a_huge_alert_stays_within_the_slack_limits() {
        let alert = huge();
        let payload = slack_payload(&alert, Some("#ops"));
        assert_slack_limits(&payload);
        let blocks = payload["blocks"].as_array().unwrap();
        let output = blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .find(|t| t.starts_with("*Output"))
            .expect("output section");
        let content = output
            .strip_prefix("*Output (last lines)*\n```\n")
            .and_then(|o| o.strip_suffix("\n```"))
            .expect("a closed code block");
        assert!(content.chars().count() <= SLACK_OUTPUT_MAX);
        assert!(
            content.starts_with(CUT) && content.ends_with("THE END"),
            "the tail is kept"
        );
        assert!(!content.contains("```"), "the content cannot close its block");
        let fields = blocks.iter().find_map(|b| b["fields"].as_array()).unwrap();
        assert_eq!(fields.len(), SLACK_FIELDS_MAX);
        assert!(fields[9]["text"].as_str().unwrap().starts_with("*More*\n"));
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.ends_with(CUT) && !header.contains('\n'));
    }

    #[test]
    fn discord_payload_has_one_embed_with_the_facts() {
        let payload = discord_payload(&ordinary());
        assert_discord_limits(&payload);
        let embed = &payload["embeds"][0];
        assert_eq!(embed["title"], "run_dead: backup.nightly attempt 3/3 failed");
        assert_eq!(embed["color"], Tone::Failure.rgb());
        assert_eq!(embed["url"], "https://worker.example.com/runs/01HRUN");
        assert_eq!(embed["timestamp"], "2024-05-01T12:00:00.123Z");
        assert_eq!(embed["footer"]["text"], PRODUCT);
        let fields = embed["fields"].as_array().unwrap();
        assert_eq!(fields[0]["name"], "Job");
        assert_eq!(fields[0]["value"], "backup.nightly");
        let error = fields.iter().find(|f| f["name"] == "Error").unwrap();
        assert_eq!(error["value"], "```\nexit status 2\n```");
        let output = fields.iter().find(|f| f["name"] == "Output (last lines)").unwrap();
        assert!(output["value"].as_str().unwrap().contains("error: disk full"));
    }

    #[test]
    fn a_huge_alert_stays_within_the_discord_limits_shortening_the_output_first() {
        let payload = discord_payload(&huge());
        assert_discord_limits(&payload);

        // A description and an error that fit leave only the output shortened.
        let mut alert = ordinary();
        alert.text = "d".repeat(4_000);
        alert.error = Some("e".repeat(1_000));
        alert.output_tail = Some(format!("{}END", "o".repeat(100_000)));
        let payload = discord_payload(&alert);
        assert_discord_limits(&payload);
        let embed = &payload["embeds"][0];
        assert_eq!(chars(&embed["description"]), 4_000, "description kept whole");
        let fields = embed["fields"].as_array().unwrap();
        let error = fields.iter().find(|f| f["name"] == "Error").unwrap();
        assert!(
            error["value"].as_str().unwrap().contains(&"e".repeat(1_000)),
            "error kept whole"
        );
        let output = fields.iter().find(|f| f["name"] == "Output (last lines)").unwrap()["value"]
            .as_str()
            .unwrap();
        assert!(output.contains(CUT) && output.ends_with("END\n```"), "{output}");
        assert!(
            output.chars().count() < DISCORD_FIELD_VALUE_MAX,
            "shortened for the total"
        );
        assert!(
            discord_embed_chars(embed) > DISCORD_EMBED_TOTAL_MAX - 100,
            "the room is used"
        );
    }

    #[test]
    fn tones_pick_the_colours() {
        let mut alert = ordinary();
        for (event, tone) in [
            (Event::RunFailed, Tone::Failure),
            (Event::RunTimedOut, Tone::Failure),
            (Event::RunDead, Tone::Failure),
            (Event::ScheduleFailed, Tone::Failure),
            (Event::AgentLost, Tone::Failure),
            (Event::RunSlow, Tone::Warning),
            (Event::QueueBacklog, Tone::Warning),
            (Event::ScheduleMissed, Tone::Warning),
            (Event::Recovered, Tone::Recovery),
        ] {
            alert.event = Some(event);
            assert_eq!(Tone::of(&alert), tone, "{event}");
        }
        for event in Event::ALL {
            alert.event = Some(*event);
            assert_ne!(Tone::of(&alert), Tone::Info, "{event} has a tone of its own");
        }
        alert.kind = AlertKind::Summary;
        assert_eq!(Tone::of(&alert), Tone::Warning);
        alert.kind = AlertKind::Test;
        assert_eq!(Tone::of(&alert), Tone::Info);
        assert_eq!(Tone::Recovery.css(), "#12b76a");
    }

    #[test]
    fn email_bodies_list_the_same_facts_and_escape_html() {
        let mut alert = ordinary();
        alert.title = "run_failed: <script>alert(\"x\")</script>\r\nBcc: victim@example.com".into();
        alert.error = Some("bad <b>input</b> & 'quotes'".into());
        alert.details.push(("Note".into(), "a < b".into()));
        let mail = email(&alert);
        assert!(!mail.subject.contains(['\r', '\n']), "{}", mail.subject);
        assert!(mail.subject.starts_with("[Worker] run_failed: <script>"));
        for fact in [
            "backup.nightly",
            "01HRUN",
            "3/3",
            "agent-1",
            "high",
            "dead-runs",
            "12m 3s",
            "error: disk full",
        ] {
            assert!(mail.text.contains(fact), "text lacks {fact}");
            assert!(mail.html.contains(fact), "html lacks {fact}");
        }
        assert!(mail.text.contains("bad <b>input</b> & 'quotes'"));
        assert!(mail.text.contains("https://worker.example.com/runs/01HRUN"));
        assert!(mail.html.contains("<pre style=\"background: #f2f4f7; padding: 8px; white-space: pre-wrap; word-break: break-all;\">bad &lt;b&gt;input&lt;/b&gt; &amp; &#39;quotes&#39;</pre>"));
        assert!(mail.html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(!mail.html.contains("<script>") && !mail.html.contains("<b>"));
        assert!(mail.html.contains("<td style=\"padding: 2px 0;\">a &lt; b</td>"));
        assert!(
            mail.html
                .contains("<a href=\"https://worker.example.com/runs/01HRUN\">")
        );

        let big = email(&huge());
        assert!(big.subject.chars().count() <= EMAIL_SUBJECT_MAX && !big.subject.contains('\n'));
        assert!(big.text.contains("THE END") && big.html.contains("THE END"));
        assert!(big.text.chars().count() < 200_000);
    }

    #[test]
    fn a_link_that_is_not_a_url_is_left_out() {
        let mut alert = ordinary();
        alert.link = Some("javascript:alert(1)".into());
        assert!(discord_payload(&alert)["embeds"][0].get("url").is_none());
        assert!(!email(&alert).html.contains("javascript:"));
        let blocks = slack_payload(&alert, None)["blocks"].clone();
        assert!(!blocks.to_string().contains("javascript:"));
    }

    #[test]
    fn webhook_body_has_every_field_with_nulls_and_rfc3339_times() {
        let mut test = Alert::new(AlertKind::Test, "test: channel pager works", "Hello.", 0);
        test.id = "01HTEST".into();
        let body = webhook_body(&test);
        assert_eq!(
            body,
            json!({
                "id": "01HTEST", "kind": "test", "event": null, "rule": null, "job": null,
                "priority": null, "run_id": null, "attempt": null, "max_attempts": null,
                "agent": null, "title": "test: channel pager works", "text": "Hello.",
                "error": null, "output_tail": null, "link": null, "details": {},
                "suppressed": null, "window_start": null, "window_end": null,
                "at": "1970-01-01T00:00:00.000Z",
            })
        );
        assert_eq!(event_name(&test), "test");

        let mut summary = ordinary();
        summary.kind = AlertKind::Summary;
        summary.suppressed = Some(4);
        summary.window_start = Some(1_714_564_800_000);
        summary.window_end = Some(1_714_565_700_000);
        let body = webhook_body(&summary);
        assert_eq!(body["kind"], "summary");
        assert_eq!(body["event"], "run_dead");
        assert_eq!(body["priority"], "high");
        assert_eq!(body["attempt"], 3);
        assert_eq!(body["details"], json!({ "Duration": "12m 3s" }));
        assert_eq!(body["suppressed"], 4);
        assert_eq!(body["window_start"], "2024-05-01T12:00:00.000Z");
        assert_eq!(body["window_end"], "2024-05-01T12:15:00.000Z");
        assert_eq!(event_name(&summary), "run_dead");

        let big = webhook_body(&huge());
        assert!(chars(&big["error"]) <= WEBHOOK_ERROR_MAX);
        let tail = big["output_tail"].as_str().unwrap();
        assert!(tail.chars().count() <= WEBHOOK_OUTPUT_MAX && tail.ends_with("THE END"));
    }

    /// A `schedule_failed` alert as the detector builds it: no run, an error
    /// of several lines with markup, the fire's details and the job's link.
    fn failed_fire() -> Alert {
        let mut alert = Alert::new(
            AlertKind::Alert,
            "schedule_failed: nightly.report could not fire: upstream job <nightly.extract> is disabled",
            "Schedule of job nightly.report: the fire due at 2024-05-01T12:00:00.000Z could not be created, \
             so no run was enqueued. Its fires have failed 3 times in a row; the scheduler tries it again \
             at 2024-05-01T12:00:30.000Z (in 30s). Other schedules keep firing.",
            1_714_564_800_123,
        );
        alert.id = "01HFAILEDFIRE000000000000".into();
        alert.event = Some(Event::ScheduleFailed);
        alert.rule = Some("fires".into());
        alert.job = Some("nightly.report".into());
        alert.priority = Some(Priority::Normal);
        alert.error =
            Some("upstream job <nightly.extract> is disabled\nchain: nightly.extract -> nightly.report & co".into());
        alert.link = Some("https://worker.example.com/jobs/nightly.report".into());
        alert.details = vec![
            ("Fire time".into(), "2024-05-01T12:00:00.000Z".into()),
            ("Failures".into(), "3".into()),
            ("Next try".into(), "2024-05-01T12:00:30.000Z".into()),
        ];
        alert
    }

    #[test]
    fn a_failed_fire_renders_its_error_and_details_on_every_channel() {
        let alert = failed_fire();
        assert_eq!(Tone::of(&alert), Tone::Failure);
        assert_eq!(event_name(&alert), "schedule_failed");

        let slack = slack_payload(&alert, None);
        assert_slack_limits(&slack);
        let blocks = slack["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[0]["text"]["text"],
            "schedule_failed: nightly.report could not fire: upstream job <nightly.extract> is disabled"
        );
        let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"]["text"].as_str()).collect();
        assert!(
            texts.contains(
                &"*Error*\n```\nupstream job &lt;nightly.extract&gt; is disabled\nchain: nightly.extract -&gt; nightly.report &amp; co\n```"
            ),
            "{texts:#?}"
        );
        assert!(!texts.iter().any(|t| t.starts_with("*Output")), "no output tail");
        let fields: Vec<&str> = blocks
            .iter()
            .find_map(|b| b["fields"].as_array())
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*Job*\nnightly.report",
                "*Priority*\nnormal",
                "*Rule*\nfires",
                "*Event*\nschedule_failed",
                "*Fire time*\n2024-05-01T12:00:00.000Z",
                "*Failures*\n3",
                "*Next try*\n2024-05-01T12:00:30.000Z",
            ]
        );
        assert!(
            slack
                .to_string()
                .contains("https://worker.example.com/jobs/nightly.report|Open in Worker")
        );

        let discord = discord_payload(&alert);
        assert_discord_limits(&discord);
        let embed = &discord["embeds"][0];
        assert_eq!(embed["color"], Tone::Failure.rgb());
        assert_eq!(embed["url"], "https://worker.example.com/jobs/nightly.report");
        let fields = embed["fields"].as_array().unwrap();
        let error = fields.iter().find(|f| f["name"] == "Error").unwrap();
        assert_eq!(
            error["value"],
            "```\nupstream job <nightly.extract> is disabled\nchain: nightly.extract -> nightly.report & co\n```"
        );
        let failures = fields.iter().find(|f| f["name"] == "Failures").unwrap();
        assert_eq!(failures["value"], "3");
        assert!(fields.iter().any(|f| f["name"] == "Next try"));

        let mail = email(&alert);
        assert_eq!(
            mail.subject,
            "[Worker] schedule_failed: nightly.report could not fire: upstream job <nightly.extract> is disabled"
        );
        assert!(
            mail.text
                .contains("Error:\n    upstream job <nightly.extract> is disabled\n    chain:")
        );
        assert!(mail.text.contains("Failures:") && mail.text.contains("Next try:"));
        assert!(mail.html.contains("upstream job &lt;nightly.extract&gt; is disabled\nchain: nightly.extract -&gt; nightly.report &amp; co</pre>"));
        assert!(
            mail.html
                .contains(&format!("border-left: 6px solid {}", Tone::Failure.css()))
        );

        let body = webhook_body(&alert);
        assert_eq!(body["event"], "schedule_failed");
        assert_eq!(body["job"], "nightly.report");
        assert_eq!(
            body["error"],
            "upstream job <nightly.extract> is disabled\nchain: nightly.extract -> nightly.report & co"
        );
        assert_eq!(
            body["details"],
            json!({
                "Fire time": "2024-05-01T12:00:00.000Z",
                "Failures": "3",
                "Next try": "2024-05-01T12:00:30.000Z",
            })
        );
        assert!(body["run_id"].is_null() && body["output_tail"].is_null());
    }

    #[test]
    fn summaries_show_their_count_and_window() {
        let mut alert = ordinary();
        alert.kind = AlertKind::Summary;
        alert.suppressed = Some(1);
        alert.window_start = Some(1_714_564_800_000);
        alert.window_end = Some(1_714_565_700_000);
        let facts = facts(&alert);
        assert!(facts.contains(&("Suppressed".into(), "1 alert".into())));
        assert!(facts.contains(&(
            "Window".into(),
            "2024-05-01 12:00:00 UTC – 2024-05-01 12:15:00 UTC".into()
        )));
    }
}
