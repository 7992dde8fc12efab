//! The controller's HTTP endpoints against a real controller and agent:
//! `/metrics` values after a known workload (not only the names), `/healthz`
//! and `/readyz`, the role check of `/metrics` with authentication on, the
//! `--http-listen` address rules, and `--log-format json`.

use std::time::Duration;

use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::http::{get, sample, sum};
use worker_tests::{Controller, TestEnv, wait_for};

const ADMIN: &str = BOOTSTRAP_SECRET;

/// `ok` succeeds, `bad` fails for good at its first attempt, `tick` fires
/// every second, `slow` fires every second but runs 2.5 s with overlap
/// forbidden (so fires are skipped).
const CONFIG: &str = r#"
jobs:
  ok:
    builtin: noop
    retry: { max_attempts: 1 }
  bad:
    shell: "exit 3"
    retry: { max_attempts: 1 }
  tick:
    builtin: noop
    schedule: "* * * * * *"
    retry: { max_attempts: 1 }
  slow:
    builtin: { name: sleep, duration: 2500ms }
    schedule: "* * * * * *"
    overlap: forbid
    retry: { max_attempts: 1 }
"#;

const SUCCEEDED: usize = 6;
const FAILED: usize = 3;

fn http(ctl: &Controller) -> std::net::SocketAddr {
    ctl.http_addr
        .expect("the ready line names the HTTP address (--http-listen 127.0.0.1:0)")
}

