use std::path::Path;

use super::*;
use crate::alerting::parse_alerts_yaml;

fn config(rules: &str) -> AlertsConfig {
    let text =
        format!("channels:\n  hook: {{ type: webhook, url: \"http://127.0.0.1:9/h\", secret: s }}\nrules:\n{rules}");
    parse_alerts_yaml(Path::new("alerts.yaml"), &text, &crate::config::env::from_pairs(&[])).expect("valid test config")
}

fn attempt(job: &str, attempt: u32, outcome: Outcome, state: RunState) -> Fact {
    Fact::AttemptEnded(Box::new(AttemptFact {
        spans: Default::default(),
        metrics: Default::default(),
        run_id: format!("run-{job}-{attempt}"),
        job: job.into(),
        priority: Priority::Normal,
        attempt,
        max_attempts: 3,
        agent: Some("agent-1".into()),
        outcome,
        state,
        error: (outcome != Outcome::Succeeded).then(|| "exit code 3".into()),
        output_tail: Some("boom\n".into()),
        duration_ms: Some(1500),
        at: 1_000,
    }))
}

fn titles(alerts: &[Alert]) -> Vec<String> {
    alerts.iter().map(|a| a.title.clone()).collect()
}

#[test]
fn failures_timeouts_and_dead_runs_route_to_their_rules() {
    let c = config(
        "  - { name: f, event: run_failed, jobs: \"backup.*\", channels: [hook] }\n\
         \x20 - { name: t, event: run_timed_out, channels: [hook] }\n\
         \x20 - { name: d, event: run_dead, min_priority: high, channels: [hook] }\n\
         \x20 - { name: d2, event: run_dead, channels: [hook] }\n",
    );
    let links = Links::new(Some("http://ui:7080/".into()));
    let mut d = Detector::new();
    let a = d.on_fact(
        &c,
        &links,
        &attempt("backup.db", 1, Outcome::Failed, RunState::Scheduled),
    );
    assert_eq!(titles(&a), ["run_failed: backup.db attempt 1/3 failed"]);
    let alert = &a[0];
    assert_eq!(alert.rule.as_deref(), Some("f"));
    assert_eq!(alert.event, Some(Event::RunFailed));
    assert_eq!(alert.link.as_deref(), Some("http://ui:7080/runs/run-backup.db-1"));
    assert_eq!(alert.error.as_deref(), Some("exit code 3"));
    assert_eq!(alert.agent.as_deref(), Some("agent-1"));
    assert!(alert.text.contains("a retry is scheduled"), "{}", alert.text);

    assert!(
        d.on_fact(&c, &links, &attempt("other", 1, Outcome::Failed, RunState::Scheduled))
            .is_empty()
    );
    let a = d.on_fact(&c, &links, &attempt("other", 2, Outcome::TimedOut, RunState::Dead));
    let mut rules: Vec<_> = a.iter().map(|a| a.rule.clone().unwrap()).collect();
    rules.sort();
    assert_eq!(rules, ["d2", "t"], "min_priority high excludes a normal job");
    assert_ne!(a[0].id, a[1].id, "each routed alert is its own delivery");
    let a = d.on_fact(
        &c,
        &links,
        &attempt("other", 3, Outcome::Cancelled, RunState::Cancelled),
    );
    assert!(a.is_empty());
}

