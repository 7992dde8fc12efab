//! The reference model: every run, agent and job as the engine must see
//! them, moved by plain code that follows the rules of the run state machine,
//! dispatch, retries and the agent protocol (docs/architecture.md) one rule
//! at a time, without the engine's indexes, batching, inbox or store.
//!
//! It is the oracle of the suite. For each operation the harness asks the
//! model what must happen (the call's answer, the messages each agent must
//! receive, the new state of every run), performs the operation on the real
//! engine, and the checks compare the two. Runs are named by their index in
//! [`Model::runs`] (creation order), never by id, so the operations chosen
//! depend on the seed only; ids are learnt from the engine's answers and are
//! used to find runs in the store and in the engine's memory.
//!
//! The model also plays the agents' side: what each fake agent holds, the
//! results it sent and has not seen acknowledged, and the credits it granted.
//!
//! This file holds the model's state, its queries, and the moves every
//! operation is made of (a run changes state with its transition row; an
//! attempt ends and the run settles; dependents are released or cancelled;
//! a message is queued for an agent). What each engine call must do is in
//! [`super::actions`].
//!
//! Where those rules leave an order open, the model uses the engine's
//! documented tie-breaker: the ready queue is ordered by priority, then the
//! time a run became ready, then arrival (after a restart, arrival is the
//! recovery order: creation time, then id); timers by `not_before`, then id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use worker_controller::model::{Outcome, Priority, RunState};

use super::config::{AGENTS, JOBS, T0};

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The agent it was assigned to.
    pub agent: usize,
    /// When it was assigned.
    pub started_at: i64,
    /// How it ended (`None` while it runs).
    pub outcome: Option<Outcome>,
}

/// A run as the engine must keep it.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id, learnt from the engine's answer ("" until then).
    pub id: String,
    /// Index in [`JOBS`].
    pub job: usize,
    /// Dispatch priority.
    pub priority: Priority,
    /// Current state.
    pub state: RunState,
    /// Current attempt number (0 before the first).
    pub attempt: u32,
    /// Attempt limit.
    pub max_attempts: u32,
    /// Creation time.
    pub created_at: i64,
    /// The `not_before` it was enqueued with (a blocked run keeps it until
    /// its upstream runs succeed).
    pub delay_until: Option<i64>,
    /// While scheduled: when it becomes ready.
    pub not_before: i64,
    /// While queued: when it became ready, and its arrival number.
    pub ready_at: i64,
    /// Arrival number in the ready queue (ties of priority and ready time).
    pub seq: u64,
    /// Upstream runs (explicit `depends_on` and the job's chain).
    pub upstreams: Vec<usize>,
    /// While blocked: upstream runs that have not succeeded.
    pub waiting_on: BTreeSet<usize>,
    /// A cancel was requested while it ran.
    pub cancel_requested: bool,
    /// While running: the agent holding it.
    pub agent: Option<usize>,
    /// While running: lease expiry.
    pub lease_until: i64,
    /// While running: start + job timeout + lease, if the job has a timeout.
    pub deadline: Option<i64>,
    /// Its attempts, in order.
    pub attempts: Vec<Attempt>,
    /// Its recorded transitions: (from, to), `None` at creation.
    pub transitions: Vec<(Option<RunState>, RunState)>,
    /// Deleted by a DLQ purge (it stays here as a tombstone).
    pub purged: bool,
    /// The idempotency key it was created with.
    pub key: Option<String>,
    /// When it last became terminal (the idempotency window runs from there).
    pub finished_at: Option<i64>,
}

/// A job's state: enabled, or deleted.
#[derive(Debug, Clone, Copy)]
pub struct JobState {
    /// Enqueues are accepted.
    pub enabled: bool,
    /// The definition was deleted.
    pub deleted: bool,
}

/// An assignment a fake agent runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The run.
    pub run: usize,
    /// The attempt.
    pub attempt: u32,
    /// The controller told it to cancel.
    pub cancelled: bool,
}

/// A result a fake agent sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The run.
    pub run: usize,
    /// The attempt.
    pub attempt: u32,
    /// The outcome text (may be invalid on purpose).
    pub outcome: String,
    /// Marked non-retryable.
    pub permanent: bool,
}

