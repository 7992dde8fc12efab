//! Discord: the webhook message of an alert, one embed whose fields and
//! total size stay within Discord's limits, with Discord's markdown escaping.

use serde_json::{Map, Value, json};

use super::{Keep, PRODUCT, Tone, code_block, facts, fit, fold_facts, one_line, plain, rfc3339, title_of, usable_link};
use crate::alerting::alert::Alert;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::message::CUT;
    use crate::alerting::message::tests::{assert_discord_limits, chars, huge, ordinary};

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
}
