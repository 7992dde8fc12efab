//! Failure injection: the store's and the loops' fail points (see
//! `store::write` and `server`) armed one at a time against a real engine on
//! a real SQLite file.
//!
//! Two kinds of tests:
//! * step by step: the engine on a manual clock, its rounds run by the test
//!   (no background loops), fake agents on plain channels, so every effect of
//!   a failed commit can be checked before anything else happens;
//! * whole controller: `worker_controller::run` in-process with its gRPC
//!   server, for the loops' supervision (health, exit within a second).
//!
//! Fail points are global to the process: every test holds a
//! [`fail::FailScenario`], which also serializes them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use worker_controller::config::parse_scheduler_yaml;
use worker_controller::engine::round::RoundReport;
use worker_controller::engine::{Engine, EngineSettings, EnqueueRequest, ResultMessage, Rounds};
use worker_controller::error::ErrorCode;
use worker_controller::model::{Outcome, RunState};
use worker_controller::store::Store;
use worker_controller::time::Clock;
use worker_proto::v1::{self as pb, ControllerMessage, Finished, Hello, controller_message::Msg};

const JOBS: &str = "jobs:\n  good:\n    builtin: noop\n  bad:\n    builtin: noop\n  slow:\n    builtin: noop\n    retry: { max_attempts: 3, initial_delay: 1s, jitter: 0 }\n";

/// An engine driven step by step on a manual clock.
struct Stepped {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Arc<Engine>,
    clock: Clock,
    rounds: Rounds,
    results: mpsc::UnboundedSender<ResultMessage>,
}

impl Stepped {
    async fn new() -> Stepped {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("worker.db").display()))
            .await
            .unwrap();
        let jobs = parse_scheduler_yaml(Path::new("scheduler.yaml"), JOBS, &|_| Err("no variables".into())).unwrap();
        let clock = Clock::manual(1_800_000_000_000);
        let settings = EngineSettings {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(5),
            idempotency_window: Duration::from_secs(3600),
            payload_memory_bytes: worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
        };
        let engine = Engine::recover_with_clock(store.clone(), jobs, settings, clock.clone())
            .await
            .unwrap();
        let (results, rounds) = engine.rounds().unwrap();
        Stepped {
            _dir: dir,
            store,
            engine,
            clock,
            rounds,
            results,
        }
    }

    async fn round(&mut self) -> RoundReport {
        self.engine.run_round(&mut self.rounds).await
    }

    /// Registers an agent with `credits` credits; returns its message stream.
    async fn agent(&self, id: &str, credits: u32) -> FakeAgent {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            agent_id: id.into(),
            name: id.into(),
            host: "test".into(),
            executors: vec!["builtin".into()],
            capacity: 8,
            ..Hello::default()
        };
        let connection = self.engine.register_agent(&hello, tx.clone()).await.unwrap();
        self.engine.add_credits(id, connection, credits);
        FakeAgent { id: id.into(), tx, rx }
    }

    /// Sends `agent`'s result for (run, attempt).
    fn finish(&self, agent: &FakeAgent, run_id: &str, attempt: u32, outcome: Outcome) {
        let finished = Finished {
            run_id: run_id.into(),
            attempt,
            outcome: outcome.to_string(),
            ..Finished::default()
        };
        self.results
            .send(ResultMessage {
                agent_id: agent.id.clone(),
                finished,
                reply: agent.tx.clone(),
            })
            .unwrap();
    }

    async fn state(&self, run_id: &str) -> Option<RunState> {
        self.store.run(run_id).await.unwrap().map(|r| r.state)
    }
}

/// An engine on the system clock with its commit and timer loops running.
struct Looped {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Arc<Engine>,
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    /// Kept: the commit loop stops when every result sender is gone.
    _results: mpsc::UnboundedSender<ResultMessage>,
}

