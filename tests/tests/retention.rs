//! History retention end to end: a real controller and agent, pruning (by
//! the background loop every second and by `workerctl runs prune`) while
//! thousands of runs are enqueued and finished, and a `WatchEvents` client
//! whose run is pruned while it follows.

use std::collections::HashSet;
use std::time::Duration;

use tokio_stream::StreamExt;
use worker_proto::v1 as pb;
use worker_tests::{Controller, TestEnv, wait_for};

/// `quick` keeps its finished runs 2 s and at most 300 of them; `held` can
/// never run (no agent has its label), so its runs stay queued however old.
const CONFIG: &str = r#"
jobs:
  quick:
    builtin: { name: noop }
    retention: { max_age: 2s, max_runs: 300 }
  held:
    builtin: { name: noop }
    selector: { pool: nowhere }
    retention: { max_age: 1s }
  counted:
    builtin: { name: noop }
    retention: { max_runs: 1 }
"#;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {rfc3339:?}: {e}"))
        .timestamp_millis()
}

async fn enqueue_batch(ctl: &Controller, job: &str, n: usize, delay_ms: u64) -> Vec<String> {
    let batch = pb::EnqueueBatchRequest {
        runs: (0..n)
            .map(|_| pb::EnqueueRequest {
                job: job.into(),
                delay_ms,
                ..Default::default()
            })
            .collect(),
    };
    ctl.client()
        .await
        .enqueue_batch(batch)
        .await
        .expect("EnqueueBatch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.run.expect("run").id)
        .collect()
}

async fn runs_of(ctl: &Controller, job: &str) -> Vec<pb::Run> {
    ctl.client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: job.into(),
            state: String::new(),
            limit: 1000,
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
}

fn is_finished(state: &str) -> bool {
    matches!(state, "succeeded" | "dead" | "cancelled")
}

/// Prunes run while 4,000 runs are enqueued and finished; afterwards no
/// finished run of `quick` is older than its 2 s (nor more than 300 of
/// them), and every unfinished run (queued `held` runs, `quick` runs
/// scheduled an hour ahead) is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_during_a_burn_down_keeps_unfinished_runs_and_limits_finished_ones() {
    burn_down(TestEnv::new()).await;
}

/// The same on PostgreSQL (its own prune queries, row locks and cascades).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_during_a_burn_down_on_postgres() {
    let Some(db) = worker_tests::pg::fresh_database().await else {
        return;
    };
    burn_down(TestEnv::new().with_db(&db.url)).await;
    db.drop_now().await;
}

