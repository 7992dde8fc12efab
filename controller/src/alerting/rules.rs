//! Alert rules: which events they are about, the job glob that selects jobs, and
//! [`Rule::matches`], the routing decision. Thresholds (`threshold`, `count`,
//! `max_depth`, `max_wait`) are carried in [`EventParams`] for the component that
//! detects the event; matching only routes an event that already happened.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_yaml_ng::Mapping;

use crate::model::{Priority, named_enum};

named_enum!(
    /// What an alert is about: a rule's `event` (`docs/alerting.md` describes
    /// each).
    Event, "event" {
        /// A run's attempt failed (it may still be retried).
        RunFailed => "run_failed",
        /// A run went to the dead-letter queue.
        RunDead => "run_dead",
        /// A run's attempt hit its timeout.
        RunTimedOut => "run_timed_out",
        /// A run has been running longer than the rule's `threshold`.
        RunSlow => "run_slow",
        /// A job failed `count` times in a row.
        ConsecutiveFailures => "consecutive_failures",
        /// A scheduled fire was not run (missed while down and skipped, or refused).
        ScheduleMissed => "schedule_missed",
        /// A schedule fire could not be created (its run was not enqueued: its
        /// job chain could not be enqueued, or the store refused the write); the
        /// scheduler tries it again with backoff. Raised on each failed try.
        ScheduleFailed => "schedule_failed",
        /// An agent's lease expired. Not about one job.
        AgentLost => "agent_lost",
        /// A priority's queue is deeper than `max_depth` or its oldest run has
        /// waited longer than `max_wait`. Not about one job.
        QueueBacklog => "queue_backlog",
        /// The first success of a job after a failure that alerted.
        Recovered => "recovered",
        /// A value a job reports (`metric`) went above the rule's `above`,
        /// in one attempt or summed over a UTC day (`per`).
        MetricHigh => "metric_high",
        /// Another controller took the leadership lease (high availability
        /// on PostgreSQL): raised once by the new leader as its term begins,
        /// when an earlier term existed. Not about one job.
        LeaderChanged => "leader_changed",
    }
);

impl Event {
    /// Whether events of this kind concern one job (and so carry its name). Rules
    /// for the others (`agent_lost`, `queue_backlog`, `leader_changed`) cannot
    /// select jobs.
    pub fn is_about_a_job(self) -> bool {
        !matches!(self, Event::AgentLost | Event::QueueBacklog | Event::LeaderChanged)
    }

    /// Whether events of this kind carry a priority (the job's, or the queue's
    /// for `queue_backlog`); `min_priority` applies only to those.
    pub fn has_priority(self) -> bool {
        !matches!(self, Event::AgentLost | Event::LeaderChanged)
    }
}

/// A job-name pattern: `*` matches any run of characters (dots included), `?`
/// exactly one, everything else itself. Only characters that can occur in a job
/// name are allowed, so that a pattern that could never match (`Digest.*`,
/// `{a,b}`, `[ab]`) is an error instead of a silent no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
}