impl Looped {
    async fn new(lease_timeout: Duration) -> Looped {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("worker.db").display()))
            .await
            .unwrap();
        let jobs = parse_scheduler_yaml(Path::new("scheduler.yaml"), JOBS, &|_| Err("no variables".into())).unwrap();
        let settings = EngineSettings {
            heartbeat_interval: lease_timeout / 10,
            lease_timeout,
            idempotency_window: Duration::from_secs(3600),
            payload_memory_bytes: worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
        };
        let engine = Engine::recover(store.clone(), jobs, settings).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (results, rounds) = engine.rounds().unwrap();
        let loops = vec![
            tokio::spawn(engine.clone().commit_loop(rounds, stopped.clone())),
            tokio::spawn(engine.clone().timer_loop(stopped)),
        ];
        Looped {
            _dir: dir,
            store,
            engine,
            stop,
            loops,
            _results: results,
        }
    }

    /// Registers agent `a1` (capacity 1) with one credit; returns its stream.
    async fn agent(&self) -> mpsc::UnboundedReceiver<Result<ControllerMessage, tonic::Status>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            agent_id: "a1".into(),
            name: "a1".into(),
            executors: vec!["builtin".into()],
            capacity: 1,
            ..Hello::default()
        };
        let connection = self.engine.register_agent(&hello, tx).await.unwrap();
        self.engine.add_credits("a1", connection, 1);
        rx
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.loops {
            task.await.unwrap();
        }
    }
}

/// How long [`next_assignment`] waits.
const ASSIGNMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The next assignment on an agent's stream (panics after [`ASSIGNMENT_TIMEOUT`]).
async fn next_assignment(rx: &mut mpsc::UnboundedReceiver<Result<ControllerMessage, tonic::Status>>) -> pb::Assignment {
    let deadline = tokio::time::Instant::now() + ASSIGNMENT_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no assignment within {ASSIGNMENT_TIMEOUT:?}; other messages: {seen:?}"));
        match message {
            Some(Ok(ControllerMessage {
                msg: Some(Msg::Assignment(a)),
            })) => return a,
            Some(other) => seen.push(other),
            None => panic!("the agent's stream closed"),
        }
    }
}

fn request(job: &str) -> EnqueueRequest {
    EnqueueRequest {
        job: job.into(),
        ..EnqueueRequest::default()
    }
}

struct FakeAgent {
    id: String,
    tx: mpsc::UnboundedSender<Result<ControllerMessage, tonic::Status>>,
    rx: mpsc::UnboundedReceiver<Result<ControllerMessage, tonic::Status>>,
}

impl FakeAgent {
    /// Every message received so far (Welcome excluded).
    fn received(&mut self) -> Vec<Msg> {
        let mut messages = Vec::new();
        while let Ok(Ok(m)) = self.rx.try_recv() {
            if let Some(msg) = m.msg
                && !matches!(msg, Msg::Welcome(_))
            {
                messages.push(msg);
            }
        }
        messages
    }

