//! SIGTERM to an agent with two attempts in flight: it stops pulling, lets the
//! short one finish within `--drain-grace`, cancels the long one after it,
//! reports both (nothing is left to the lease) and exits 0.

mod fault_common;

use std::time::{Duration, Instant};

use fault_common::*;
use worker_tests::TestEnv;
use worker_tests::json::{self, str_field};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_short_work_and_cancels_long_work() {
    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  short:
    shell: "echo short >> '{0}'; sleep 1; echo short done"
    retry: {{ max_attempts: 1 }}
  long:
    shell: "echo long >> '{0}'; sleep 60; echo long done"
    retry: {{ max_attempts: 3, initial_delay: 100ms, jitter: 0 }}
"#,
        marks.display()
    ));
    let ctl = start_local_controller(&env).await;
    let mut agent = start_agent(&env, &ctl, "leaving", 2, &["--drain-grace", "5s", "--kill-grace", "1s"]).await;

    let long = ctl.cli_enqueue("long", &[]).await;
    let short = ctl.cli_enqueue("short", &[]).await;
    wait_running_on(&ctl, &long, "leaving", Duration::from_secs(10)).await;
    wait_running_on(&ctl, &short, "leaving", Duration::from_secs(10)).await;
    wait_lines(&marks, 2, Duration::from_secs(10)).await;

    send_signal(agent.proc.pid(), libc::SIGTERM);
    let termed = Instant::now();
    // Enqueued after the SIGTERM: a draining agent must not take it.
    let late = ctl.cli_enqueue("short", &[]).await;

    let status = wait_exit(&mut agent.proc, Duration::from_secs(5 + 5)).await;
    let took = termed.elapsed();
    eprintln!("[fault] agent exited {status:?} {took:?} after SIGTERM");
    let status = status.unwrap_or_else(|| panic!("agent still running {took:?} after SIGTERM (drain grace 5s)"));
    assert!(status.success(), "agent exited with {status} after SIGTERM");
    assert!(
        took >= Duration::from_millis(4500),
        "agent exited after {took:?}: before the 5 s drain grace, while the long run was still in it"
    );

    let s = ctl.wait_run(&short, Duration::from_secs(5)).await;
    assert_eq!(s.state, "succeeded", "{s:?}");
    assert_eq!(s.attempts.len(), 1, "{s:?}");
    assert!(s.attempts[0].output.contains("short done"), "{s:?}");

    let run = ctl.cli_run(&long).await;
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(
        str_field(&attempts[0], "outcome"),
        "cancelled",
        "the long attempt must be reported cancelled by the agent, not lost: {run:#}"
    );
    assert_eq!(json::opt_str(&attempts[0], "agent"), Some("leaving"), "{run:#}");
    let state = str_field(&run, "state");
    eprintln!(
        "[fault] long run after the drain: state {state}, reason {:?}",
        json::opt_str(&run, "reason")
    );
    // Nobody asked to cancel the run: the agent only stopped it to leave, so the
    // run follows its retry policy (another agent will take it).
    assert!(
        state == "scheduled" || state == "queued",
        "an attempt interrupted by its agent's shutdown must be retried, not ended: {run:#}"
    );

    let late_run = ctl.cli_run(&late).await;
    assert_eq!(
        str_field(&late_run, "state"),
        "queued",
        "a run enqueued after SIGTERM went to the draining agent: {late_run:#}"
    );
    assert!(json::attempts(&late_run).is_empty(), "{late_run:#}");

    let running = ctl.cli_json(&["runs", "list", "--state", "running"]).await;
    assert!(json::as_array(&running).is_empty(), "runs still running: {running:#}");
    let stats = stats(&ctl).await;
    assert_eq!(counter(&stats, "running"), 0, "{stats:#}");
    assert_eq!(
        counter(&stats, "lost_attempts"),
        0,
        "an attempt was left to the lease: {stats:#}"
    );
}
