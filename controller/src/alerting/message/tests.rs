//! What the renderers' tests share (an ordinary alert, a huge one, and the
//! checks of every Slack and Discord limit), and the tests of the shared
//! parts: cutting and fitting text, tones, facts, and what every channel
//! renders alike.

use serde_json::{Value, json};

use super::email::html_escape;
use super::slack::{slack_code_escape, slack_escape};
use super::*;
use crate::model::Priority;

/// An alert with every field set to ordinary values.
pub(super) fn ordinary() -> Alert {
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
pub(super) fn huge() -> Alert {
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

/// The characters of a JSON string.
pub(super) fn chars(value: &Value) -> usize {
    value.as_str().expect("a string").chars().count()
}

/// Asserts every Slack limit of a payload.
pub(super) fn assert_slack_limits(payload: &Value) {
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
pub(super) fn assert_discord_limits(payload: &Value) {
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
        (Event::LeaderChanged, Tone::Warning),
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
fn a_link_that_is_not_a_url_is_left_out() {
    let mut alert = ordinary();
    alert.link = Some("javascript:alert(1)".into());
    assert!(discord_payload(&alert)["embeds"][0].get("url").is_none());
    assert!(!email(&alert).html.contains("javascript:"));
    let blocks = slack_payload(&alert, None)["blocks"].clone();
    assert!(!blocks.to_string().contains("javascript:"));
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
    assert!(mail.html.contains(
        "upstream job &lt;nightly.extract&gt; is disabled\nchain: nightly.extract -&gt; nightly.report &amp; co</pre>"
    ));
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

/// A `leader_changed` alert as the detector builds it: no job, the leaders
/// in the details and in `leader`.
fn leader_changed() -> Alert {
    use crate::alerting::facts::{LeaderChange, PreviousLeader};
    let mut alert = Alert::new(
        AlertKind::Alert,
        "leader_changed: c2 leads now (epoch 3); c1 led before",
        "Controller c2 (http://10.0.0.2:7070) took the leadership lease at 2024-05-01T12:00:00.000Z and leads \
         in epoch 3. c1 (http://10.0.0.1:7070) led before, in epoch 2 since 2024-05-01T11:00:00.000Z.",
        1_714_564_800_123,
    );
    alert.id = "01HLEADER0000000000000000".into();
    alert.event = Some(Event::LeaderChanged);
    alert.rule = Some("leader".into());
    alert.details = vec![
        ("Leader".into(), "c2".into()),
        ("Leader address".into(), "http://10.0.0.2:7070".into()),
        ("Epoch".into(), "3".into()),
        ("Leading since".into(), "2024-05-01T12:00:00.000Z".into()),
        ("Previous leader".into(), "c1".into()),
        ("Previous address".into(), "http://10.0.0.1:7070".into()),
    ];
    alert.leader = Some(LeaderChange {
        id: "c2".into(),
        address: "http://10.0.0.2:7070".into(),
        epoch: 3,
        since: 1_714_564_800_000,
        previous: Some(PreviousLeader {
            id: "c1".into(),
            address: "http://10.0.0.1:7070".into(),
            epoch: 2,
            since: 1_714_561_200_000,
        }),
    });
    alert
}

#[test]
fn a_change_of_leader_renders_both_leaders_on_every_channel() {
    let alert = leader_changed();
    assert_eq!(Tone::of(&alert), Tone::Warning);
    assert_eq!(event_name(&alert), "leader_changed");

    let slack = slack_payload(&alert, None);
    assert_slack_limits(&slack);
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0]["text"]["text"],
        "leader_changed: c2 leads now (epoch 3); c1 led before"
    );
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
            "*Rule*\nleader",
            "*Event*\nleader_changed",
            "*Leader*\nc2",
            "*Leader address*\nhttp://10.0.0.2:7070",
            "*Epoch*\n3",
            "*Leading since*\n2024-05-01T12:00:00.000Z",
            "*Previous leader*\nc1",
            "*Previous address*\nhttp://10.0.0.1:7070",
        ]
    );
    assert!(!slack.to_string().contains("Open in Worker"), "no link");

    let discord = discord_payload(&alert);
    assert_discord_limits(&discord);
    let embed = &discord["embeds"][0];
    assert_eq!(embed["title"], "leader_changed: c2 leads now (epoch 3); c1 led before");
    assert_eq!(embed["color"], Tone::Warning.rgb());
    let fields = embed["fields"].as_array().unwrap();
    let value = |name: &str| fields.iter().find(|f| f["name"] == name).map(|f| f["value"].clone());
    assert_eq!(value("Previous leader"), Some(json!("c1")));
    assert_eq!(value("Epoch"), Some(json!("3")));
    assert!(embed.get("url").is_none());

    let mail = email(&alert);
    assert_eq!(
        mail.subject,
        "[Worker] leader_changed: c2 leads now (epoch 3); c1 led before"
    );
    assert!(
        mail.text.contains("Previous leader:") && mail.text.contains("c1"),
        "{}",
        mail.text
    );
    assert!(mail.html.contains("http://10.0.0.1:7070"), "{}", mail.html);

    let body = webhook_body(&alert);
    assert_eq!(body["event"], "leader_changed");
    assert!(body["job"].is_null() && body["priority"].is_null() && body["run_id"].is_null());
    assert_eq!(
        body["leader"],
        json!({
            "id": "c2",
            "address": "http://10.0.0.2:7070",
            "epoch": 3,
            "since": "2024-05-01T12:00:00.000Z",
            "previous": {
                "id": "c1",
                "address": "http://10.0.0.1:7070",
                "epoch": 2,
                "since": "2024-05-01T11:00:00.000Z",
            },
        })
    );
    assert_eq!(body["details"]["Previous leader"], "c1");
    assert_eq!(
        webhook_body(&ordinary())["leader"],
        Value::Null,
        "null for other events"
    );
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
