//! An agent frozen (SIGSTOP) past its lease while it runs an attempt: the run is
//! retried on another agent; when the first agent resumes (SIGCONT), its late
//! result is refused and the recorded history does not change.

mod fault_common;

use std::time::{Duration, Instant};

use fault_common::*;
use worker_tests::TestEnv;
use worker_tests::json::{self, str_field};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_agent_late_result_is_refused() {
    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  nap:
    shell: "echo \"$WORKER_ATTEMPT\" >> '{}'; sleep 2; echo napped attempt=$WORKER_ATTEMPT"
    retry: {{ max_attempts: 3, initial_delay: 100ms, jitter: 0 }}
"#,
        marks.display()
    ));
    let ctl = start_local_controller(&env).await;
    let mut frozen = start_agent(&env, &ctl, "frozen", 1, &[]).await;

    let id = ctl.cli_enqueue("nap", &[]).await;
    wait_running_on(&ctl, &id, "frozen", Duration::from_secs(10)).await;
    // The job really started on the agent (not only assigned).
    wait_lines(&marks, 1, Duration::from_secs(10)).await;
    let _thawed = start_agent(&env, &ctl, "thawed", 1, &[]).await;

    send_signal(frozen.proc.pid(), libc::SIGSTOP);
    let stopped = Instant::now();
    // The job's own process (another process group) keeps running and exits
    // after 2 s; the stopped agent cannot report it.
    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    eprintln!("[fault] run {id} {} {:?} after SIGSTOP", done.state, stopped.elapsed());
    assert_eq!(done.state, "succeeded", "{done:?}");
    let before = ctl.cli_run(&id).await;
    assert_lost_then_succeeded(&before, "frozen", "thawed");
    let output = json::opt_str(&json::attempts(&before)[1], "output").unwrap_or("");
    assert!(output.contains("napped attempt=2"), "{before:#}");
    let s = stats(&ctl).await;
    assert!(counter(&s, "lost_attempts") >= 1, "{s:#}");
    assert!(counter(&s, "rescued_runs") >= 1, "{s:#}");
    let stale_before = counter(&s, "stale_results");
    assert_eq!(stale_before, 0, "a stale result before the agent resumed: {s:#}");
    assert!(frozen.proc.try_wait().is_none(), "the stopped agent died");

    send_signal(frozen.proc.pid(), libc::SIGCONT);
    let resumed = Instant::now();
    let s = wait_counter(&ctl, "stale_results", stale_before + 1, Duration::from_secs(30)).await;
    eprintln!("[fault] stale result refused {:?} after SIGCONT", resumed.elapsed());
    assert_eq!(counter(&s, "duplicate_results"), 0, "{s:#}");

    // The refused result changed nothing: same state, attempts, transitions.
    let after = ctl.cli_run(&id).await;
    assert_eq!(settled(&after), settled(&before), "the late result changed the run");
    assert_eq!(str_field(&json::attempts(&after)[0], "outcome"), "lost");

    // The resumed agent is alive and back.
    assert!(frozen.proc.try_wait().is_none(), "the resumed agent exited");
    wait_agent_connected(&ctl, "frozen", Duration::from_secs(20)).await;
}

/// The job timeout of the tests below, in ms.
const TIMEOUT_MS: i64 = 2000;

/// Milliseconds between two RFC 3339 fields of an attempt.
fn ms_between(a: &worker_tests::Value, from: &str, to: &str) -> i64 {
    (json::ts_field(a, to) - json::ts_field(a, from)).num_milliseconds()
}

/// A frozen agent (SIGSTOP) holding the only attempt of a job with a
/// timeout: the controller ends the attempt without the agent, within the
/// job's timeout plus the lease, as `lost` (the silent agent's lease runs out
/// first); with no attempt left the run is dead (in the DLQ). The result the
/// agent sends once resumed is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_agent_attempt_ends_and_a_run_without_attempts_left_is_dead() {
    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  stuck:
    shell: "echo \"$WORKER_ATTEMPT\" >> '{}'; sleep 30"
    timeout: {TIMEOUT_MS}ms
    retry: {{ max_attempts: 1 }}
