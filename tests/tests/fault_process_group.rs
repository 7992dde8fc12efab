//! A shell job whose processes ignore SIGTERM (a shell, two children and a
//! grandchild): ended by its timeout, or cancelled while running, the agent kills
//! the whole process group (SIGTERM, then SIGKILL after `--kill-grace`) and no
//! process of the job is left.

mod fault_common;

use std::path::Path;
use std::time::{Duration, Instant};

use fault_common::*;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, wait_for};

/// Every process appends its pid to "$1", then blocks; all ignore SIGTERM
/// (ignored dispositions are inherited through fork and exec).
const TREE: &str = r#"#!/bin/sh
f="$1"
trap '' TERM
sh -c 'echo "$$" >> "$1"; exec sleep 300' child "$f" &
sh -c 'sh -c '"'"'echo "$$" >> "$1"; exec sleep 300'"'"' grandchild "$1" & echo "$$" >> "$1"; wait' child "$f" &
echo "$$" >> "$f"
echo "tree started"
wait
"#;

/// Processes the job starts: the shell, two children, one grandchild.
const TREE_SIZE: usize = 4;

fn config(env: &TestEnv, timeout: &str) -> std::path::PathBuf {
    let script = env.path().join("tree.sh");
    std::fs::write(&script, TREE).expect("write tree.sh");
    let pids = env.path().join("pids.txt");
    env.write_config(&format!(
        r#"
jobs:
  tree:
    shell: {{ command: ["sh", "{}", "{}"] }}
    timeout: {timeout}
    retry: {{ max_attempts: 1 }}
"#,
        script.display(),
        pids.display()
    ));
    pids
}

/// The pids the job wrote, with their start times (to tell a reused pid apart).
async fn recorded_pids(pids: &Path) -> Vec<(i32, Option<(u64, char)>)> {
    let lines = wait_lines(pids, TREE_SIZE, Duration::from_secs(10)).await;
    lines
        .iter()
        .map(|l| {
            let pid: i32 = l.trim().parse().unwrap_or_else(|e| panic!("pid {l:?}: {e}"));
            (pid, proc_stat(pid))
        })
        .collect()
}

/// Waits until none of the recorded processes exists any more (reaping those
/// reparented to this process), and no process carries the run's id.
async fn assert_all_gone(run_id: &str, pids: &[(i32, Option<(u64, char)>)]) {
    let started = Instant::now();
    wait_for(
        "every process of the job to be gone",
        Duration::from_secs(5),
        || async move {
            let mut left = Vec::new();
            for &(pid, stat) in pids {
                reap(pid);
                if no_such_process(pid) {
                    continue;
                }
                // The pid exists: the same process (same start time) or a new one.
                let now = proc_stat(pid);
                match (stat, now) {
                    (Some((t0, _)), Some((t1, _))) if t0 != t1 => continue, // pid reused
                    _ => left.push((pid, now)),
                }
            }
            let tagged = processes_of_run(run_id);
            if left.is_empty() && tagged.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "still there (pid, (start, state)): {left:?}; with WORKER_RUN_ID={run_id}: {tagged:?}"
                ))
            }
        },
    )
    .await;
    eprintln!(
        "[fault] all {} processes gone {:?} after the run ended",
        pids.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    become_subreaper();
    let env = TestEnv::new();
    let pids_file = config(&env, "1s");
    let ctl = start_local_controller(&env).await;
    let _agent = start_agent(&env, &ctl, "killer", 1, &["--kill-grace", "500ms"]).await;

    let id = ctl.cli_enqueue("tree", &[]).await;
    let pids = recorded_pids(&pids_file).await;
    let started = Instant::now();
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    eprintln!(
        "[fault] run {id} {} {:?} after its processes started",
        run.state,
        started.elapsed()
    );
    assert_eq!(run.state, "dead", "{run:?}");
    let run = ctl.cli_run(&id).await;
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(str_field(&attempts[0], "outcome"), "timed_out", "{run:#}");
    let duration = json::opt_i64(&attempts[0], "duration_ms").unwrap_or(0);
    // Timeout (1 s) + kill grace (0.5 s, SIGTERM is ignored) before SIGKILL.
    assert!(
        (1400..10_000).contains(&duration),
        "attempt lasted {duration} ms; expected the 1 s timeout plus the 500 ms kill grace: {run:#}"
    );
    assert_all_gone(&id, &pids).await;
    let s = stats(&ctl).await;
    assert_eq!(
        counter(&s, "deadline_expired"),
        0,
        "the agent, not the controller, ended it: {s:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_whole_process_group() {
    become_subreaper();
    let env = TestEnv::new();
    let pids_file = config(&env, "5m");
    let ctl = start_local_controller(&env).await;
    let _agent = start_agent(&env, &ctl, "killer", 1, &["--kill-grace", "500ms"]).await;

    let id = ctl.cli_enqueue("tree", &[]).await;
    let pids = recorded_pids(&pids_file).await;
    for &(pid, stat) in &pids {
        assert!(
            matches!(stat, Some((_, s)) if s != 'Z'),
            "process {pid} of the job is not running before the cancel: {stat:?}"
        );
    }
    ctl.wait_state(&id, "running", Duration::from_secs(5)).await;

    let cancelled = Instant::now();
    let out = ctl.cli_json(&["runs", "cancel", &id]).await;
    assert_eq!(str_field(&out, "id"), id, "{out:#}");
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    eprintln!(
        "[fault] run {id} {} {:?} after the cancel",
        run.state,
        cancelled.elapsed()
    );
    assert_eq!(run.state, "cancelled", "{run:?}");
    let run = ctl.cli_run(&id).await;
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(str_field(&attempts[0], "outcome"), "cancelled", "{run:#}");
    assert!(
        cancelled.elapsed() >= Duration::from_millis(450),
        "cancelled before the kill grace could pass, yet every process ignores SIGTERM: {run:#}"
    );
    assert_all_gone(&id, &pids).await;
}