/// An agent: the engine's entry for it and the fake agent's own state.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Agent id (also its name).
    pub id: &'static str,
    /// Capacity.
    pub capacity: u32,
    /// The engine has an entry for it.
    pub known: bool,
    /// Its stream is open.
    pub connected: bool,
    /// Number of its current connection.
    pub connection: u64,
    /// Assignments it may still receive.
    pub credits: u32,
    /// (run, attempt) the engine counts as its own.
    pub running: BTreeSet<(usize, u32)>,
    /// Last time it was heard from.
    pub last_seen: i64,
    /// Fake agent: the assignments it runs.
    pub holds: Vec<Hold>,
    /// Fake agent: results sent and not acknowledged.
    pub unacked: Vec<Sent>,
    /// Fake agent: every result it sent.
    pub sent: Vec<Sent>,
    /// Fake agent: every assignment it received.
    pub assigned: Vec<(usize, u32)>,
    /// Fake agent: raw credits granted per connection of this engine.
    pub granted: BTreeMap<u64, u64>,
}

/// A message the engine must send to an agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expect {
    /// `Welcome` after a `Hello`.
    Welcome,
    /// An assignment.
    Assignment { run: usize, attempt: u32 },
    /// The answer to a result.
    Ack { run: usize, attempt: u32, accepted: bool },
    /// Stop the attempt.
    Cancel { run: usize, attempt: u32 },
}

/// A message on its way to an agent's connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The agent.
    pub agent: usize,
    /// The connection it goes to.
    pub connection: u64,
    /// The message.
    pub msg: Expect,
}

/// A plain enqueue waiting for the next round.
#[derive(Debug, Clone)]
pub struct PendingPlain {
    pub(crate) job: usize,
    pub(crate) priority: Priority,
    pub(crate) not_before: Option<i64>,
}

/// A result waiting for the next round.
#[derive(Debug, Clone)]
pub struct PendingResult {
    pub(crate) agent: usize,
    pub(crate) connection: u64,
    pub(crate) sent: Sent,
}

/// Reliability counters the engine must report (since its start).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Results refused: not the current attempt.
    pub stale_results: u64,
    /// Results accepted again (already recorded with the same outcome).
    pub duplicate_results: u64,
    /// Attempts whose lease expired.
    pub lost_attempts: u64,
    /// Attempts past their deadline.
    pub deadline_expired: u64,
}

/// An enqueue request, in model terms.
#[derive(Debug, Clone)]
pub struct Request {
    /// Index in [`JOBS`].
    pub job: usize,
    /// Explicit priority (`None`: the job's).
    pub priority: Option<Priority>,
    /// Delay, ms.
    pub delay_ms: u64,
    /// Idempotency key.
    pub key: Option<String>,
    /// Upstream runs.
    pub deps: Vec<usize>,
}

/// What a direct enqueue must answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Direct {
    /// The run asked for (new, or found by its key).
    pub run: usize,
    /// Found by its key.
    pub duplicate: bool,
    /// Runs created for the job's chain, upstream first.
    pub upstream: Vec<usize>,
}

/// What a round must do.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundPrediction {
    /// For each plain enqueue, in order: its new run, or `None` when it is
    /// refused because its job was deleted since it was accepted.
    pub created: Vec<Option<usize>>,
    /// Assignments made.
    pub assigned: usize,
}

/// The whole reference model of one sequence.
#[derive(Debug, Clone)]
pub struct Model {
    /// Now (Unix ms).
    pub now: i64,
    /// Jobs, by index in [`JOBS`].
    pub jobs: Vec<JobState>,
    /// Every run ever created, in creation order.
    pub runs: Vec<Run>,
    /// Run index by id.
    pub by_id: BTreeMap<String, usize>,
    /// Idempotency key -> (run, recorded at).
    pub keys: BTreeMap<String, (usize, i64)>,
    /// Agents, by index in [`AGENTS`].
    pub agents: Vec<Agent>,
    /// Plain enqueues waiting for the next round.
    pub pending_plain: Vec<PendingPlain>,
    /// Results waiting for the next round.
    pub pending_results: Vec<PendingResult>,
    /// Counters since the engine started.
    pub counters: Counters,
    /// Messages the engine must have sent since the last check.
    pub outbox: Vec<Outgoing>,
    /// Restarts so far.
    pub restarts: u32,
    /// How often each notable event happened (coverage statistics).
    pub events: BTreeMap<String, usize>,
    pub(crate) next_seq: u64,
    pub(crate) next_connection: u64,
}