#[test]
fn streaks_alert_once_at_their_count_and_recovery_follows_an_alerting_failure() {
    let c = config(
        "  - { name: streak, event: consecutive_failures, count: 3, channels: [hook] }\n\
         \x20 - { name: back, event: recovered, channels: [hook] }\n",
    );
    let links = Links::default();
    let mut d = Detector::new();
    let mut raised = Vec::new();
    for n in 1..=5 {
        raised.extend(d.on_fact(&c, &links, &attempt("sync", n, Outcome::Failed, RunState::Scheduled)));
    }
    assert_eq!(titles(&raised), ["consecutive_failures: sync failed 3 times in a row"]);
    assert_eq!(raised[0].attempt, Some(3));
    assert!(raised[0].link.is_none(), "no --web-url, no link");
    let a = d.on_fact(&c, &links, &attempt("sync", 6, Outcome::Succeeded, RunState::Succeeded));
    assert_eq!(titles(&a), ["recovered: sync succeeded again"]);
    assert!(a[0].error.is_none());
    // Only the first success recovers; a streak starts again from zero.
    assert!(
        d.on_fact(&c, &links, &attempt("sync", 7, Outcome::Succeeded, RunState::Succeeded))
            .is_empty()
    );
    for n in 1..=2 {
        assert!(
            d.on_fact(&c, &links, &attempt("sync", n, Outcome::Failed, RunState::Scheduled))
                .is_empty()
        );
    }
    assert!(
        d.on_fact(&c, &links, &attempt("sync", 3, Outcome::Succeeded, RunState::Succeeded))
            .is_empty(),
        "failures that raised nothing need no recovery"
    );
}

#[test]
fn slow_attempts_alert_once_whether_seen_running_or_finished() {
    let c = config("  - { name: slow, event: run_slow, threshold: 1s, channels: [hook] }\n");
    let links = Links::default();
    let mut d = Detector::new();
    let running = |started_at| RunningAttempt {
        run_id: "run-x-1".into(),
        job: "x".into(),
        priority: Priority::Normal,
        attempt: 1,
        max_attempts: 3,
        agent: None,
        started_at,
    };
    assert!(d.check_running(&c, &links, &[running(0)], 900).is_empty());
    let a = d.check_running(&c, &links, &[running(0)], 1_200);
    assert_eq!(titles(&a), ["run_slow: x attempt 1 running for 1s"]);
    assert!(
        d.check_running(&c, &links, &[running(0)], 5_000).is_empty(),
        "once per attempt"
    );
    // Its end is not alerted again; another slow attempt that ended unseen is.
    assert!(
        d.on_fact(&c, &links, &attempt("x", 1, Outcome::Succeeded, RunState::Succeeded))
            .is_empty()
    );
    let a = d.on_fact(&c, &links, &attempt("x", 2, Outcome::Succeeded, RunState::Succeeded));
    assert_eq!(titles(&a), ["run_slow: x attempt 2 took 1s500ms"]);
}

#[test]
fn backlog_alerts_when_a_queue_goes_over_and_rearms_when_it_drains() {
    let c = config(
        "  - { name: deep, event: queue_backlog, max_depth: 10, channels: [hook] }\n\
         \x20 - { name: old, event: queue_backlog, max_wait: 1m, priority: critical, channels: [hook] }\n",
    );
    let links = Links::new(Some("http://ui".into()));
    let mut d = Detector::new();
    let queues = |normal: u64, critical_wait: u64| {
        vec![
            (Priority::Critical, 1, critical_wait),
            (Priority::High, 0, 0),
            (Priority::Normal, normal, 5),
            (Priority::Low, 0, 0),
        ]
    };
    let a = d.check_backlog(&c, &links, &queues(11, 61_000), 0);
    let mut got = titles(&a);
    got.sort();
    assert_eq!(
        got,
        [
            "queue_backlog: critical queue has 1 runs waiting, oldest 1m1s",
            "queue_backlog: normal queue has 11 runs waiting, oldest 0s",
        ]
    );
    assert_eq!(a[0].link.as_deref(), Some("http://ui/queue"));
    assert!(
        d.check_backlog(&c, &links, &queues(50, 70_000), 0).is_empty(),
        "still over: once"
    );
    assert!(d.check_backlog(&c, &links, &queues(10, 0), 0).is_empty());
    assert_eq!(
        d.check_backlog(&c, &links, &queues(11, 0), 0).len(),
        1,
        "over again after draining"
    );
}

