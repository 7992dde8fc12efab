//! From facts to alerts: derives the alert events (`docs/alerting.md`) from
//! what the engine reports ([`Fact`]) and from what the alerting service polls
//! (running attempts, the queue's backlog), and routes each to the rules that
//! match it.
//! Pure: no I/O, no clock (callers pass `now`), so every rule is tested with
//! plain values.
//!
//! How each event is detected:
//! * `run_failed`: an attempt ended `failed` or `lost` (retried or not);
//! * `run_timed_out`: an attempt ended `timed_out`;
//! * `run_dead`: a run moved to the dead-letter queue;
//! * `consecutive_failures`: the job's `count`-th unsuccessful attempt in a row
//!   (once per streak; a success resets it);
//! * `recovered`: the first success of a job after an unsuccessful attempt
//!   that matched an alert rule (sent or suppressed);
//! * `run_slow`: an attempt running (polled) or finished longer than the rule's
//!   `threshold`, once per (rule, attempt); with a `span`, an attempt that
//!   ended having spent longer than `threshold` in that reported span;
//! * `metric_high`: a reported metric above the rule's `above`, in one attempt
//!   (`per: attempt`) or summed over the job's UTC day (`per: day`, once per
//!   rule, job and day; the sum starts from what the store holds for the day
//!   when the controller starts);
//! * `queue_backlog`: a priority's queue deeper than `max_depth` or whose oldest
//!   run waited longer than `max_wait`, once until it is back under both;
//! * `schedule_missed`, `agent_lost`: reported by the scheduler and the engine;
//! * `schedule_failed`: a fire the scheduler could not create (its run was not
//!   enqueued), once per failed try; the scheduler retries it with backoff;
//! * `leader_changed`: reported once by a controller that begins a term of
//!   leadership after an earlier term (`crate::ha::announce`).
//!
//! Counters live in memory: after a restart a streak starts again at zero
//! (the day sums of `metric_high` are seeded from the store instead).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::alert::{Alert, AlertKind};
use super::config::AlertsConfig;
use super::facts::{AgentFact, AttemptFact, Fact, FailedFireFact, LeaderFact, MissedFact};
use super::message::{CUT, truncate};
use super::rules::{Event, EventParams, MetricWindow, Rule};
use crate::engine::RunningAttempt;
use crate::model::{Outcome, Priority, RunState};
use crate::time::rfc3339;

/// Links into the web UI (`--web-url`); none when it is not set.
#[derive(Debug, Clone, Default)]
pub struct Links {
    base: Option<String>,
}

impl Links {
    /// Links under `base` (e.g. `http://worker.example.com:7080`).
    pub fn new(base: Option<String>) -> Links {
        Links {
            base: base.map(|b| b.trim_end_matches('/').to_string()),
        }
    }

    fn to(&self, path: &str) -> Option<String> {
        self.base.as_ref().map(|b| format!("{b}{path}"))
    }

    /// A run's page.
    pub fn run(&self, id: &str) -> Option<String> {
        self.to(&format!("/runs/{id}"))
    }

    /// A job's page.
    pub fn job(&self, name: &str) -> Option<String> {
        self.to(&format!("/jobs/{name}"))
    }

    /// The agents page.
    pub fn agents(&self) -> Option<String> {
        self.to("/agents")
    }

    /// The queue page.
    pub fn queue(&self) -> Option<String> {
        self.to("/queue")
    }

    /// The dead-letter queue's page.
    pub fn dlq(&self) -> Option<String> {
        self.to("/dlq")
    }
}

/// The detection state (streaks, alerted attempts, queues over their limits).
#[derive(Debug, Default)]
pub struct Detector {
    /// Unsuccessful attempts in a row, per job.
    failures_in_row: HashMap<String, u32>,
    /// Jobs with an alerting failure and no success since (for `recovered`).
    failing: HashSet<String>,
    /// (run, attempt) → rules that already alerted it as slow.
    slow: HashMap<(String, u32), Vec<String>>,
    /// (rule, priority) queues currently over their limits.
    backlogged: HashSet<(String, Priority)>,
    /// (job, metric) → (UTC day, sum of the values reported that day), for
    /// the metrics a `per: day` rule watches.
    day_sums: HashMap<(String, String), (i64, f64)>,
    /// The UTC day of the last attempt seen (older sums are dropped when it changes).
    sums_day: i64,
    /// (rule, job, UTC day) that alerted `metric_high` per day.
    high_days: HashSet<(String, String, i64)>,
}