    fn assignments(&mut self) -> Vec<pb::Assignment> {
        self.received()
            .into_iter()
            .filter_map(|m| match m {
                Msg::Assignment(a) => Some(a),
                _ => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// A store that refuses writes

/// With the store unreachable, a round's enqueues are refused (the client
/// sees `unavailable` and tries again), and nothing of the round is kept:
/// no run in the store or in memory, no credit spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_round_refuses_its_enqueues_and_keeps_nothing() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut agent = s.agent("a1", 2).await;
    fail::cfg("store::unavailable", "return").unwrap();
    let first = s.engine.enqueue_in_round(request("good")).unwrap();
    let second = s.engine.enqueue_in_round(request("good")).unwrap();
    let report = s.round().await;
    assert_eq!(
        (report.commits, report.created, report.assigned),
        (0, 0, 0),
        "{report:?}"
    );
    for answer in [first, second] {
        let err = answer.await.unwrap().unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    }
    assert!(s.store.runs(None, None, 100).await.unwrap().is_empty());
    let memory = s.engine.snapshot().await;
    assert!(memory.runs.is_empty() && memory.ready.is_empty(), "{memory:?}");
    assert_eq!(memory.agents["a1"].credits, 2, "the credits are given back");
    assert!(agent.assignments().is_empty());

    // The client tries again once the store is back: one run, dispatched.
    fail::remove("store::unavailable");
    let again = s.engine.enqueue_in_round(request("good")).unwrap();
    let report = s.round().await;
    assert_eq!((report.created, report.assigned), (1, 1), "{report:?}");
    let run = again.await.unwrap().unwrap().run;
    assert_eq!(s.state(&run.id).await, Some(RunState::Running));
    assert_eq!(agent.assignments().len(), 1);
    assert_eq!(s.store.runs(None, None, 100).await.unwrap().len(), 1);
    scenario.teardown();
}

/// One enqueue whose row the store refuses fails alone: the round is
/// committed again piece by piece, the others' runs are created and
/// dispatched in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_enqueue_fails_alone() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut agent = s.agent("a1", 4).await;
    fail::cfg("store::poison", "return(bad)").unwrap();
    let good = s.engine.enqueue_in_round(request("good")).unwrap();
    let bad = s.engine.enqueue_in_round(request("bad")).unwrap();
    let good2 = s.engine.enqueue_in_round(request("good")).unwrap();
    let report = s.round().await;
    assert_eq!(
        (report.created, report.assigned, report.failed),
        (2, 2, 1),
        "{report:?}"
    );
    let err = bad.await.unwrap().unwrap_err();
    assert!(err.message.contains("store::poison"), "{err}");
    for answer in [good, good2] {
        let run = answer.await.unwrap().unwrap().run;
        assert_eq!(s.state(&run.id).await, Some(RunState::Running));
    }
    assert_eq!(agent.assignments().len(), 2);
    let runs = s.store.runs(None, None, 100).await.unwrap();
    assert!(runs.iter().all(|r| r.job == "good") && runs.len() == 2, "{runs:?}");
    assert_eq!(s.engine.snapshot().await.agents["a1"].credits, 2);
    assert!(s.engine.failure().is_none());
    scenario.teardown();
}

/// A result whose commit fails is not answered (an agent forgets a result once
/// it is answered), counted, and offered again after a backoff until it is
/// recorded; the other results of its round are recorded at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_recorded_is_offered_again_until_it_is() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut agent = s.agent("a1", 2).await;
    let first = s.engine.enqueue_in_round(request("good")).unwrap();
    let second = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    let (first, second) = (
        first.await.unwrap().unwrap().run.id,
        second.await.unwrap().unwrap().run.id,
    );
    assert_eq!(agent.assignments().len(), 2);

    fail::cfg("store::poison", &format!("return({first})")).unwrap();
    s.finish(&agent, &first, 1, Outcome::Succeeded);
    s.finish(&agent, &second, 1, Outcome::Succeeded);
    let report = s.round().await;
    assert_eq!((report.answered, report.failed), (1, 1), "{report:?}");
    let acks: Vec<_> = agent
        .received()
        .into_iter()
        .filter_map(|m| match m {
            Msg::Ack(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 1, "only the recorded result is answered: {acks:?}");
    assert_eq!((acks[0].run_id.as_str(), acks[0].accepted), (second.as_str(), true));
    assert_eq!(s.state(&second).await, Some(RunState::Succeeded));
    assert_eq!(s.state(&first).await, Some(RunState::Running), "nothing of it is kept");
    assert_eq!(s.rounds.held_results(), 1);
    let failed = |s: &Stepped| {
        s.engine
            .counters()
            .failed_results
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(failed(&s), 1);

    // Not offered again before its backoff (250 ms), then again (still refused).
    s.round().await;
    assert_eq!(failed(&s), 1, "held during its backoff");
    s.clock.advance(300);
    s.round().await;
    assert_eq!(failed(&s), 2, "offered again after the backoff");
    assert_eq!(s.rounds.held_results(), 1);

    // The store takes it again: recorded once, answered once.
    fail::remove("store::poison");
    s.clock.advance(1_000);
    let report = s.round().await;
    assert_eq!(report.answered, 1, "{report:?}");
    assert_eq!(s.state(&first).await, Some(RunState::Succeeded));
    assert!(
        agent
            .received()
            .iter()
            .any(|m| matches!(m, Msg::Ack(a) if a.run_id == first && a.accepted))
    );
    let attempts = s.store.attempts(std::slice::from_ref(&first)).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, Some(Outcome::Succeeded));
    assert_eq!(s.rounds.held_results(), 0);
    scenario.teardown();
}

/// An assignment whose commit fails alone gives its credit back and holds
/// its run back from dispatch for a backoff, so it does not fail every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_that_cannot_be_recorded_holds_its_run_back() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    // Queued before any agent: the runs exist and wait.
    let a = s.engine.enqueue_in_round(request("good")).unwrap();
    let b = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    let (a, b) = (a.await.unwrap().unwrap().run.id, b.await.unwrap().unwrap().run.id);
    fail::cfg("store::poison", &format!("return({a})")).unwrap();
    let mut agent = s.agent("a1", 2).await;
    let report = s.round().await;
    assert_eq!((report.assigned, report.failed), (1, 1), "{report:?}");
    assert_eq!(s.state(&a).await, Some(RunState::Queued));
    assert_eq!(s.state(&b).await, Some(RunState::Running));
    let memory = s.engine.snapshot().await;
    assert!(memory.holds.contains_key(&a), "{memory:?}");
    assert_eq!(memory.agents["a1"].credits, 1, "its credit is back");
    // Held: a round during the hold does not try it again.
    fail::remove("store::poison");
    let report = s.round().await;
    assert_eq!(report.assigned, 0, "{report:?}");
    s.clock.advance(300);
    let report = s.round().await;
    assert_eq!(report.assigned, 1, "{report:?}");
    assert_eq!(s.state(&a).await, Some(RunState::Running));
    assert_eq!(agent.assignments().len(), 2);
    assert!(s.engine.snapshot().await.holds.is_empty());
    scenario.teardown();
}

/// While a result waits to be recorded (the store is down longer than the
/// lease), its attempt keeps its lease: the agent stopped reporting the
/// attempt in its heartbeats when it sent the result, and the controller must
/// not declare it lost and run the job again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_result_keeps_its_lease_while_the_store_is_down() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut agent = s.agent("a1", 1).await;
    let answer = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    let run = answer.await.unwrap().unwrap().run.id;
    assert_eq!(agent.assignments().len(), 1);

    fail::cfg("store::unavailable", "return").unwrap();
    s.finish(&agent, &run, 1, Outcome::Succeeded);
    // Eight seconds of outage against a five-second lease.
    for _ in 0..8 {
        let report = s.round().await;
        assert!(report.answered == 0, "{report:?}");
        s.clock.advance(1_000);
        let _ = s.engine.expire_leases().await;
    }
    let counters = s.engine.counters();
    assert_eq!(counters.lost_attempts.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        counters.failed_results.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "an outage is not the result's own failure"
    );
    assert_eq!(s.engine.snapshot().await.runs[&run].state, RunState::Running);

    fail::remove("store::unavailable");
    s.clock.advance(600);
    let report = s.round().await;
    assert_eq!(report.answered, 1, "{report:?}");
    assert_eq!(s.state(&run).await, Some(RunState::Succeeded));
    let attempts = s.store.attempts(std::slice::from_ref(&run)).await.unwrap();
    assert_eq!(attempts.len(), 1, "the job did not run again");
    assert_eq!(attempts[0].outcome, Some(Outcome::Succeeded));
    scenario.teardown();
}

/// A result sent again (after a reconnect) while its first copy is held is
/// not a second result: the held copy is answered on the new stream once it
/// is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_sent_again_while_held_is_answered_once_on_the_new_stream() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut old = s.agent("a1", 1).await;
    let answer = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    let run = answer.await.unwrap().unwrap().run.id;
    assert_eq!(old.assignments().len(), 1);
    fail::cfg("store::poison", &format!("return({run})")).unwrap();
    s.finish(&old, &run, 1, Outcome::Succeeded);
    s.round().await;
    assert_eq!(s.rounds.held_results(), 1);