async fn burn_down(env: TestEnv) {
    env.write_config(CONFIG);
    let ctl = env.start_controller_with(&["--retention-interval", "1s"]).await;
    let _agent = env.start_agent(&ctl, "burner", 16).await;

    let held = enqueue_batch(&ctl, "held", 50, 0).await;
    let later = enqueue_batch(&ctl, "quick", 50, 3_600_000).await;
    // Until they are past their 1-2 s limits, were they finished (by the
    // runs' own creation instants): pruning must still leave them alone.
    wait_for(
        "the unfinished runs to be older than 2 s",
        Duration::from_secs(30),
        || async {
            let now = chrono::Utc::now().timestamp_millis();
            let runs = [runs_of(&ctl, "held").await, runs_of(&ctl, "quick").await].concat();
            let youngest = runs.iter().map(|r| ms(&r.created_at)).max().unwrap_or(i64::MAX);
            if runs.len() == 100 && now - youngest > 2_100 {
                Ok(())
            } else {
                Err(format!("{} runs, the youngest {} ms old", runs.len(), now - youngest))
            }
        },
    )
    .await;

    // The burn-down, with `runs prune` called over and over meanwhile (the
    // background loop prunes every second too).
    let enqueued = std::sync::atomic::AtomicBool::new(false);
    let burn = async {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.extend(enqueue_batch(&ctl, "quick", 1000, 0).await);
        }
        enqueued.store(true, std::sync::atomic::Ordering::SeqCst);
        ids
    };
    // Prunes back to back until the burn-down is over, within a deadline
    // (what was last seen is kept outside the loop for the panic message).
    let last_seen = std::sync::Mutex::new(String::from("no prune answered yet"));
    let prune_loop = async {
        let (mut deleted, mut calls) = (0u64, 0u32);
        let burned_down = async {
            loop {
                let out = ctl.cli_json(&["runs", "prune", "--job", "quick"]).await;
                calls += 1;
                deleted += out["jobs"]
                    .as_array()
                    .expect("jobs")
                    .iter()
                    .map(|j| j["total"].as_u64().expect("total"))
                    .sum::<u64>();
                let stats = ctl
                    .client()
                    .await
                    .queue_stats(pb::QueueStatsRequest {})
                    .await
                    .expect("QueueStats")
                    .into_inner();
                let all_in = enqueued.load(std::sync::atomic::Ordering::SeqCst);
                *last_seen.lock().unwrap() = format!(
                    "{calls} prunes, all enqueued {all_in}, running {}, queued {}",
                    stats.running, stats.queued
                );
                if all_in && stats.running == 0 && stats.queued == held.len() as u64 {
                    return;
                }
            }
        };
        let deadline = Duration::from_secs(180);
        if tokio::time::timeout(deadline, burned_down).await.is_err() {
            panic!(
                "timed out after {deadline:?} pruning while waiting for the burn-down to finish; last seen: {}",
                last_seen.lock().unwrap()
            );
        }
        (calls, deleted)
    };
    let (ids, (calls, deleted_by_cli)) = tokio::join!(burn, prune_loop);
    assert_eq!(ids.len(), 4000);
    wait_for("the burn-down to finish", Duration::from_secs(120), || async {
        let stats = ctl
            .client()
            .await
            .queue_stats(pb::QueueStatsRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if stats.running == 0 && stats.queued == held.len() as u64 {
            Ok(())
        } else {
            Err(format!("running {}, queued {}", stats.running, stats.queued))
        }
    })
    .await;

    // A last prune (dry run first: it counts what the prune deletes).
    let before = chrono::Utc::now().timestamp_millis();
    let dry = ctl.cli_json(&["runs", "prune", "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    let done = ctl.cli_json(&["runs", "prune"]).await;
    assert_eq!(done["dry_run"], false);
    let runs = runs_of(&ctl, "quick").await;
    let finished: Vec<&pb::Run> = runs.iter().filter(|r| is_finished(&r.state)).collect();
    assert!(
        finished.len() <= 300,
        "{} finished runs kept (max_runs 300)",
        finished.len()
    );
    for run in &finished {
        let at = ms(&run.finished_at);
        assert!(
            at >= before - 2_000 - 1_000,
            "run {} finished at {} is past its 2s limit at the prune ({before})",
            run.id,
            run.finished_at
        );
    }
    // Every unfinished run is still there, as it was.
    let scheduled: HashSet<&str> = runs
        .iter()
        .filter(|r| r.state == "scheduled")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        scheduled,
        later.iter().map(String::as_str).collect(),
        "scheduled runs untouched"
    );
    let held_now = runs_of(&ctl, "held").await;
    assert_eq!(held_now.len(), held.len());
    assert!(
        held_now.iter().all(|r| r.state == "queued" && r.attempts.is_empty()),
        "{held_now:?}"
    );
    let kept: usize = finished.len();
    eprintln!(
        "[retention] 4000 runs burnt; {calls} prune calls deleted {deleted_by_cli} meanwhile; {kept} finished runs kept"
    );
}

/// A client follows a run's events; the run is pruned (`max_runs: 1`: the
/// next run pushes it out); resuming from the client's cursor neither fails
/// nor repeats anything, and a reader from the start no longer sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_following_a_pruned_run_stays_consistent() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "one", 2).await;

    let mut events = ctl
        .client()
        .await
        .watch_events(pb::WatchEventsRequest {
            jobs: vec!["counted".into()],
            from_start: true,
            ..Default::default()
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let first = ctl.cli_enqueue("counted", &[]).await;
    let mut received: Vec<pb::RunEvent> = Vec::new();
    while !received.iter().any(|e| e.run_id == first && e.state == "succeeded") {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event within 30s")
            .expect("stream open")
            .expect("event");
        received.push(e);
    }
    assert_eq!(
        received.iter().map(|e| e.state.as_str()).collect::<Vec<_>>(),
        vec!["queued", "running", "succeeded"]
    );
    let cursor = received.last().unwrap().seq;
    drop(events);

    let second = ctl.cli_enqueue("counted", &[]).await;
    ctl.wait_run(&second, Duration::from_secs(30)).await;
    let pruned = ctl.cli_json(&["runs", "prune", "--job", "counted"]).await;
    assert_eq!(pruned["jobs"][0]["job"], "counted", "{pruned:#}");
    assert_eq!(pruned["jobs"][0]["succeeded"], 1, "{pruned:#}");
    let gone = ctl.cli(&["runs", "get", &first]).await;
    assert_ne!(gone.code, 0, "the first run is pruned");

    // Resuming after the cursor: the second run's events, nothing of the first again.
    let mut events = ctl
        .client()
        .await
        .watch_events(pb::WatchEventsRequest {
            jobs: vec!["counted".into()],
            after_seq: cursor,
            ..Default::default()
        })
        .await
        .expect("WatchEvents from the cursor")
        .into_inner();
    let mut resumed: Vec<pb::RunEvent> = Vec::new();
    while !resumed.iter().any(|e| e.run_id == second && e.state == "succeeded") {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event within 30s")
            .expect("stream open")
            .expect("event");
        assert!(e.seq > cursor && e.run_id == second, "{e:?}");
        resumed.push(e);
    }
    assert_eq!(resumed.len(), 3);

    // A cursor inside the pruned run's events is no error either.
    let mut events = ctl
        .client()
        .await
        .watch_events(pb::WatchEventsRequest {
            after_seq: received[0].seq,
            ..Default::default()
        })
        .await
        .expect("WatchEvents from a pruned event")
        .into_inner();
    let e = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("an event within 30s")
        .expect("stream open")
        .expect("event");
    assert_eq!(e.run_id, second, "the next stored event: {e:?}");
}

/// A deleted job's finished runs go by the controller's default
/// (`--retention-max-age`): its own `retention:` went with its definition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_jobs_history_goes_by_the_default() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  kept:\n    builtin: { name: noop }\n");
    let ctl = env
        .start_controller_with(&["--retention-interval", "1s", "--retention-max-age", "1h"])
        .await;
    let _agent = env.start_agent(&ctl, "a", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doomed.yaml");
    std::fs::write(&doc, "jobs:\n  doomed:\n    builtin: { name: noop }\n").unwrap();
    ctl.cli(&["apply", "-f", doc.to_str().unwrap()]).await.expect_code(0);
    let doomed = enqueue_batch(&ctl, "doomed", 3, 0).await;
    wait_for("three finished runs", Duration::from_secs(30), || async {
        let done = runs_of(&ctl, "doomed")
            .await
            .iter()
            .filter(|r| r.state == "succeeded")
            .count();
        if done == 3 {
            Ok(())
        } else {
            Err(format!("{done} succeeded"))
        }
    })
    .await;
    ctl.cli(&["jobs", "delete", "doomed"]).await.expect_code(0);
    // An hour is far off: a dry run of the default finds nothing yet.
    let dry = ctl.cli_json(&["runs", "prune", "--dry-run"]).await;
    assert!(dry["jobs"].as_array().unwrap().is_empty(), "{dry}");
    drop(ctl);

    // The same store with a default of one second: the deleted job's runs go.
    let ctl = env
        .start_controller_with(&["--retention-interval", "1s", "--retention-max-age", "1s"])
        .await;
    wait_for("the deleted job's runs pruned", Duration::from_secs(30), || async {
        let left = runs_of(&ctl, "doomed").await.len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} runs of doomed left"))
        }
    })
    .await;
    let mut client = ctl.client().await;
    for id in &doomed {
        let err = client
            .get_run(pb::GetRunRequest { id: id.clone() })
            .await
            .expect_err("pruned");
        assert_eq!(err.code(), tonic::Code::NotFound, "{id}");
    }
}
