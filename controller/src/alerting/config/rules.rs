//! The rules of `alerts.yaml` (`rules[N]`): their serde shape and their
//! validation into a [`Rule`] (the event, which jobs and priorities it routes,
//! its channels, its throttle, and the parameters its event takes). What a
//! rule means once valid is in [`crate::alerting::rules`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::check_name;
use crate::alerting::rules::{Event, EventParams, Glob, MetricWindow, Rule};
use crate::config::jobs::Checker;
use crate::model::Priority;

/// One item of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    event: String,
    jobs: Option<String>,
    min_priority: Option<String>,
    channels: Vec<String>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    throttle: Option<String>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    threshold: Option<String>,
    count: Option<u32>,
    max_depth: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    max_wait: Option<String>,
    priority: Option<String>,
    span: Option<String>,
    metric: Option<String>,
    above: Option<f64>,
    per: Option<String>,
    enabled: Option<bool>,
}

/// Checks `rules[index]`; `names` collects the rule names seen so far (index by name).
pub(super) fn check_rule(
    c: &mut Checker<'_>,
    index: usize,
    value: Value,
    channels: &BTreeSet<String>,
    names: &mut BTreeMap<String, usize>,
) -> Option<Rule> {
    let item = format!("[{index}]");
    let item = item.as_str();
    let base = ["rules", item];
    let Value::Mapping(spec) = value else {
        c.error(
            &base,
            "expected a mapping with the rule's `name`, `event` and `channels`",
        );
        return None;
    };
    let errors_before = c.errors.len();
    // Rules hold no secrets: nothing in them interpolates `${VARS}`.
    let raw: RawRule = c.deserialize(&base, Value::Mapping(spec.clone()))?;
    if c.errors.len() > errors_before {
        return None; // an unset variable: its value would only cause more errors
    }
    let at = |field: &'static str| -> [&str; 3] { ["rules", item, field] };

    if let Err(e) = check_name("rule", &raw.name) {
        c.error(&at("name"), e);
    } else if let Some(first) = names.get(&raw.name) {
        c.error(
            &at("name"),
            format!("rule name \"{}\" is already used by rules[{first}]", raw.name),
        );
    } else {
        names.insert(raw.name.clone(), index);
    }
    let event = c.parse(&at("event"), Some(&raw.event), |s| s.parse::<Event>());
    let jobs = c.parse(&at("jobs"), raw.jobs.as_deref(), Glob::new).unwrap_or_default();
    let min_priority = c
        .parse(&at("min_priority"), raw.min_priority.as_deref(), |s| {
            s.parse::<Priority>()
        })
        .unwrap_or(Priority::Low);
    let throttle = c
        .parse(&at("throttle"), raw.throttle.as_deref(), worker_duration::parse)
        .unwrap_or(Duration::ZERO);
    let threshold = c.parse(&at("threshold"), raw.threshold.as_deref(), positive_duration);
    let max_wait = c.parse(&at("max_wait"), raw.max_wait.as_deref(), positive_duration);
    let queue = c.parse(&at("priority"), raw.priority.as_deref(), |s| s.parse::<Priority>());

    if raw.channels.is_empty() {
        c.error(&at("channels"), "needs at least one channel");
    }
    let mut seen = BTreeSet::new();
    for (index, channel) in raw.channels.iter().enumerate() {
        let index = format!("[{index}]");
        let path = ["rules", item, "channels", &index];
        if !channels.contains(channel) {
            let known = if channels.is_empty() {
                "no channels are defined".to_string()
            } else {
                format!("defined: {}", channels.iter().cloned().collect::<Vec<_>>().join(", "))
            };
            c.error(&path, format!("unknown channel \"{channel}\" ({known})"));
        } else if !seen.insert(channel) {
            c.error(&path, format!("\"{channel}\" is listed twice"));
        }
    }
    if raw.count == Some(0) || raw.count == Some(1) {
        c.error(
            &at("count"),
            "must be at least 2 (use `event: run_failed` to alert on every failure)",
        );
    }
    if raw.max_depth == Some(0) {
        c.error(&at("max_depth"), "must be at least 1");
    }

    // Parameters belong to one event; the event decides which are required.
    let event = event?;
    let set = [
        ("threshold", raw.threshold.is_some(), Event::RunSlow),
        ("count", raw.count.is_some(), Event::ConsecutiveFailures),
        ("max_depth", raw.max_depth.is_some(), Event::QueueBacklog),
        ("max_wait", raw.max_wait.is_some(), Event::QueueBacklog),
        ("priority", raw.priority.is_some(), Event::QueueBacklog),
        ("span", raw.span.is_some(), Event::RunSlow),
        ("metric", raw.metric.is_some(), Event::MetricHigh),
        ("above", raw.above.is_some(), Event::MetricHigh),
        ("per", raw.per.is_some(), Event::MetricHigh),
    ];
    for (field, present, owner) in set {
        if present && event != owner {
            c.error(
                &["rules", item, field],
                format!("`{field}` only applies to `{owner}` rules, not `{event}`"),
            );
        }
    }
    if !event.is_about_a_job() && !jobs.matches_all() {
        c.error(&at("jobs"), format!("`{event}` is not about a job: leave `jobs` out"));
    }
    if !event.has_priority() && min_priority != Priority::Low {
        c.error(
            &at("min_priority"),
            format!("`{event}` has no priority: leave `min_priority` out"),
        );
    }
    let params = match event {
        Event::RunSlow => match threshold {
            Some(threshold) => {
                if let Some(span) = raw.span.as_deref().filter(|s| !measure_name(s)) {
                    c.error(
                        &at("span"),
                        format!("\"{span}\" is not a span name (1 to 64 letters, digits, `_ . : -`)"),
                    );
                }
                EventParams::RunSlow {
                    threshold,
                    span: raw.span.clone(),
                }
            }
            None => {
                if raw.threshold.is_none() {
                    c.error(&base, "`run_slow` needs a `threshold` (how long is too long, e.g. 10m)");
                }
                EventParams::None
            }
        },
        Event::MetricHigh => {
            let metric = raw.metric.clone().unwrap_or_default();
            if raw.metric.is_none() {
                c.error(
                    &base,
                    "`metric_high` needs a `metric` (the reported name, e.g. api_cost_usd)",
                );
            } else if !measure_name(&metric) {
                c.error(
                    &at("metric"),
                    format!("\"{metric}\" is not a metric name (1 to 64 letters, digits, `_ . : -`)"),
                );
            }
            let above = match raw.above {
                Some(above) if above.is_finite() => above,
                Some(_) => {
                    c.error(&at("above"), "must be a finite number");
                    0.0
                }
                None => {
                    c.error(&base, "`metric_high` needs `above` (the limit, a number)");
                    0.0
                }
            };
            let per = match raw.per.as_deref() {
                None | Some("day") => MetricWindow::Day,
                Some("attempt") => MetricWindow::Attempt,
                Some(other) => {
                    c.error(
                        &at("per"),
                        format!("\"{other}\" is not a window (expected attempt or day)"),
                    );
                    MetricWindow::Day
                }
            };
            EventParams::MetricHigh { metric, above, per }
        }
        Event::ConsecutiveFailures => match raw.count {
            Some(count) => EventParams::ConsecutiveFailures { count },
            None => {
                c.error(
                    &base,
                    "`consecutive_failures` needs a `count` (failures in a row, at least 2)",
                );
                EventParams::None
            }
        },
        Event::QueueBacklog => {
            if raw.max_depth.is_none() && raw.max_wait.is_none() {
                c.error(
                    &base,
                    "`queue_backlog` needs `max_depth` (queued runs) and/or `max_wait` (oldest wait, e.g. 5m)",
                );
            }
            EventParams::QueueBacklog {
                max_depth: raw.max_depth,
                max_wait,
                priority: queue,
            }
        }
        _ => EventParams::None,
    };

    if c.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name: raw.name,
        event,
        jobs,
        min_priority,
        channels: raw.channels,
        throttle,
        params,
        enabled: raw.enabled.unwrap_or(true),
        spec,
    })
}

/// Whether `name` can be a reported metric or span name.
fn measure_name(name: &str) -> bool {
    crate::engine::measures::valid_name(name)
}

/// A duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = worker_duration::parse(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}
