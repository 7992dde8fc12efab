//! Model-based test of the engine: seeded random sequences of operations
//! run against the real engine (SQLite store, manual clock, no background
//! loops), and after every step the engine's answers, messages, memory and
//! store are compared with a simple reference model.
//!
//! Layout:
//!
//! * [`config`]: the jobs and agents, and the `scheduler.yaml` made from them;
//! * [`reference`]: the reference model, the oracle (the engine's rules
//!   as plain code): its state and how runs move;
//! * [`actions`]: what each operation on the engine must do, in model terms;
//! * [`ops`]: the operations and how they are drawn from a seeded RNG;
//! * [`harness`]: drives the engine one operation at a time and plays the agents;
//! * [`checks`]: the invariants checked after every step (numbered as in the
//!   module's docs: state, terminal runs, attempts, credits, dispatch order,
//!   recovery, legal transitions);
//! * this file: the runner.
//!
//! The operations of a sequence are a function of its seed only (runs are
//! named by creation index, never by id), so a failure replays exactly:
//!
//! ```text
//! WORKER_MODEL_SEED=S cargo test -p worker-controller --test model
//! ```
//!
//! runs that one sequence and prints its whole op log. `WORKER_MODEL_CASES=N`
//! runs N sequences instead of the default 500 (`WORKER_MODEL_THREADS`
//! spreads them over threads; default: the machine's cores).

#[path = "model/actions.rs"]
mod actions;
#[path = "model/checks.rs"]
mod checks;
#[path = "model/config.rs"]
mod config;
#[path = "model/harness.rs"]
mod harness;
#[path = "model/ops.rs"]
mod ops;
#[path = "model/reference.rs"]
mod reference;

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use checks::Checker;
use harness::Harness;
use ops::{Describe, Op};
use reference::{Request, Sent};
use worker_controller::model::RunState;
use worker_controller::store::StateChange;

/// Sequences run by default.
const DEFAULT_CASES: usize = 500;
/// The seeds of the default run derive from this one.
const BASE_SEED: u64 = 0x5eed_0fe4_91e5;
/// Operations per sequence (drawn from the seed).
const STEPS: std::ops::RangeInclusive<usize> = 30..=60;
/// Operations shown before a failure (all of them when replaying one seed).
const LOG_TAIL: usize = 20;

/// Where a sequence's operations come from.
enum Source {
    /// Drawn with an RNG seeded with this.
    Seed(u64),
    /// A fixed list: a regression test, independent of how ops are drawn.
    Fixed(&'static str, Vec<Op>),
}

/// A sequence that failed.
struct Failure {
    /// The seed, when the operations were drawn from one.
    seed: Option<u64>,
    /// "seed S", or "regression NAME".
    what: String,
    step: usize,
    message: String,
    log: Vec<String>,
}

/// What a passing sequence did.
#[derive(Default)]
struct Stats {
    steps: usize,
    runs: usize,
    /// How often each event happened (`WORKER_MODEL_STATS=1` prints them).
    events: std::collections::BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.steps += other.steps;
        self.runs += other.runs;
        for (k, v) in other.events {
            *self.events.entry(k).or_default() += v;
        }
    }
}

