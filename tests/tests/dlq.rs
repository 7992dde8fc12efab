//! `workerctl dlq purge`: purged dead runs are deleted with their history
//! (gone from `dlq list`, `runs list` and `runs get`), the runs blocked behind
//! them are cancelled, and every other run is untouched.

use std::collections::BTreeSet;
use std::time::Duration;

use worker_tests::json::{self, str_field};
use worker_tests::{Controller, TestEnv, Value};

fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

/// Ids in `dlq list`.
async fn dlq(ctl: &Controller) -> BTreeSet<String> {
    set(json::ids(&ctl.cli_json(&["dlq", "list"]).await))
}

/// Ids in `runs list`.
async fn listed(ctl: &Controller) -> BTreeSet<String> {
    set(json::ids(&ctl.cli_json(&["runs", "list"]).await))
}

/// `run_ids` of a `dlq retry|purge` answer.
fn run_ids(v: &Value) -> BTreeSet<String> {
    set(json::arr(v, "run_ids").iter().map(|id| {
        id.as_str()
            .unwrap_or_else(|| panic!("run id not a string: {v:#}"))
            .to_string()
    }))
}

/// A run's state, attempts and transitions (what a purge of another run must
/// not change).
async fn snapshot(ctl: &Controller, id: &str) -> Value {
    let run = ctl.cli_run(id).await;
    let keep = ["id", "state", "reason", "finished_at", "attempts", "transitions"];
    Value::Object(
        keep.iter()
            .map(|k| (k.to_string(), run.get(*k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_purge_deletes_dead_runs_and_nothing_else() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  broken:
    shell: "echo broken >&2; exit 3"
  fine:
    builtin: noop
  follow:
    builtin: noop
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let mut dead = Vec::new();
    for _ in 0..3 {
        let id = ctl.cli_enqueue("broken", &[]).await;
        let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
        assert_eq!(run.state, "dead", "{run:?}");
        dead.push(id);
    }
    let (d1, d2, d3) = (&dead[0], &dead[1], &dead[2]);
    let ok = ctl.cli_enqueue("fine", &[]).await;
    assert_eq!(ctl.wait_run(&ok, Duration::from_secs(20)).await.state, "succeeded");
    let later = ctl.cli_enqueue("fine", &["--delay", "1h"]).await;
    let behind = ctl.cli_enqueue("follow", &["--depends-on", d2]).await;
    assert_eq!(ctl.get_run(&behind).await.state, "blocked");
    assert_eq!(dlq(&ctl).await, set(dead.clone()));
    let others = [ok.clone(), later.clone(), d2.clone(), d3.clone()];
    let mut before = Vec::new();
    for id in &others {
        before.push(snapshot(&ctl, id).await);
    }

    // One run: gone from the DLQ, the run list and `runs get`; nothing else changed.
    let out = ctl.cli_json(&["dlq", "purge", d1]).await;
    assert_eq!(run_ids(&out), set([d1.as_str()]), "{out:#}");
    assert_eq!(dlq(&ctl).await, set([d2.as_str(), d3.as_str()]));
    let all = listed(&ctl).await;
    assert!(!all.contains(d1), "purged run {d1} still listed: {all:?}");
    assert_eq!(all.len(), 5, "{all:?}");
    ctl.cli(&["runs", "get", d1]).await.expect_code(3);
    let broken = json::ids(&ctl.cli_json(&["runs", "list", "--job", "broken"]).await);
    assert_eq!(set(broken), set([d2.as_str(), d3.as_str()]));
    for (id, was) in others.iter().zip(&before) {
        assert_eq!(&snapshot(&ctl, id).await, was, "purging {d1} changed run {id}");
    }
    assert_eq!(ctl.get_run(&behind).await.state, "blocked");
    let stats = ctl.cli_json(&["queue", "stats"]).await;
    assert_eq!(stats["dead"], Value::from(2), "{stats:#}");

    // A purged run is not found again; a run that is not dead is refused.
    ctl.cli(&["dlq", "purge", d1]).await.expect_code(3);
    let out = ctl.cli(&["dlq", "purge", &ok]).await.expect_code(2);
    assert!(out.stderr.contains("dead-letter queue"), "{out:?}");
    assert_eq!(snapshot(&ctl, &ok).await, before[0]);

    // All of them: the run blocked behind a purged run is cancelled (it could
    // never start), the others stay as they were.
    let out = ctl.cli_json(&["dlq", "purge", "--all"]).await;
    assert_eq!(run_ids(&out), set([d2.as_str(), d3.as_str()]), "{out:#}");
    assert!(dlq(&ctl).await.is_empty());
    assert_eq!(listed(&ctl).await, set([ok.as_str(), later.as_str(), behind.as_str()]));
    for id in [d2, d3] {
        ctl.cli(&["runs", "get", id]).await.expect_code(3);
    }
    let cancelled = ctl.wait_run(&behind, Duration::from_secs(10)).await;
    assert_eq!(cancelled.state, "cancelled", "{cancelled:?}");
    assert!(cancelled.attempts.is_empty(), "{cancelled:?}");
    assert!(
        cancelled.reason.contains(d2.as_str()) && cancelled.reason.contains("purged"),
        "{cancelled:?}"
    );
    assert_eq!(snapshot(&ctl, &ok).await, before[0]);
    assert_eq!(snapshot(&ctl, &later).await, before[1]);
    assert_eq!(str_field(&ctl.cli_run(&later).await, "state"), "scheduled");
    let stats = ctl.cli_json(&["queue", "stats"]).await;
    assert_eq!(stats["dead"], Value::from(0), "{stats:#}");

    // An empty DLQ: nothing to purge, not an error.
    let out = ctl.cli_json(&["dlq", "purge", "--all"]).await;
    assert!(run_ids(&out).is_empty(), "{out:#}");
}