impl Detector {
    /// Empty state.
    pub fn new() -> Detector {
        Detector::default()
    }

    /// Starts `metric_high`'s day sums from what the store holds for UTC day
    /// `day` (days since the epoch): (job, metric, sum) since its midnight.
    pub fn seed_day_sums(&mut self, day: i64, sums: Vec<(String, String, f64)>) {
        self.sums_day = day;
        for (job, metric, sum) in sums {
            self.day_sums.insert((job, metric), (day, sum));
        }
    }

    /// The alerts a fact raises, one per matching rule (with `rule` set).
    pub fn on_fact(&mut self, config: &AlertsConfig, links: &Links, fact: &Fact) -> Vec<Alert> {
        match fact {
            Fact::AttemptEnded(attempt) => self.on_attempt(config, links, attempt),
            Fact::ScheduleMissed(missed) => on_missed(config, links, missed),
            Fact::ScheduleFailed(failed) => on_failed_fire(config, links, failed),
            Fact::AgentLost(agent) => on_agent(config, links, agent),
            Fact::LeaderChanged(leader) => on_leader(config, leader),
        }
    }

    fn on_attempt(&mut self, config: &AlertsConfig, links: &Links, a: &AttemptFact) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let job = Some(a.job.as_str());
        let priority = Some(a.priority);
        let failed = matches!(a.outcome, Outcome::Failed | Outcome::Lost | Outcome::TimedOut);
        let base = || attempt_alert(a, links);
        let route = |event: Event, alert: Alert, alerts: &mut Vec<Alert>| {
            for rule in config.matching(event, job, priority) {
                alerts.push(for_rule(alert.clone(), event, rule));
            }
        };

