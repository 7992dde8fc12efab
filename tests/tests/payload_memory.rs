//! The memory budget of queued payloads, end to end: big payloads beyond
//! `--payload-memory-budget` wait in the store, and a real agent still gets
//! each exact payload on stdin, also after a controller restart.

use std::collections::HashMap;
use std::time::Duration;

use worker_proto::v1 as pb;
use worker_tests::TestEnv;

/// A distinct JSON payload of 512 KiB.
fn payload(i: usize) -> String {
    let fill = ["a", "é", "\\\"", "z"][i % 4].repeat(100 * 1024);
    let head = format!("{{\"i\":{i},\"fill\":\"{fill}\",\"pad\":\"");
    format!("{head}{}\"}}", "x".repeat(512 * 1024 - head.len() - 2))
}

async fn enqueue(ctl: &worker_tests::Controller, payload: &str) -> String {
    ctl.client()
        .await
        .enqueue(pb::EnqueueRequest {
            job: "keep".into(),
            payload: payload.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Enqueue: {e}"))
        .into_inner()
        .run
        .expect("the new run")
        .id
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_big_payloads_over_the_budget_reach_the_agent_exactly_across_a_restart() {
    let env = TestEnv::new();
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    env.write_config(&format!(
        "jobs:\n  keep:\n    shell: 'cat > \"{}/$WORKER_RUN_ID\"'\n",
        out.display()
    ));
    // 2 MiB: three of the forty payloads fit in memory, the rest wait in the store.
    let budget = ["--payload-memory-budget", "2097152"];
    let mut ctl = env.start_controller_with(&budget).await;
    let mut expected: HashMap<String, String> = HashMap::new();
    for i in 0..20 {
        let p = payload(i);
        expected.insert(enqueue(&ctl, &p).await, p);
    }
    // A restart recovers the queue without reading the big payloads.
    let status = ctl.proc.terminate(Duration::from_secs(15));
    assert!(status.success(), "controller exited with {status} on SIGTERM");
    drop(ctl);
    let ctl = env.start_controller_with(&budget).await;
    for i in 20..40 {
        let p = payload(i);
        expected.insert(enqueue(&ctl, &p).await, p);
    }

    let _agent = env.start_agent(&ctl, "a1", 4).await;
    for id in expected.keys() {
        let run = ctl.wait_run(id, Duration::from_secs(60)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
    }
    for (id, want) in &expected {
        let got = std::fs::read_to_string(out.join(id)).unwrap_or_else(|e| panic!("stdin of run {id}: {e}"));
        assert!(
            got == *want,
            "run {id}: the agent got {} bytes, {} were enqueued",
            got.len(),
            want.len()
        );
    }
}

/// Measurement, not a check (run with `--ignored --nocapture`): the
/// controller's VmRSS before and after 500 payloads of 1 MiB are queued with
/// the default budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn rss_with_500_queued_payloads_of_one_mib() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  keep:\n    shell: 'cat > /dev/null'\n");
    let ctl = env.start_controller().await;
    let pid = ctl.proc.pid();
    let before = rss_kib(pid);
    let big = |i: usize| {
        let head = format!("{{\"i\":{i},\"pad\":\"");
        format!("{head}{}\"}}", "x".repeat(1024 * 1024 - head.len() - 2))
    };
    for i in 0..500 {
        enqueue(&ctl, &big(i)).await;
    }
    let after = rss_kib(pid);
    eprintln!(
        "controller VmRSS: {before} KiB before, {after} KiB with 500 x 1 MiB queued (+{} MiB)",
        (after.saturating_sub(before)) / 1024
    );
}
