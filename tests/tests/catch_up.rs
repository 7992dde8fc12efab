//! Catch-up of schedule fires missed while the controller was down, once per
//! policy (`skip`, `latest`, `all` with `max_catch_up`), and `catch_up_window`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use worker_proto::v1 as pb;
use worker_tests::flow::{fires_between, runs_of, schedule_json, ts, u64_field};
use worker_tests::json::opt_str;
use worker_tests::{TestEnv, parse_ts, wait_for};

/// The schedule fires every STEP seconds.
const STEP: i64 = 2;

/// Waits (20 s at most) until `job` has a run scheduled for `at` or later.
async fn wait_for_fire_at_or_after(ctl: &worker_tests::Controller, job: &str, at: DateTime<Utc>) {
    wait_for(
        &format!("a run of {job} scheduled for {at} or later"),
        Duration::from_secs(20),
        || async {
            let runs = runs_of(ctl, job).await;
            if runs.iter().any(|r| ts("scheduled_for", &r.scheduled_for) >= at) {
                Ok(())
            } else {
                Err(format!("{} runs", runs.len()))
            }
        },
    )
    .await;
}

/// Starts a controller and an agent with a `*/2 * * * * *` job using `policy`,
/// lets it fire, stops the controller for at least three fires, restarts it on
/// the same database and checks what happened to the missed fires.
///
/// `keep` is how many of the newest missed fires must run (0 for skip, 1 for
/// latest, max_catch_up for all).
async fn catch_up_across_restart(policy_yaml: &str, keep: usize) {
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
jobs:
  tick:
    schedule: "*/2 * * * * *"
    builtin: noop
    retry: {{ max_attempts: 1 }}
{policy_yaml}
"#
    ));
    let mut ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "steady", 4).await;

    // The schedule has fired once: its cursor exists.
    let before = wait_for(
        "a first fire of tick (last_fired set)",
        Duration::from_secs(10),
        || async {
            let s = schedule_json(&ctl, "tick").await;
            match opt_str(&s, "last_fired") {
                Some(_) => Ok(s),
                None => Err(format!("{s:#}")),
            }
        },
    )
    .await;
    assert_eq!(
        u64_field(&before, "missed"),
        0,
        "missed before any downtime: {before:#}"
    );

    // Stop the controller gracefully; the agent stays and reconnects later.
    let addr = ctl.addr;
    let status = ctl.proc.terminate(Duration::from_secs(15));
    assert!(status.success(), "controller exited with {status} on SIGTERM");
    let stopped_at = Utc::now();
    drop(ctl);

    // Let at least three fire instants pass while the controller is down. This
    // wait is wall-clock time by nature (nothing runs that could be awaited).
    // The cursor is read back after the restart (the newest run created
    // before the stop); last_fired seen before the stop is a lower bound of it.
    let cursor_lower = parse_ts("last_fired", opt_str(&before, "last_fired").unwrap());
    // Any fire before the stop was handled by then, so the cursor is at most
    // the last fire instant <= stopped_at.
    let cursor_upper = fires_between(STEP, cursor_lower - chrono::Duration::seconds(STEP), stopped_at)
        .last()
        .copied()
        .unwrap_or(cursor_lower);
    // Restart half-way between two fires (odd second + ~100 ms), so the
    // restart instant is far from a fire boundary.
    let third = cursor_upper + chrono::Duration::seconds(3 * STEP);
    let restart_target = third + chrono::Duration::milliseconds(1100);
    let wait = (restart_target - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;

    let restart_at = Utc::now();
    let ctl = env.start_controller_on(addr).await;
    let ready_at = Utc::now();
    // The old agent reconnects with a backoff; a fresh one runs the catch-up sooner.
    let _fresh = env.start_agent(&ctl, "fresh", 4).await;

    // Wait until a normal fire after the restart has created its run.
    let first_normal = fires_between(
        STEP,
        ready_at + chrono::Duration::seconds(1),
        ready_at + chrono::Duration::seconds(10),
    )[0];
    let wanted = first_normal;
    wait_for_fire_at_or_after(&ctl, "tick", wanted).await;
    let sched = schedule_json(&ctl, "tick").await;
    let missed = u64_field(&sched, "missed") as usize;
    let runs = runs_of(&ctl, "tick").await;

    // No (job, scheduled_for) twice across the whole history; all scheduled.
    let mut by_instant: BTreeMap<DateTime<Utc>, String> = BTreeMap::new();
    for r in &runs {
        assert_eq!(r.trigger, "schedule", "{r:?}");
        let at = ts("scheduled_for", &r.scheduled_for);
        if let Some(other) = by_instant.insert(at, r.id.clone()) {
            panic!("two runs for instant {at}: {other} and {}\nall runs: {runs:#?}", r.id);
        }
    }
    // The cursor before the stop: the newest instant with a run created before the stop.
    let cursor = runs
        .iter()
        .filter(|r| ts("created_at", &r.created_at) <= stopped_at)
        .map(|r| ts("scheduled_for", &r.scheduled_for))
        .max()
        .expect("runs before the stop");
    assert!(
        cursor >= cursor_lower && cursor <= cursor_upper,
        "cursor {cursor} outside [{cursor_lower}, {cursor_upper}]"
    );
    // Fires surely missed: the controller was down during (cursor, restart_at].
    let down = fires_between(STEP, cursor, restart_at);
    assert!(down.len() >= 3, "only {} fires while down: {down:?}", down.len());
    let end = *by_instant.keys().last().unwrap();

    // What the controller counted as missed at start-up is (cursor, S] with S
    // its start-up instant, between restart_at and ready_at (+ slack). So the
    // set of handled-at-start fires is `down`, or `down` plus a fire that fell
    // during the start-up.
    let mut candidates = vec![down.clone()];
    if let Some(&boundary) = fires_between(STEP, restart_at, ready_at + chrono::Duration::milliseconds(1000)).first() {
        let mut h = down.clone();
        h.push(boundary);
        candidates.push(h);
    }
    let labels = |v: &[DateTime<Utc>]| v.iter().map(|t| t.format("%H:%M:%S").to_string()).collect::<Vec<_>>();
    let mut verdicts = Vec::new();
    let ok = candidates.iter().any(|handled| {
        let expected_runs: BTreeSet<DateTime<Utc>> = handled[handled.len() - keep.min(handled.len())..].iter().copied().collect();
        let actual_runs: BTreeSet<DateTime<Utc>> = handled.iter().filter(|t| by_instant.contains_key(t)).copied().collect();
        let expected_missed = handled.len() - expected_runs.len();
        // Every fire after the handled ones, up to the newest run, ran normally.
        let last = *handled.last().unwrap();
        let normal = fires_between(STEP, last, end);
        let gaps: Vec<_> = normal.iter().filter(|t| !by_instant.contains_key(t)).copied().collect();
        let good = actual_runs == expected_runs && missed == expected_missed && gaps.is_empty();
        verdicts.push(format!(
            "handled {:?}: runs expected {:?}, got {:?}; missed expected {expected_missed}, got {missed}; normal fires without run {:?}",
            labels(handled),
            labels(&expected_runs.iter().copied().collect::<Vec<_>>()),
            labels(&actual_runs.iter().copied().collect::<Vec<_>>()),
            labels(&gaps)
        ));
        good
    });
    assert!(
        ok,
        "catch-up (keep {keep}) wrong; cursor {cursor}, restart {restart_at}, ready {ready_at}:\n{}\nschedule: {sched:#}\nruns: {:?}",
        verdicts.join("\n"),
        by_instant
            .iter()
            .map(|(k, v)| format!("{} {v}", k.format("%H:%M:%S")))
            .collect::<Vec<_>>()
    );
    // Conservation: every fire in (cursor, end] has exactly one run or is counted missed.
    let total = fires_between(STEP, cursor, end).len();
    let ran = by_instant.keys().filter(|t| **t > cursor && **t <= end).count();
    assert_eq!(
        ran + missed,
        total,
        "runs {ran} + missed {missed} != fires {total} in ({cursor}, {end}]"
    );

    // Caught-up runs were created after the restart, and they run.
    for r in &runs {
        let at = ts("scheduled_for", &r.scheduled_for);
        if down.contains(&at) {
            assert!(ts("created_at", &r.created_at) >= restart_at, "{r:?}");
            let done = ctl.wait_run(&r.id, Duration::from_secs(20)).await;
            assert_eq!(done.state, "succeeded", "{done:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_skip_counts_missed_fires_and_runs_none() {
    catch_up_across_restart("    catch_up: skip\n", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_latest_runs_the_newest_missed_fire_once() {
    catch_up_across_restart("    catch_up: latest\n", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_all_runs_the_newest_max_catch_up_fires() {
    catch_up_across_restart("    catch_up: all\n    max_catch_up: 2\n", 2).await;
}

/// `catch_up_window` of the job below, in seconds.
const WINDOW_S: i64 = 4;

/// `catch_up: all` (with room for every missed fire) and `catch_up_window:
/// 4s`, after about ten seconds down: the missed fires at most four seconds
/// older than the controller's start-up are run, once each; the older ones
/// are counted as missed and never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_window_runs_only_the_recent_missed_fires() {
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
jobs:
  tick:
    schedule: "* * * * * *"
    builtin: noop
    retry: {{ max_attempts: 1 }}
    catch_up: all
    max_catch_up: 100
    catch_up_window: {WINDOW_S}s
"#
    ));
    let mut ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "steady", 4).await;
    let job = ctl.cli_json(&["jobs", "get", "tick"]).await;
    assert_eq!(u64_field(&job, "catch_up_window_ms"), WINDOW_S as u64 * 1000, "{job:#}");
    wait_for(
        "a first fire of tick (last_fired set)",
        Duration::from_secs(10),
        || async {
            let s = schedule_json(&ctl, "tick").await;
            match opt_str(&s, "last_fired") {
                Some(_) => Ok(()),
                None => Err(format!("{s:#}")),
            }
        },
    )
    .await;

    let addr = ctl.addr;
    let status = ctl.proc.terminate(Duration::from_secs(15));
    assert!(status.success(), "controller exited with {status} on SIGTERM");
    let stopped_at = Utc::now();
    drop(ctl);
    // Down for about ten fires: wall-clock time by nature (nothing runs that
    // could be awaited); more than twice the window, so fires both inside
    // and outside it are missed.
    tokio::time::sleep(Duration::from_millis(10_300)).await;

    let restart_at = Utc::now();
    let ctl = env.start_controller_on(addr).await;
    let ready_at = Utc::now();
    let _fresh = env.start_agent(&ctl, "fresh", 4).await;

    // Catch-up happens before the schedule's first normal fire: wait for one.
    let normal = ready_at + chrono::Duration::seconds(2);
    wait_for_fire_at_or_after(&ctl, "tick", normal).await;
    let sched = schedule_json(&ctl, "tick").await;
    let missed = u64_field(&sched, "missed") as usize;
    let runs = runs_of(&ctl, "tick").await;
    let mut by_instant: BTreeMap<DateTime<Utc>, pb::Run> = BTreeMap::new();
    for r in &runs {
        let at = ts("scheduled_for", &r.scheduled_for);
        if let Some(other) = by_instant.insert(at, r.clone()) {
            panic!("two runs for instant {at}: {} and {}", other.id, r.id);
        }
    }
    let cursor = runs
        .iter()
        .filter(|r| ts("created_at", &r.created_at) <= stopped_at)
        .map(|r| ts("scheduled_for", &r.scheduled_for))
        .max()
        .expect("runs before the stop");
    // Fires surely missed: the controller was down during (cursor, restart_at].
    let down = fires_between(1, cursor, restart_at);
    assert!(down.len() >= 9, "only {} fires while down: {down:?}", down.len());
    let caught: Vec<&pb::Run> = down.iter().filter_map(|t| by_instant.get(t)).collect();
    let label = |t: &DateTime<Utc>| t.format("%H:%M:%S").to_string();
    let report = format!(
        "cursor {cursor}, restart {restart_at}, ready {ready_at}; down {:?}; caught {:?}; missed {missed}",
        down.iter().map(label).collect::<Vec<_>>(),
        caught
            .iter()
            .map(|r| format!("{} (created {})", label(&ts("s", &r.scheduled_for)), r.created_at))
            .collect::<Vec<_>>()
    );
    assert!(!caught.is_empty(), "no missed fire was caught up: {report}");
    for r in &caught {
        assert!(ts("created_at", &r.created_at) >= restart_at, "{r:?}\n{report}");
    }
    // The catch-up judged the window at an instant between the restart and
    // the creation of its first run.
    let judged_by = caught.iter().map(|r| ts("created_at", &r.created_at)).min().unwrap();
    let window = chrono::Duration::seconds(WINDOW_S);
    for t in &down {
        if *t < restart_at - window {
            assert!(
                !by_instant.contains_key(t),
                "fire {} older than the window was run: {report}",
                label(t)
            );
        }
        if *t >= judged_by - window {
            assert!(
                by_instant.contains_key(t),
                "fire {} within the window was not run: {report}",
                label(t)
            );
        }
    }
    assert!(
        caught.len() < down.len(),
        "every missed fire ran, none was outside the window: {report}"
    );
    // The fires not run are the ones counted as missed (fires after the
    // restart, if the catch-up saw any, are within the window: they ran).
    assert_eq!(missed, down.len() - caught.len(), "{report}");
    // Every fire after the catch-up ran normally.
    let end = *by_instant.keys().last().unwrap();
    let gaps: Vec<_> = fires_between(1, restart_at, end)
        .into_iter()
        .filter(|t| !by_instant.contains_key(t))
        .map(|t| label(&t))
        .collect();
    assert!(
        gaps.is_empty(),
        "fires after the restart without a run: {gaps:?}\n{report}"
    );
    for r in caught {
        let done = ctl.wait_run(&r.id, Duration::from_secs(20)).await;
        assert_eq!(done.state, "succeeded", "{done:?}");
    }
}
