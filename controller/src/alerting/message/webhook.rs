//! The generic webhook: the JSON body of an alert (a stable contract, its
//! fields listed on [`webhook_body`]) and the event name sent in a header.

use serde_json::{Map, Value, json};

use super::{rfc3339, truncate, truncate_start};
use crate::alerting::alert::Alert;
use crate::alerting::facts::LeaderChange;

/// Generic webhook: longest `error`.
pub const WEBHOOK_ERROR_MAX: usize = 16_384;
/// Generic webhook: longest `output_tail` (kept from its end).
pub const WEBHOOK_OUTPUT_MAX: usize = 65_536;

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
/// | `event` | string or null | `run_failed`, `run_dead`, `run_timed_out`, `run_slow`, `consecutive_failures`, `schedule_missed`, `schedule_failed`, `agent_lost`, `queue_backlog`, `recovered`, `metric_high`, `leader_changed` |
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
/// | `leader` | object or null | for `leader_changed`: `{"id", "address", "epoch", "since", "previous"}`, the new leader's `--ha-id`, advertised URL, epoch and when it took the lease (RFC 3339 UTC); `previous` is the same object without itself for the term before (`id`, `address`, `epoch`, `since`), or null when it is not on record |
/// | `at` | string | when it happened (RFC 3339 UTC, milliseconds) |
///
/// Cut texts are marked with [`CUT`](super::CUT). New fields may be added;
/// existing ones keep their name and meaning.
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
        "leader": alert.leader.as_ref().map(leader_json),
        "at": rfc3339(alert.at),
    })
}

/// The `leader` object of a `leader_changed` alert.
fn leader_json(change: &LeaderChange) -> Value {
    let previous = change.previous.as_ref().map(|p| {
        json!({
            "id": p.id,
            "address": p.address,
            "epoch": p.epoch,
            "since": rfc3339(p.since),
        })
    });
    json!({
        "id": change.id,
        "address": change.address,
        "epoch": change.epoch,
        "since": rfc3339(change.since),
        "previous": previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::AlertKind;
    use crate::alerting::message::tests::{chars, huge, ordinary};

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
                "leader": null, "at": "1970-01-01T00:00:00.000Z",
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
}
