//! The priority queue: dispatch order, and `--dev` (the in-process agent).

use std::collections::HashMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use worker_proto::v1 as pb;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, parse_ts, wait_for};

/// One agent with one slot, kept busy; runs enqueued meanwhile are dispatched
/// critical > high > normal > low, FIFO within a priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_order_fifo_within_priority() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  blocker:
    builtin: { name: sleep, duration: 3s }
  quick:
    shell: "echo quick-$WORKER_RUN_ID"
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "solo", 1).await;

    let blocker = ctl.cli_enqueue("blocker", &[]).await;
    ctl.wait_state(&blocker, "running", Duration::from_secs(10)).await;

    let order = ["low", "normal", "high", "critical", "high", "low"];
    let mut ids = Vec::new();
    for p in order {
        ids.push(ctl.cli_enqueue("quick", &["--priority", p]).await);
    }
    let blocker_run = ctl.get_run(&blocker).await;
    assert_eq!(
        blocker_run.state, "running",
        "the blocker must still occupy the only slot while the six runs are enqueued (else the test proves nothing)"
    );
    for (id, p) in ids.iter().zip(order) {
        let run = ctl.cli_run(id).await;
        assert_eq!(str_field(&run, "state"), "queued", "run {id}: {run:#}");
        assert_eq!(str_field(&run, "priority"), p, "run {id}: {run:#}");
    }
    let expected: Vec<String> = [3, 2, 4, 1, 0, 5].iter().map(|&i| ids[i].clone()).collect();
    let names: HashMap<&String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id, format!("{}#{i}", order[i])))
        .collect();
    let label = |v: &[String]| {
        v.iter()
            .map(|id| names.get(id).cloned().unwrap_or(id.clone()))
            .collect::<Vec<_>>()
    };

    // `queue list` shows queued runs in dispatch order.
    let queue = ctl.cli_json(&["queue", "list"]).await;
    let queued = json::ids(&queue);
    assert_eq!(
        label(&queued),
        label(&expected),
        "queue list is not in dispatch order: {queue:#}"
    );

    // After the blocker, they run one at a time in priority order.
    let mut started = Vec::new();
    for id in &ids {
        let run = ctl.wait_run(id, Duration::from_secs(30)).await;
        assert_eq!(run.state, "succeeded", "run {id}: {run:?}");
        assert_eq!(run.attempts.len(), 1, "run {id}: {run:?}");
        let a = &run.attempts[0];
        assert_eq!(a.agent, "solo");
        assert!(
            a.output.contains(&format!("quick-{id}")),
            "output of {id}: {:?}",
            a.output
        );
        started.push((
            parse_ts("started_at", &a.started_at),
            parse_ts("finished_at", &a.finished_at),
            id.clone(),
        ));
    }
    started.sort();
    for w in started.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "two attempts with the same started_at ({}), cannot order: {started:?}",
            w[0].0
        );
        assert!(
            w[1].0 >= w[0].1,
            "capacity 1 but attempts overlap: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let blocker_done = ctl.wait_run(&blocker, Duration::from_secs(10)).await;
    assert_eq!(blocker_done.state, "succeeded");
    let blocker_finished = parse_ts("finished_at", &blocker_done.attempts[0].finished_at);
    assert!(
        started[0].0 >= blocker_finished,
        "a quick run started before the blocker finished"
    );
    let actual: Vec<String> = started.into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(label(&actual), label(&expected), "execution order");
}

/// `--dev` runs an in-process agent: the controller alone runs a shell job;
/// `WatchEvents` streams its lifecycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_jobs_without_an_agent_process() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  hello:
    shell: "echo hello-from-dev job=$WORKER_JOB attempt=$WORKER_ATTEMPT; cat"
