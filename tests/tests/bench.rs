//! `workerctl bench workload-a` and `workload-b` end to end: a real
//! controller, agents the bench spawns itself (the `worker-agent` next to
//! `workerctl`), and the JSON report checked for complete, ordered numbers.
//! Another agent without the bench's label stays connected throughout and
//! must never take a bench run.

use std::time::Duration;

use serde_json::Value;
use worker_tests::TestEnv;

fn f64_at(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing or not a number in {v:#}"))
}

fn u64_at(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing or not an integer in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_a_and_b_report_every_job_and_ordered_latencies() {
    let env = TestEnv::new();
    env.write_config("jobs: {}\n");
    let ctl = env.start_controller().await;
    // A bystander: it has no bench label, so it must take none of the runs.
    let _bystander = env.start_agent(&ctl, "bystander", 8).await;

    let a = ctl
        .cli_json(&["bench", "workload-a", "--jobs", "200", "--agents", "1", "--batch", "50"])
        .await;
    assert_eq!(a["scenario"], "workload-a", "{a:#}");
    assert_eq!(a["ok"], true, "{a:#}");
    assert_eq!(u64_at(&a, "/config/jobs"), 200);
    assert_eq!(u64_at(&a, "/config/agents"), 1);
    assert_eq!(u64_at(&a, "/results/enqueued"), 200);
    assert_eq!(u64_at(&a, "/results/completed"), 200, "{a:#}");
    assert_eq!(u64_at(&a, "/results/failed"), 0);
    assert!(f64_at(&a, "/results/enqueue_per_sec") > 0.0, "{a:#}");
    assert!(f64_at(&a, "/results/work_per_sec") > 0.0, "{a:#}");
    let work = f64_at(&a, "/results/work_seconds");
    let first = f64_at(&a, "/results/first_completion_seconds");
    assert!(
        first > 0.0 && first <= work + 0.01,
        "first {first} vs work {work}: {a:#}"
    );
    assert!(u64_at(&a, "/results/rss_after_bytes") > 0);

    let b = ctl
        .cli_json(&["bench", "workload-b", "--jobs", "50", "--rate", "200", "--agents", "1"])
        .await;
    assert_eq!(b["scenario"], "workload-b", "{b:#}");
    assert_eq!(b["ok"], true, "{b:#}");
    assert_eq!(u64_at(&b, "/results/sent"), 50);
    assert_eq!(u64_at(&b, "/results/succeeded"), 50, "{b:#}");
    assert_eq!(u64_at(&b, "/results/handler_start_missing"), 0, "{b:#}");
    for key in [
        "intended_to_handler_start",
        "enqueue_to_commit",
        "enqueue_to_start",
        "dispatch_to_handler_start",
    ] {
        assert_eq!(u64_at(&b, &format!("/results/{key}/count")), 50, "{key}: {b:#}");
        assert!(f64_at(&b, &format!("/results/{key}/max_ms")) > 0.0, "{key}: {b:#}");
    }
    // Along a run: enqueue committed, then dispatch committed, then (after
    // the Assignment went out) the handler started.
    for q in ["p50_ms", "p99_ms", "max_ms"] {
        let commit = f64_at(&b, &format!("/results/enqueue_to_commit/{q}"));
        let dispatch = f64_at(&b, &format!("/results/enqueue_to_start/{q}"));
        let handler = f64_at(&b, &format!("/results/intended_to_handler_start/{q}"));
        assert!(
            commit <= dispatch && dispatch <= handler,
            "{q}: {commit} {dispatch} {handler}: {b:#}"
        );
    }
    assert_eq!(u64_at(&b, "/results/handler_before_dispatch"), 0, "{b:#}");

    // The bench's agents are gone (killed at the end), the bystander ran nothing.
    worker_tests::wait_for("only the bystander connected", Duration::from_secs(10), || {
        let ctl = &ctl;
        async move {
            let names: Vec<String> = ctl
                .agents()
                .await
                .into_iter()
                .filter(|a| a.state == "connected")
                .map(|a| a.name)
                .collect();
            if names == ["bystander"] {
                Ok(())
            } else {
                Err(format!("connected: {names:?}"))
            }
        }
    })
    .await;
    let runs = ctl
        .cli_json(&["runs", "list", "--job", "bench.workload-a", "--limit", "500"])
        .await;
    let listed = runs.as_array().map_or(0, Vec::len);
    assert!(listed > 0, "{runs:#}");
    let mut attempts = 0;
    for run in runs.as_array().into_iter().flatten() {
        for attempt in run["attempts"].as_array().into_iter().flatten() {
            let agent = attempt["agent"].as_str().unwrap_or_default();
            assert!(agent.starts_with("bench-workload-a-"), "{run:#}");
            attempts += 1;
        }
    }
    assert_eq!(attempts, listed, "one attempt per run: {runs:#}");
}
