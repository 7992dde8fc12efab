//! The engine: the run state machine (the table in [`transitions`], shown in
//! `docs/architecture.md#the-run-state-machine`) and everything that moves
//! runs through it.
//!
//! * [`transitions`]: the table of legal moves and the settlement decision;
//!   every state change is built there (through `Engine::change`);
//! * [`state`]: in-memory indexes (live runs, ready queue, timers, agents,
//!   holds) and the agent inbox;
//! * [`write`]: the one path to the store: in-doubt commits are read back, a
//!   conflict with the store stops the engine;
//! * `enqueue`, `runs`: enqueue, cancel, retry, DLQ: what clients ask for;
//! * `deps`: what happens to blocked runs when an upstream run moves;
//! * `dispatch`: the agent side: registration, credits, assignment, results;
//! * [`measures`]: the checks on the metrics and spans a result carries;
//! * [`select`]: which queued runs go to which agents (no I/O);
//! * [`round`]: the commit loop: plain enqueues, assignments and results share
//!   one transaction per round;
//! * `timers`: the loop that releases backoff timers and expires leases;
//! * `definitions`: job definitions at run time (apply, enable, delete,
//!   pause) and the choice of definitions at start-up;
//! * `views`: read-only queries for the API.
//!
//! One lock guards the in-memory state. Every transition is committed to the
//! store *while holding it*, and only then applied (or, for runs indexed ahead
//! of their commit by a round, kept) in memory and acknowledged, so nothing
//! outside the lock ever sees memory ahead of the store and two transitions of
//! one run can never interleave. Agent bookkeeping (credits, lease renewals)
//! waits in a small inbox instead of the lock (see [`state::AgentInbox`]).
//!
//! Failures stay with what failed: a write that the store refuses for its
//! content is retried piece by piece, so one poisoned run, result or fire
//! fails alone and is retried with backoff (see [`round`], `timers` and the
//! scheduler) while everything else goes on. A write that finds the store in
//! another state than memory expects means memory can no longer be trusted:
//! the engine stops ([`Engine::failed`]) and the controller exits, so that a
//! restart rebuilds memory from the store.

mod definitions;
mod deps;
mod dispatch;
mod enqueue;
pub mod measures;
pub mod retention;
pub mod round;
mod runs;
pub mod select;
pub mod state;
mod timers;
pub mod transitions;
mod views;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, broadcast};
use worker_proto::v1::RunEvent;

pub use definitions::{ApplySummary, CONFIG_FILE_KEY, DefinitionsError, initial_definitions};
pub use dispatch::ResultMessage;
pub use enqueue::{EnqueueOutcome, EnqueueRequest, FireOutcome, MAX_BATCH, validate_payload};
pub use round::Rounds;
pub use views::{AgentSnapshot, AgentView, EngineSnapshot, LiveRunSnapshot, QueueStatsView, RunView, RunningAttempt};

use crate::alerting::facts::AlertSink;
use crate::config::JobSet;
use crate::error::Result;
use crate::model::RunState;
use crate::store::{RunRecord, Store};
use crate::time::{Clock, rfc3339};
use state::{AgentInbox, Core, LiveRun, shared_payload};
use transitions::Mover;

/// Events an in-process subscriber ([`Engine::subscribe`]: `WaitRun`) may fall
/// behind (a burst of schedule fires or a batch can be this large). Clients'
/// `WatchEvents` read the store's durable events instead (`api/events.rs`).
pub const EVENT_BUFFER: usize = 65_536;
/// The last `max` bytes of `text` at most, cut on a character boundary (the
/// end of an output is what explains a failure).
pub fn tail_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Default of [`EngineSettings::payload_memory_bytes`]: 64 MiB.
pub const DEFAULT_PAYLOAD_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Payloads of at most this many bytes always stay in memory with their run
/// (they cost no more than the rest of a queued run's index entry); only
/// bigger ones count against [`EngineSettings::payload_memory_bytes`].
pub const SMALL_PAYLOAD_BYTES: usize = 1024;

/// Settings of the engine: timing of the agent protocol, and memory.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// An attempt whose agent is silent this long is `lost`.
    pub lease_timeout: Duration,
    /// How long an idempotency key keeps returning its run after the run finished.
    pub idempotency_window: Duration,
    /// Most bytes of payloads over [`SMALL_PAYLOAD_BYTES`] kept in memory for
    /// runs that wait (queued, scheduled, blocked); beyond it a payload stays
    /// only in the store and is read back when its run is dispatched
    /// (default [`DEFAULT_PAYLOAD_MEMORY_BYTES`]).
    pub payload_memory_bytes: usize,
}