        let next = match a.state {
            RunState::Scheduled => "a retry is scheduled".to_string(),
            RunState::Dead => "the run moved to the dead-letter queue".to_string(),
            other => format!("the run is {other}"),
        };
        match a.outcome {
            Outcome::Failed | Outcome::Lost => {
                let verb = if a.outcome == Outcome::Lost {
                    "was lost"
                } else {
                    "failed"
                };
                let mut alert = base();
                alert.title = format!("run_failed: {} attempt {}/{} {verb}", a.job, a.attempt, a.max_attempts);
                alert.text = format!(
                    "Run {} of job {}: attempt {} {verb}; {next}.",
                    a.run_id, a.job, a.attempt
                );
                route(Event::RunFailed, alert, &mut alerts);
            }
            Outcome::TimedOut => {
                let mut alert = base();
                alert.title = format!(
                    "run_timed_out: {} attempt {}/{} timed out",
                    a.job, a.attempt, a.max_attempts
                );
                alert.text = format!(
                    "Run {} of job {}: attempt {} hit its timeout; {next}.",
                    a.run_id, a.job, a.attempt
                );
                route(Event::RunTimedOut, alert, &mut alerts);
            }
            _ => {}
        }
        if a.state == RunState::Dead && a.outcome != Outcome::Cancelled {
            let mut alert = base();
            alert.title = format!("run_dead: {} run is dead after {} attempt(s)", a.job, a.attempt);
            alert.text = format!(
                "Run {} of job {} moved to the dead-letter queue after attempt {} of {} ({}). \
                 `workerctl dlq retry {}` runs it again.",
                a.run_id, a.job, a.attempt, a.max_attempts, a.outcome, a.run_id
            );
            route(Event::RunDead, alert, &mut alerts);
        }
        if failed {
            let streak = self.failures_in_row.entry(a.job.clone()).or_default();
            *streak += 1;
            let streak = *streak;
            for rule in config.matching(Event::ConsecutiveFailures, job, priority) {
                if let EventParams::ConsecutiveFailures { count } = rule.params
                    && streak == count
                {
                    let mut alert = base();
                    alert.title = format!("consecutive_failures: {} failed {count} times in a row", a.job);
                    alert.text = format!(
                        "Job {} has not succeeded in its last {count} attempts; the latest, attempt {} of run {}, {}.",
                        a.job, a.attempt, a.run_id, a.outcome
                    );
                    alert.details.push(("In a row".into(), count.to_string()));
                    alerts.push(for_rule(alert, Event::ConsecutiveFailures, rule));
                }
            }
            if !alerts.is_empty() && config.rules.iter().any(|r| r.enabled && r.event == Event::Recovered) {
                self.failing.insert(a.job.clone());
            }
        } else if a.outcome == Outcome::Succeeded {
            self.failures_in_row.remove(&a.job);
            if self.failing.remove(&a.job) {
                let mut alert = base();
                alert.title = format!("recovered: {} succeeded again", a.job);
                alert.text = format!(
                    "Job {} succeeded (run {}, attempt {}) after failures that alerted.",
                    a.job, a.run_id, a.attempt
                );
                alert.error = None;
                alert.output_tail = None;
                route(Event::Recovered, alert, &mut alerts);
            }
        }
        // Slow, judged on the finished attempt unless the running check already alerted it.
        let already = self.slow.remove(&(a.run_id.clone(), a.attempt)).unwrap_or_default();
        if a.outcome != Outcome::Cancelled && !a.spans.is_empty() {
            alerts.extend(slow_spans(config, links, a));
        }
        alerts.extend(self.metrics_high(config, links, a));
        if let Some(duration) = a.duration_ms.filter(|_| a.outcome != Outcome::Cancelled) {
            for rule in config.matching(Event::RunSlow, job, priority) {
                if let EventParams::RunSlow { threshold, span: None } = rule.params
                    && duration > threshold.as_millis() as i64
                    && !already.contains(&rule.name)
                {
                    let mut alert = base();
                    alert.title = format!(
                        "run_slow: {} attempt {} took {}",
                        a.job,
                        a.attempt,
                        worker_duration::format(Duration::from_millis(duration as u64))
                    );
                    alert.text = format!(
                        "Run {} of job {} ran longer than {} ({}).",
                        a.run_id,
                        a.job,
                        worker_duration::format(threshold),
                        a.outcome
                    );
                    alert
                        .details
                        .push(("Threshold".into(), worker_duration::format(threshold)));
                    alerts.push(for_rule(alert, Event::RunSlow, rule));
                }
            }
        }
        alerts
    }

    /// `metric_high` for what attempt `a` reported: its own value (`per:
    /// attempt`), or the job's sum for the UTC day once it crosses the limit
    /// (`per: day`, once per rule, job and day).
    fn metrics_high(&mut self, config: &AlertsConfig, links: &Links, a: &AttemptFact) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let day = a.at.div_euclid(86_400_000);
        if day != self.sums_day {
            // A new day: yesterday's sums are done with.
            self.sums_day = day;
            self.day_sums.retain(|_, (d, _)| *d >= day);
        }
        for m in &a.metrics {
            // Only the metrics a `per: day` rule watches are summed (the map
            // stays as small as the rules, whatever names jobs report).
            let watched = config.rules.iter().any(|r| {
                matches!(&r.params, EventParams::MetricHigh { metric, per: MetricWindow::Day, .. } if *metric == m.name)
            });
            let sum = if !watched {
                0.0
            } else {
                let entry = self
                    .day_sums
                    .entry((a.job.clone(), m.name.clone()))
                    .or_insert((day, 0.0));
                if entry.0 != day {
                    *entry = (day, 0.0);
                }
                entry.1 += m.value;
                entry.1
            };
            for rule in config.matching(Event::MetricHigh, Some(&a.job), Some(a.priority)) {
                let EventParams::MetricHigh { metric, above, per } = &rule.params else {
                    continue;
                };
                if *metric != m.name {
                    continue;
                }
                let (value, what) = match per {
                    MetricWindow::Attempt => (m.value, format!("attempt {} reported", a.attempt)),
                    MetricWindow::Day => (sum, "reached today (UTC)".to_string()),
                };
                if value <= *above {
                    continue;
                }
                if *per == MetricWindow::Day && !self.high_days.insert((rule.name.clone(), a.job.clone(), day)) {
                    continue;
                }
                let mut alert = attempt_alert(a, links);
                alert.title = format!("metric_high: {} {metric} {what} {}", a.job, number(value));
                alert.text = format!(
                    "Job {}: {metric} {what} {}, above the limit of {} (run {}).",
                    a.job,
                    number(value),
                    number(*above),
                    a.run_id
                );
                alert.error = None;
                alert.output_tail = None;
                alert.details.push(("Metric".into(), metric.clone()));
                alert
                    .details
                    .push(("Limit".into(), format!("{} per {}", number(*above), per.as_str())));
                alerts.push(for_rule(alert, Event::MetricHigh, rule));
            }
        }
        self.high_days.retain(|(_, _, d)| *d >= day - 1);
        alerts
    }

    /// `run_slow` for attempts still running past a rule's threshold (once per
    /// rule and attempt); forgets attempts that are no longer running.
    pub fn check_running(
        &mut self,
        config: &AlertsConfig,
        links: &Links,
        running: &[RunningAttempt],
        now: i64,
    ) -> Vec<Alert> {
        let current: HashSet<(&str, u32)> = running.iter().map(|r| (r.run_id.as_str(), r.attempt)).collect();
        self.slow
            .retain(|(run, attempt), _| current.contains(&(run.as_str(), *attempt)));
        let mut alerts = Vec::new();
        for r in running {
            let elapsed = now - r.started_at;
            for rule in config.matching(Event::RunSlow, Some(&r.job), Some(r.priority)) {
                // Spans are judged when the attempt ends.
                let EventParams::RunSlow { threshold, span: None } = rule.params else {
                    continue;
                };
                if elapsed <= threshold.as_millis() as i64 {
                    continue;
                }
                let alerted = self.slow.entry((r.run_id.clone(), r.attempt)).or_default();
                if alerted.contains(&rule.name) {
                    continue;
                }
                alerted.push(rule.name.clone());
                let mut alert = Alert::new(
                    AlertKind::Alert,
                    format!(
                        "run_slow: {} attempt {} running for {}",
                        r.job,
                        r.attempt,
                        worker_duration::format(Duration::from_secs((elapsed / 1000) as u64))
                    ),
                    format!(
                        "Run {} of job {} has been running longer than {} and has not finished.",
                        r.run_id,
                        r.job,
                        worker_duration::format(threshold)
                    ),
                    now,
                );
                alert.job = Some(r.job.clone());
                alert.priority = Some(r.priority);
                alert.run_id = Some(r.run_id.clone());
                alert.attempt = Some(r.attempt);
                alert.max_attempts = Some(r.max_attempts);
                alert.agent = r.agent.clone();
                alert.link = links.run(&r.run_id);
                alert.details.push(("Started".into(), rfc3339(r.started_at)));
                alert
                    .details
                    .push(("Threshold".into(), worker_duration::format(threshold)));
                alerts.push(for_rule(alert, Event::RunSlow, rule));
            }
        }
        alerts
    }

    /// `queue_backlog` for priorities over a rule's limits, given
    /// (priority, depth, oldest wait ms) per priority. A queue alerts when it
    /// goes over and again only after it was back under both limits.
    pub fn check_backlog(
        &mut self,
        config: &AlertsConfig,
        links: &Links,
        backlog: &[(Priority, u64, u64)],
        now: i64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut still_over = HashSet::new();
        for &(priority, depth, wait_ms) in backlog {
            for rule in config.matching(Event::QueueBacklog, None, Some(priority)) {
                let EventParams::QueueBacklog {
                    max_depth, max_wait, ..
                } = rule.params
                else {
                    continue;
                };
                let too_deep = max_depth.is_some_and(|m| depth > m);
                let too_old = max_wait.is_some_and(|m| depth > 0 && wait_ms > m.as_millis() as u64);
                if !(too_deep || too_old) {
                    continue;
                }
                let key = (rule.name.clone(), priority);
                still_over.insert(key.clone());
                if self.backlogged.contains(&key) {
                    continue;
                }
                self.backlogged.insert(key);
                let wait = worker_duration::format(Duration::from_secs(wait_ms / 1000));
                let mut why = Vec::new();
                if too_deep {
                    why.push(format!("{depth} queued (limit {})", max_depth.unwrap_or_default()));
                }
                if too_old {
                    why.push(format!(
                        "oldest waiting {wait} (limit {})",
                        worker_duration::format(max_wait.unwrap_or_default())
                    ));
                }
                let mut alert = Alert::new(
                    AlertKind::Alert,
                    format!("queue_backlog: {priority} queue has {depth} runs waiting, oldest {wait}"),
                    format!(
                        "The {priority} priority queue is over its limits: {}. Agents may be missing, \
                         full, or not matching the jobs' selectors.",
                        why.join("; ")
                    ),
                    now,
                );
                alert.priority = Some(priority);
                alert.link = links.queue();
                alert.details.push(("Queued".into(), depth.to_string()));
                alert.details.push(("Oldest wait".into(), wait));
                alerts.push(for_rule(alert, Event::QueueBacklog, rule));
            }
        }
        self.backlogged.retain(|key| still_over.contains(key));
        alerts
    }
}