"#,
    );
    let ctl = env.start_controller_with(&["--dev"]).await;

    let mut client = ctl.client().await;
    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            job: "hello".into(),
            ..Default::default()
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    let out = ctl
        .cli(&[
            "enqueue",
            "hello",
            "--payload",
            r#"{"greeting":"dev-payload-7"}"#,
            "--wait",
        ])
        .await
        .expect_code(0);
    let run = out.json();
    let id = str_field(&run, "id").to_string();
    assert_eq!(str_field(&run, "state"), "succeeded", "{run:#}");
    assert_eq!(str_field(&run, "job"), "hello");
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 1, "{run:#}");
    let a = &attempts[0];
    assert_eq!(str_field(a, "outcome"), "succeeded");
    assert_eq!(json::opt_i64(a, "exit_code"), Some(0));
    assert!(!str_field(a, "agent").is_empty(), "attempt without agent: {run:#}");
    let output = str_field(a, "output");
    assert!(
        output.contains("hello-from-dev job=hello attempt=1"),
        "output: {output:?}"
    );
    assert!(
        output.contains("dev-payload-7"),
        "payload not on stdin; output: {output:?}"
    );

    // The event stream saw the run go through running to succeeded, in order.
    let mut states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while states.last().map(String::as_str) != Some("succeeded") {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no `succeeded` event for {id} within 10s; saw {states:?}"))
            .unwrap_or_else(|| panic!("event stream ended; saw {states:?}"))
            .expect("event");
        assert_eq!(ev.job, "hello", "filter by job: {ev:?}");
        if ev.run_id == id {
            parse_ts("event at", &ev.at);
            states.push(ev.state);
        }
    }
    let pos = |s: &str| states.iter().position(|x| x == s);
    assert!(pos("running").is_some(), "no running event: {states:?}");
    assert!(pos("running") < pos("succeeded"), "events out of order: {states:?}");
    if let Some(q) = pos("queued") {
        assert!(q < pos("running").unwrap(), "events out of order: {states:?}");
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn process_gone(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if !alive {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// `runs cancel` on a queued run and on a running one: both end `cancelled`,
/// the running attempt's whole process group is killed, nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_runs() {
    let env = TestEnv::new();
    let pidfile = env.path().join("child.pid");
    env.write_config(&format!(
        r#"
jobs:
  long:
    shell:
      command: |
        sleep 60 &
        echo $! > "$PIDFILE"
        echo started
        wait
      env: {{ PIDFILE: "{}" }}
    retry: {{ max_attempts: 3, initial_delay: 100ms, jitter: 0 }}
"#,
        pidfile.display()
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "canceller", 1).await;

    let running = ctl.cli_enqueue("long", &[]).await;
    ctl.wait_state(&running, "running", Duration::from_secs(10)).await;
    let queued = ctl.cli_enqueue("long", &[]).await;
    assert_eq!(ctl.get_run(&queued).await.state, "queued");

    let out = ctl.cli_json(&["runs", "cancel", &queued]).await;
    assert_eq!(str_field(&out, "state"), "cancelled", "{out:#}");
    let run = ctl.wait_run(&queued, Duration::from_secs(5)).await;
    assert_eq!(run.state, "cancelled");
    assert!(run.attempts.is_empty(), "a cancelled queued run ran: {run:?}");

    let pid: i32 = wait_for("the job to write its child pid", Duration::from_secs(10), || async {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "no pid file yet".to_string())
    })
    .await;
    assert!(!process_gone(pid), "the job's child should be running");
    ctl.cli(&["runs", "cancel", &running]).await.expect_code(0);
    let run = ctl.wait_run(&running, Duration::from_secs(15)).await;
    assert_eq!(run.state, "cancelled", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "a cancelled run was retried: {run:?}");
    assert_eq!(run.attempts[0].outcome, "cancelled", "{run:?}");
    wait_for(
        "the job's child process to be killed",
        Duration::from_secs(10),
        || async {
            if process_gone(pid) {
                Ok(())
            } else {
                Err(format!("pid {pid} alive"))
            }
        },
    )
    .await;
    // The slot is free again: a new run starts.
    let next = ctl.cli_enqueue("long", &[]).await;
    ctl.wait_state(&next, "running", Duration::from_secs(10)).await;
    ctl.cli(&["runs", "cancel", &next]).await.expect_code(0);
    let run = ctl.wait_run(&next, Duration::from_secs(15)).await;
    assert_eq!(run.state, "cancelled", "{run:?}");
}