"#,
        marks.display()
    ));
    let ctl = start_local_controller(&env).await;
    let frozen = start_agent(&env, &ctl, "frozen", 1, &[]).await;

    let id = ctl.cli_enqueue("stuck", &[]).await;
    wait_running_on(&ctl, &id, "frozen", Duration::from_secs(10)).await;
    wait_lines(&marks, 1, Duration::from_secs(10)).await;
    send_signal(frozen.proc.pid(), libc::SIGSTOP);
    let stopped = chrono::Utc::now();

    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(done.state, "dead", "{done:?}");
    let run = ctl.cli_run(&id).await;
    assert_eq!(
        attempt_summary(&run),
        vec![(1, "frozen".to_string(), Some("lost".to_string()))],
        "{run:#}"
    );
    let a = &json::attempts(&run)[0];
    assert_eq!(json::opt_i64(a, "exit_code"), None, "{run:#}");
    let error = json::opt_str(a, "error").unwrap_or_default();
    assert!(error.contains("frozen") && error.contains("lease"), "{run:#}");
    // Ended by the controller within the timeout plus the lease of its start,
    // and not before the lease ran out after the agent froze.
    let lease_ms = LEASE_DUR.as_millis() as i64;
    let took = ms_between(a, "started_at", "finished_at");
    assert!(
        took <= TIMEOUT_MS + lease_ms + 1000,
        "the attempt ended {took} ms after its start (timeout {TIMEOUT_MS} + lease {lease_ms} ms): {run:#}"
    );
    let silent = (json::ts_field(a, "finished_at") - stopped).num_milliseconds();
    assert!(
        silent >= lease_ms - 250,
        "the attempt ended {silent} ms after the agent froze, before its lease ({lease_ms} ms) could run out: {run:#}"
    );
    let dlq = ctl.cli_json(&["dlq", "list"]).await;
    assert_eq!(json::ids(&dlq), std::slice::from_ref(&id), "{dlq:#}");
    let s = stats(&ctl).await;
    assert_eq!(counter(&s, "lost_attempts"), 1, "{s:#}");
    assert_eq!(
        counter(&s, "rescued_runs"),
        0,
        "a run without attempts left was requeued: {s:#}"
    );
    assert_eq!(counter(&s, "dead"), 1, "{s:#}");

    // Resumed: the agent times the job out and reports it; refused as stale.
    send_signal(frozen.proc.pid(), libc::SIGCONT);
    wait_counter(&ctl, "stale_results", 1, Duration::from_secs(30)).await;
    let after = ctl.cli_run(&id).await;
    assert_eq!(settled(&after), settled(&run), "the late result changed the dead run");
    wait_agent_connected(&ctl, "frozen", Duration::from_secs(20)).await;
}

/// The controller's backstop: the agent keeps heartbeating but its attempt
/// outlives the job's timeout (the job ignores SIGTERM and the agent's kill
/// grace is long), so no result comes. Past start + timeout + lease the
/// controller records the attempt `timed_out` (docs/decisions.md, "Controller
/// backstop"), counts it in `deadline_expired`, and retries the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_without_result_past_timeout_plus_lease_is_timed_out_and_retried() {
    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  stubborn:
    shell: |
      echo "$WORKER_ATTEMPT" >> '{}'
      if [ "$WORKER_ATTEMPT" = 1 ]; then trap '' TERM; sleep 30; fi
      echo done attempt=$WORKER_ATTEMPT
    timeout: {TIMEOUT_MS}ms
    retry: {{ max_attempts: 2, initial_delay: 100ms, jitter: 0 }}
"#,
        marks.display()
    ));
    let ctl = start_local_controller(&env).await;
    let _keeper = start_agent(&env, &ctl, "keeper", 1, &["--kill-grace", "60s"]).await;

    let id = ctl.cli_enqueue("stubborn", &[]).await;
    wait_running_on(&ctl, &id, "keeper", Duration::from_secs(10)).await;
    wait_lines(&marks, 1, Duration::from_secs(10)).await;
    // A second agent for the retry (the keeper's slot may still be taken by
    // the process it cannot kill).
    let _spare = start_agent(&env, &ctl, "spare", 1, &[]).await;

    let done = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let run = ctl.cli_run(&id).await;
    let got = attempt_summary(&run);
    assert_eq!(got.len(), 2, "{run:#}");
    assert_eq!(
        (got[0].0, got[0].1.as_str(), got[0].2.as_deref()),
        (1, "keeper", Some("timed_out")),
        "{run:#}"
    );
    assert_eq!((got[1].0, got[1].2.as_deref()), (2, Some("succeeded")), "{run:#}");
    let a = &json::attempts(&run)[0];
    assert_eq!(json::opt_i64(a, "exit_code"), None, "{run:#}");
    let error = json::opt_str(a, "error").unwrap_or_default();
    assert!(error.contains("timeout plus"), "{run:#}");
    let lease_ms = LEASE_DUR.as_millis() as i64;
    let took = ms_between(a, "started_at", "finished_at");
    assert!(
        took >= TIMEOUT_MS + lease_ms - 250 && took <= TIMEOUT_MS + lease_ms + 1500,
        "attempt 1 ended {took} ms after its start; the backstop is at timeout {TIMEOUT_MS} + lease {lease_ms} ms: {run:#}"
    );
    let output = json::opt_str(&json::attempts(&run)[1], "output").unwrap_or_default();
    assert!(output.contains("done attempt=2"), "{run:#}");
    let s = stats(&ctl).await;
    assert!(counter(&s, "deadline_expired") >= 1, "{s:#}");
    assert_eq!(counter(&s, "lost_attempts"), 0, "the keeper kept heartbeating: {s:#}");
    wait_agent_connected(&ctl, "keeper", Duration::from_secs(5)).await;
}