    // The agent reconnects (same id, new stream) and sends it again.
    let mut new = s.agent("a1", 1).await;
    s.finish(&new, &run, 1, Outcome::Succeeded);
    fail::remove("store::poison");
    s.clock.advance(300);
    let report = s.round().await;
    assert_eq!(report.answered, 1, "{report:?}");
    let acks = |agent: &mut FakeAgent| {
        agent
            .received()
            .into_iter()
            .filter_map(|m| match m {
                Msg::Ack(a) => Some(a),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let on_new = acks(&mut new);
    assert_eq!(on_new.len(), 1, "{on_new:?}");
    assert!(on_new[0].accepted, "{on_new:?}");
    let on_old = acks(&mut old);
    assert!(on_old.is_empty(), "{on_old:?}");
    assert_eq!(s.state(&run).await, Some(RunState::Succeeded));
    assert_eq!(s.rounds.held_results(), 0);
    scenario.teardown();
}

/// Schedule fires due together are one transaction; when one of them cannot
/// be created, the others still are (the batch is split in halves), each
/// exactly once, and the failed one says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poisoned_fire_among_many_fails_alone() {
    let scenario = fail::FailScenario::setup();
    let s = Stepped::new().await;
    let jobs = s.engine.jobs();
    let (good, bad) = (jobs.get("good").unwrap().clone(), jobs.get("bad").unwrap().clone());
    let mut fires: Vec<_> = (0..40).map(|i| (good.clone(), 60_000 * (i + 1), 0)).collect();
    fires.insert(17, (bad.clone(), 60_000, 0));
    fail::cfg("store::poison", "return(bad)").unwrap();
    let outcomes = s.engine.fire_many(&fires).await;
    fail::remove("store::poison");
    for (outcome, (job, instant, _)) in outcomes.iter().zip(&fires) {
        assert_eq!((&outcome.job.name, outcome.instant), (&job.name, *instant));
        if job.name == "bad" {
            let err = outcome.result.as_ref().unwrap_err();
            assert!(err.message.contains("store::poison"), "{err}");
        } else {
            assert_eq!(outcome.result, Ok(true), "{}", outcome.instant);
        }
    }
    assert_eq!(s.store.runs(Some("good"), None, 100).await.unwrap().len(), 40);
    assert!(s.store.runs(Some("bad"), None, 100).await.unwrap().is_empty());
    // Fired again (a retry after a restart): nothing is created twice.
    let again = s.engine.fire_many(&fires).await;
    assert!(
        again.iter().all(|o| o.result == Ok(false) || o.job.name == "bad"),
        "{again:?}"
    );
    assert_eq!(s.store.runs(Some("good"), None, 100).await.unwrap().len(), 40);
    assert_eq!(s.store.runs(Some("bad"), None, 100).await.unwrap().len(), 1);
    scenario.teardown();
}

// ---------------------------------------------------------------------------
// Commits that fail in doubt

/// A commit that fails after the data is written is read back: the enqueue
/// succeeds (one run, not two), the result is acknowledged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_after_writing_is_read_back_as_committed() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    let mut agent = s.agent("a1", 1).await;
    fail::cfg("store::in_doubt", "return").unwrap();
    let answer = s.engine.enqueue_in_round(request("good")).unwrap();
    let report = s.round().await;
    assert_eq!(
        (report.created, report.assigned, report.failed),
        (1, 1, 0),
        "{report:?}"
    );
    let run = answer.await.unwrap().unwrap().run.id;
    assert_eq!(s.state(&run).await, Some(RunState::Running));
    let assignment = agent.assignments().remove(0);

    s.finish(&agent, &run, assignment.attempt, Outcome::Succeeded);
    let report = s.round().await;
    assert_eq!(report.answered, 1, "{report:?}");
    fail::remove("store::in_doubt");
    assert_eq!(s.state(&run).await, Some(RunState::Succeeded));
    let transitions = s.store.transitions(&run).await.unwrap();
    let moves: Vec<_> = transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        moves,
        [
            (None, RunState::Queued),
            (Some(RunState::Queued), RunState::Running),
            (Some(RunState::Running), RunState::Succeeded)
        ]
    );
    assert!(s.engine.snapshot().await.runs.is_empty());
    assert!(s.engine.failure().is_none());
    scenario.teardown();
}

