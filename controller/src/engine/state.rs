//! In-memory indexes of the engine: live (non-terminal) runs, the ready queue,
//! the timer set and connected agents. They are derived from the store and
//! rebuilt from it at start-up; the store is always written first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use worker_proto::v1::ControllerMessage;

use crate::job::ExecutorDef;
use crate::model::{Priority, RunState};

/// Ordering key of the ready queue: priority first (highest first), then the
/// time the run became ready, then arrival order.
pub type ReadyKey = (Reverse<Priority>, i64, u64);

/// Channel to one agent's response stream.
pub type AgentSender = UnboundedSender<Result<ControllerMessage, tonic::Status>>;

/// A run id shared by the indexes that hold it (one allocation per run).
pub type RunId = Arc<str>;

/// A run that is not terminal.
///
/// Kept small on purpose: a million queued runs must fit in a few hundred MiB
/// (ids and job names are shared `Arc<str>`s, the common `{}` payload is one
/// shared allocation, and the map holds the run boxed).
#[derive(Debug, Clone)]
pub struct LiveRun {
    /// Run id.
    pub id: RunId,
    /// Job name (shared by every run of the job).
    pub job: Arc<str>,
    /// Current state (never terminal).
    pub state: RunState,
    /// Dispatch priority.
    pub priority: Priority,
    /// Current attempt number (0 before the first).
    pub attempt: u32,
    /// Attempt number limit.
    pub max_attempts: u32,
    /// Payload, JSON text, if kept in memory; `None` when only the store has
    /// it (a big payload beyond the memory budget, see [`PayloadMemory`]).
    /// Change it only through [`Core`], which accounts for it.
    pub payload: Option<Arc<str>>,
    /// While scheduled: when it becomes ready (Unix ms).
    pub not_before: i64,
    /// While queued: its key in the ready queue.
    pub ready_key: Option<ReadyKey>,
    /// An operator asked to cancel it while running.
    pub cancel_requested: bool,
    /// What only running, blocked or cancelling runs need (see [`RunExtra`]).
    extra: Option<Box<RunExtra>>,
}

/// The parts of a live run that a queued run does not need, boxed apart so a
/// million queued runs do not carry them (~80 bytes each).
#[derive(Debug, Clone, Default)]
pub struct RunExtra {
    /// While running: the agent holding it.
    pub agent_id: Option<String>,
    /// While running: lease expiry (Unix ms), renewed by heartbeats.
    pub lease_until: i64,
    /// While running: when the attempt was assigned (Unix ms; for runs found
    /// running at start-up, the recorded start), for `run_slow`.
    pub started_at: i64,
    /// While running: when the controller gives up on the attempt whatever the
    /// heartbeats say (start + job timeout + lease timeout), if the job has a timeout.
    pub deadline: Option<i64>,
    /// Why it is being cancelled (kept for its final state).
    pub cancel_reason: Option<String>,
    /// While blocked: upstream runs that have not succeeded yet.
    pub waiting_on: BTreeSet<String>,
}

/// What a run without extras reads.
static NO_EXTRA: RunExtra = RunExtra {
    agent_id: None,
    lease_until: 0,
    started_at: 0,
    deadline: None,
    cancel_reason: None,
    waiting_on: BTreeSet::new(),
};

impl LiveRun {
    /// A run in `state` with nothing running, no lease and no cancellation.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: RunId,
        job: Arc<str>,
        state: RunState,
        priority: Priority,
        attempt: u32,
        max_attempts: u32,
        payload: Option<Arc<str>>,
        not_before: i64,
    ) -> LiveRun {
        LiveRun {
            id,
            job,
            state,
            priority,
            attempt,
            max_attempts,
            payload,
            not_before,
            ready_key: None,
            cancel_requested: false,
            extra: None,
        }
    }

    /// Its extras (all empty when it has none).
    pub fn extra(&self) -> &RunExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// Its extras, created empty on first use.
    pub fn extra_mut(&mut self) -> &mut RunExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The agent holding it, if any (a run without extras has none).
    pub fn agent_id(&self) -> Option<&str> {
        self.extra().agent_id.as_deref()
    }
}

