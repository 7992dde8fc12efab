//! Read-only views for the API: runs with their attempts, the queue, agents.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Engine;
use crate::error::{Error, Result};
use crate::model::{Priority, RunState};
use crate::store::{AttemptRecord, RunRecord, TransitionRecord};

/// A run with its attempts (and, for a single run, its transitions).
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run.
    pub run: RunRecord,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Its recorded transitions (only filled for single-run reads).
    pub transitions: Vec<TransitionRecord>,
    /// Upstream runs it depends on.
    pub depends_on: Vec<String>,
}

/// Queue depth by state and, for queued runs, by priority.
#[derive(Debug, Clone, Default)]
pub struct QueueStatsView {
    /// (priority, queued runs, oldest wait in ms), highest priority first.
    pub priorities: Vec<(Priority, u64, u64)>,
    /// Runs waiting in the ready queue.
    pub queued: u64,
    /// Runs waiting for a timer.
    pub scheduled: u64,
    /// Runs waiting for dependencies.
    pub blocked: u64,
    /// Runs leased to agents.
    pub running: u64,
    /// Runs in the DLQ.
    pub dead: u64,
}

/// An attempt in progress (see [`Engine::running_attempts`]).
#[derive(Debug, Clone)]
pub struct RunningAttempt {
    /// Run id.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// The run's priority.
    pub priority: Priority,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The run's attempt limit.
    pub max_attempts: u32,
    /// The agent's name, when known.
    pub agent: Option<String>,
    /// When it was assigned (Unix ms).
    pub started_at: i64,
}

/// Per priority, highest first: queued runs (from the per-priority counts) and
/// the wait of the oldest (the first key of the priority in the ready queue,
/// which is ordered by priority, then ready time).
fn backlog_of(core: &super::state::Core, now: i64) -> Vec<(Priority, u64, u64)> {
    Priority::ALL
        .iter()
        .rev()
        .map(|&p| {
            let depth = core.queued_by_priority[p as usize];
            let oldest = core
                .ready
                .range((std::cmp::Reverse(p), i64::MIN, 0)..)
                .next()
                .filter(|((q, _, _), _)| q.0 == p)
                .map_or(0, |((_, ready_at, _), _)| (now - ready_at).max(0) as u64);
            (p, depth, oldest)
        })
        .collect()
}

/// An agent as shown to operators.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// Process-instance id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Executor kinds.
    pub executors: Vec<String>,
    /// Handler names it registered.
    pub handlers: Vec<String>,
    /// Capacity.
    pub capacity: u32,
    /// `connected`, `draining` (connected, asked to drain) or `disconnected`.
    pub state: &'static str,
    /// When it connected.
    pub connected_at: i64,
    /// Last message.
    pub last_seen: i64,
    /// Runs it holds.
    pub running: Vec<String>,
    /// Agent version.
    pub version: String,
}