impl Model {
    /// A model at [`T0`]: no runs, every job enabled, no agent connected.
    pub fn new() -> Model {
        Model {
            now: T0,
            jobs: vec![
                JobState {
                    enabled: true,
                    deleted: false
                };
                JOBS.len()
            ],
            runs: Vec::new(),
            by_id: BTreeMap::new(),
            keys: BTreeMap::new(),
            agents: AGENTS
                .iter()
                .map(|&(id, capacity)| Agent {
                    id,
                    capacity,
                    known: false,
                    connected: false,
                    connection: 0,
                    credits: 0,
                    running: BTreeSet::new(),
                    last_seen: T0,
                    holds: Vec::new(),
                    unacked: Vec::new(),
                    sent: Vec::new(),
                    assigned: Vec::new(),
                    granted: BTreeMap::new(),
                })
                .collect(),
            pending_plain: Vec::new(),
            pending_results: Vec::new(),
            counters: Counters::default(),
            outbox: Vec::new(),
            restarts: 0,
            events: BTreeMap::new(),
            next_seq: 0,
            next_connection: 0,
        }
    }

    // -----------------------------------------------------------------
    // Queries

    /// Counts an event for the coverage statistics.
    pub fn note(&mut self, event: impl Into<String>) {
        *self.events.entry(event.into()).or_default() += 1;
    }

    /// `r3(alpha)`: how messages name a run.
    pub fn name(&self, r: usize) -> String {
        match self.runs.get(r) {
            Some(run) => format!("r{r}({})", JOBS[run.job].name),
            None => format!("r{r}"),
        }
    }

    /// Whether run `r` is in the engine's memory (created, not terminal).
    pub fn is_live(&self, r: usize) -> bool {
        let run = &self.runs[r];
        !run.purged && !run.state.is_terminal()
    }

    /// Whether (run, attempt) is the current attempt of `agent`.
    pub fn is_current(&self, agent: usize, r: usize, attempt: u32) -> bool {
        let run = &self.runs[r];
        !run.purged && run.state == RunState::Running && run.attempt == attempt && run.agent == Some(agent)
    }

    /// Queued runs in dispatch order.
    pub fn ready_order(&self) -> Vec<usize> {
        let mut ready: Vec<usize> = (0..self.runs.len())
            .filter(|&r| !self.runs[r].purged && self.runs[r].state == RunState::Queued)
            .collect();
        ready.sort_by_key(|&r| {
            let run = &self.runs[r];
            (Reverse(run.priority), run.ready_at, run.seq)
        });
        ready
    }

