//! Benchmarks of the controller's hot internals: the ready queue, ready
//! selection, cron next-fire and the store's batch commit.
//!
//! `cargo bench -p worker-controller --bench hot_paths`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use worker_controller::config::{JobSet, parse_scheduler_yaml};
use worker_controller::engine::select::select_assignments;
use worker_controller::engine::state::{AgentEntry, Core, LiveRun};
use worker_controller::model::{Outcome, Priority, RunState, Trigger};
use worker_controller::scheduler::cron::{CronSchedule, parse_tz};
use worker_controller::store::{AttemptEnd, AttemptStart, InsertPlan, NewRun, StateChange, Store};

fn jobs() -> JobSet {
    parse_scheduler_yaml(Path::new("bench.yaml"), "jobs:\n  noop:\n    builtin: noop\n", &|_| {
        Err("no variables".into())
    })
    .expect("valid")
}

fn live_run(i: usize) -> LiveRun {
    LiveRun::new(
        format!("run-{i:010}").into(),
        "noop".into(),
        RunState::Queued,
        Priority::ALL[i % 4],
        0,
        3,
        Some(Arc::from("null")),
        0,
    )
}

fn core_with(queued: usize, agents: usize, credits: u32) -> Core {
    let mut core = Core::default();
    for i in 0..queued {
        let run = live_run(i);
        let id = run.id.clone();
        core.insert_live(run);
        core.push_ready(&id, i as i64);
    }
    for a in 0..agents {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(rx); // keep the channel open
        core.agents.insert(
            format!("agent-{a}"),
            AgentEntry {
                id: format!("agent-{a}"),
                name: format!("agent-{a}"),
                host: "bench".into(),
                labels: BTreeMap::new(),
                executors: vec!["builtin".into()],
                handlers: Default::default(),
                capacity: credits,
                version: "bench".into(),
                credits,
                sender: Some(tx),
                connection: 1,
                connected_at: 0,
                last_seen: 0,
                running: Default::default(),
                lost_reported: false,
                draining: false,
            },
        );
    }
    core
}

fn ready_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("ready_queue");
    for size in [1_000usize, 100_000] {
        group.bench_with_input(BenchmarkId::new("push_pop", size), &size, |b, &size| {
            let mut core = core_with(size, 0, 0);
            let mut next = size;
            b.iter(|| {
                // Pop the head (what dispatch takes) and push a new run at the tail.
                let (_, head) = core.ready.pop_first().expect("non-empty");
                core.live.remove(&head);
                let run = live_run(next);
                let id = run.id.clone();
                core.insert_live(run);
                core.push_ready(&id, next as i64);
                next += 1;
                black_box(&core.ready);
            });
        });
    }
    group.finish();
}