/// A commit lost in doubt (not written) is read back as not committed: the
/// enqueue is refused, nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_in_doubt_is_refused_and_keeps_nothing() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    fail::cfg("store::in_doubt", "return(lost)").unwrap();
    let answer = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    assert!(answer.await.unwrap().is_err());
    assert!(s.store.runs(None, None, 10).await.unwrap().is_empty());
    assert!(s.engine.snapshot().await.runs.is_empty());
    assert!(s.engine.failure().is_none());
    scenario.teardown();
}

/// A commit in doubt that cannot be read back leaves memory untrustworthy:
/// the engine stops and refuses every later write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_commit_stops_the_engine() {
    let scenario = fail::FailScenario::setup();
    let mut s = Stepped::new().await;
    fail::cfg("store::in_doubt", "return(unverifiable)").unwrap();
    let answer = s.engine.enqueue_in_round(request("good")).unwrap();
    s.round().await;
    assert!(answer.await.unwrap().is_err());
    let reason = s.engine.failure().expect("the engine stopped");
    assert!(reason.contains("its outcome cannot be known"), "{reason}");
    fail::remove("store::in_doubt");
    let keyed = EnqueueRequest {
        idempotency_key: "k".into(),
        ..request("good")
    };
    let err = s.engine.enqueue(keyed).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(err.message.contains("stopping after an internal error"), "{err}");
    scenario.teardown();
}

