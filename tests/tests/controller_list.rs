//! `--controller` with several addresses: the agent and `workerctl` find the
//! controller that serves.
//!
//! Two real controllers on one database need PostgreSQL and leadership, so
//! the addresses that do not serve here are an address where nothing listens
//! and a stand-in standby: a real gRPC server on loopback that answers every
//! call as a standby does (`UNAVAILABLE`, `standby: ...`, the leader's URL in
//! the `worker-leader` metadata), naming the real controller.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use worker_tests::json::{self, str_field};
use worker_tests::{Controller, TestEnv, run_cli, wait_for};

const JOBS: &str = r#"
jobs:
  hello:
    shell: "echo hello from $WORKER_RUN_ID"
    retry: { max_attempts: 1 }
"#;

/// A loopback address where nothing listens.
fn nothing_listens() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("address"))
}

/// A stand-in standby naming `leader`; returns its URL and how many calls it
/// refused.
async fn standby_naming(leader: &str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let refused = Arc::new(AtomicUsize::new(0));
    let (leader, count) = (leader.to_string(), refused.clone());
    let router = axum::Router::new().fallback(move || {
        count.fetch_add(1, Ordering::SeqCst);
        let message = format!("standby: this controller does not lead; the leader is at {leader}");
        let leader = leader.clone();
        async move {
            (
                [
                    ("content-type", "application/grpc".to_string()),
                    ("grpc-status", "14".to_string()),
                    ("grpc-message", message),
                    (worker_proto::LEADER_HEADER, leader),
                ],
                axum::body::Body::empty(),
            )
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, refused)
}

/// `workerctl --controller CONTROLLERS -o json ARGS...`.
async fn cli(controllers: &str, args: &[&str]) -> worker_tests::CliOutput {
    let mut full = vec!["--controller", controllers, "-o", "json"];
    full.extend_from_slice(args);
    run_cli(&full).await
}

/// `jobs list` and `enqueue hello --wait` through `controllers` work.
async fn workerctl_works_through(controllers: &str) {
    let jobs = cli(controllers, &["jobs", "list"]).await.expect_code(0).json();
    assert!(
        json::as_array(&jobs).iter().any(|j| str_field(j, "name") == "hello"),
        "{jobs:#}"
    );
    let run = cli(controllers, &["enqueue", "hello", "--wait"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(str_field(&run, "state"), "succeeded", "{run:#}");
}

/// Runs `hello` and checks that `agent` ran it.
async fn agent_runs_a_job(ctl: &Controller, agent: &str) {
    let id = ctl.cli_enqueue("hello", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.attempts[0].agent, agent, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_where_nothing_listens_is_skipped() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let controllers = format!("{},{}", nothing_listens(), ctl.url);

    let agent = env.spawn_agent(&controllers, "listed", 1, &[]);
    let agent = ctl.connected(agent).await;
    agent_runs_a_job(&ctl, "listed").await;
    let log = agent.proc.stderr_all();
    assert!(log.contains("skipped a controller"), "{log}");
    assert!(
        log.contains(&format!("connected to controller controller={}", ctl.url)),
        "{log}"
    );

    workerctl_works_through(&controllers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_sends_agents_and_workerctl_to_the_leader() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let (standby, refused) = standby_naming(&ctl.url).await;

    // The agent knows only the standby, and gets to the leader it names.
    let agent = env.spawn_agent(&standby, "hinted", 1, &[]);
    let agent = ctl.connected(agent).await;
    assert!(refused.load(Ordering::SeqCst) >= 1, "the standby was not asked");
    agent_runs_a_job(&ctl, "hinted").await;
    let log = agent.proc.stderr_all();
    assert!(log.contains("standby: this controller does not lead"), "{log}");
    assert!(
        log.contains(&format!("connected to controller controller={}", ctl.url)),
        "{log}"
    );

    // workerctl with the standby first: every call is answered by the leader.
    let before = refused.load(Ordering::SeqCst);
    workerctl_works_through(&format!("{standby},{}", ctl.url)).await;
    assert!(refused.load(Ordering::SeqCst) > before, "the standby was not asked");
    // ... and with a leader outside the list: a dead address, then the standby.
    workerctl_works_through(&format!("{},{standby}", nothing_listens())).await;

    // workerctl with only the standby: the standby's answer, naming the leader.
    let out = cli(&standby, &["jobs", "list"]).await.expect_code(4);
    let expected = format!(
        "error: {standby}: standby: this controller does not lead; the leader is at {}",
        ctl.url
    );
    assert_eq!(out.stderr.trim(), expected);
}

/// The agent's controller dies while it runs an attempt; the controller
/// that takes over (same database) listens at the next address of the
/// agent's list. The agent moves there within the attempt's lease and keeps
/// the attempt: one attempt, run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_survives_a_move_to_another_address() {
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
    let next = nothing_listens();
    let agent = env.spawn_agent(&format!("{},{next}", ctl.url), "mover", 1, &[]);
    let agent = ctl.connected(agent).await;
    let id = ctl.cli_enqueue("slow", &[]).await;
    ctl.wait_state(&id, "running", Duration::from_secs(10)).await;

    ctl.proc.kill();
    drop(ctl);
    let addr = next.trim_start_matches("http://").parse().expect("address");
    let ctl = env.start_controller_on(addr).await;

    let run = ctl.wait_run(&id, Duration::from_secs(40)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "the attempt was not kept: {run:?}");
    assert_eq!(run.attempts[0].agent, "mover", "{run:?}");
    assert!(run.attempts[0].output.contains("slept attempt=1"), "{run:?}");
    let starts = std::fs::read_to_string(&marks).expect("the job's marks");
    assert_eq!(starts.lines().count(), 1, "the job ran more than once: {starts:?}");
    wait_for("the agent to log its move", Duration::from_secs(10), || {
        let log = agent.proc.stderr_all();
        let moved = format!("controller={next}");
        async move {
            if log.contains("reconnected to controller") && log.contains(&moved) {
                Ok(())
            } else {
                Err(log)
            }
        }
    })
    .await;
}