#[test]
fn missed_fires_and_lost_agents() {
    let c = config(
        "  - { name: missed, event: schedule_missed, jobs: \"nightly.*\", channels: [hook] }\n\
         \x20 - { name: agents, event: agent_lost, channels: [hook] }\n",
    );
    let links = Links::new(Some("http://ui".into()));
    let mut d = Detector::new();
    let missed = |job: &str| {
        Fact::ScheduleMissed(MissedFact {
            job: job.into(),
            priority: Priority::Normal,
            fires: 4,
            reason: "4 fire(s) missed while the controller was down (catch_up: skip, 0 caught up)".into(),
            fire_at: 0,
            at: 10,
        })
    };
    let a = d.on_fact(&c, &links, &missed("nightly.report"));
    assert_eq!(titles(&a), ["schedule_missed: nightly.report missed 4 fire(s)"]);
    assert!(a[0].text.contains("catch_up: skip"));
    assert_eq!(a[0].link.as_deref(), Some("http://ui/jobs/nightly.report"));
    assert!(d.on_fact(&c, &links, &missed("hourly")).is_empty());
    let lost = Fact::AgentLost(AgentFact {
        agent_id: "a-1".into(),
        name: "builder".into(),
        host: "host-7".into(),
        connected: false,
        running: 2,
        last_seen: 0,
        at: 21_000,
    });
    let a = d.on_fact(&c, &links, &lost);
    assert_eq!(titles(&a), ["agent_lost: builder on host-7 silent for 21s"]);
    assert!(a[0].text.contains("disconnected") && a[0].text.contains("2 attempt(s)"));
}

fn failed_fire(job: &str, priority: Priority, error: &str, failures: u32, retry_at: Option<i64>) -> Fact {
    Fact::ScheduleFailed(FailedFireFact {
        job: job.into(),
        priority,
        fire_at: 1_714_564_800_000,
        failures,
        error: error.into(),
        retry_at,
        at: 1_714_564_800_250,
    })
}

#[test]
fn failed_fires_alert_with_the_error_the_count_and_the_next_try() {
    let c = config(
        "  - { name: fires, event: schedule_failed, jobs: \"nightly.*\", min_priority: normal, channels: [hook] }\n\
         \x20 - { name: missed, event: schedule_missed, channels: [hook] }\n",
    );
    let links = Links::new(Some("http://ui".into()));
    let mut d = Detector::new();
    let error = "cannot enqueue the chain of nightly.report: upstream job nightly.extract is disabled";
    let a = d.on_fact(
        &c,
        &links,
        &failed_fire("nightly.report", Priority::High, error, 3, Some(1_714_564_830_250)),
    );
    assert_eq!(
        titles(&a),
        [format!("schedule_failed: nightly.report could not fire: {error}")]
    );
    let alert = &a[0];
    assert_eq!(alert.rule.as_deref(), Some("fires"));
    assert_eq!(alert.event, Some(Event::ScheduleFailed));
    assert_eq!(alert.kind, AlertKind::Alert);
    assert_eq!(alert.job.as_deref(), Some("nightly.report"));
    assert_eq!(alert.priority, Some(Priority::High));
    assert_eq!(alert.error.as_deref(), Some(error));
    assert_eq!(alert.link.as_deref(), Some("http://ui/jobs/nightly.report"));
    assert_eq!(alert.at, 1_714_564_800_250);
    assert!(alert.run_id.is_none() && alert.attempt.is_none());
    assert_eq!(
        alert.details,
        [
            ("Fire time".to_string(), "2024-05-01T12:00:00.000Z".to_string()),
            ("Failures".to_string(), "3".to_string()),
            ("Next try".to_string(), "2024-05-01T12:00:30.250Z".to_string()),
        ]
    );
    for part in [
        "2024-05-01T12:00:00.000Z",
        "failed 3 times in a row",
        "tries it again at 2024-05-01T12:00:30.250Z (in 30s)",
    ] {
        assert!(alert.text.contains(part), "{part:?} not in {:?}", alert.text);
    }

    // The first failure, without a retry.
    let a = d.on_fact(
        &c,
        &links,
        &failed_fire("nightly.x", Priority::Normal, "store: disk full", 1, None),
    );
    assert_eq!(
        titles(&a),
        ["schedule_failed: nightly.x could not fire: store: disk full"]
    );
    assert!(a[0].text.contains("first failure") && a[0].text.contains("does not try it again"));
    assert!(a[0].details.iter().all(|(label, _)| label != "Next try"));

    // Not routed: another job, a priority below min_priority; schedule_missed rules ignore it.
    assert!(
        d.on_fact(&c, &links, &failed_fire("hourly", Priority::Critical, error, 1, None))
            .is_empty()
    );
    assert!(
        d.on_fact(
            &c,
            &links,
            &failed_fire("nightly.report", Priority::Low, error, 1, None)
        )
        .is_empty()
    );
}

