//! `overlap: forbid` skips fires while a run is unfinished; `overlap: replace`
//! cancels the unfinished run when the next fire comes.

use std::collections::BTreeSet;
use std::time::Duration;

use worker_tests::flow::{runs_of, schedule_json, span, ts, u64_field};
use worker_tests::{TestEnv, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_forbid_skips_fires_while_a_run_is_unfinished() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  long:
    schedule: "*/1 * * * * *"
    overlap: forbid
    builtin: { name: sleep, duration: 3s }
    retry: { max_attempts: 1 }
"#,
    );
    let ctl = env.start_controller().await;
    // Plenty of slots: only the overlap policy can keep runs apart.
    let _agent = env.start_agent(&ctl, "wide", 8).await;

    // Two runs finished (so the second started after the first ended) and fires skipped.
    let finished = wait_for("two finished runs of long", Duration::from_secs(20), || async {
        let runs = runs_of(&ctl, "long").await;
        let done: Vec<_> = runs.iter().filter(|r| r.state == "succeeded").cloned().collect();
        if done.len() >= 2 {
            Ok(done)
        } else {
            Err(format!("{runs:?}"))
        }
    })
    .await;
    let sched = schedule_json(&ctl, "long").await;
    let skipped = u64_field(&sched, "skipped");
    assert!(skipped >= 2, "a 3 s run of a 1 s schedule must skip fires: {sched:#}");
    assert_eq!(u64_field(&sched, "missed"), 0, "{sched:#}");

    let runs = runs_of(&ctl, "long").await;
    let instants: BTreeSet<_> = runs.iter().map(|r| r.scheduled_for.clone()).collect();
    assert_eq!(instants.len(), runs.len(), "duplicate fires: {runs:?}");
    // At most one unfinished run at any time.
    let unfinished: Vec<_> = runs.iter().filter(|r| !worker_tests::is_terminal(&r.state)).collect();
    assert!(unfinished.len() <= 1, "overlapping unfinished runs: {unfinished:?}");
    // The attempts never overlap: sorted by start, each starts after the previous ended.
    let mut spans: Vec<_> = finished
        .iter()
        .flat_map(|r| r.attempts.iter().map(move |a| (span(r, a), r.id.clone())))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        let ((_, end0), id0) = &w[0];
        let ((start1, _), id1) = &w[1];
        assert!(
            start1 >= end0,
            "run {id1} started at {start1} before run {id0} ended at {end0}"
        );
    }
    // Each run was created only after the previous one finished.
    let mut by_created: Vec<_> = runs.iter().collect();
    by_created.sort_by_key(|r| ts("created_at", &r.created_at));
    for w in by_created.windows(2) {
        if w[0].finished_at.is_empty() {
            panic!("run {} created while {} is unfinished: {runs:?}", w[1].id, w[0].id);
        }
        assert!(
            ts("created_at", &w[1].created_at) >= ts("finished_at", &w[0].finished_at),
            "run {} created before {} finished: {:?} / {:?}",
            w[1].id,
            w[0].id,
            w[1],
            w[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_replace_cancels_the_unfinished_run() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  long:
    schedule: "*/2 * * * * *"
    overlap: replace
    builtin: { name: sleep, duration: 30s }
    retry: { max_attempts: 1 }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 8).await;

    // A cancelled run, and the run of the next fire running.
    let (old, new) = wait_for(
        "a replaced run and its replacement running",
        Duration::from_secs(20),
        || async {
            let runs = runs_of(&ctl, "long").await;
            let old = runs
                .iter()
                .filter(|r| r.state == "cancelled")
                .min_by_key(|r| r.scheduled_for.clone());
            let Some(old) = old else {
                return Err(format!("no cancelled run: {runs:?}"));
            };
            let old_at = ts("scheduled_for", &old.scheduled_for);
            let next = runs
                .iter()
                .filter(|r| ts("scheduled_for", &r.scheduled_for) > old_at)
                .min_by_key(|r| r.scheduled_for.clone());
            match next {
                Some(n) if n.state == "running" || n.state == "cancelled" => Ok((old.clone(), n.clone())),
                other => Err(format!("replacement {other:?}; runs: {runs:?}")),
            }
        },
    )
    .await;
    let old = ctl.get_run(&old.id).await;
    let old_at = ts("scheduled_for", &old.scheduled_for);
    let new_at = ts("scheduled_for", &new.scheduled_for);
    assert_eq!(new_at - old_at, chrono::Duration::seconds(2), "{old:?}\n{new:?}");
    // It ran, and was cancelled when the next fire came (not before).
    assert_eq!(old.attempts.len(), 1, "{old:?}");
    assert_eq!(old.attempts[0].outcome, "cancelled", "{old:?}");
    let ended = ts("finished_at", &old.finished_at);
    assert!(
        ended >= new_at && ended <= new_at + chrono::Duration::milliseconds(1500),
        "replaced run ended at {ended}, the next fire is {new_at}: {old:?}"
    );
    // The replacement started (it runs, or was itself replaced by a later fire).
    let new = ctl.get_run(&new.id).await;
    assert!(!new.attempts.is_empty(), "replacement never started: {new:?}");
    let started = ts("started_at", &new.attempts[0].started_at);
    assert!(started >= new_at, "{new:?}");
    let runs = runs_of(&ctl, "long").await;
    let instants: BTreeSet<_> = runs.iter().map(|r| r.scheduled_for.clone()).collect();
    assert_eq!(instants.len(), runs.len(), "duplicate fires: {runs:?}");
    // The replaced run says why it was cancelled (checked last: the other
    // checks hold whatever the reason says).
    let json = ctl.cli_run(&old.id).await;
    let reason = worker_tests::json::opt_str(&json, "reason")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        reason.contains("replace"),
        "the reason of the replaced run should mention the replacement: {json:#}"
    );
}