impl Glob {
    /// Validates `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty job pattern (use \"*\" for every job)".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            let hint = if c.is_ascii_uppercase() {
                " (job names are lower case)"
            } else if matches!(c, '[' | ']' | '{' | '}' | '\\' | '!') {
                " (patterns support only `*` and `?`)"
            } else {
                ""
            };
            return Err(format!(
                "invalid job pattern \"{pattern}\": {c:?} cannot occur in a job name{hint}"
            ));
        }
        Ok(Glob {
            pattern: pattern.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern matches every name (it is made of `*` only).
    pub fn matches_all(&self) -> bool {
        self.pattern.chars().all(|c| c == '*')
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        // Greedy matching with backtracking to the last `*`: linear in practice,
        // O(pattern × name) at worst, no recursion.
        let pattern: Vec<char> = self.pattern.chars().collect();
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None; // (pattern index after `*`, name index it matched up to)
        while n < name.len() {
            match pattern.get(p) {
                Some('*') => {
                    p += 1;
                    star = Some((p, n));
                }
                Some(&c) if c == '?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((after_star, matched)) => {
                        p = after_star;
                        n = matched + 1;
                        star = Some((after_star, matched + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

impl Default for Glob {
    /// `*`: every job.
    fn default() -> Self {
        Glob { pattern: "*".into() }
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl FromStr for Glob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Glob::new(s)
    }
}

/// The parameters of a rule's event; only the events listed take any.
#[derive(Debug, Clone, PartialEq)]
pub enum EventParams {
    /// The event takes no parameters.
    None,
    /// `run_slow`: alert when a run has been running longer than `threshold`.
    RunSlow {
        /// How long is too long (greater than zero).
        threshold: Duration,
        /// Judge the time an attempt spent in this reported span (its total)
        /// instead of the whole attempt; judged when the attempt ends.
        span: Option<String>,
    },
    /// `metric_high`: alert when a reported metric goes above `above`.
    MetricHigh {
        /// The metric's name.
        metric: String,
        /// The limit.
        above: f64,
        /// One attempt's value, or the sum over a UTC day.
        per: MetricWindow,
    },
    /// `consecutive_failures`: alert when a job failed `count` times in a row.
    ConsecutiveFailures {
        /// Failures in a row (at least 2; `run_failed` covers every failure).
        count: u32,
    },
    /// `queue_backlog`: alert when a priority's queue is too deep or waits too
    /// long. At least one of `max_depth` and `max_wait` is set.
    QueueBacklog {
        /// Queued runs of one priority above which the queue alerts.
        max_depth: Option<u64>,
        /// Wait of the oldest queued run of one priority above which it alerts.
        max_wait: Option<Duration>,
        /// Only this priority's queue (every priority when unset).
        priority: Option<Priority>,
    },
}

/// What a `metric_high` rule compares with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricWindow {
    /// The value one attempt reported.
    Attempt,
    /// The sum of the values the job's attempts reported since midnight UTC
    /// (alerts once per rule, job and day).
    Day,
}

impl MetricWindow {
    /// `attempt` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricWindow::Attempt => "attempt",
            MetricWindow::Day => "day",
        }
    }
}

/// One validated rule of `alerts.yaml`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name (throttling and the alert history are kept per rule).
    pub name: String,
    /// The event it is about.
    pub event: Event,
    /// The jobs it is about (`*` by default; always `*` for events not about a job).
    pub jobs: Glob,
    /// The lowest priority it alerts for (`low` by default: all).
    pub min_priority: Priority,
    /// Names of the channels alerts go to (all defined, at least one).
    pub channels: Vec<String>,
    /// Throttle window per (rule, job); zero (the default) sends every alert.
    pub throttle: Duration,
    /// Parameters of the event.
    pub params: EventParams,
    /// `enabled` (default `true`): a disabled rule is kept (and shown) but
    /// matches nothing.
    pub enabled: bool,
    /// The rule's mapping as written, `${VARS}` not interpolated.
    pub spec: Mapping,
}

impl Rule {
    /// Whether an `event` about `job` (`None` for events not about a job) at
    /// `priority` (the job's, or the queue's for `queue_backlog`; `None` when the
    /// event has none) is routed by this rule. A job-less event matches only a
    /// rule whose pattern matches every job; a priority-less one ignores
    /// `min_priority`. A `queue_backlog` rule with a `priority` matches only
    /// that queue. A disabled rule matches nothing.
    pub fn matches(&self, event: Event, job: Option<&str>, priority: Option<Priority>) -> bool {
        if !self.enabled || event != self.event {
            return false;
        }
        let job_ok = match job {
            Some(name) => self.jobs.matches(name),
            None => self.jobs.matches_all(),
        };
        let priority_ok = priority.is_none_or(|p| p >= self.min_priority);
        let queue_ok = match (&self.params, priority) {
            (
                EventParams::QueueBacklog {
                    priority: Some(wanted), ..
                },
                Some(p),
            ) => p == *wanted,
            _ => true,
        };
        job_ok && priority_ok && queue_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn events_round_trip_and_unknown_ones_list_the_choices() {
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>().unwrap(), *e);
        }
        let err = "run_exploded".parse::<Event>().unwrap_err();
        assert!(
            err.starts_with("unknown event \"run_exploded\" (expected one of: run_failed,"),
            "{err}"
        );
        assert!(!Event::AgentLost.is_about_a_job() && !Event::QueueBacklog.is_about_a_job());
        assert!(Event::RunDead.is_about_a_job() && Event::QueueBacklog.has_priority());
        assert_eq!("schedule_failed".parse::<Event>().unwrap(), Event::ScheduleFailed);
        assert_eq!(Event::ScheduleFailed.to_string(), "schedule_failed");
        assert_eq!(
            serde_json::to_value(Event::ScheduleFailed).unwrap(),
            serde_json::json!("schedule_failed")
        );
        assert!(Event::ScheduleFailed.is_about_a_job() && Event::ScheduleFailed.has_priority());
        assert_eq!("leader_changed".parse::<Event>().unwrap(), Event::LeaderChanged);
        assert!(!Event::LeaderChanged.is_about_a_job() && !Event::LeaderChanged.has_priority());
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("*", "anything.at-all", true),
            ("*", "", true),
            ("digest.*", "digest.daily", true),
            ("digest.*", "digest.", true),
            ("digest.*", "digest", false),
            ("digest.*", "xdigest.daily", false),
            ("*.daily", "digest.daily", true),
            ("*.daily", "digest.daily.old", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyycd", false),
            ("a*b*c", "acb", false),
            ("job-?", "job-1", true),
            ("job-?", "job-12", false),
            ("job-?", "job-", false),
            ("??", "ab", true),
            ("*?", "", false),
            ("**x", "aax", true),
            ("hello", "hello", true),
            ("hello", "hell", false),
            ("a*aab", "aaaaab", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob(pattern).matches(name), expected, "{pattern:?} vs {name:?}");
        }
    }

    #[test]
    fn glob_syntax_is_validated() {
        assert!(Glob::new("").unwrap_err().contains("empty job pattern"));
        assert!(Glob::new("Digest.*").unwrap_err().contains("lower case"));
        assert!(Glob::new("job-[ab]").unwrap_err().contains("only `*` and `?`"));
        assert!(Glob::new("a b").unwrap_err().contains("cannot occur in a job name"));
        assert!(glob("**").matches_all() && !glob("*.x").matches_all());
        assert_eq!(Glob::default().as_str(), "*");
        assert_eq!("d.*".parse::<Glob>().unwrap().to_string(), "d.*");
    }

    fn rule(event: Event, jobs: &str, min_priority: Priority, params: EventParams) -> Rule {
        Rule {
            name: "r".into(),
            event,
            jobs: glob(jobs),
            min_priority,
            channels: vec!["c".into()],
            throttle: Duration::ZERO,
            params,
            enabled: true,
            spec: Mapping::new(),
        }
    }

    #[test]
    fn a_disabled_rule_matches_nothing() {
        let mut r = rule(Event::RunDead, "*", Priority::Low, EventParams::None);
        assert!(r.matches(Event::RunDead, Some("j"), Some(Priority::Low)));
        r.enabled = false;
        assert!(!r.matches(Event::RunDead, Some("j"), Some(Priority::Low)));
        assert!(!r.matches(Event::RunDead, None, None));
    }

    #[test]
    fn rules_match_by_event_job_and_priority() {
        let r = rule(Event::RunDead, "digest.*", Priority::Normal, EventParams::None);
        assert!(r.matches(Event::RunDead, Some("digest.daily"), Some(Priority::Normal)));
        assert!(r.matches(Event::RunDead, Some("digest.daily"), Some(Priority::Critical)));
        assert!(
            !r.matches(Event::RunDead, Some("digest.daily"), Some(Priority::Low)),
            "below min"
        );
        assert!(
            !r.matches(Event::RunFailed, Some("digest.daily"), Some(Priority::High)),
            "other event"
        );
        assert!(
            !r.matches(Event::RunDead, Some("backup"), Some(Priority::High)),
            "other job"
        );
        assert!(
            !r.matches(Event::RunDead, None, Some(Priority::High)),
            "job-less vs a job pattern"
        );

        let all = rule(Event::AgentLost, "*", Priority::Low, EventParams::None);
        assert!(all.matches(Event::AgentLost, None, None));
        let leader = rule(Event::LeaderChanged, "*", Priority::Low, EventParams::None);
        assert!(leader.matches(Event::LeaderChanged, None, None));
        assert!(!leader.matches(Event::AgentLost, None, None));

        let backlog = rule(
            Event::QueueBacklog,
            "*",
            Priority::Normal,
            EventParams::QueueBacklog {
                max_depth: Some(100),
                max_wait: None,
                priority: None,
            },
        );
        assert!(backlog.matches(Event::QueueBacklog, None, Some(Priority::High)));
        assert!(!backlog.matches(Event::QueueBacklog, None, Some(Priority::Low)));
        let one_queue = rule(
            Event::QueueBacklog,
            "*",
            Priority::Low,
            EventParams::QueueBacklog {
                max_depth: Some(100),
                max_wait: None,
                priority: Some(Priority::Critical),
            },
        );
        assert!(one_queue.matches(Event::QueueBacklog, None, Some(Priority::Critical)));
        assert!(!one_queue.matches(Event::QueueBacklog, None, Some(Priority::High)));
    }
}
