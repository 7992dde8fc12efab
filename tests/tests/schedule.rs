//! Cron schedules with seconds, in a time zone with a half-hour offset.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Timelike, Utc};
use worker_proto::v1 as pb;
use worker_tests::{Controller, TestEnv, parse_ts, wait_for};

/// Runs of `job` created by its schedule.
async fn scheduled_runs(ctl: &Controller, job: &str) -> Result<Vec<pb::Run>, String> {
    let runs = ctl
        .client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: job.into(),
            state: String::new(),
            limit: 100,
        })
        .await
        .map_err(|e| format!("ListRuns: {e}"))?
        .into_inner()
        .runs;
    for r in &runs {
        assert_eq!(r.job, job, "ListRuns filtered by job returned {r:?}");
    }
    Ok(runs.into_iter().filter(|r| r.trigger == "schedule").collect())
}

/// The schedule of `job` as `ListSchedules` reports it.
async fn schedule_of(ctl: &Controller, job: &str) -> pb::Schedule {
    let schedules = ctl
        .client()
        .await
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .expect("ListSchedules")
        .into_inner()
        .schedules;
    schedules
        .iter()
        .find(|s| s.job == job)
        .unwrap_or_else(|| panic!("schedule missing: {schedules:?}"))
        .clone()
}

/// `S M H * * *` in Asia/Kolkata (UTC+05:30) fires at that local instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_with_seconds_in_kolkata_fires_at_the_local_instant() {
    let env = TestEnv::new();
    let tz = chrono_tz::Asia::Kolkata;
    let target: DateTime<Utc> = (Utc::now() + chrono::Duration::seconds(6)).trunc_subsecs(0);
    let local = target.with_timezone(&tz);
    let cron = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
    // The default zone differs, so a scheduler ignoring the job's zone misses.
    env.write_config(&format!(
        r#"
defaults:
  timezone: Europe/Berlin
jobs:
  kolkata.daily:
    schedule: "{cron}"
    timezone: Asia/Kolkata
    builtin: noop
"#
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "clock", 1).await;

    if Utc::now() + chrono::Duration::milliseconds(300) < target {
        let s = schedule_of(&ctl, "kolkata.daily").await;
        assert_eq!(s.timezone, "Asia/Kolkata", "{s:?}");
        assert_eq!(parse_ts("next_fire", &s.next_fire), target, "{s:?}");
        assert!(s.next_fire_local.ends_with("+05:30"), "next_fire_local {s:?}");
        assert_eq!(parse_ts("next_fire_local", &s.next_fire_local), target, "{s:?}");
    } else {
        panic!("controller and agent took more than 5.7s to start; the fire at {target} cannot be tested");
    }

    let left = (target - Utc::now()).to_std().unwrap_or_default();
    let runs = wait_for(
        &format!("a scheduled run of kolkata.daily ({cron} Asia/Kolkata = {target})"),
        left + Duration::from_secs(6),
        || async {
            scheduled_runs(&ctl, "kolkata.daily")
                .await
                .and_then(|r| if r.is_empty() { Err("none".into()) } else { Ok(r) })
        },
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(parse_ts("scheduled_for", &run.scheduled_for), target, "{run:?}");
    let created = parse_ts("created_at", &run.created_at);
    let late = created - target;
    assert!(
        late >= chrono::Duration::zero() && late <= chrono::Duration::milliseconds(1500),
        "run created {}ms after its fire instant {target}: {run:?}",
        late.num_milliseconds()
    );
    let done = ctl.wait_run(&run.id, Duration::from_secs(10)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");

    // The CLI shows the same instant in UTC.
    let json = ctl.cli_run(&run.id).await;
    let sf = worker_tests::json::str_field(&json, "scheduled_for");
    assert!(
        sf.ends_with('Z') || sf.ends_with("+00:00"),
        "scheduled_for not UTC: {sf}"
    );
    assert_eq!(parse_ts("scheduled_for", sf), target);
    assert_eq!(worker_tests::json::str_field(&json, "trigger"), "schedule");

    // Daily: the next fire is the same local time tomorrow, and only one run exists.
    let s = schedule_of(&ctl, "kolkata.daily").await;
    assert_eq!(
        parse_ts("next_fire", &s.next_fire),
        target + chrono::Duration::days(1),
        "{s:?}"
    );
    assert_eq!(parse_ts("last_fired", &s.last_fired), target, "{s:?}");
    assert_eq!(scheduled_runs(&ctl, "kolkata.daily").await.unwrap().len(), 1);
}

/// `*/2 * * * * *` fires on even seconds, once per instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_fires_on_even_seconds_without_duplicates() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  tick:
    schedule: "*/2 * * * * *"
    builtin: noop
    retry: { max_attempts: 1 }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "ticker", 2).await;

    let runs = wait_for("three scheduled runs of tick", Duration::from_secs(12), || async {
        let runs = scheduled_runs(&ctl, "tick").await?;
        if runs.len() >= 3 {
            Ok(runs)
        } else {
            Err(format!("{} runs: {runs:?}", runs.len()))
        }
    })
    .await;
    let mut instants = Vec::new();
    for r in &runs {
        let at = parse_ts("scheduled_for", &r.scheduled_for);
        assert_eq!(at.nanosecond(), 0, "fire instant with a fraction: {r:?}");
        assert_eq!(at.second() % 2, 0, "fire on an odd second: {r:?}");
        let late = parse_ts("created_at", &r.created_at) - at;
        assert!(
            late >= chrono::Duration::zero() && late <= chrono::Duration::milliseconds(1500),
            "run created {}ms after its instant: {r:?}",
            late.num_milliseconds()
        );
        instants.push(at);
    }
    let distinct: BTreeSet<_> = instants.iter().collect();
    assert_eq!(distinct.len(), instants.len(), "duplicate fires: {instants:?}");
    let sorted: Vec<_> = distinct.into_iter().collect();
    for w in sorted.windows(2) {
        assert_eq!(*w[1] - *w[0], chrono::Duration::seconds(2), "missed a fire: {sorted:?}");
    }
    for r in &runs[..2] {
        let done = ctl.wait_run(&r.id, Duration::from_secs(10)).await;
        assert_eq!(done.state, "succeeded", "{done:?}");
    }
}