/// Reliability counters since the controller started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Attempts whose agent went silent past the lease.
    pub lost_attempts: AtomicU64,
    /// Runs queued for another attempt after a lost one.
    pub rescued_runs: AtomicU64,
    /// Results refused because their attempt was no longer current.
    pub stale_results: AtomicU64,
    /// Results received again after they were recorded.
    pub duplicate_results: AtomicU64,
    /// Attempts ended by the controller after their timeout plus the lease.
    pub deadline_expired: AtomicU64,
    /// Results whose commit failed (on their own, or with the store
    /// unreachable); they are offered again with backoff.
    pub failed_results: AtomicU64,
    /// Schedule fires that could not be created; retried with backoff.
    pub failed_fires: AtomicU64,
    /// Other writes of one run that failed on their own (an assignment, a
    /// timer release, a lease expiry); retried with backoff.
    pub failed_writes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The controller's state machine; shared by the API, the scheduler and the loops.
pub struct Engine {
    store: Store,
    jobs: std::sync::RwLock<Arc<JobSet>>,
    settings: EngineSettings,
    core: Mutex<Core>,
    /// Agent bookkeeping messages waiting for the core lock (see [`AgentInbox`]).
    inbox: std::sync::Mutex<AgentInbox>,
    events: broadcast::Sender<RunEvent>,
    wake_dispatch: Notify,
    wake_timers: Notify,
    /// Told when job definitions or schedule pauses change (the scheduler replans).
    schedules_changed: Notify,
    /// Serializes changes of the definitions.
    definitions_lock: Mutex<()>,
    /// Reliability counters.
    counters: Counters,
    /// Simple enqueues on their way to the enqueue loop (set when it runs).
    enqueue_queue: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<enqueue::PendingEnqueue>>,
    /// Where facts for alerting go (set when alerting runs).
    alerts: std::sync::OnceLock<AlertSink>,
    /// The engine's clock (manual in step-by-step tests).
    clock: Clock,
    /// Why the engine stopped, once it has (see [`Engine::failed`]).
    failure: tokio::sync::watch::Sender<Option<String>>,
    /// Prometheus metrics recorded where events happen (see [`crate::http::metrics`]).
    metrics: Arc<crate::http::metrics::Metrics>,
    /// Controller-wide history retention (see [`retention`]).
    retention: std::sync::RwLock<retention::RetentionSettings>,
}

impl Engine {
    /// Builds the engine and rebuilds its in-memory indexes from the store.
    /// Runs of jobs that are no longer defined are moved to `dead` with the reason.
    pub async fn recover(store: Store, jobs: JobSet, settings: EngineSettings) -> Result<Arc<Engine>> {
        Engine::recover_with_clock(store, jobs, settings, Clock::system()).await
    }