/// The metrics that `metric_high` rules with `per: day` watch.
pub fn daily_metrics(config: &AlertsConfig) -> Vec<String> {
    config
        .rules
        .iter()
        .filter_map(|r| match &r.params {
            EventParams::MetricHigh {
                metric,
                per: MetricWindow::Day,
                ..
            } => Some(metric.clone()),
            _ => None,
        })
        .collect()
}

/// `run_slow` rules with a `span` that attempt `a` spent longer in.
fn slow_spans(config: &AlertsConfig, links: &Links, a: &AttemptFact) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for rule in config.matching(Event::RunSlow, Some(&a.job), Some(a.priority)) {
        let EventParams::RunSlow {
            threshold,
            span: Some(name),
        } = &rule.params
        else {
            continue;
        };
        let Some(span) = a.spans.iter().find(|s| s.name == *name) else {
            continue;
        };
        if span.total_us <= threshold.as_micros() as u64 {
            continue;
        }
        let took = worker_duration::format(Duration::from_millis(span.total_us / 1000));
        let mut alert = attempt_alert(a, links);
        alert.title = format!("run_slow: {} attempt {} spent {took} in {name}", a.job, a.attempt);
        alert.text = format!(
            "Run {} of job {} spent {took} in `{name}` ({} pass(es)), longer than {} ({}).",
            a.run_id,
            a.job,
            span.count,
            worker_duration::format(*threshold),
            a.outcome
        );
        alert.details.push(("Span".into(), name.clone()));
        alert
            .details
            .push(("Threshold".into(), worker_duration::format(*threshold)));
        alerts.push(for_rule(alert, Event::RunSlow, rule));
    }
    alerts
}