/// A payload as shared text: the empty object `{}`, by far the most common
/// payload, is one allocation for all runs.
pub fn shared_payload(payload: &str) -> Arc<str> {
    static EMPTY_OBJECT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    if payload == "{}" {
        EMPTY_OBJECT.get_or_init(|| Arc::from("{}")).clone()
    } else {
        Arc::from(payload)
    }
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
    /// Handler names it registered (SDK agents).
    pub handlers: BTreeSet<String>,
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
    /// Alerting was told it is lost (silent past the lease), or it is an
    /// earlier process of an agent that connected again under the same name
    /// and host (a restart, not a loss). Reset when it is heard from again.
    pub lost_reported: bool,
    /// Asked to drain (`DrainAgent`): it is assigned nothing more and holds
    /// no credits. Reset when the agent id connects again.
    pub draining: bool,
}

impl AgentEntry {
    /// Whether the agent can take a run of a job with this executor and
    /// `selector` now: it runs the executor's kind and, for a `handler` job,
    /// registered the handler.
    pub fn accepts(&self, executor: &ExecutorDef, selector: &BTreeMap<String, String>) -> bool {
        let kind = executor.kind();
        self.sender.is_some()
            && !self.draining
            && self.credits > 0
            && self.executors.iter().any(|e| e == kind)
            && executor.handler().is_none_or(|h| self.handlers.contains(h))
            && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// Agent messages that only touch agent bookkeeping (`Pull`, `Started`,
/// `Heartbeat`). Agent streams drop them here under a short synchronous lock
/// instead of waiting for the core lock, which is held across store commits;
/// whoever takes the core lock next applies them first ([`Core::apply_inbox`]),
/// so no reader of the core ever sees them late.
#[derive(Debug, Default)]
pub struct AgentInbox {
    /// (agent id, connection, credits) from `Pull`.
    pub credits: Vec<(String, u64, u32)>,
    /// Lease renewals from `Started` and `Heartbeat`.
    pub renewals: Vec<Renewal>,
}

/// An agent says it still holds these attempts.
#[derive(Debug)]
pub struct Renewal {
    /// The agent.
    pub agent_id: String,
    /// (run id, attempt) it holds.
    pub held: Vec<(String, u32)>,
    /// When it said so, Unix ms.
    pub at: i64,
}

impl AgentInbox {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.credits.is_empty() && self.renewals.is_empty()
    }
}

/// The memory budget of big payloads: payloads over
/// [`super::SMALL_PAYLOAD_BYTES`] stay in memory with their run only while
/// their total stays within the budget; the others are only in the store until
/// their run is dispatched. Small payloads always stay (they are not counted).
#[derive(Debug)]
pub struct PayloadMemory {
    budget: usize,
    held: usize,
}

impl Default for PayloadMemory {
    fn default() -> PayloadMemory {
        PayloadMemory {
            budget: super::DEFAULT_PAYLOAD_MEMORY_BYTES,
            held: 0,
        }
    }
}

impl PayloadMemory {
    /// Bytes of big payloads held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The budget, in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Whether `payload` counts against the budget.
    fn is_big(payload: &str) -> bool {
        payload.len() > super::SMALL_PAYLOAD_BYTES
    }