impl Engine {
    /// One run with attempts and transitions.
    pub async fn run_view(&self, id: &str) -> Result<RunView> {
        let run = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("run {id} does not exist")))?;
        let attempts = self.store.attempts(std::slice::from_ref(&run.id)).await?;
        let transitions = self.store.transitions(id).await?;
        let depends_on = self
            .store
            .dependencies(std::slice::from_ref(&run.id))
            .await?
            .into_iter()
            .map(|(_, u)| u)
            .collect();
        Ok(RunView {
            run,
            attempts,
            transitions,
            depends_on,
        })
    }

    /// Views of runs this call has just created (see
    /// [`super::EnqueueOutcome::created_dependencies`]): no attempts yet, and
    /// their dependencies as written, so no store read (an enqueue's answer
    /// used to cost two reads per run).
    pub fn fresh_views(runs: Vec<RunRecord>, dependencies: &[(String, String)]) -> Vec<RunView> {
        runs.into_iter()
            .map(|run| RunView {
                depends_on: dependencies
                    .iter()
                    .filter(|(r, _)| *r == run.id)
                    .map(|(_, u)| u.clone())
                    .collect(),
                run,
                attempts: Vec::new(),
                transitions: Vec::new(),
            })
            .collect()
    }

    /// Attaches attempts to runs (one query for all).
    pub async fn with_attempts(&self, runs: Vec<RunRecord>) -> Result<Vec<RunView>> {
        let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        let mut by_run: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
        for attempt in self.store.attempts(&ids).await? {
            by_run.entry(attempt.run_id.clone()).or_default().push(attempt);
        }
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (run, upstream) in self.store.dependencies(&ids).await? {
            deps.entry(run).or_default().push(upstream);
        }
        Ok(runs
            .into_iter()
            .map(|run| RunView {
                attempts: by_run.remove(&run.id).unwrap_or_default(),
                depends_on: deps.remove(&run.id).unwrap_or_default(),
                run,
                transitions: Vec::new(),
            })
            .collect())
    }

    /// Waits until the run is terminal or `timeout` passes; returns it as it is then.
    pub async fn wait_run(&self, id: &str, timeout: Option<Duration>) -> Result<RunView> {
        let mut events = self.subscribe();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let view = self.run_view(id).await?;
            if view.run.state.is_terminal() {
                return Ok(view);
            }
            // Wait for an event of this run (or a lag, which means: look again).
            loop {
                let next = events.recv();
                let received = match deadline {
                    Some(d) => match tokio::time::timeout_at(d, next).await {
                        Ok(r) => r,
                        Err(_) => return self.run_view(id).await,
                    },
                    None => next.await,
                };
                match received {
                    Ok(event) if event.run_id == id => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
        }
    }

    /// Queued runs in dispatch order.
    pub async fn queued_runs(&self, limit: usize) -> Result<Vec<RunView>> {
        let ids: Vec<String> = {
            let core = self.lock_core().await;
            core.ready.values().take(limit).map(|id| id.to_string()).collect()
        };
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(run) = self.store.run(&id).await? {
                runs.push(run);
            }
        }
        self.with_attempts(runs).await
    }

    /// (priority, queued runs, oldest wait in ms), highest priority first: the
    /// queue's backlog, read from its indexes (no walk of the queue).
    pub async fn backlog(&self) -> Vec<(Priority, u64, u64)> {
        let core = self.lock_core().await;
        backlog_of(&core, self.now())
    }

    /// The attempts running now, for `run_slow`.
    pub async fn running_attempts(&self) -> Vec<RunningAttempt> {
        let core = self.lock_core().await;
        core.running
            .iter()
            .filter_map(|id| core.live.get(id))
            .map(|run| RunningAttempt {
                run_id: run.id.to_string(),
                job: run.job.to_string(),
                priority: run.priority,
                attempt: run.attempt,
                max_attempts: run.max_attempts,
                agent: run.agent_id().and_then(|a| core.agents.get(a)).map(|a| a.name.clone()),
                started_at: run.extra().started_at,
            })
            .collect()
    }

    /// The agent id and attempt number of `run_id` while it runs (`None`
    /// otherwise): whom live output of the run may come from.
    pub async fn attempt_holder(&self, run_id: &str) -> Option<(String, u32)> {
        let core = self.lock_core().await;
        let run = core.live.get(run_id)?;
        if run.state != crate::model::RunState::Running {
            return None;
        }
        Some((run.agent_id()?.to_string(), run.attempt))
    }

    /// Queue depths.
    pub async fn queue_stats(&self) -> Result<QueueStatsView> {
        let now = self.now();
        let mut stats = QueueStatsView::default();
        {
            let core = self.lock_core().await;
            stats.priorities = backlog_of(&core, now);
            // Counted from the indexes, not by walking every live run.
            stats.queued = core.ready.len() as u64;
            stats.scheduled = core.timers.len() as u64;
            stats.running = core.running.len() as u64;
            stats.blocked = (core.live.len() as u64).saturating_sub(stats.queued + stats.scheduled + stats.running);
        }
        stats.dead = self.store.count_dead().await?;
        Ok(stats)
    }

    /// What `/metrics` reads at scrape time: one short hold of the core lock
    /// (index sizes and one look per priority and agent; no walk of the runs).
    pub async fn gauges(&self) -> crate::http::metrics::Gauges {
        let now = self.now();
        let mut gauges = crate::http::metrics::Gauges::default();
        {
            let core = self.lock_core().await;
            gauges.queued = backlog_of(&core, now);
            let queued = core.ready.len() as u64;
            let scheduled = core.timers.len() as u64;
            let running = core.running.len() as u64;
            let blocked = (core.live.len() as u64).saturating_sub(queued + scheduled + running);
            gauges.live = vec![
                (RunState::Scheduled, scheduled),
                (RunState::Blocked, blocked),
                (RunState::Queued, queued),
                (RunState::Running, running),
            ];
            gauges.agents_connected = core.agents.values().filter(|a| a.sender.is_some()).count() as u64;
            gauges.agents_disconnected = core.agents.len() as u64 - gauges.agents_connected;
        }
        gauges.lost_attempts = self.counters.lost_attempts.load(std::sync::atomic::Ordering::Relaxed);
        gauges.stale_results = self.counters.stale_results.load(std::sync::atomic::Ordering::Relaxed);
        gauges
    }

    /// Known agents (connected, and disconnected ones still holding runs).
    pub async fn agents(&self) -> Vec<AgentView> {
        let core = self.lock_core().await;
        let mut agents: Vec<AgentView> = core.agents.values().map(agent_view).collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        agents
    }
}