fn ready_selection(c: &mut Criterion) {
    let jobs = jobs();
    let mut group = c.benchmark_group("ready_selection");
    for (queued, agents) in [(1_000usize, 2usize), (100_000, 2), (10_000, 100)] {
        group.bench_with_input(
            BenchmarkId::new("select_64_credits", format!("{queued}_queued_{agents}_agents")),
            &(queued, agents),
            |b, &(queued, agents)| {
                b.iter_batched_ref(
                    || core_with(queued, agents, (64 / agents as u32).max(1)),
                    |core| black_box(select_assignments(core, &jobs, 0)),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

fn cron_next_fire(c: &mut Criterion) {
    let berlin = parse_tz("Europe/Berlin").expect("zone");
    let from = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
    let mut group = c.benchmark_group("cron_next_fire");
    for expr in ["*/15 * * * *", "30 2 * * *", "0 9 * * MON-FRI", "*/2 * * * * *"] {
        let schedule = CronSchedule::parse(expr, berlin).expect("valid");
        group.bench_with_input(BenchmarkId::from_parameter(expr), &schedule, |b, s| {
            b.iter(|| black_box(s.next_after(black_box(from))));
        });
    }
    group.finish();
}

/// A runtime and a new SQLite store in a temporary directory (kept alive by
/// the returned guard).
fn sqlite_store() -> (tokio::runtime::Runtime, tempfile::TempDir, Store) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime.block_on(Store::open(&url)).expect("store");
    (runtime, dir, store)
}

/// A queued run of `job` created at `at`, as a plain enqueue makes it.
fn queued_run(id: String, job: &str, at: i64) -> NewRun {
    NewRun {
        id,
        job: job.into(),
        state: RunState::Queued,
        priority: Priority::Normal,
        payload: "{}".into(),
        trigger: Trigger::Api,
        scheduled_for: None,
        created_at: at,
        not_before: None,
        ready_at: Some(at),
        max_attempts: 3,
        reason: None,
        workflow_id: None,
        idempotency_key: None,
    }
}

fn store_batch_commit(c: &mut Criterion) {
    let (runtime, _dir, store) = sqlite_store();
    // Each batch size flips its own runs: 1 at offset 0, 100 at 1,000, 1,000 at 2,000.
    let rows = 3_000usize;
    let runs: Vec<NewRun> = (0..rows)
        .map(|i| queued_run(format!("run-{i:06}"), "noop", i as i64))
        .collect();
    runtime
        .block_on(store.insert_runs(&InsertPlan {
            runs,
            dependencies: Vec::new(),
        }))
        .expect("insert");
    let mut group = c.benchmark_group("store_batch_commit");
    for (batch, offset) in [(1usize, 0usize), (100, 1_000), (1_000, 2_000)] {
        group.throughput(criterion::Throughput::Elements(batch as u64));
        // Outside the routine: criterion calls it more than once (warm-up,
        // then the samples), and the runs keep the state the last call left.
        let mut flip = false;
        group.bench_with_input(BenchmarkId::new("state_changes", batch), &batch, |b, &batch| {
            b.iter(|| {
                flip = !flip;
                let (from, to) = if flip {
                    (RunState::Queued, RunState::Running)
                } else {
                    (RunState::Running, RunState::Queued)
                };
                let changes: Vec<StateChange> = (offset..offset + batch)
                    .map(|i| StateChange::new(&format!("run-{i:06}"), from, to, 1, None))
                    .collect();
                runtime.block_on(store.apply(&changes, &[], &[])).expect("commit");
            });
        });
    }
    group.finish();
}

/// A no-op run's whole life in the store, as the engine writes it: `batch`
/// runs inserted queued in one transaction, started (state change and
/// attempt) in a second, finished (state change and attempt end) in a third.
/// The figure is the time of the three commits for `batch` runs.
fn store_run_lifecycle(c: &mut Criterion) {
    let (runtime, _dir, store) = sqlite_store();
    let mut group = c.benchmark_group("store_run_lifecycle");
    let mut next = 0usize;
    for batch in [1usize, 100, 1_000] {
        group.throughput(criterion::Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("sqlite", batch), &batch, |b, &batch| {
            b.iter(|| {
                let ids: Vec<String> = (next..next + batch).map(|i| format!("01LIFE{i:020}")).collect();
                next += batch;
                let now = next as i64;
                let runs = ids.iter().map(|id| queued_run(id.clone(), "bench.noop", now)).collect();
                let plan = InsertPlan {
                    runs,
                    dependencies: Vec::new(),
                };
                runtime.block_on(store.insert_runs(&plan)).expect("insert");
                let mut starts = Vec::with_capacity(batch);
                let mut changes = Vec::with_capacity(batch);
                for id in &ids {
                    let mut change = StateChange::new(id, RunState::Queued, RunState::Running, now, None);
                    change.attempt = Some(1);
                    changes.push(change);
                    starts.push(AttemptStart {
                        run_id: id.clone(),
                        attempt: 1,
                        agent_id: "01AGENT".into(),
                        agent_name: "bench".into(),
                        started_at: now,
                    });
                }
                runtime.block_on(store.apply(&changes, &starts, &[])).expect("start");
                let mut ends = Vec::with_capacity(batch);
                let mut changes = Vec::with_capacity(batch);
                for id in &ids {
                    changes.push(StateChange::new(id, RunState::Running, RunState::Succeeded, now, None));
                    ends.push(AttemptEnd {
                        spans: Default::default(),
                        metrics: Default::default(),
                        run_id: id.clone(),
                        attempt: 1,
                        outcome: Outcome::Succeeded,
                        exit_code: Some(0),
                        error: None,
                        output: None,
                        started_at: Some(now),
                        finished_at: now,
                        duration_ms: Some(0),
                    });
                }
                runtime.block_on(store.apply(&changes, &[], &ends)).expect("finish");
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    ready_queue,
    ready_selection,
    cron_next_fire,
    store_batch_commit,
    store_run_lifecycle
);
criterion_main!(benches);
