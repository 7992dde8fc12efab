//! An agent killed (SIGKILL) in the middle of a run: once its lease expires the
//! attempt is recorded `lost` and the run is retried on another agent.

mod fault_common;

use std::time::{Duration, Instant};

use fault_common::*;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, parse_ts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_run_is_rerun_elsewhere_after_the_lease() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  nap:
    builtin: { name: sleep, duration: 3s }
    retry: { max_attempts: 3, initial_delay: 100ms, jitter: 0 }
"#,
    );
    let ctl = start_local_controller(&env).await;
    let mut doomed = start_agent(&env, &ctl, "doomed", 1, &[]).await;

    let id = ctl.cli_enqueue("nap", &[]).await;
    wait_running_on(&ctl, &id, "doomed", Duration::from_secs(10)).await;
    // Only now a second agent: the first attempt cannot have gone to it.
    let _spare = start_agent(&env, &ctl, "spare", 1, &[]).await;

    send_signal(doomed.proc.pid(), libc::SIGKILL);
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();
    let status = wait_exit(&mut doomed.proc, Duration::from_secs(5)).await;
    assert!(status.is_some(), "agent still alive after SIGKILL");

    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    eprintln!("[fault] run {id} {} {:?} after the kill", done.state, killed.elapsed());
    assert_eq!(done.state, "succeeded", "{done:?}");

    let run = ctl.cli_run(&id).await;
    assert_lost_then_succeeded(&run, "doomed", "spare");
    let attempts = json::attempts(&run);
    // Lost only when the lease ran out: the last heartbeat came at most one
    // heartbeat (200 ms) before the kill, the lease is 1.5 s.
    let lost_at = json::ts_field(&attempts[0], "finished_at");
    let waited = (lost_at - killed_at).to_std().unwrap_or_default();
    assert!(
        waited >= LEASE_DUR - Duration::from_millis(500),
        "attempt 1 recorded lost {waited:?} after the kill, before the lease could expire: {run:#}"
    );
    assert!(
        json::opt_i64(&attempts[0], "exit_code").is_none(),
        "a lost attempt has no exit code: {run:#}"
    );
    let second_start = parse_ts("started_at", str_field(&attempts[1], "started_at"));
    assert!(
        second_start >= lost_at,
        "attempt 2 started before attempt 1 was lost: {run:#}"
    );
    let d2 = json::opt_i64(&attempts[1], "duration_ms").unwrap_or(0);
    assert!(d2 >= 2900, "attempt 2 did not sleep its 3 s: {run:#}");

    let s = stats(&ctl).await;
    assert!(counter(&s, "lost_attempts") >= 1, "{s:#}");
    assert!(counter(&s, "rescued_runs") >= 1, "{s:#}");
    assert_eq!(counter(&s, "running"), 0, "{s:#}");
    let agents = ctl.agents().await;
    assert!(
        agents.iter().all(|a| a.name != "doomed" || a.state != "connected"),
        "the killed agent is still listed as connected: {agents:?}"
    );
}