    /// Whether `len` more bytes fit in the budget.
    fn fits(&self, len: usize) -> bool {
        self.held.saturating_add(len) <= self.budget
    }
}

/// Everything the engine keeps in memory, guarded by one lock.
#[derive(Debug, Default)]
pub struct Core {
    /// Non-terminal runs by id (boxed: the map's buckets stay small).
    pub live: HashMap<RunId, Box<LiveRun>>,
    /// Queued runs in dispatch order.
    pub ready: BTreeMap<ReadyKey, RunId>,
    /// Job names in use by live runs (interned: one allocation per job).
    pub job_names: std::collections::HashSet<Arc<str>>,
    /// Number of queued runs per job (kept with `ready` by `push_ready`/`unindex`).
    pub queued_by_job: HashMap<Arc<str>, usize>,
    /// Number of queued runs per priority, indexed by `Priority as usize` (kept
    /// with `ready`), so queue depth is read without walking the queue.
    pub queued_by_priority: [u64; 4],
    /// Scheduled runs by `not_before`.
    pub timers: BTreeSet<(i64, String)>,
    /// Agents by id.
    pub agents: HashMap<String, AgentEntry>,
    /// Runs in state `running` (so lease expiry looks at these, not at every live run).
    pub running: std::collections::HashSet<RunId>,
    /// Running runs per job (for `max_concurrency`).
    pub running_by_job: HashMap<Arc<str>, u32>,
    /// Blocked runs by the upstream run they wait for.
    pub dependents: HashMap<String, Vec<String>>,
    /// Runs whose own write failed, left alone until their hold ends (see [`Hold`]).
    pub holds: HashMap<RunId, Hold>,
    /// Arrival counter for FIFO ties.
    pub next_seq: u64,
    /// Connection counter.
    pub next_connection: u64,
    /// Bytes of big payloads held by live runs, and their budget (kept with
    /// `live` by [`Core::insert_live`], [`Core::remove_live`] and
    /// [`Core::drop_big_payload`]).
    pub payload_memory: PayloadMemory,
}

/// A run whose own write (an assignment, a timer release, a lease expiry)
/// failed while others' succeeded: the component that failed skips it until
/// `until`, then tries again, waiting longer after each failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// Not tried again before this (Unix ms).
    pub until: i64,
    /// Failures in a row.
    pub failures: u32,
}

/// The backoff after `failures` failures in a row: 250 ms, doubling, at most 30 s.
pub fn backoff_ms(failures: u32) -> i64 {
    (250i64 << failures.saturating_sub(1).min(7)).min(30_000)
}

impl Core {
    /// Holds run `id` after another failure of its own write; returns the hold.
    pub fn hold(&mut self, id: &RunId, now: i64) -> Hold {
        let failures = self.holds.get(id).map_or(0, |h| h.failures) + 1;
        let hold = Hold {
            until: now + backoff_ms(failures),
            failures,
        };
        self.holds.insert(id.clone(), hold);
        hold
    }

    /// Whether run `id` is held at `now`.
    pub fn held(&self, id: &str, now: i64) -> bool {
        !self.holds.is_empty() && self.holds.get(id).is_some_and(|h| h.until > now)
    }

    /// Forgets the hold of run `id` (its write succeeded, or it is gone).
    pub fn release_hold(&mut self, id: &str) {
        if !self.holds.is_empty() {
            self.holds.remove(id);
        }
    }

    /// An empty core whose big payloads may take `budget` bytes.
    pub fn with_payload_budget(budget: usize) -> Core {
        Core {
            payload_memory: PayloadMemory { budget, held: 0 },
            ..Core::default()
        }
    }

    /// Forgets a live run that left memory (terminal, or never committed),
    /// with its hold. Its indexes must be cleared first (see [`Core::unindex`]).
    pub fn remove_live(&mut self, id: &str) {
        if let Some(run) = self.live.remove(id) {
            self.uncount_payload(&run);
        }
        self.release_hold(id);
    }

    /// Adds a live run (replacing one with the same id). A big payload that
    /// no longer fits in the budget is dropped: the store has it.
    pub fn insert_live(&mut self, mut run: LiveRun) {
        if let Some(payload) = &run.payload
            && PayloadMemory::is_big(payload)
        {
            if self.payload_memory.fits(payload.len()) {
                self.payload_memory.held += payload.len();
            } else {
                run.payload = None;
            }
        }
        if let Some(old) = self.live.insert(run.id.clone(), Box::new(run)) {
            self.uncount_payload(&old);
        }
    }