#[test]
fn a_failed_fire_title_keeps_only_the_start_of_the_error() {
    let c = config("  - { name: fires, event: schedule_failed, channels: [hook] }\n");
    let links = Links::default();
    let mut d = Detector::new();
    let title = |d: &mut Detector, error: &str| {
        let a = d.on_fact(&c, &links, &failed_fire("j", Priority::Normal, error, 1, None));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].error.as_deref(), Some(error), "the alert keeps the whole error");
        a[0].title
            .strip_prefix("schedule_failed: j could not fire: ")
            .unwrap()
            .to_string()
    };
    let long = "é".repeat(500);
    let shown = title(&mut d, &long);
    assert_eq!(shown.chars().count(), 120);
    assert!(shown.ends_with('…') && shown.starts_with("éé"));
    assert_eq!(title(&mut d, "\n  first line  \nsecond line\n"), "first line…");
    assert_eq!(title(&mut d, "one line"), "one line");
    assert_eq!(title(&mut d, " \n "), "unknown error");
}

#[test]
fn failed_fires_are_throttled_per_rule_and_job() {
    use crate::alerting::throttle::{Decision, Throttle};
    let c = config("  - { name: fires, event: schedule_failed, channels: [hook], throttle: 1h }\n");
    let links = Links::default();
    let mut d = Detector::new();
    let mut throttle = Throttle::new();
    let rule = &c.rules[0];
    let mut decisions = Vec::new();
    for (n, job) in [(1, "a"), (2, "a"), (1, "b"), (3, "a")] {
        for alert in d.on_fact(&c, &links, &failed_fire(job, Priority::Normal, "boom", n, None)) {
            assert_eq!(alert.rule.as_deref(), Some("fires"));
            decisions.push(throttle.offer(rule, alert.job.as_deref(), alert.at));
        }
    }
    assert_eq!(
        decisions,
        [Decision::Send, Decision::Suppress, Decision::Send, Decision::Suppress]
    );
}

fn reporting(job: &str, attempt: u32, at: i64, cost: f64, fetch_ms: u64) -> Fact {
    let Fact::AttemptEnded(mut a) = attempt_fact(job, attempt) else {
        unreachable!()
    };
    a.at = at;
    a.metrics = vec![crate::store::MetricRecord {
        name: "api_cost_usd".into(),
        value: cost,
    }];
    a.spans = vec![crate::store::SpanRecord {
        name: "fetch".into(),
        count: 2,
        total_us: fetch_ms * 1000,
        max_us: fetch_ms * 500,
    }];
    Fact::AttemptEnded(a)
}

fn attempt_fact(job: &str, n: u32) -> Fact {
    attempt(job, n, Outcome::Succeeded, RunState::Succeeded)
}

