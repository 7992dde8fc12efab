//! The memory budget of queued payloads (`EngineSettings::payload_memory_bytes`):
//! big payloads beyond it wait in the store only, every run still gets its
//! exact payload at dispatch (first attempt, retry, after a restart), and the
//! engine's accounted payload memory never exceeds the budget.
//!
//! The engine runs step by step on a manual clock against a real SQLite file,
//! with fake agents on plain channels (as in `failpoints.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use worker_controller::config::parse_scheduler_yaml;
use worker_controller::engine::{Engine, EngineSettings, EnqueueRequest, ResultMessage, Rounds, SMALL_PAYLOAD_BYTES};
use worker_controller::model::{Outcome, RunState};
use worker_controller::store::Store;
use worker_controller::time::Clock;
use worker_proto::v1::{self as pb, ControllerMessage, Finished, Hello, controller_message::Msg};

const JOBS: &str = "jobs:\n  work:\n    builtin: noop\n    retry: { max_attempts: 2, initial_delay: 1s, jitter: 0 }\n";

/// 2 MiB: three of the 512 KiB payloads below fit, the others do not.
const BUDGET: usize = 2 * 1024 * 1024;

/// A distinct JSON payload of about 512 KiB (multi-byte characters included).
fn big_payload(i: usize) -> String {
    let fill: String = std::iter::repeat_n(['a', 'é', 'z', '"'][i % 4], 170 * 1024)
        .map(|c| if c == '"' { "\\\"".to_string() } else { c.to_string() })
        .collect();
    let payload = format!(
        "{{\"i\":{i},\"fill\":\"{fill}\",\"pad\":\"{}\"}}",
        "x".repeat(512 * 1024 - fill.len())
    );
    assert!(payload.len() > 512 * 1024 && payload.len() < 512 * 1024 + 100);
    payload
}

type Stream = mpsc::UnboundedReceiver<Result<ControllerMessage, tonic::Status>>;

struct Agent {
    connection: u64,
    tx: mpsc::UnboundedSender<Result<ControllerMessage, tonic::Status>>,
    rx: Stream,
}

impl Agent {
    fn assignments(&mut self) -> Vec<pb::Assignment> {
        let mut out = Vec::new();
        while let Ok(Ok(message)) = self.rx.try_recv() {
            if let Some(Msg::Assignment(a)) = message.msg {
                out.push(a);
            }
        }
        out
    }
}

struct Stepped {
    engine: Arc<Engine>,
    rounds: Rounds,
    results: mpsc::UnboundedSender<ResultMessage>,
}

fn settings() -> EngineSettings {
    EngineSettings {
        heartbeat_interval: Duration::from_secs(1),
        lease_timeout: Duration::from_secs(60),
        idempotency_window: Duration::from_secs(3600),
        payload_memory_bytes: BUDGET,
    }
}

async fn open_store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("worker.db").display()))
        .await
        .unwrap()
}

impl Stepped {
    async fn new(store: &Store, clock: &Clock) -> Stepped {
        let jobs = parse_scheduler_yaml(Path::new("scheduler.yaml"), JOBS, &|_| Err("no variables".into())).unwrap();
        let engine = Engine::recover_with_clock(store.clone(), jobs, settings(), clock.clone())
            .await
            .unwrap();
        let (results, rounds) = engine.rounds().unwrap();
        Stepped {
            engine,
            rounds,
            results,
        }
    }

    async fn agent(&self, id: &str, credits: u32) -> Agent {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            agent_id: id.into(),
            name: id.into(),
            host: "test".into(),
            executors: vec!["builtin".into()],
            capacity: 100,
            ..Hello::default()
        };
        let connection = self.engine.register_agent(&hello, tx.clone()).await.unwrap();
        self.engine.add_credits(id, connection, credits);
        Agent { connection, tx, rx }
    }

    /// Runs rounds until `agent` received `n` assignments.
    async fn dispatch(&mut self, agent: &mut Agent, n: usize) -> Vec<pb::Assignment> {
        let mut got = Vec::new();
        for _ in 0..20 {
            self.engine.run_round(&mut self.rounds).await;
            got.extend(agent.assignments());
            if got.len() >= n {
                break;
            }
        }
        assert_eq!(got.len(), n, "assignments received");
        got
    }

    async fn gauge(&self) -> usize {
        let held = self.engine.payload_memory_bytes().await;
        assert!(
            held <= BUDGET,
            "{held} bytes of payloads in memory, over the budget of {BUDGET}"
        );
        held
    }
}

fn request(payload: &str) -> EnqueueRequest {
    EnqueueRequest {
        job: "work".into(),
        payload: payload.into(),
        ..EnqueueRequest::default()
    }
}