/// A metric value for people (`12`, `0.4200` → `0.42`).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// An alert about an attempt with every fact of it filled in.
fn attempt_alert(a: &AttemptFact, links: &Links) -> Alert {
    let mut alert = Alert::new(AlertKind::Alert, String::new(), String::new(), a.at);
    alert.job = Some(a.job.clone());
    alert.priority = Some(a.priority);
    alert.run_id = Some(a.run_id.clone());
    alert.attempt = Some(a.attempt);
    alert.max_attempts = Some(a.max_attempts);
    alert.agent = a.agent.clone();
    alert.error = a.error.clone();
    alert.output_tail = a.output_tail.clone();
    alert.link = links.run(&a.run_id);
    alert.details.push(("Outcome".into(), a.outcome.to_string()));
    alert.details.push(("Run state".into(), a.state.to_string()));
    if let Some(ms) = a.duration_ms {
        alert.details.push((
            "Duration".into(),
            worker_duration::format(Duration::from_millis(ms.max(0) as u64)),
        ));
    }
    alert
}

/// `alert` as routed by `rule` (a fresh id per rule: each is its own delivery).
fn for_rule(mut alert: Alert, event: Event, rule: &Rule) -> Alert {
    alert.id = ulid::Ulid::new().to_string();
    alert.event = Some(event);
    alert.rule = Some(rule.name.clone());
    alert
}

fn on_missed(config: &AlertsConfig, links: &Links, m: &MissedFact) -> Vec<Alert> {
    config
        .matching(Event::ScheduleMissed, Some(&m.job), Some(m.priority))
        .map(|rule| {
            let mut alert = Alert::new(
                AlertKind::Alert,
                format!("schedule_missed: {} missed {} fire(s)", m.job, m.fires),
                format!("Schedule of job {}: {}.", m.job, m.reason),
                m.at,
            );
            alert.job = Some(m.job.clone());
            alert.priority = Some(m.priority);
            alert.link = links.job(&m.job);
            alert.details.push(("Fire time".into(), rfc3339(m.fire_at)));
            alert.details.push(("Fires".into(), m.fires.to_string()));
            for_rule(alert, Event::ScheduleMissed, rule)
        })
        .collect()
}

/// Longest error shown in a `schedule_failed` title (the alert's error holds it whole).
const FAILED_FIRE_TITLE_ERROR_MAX: usize = 120;

/// The error as a title shows it: its first non-empty line, at most
/// [`FAILED_FIRE_TITLE_ERROR_MAX`] characters, ending with [`CUT`] when
/// anything was left out.
fn title_error(error: &str) -> String {
    let mut lines = error.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        return "unknown error".into();
    };
    if lines.next().is_some() {
        truncate(&format!("{first}{CUT}"), FAILED_FIRE_TITLE_ERROR_MAX).into_owned()
    } else {
        truncate(first, FAILED_FIRE_TITLE_ERROR_MAX).into_owned()
    }
}