/// The seed of the `i`-th sequence (splitmix64 of the base seed and `i`).
fn seed_of(i: usize) -> u64 {
    let mut z = BASE_SEED.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs a sequence on its own single-threaded runtime.
fn run_sequence(source: Source) -> Result<Stats, Failure> {
    let (seed, what) = match &source {
        Source::Seed(seed) => (Some(*seed), format!("seed {seed}")),
        Source::Fixed(name, _) => (None, format!("regression {name}")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    let step = std::sync::Arc::new(AtomicUsize::new(0));
    let run = {
        let (log, step) = (log.clone(), step.clone());
        async move {
            let (mut rng, fixed) = match source {
                Source::Seed(seed) => (Some(StdRng::seed_from_u64(seed)), Vec::new()),
                Source::Fixed(_, ops) => (None, ops),
            };
            let steps = match &mut rng {
                Some(rng) => rng.random_range(STEPS),
                None => fixed.len(),
            };
            let mut h = Harness::start().await?;
            let mut checker = Checker::default();
            checker.check(&mut h).await?;
            for i in 1..=steps {
                step.store(i, Ordering::Relaxed);
                let op = match &mut rng {
                    Some(rng) => ops::generate(&h.model, rng),
                    None => fixed[i - 1].clone(),
                };
                log.lock().unwrap().push(format!("{i:>3}. {}", Describe(&op, &h.model)));
                h.apply(&op).await?;
                checker.check(&mut h).await?;
            }
            step.store(steps + 1, Ordering::Relaxed);
            checker.finish(&mut h).await?;
            let mut events = std::mem::take(&mut h.model.events);
            for run in &h.model.runs {
                for (from, to) in &run.transitions {
                    let from = from.map_or("created".to_string(), |f| f.to_string());
                    *events.entry(format!("transition {from} -> {to}")).or_default() += 1;
                }
            }
            Ok::<Stats, String>(Stats {
                steps,
                runs: h.model.runs.len(),
                events,
            })
        }
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(run)));
    let message = match outcome {
        Ok(Ok(stats)) => return Ok(stats),
        Ok(Err(message)) => message,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("[harness] panicked: {text}")
        }
    };
    let log = std::mem::take(&mut *log.lock().unwrap());
    Err(Failure {
        seed,
        what,
        step: step.load(Ordering::Relaxed),
        message,
        log,
    })
}

/// Prints a failure: seed, step, what, the last operations, how to replay.
fn report(failure: &Failure, whole_log: bool) -> String {
    let from = if whole_log {
        0
    } else {
        failure.log.len().saturating_sub(LOG_TAIL)
    };
    let replay = failure.seed.map_or(String::new(), |seed| {
        format!("\nreplay: WORKER_MODEL_SEED={seed} cargo test -p worker-controller --test model")
    });
    format!(
        "model: {} failed at step {}: {}\n{} operations:\n{}{replay}",
        failure.what,
        failure.step,
        failure.message,
        if whole_log { "all" } else { "last" },
        failure.log[from..].join("\n"),
    )
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

#[test]
fn engine_agrees_with_the_reference_model() {
    if let Some(seed) = env_number("WORKER_MODEL_SEED") {
        match run_sequence(Source::Seed(seed)) {
            Ok(stats) => eprintln!("model: seed {seed} passed ({} steps, {} runs)", stats.steps, stats.runs),
            Err(failure) => panic!("{}", report(&failure, true)),
        }
        return;
    }
    let cases = env_number("WORKER_MODEL_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let threads = env_number("WORKER_MODEL_THREADS")
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 16);
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<(usize, Failure)>> = Mutex::new(Vec::new());
    let totals = Mutex::new(Stats::default());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cases {
                        break;
                    }
                    match run_sequence(Source::Seed(seed_of(i))) {
                        Ok(stats) => totals.lock().unwrap().add(stats),
                        Err(failure) => {
                            failures.lock().unwrap().push((i, failure));
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(i, _)| *i);
    if let Some((_, failure)) = failures.first() {
        panic!("{}", report(failure, false));
    }
    let totals = totals.into_inner().unwrap();
    if env_number("WORKER_MODEL_STATS").is_some_and(|n| n > 0) {
        for (event, count) in &totals.events {
            eprintln!("{count:>8}  {event}");
        }
    }
    eprintln!(
        "model: {cases} sequences passed ({} steps, {} runs) in {:.1} s on {threads} thread(s)",
        totals.steps,
        totals.runs,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Regressions: engine bugs the sequences found, as fixed lists of operations
// (a seed's sequence changes whenever the way operations are drawn does).

/// Runs a fixed list of operations with every check after each step.
fn regression(name: &'static str, ops: Vec<Op>) {
    if let Err(failure) = run_sequence(Source::Fixed(name, ops)) {
        panic!("{}", report(&failure, true));
    }
}

fn job(name: &str) -> usize {
    config::job_index(name).expect("a configured job")
}

fn request(name: &str, delay_ms: u64) -> Request {
    Request {
        job: job(name),
        priority: None,
        delay_ms,
        key: None,
        deps: Vec::new(),
    }
}

/// `agent` reports (run, attempt) succeeded.
fn succeeded(agent: usize, run: usize, attempt: u32) -> Op {
    Op::Result {
        agent,
        sent: Sent {
            run,
            attempt,
            outcome: "succeeded".into(),
            permanent: false,
        },
        twice: false,
    }
}

fn pull(agent: usize) -> Op {
    Op::Pull {
        agent,
        credits: 1,
        stale: false,
    }
}

/// A plain enqueue accepted before its job was deleted used to become a run
/// of the deleted job in the next round (queued forever, moved to the DLQ
/// at the next restart), although `delete_job` refuses jobs with unfinished
/// runs. Now the round refuses it (`not_found`), and `delete_job` holds the
/// core lock until the definition is gone.
#[test]
fn regression_a_job_deleted_while_its_plain_enqueue_waits_gets_no_run() {
    regression(
        "plain enqueue of a deleted job",
        vec![
            Op::Enqueue(request("alpha", 0)),
            Op::DeleteJob(job("alpha")),
            Op::Round,
            Op::RestoreJob(job("alpha")),
            Op::Restart,
            Op::Enqueue(request("alpha", 0)),
            Op::Round,
        ],
    );
}

/// A blocked run enqueued with a delay lost it at a restart once an
/// upstream change had rewritten its row (the store writes every change's
/// `not_before`, and a blocked -> blocked change carried none): released
/// after the restart, it was queued before its `not_before`. r0 build,
/// r1 test, r2 deploy (1 s delay, waits for both).
#[test]
fn regression_a_blocked_run_keeps_its_delay_across_a_restart() {
    regression(
        "blocked run delay across a restart",
        vec![
            Op::EnqueueDirect(request("deploy", 1_000)),
            pull(0),
            Op::Round,
            succeeded(0, 0, 1),
            Op::Round,
            pull(0),
            Op::Round,
            Op::Restart,
            succeeded(0, 1, 1),
            Op::Round,
            Op::ReleaseDue,
            Op::Advance(1_000),
            Op::ReleaseDue,
        ],
    );
}

/// The store applies a change only where its run is still in the change's
/// `from` state, so a change computed from a stale picture of a run never
/// lands. No sequence reaches this against a correct engine (its memory is
/// the store's), so here the run moves behind the engine's back: another
/// writer cancels a queued run in the store. The dispatcher's
/// queued -> running must then be refused whole (no attempt either), and the
/// engine must stop: its memory no longer matches the store.
#[test]
fn a_move_from_a_state_the_run_has_left_is_refused_and_stops_the_engine() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut h = Harness::start().await.expect("start");
        let mut checker = Checker::default();
        for op in [Op::Enqueue(request("alpha", 0)), Op::Round] {
            h.apply(&op).await.expect("step");
            checker.check(&mut h).await.expect("check");
        }
        let id = h.model.runs[0].id.clone();
        let behind = StateChange::new(
            &id,
            RunState::Queued,
            RunState::Cancelled,
            h.model.now,
            Some("behind the engine's back".into()),
        );
        h.store
            .apply(&[behind], &[], &[])
            .await
            .expect("the other writer's change");
        h.engine.add_credits("agent-a", h.model.agents[0].connection, 1);
        h.engine.run_round(&mut h.rounds).await;
        let failure = h
            .engine
            .failure()
            .expect("the engine stops on a conflict with the store");
        assert!(failure.contains("conflict"), "{failure}");
        let row = h.store.run(&id).await.expect("read").expect("the run");
        assert_eq!((row.state, row.attempt), (RunState::Cancelled, 0), "{row:?}");
        let attempts = h.store.attempts(std::slice::from_ref(&id)).await.expect("read");
        assert!(attempts.is_empty(), "an attempt was started: {attempts:?}");
    });
}