    /// Scheduled runs by (not_before, id), as the timer set holds them.
    pub fn timers(&self) -> Vec<(i64, usize)> {
        let mut timers: Vec<(i64, usize)> = (0..self.runs.len())
            .filter(|&r| !self.runs[r].purged && self.runs[r].state == RunState::Scheduled)
            .map(|r| (self.runs[r].not_before, r))
            .collect();
        timers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| self.runs[a.1].id.cmp(&self.runs[b.1].id)));
        timers
    }

    /// The outcome recorded for (run, attempt), as the store answers it.
    pub(crate) fn recorded(&self, r: usize, attempt: u32) -> Option<Outcome> {
        let run = &self.runs[r];
        if run.purged || attempt == 0 {
            return None;
        }
        run.attempts.get(attempt as usize - 1).and_then(|a| a.outcome)
    }

    /// Live runs of job `job`.
    pub(crate) fn live_runs_of(&self, job: usize) -> usize {
        (0..self.runs.len())
            .filter(|&r| self.runs[r].job == job && self.is_live(r))
            .count()
    }

    // -----------------------------------------------------------------
    // Moves

    /// Learns the engine's id of run `r`.
    pub fn set_id(&mut self, r: usize, id: &str) {
        self.runs[r].id = id.to_string();
        self.by_id.insert(id.to_string(), r);
    }

    pub(crate) fn create(
        &mut self,
        job: usize,
        priority: Priority,
        state: RunState,
        delay_until: Option<i64>,
    ) -> usize {
        let spec = &JOBS[job];
        self.next_seq += 1;
        self.runs.push(Run {
            id: String::new(),
            job,
            priority,
            state,
            attempt: 0,
            max_attempts: spec.max_attempts,
            created_at: self.now,
            delay_until,
            not_before: delay_until.unwrap_or(self.now),
            ready_at: self.now,
            seq: self.next_seq,
            upstreams: Vec::new(),
            waiting_on: BTreeSet::new(),
            cancel_requested: false,
            agent: None,
            lease_until: 0,
            deadline: None,
            attempts: Vec::new(),
            transitions: vec![(None, state)],
            purged: false,
            key: None,
            finished_at: None,
        });
        self.runs.len() - 1
    }

    /// Moves run `r` to `to` (a transition row when the state changes); a
    /// change always clears the pending cancel (only a cancel request sets it).
    pub(crate) fn change(&mut self, r: usize, to: RunState) {
        let now = self.now;
        if to == RunState::Queued {
            self.next_seq += 1;
        }
        let seq = self.next_seq;
        let run = &mut self.runs[r];
        if run.state != to {
            run.transitions.push((Some(run.state), to));
        }
        run.state = to;
        if to.is_terminal() {
            run.finished_at = Some(now);
        }
        run.cancel_requested = false;
        if to != RunState::Running {
            run.agent = None;
        }
        if to == RunState::Queued {
            run.ready_at = now;
            run.seq = seq;
        }
    }

    /// The state after an attempt ended (`transitions::settle`): success; else a
    /// pending cancel; else permanent or exhausted: dead; else retry.
    pub(crate) fn settle(&mut self, r: usize, outcome: Outcome, permanent: bool) {
        let now = self.now;
        let run = &self.runs[r];
        let spec = &JOBS[run.job];
        let (to, not_before) = if outcome == Outcome::Succeeded {
            (RunState::Succeeded, None)
        } else if run.cancel_requested {
            (RunState::Cancelled, None)
        } else if permanent || run.attempt >= run.max_attempts || self.jobs[run.job].deleted {
            (RunState::Dead, None)
        } else {
            (RunState::Scheduled, Some(now + spec.delay_ms(run.attempt)))
        };
        let attempt = run.attempt;
        let agent = run.agent;
        let event = format!(
            "settle: {outcome}{}{} -> {to}",
            if permanent { " permanent" } else { "" },
            if run.cancel_requested {
                " (cancel requested)"
            } else {
                ""
            }
        );
        self.note(event);
        self.runs[r].attempts[attempt as usize - 1].outcome = Some(outcome);
        if let Some(a) = agent {
            self.agents[a].running.remove(&(r, attempt));
        }
        self.change(r, to);
        if let Some(t) = not_before {
            self.runs[r].not_before = t;
        }
        match to {
            RunState::Succeeded => self.release_dependents(r),
            RunState::Cancelled => self.cancel_dependents(r),
            _ => {}
        }
    }

    /// Upstream `u` succeeded: its blocked dependents stop waiting for it;
    /// those with nothing left to wait for are queued, or scheduled while
    /// their own `not_before` has not come.
    pub(crate) fn release_dependents(&mut self, u: usize) {
        let now = self.now;
        for d in 0..self.runs.len() {
            let run = &mut self.runs[d];
            if run.purged || run.state != RunState::Blocked || !run.waiting_on.remove(&u) {
                continue;
            }
            if !run.waiting_on.is_empty() {
                self.note("dependents: one upstream succeeded, others remain");
                continue;
            }
            match run.delay_until {
                Some(t) if t > now => {
                    self.note("dependents: released before its not_before");
                    self.change(d, RunState::Scheduled);
                    self.runs[d].not_before = t;
                }
                _ => self.change(d, RunState::Queued),
            }
        }
    }

    /// Upstream `u` was cancelled or purged: every run blocked behind it,
    /// transitively, is cancelled (a dead upstream keeps them blocked).
    pub(crate) fn cancel_dependents(&mut self, u: usize) {
        let mut queue = VecDeque::from([u]);
        while let Some(x) = queue.pop_front() {
            for d in 0..self.runs.len() {
                let run = &self.runs[d];
                if !run.purged && run.state == RunState::Blocked && run.waiting_on.contains(&x) {
                    self.note(if x == u {
                        "dependents: cancelled"
                    } else {
                        "dependents: cancelled transitively"
                    });
                    self.change(d, RunState::Cancelled);
                    queue.push_back(d);
                }
            }
        }
    }

    pub(crate) fn send(&mut self, agent: usize, connection: u64, msg: Expect) {
        self.outbox.push(Outgoing { agent, connection, msg });
    }

    /// Tells the agent holding (r, attempt) to cancel it, if it is connected.
    pub(crate) fn send_cancel(&mut self, agent: usize, r: usize, attempt: u32) {
        let a = &mut self.agents[agent];
        if a.known && a.connected {
            let connection = a.connection;
            for hold in a.holds.iter_mut().filter(|h| h.run == r && h.attempt == attempt) {
                hold.cancelled = true;
            }
            self.send(agent, connection, Expect::Cancel { run: r, attempt });
        }
    }
}
