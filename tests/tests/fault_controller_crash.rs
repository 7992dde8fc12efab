//! The controller is killed (SIGKILL) in the middle of 1,000 quick runs (50 ms
//! each, so the crash surely falls inside the work, however fast dispatch is) and
//! restarted on the same database and address: every acknowledged run ends
//! `succeeded`, and the few runs executed more than once are explained by their
//! history (an attempt lost, or more than one attempt).

mod fault_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fault_common::*;
use worker_proto::v1 as pb;
use worker_tests::json::{self, str_field};
use worker_tests::{Controller, TestEnv, wait_for};

const RUNS: usize = 1000;
const AGENTS: u32 = 2;
const CAPACITY: u32 = 8;
/// Kill the controller once this many executions were recorded.
const KILL_AFTER: usize = 200;

/// Waits until nothing is queued, scheduled, blocked or running.
async fn wait_drained(ctl: &Controller, timeout: Duration) {
    let client = ctl.client().await;
    wait_for("the queue to drain", timeout, || {
        let mut client = client.clone();
        async move {
            let s = client
                .queue_stats(pb::QueueStatsRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if s.queued + s.scheduled + s.blocked + s.running == 0 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await
}

/// `(run id, attempt)` of every execution the job recorded.
fn executions(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let (Some(id), Some(attempt), None) = (parts.next(), parts.next(), parts.next()) else {
                panic!("malformed (torn?) line {l:?} in the executions file");
            };
            let attempt = attempt.parse().unwrap_or_else(|e| panic!("attempt in {l:?}: {e}"));
            (id.to_string(), attempt)
        })
        .collect()
}

fn line_count(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sigkill_with_a_thousand_runs_in_flight() {
    let test_started = Instant::now();
    let env = TestEnv::new();
    let log = env.path().join("executions.txt");
    env.write_config(&format!(
        r#"
jobs:
  append:
    shell: "echo \"$WORKER_RUN_ID $WORKER_ATTEMPT\" >> '{}'; sleep 0.05"
    retry: {{ max_attempts: 5, initial_delay: 100ms, jitter: 0 }}
"#,
        log.display()
    ));
    let mut ctl = start_local_controller(&env).await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(start_agent(&env, &ctl, &format!("worker-{i}"), CAPACITY, &[]).await);
    }

    // One atomic batch of 1,000 runs; its answer lists the acknowledged ids.
    let batch: Vec<String> = (0..RUNS).map(|_| r#"{"job":"append"}"#.to_string()).collect();
    let batch_file = env.path().join("batch.json");
    std::fs::write(&batch_file, format!("[{}]", batch.join(","))).expect("write batch");
    let enqueued = Instant::now();
    let acked = ctl
        .cli_json(&["enqueue", "--batch", batch_file.to_str().unwrap()])
        .await;
    let acked: Vec<String> = json::as_array(&acked)
        .iter()
        .map(|e| str_field(e, "id").to_string())
        .collect();
    assert_eq!(acked.len(), RUNS, "batch answer");
    assert_eq!(
        acked.iter().collect::<BTreeSet<_>>().len(),
        RUNS,
        "duplicate ids in the batch answer"
    );
    eprintln!("[fault] {RUNS} runs enqueued in {:?}", enqueued.elapsed());

    // Crash while work is in flight.
    let log_ref = &log;
    wait_for(
        &format!("{KILL_AFTER} executions"),
        Duration::from_secs(30),
        || async move {
            let n = line_count(log_ref);
            if n >= KILL_AFTER {
                Ok(())
            } else {
                Err(format!("{n} executions"))
            }
        },
    )
    .await;
    send_signal(ctl.proc.pid(), libc::SIGKILL);
    let killed = Instant::now();
    assert!(
        wait_exit(&mut ctl.proc, Duration::from_secs(5)).await.is_some(),
        "controller survived SIGKILL"
    );
    let at_kill = line_count(&log);
    eprintln!(
        "[fault] controller killed after {at_kill} executions ({:?} after the enqueue)",
        enqueued.elapsed()
    );
    assert!(
        at_kill < RUNS,
        "every run had finished before the crash: the test proves nothing"
    );

    let addr = ctl.addr;
    drop(ctl);
    let ctl = start_controller(&env, &addr.to_string(), &[]).await;
    eprintln!("[fault] controller back {:?} after the kill", killed.elapsed());
    for a in &agents {
        wait_agent_connected(&ctl, &a.name, Duration::from_secs(15)).await;
    }
    wait_drained(&ctl, Duration::from_secs(40)).await;
    eprintln!("[fault] queue drained {:?} after the restart", killed.elapsed());
    for a in &mut agents {
        assert!(a.proc.try_wait().is_none(), "agent {} died", a.name);
    }

    // Every acknowledged run exists and succeeded.
    let runs = ctl
        .client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: "append".into(),
            state: String::new(),
            limit: 1000, // the largest page (RUNS = 1000)
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    let by_id: BTreeMap<&str, &pb::Run> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(runs.len(), RUNS, "runs of the job after the restart");
    for id in &acked {
        let run = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged run {id} is gone"));
        assert_eq!(run.state, "succeeded", "{run:?}");
        assert_eq!(
            run.attempts.last().map(|a| a.outcome.as_str()),
            Some("succeeded"),
            "{run:?}"
        );
    }

    // What the job itself recorded.
    let text = std::fs::read_to_string(&log).expect("read executions");
    let execs = executions(&text);
    let mut per_run: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (id, attempt) in &execs {
        per_run.entry(id.as_str()).or_default().push(*attempt);
    }
    let mut more_than_once = Vec::new();
    for id in &acked {
        let run = by_id[id.as_str()];
        let seen = per_run
            .get(id.as_str())
            .unwrap_or_else(|| panic!("succeeded run {id} never executed: {run:?}"));
        let distinct: BTreeSet<u32> = seen.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "one attempt executed twice: run {id} attempts {seen:?}, {run:?}"
        );
        let recorded: BTreeSet<u32> = run.attempts.iter().map(|a| a.attempt).collect();
        assert!(
            distinct.is_subset(&recorded),
            "run {id} executed attempts {seen:?} but recorded {recorded:?}: {run:?}"
        );
        let last = run.attempts.last().unwrap().attempt;
        assert!(
            distinct.contains(&last),
            "the succeeded attempt {last} of {id} never executed: {seen:?}"
        );
        if seen.len() > 1 {
            let lost = run.attempts.iter().any(|a| a.outcome == "lost");
            assert!(
                lost || run.attempts.len() > 1,
                "run {id} executed {} times without a lost attempt or a second attempt: {run:?}",
                seen.len()
            );
            more_than_once.push((id.clone(), run.attempts.clone()));
        }
    }
    let foreign: Vec<&&str> = per_run.keys().filter(|id| !by_id.contains_key(**id)).collect();
    assert!(foreign.is_empty(), "executions of unknown runs: {foreign:?}");

    let s = stats(&ctl).await;
    eprintln!(
        "[fault] {} executions of {RUNS} runs; {} run(s) executed more than once; lost_attempts={} rescued_runs={} \
         stale_results={} duplicate_results={}; total {:?}",
        execs.len(),
        more_than_once.len(),
        counter(&s, "lost_attempts"),
        counter(&s, "rescued_runs"),
        counter(&s, "stale_results"),
        counter(&s, "duplicate_results"),
        test_started.elapsed()
    );
    for (id, attempts) in &more_than_once {
        let h: Vec<String> = attempts
            .iter()
            .map(|a| format!("#{} {} on {}", a.attempt, a.outcome, a.agent))
            .collect();
        eprintln!("[fault]   {id}: {}", h.join(", "));
    }
    let in_flight_max = (AGENTS * CAPACITY) as usize;
    assert!(
        more_than_once.len() <= in_flight_max,
        "{} runs executed more than once, more than the {in_flight_max} attempts that could be in flight at the crash",
        more_than_once.len()
    );
    assert_eq!(counter(&s, "dead"), 0, "{s:#}");
}