// ---------------------------------------------------------------------------
// Slow commits

/// Slow commits (300 ms each) delay everything but lose nothing: concurrent
/// enqueues are grouped into few rounds and all answered, and heartbeats
/// that arrive while a commit holds the engine keep a running attempt's
/// lease alive (they wait in the inbox, not behind the lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_commits_delay_but_lose_nothing() {
    let scenario = fail::FailScenario::setup();
    let looped = Looped::new(Duration::from_millis(1_000)).await;
    let (engine, store) = (looped.engine.clone(), looped.store.clone());

    // One running attempt, heartbeating every 100 ms.
    let mut rx = looped.agent().await;
    let running = engine.enqueue(request("slow")).await.unwrap().run.id;
    let assignment = next_assignment(&mut rx).await;
    assert_eq!(assignment.run_id, running);
    let heartbeats = {
        let engine = engine.clone();
        let held = vec![pb::InFlight {
            run_id: running.clone(),
            attempt: 1,
        }];
        // Pacing, not a wait: an agent's heartbeat every 100 ms, until aborted below.
        tokio::spawn(async move {
            loop {
                engine.renew_leases("a1", &held);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    fail::cfg("store::slow", "return(300)").unwrap();
    let started = Instant::now();
    let mut enqueues = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let engine = engine.clone();
        enqueues.spawn(async move { engine.enqueue(request("good")).await });
    }
    let mut created = 0;
    // 30 commits of 300 ms one after the other would take 9 s: twice that is
    // a hang, not slowness.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    while let Some(result) = tokio::time::timeout_at(deadline, enqueues.join_next())
        .await
        .unwrap_or_else(|_| panic!("only {created} of 30 enqueues answered within 18 s of slow commits"))
    {
        result.unwrap().unwrap();
        created += 1;
    }
    let took = started.elapsed();
    // Five more slow commits, one after the other: more than the lease
    // passes while commits hold the engine, and the timer loop sweeps.
    for _ in 0..5 {
        engine.enqueue(request("good")).await.unwrap();
    }
    fail::remove("store::slow");
    heartbeats.abort();

    assert_eq!(created, 30);
    assert_eq!(
        store.runs(Some("good"), None, 100).await.unwrap().len(),
        35,
        "every answered enqueue is in the store, once"
    );
    // 30 commits of 300 ms one after the other would take 9 s.
    assert!(took < Duration::from_secs(6), "enqueues were grouped: {took:?}");
    assert_eq!(
        engine
            .counters()
            .lost_attempts
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "heartbeats kept the lease alive through slow commits"
    );
    assert_eq!(store.run(&running).await.unwrap().unwrap().state, RunState::Running);
    looped.stop().await;
    scenario.teardown();
}

/// On a quiet controller (the commit loop running, nothing else happening),
/// a run held back after its assignment failed alone is assigned when its
/// hold ends: the loop wakes for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_run_is_assigned_when_its_hold_ends_on_a_quiet_controller() {
    let scenario = fail::FailScenario::setup();
    let looped = Looped::new(Duration::from_secs(5)).await;
    let (engine, store) = (looped.engine.clone(), looped.store.clone());
    let run = engine.enqueue(request("good")).await.unwrap().run.id;

    fail::cfg("store::poison", &format!("return({run})")).unwrap();
    let mut rx = looped.agent().await;
    let failed = || {
        engine
            .counters()
            .failed_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed() == 0 {
        assert!(Instant::now() < deadline, "the assignment was not tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fail::remove("store::poison");
    let assignment = tokio::time::timeout(Duration::from_secs(5), next_assignment(&mut rx))
        .await
        .expect("assigned once its hold ended, with nothing else happening");
    assert_eq!(assignment.run_id, run);
    assert_eq!(store.run(&run).await.unwrap().unwrap().state, RunState::Running);
    looped.stop().await;
    scenario.teardown();
}

// ---------------------------------------------------------------------------
// Supervised loops (the whole controller)

/// A controller started in-process; `run` returns when it stops.
struct Running {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    handle: tokio::task::JoinHandle<Result<(), worker_controller::RunError>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_controller() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("scheduler.yaml"), JOBS).unwrap();
    let config = worker_controller::ControllerConfig {
        config: worker_controller::config::load_dir(&config_dir).unwrap(),
        config_dir,
        db_url: format!("sqlite://{}", dir.path().join("worker.db").display()),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        engine: EngineSettings {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(3),
            idempotency_window: Duration::from_secs(3600),
            payload_memory_bytes: worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
        },
        alerts: Default::default(),
        dev_agent_capacity: None,
        shutdown_timeout: Duration::from_secs(5),
        tls: None,
        auth: Default::default(),
        insecure_no_auth: false,
        limits: Default::default(),
        retention: Default::default(),
        ha: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(worker_controller::run(
        config,
        async move {
            let _ = stopped.await;
        },
        move |listening: worker_controller::Listening| {
            let _ = ready_tx.send(listening.grpc);
        },
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the controller starts")
        .unwrap();
    Running {
        _dir: dir,
        addr,
        handle,
        _stop: stop,
    }
}

/// The health status stream of the whole server ("").
async fn watch_health(addr: std::net::SocketAddr) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut stream = client
        .watch(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the first health status within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    stream
}

async fn enqueue_over_grpc(addr: std::net::SocketAddr) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::controller_service_client::ControllerServiceClient::new(channel);
    // The controller may stop while answering: only the request matters.
    let _ = client
        .enqueue(pb::EnqueueRequest {
            job: "good".into(),
            ..Default::default()
        })
        .await;
}

/// Waits for `run` to return; it must fail with a reason containing `why`
/// within `within` of `since`.
async fn expect_failed_exit(running: Running, since: Instant, why: &str, within: Duration) {
    let result = tokio::time::timeout(Duration::from_secs(10), running.handle)
        .await
        .expect("the controller stops")
        .unwrap();
    let took = since.elapsed();
    let err = result.expect_err("an internal failure is an error");
    assert!(matches!(err, worker_controller::RunError::Failed(_)), "{err:?}");
    assert!(err.to_string().contains(why), "{err}");
    assert!(took < within, "stopped {took:?} after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_commit_loop_stops_the_controller_within_a_second() {
    let scenario = fail::FailScenario::setup();
    let running = start_controller().await;
    let mut health = watch_health(running.addr).await;
    fail::cfg("engine::commit_loop", "panic(injected)").unwrap();
    let since = Instant::now();
    // The loop evaluates the fail point when it turns: give it work.
    enqueue_over_grpc(running.addr).await;
    let status = tokio::time::timeout(Duration::from_secs(5), health.message())
        .await
        .expect("health changes")
        .ok()
        .flatten()
        .map(|m| m.status());
    assert_eq!(
        status,
        Some(tonic_health::pb::health_check_response::ServingStatus::NotServing),
        "health reports NOT_SERVING before the controller exits"
    );
    // It has 700 ms once it notices; the slack is for a loaded machine.
    expect_failed_exit(
        running,
        since,
        "the commit loop panicked: injected",
        Duration::from_secs(2),
    )
    .await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_ends_stops_the_controller() {
    let scenario = fail::FailScenario::setup();
    let running = start_controller().await;
    let since = Instant::now();
    // The timer loop turns at least every 250 ms.
    fail::cfg("engine::timer_loop", "return").unwrap();
    expect_failed_exit(running, since, "the timer loop ended", Duration::from_secs(2)).await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_stops_the_controller() {
    let scenario = fail::FailScenario::setup();
    let running = start_controller().await;
    fail::cfg("store::in_doubt", "return(unverifiable)").unwrap();
    let since = Instant::now();
    enqueue_over_grpc(running.addr).await;
    // Reading the commit back is tried for 1.6 s before the engine gives up.
    expect_failed_exit(running, since, "the engine stopped", Duration::from_secs(4)).await;
    scenario.teardown();
}