#[test]
fn a_slow_span_alerts_when_the_attempt_ends_and_never_while_running() {
    let c = config("  - { name: slow-fetch, event: run_slow, threshold: 1s, span: fetch, channels: [hook] }\n");
    let links = Links::default();
    let mut d = Detector::new();
    assert!(d.on_fact(&c, &links, &reporting("enrich", 1, 0, 0.1, 900)).is_empty());
    let a = d.on_fact(&c, &links, &reporting("enrich", 2, 0, 0.1, 1_500));
    assert_eq!(titles(&a), ["run_slow: enrich attempt 2 spent 1s500ms in fetch"]);
    assert!(
        d.on_fact(&c, &links, &attempt_fact("enrich", 3)).is_empty(),
        "the attempt's whole duration (1.5 s) is not what a span rule judges"
    );
    let running = RunningAttempt {
        run_id: "run-x-1".into(),
        job: "x".into(),
        priority: Priority::Normal,
        attempt: 1,
        max_attempts: 3,
        agent: None,
        started_at: 0,
    };
    assert!(d.check_running(&c, &links, &[running], 60_000).is_empty());
}

#[test]
fn metric_high_per_attempt_and_per_day() {
    const DAY: i64 = 86_400_000;
    let c = config(
        "  - { name: costly-run, event: metric_high, metric: api_cost_usd, above: 0.5, per: attempt, channels: [hook] }\n\
         \x20 - { name: daily-budget, event: metric_high, metric: api_cost_usd, above: 1, channels: [hook] }\n",
    );
    let links = Links::default();
    let mut d = Detector::new();
    assert!(
        d.on_fact(&c, &links, &reporting("enrich", 1, DAY + 1, 0.4, 1))
            .is_empty()
    );
    assert!(
        d.on_fact(&c, &links, &reporting("enrich", 2, DAY + 2, 0.4, 1))
            .is_empty()
    );
    let a = d.on_fact(&c, &links, &reporting("enrich", 3, DAY + 3, 0.6, 1));
    assert_eq!(
        titles(&a),
        [
            "metric_high: enrich api_cost_usd attempt 3 reported 0.6",
            "metric_high: enrich api_cost_usd reached today (UTC) 1.4"
        ]
    );
    assert_eq!(a[1].rule.as_deref(), Some("daily-budget"));
    let again = d.on_fact(&c, &links, &reporting("enrich", 4, DAY + 4, 0.2, 1));
    assert!(again.is_empty(), "once per day: {:?}", titles(&again));
    assert!(
        d.on_fact(&c, &links, &reporting("other", 1, DAY + 5, 0.45, 1))
            .is_empty(),
        "sums are per job"
    );
    let next_day = d.on_fact(&c, &links, &reporting("enrich", 5, 2 * DAY + 1, 0.5, 1));
    assert!(next_day.is_empty(), "a new day starts from zero");
    assert!(
        d.on_fact(&c, &links, &reporting("enrich", 6, 2 * DAY + 2, 0.5, 1))
            .is_empty(),
        "at the limit is not above it"
    );
    let a = d.on_fact(&c, &links, &reporting("enrich", 7, 2 * DAY + 3, 0.1, 1));
    assert_eq!(titles(&a), ["metric_high: enrich api_cost_usd reached today (UTC) 1.1"]);
}

#[test]
fn metric_high_per_day_goes_on_from_the_stored_sum() {
    const DAY: i64 = 86_400_000;
    let c = config("  - { name: budget, event: metric_high, metric: api_cost_usd, above: 1, channels: [hook] }\n");
    let links = Links::default();
    let mut d = Detector::new();
    // Before a restart, today's attempts reported 0.9.
    d.seed_day_sums(1, vec![("enrich".into(), "api_cost_usd".into(), 0.9)]);
    let a = d.on_fact(&c, &links, &reporting("enrich", 1, DAY + 10, 0.2, 1));
    assert_eq!(titles(&a), ["metric_high: enrich api_cost_usd reached today (UTC) 1.1"]);
}