/// Polls `/metrics` (with `token`) until `check` accepts the text.
async fn metrics_until(
    ctl: &Controller,
    token: Option<&str>,
    what: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> String {
    let addr = http(ctl);
    wait_for(what, Duration::from_secs(30), || async {
        let answer = get(addr, "/metrics", token).await;
        if answer.status != 200 {
            return Err(format!("status {}: {}", answer.status, answer.body));
        }
        check(&answer.body).map(|()| answer.body.clone())
    })
    .await
}

fn expect(text: &str, series: &str, value: f64) -> Result<(), String> {
    match sample(text, series) {
        Some(v) if v == value => Ok(()),
        other => Err(format!("{series} is {other:?}, expected {value}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_and_need_a_reading_role() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let addr = http(&ctl);

    // Probes need no token.
    let health = get(addr, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(addr, "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"), "{ready:?}");

    // /metrics needs a token of a reading role.
    let viewer = ctl.create_token(ADMIN, "prometheus", "viewer", &[]).await;
    let enqueuer = ctl.create_token(ADMIN, "app", "enqueuer", &[]).await;
    let agent_token = ctl.create_token(ADMIN, "agent-1", "agent", &[]).await;
    let none = get(addr, "/metrics", None).await;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert!(none.body.contains("requires a token"), "{none:?}");
    let wrong = get(addr, "/metrics", Some("not-a-token-of-this-controller")).await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let denied = get(addr, "/metrics", Some(&enqueuer)).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(denied.body.contains("role enqueuer"), "{denied:?}");
    let agent_denied = get(addr, "/metrics", Some(&agent_token)).await;
    assert_eq!(agent_denied.status, 403, "{agent_denied:?}");
    // Every reading role may scrape (the row of docs/security.md's matrix).
    let operator = ctl.create_token(ADMIN, "ops", "operator", &[]).await;
    for token in [ADMIN, operator.as_str()] {
        let answer = get(addr, "/metrics", Some(token)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let allowed = get(addr, "/metrics", Some(&viewer)).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{allowed:?}"
    );
    // Defined jobs have their series before anything ran.
    expect(
        &allowed.body,
        r#"worker_runs_finished_total{job="ok",outcome="succeeded"}"#,
        0.0,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", allowed.body));

    let _agent = env
        .start_agent_with_token(&ctl, "a1", &agent_token, ADMIN, &["--capacity", "4"])
        .await;
    let mut client = ctl.client_with_token(Some(ADMIN)).await;
    for job in std::iter::repeat_n("ok", SUCCEEDED).chain(std::iter::repeat_n("bad", FAILED)) {
        client
            .enqueue(pb::EnqueueRequest {
                job: job.into(),
                ..Default::default()
            })
            .await
            .expect("Enqueue");
    }

    let text = metrics_until(&ctl, Some(&viewer), "the workload's runs to be counted", |text| {
        expect(
            text,
            r#"worker_runs_finished_total{job="ok",outcome="succeeded"}"#,
            SUCCEEDED as f64,
        )?;
        expect(
            text,
            r#"worker_runs_finished_total{job="bad",outcome="dead"}"#,
            FAILED as f64,
        )?;
        // Fires of `slow` are skipped while its 2.5 s run is unfinished.
        match sample(text, r#"worker_schedule_skipped_fires_total{job="slow"}"#) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("skipped fires of slow: {other:?}")),
        }
    })
    .await;
    let check = |series: &str, value: f64| expect(&text, series, value).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check(r#"worker_runs_finished_total{job="ok",outcome="dead"}"#, 0.0);
    check(r#"worker_runs_finished_total{job="bad",outcome="succeeded"}"#, 0.0);
    check(
        r#"worker_attempts_finished_total{job="ok",outcome="succeeded"}"#,
        SUCCEEDED as f64,
    );
    check(
        r#"worker_attempts_finished_total{job="bad",outcome="failed"}"#,
        FAILED as f64,
    );
    check(r#"worker_run_duration_seconds_count{job="ok"}"#, SUCCEEDED as f64);
    check(r#"worker_run_duration_seconds_count{job="bad"}"#, FAILED as f64);
    check(r#"worker_run_start_delay_seconds_count{job="ok"}"#, SUCCEEDED as f64);
    check(r#"worker_agents{state="connected"}"#, 1.0);
    check(r#"worker_agents{state="disconnected"}"#, 0.0);
    check("worker_lost_attempts_total", 0.0);
    check("worker_stale_results_total", 0.0);
    // Every fire that created a run was measured for lateness.
    assert!(
        sample(&text, r#"worker_schedule_lateness_seconds_count{job="tick"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "worker_store_commit_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(sample(&text, "worker_store_commit_round_size_sum").unwrap_or(0.0) >= (SUCCEEDED + FAILED) as f64);
    // Nothing is labelled by run or agent.
    assert!(!text.contains("run_id") && !text.contains("a1"), "{text}");

    // Drained: nothing queued (the schedules' runs come and go within
    // milliseconds, so poll until a scrape finds the queue empty).
    metrics_until(&ctl, Some(&viewer), "an empty queue", |text| {
        let depth = sum(text, "worker_queue_depth");
        let queued = sample(text, r#"worker_runs{state="queued"}"#);
        match (depth, queued) {
            (0.0, Some(0.0)) => Ok(()),
            other => Err(format!("queue depth and queued runs: {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_metrics_are_open_and_logs_can_be_json() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with(&["--log-format", "json"]).await;
    let addr = http(&ctl);
    assert_eq!(get(addr, "/readyz", None).await.status, 200);
    let _agent = env
        .start_agent_with(&ctl, "json-agent", 2, &["--log-format", "json"])
        .await;
    let run_id = ctl.cli_enqueue("ok", &[]).await;
    ctl.wait_state(&run_id, "succeeded", Duration::from_secs(20)).await;
    metrics_until(
        &ctl,
        None,
        "the run to be counted without a token",
        |text| match sample(text, r#"worker_runs_finished_total{job="ok",outcome="succeeded"}"#) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // Every stderr line is one JSON object; ids are fields, not text.
    let lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let field = |line: &serde_json::Value, name: &str| line["fields"][name].as_str().map(str::to_string);
    let controller_log = lines(&ctl.proc.stderr_all());
    assert!(
        controller_log
            .iter()
            .any(|l| field(l, "message").as_deref() == Some("agent connected")
                && field(l, "agent").as_deref() == Some("json-agent")),
        "no 'agent connected' line with the agent as a field: {controller_log:?}"
    );
    let agent_log = wait_for("the agent's attempt log", Duration::from_secs(10), || async {
        let log = lines(&_agent.proc.stderr_all());
        if log
            .iter()
            .any(|l| field(l, "run_id").as_deref() == Some(run_id.as_str()))
        {
            Ok(log)
        } else {
            Err(format!("{log:?}"))
        }
    })
    .await;
    assert!(
        agent_log
            .iter()
            .any(|l| field(l, "message").as_deref() == Some("attempt started")
                && field(l, "run_id").as_deref() == Some(run_id.as_str())
                && field(l, "job").as_deref() == Some("ok")),
        "{agent_log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listen_is_checked_like_grpc_and_can_be_off() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    // Non-loopback without authentication: refused before any port is bound.
    let refused = env
        .run_controller_to_exit(&["--http-listen", "0.0.0.0:0"], Duration::from_secs(30))
        .await;
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("--http-listen 0.0.0.0:0: without authentication"),
        "{}",
        refused.stderr
    );
    let bad = env
        .run_controller_to_exit(&["--http-listen", "localhost"], Duration::from_secs(30))
        .await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("invalid address \"localhost\""), "{}", bad.stderr);

    // Off: no HTTP address in the ready line.
    let ctl = env.start_controller_with(&["--http-listen", "off"]).await;
    assert_eq!(ctl.http_addr, None);
}