/// A picture of the engine's memory, for tests that compare it with the store
/// and with a reference model (see [`Engine::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSnapshot {
    /// Live (non-terminal) runs by id.
    pub runs: BTreeMap<String, LiveRunSnapshot>,
    /// Queued runs in dispatch order.
    pub ready: Vec<String>,
    /// (not_before, run id) of scheduled runs, soonest first.
    pub timers: Vec<(i64, String)>,
    /// Agents by id.
    pub agents: BTreeMap<String, AgentSnapshot>,
    /// Runs held back after their own write failed, with the hold's end.
    pub holds: BTreeMap<String, i64>,
}

/// One live run in an [`EngineSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRunSnapshot {
    /// Job name.
    pub job: String,
    /// State (never terminal).
    pub state: crate::model::RunState,
    /// Priority.
    pub priority: Priority,
    /// Current attempt (0 before the first).
    pub attempt: u32,
    /// Attempt limit.
    pub max_attempts: u32,
    /// While running: the agent holding it.
    pub agent: Option<String>,
    /// A cancel is pending.
    pub cancel_requested: bool,
    /// While blocked: upstream runs not succeeded yet.
    pub waiting_on: Vec<String>,
    /// While scheduled: when it becomes ready.
    pub not_before: i64,
}

/// One agent in an [`EngineSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    /// Its stream is open.
    pub connected: bool,
    /// Assignments it may still receive.
    pub credits: u32,
    /// (run id, attempt) it holds.
    pub running: Vec<(String, u32)>,
}

impl Engine {
    /// A picture of the engine's memory (runs, ready order, timers, agents).
    /// Takes the core lock; meant for tests and diagnostics, not hot paths.
    pub async fn snapshot(&self) -> EngineSnapshot {
        let core = self.lock_core().await;
        EngineSnapshot {
            runs: core
                .live
                .values()
                .map(|r| {
                    let extra = r.extra();
                    (
                        r.id.to_string(),
                        LiveRunSnapshot {
                            job: r.job.to_string(),
                            state: r.state,
                            priority: r.priority,
                            attempt: r.attempt,
                            max_attempts: r.max_attempts,
                            agent: extra.agent_id.clone(),
                            cancel_requested: r.cancel_requested,
                            waiting_on: extra.waiting_on.iter().cloned().collect(),
                            not_before: r.not_before,
                        },
                    )
                })
                .collect(),
            ready: core.ready.values().map(|id| id.to_string()).collect(),
            timers: core.timers.iter().cloned().collect(),
            agents: core
                .agents
                .values()
                .map(|a| {
                    (
                        a.id.clone(),
                        AgentSnapshot {
                            connected: a.sender.is_some(),
                            credits: a.credits,
                            running: a.running.iter().cloned().collect(),
                        },
                    )
                })
                .collect(),
            holds: core.holds.iter().map(|(id, h)| (id.to_string(), h.until)).collect(),
        }
    }
}

/// What [`Engine::agents`] shows of one agent.
pub(super) fn agent_view(a: &super::state::AgentEntry) -> AgentView {
    AgentView {
        id: a.id.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        labels: a.labels.clone(),
        executors: a.executors.clone(),
        handlers: a.handlers.iter().cloned().collect(),
        capacity: a.capacity,
        state: match (a.sender.is_some(), a.draining) {
            (true, false) => "connected",
            (true, true) => "draining",
            (false, _) => "disconnected",
        },
        connected_at: a.connected_at,
        last_seen: a.last_seen,
        running: a.running.iter().map(|(id, _)| id.clone()).collect(),
        version: a.version.clone(),
    }
}
