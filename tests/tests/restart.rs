//! A controller restarted on the same SQLite file keeps its queue and history.

use std::collections::BTreeSet;
use std::time::Duration;

use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, Value};

const CONFIG: &str = r#"
jobs:
  greet:
    shell: "echo greeting attempt=$WORKER_ATTEMPT; cat"
    retry: { max_attempts: 1 }
"#;

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// The fields of a run that must survive a restart unchanged.
fn durable(run: &Value) -> Value {
    let keys = [
        "id",
        "job",
        "state",
        "priority",
        "payload",
        "trigger",
        "created_at",
        "finished_at",
        "max_attempts",
        "attempts",
        "transitions",
    ];
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), run.get(*k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

async fn restart_keeps_queue_and_history(signal: i32) {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let mut ctl = env.start_controller().await;

    // History: three runs to completion on a first agent, then the agent leaves.
    let mut agent = env.start_agent(&ctl, "first", 2).await;
    let mut finished = Vec::new();
    for i in 0..3 {
        let payload = format!(r#"{{"tag":"done-{i}"}}"#);
        finished.push(ctl.cli_enqueue("greet", &["--payload", &payload]).await);
    }
    for id in &finished {
        let run = ctl.wait_run(id, Duration::from_secs(20)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
    }
    let status = agent.stop(Duration::from_secs(15));
    assert!(status.success(), "agent exited with {status} on SIGTERM");
    ctl.wait_no_connected_agents(Duration::from_secs(10)).await;

    // Queued work with nobody to run it.
    let priorities = ["low", "critical", "normal", "high"];
    let mut queued = Vec::new();
    for (i, p) in priorities.iter().enumerate() {
        let payload = format!(r#"{{"tag":"queued-{i}"}}"#);
        queued.push(
            ctl.cli_enqueue("greet", &["--payload", &payload, "--priority", p])
                .await,
        );
    }
    let mut before = Vec::new();
    for id in finished.iter().chain(&queued) {
        before.push(durable(&ctl.cli_run(id).await));
    }
    for run in &before[3..] {
        assert_eq!(str_field(run, "state"), "queued", "{run:#}");
    }
    let queue_before = json::ids(&ctl.cli_json(&["queue", "list"]).await);
    assert_eq!(
        queue_before,
        [&queued[1], &queued[3], &queued[2], &queued[0]].map(String::clone),
        "queue order before the restart"
    );

    // Stop the controller.
    if signal == libc::SIGTERM {
        let status = ctl.proc.terminate(Duration::from_secs(15));
        assert!(status.success(), "controller exited with {status} on SIGTERM");
    } else {
        ctl.proc.kill();
    }
    drop(ctl);

    let ctl = env.start_controller().await;
    let listed = json::ids(&ctl.cli_json(&["runs", "list", "--state", "queued"]).await);
    assert_eq!(set(&listed), set(&queued), "queued runs after the restart");
    let queue_after = json::ids(&ctl.cli_json(&["queue", "list"]).await);
    assert_eq!(queue_after, queue_before, "queue order after the restart");
    for (id, old) in finished.iter().chain(&queued).zip(&before) {
        let now = durable(&ctl.cli_run(id).await);
        assert_eq!(&now, old, "run {id} changed across the restart");
    }
    for run in &before[..3] {
        let attempts = json::attempts(run);
        assert_eq!(attempts.len(), 1, "{run:#}");
        assert_eq!(str_field(&attempts[0], "agent"), "first");
        assert!(
            str_field(&attempts[0], "output").contains("greeting attempt=1"),
            "{run:#}"
        );
    }

    // A new agent drains the queue.
    let _second = env.start_agent(&ctl, "second", 2).await;
    for (i, id) in queued.iter().enumerate() {
        let run = ctl.wait_run(id, Duration::from_secs(30)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        assert_eq!(run.attempts.len(), 1, "{run:?}");
        assert_eq!(run.attempts[0].agent, "second");
        assert!(run.attempts[0].output.contains(&format!("queued-{i}")), "{run:?}");
    }
    let all = json::ids(&ctl.cli_json(&["runs", "list", "--job", "greet"]).await);
    assert_eq!(
        set(&all),
        set(&finished.iter().chain(&queued).cloned().collect::<Vec<_>>()),
        "runs list --job greet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_keeps_queue_and_history() {
    restart_keeps_queue_and_history(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigkill_keeps_queue_and_history() {
    restart_keeps_queue_and_history(libc::SIGKILL).await;
}

/// The controller dies (SIGKILL) while an agent runs an attempt. A new
/// controller on the same address and database gets the agent back within the
/// attempt's lease, and the agent keeps its attempt: the run ends `succeeded`
/// with that one attempt, and the job ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_crash_with_a_run_in_flight_keeps_the_attempt() {
    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  slow:
    shell: "echo start >> '{}'; sleep 3; echo slept attempt=$WORKER_ATTEMPT"
    retry: {{ max_attempts: 3, initial_delay: 100ms, jitter: 0 }}
"#,
        marks.display()
    ));
    let mut ctl = env.start_controller().await;
    let mut agent = env.start_agent(&ctl, "steady", 1).await;
    let id = ctl.cli_enqueue("slow", &[]).await;
    ctl.wait_state(&id, "running", Duration::from_secs(10)).await;

    let addr = ctl.addr;
    ctl.proc.kill();
    drop(ctl);
    let ctl = env.start_controller_on(addr).await;

    let run = ctl.wait_run(&id, Duration::from_secs(40)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "the attempt was not kept: {run:?}");
    let attempt = &run.attempts[0];
    assert_eq!(attempt.outcome, "succeeded", "{run:?}");
    assert_eq!(attempt.agent, "steady", "{run:?}");
    assert!(attempt.output.contains("slept attempt=1"), "{run:?}");
    let starts = std::fs::read_to_string(&marks).expect("the job's marks");
    assert_eq!(starts.lines().count(), 1, "the job ran more than once: {starts:?}");
    assert!(agent.proc.try_wait().is_none(), "the agent died with the controller");
    let agents = ctl.agents().await;
    assert!(
        agents.iter().any(|a| a.name == "steady" && a.state == "connected"),
        "agent did not reconnect: {agents:?}"
    );
}
