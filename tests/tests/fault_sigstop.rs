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
