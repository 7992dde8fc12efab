//! What an attempt reported about itself (metrics and spans in `Finished`),
//! checked before it is stored: the agent enforces the same limits, so
//! anything dropped here came from a client that ignored them. A result is
//! never refused for its measures (the run's outcome matters more); what
//! breaks a rule is dropped, and the drop logged once per result.
//!
//! Rules (`docs/executors.md#metrics-and-spans`): names of 1 to
//! [`MAX_NAME_BYTES`] bytes of ASCII letters, digits, `_ . : -` starting with
//! a letter or digit; finite metric values; at most [`MAX_METRICS`] metrics and
//! [`MAX_SPANS`] spans; a name reported twice is merged (metrics add up, span
//! counts and totals add up).

use worker_proto::v1 as pb;

use crate::store::{MetricRecord, SpanRecord};

/// The agent's limits and name rule, which the controller applies again.
pub use worker_agent::measure::{MAX_METRICS, MAX_NAME_BYTES, MAX_SPANS, valid_name};

/// Longest span total accepted (a year, in µs); longer is clamped.
const MAX_SPAN_US: u64 = 365 * 86_400 * 1_000_000;

/// The metrics of run `run_id`'s result that may be stored.
pub fn metrics(run_id: &str, reported: &[pb::Metric]) -> Vec<MetricRecord> {
    let mut kept: Vec<MetricRecord> = Vec::new();
    let mut dropped = 0;
    for m in reported {
        if !valid_name(&m.name) || !m.value.is_finite() {
            dropped += 1;
        } else if let Some(k) = kept.iter_mut().find(|k| k.name == m.name) {
            k.value += m.value;
        } else if kept.len() < MAX_METRICS {
            kept.push(MetricRecord {
                name: m.name.clone(),
                value: m.value,
            });
        } else {
            dropped += 1;
        }
    }
    kept.retain(|m| m.value.is_finite());
    if dropped > 0 {
        tracing::warn!(run = %run_id, dropped, "reported metrics dropped (bad name or value, or over {MAX_METRICS})");
    }
    kept
}

/// The spans of run `run_id`'s result that may be stored.
pub fn spans(run_id: &str, reported: &[pb::Span]) -> Vec<SpanRecord> {
    let mut kept: Vec<SpanRecord> = Vec::new();
    let mut dropped = 0;
    for s in reported {
        let total_us = s.total_us.min(MAX_SPAN_US);
        let max_us = s.max_us.min(total_us);
        let count = s.count.max(1);
        if !valid_name(&s.name) {
            dropped += 1;
        } else if let Some(k) = kept.iter_mut().find(|k| k.name == s.name) {
            k.count = k.count.saturating_add(count);
            k.total_us = k.total_us.saturating_add(total_us).min(MAX_SPAN_US);
            k.max_us = k.max_us.max(max_us);
        } else if kept.len() < MAX_SPANS {
            kept.push(SpanRecord {
                name: s.name.clone(),
                count,
                total_us,
                max_us,
            });
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(run = %run_id, dropped, "reported spans dropped (bad name, or over {MAX_SPANS})");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, value: f64) -> pb::Metric {
        pb::Metric {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn metrics_are_checked_merged_and_bounded() {
        let mut reported = vec![
            metric("cost", 0.25),
            metric("cost", 0.5),
            metric("bad name", 1.0),
            metric("nan", f64::NAN),
            metric("", 1.0),
        ];
        reported.extend((0..MAX_METRICS + 5).map(|i| metric(&format!("m{i}"), 1.0)));
        let kept = metrics("r", &reported);
        assert_eq!(kept.len(), MAX_METRICS);
        assert_eq!(
            kept[0],
            MetricRecord {
                name: "cost".into(),
                value: 0.75
            }
        );
        assert!(kept.iter().all(|m| valid_name(&m.name)));
        let overflow = metrics("r", &[metric("big", f64::MAX), metric("big", f64::MAX)]);
        assert!(overflow.is_empty(), "a sum that overflows to infinity is dropped");
    }

    #[test]
    fn spans_are_checked_merged_and_clamped() {
        let span = |name: &str, count, total_us, max_us| pb::Span {
            name: name.into(),
            count,
            total_us,
            max_us,
        };
        let kept = spans(
            "r",
            &[
                span("fetch", 2, 300, 200),
                span("fetch", 1, 100, 100),
                span("db.write", 0, 50, 90),
                span("x y", 1, 1, 1),
                span("huge", 1, u64::MAX, u64::MAX),
            ],
        );
        assert_eq!(kept.len(), 3);
        assert_eq!((kept[0].count, kept[0].total_us, kept[0].max_us), (3, 400, 200));
        assert_eq!(
            (kept[1].count, kept[1].max_us),
            (1, 50),
            "count at least 1, max at most total"
        );
        assert_eq!(kept[2].total_us, MAX_SPAN_US);
        assert!(valid_name("api.cost_usd:eu-1"));
        assert!(!valid_name(&"a".repeat(MAX_NAME_BYTES + 1)));
    }
}