    /// The in-memory copy of `payload` for a new live run: the text itself if
    /// it is small or fits in what is left of the budget, else `None` (the
    /// store has it). [`Core::insert_live`] counts it.
    pub fn payload_to_keep(&self, payload: &str) -> Option<Arc<str>> {
        if PayloadMemory::is_big(payload) && !self.payload_memory.fits(payload.len()) {
            None
        } else {
            Some(shared_payload(payload))
        }
    }

    /// Drops the in-memory copy of run `id`'s payload if it is big (its run
    /// was dispatched: a retry reads it from the store again), giving its
    /// bytes back to the budget.
    pub fn drop_big_payload(&mut self, id: &str) {
        let Some(run) = self.live.get_mut(id) else { return };
        if let Some(payload) = run.payload.take_if(|p| PayloadMemory::is_big(p)) {
            self.payload_memory.held -= payload.len();
        }
    }

    /// Gives back the budget a run that left memory held.
    fn uncount_payload(&mut self, run: &LiveRun) {
        if let Some(payload) = &run.payload
            && PayloadMemory::is_big(payload)
        {
            self.payload_memory.held -= payload.len();
        }
    }

    /// The shared name of a job.
    pub fn job_name(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.job_names.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(name);
        self.job_names.insert(shared.clone());
        shared
    }

    /// Applies the agent messages that arrived while the lock was held elsewhere:
    /// credits of the current connection (at most four times the capacity), and
    /// lease renewals of attempts the agent still holds.
    pub fn apply_inbox(&mut self, inbox: AgentInbox, lease_timeout_ms: i64) {
        for (agent_id, connection, credits) in inbox.credits {
            if let Some(agent) = self.agents.get_mut(&agent_id)
                && agent.connection == connection
                && agent.sender.is_some()
                && !agent.draining
            {
                agent.credits = agent
                    .credits
                    .saturating_add(credits)
                    .min(agent.capacity.saturating_mul(4).max(1));
            }
        }
        for Renewal { agent_id, held, at } in inbox.renewals {
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                if at > agent.last_seen {
                    // Heard from again: a later silence is a new loss.
                    agent.lost_reported = false;
                }
                agent.last_seen = agent.last_seen.max(at);
            }
            for (run_id, attempt) in held {
                if let Some(run) = self.live.get_mut(run_id.as_str())
                    && run.state == RunState::Running
                    && run.attempt == attempt
                    && run.agent_id() == Some(agent_id.as_str())
                {
                    let extra = run.extra_mut();
                    extra.lease_until = extra.lease_until.max(at + lease_timeout_ms);
                }
            }
        }
    }

    /// Puts a live run into the ready queue.
    pub fn push_ready(&mut self, id: &str, ready_at: i64) {
        self.next_seq += 1;
        let Core {
            live,
            ready,
            queued_by_job,
            queued_by_priority,
            next_seq,
            ..
        } = self;
        if let Some(run) = live.get_mut(id) {
            match run.ready_key.take() {
                Some(old) => {
                    ready.remove(&old);
                    queued_by_priority[old.0.0 as usize] -= 1;
                }
                None => *queued_by_job.entry(run.job.clone()).or_default() += 1,
            }
            queued_by_priority[run.priority as usize] += 1;
            let key = (Reverse(run.priority), ready_at, *next_seq);
            run.state = RunState::Queued;
            run.ready_key = Some(key);
            ready.insert(key, run.id.clone());
        }
    }

    /// Removes a run from the ready queue and the timer set (wherever it is).
    pub fn unindex(&mut self, id: &str) {
        let Core {
            live,
            ready,
            queued_by_job,
            queued_by_priority,
            timers,
            ..
        } = self;
        if let Some(run) = live.get_mut(id) {
            if let Some(key) = run.ready_key.take() {
                ready.remove(&key);
                queued_by_priority[key.0.0 as usize] -= 1;
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
        self.running.remove(id);
        if let Some(n) = self.running_by_job.get_mut(&run.job) {
            *n = n.saturating_sub(1);
        }
        if let Some(agent_id) = run.extra.as_mut().and_then(|e| e.agent_id.take())
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