    /// [`Engine::recover`] on `clock` (a manual clock drives an engine step by
    /// step in tests).
    pub async fn recover_with_clock(
        store: Store,
        jobs: JobSet,
        settings: EngineSettings,
        clock: Clock,
    ) -> Result<Arc<Engine>> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let metrics = Arc::new(crate::http::metrics::Metrics::new());
        metrics.define_jobs(&jobs);
        let engine = Engine {
            store,
            jobs: std::sync::RwLock::new(Arc::new(jobs)),
            settings,
            core: Mutex::new(Core::with_payload_budget(settings.payload_memory_bytes)),
            inbox: std::sync::Mutex::new(AgentInbox::default()),
            events,
            wake_dispatch: Notify::new(),
            wake_timers: Notify::new(),
            schedules_changed: Notify::new(),
            definitions_lock: Mutex::new(()),
            counters: Counters::default(),
            enqueue_queue: std::sync::OnceLock::new(),
            alerts: std::sync::OnceLock::new(),
            clock,
            failure: tokio::sync::watch::Sender::new(None),
            metrics,
            retention: std::sync::RwLock::new(retention::RetentionSettings::default()),
        };
        {
            let mut core = engine.lock_core().await;
            let now = engine.now();
            let lease = settings.lease_timeout.as_millis() as i64;
            let mut orphans = Vec::new();
            let mut recovered = [0usize; 4];
            let jobs = engine.jobs();
            // Queued and scheduled runs (nearly all of them) go into the indexes
            // as the rows stream in; running and blocked ones (few) need more
            // reads and are finished in a second pass.
            let mut later: Vec<(RunRecord, LiveRun)> = Vec::new();
            {
                let core = &mut *core;
                let mut index = |record: RunRecord| -> Result<()> {
                    if jobs.get(&record.job).is_none() {
                        let reason = format!("job \"{}\" is no longer defined", record.job);
                        orphans.push(transitions::change(
                            &record.id,
                            record.state,
                            RunState::Dead,
                            Mover::Recovery,
                            now,
                            Some(reason),
                        )?);
                        return Ok(());
                    }
                    // Big payloads were left in the store (an empty payload):
                    // they are read when their run is dispatched.
                    let payload = (!record.payload.is_empty()).then(|| shared_payload(&record.payload));
                    let mut run = LiveRun::new(
                        record.id.as_str().into(),
                        core.job_name(&record.job),
                        record.state,
                        record.priority,
                        record.attempt,
                        record.max_attempts,
                        payload,
                        record.not_before.unwrap_or(now),
                    );
                    run.cancel_requested = record.cancel_requested;
                    if record.cancel_requested {
                        run.extra_mut().cancel_reason = record
                            .reason
                            .as_deref()
                            .map(|r| r.strip_prefix("cancel requested: ").unwrap_or(r).to_string());
                    }
                    match record.state {
                        RunState::Queued => {
                            core.insert_live(run);
                            core.push_ready(&record.id, record.ready_at.unwrap_or(record.created_at));
                            recovered[0] += 1;
                        }
                        RunState::Scheduled => {
                            core.timers.insert((run.not_before, record.id.clone()));
                            core.insert_live(run);
                            recovered[1] += 1;
                        }
                        _ => later.push((record, run)),
                    }
                    Ok(())
                };
                // Payloads over SMALL_PAYLOAD_BYTES are not read at all: a
                // store holding gigabytes of them recovers in the memory of
                // the run indexes alone.
                engine
                    .store
                    .for_each_active_run(Some(SMALL_PAYLOAD_BYTES), &mut index)
                    .await?;
            }
            let blocked_ids: Vec<String> = later
                .iter()
                .filter(|(r, _)| r.state == RunState::Blocked)
                .map(|(r, _)| r.id.clone())
                .collect();
            let mut upstreams_of: HashMap<String, Vec<String>> = HashMap::new();
            for (run_id, upstream) in engine.store.dependencies(&blocked_ids).await? {
                upstreams_of.entry(run_id).or_default().push(upstream);
            }
            for (record, mut run) in later {
                if record.state == RunState::Running {
                    // The agent may still be running it: honour a fresh lease; a
                    // reconnecting agent that reports it in flight keeps it.
                    let attempts = engine.store.attempts(std::slice::from_ref(&record.id)).await?;
                    let current = attempts.iter().find(|a| a.attempt == record.attempt);
                    let extra = run.extra_mut();
                    extra.lease_until = now + lease;
                    extra.started_at = current.map_or(now, |a| a.started_at);
                    extra.agent_id = current.map(|a| a.agent_id.clone());
                    extra.deadline = jobs
                        .get(&record.job)
                        .and_then(|j| j.timeout)
                        .zip(current)
                        .map(|(timeout, a)| a.started_at + timeout.as_millis() as i64 + lease);
                    *core.running_by_job.entry(run.job.clone()).or_default() += 1;
                    core.running.insert(run.id.clone());
                    core.insert_live(run);
                    recovered[2] += 1;
                } else {
                    // Blocked: wait for the upstream runs that have not succeeded.
                    for upstream in upstreams_of.remove(&record.id).unwrap_or_default() {
                        let done = engine
                            .store
                            .run(&upstream)
                            .await?
                            .is_some_and(|u| u.state == RunState::Succeeded);
                        if !done {
                            run.extra_mut().waiting_on.insert(upstream.clone());
                            core.dependents.entry(upstream).or_default().push(record.id.clone());
                        }
                    }
                    core.insert_live(run);
                    recovered[3] += 1;
                }
            }
            if !orphans.is_empty() {
                tracing::warn!(count = orphans.len(), "runs of jobs no longer defined moved to the DLQ");
                engine.write(&Default::default(), &orphans, &[], &[]).await?;
            }
            // Rebuilding allocated and freed a record per run: give the freed
            // pages back to the system rather than keep them in the heap.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free heap memory; it has no
            // preconditions and touches no live allocation.
            unsafe {
                libc::malloc_trim(0);
            }
            tracing::info!(
                queued = recovered[0],
                scheduled = recovered[1],
                running = recovered[2],
                blocked = recovered[3],
                "recovered runs from the store"
            );
        }
        Ok(Arc::new(engine))
    }

    /// Takes the core lock and applies the agent messages waiting in the inbox.
    async fn lock_core(&self) -> tokio::sync::MutexGuard<'_, Core> {
        let mut core = self.core.lock().await;
        let inbox = std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        if !inbox.is_empty() {
            core.apply_inbox(inbox, self.settings.lease_timeout.as_millis() as i64);
        }
        core
    }

    /// Runs `f` on the inbox (a short synchronous lock, never held across an await).
    fn with_inbox(&self, f: impl FnOnce(&mut AgentInbox)) {
        f(&mut self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Now, on the engine's clock (Unix ms).
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The current job definitions (a snapshot; changes replace the whole set).
    pub fn jobs(&self) -> Arc<JobSet> {
        self.jobs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reliability counters since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The Prometheus metrics (served at `/metrics`).
    pub fn metrics(&self) -> &Arc<crate::http::metrics::Metrics> {
        &self.metrics
    }

    /// Connects alerting: from now on the engine reports attempt ends, missed
    /// fires and lost agents to `sink` (only those some rule wants). Set once.
    pub fn set_alert_sink(&self, sink: AlertSink) {
        let _ = self.alerts.set(sink);
    }

    /// Where facts for alerting go, when alerting runs.
    pub fn alert_sink(&self) -> Option<&AlertSink> {
        self.alerts.get()
    }

    /// Tells alerting that `fires` fires of `job` (the last at `fire_at`) did not run.
    pub fn report_missed_fires(&self, job: &crate::job::JobDef, fires: u64, fire_at: i64, reason: String) {
        if let Some(sink) = self
            .alert_sink()
            .filter(|s| s.wants(crate::alerting::Event::ScheduleMissed))
            && fires > 0
        {
            sink.send(crate::alerting::facts::Fact::ScheduleMissed(
                crate::alerting::facts::MissedFact {
                    job: job.name.clone(),
                    priority: job.priority,
                    fires,
                    reason,
                    fire_at,
                    at: self.now(),
                },
            ));
        }
    }

    /// Tells alerting that the fire of `job` at `fire_at` could not be created
    /// (`failures` times in a row), and when it is tried again.
    pub fn report_failed_fire(
        &self,
        job: &crate::job::JobDef,
        fire_at: i64,
        failures: u32,
        error: &str,
        retry_at: Option<i64>,
    ) {
        if let Some(sink) = self
            .alert_sink()
            .filter(|s| s.wants(crate::alerting::Event::ScheduleFailed))
        {
            sink.send(crate::alerting::facts::Fact::ScheduleFailed(
                crate::alerting::facts::FailedFireFact {
                    job: job.name.clone(),
                    priority: job.priority,
                    fire_at,
                    failures,
                    error: error.to_string(),
                    retry_at,
                    at: self.now(),
                },
            ));
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Protocol timing settings.
    pub fn settings(&self) -> EngineSettings {
        self.settings
    }

    /// Why the engine stopped, if it has.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Resolves with the reason once the engine stops: its memory can no
    /// longer be trusted to match the store (a write conflicted with the
    /// store, or a commit failed in doubt and its outcome cannot be known). It
    /// refuses every write from then on; the controller exits so that a
    /// restart rebuilds memory from the store.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
        let reason = rx
            .wait_for(|f| f.is_some())
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops the engine (see [`Engine::failed`]); the first reason is kept.
    pub(crate) fn fail(&self, reason: String) {
        self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            tracing::error!(%reason, "engine stopped: memory can no longer be trusted to match the store");
            *failure = Some(reason);
            true
        });
    }

    /// Lifecycle events of runs, live and without sequence numbers (for
    /// in-process waiters; clients watch [`Store::event_hub`]).
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    fn emit(&self, run_id: &str, job: &str, state: RunState, attempt: u32, at: i64, reason: Option<&str>) {
        self.metrics.run_state(job, state);
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(RunEvent {
            run_id: run_id.to_string(),
            job: job.to_string(),
            state: state.as_str().to_string(),
            attempt,
            at: rfc3339(at),
            reason: reason.unwrap_or_default().to_string(),
            at_unix_micros: chrono::Utc::now().timestamp_micros(),
            r#type: "run".to_string(),
            ..RunEvent::default()
        });
    }

    /// Bytes of payloads over [`SMALL_PAYLOAD_BYTES`] held in memory now; at
    /// most [`EngineSettings::payload_memory_bytes`].
    pub async fn payload_memory_bytes(&self) -> usize {
        self.lock_core().await.payload_memory.held()
    }

    /// (connected agents, live runs), for operators and benchmarks.
    pub async fn census(&self) -> (u64, u64) {
        let core = self.lock_core().await;
        let agents = core.agents.values().filter(|a| a.sender.is_some()).count() as u64;
        (agents, core.live.len() as u64)
    }

    /// Ends every agent stream (controller shutdown): agents reconnect later and
    /// keep their runs if they come back within the lease.
    pub async fn disconnect_all_agents(&self) {
        let mut core = self.lock_core().await;
        for agent in core.agents.values_mut() {
            agent.sender = None;
            agent.credits = 0;
        }
    }
}