fn on_failed_fire(config: &AlertsConfig, links: &Links, f: &FailedFireFact) -> Vec<Alert> {
    config
        .matching(Event::ScheduleFailed, Some(&f.job), Some(f.priority))
        .map(|rule| {
            let streak = if f.failures <= 1 {
                "This is its first failure".to_string()
            } else {
                format!("Its fires have failed {} times in a row", f.failures)
            };
            let retry = match f.retry_at {
                Some(retry_at) => format!(
                    "the scheduler tries it again at {} (in {})",
                    rfc3339(retry_at),
                    worker_duration::format(Duration::from_secs(((retry_at - f.at).max(0) as u64).div_ceil(1000)))
                ),
                None => "the scheduler does not try it again".to_string(),
            };
            let mut alert = Alert::new(
                AlertKind::Alert,
                format!("schedule_failed: {} could not fire: {}", f.job, title_error(&f.error)),
                format!(
                    "Schedule of job {}: the fire due at {} could not be created, so no run was enqueued. \
                     {streak}; {retry}. Other schedules keep firing.",
                    f.job,
                    rfc3339(f.fire_at)
                ),
                f.at,
            );
            alert.job = Some(f.job.clone());
            alert.priority = Some(f.priority);
            alert.error = Some(f.error.clone());
            alert.link = links.job(&f.job);
            alert.details.push(("Fire time".into(), rfc3339(f.fire_at)));
            alert.details.push(("Failures".into(), f.failures.to_string()));
            if let Some(retry_at) = f.retry_at {
                alert.details.push(("Next try".into(), rfc3339(retry_at)));
            }
            for_rule(alert, Event::ScheduleFailed, rule)
        })
        .collect()
}

fn on_agent(config: &AlertsConfig, links: &Links, g: &AgentFact) -> Vec<Alert> {
    let silent = worker_duration::format(Duration::from_secs(((g.at - g.last_seen).max(0) / 1000) as u64));
    config
        .matching(Event::AgentLost, None, None)
        .map(|rule| {
            let how = if g.connected {
                "its connection is open but it sends no heartbeats"
            } else {
                "it disconnected and has not come back"
            };
            let mut alert = Alert::new(
                AlertKind::Alert,
                format!("agent_lost: {} on {} silent for {silent}", g.name, g.host),
                format!(
                    "Agent {} ({}) on host {} has not been heard from for {silent}: {how}. \
                     The {} attempt(s) it held are retried as their leases expire.",
                    g.name, g.agent_id, g.host, g.running
                ),
                g.at,
            );
            alert.agent = Some(g.name.clone());
            alert.link = links.agents();
            alert.details.push(("Last seen".into(), rfc3339(g.last_seen)));
            alert.details.push(("Attempts held".into(), g.running.to_string()));
            for_rule(alert, Event::AgentLost, rule)
        })
        .collect()
}

/// `leader_changed`: one alert per matching rule, not about a job.
fn on_leader(config: &AlertsConfig, l: &LeaderFact) -> Vec<Alert> {
    let change = &l.change;
    let before = match &change.previous {
        Some(previous) => format!("{} led before", previous.id),
        None => "the previous leader is not on record".to_string(),
    };
    let title = format!(
        "leader_changed: {} leads now (epoch {}); {before}",
        change.id, change.epoch
    );
    let mut text = format!(
        "Controller {} ({}) took the leadership lease at {} and leads in epoch {}.",
        change.id,
        change.address,
        rfc3339(change.since),
        change.epoch
    );
    if let Some(previous) = &change.previous {
        text.push_str(&format!(
            " {} ({}) led before, in epoch {} since {}.",
            previous.id,
            previous.address,
            previous.epoch,
            rfc3339(previous.since)
        ));
    }
    text.push_str(" Agents and workerctl find the new leader by themselves.");
    config
        .matching(Event::LeaderChanged, None, None)
        .map(|rule| {
            let mut alert = Alert::new(AlertKind::Alert, title.clone(), text.clone(), l.at);
            alert.details.push(("Leader".into(), change.id.clone()));
            alert.details.push(("Leader address".into(), change.address.clone()));
            alert.details.push(("Epoch".into(), change.epoch.to_string()));
            alert.details.push(("Leading since".into(), rfc3339(change.since)));
            if let Some(previous) = &change.previous {
                alert.details.push(("Previous leader".into(), previous.id.clone()));
                alert
                    .details
                    .push(("Previous address".into(), previous.address.clone()));
            }
            alert.leader = Some(change.clone());
            for_rule(alert, Event::LeaderChanged, rule)
        })
        .collect()
}

#[cfg(test)]
mod tests;