fn leader_changed(previous: bool, at: i64) -> Fact {
    use crate::alerting::facts::{LeaderChange, LeaderFact, PreviousLeader};
    Fact::LeaderChanged(LeaderFact {
        change: LeaderChange {
            id: "c2".into(),
            address: "http://10.0.0.2:7070".into(),
            epoch: 3,
            since: 1_714_564_800_000,
            previous: previous.then(|| PreviousLeader {
                id: "c1".into(),
                address: "http://10.0.0.1:7070".into(),
                epoch: 2,
                since: 1_714_561_200_000,
            }),
        },
        at,
    })
}

/// `leader_changed` names both leaders and the epoch, is not about a job
/// (no job, priority or run), and goes through the rule's throttle, one
/// window per rule.
#[test]
fn a_change_of_leader_alerts_with_both_leaders_once_per_window() {
    use crate::alerting::throttle::{Decision, Throttle};
    let c = config(
        "  - { name: leader, event: leader_changed, channels: [hook], throttle: 1h }\n\
         \x20 - { name: agents, event: agent_lost, channels: [hook] }\n",
    );
    let links = Links::new(Some("http://ui".into()));
    let mut d = Detector::new();
    let a = d.on_fact(&c, &links, &leader_changed(true, 1_714_564_800_500));
    assert_eq!(titles(&a), ["leader_changed: c2 leads now (epoch 3); c1 led before"]);
    let alert = &a[0];
    assert_eq!(alert.rule.as_deref(), Some("leader"));
    assert_eq!(alert.event, Some(Event::LeaderChanged));
    assert_eq!(alert.kind, AlertKind::Alert);
    assert_eq!(alert.at, 1_714_564_800_500);
    assert!(alert.job.is_none() && alert.priority.is_none() && alert.run_id.is_none() && alert.link.is_none());
    assert_eq!(
        alert.text,
        "Controller c2 (http://10.0.0.2:7070) took the leadership lease at 2024-05-01T12:00:00.000Z and leads \
         in epoch 3. c1 (http://10.0.0.1:7070) led before, in epoch 2 since 2024-05-01T11:00:00.000Z. \
         Agents and workerctl find the new leader by themselves."
    );
    let details: Vec<(&str, &str)> = alert.details.iter().map(|(l, v)| (l.as_str(), v.as_str())).collect();
    assert_eq!(
        details,
        [
            ("Leader", "c2"),
            ("Leader address", "http://10.0.0.2:7070"),
            ("Epoch", "3"),
            ("Leading since", "2024-05-01T12:00:00.000Z"),
            ("Previous leader", "c1"),
            ("Previous address", "http://10.0.0.1:7070"),
        ]
    );
    let leader = alert.leader.as_ref().expect("the change is carried");
    assert_eq!((leader.id.as_str(), leader.epoch), ("c2", 3));
    assert_eq!(leader.previous.as_ref().map(|p| p.id.as_str()), Some("c1"));

    // The previous term not on record: said so, no previous details.
    let a = d.on_fact(&c, &links, &leader_changed(false, 1_714_564_800_500));
    assert_eq!(
        titles(&a),
        ["leader_changed: c2 leads now (epoch 3); the previous leader is not on record"]
    );
    assert!(!a[0].details.iter().any(|(l, _)| l.starts_with("Previous")));
    assert!(a[0].leader.as_ref().unwrap().previous.is_none());

    // Throttled like the others: one window for the rule (no job).
    let rule = &c.rules[0];
    let mut throttle = Throttle::new();
    let decisions: Vec<Decision> = [0, 60_000, 3_600_000]
        .into_iter()
        .flat_map(|at| d.on_fact(&c, &links, &leader_changed(true, at)))
        .map(|alert| throttle.offer(rule, alert.job.as_deref(), alert.at))
        .collect();
    assert_eq!(decisions, [Decision::Send, Decision::Suppress, Decision::Send]);

    // Without a rule for it, nothing.
    let none = config("  - { name: agents, event: agent_lost, channels: [hook] }\n");
    assert!(d.on_fact(&none, &links, &leader_changed(true, 0)).is_empty());
}
