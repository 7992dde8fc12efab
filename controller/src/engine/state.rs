//! In-memory indexes of the engine: live (non-terminal) runs, the ready queue,
//! the timer set and connected agents. They are derived from the store and
//! rebuilt from it at start-up; the store is always written first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use worker_proto::v1::ControllerMessage;

use crate::model::{Priority, RunState};

/// Ordering key of the ready queue: priority first (highest first), then the
/// time the run became ready, then arrival order.
pub type ReadyKey = (Reverse<Priority>, i64, u64);

/// Channel to one agent's response stream.
pub type AgentSender = UnboundedSender<Result<ControllerMessage, tonic::Status>>;

/// A run that is not terminal.
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// Run id.
    pub id: String,
    /// Job name.
    pub job: String,
    /// Current state (never terminal).
    pub state: RunState,
    /// Dispatch priority.
    pub priority: Priority,
    /// Current attempt number (0 before the first).
    pub attempt: u32,
    /// Attempt number limit.
    pub max_attempts: u32,
    /// Payload, JSON text.
    pub payload: Arc<str>,
    /// While scheduled: when it becomes ready (Unix ms).
    pub not_before: i64,
    /// While queued: its key in the ready queue.
    pub ready_key: Option<ReadyKey>,
    /// While running: the agent holding it.
    pub agent_id: Option<String>,
    /// While running: lease expiry (Unix ms), renewed by heartbeats.
    pub lease_until: i64,
    /// While running: when the controller gives up on the attempt whatever the
    /// heartbeats say (start + job timeout + lease timeout), if the job has a timeout.
    pub deadline: Option<i64>,
    /// An operator asked to cancel it while running.
    pub cancel_requested: bool,
    /// Why it is being cancelled (kept for its final state).
    pub cancel_reason: Option<String>,
    /// While blocked: upstream runs that have not succeeded yet.
    pub waiting_on: BTreeSet<String>,
}

/// A connected (or recently disconnected) agent.
#[derive(Debug)]
pub struct AgentEntry {
    /// Process-instance id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Labels for selectors.
    pub labels: BTreeMap<String, String>,
    /// Executor kinds it runs.
    pub executors: Vec<String>,
    /// Concurrent runs it accepts.
    pub capacity: u32,
    /// Agent version.
    pub version: String,
    /// Assignments it may still receive on the current connection.
    pub credits: u32,
    /// The current connection's stream, `None` while disconnected.
    pub sender: Option<AgentSender>,
    /// Number of the current connection (distinguishes reconnects).
    pub connection: u64,
    /// When it (re)connected, Unix ms.
    pub connected_at: i64,
    /// Last message received, Unix ms.
    pub last_seen: i64,
    /// (run id, attempt) it holds.
    pub running: BTreeSet<(String, u32)>,
}

impl AgentEntry {
    /// Whether the agent can take a run of `kind` with this `selector` now.
    pub fn accepts(&self, kind: &str, selector: &BTreeMap<String, String>) -> bool {
        self.sender.is_some()
            && self.credits > 0
            && self.executors.iter().any(|e| e == kind)
            && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Everything the engine keeps in memory, guarded by one lock.
#[derive(Debug, Default)]
pub struct Core {
    /// Non-terminal runs by id.
    pub live: HashMap<String, LiveRun>,
    /// Queued runs in dispatch order.
    pub ready: BTreeMap<ReadyKey, String>,
    /// Number of queued runs per job (kept with `ready` by `push_ready`/`unindex`).
    pub queued_by_job: HashMap<String, usize>,
    /// Scheduled runs by `not_before`.
    pub timers: BTreeSet<(i64, String)>,
    /// Agents by id.
    pub agents: HashMap<String, AgentEntry>,
    /// Running runs per job (for `max_concurrency`).
    pub running_by_job: HashMap<String, u32>,
    /// Blocked runs by the upstream run they wait for.
    pub dependents: HashMap<String, Vec<String>>,
    /// Arrival counter for FIFO ties.
    pub next_seq: u64,
    /// Connection counter.
    pub next_connection: u64,
}

impl Core {
    /// Puts a live run into the ready queue.
    pub fn push_ready(&mut self, id: &str, ready_at: i64) {
        self.next_seq += 1;
        let Core {
            live,
            ready,
            queued_by_job,
            next_seq,
            ..
        } = self;
        if let Some(run) = live.get_mut(id) {
            match run.ready_key.take() {
                Some(old) => {
                    ready.remove(&old);
                }
                None => *queued_by_job.entry(run.job.clone()).or_default() += 1,
            }
            let key = (Reverse(run.priority), ready_at, *next_seq);
            run.state = RunState::Queued;
            run.ready_key = Some(key);
            ready.insert(key, id.to_string());
        }
    }

    /// Removes a run from the ready queue and the timer set (wherever it is).
    pub fn unindex(&mut self, id: &str) {
        let Core {
            live,
            ready,
            queued_by_job,
            timers,
            ..
        } = self;
        if let Some(run) = live.get_mut(id) {
            if let Some(key) = run.ready_key.take() {
                ready.remove(&key);
                if let Some(n) = queued_by_job.get_mut(&run.job) {
                    *n -= 1;
                    if *n == 0 {
                        queued_by_job.remove(&run.job);
                    }
                }
            }
            if run.state == RunState::Scheduled {
                timers.remove(&(run.not_before, id.to_string()));
            }
        }
    }

    /// Counts a run as no longer running (job concurrency and agent slot).
    pub fn release_running(&mut self, id: &str) {
        let Some(run) = self.live.get_mut(id) else { return };
        if run.state != RunState::Running {
            return;
        }
        if let Some(n) = self.running_by_job.get_mut(&run.job) {
            *n = n.saturating_sub(1);
        }
        if let Some(agent_id) = run.agent_id.take()
            && let Some(agent) = self.agents.get_mut(&agent_id)
        {
            agent.running.remove(&(id.to_string(), run.attempt));
        }
    }

    /// Sends a message to an agent if it is connected. Returns whether it was sent.
    pub fn send_to_agent(&self, agent_id: &str, message: ControllerMessage) -> bool {
        self.agents
            .get(agent_id)
            .and_then(|a| a.sender.as_ref())
            .is_some_and(|tx| tx.send(Ok(message)).is_ok())
    }
}
