//! Slack: the Block Kit message of an alert, for an incoming webhook or a
//! bot's `chat.postMessage`, with Slack's limits and `mrkdwn` escaping.

use serde_json::{Value, json};

use super::{
    Keep, PRODUCT, code_block, escaped, facts, fit, fold_facts, human_time, one_line, plain, title_of, truncate,
    usable_link,
};
use crate::alerting::alert::Alert;

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

/// Slack `mrkdwn` (and the `text` field): `&`, `<`, `>` as entities.
pub(super) fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// Inside a Slack code block: the entities, and backticks followed by a
/// zero-width space so that the content cannot close the block.
pub(super) fn slack_code_escape(c: char) -> Option<&'static str> {
    match c {
        '`' => Some("`\u{200B}"),
        other => slack_escape(other),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::message::CUT;
    use crate::alerting::message::tests::{assert_slack_limits, huge, ordinary};

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
}
