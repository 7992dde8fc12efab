//! What a job reports about itself while it runs: named values (metrics) and
//! time per named operation (spans), gathered per attempt and sent with its
//! `Finished` (`docs/executors.md#metrics-and-spans`).
//!
//! Every executor feeds the same [`Measures`]: the SDK through
//! [`crate::HandlerContext::metric`] / [`crate::HandlerContext::span`], shell
//! jobs through marker lines on stdout, the `http` executor with its own
//! connect / first-byte / total spans. The limits here are the controller's (it drops what breaks them
//! too), so an agent never sends what would be thrown away.

use std::time::Duration;

use worker_proto::v1::{Metric, Span};

/// Most distinct metric names one attempt reports; further names are dropped.
pub const MAX_METRICS: usize = 64;
/// Most distinct span names one attempt reports; further names are dropped.
pub const MAX_SPANS: usize = 64;
/// Longest metric or span name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `name` is a valid metric or span name: 1 to [`MAX_NAME_BYTES`]
/// bytes of ASCII letters, digits, `_`, `.`, `:` and `-`, starting with a
/// letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The metrics and spans of one attempt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measures {
    metrics: Vec<Metric>,
    spans: Vec<Span>,
    /// Reports refused (bad name, non-finite value, over a limit).
    dropped: u64,
}

impl Measures {
    /// Adds `value` to the metric `name` (values of one name add up).
    /// Returns whether it was kept.
    pub fn metric(&mut self, name: &str, value: f64) -> bool {
        if !valid_name(name) || !value.is_finite() {
            self.dropped += 1;
            return false;
        }
        if let Some(m) = self.metrics.iter_mut().find(|m| m.name == name) {
            m.value += value;
            return true;
        }
        if self.metrics.len() >= MAX_METRICS {
            self.dropped += 1;
            return false;
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            value,
        });
        true
    }

    /// Records one pass of `took` through the operation `name`. Returns
    /// whether it was kept.
    pub fn span(&mut self, name: &str, took: Duration) -> bool {
        if !valid_name(name) {
            self.dropped += 1;
            return false;
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(s) = self.spans.iter_mut().find(|s| s.name == name) {
            s.count += 1;
            s.total_us = s.total_us.saturating_add(us);
            s.max_us = s.max_us.max(us);
            return true;
        }
        if self.spans.len() >= MAX_SPANS {
            self.dropped += 1;
            return false;
        }
        self.spans.push(Span {
            name: name.to_string(),
            count: 1,
            total_us: us,
            max_us: us,
        });
        true
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: Measures) {
        for m in other.metrics {
            self.metric(&m.name, m.value);
        }
        for s in other.spans {
            if !valid_name(&s.name) {
                self.dropped += 1;
                continue;
            }
            let full = self.spans.len() >= MAX_SPANS;
            match self.spans.iter_mut().find(|x| x.name == s.name) {
                Some(x) => {
                    x.count += s.count;
                    x.total_us = x.total_us.saturating_add(s.total_us);
                    x.max_us = x.max_us.max(s.max_us);
                }
                None if !full => self.spans.push(s),
                None => self.dropped += 1,
            }
        }
        self.dropped += other.dropped;
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.spans.is_empty()
    }

    /// Reports refused so far (bad name, non-finite value, over a limit).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The metrics, in the order first reported.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The spans, in the order first reported.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The protocol form: metrics in reporting order, spans slowest first.
    pub fn into_proto(self) -> (Vec<Metric>, Vec<Span>) {
        let mut spans = self.spans;
        spans.sort_by(|a, b| b.total_us.cmp(&a.total_us).then_with(|| a.name.cmp(&b.name)));
        (self.metrics, spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_add_up_and_spans_aggregate_by_name() {
        let mut m = Measures::default();
        assert!(m.metric("api_cost_usd", 0.25));
        assert!(m.metric("api_cost_usd", 0.5));
        assert!(m.metric("items", 3.0));
        assert!(m.span("fetch", Duration::from_millis(10)));
        assert!(m.span("fetch", Duration::from_millis(30)));
        assert!(m.span("db.write", Duration::from_millis(50)));
        let (metrics, spans) = m.into_proto();
        assert_eq!(metrics[0].name, "api_cost_usd");
        assert!((metrics[0].value - 0.75).abs() < 1e-9);
        assert_eq!(metrics[1].name, "items");
        assert_eq!(spans[0].name, "db.write");
        assert_eq!(
            (
                spans[1].name.as_str(),
                spans[1].count,
                spans[1].total_us,
                spans[1].max_us
            ),
            ("fetch", 2, 40_000, 30_000)
        );
    }

    #[test]
    fn bad_names_values_and_overflow_are_dropped_and_counted() {
        let mut m = Measures::default();
        assert!(!m.metric("", 1.0));
        assert!(!m.metric("has space", 1.0));
        assert!(!m.metric("_lead", 1.0));
        assert!(!m.metric(&"x".repeat(MAX_NAME_BYTES + 1), 1.0));
        assert!(!m.metric("nan", f64::NAN));
        assert!(!m.metric("inf", f64::INFINITY));
        for i in 0..MAX_METRICS {
            assert!(m.metric(&format!("m{i}"), 1.0));
        }
        assert!(!m.metric("one.more", 1.0));
        assert!(m.metric("m0", 1.0), "an existing name still adds up at the limit");
        assert_eq!(m.dropped(), 7);
        assert!(valid_name("a:b.c-d_e9"));
    }
}