/// Every assignment carries the exact payload its run was enqueued with.
fn check_payloads(assignments: &[pb::Assignment], expected: &HashMap<String, String>) {
    for a in assignments {
        let want = expected
            .get(&a.run_id)
            .unwrap_or_else(|| panic!("unexpected run {}", a.run_id));
        assert!(
            a.payload == *want,
            "run {} attempt {}: payload of {} bytes differs from the {} bytes enqueued",
            a.run_id,
            a.attempt,
            a.payload.len(),
            want.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_payloads_beyond_the_budget_wait_in_the_store_and_dispatch_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let clock = Clock::manual(1_800_000_000_000);
    let mut s = Stepped::new(&store, &clock).await;
    let mut expected: HashMap<String, String> = HashMap::new();

    // 40 payloads of 512 KiB through every way in: commit rounds, direct
    // commits (idempotency key), batches, and delayed runs (timers).
    for i in 0..40 {
        let payload = big_payload(i);
        let id = match i % 4 {
            0 => {
                let answer = s.engine.enqueue_in_round(request(&payload)).unwrap();
                s.engine.run_round(&mut s.rounds).await;
                answer.await.unwrap().unwrap().run.id
            }
            1 => {
                let mut r = request(&payload);
                r.idempotency_key = format!("key-{i}");
                s.engine.enqueue(r).await.unwrap().run.id
            }
            2 => s.engine.enqueue_batch(vec![request(&payload)]).await.unwrap()[0]
                .run
                .id
                .clone(),
            _ => {
                let mut r = request(&payload);
                r.delay_ms = 1_000;
                let answer = s.engine.enqueue_in_round(r).unwrap();
                s.engine.run_round(&mut s.rounds).await;
                answer.await.unwrap().unwrap().run.id
            }
        };
        expected.insert(id, payload);
        s.gauge().await;
    }
    let held = s.gauge().await;
    assert_eq!(held / (512 * 1024), 3, "three big payloads fit in 2 MiB: {held}");

    // Small payloads always stay in memory and do not count.
    for i in 0..100 {
        let payload = format!("{{\"small\":{i},\"s\":\"{}\"}}", "s".repeat(SMALL_PAYLOAD_BYTES - 30));
        assert!(payload.len() <= SMALL_PAYLOAD_BYTES);
        let id = s.engine.enqueue_batch(vec![request(&payload)]).await.unwrap()[0]
            .run
            .id
            .clone();
        expected.insert(id, payload);
    }
    assert_eq!(s.gauge().await, held, "small payloads are not counted");

    // The delayed runs become queued; everything is dispatched with its payload.
    clock.advance(1_000);
    assert_eq!(s.engine.release_due().await.unwrap(), 10);
    let mut agent = s.agent("a1", 140).await;
    let first = s.dispatch(&mut agent, 140).await;
    check_payloads(&first, &expected);
    assert_eq!(s.gauge().await, 0, "dispatched runs give their payload memory back");

    // Failed attempts are retried after 1 s: their payloads come from the store.
    for a in first.iter().take(20) {
        s.results
            .send(ResultMessage {
                agent_id: "a1".into(),
                finished: Finished {
                    run_id: a.run_id.clone(),
                    attempt: a.attempt,
                    outcome: Outcome::Failed.to_string(),
                    ..Finished::default()
                },
                reply: agent.tx.clone(),
            })
            .unwrap();
    }
    s.engine.run_round(&mut s.rounds).await;
    s.engine.add_credits("a1", agent.connection, 20);
    for a in first.iter().take(20) {
        assert_eq!(store.run(&a.run_id).await.unwrap().unwrap().state, RunState::Scheduled);
    }
    clock.advance(1_000);
    assert_eq!(s.engine.release_due().await.unwrap(), 20);
    let second = s.dispatch(&mut agent, 20).await;
    assert!(second.iter().all(|a| a.attempt == 2));
    check_payloads(&second, &expected);
    assert_eq!(s.gauge().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reads_no_big_payload_and_dispatches_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let clock = Clock::manual(1_800_000_000_000);
    let mut expected: HashMap<String, String> = HashMap::new();
    {
        let s = Stepped::new(&store, &clock).await;
        for i in 0..40 {
            let payload = big_payload(i);
            let id = s.engine.enqueue_batch(vec![request(&payload)]).await.unwrap()[0]
                .run
                .id
                .clone();
            expected.insert(id, payload);
        }
        let small = "{\"small\":true}".to_string();
        let id = s.engine.enqueue_batch(vec![request(&small)]).await.unwrap()[0]
            .run
            .id
            .clone();
        expected.insert(id, small);
        assert!(s.gauge().await > 0);
    }
    // A restart: the new engine holds no big payload until it dispatches.
    let mut s = Stepped::new(&store, &clock).await;
    assert_eq!(s.gauge().await, 0, "recovery reads no big payload");
    let mut agent = s.agent("a1", 41).await;
    let assigned = s.dispatch(&mut agent, 41).await;
    check_payloads(&assigned, &expected);
    assert_eq!(s.gauge().await, 0);
}
