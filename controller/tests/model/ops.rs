//! Operations: what a step does, chosen at random (weighted) from the
//! model's state with the sequence's seeded RNG.
//!
//! An [`Op`] carries every parameter it needs (runs by model index, agents
//! by index in [`AGENTS`], durations, outcomes), so executing it draws no
//! more randomness and the op log alone replays a failure's story. Choosing
//! looks only at the model, never at the engine: the sequence is a function
//! of the seed (as long as the engine agrees with the model, which the
//! checks make sure of after every step).

use std::fmt;

use rand::Rng;
use rand::rngs::StdRng;
use worker_controller::model::{Priority, RunState};

use super::config::{AGENTS, JOBS, LEASE_MS};
use super::reference::{Model, Request, Sent};

/// One step of a sequence.
#[derive(Debug, Clone)]
pub enum Op {
    /// A plain enqueue, committed by the next round.
    Enqueue(Request),
    /// An enqueue committed at once: with a key, dependencies, or a chain job.
    EnqueueDirect(Request),
    /// One commit round.
    Round,
    /// `Pull{credits}` on the agent's connection (`stale`: an older one).
    Pull { agent: usize, credits: u32, stale: bool },
    /// A `Finished` for (run, attempt).
    Result { agent: usize, sent: Sent, twice: bool },
    /// A `Heartbeat` listing these attempts.
    Heartbeat { agent: usize, held: Vec<(usize, u32)> },
    /// The clock moves.
    Advance(i64),
    /// The timer loop releases due runs.
    ReleaseDue,
    /// The timer loop expires leases and deadlines.
    ExpireLeases,
    /// Cancel a run.
    Cancel(usize),
    /// DLQ retry of these runs.
    DlqRetry(Vec<usize>),
    /// DLQ purge of these runs.
    DlqPurge(Vec<usize>),
    /// Enable or disable a job.
    SetEnabled { job: usize, enabled: bool },
    /// Delete a job's definition.
    DeleteJob(usize),
    /// Define a deleted job again.
    RestoreJob(usize),
    /// The agent's stream ends (`stale`: a stream it already replaced).
    Disconnect { agent: usize, stale: bool },
    /// The agent connects again, reporting these attempts in flight.
    Reconnect { agent: usize, in_flight: Vec<(usize, u32)> },
    /// The controller restarts and recovers from the store.
    Restart,
}

impl Op {
    /// The operation's kind, for statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Enqueue(_) => "enqueue (round)",
            Op::EnqueueDirect(r) if JOBS[r.job].is_chain() => "enqueue a chain",
            Op::EnqueueDirect(r) if r.key.is_some() => "enqueue with a key",
            Op::EnqueueDirect(_) => "enqueue with dependencies",
            Op::Round => "round",
            Op::Pull { stale: false, .. } => "pull",
            Op::Pull { .. } => "pull (stale connection)",
            Op::Result { twice: true, .. } => "result (twice)",
            Op::Result { .. } => "result",
            Op::Heartbeat { .. } => "heartbeat",
            Op::Advance(ms) if *ms > LEASE_MS * 10 => "advance (hours)",
            Op::Advance(ms) if *ms > LEASE_MS => "advance (past the lease)",
            Op::Advance(_) => "advance",
            Op::ReleaseDue => "release due",
            Op::ExpireLeases => "expire leases",
            Op::Cancel(_) => "cancel",
            Op::DlqRetry(_) => "dlq retry",
            Op::DlqPurge(_) => "dlq purge",
            Op::SetEnabled { .. } => "set enabled",
            Op::DeleteJob(_) => "delete job",
            Op::RestoreJob(_) => "restore job",
            Op::Disconnect { stale: false, .. } => "disconnect",
            Op::Disconnect { .. } => "disconnect (stale stream)",
            Op::Reconnect { .. } => "reconnect",
            Op::Restart => "restart",
        }
    }
}

/// The kinds of operation, with their weights.
const KINDS: &[(Kind, u32)] = &[
    (Kind::Enqueue, 10),
    (Kind::EnqueueKeyed, 3),
    (Kind::EnqueueDeps, 4),
    (Kind::Chain, 3),
    (Kind::Round, 18),
    (Kind::Pull, 12),
    (Kind::StalePull, 1),
    (Kind::Result, 22),
    (Kind::LateResult, 2),
    (Kind::DuplicateResult, 2),
    (Kind::ForeignResult, 1),
    (Kind::BogusResult, 1),
    (Kind::Heartbeat, 6),
    (Kind::StaleHeartbeat, 3),
    (Kind::AdvanceSmall, 6),
    (Kind::AdvancePastLease, 2),
    (Kind::AdvanceHuge, 1),
    (Kind::ReleaseDue, 5),
    (Kind::ExpireLeases, 4),
    (Kind::Cancel, 3),
    (Kind::DlqRetry, 4),
    (Kind::DlqPurge, 3),
    (Kind::SetEnabled, 2),
    (Kind::DeleteJob, 1),
    (Kind::RestoreJob, 1),
    (Kind::Disconnect, 2),
    (Kind::Reconnect, 2),
    (Kind::Restart, 2),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Enqueue,
    EnqueueKeyed,
    EnqueueDeps,
    Chain,
    Round,
    Pull,
    StalePull,
    Result,
    LateResult,
    DuplicateResult,
    ForeignResult,
    BogusResult,
    Heartbeat,
    StaleHeartbeat,
    AdvanceSmall,
    AdvancePastLease,
    AdvanceHuge,
    ReleaseDue,
    ExpireLeases,
    Cancel,
    DlqRetry,
    DlqPurge,
    SetEnabled,
    DeleteJob,
    RestoreJob,
    Disconnect,
    Reconnect,
    Restart,
}

/// Chooses the next operation. Kinds that do not apply now (no agent holds
/// anything, no dead run, ...) are drawn again.
pub fn generate(m: &Model, rng: &mut StdRng) -> Op {
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    loop {
        let mut x = rng.random_range(0..total);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if x < *w {
                    true
                } else {
                    x -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .expect("weights add up");
        if let Some(op) = build(kind, m, rng) {
            return op;
        }
    }
}

fn pick<T: Clone>(rng: &mut StdRng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.random_range(0..items.len())].clone())
}

/// Jobs a plain enqueue may name (not chain jobs: those are never plain).
fn plain_jobs() -> Vec<usize> {
    (0..JOBS.len()).filter(|&j| !JOBS[j].is_chain()).collect()
}

fn priority(rng: &mut StdRng) -> Option<Priority> {
    if rng.random_bool(0.5) {
        None
    } else {
        pick(rng, Priority::ALL)
    }
}

fn delay(rng: &mut StdRng) -> u64 {
    if rng.random_bool(0.75) {
        0
    } else {
        rng.random_range(1..=8) * 500
    }
}

/// A delay for a run with upstream runs: long enough, now and then, to
/// outlive them (the run is then scheduled, not queued, when they succeed).
fn long_delay(rng: &mut StdRng) -> u64 {
    rng.random_range(1..=20) * 1_000
}

/// One or two upstream runs, mostly unfinished ones.
fn deps(m: &Model, rng: &mut StdRng) -> Vec<usize> {
    let live: Vec<usize> = (0..m.runs.len()).filter(|&r| m.is_live(r)).collect();
    let all: Vec<usize> = (0..m.runs.len()).collect();
    let mut deps = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        let from = if rng.random_bool(0.75) && !live.is_empty() {
            &live
        } else {
            &all
        };
        if let Some(r) = pick(rng, from)
            && !deps.contains(&r)
        {
            deps.push(r);
        }
    }
    deps
}

fn key(rng: &mut StdRng) -> String {
    format!("k{}", rng.random_range(0..6))
}

fn connected(m: &Model) -> Vec<usize> {
    (0..m.agents.len()).filter(|&a| m.agents[a].connected).collect()
}

fn outcome(rng: &mut StdRng) -> (&'static str, bool) {
    match rng.random_range(0..100) {
        0..50 => ("succeeded", false),
        50..68 => ("failed", false),
        68..80 => ("failed", true),
        80..92 => ("timed_out", false),
        _ => ("cancelled", false),
    }
}

fn result(agent: usize, run: usize, attempt: u32, (outcome, permanent): (&str, bool)) -> Op {
    Op::Result {
        agent,
        sent: Sent {
            run,
            attempt,
            outcome: outcome.to_string(),
            permanent,
        },
        twice: false,
    }
}

fn build(kind: Kind, m: &Model, rng: &mut StdRng) -> Option<Op> {
    let req = |job: usize, rng: &mut StdRng| Request {
        job,
        priority: priority(rng),
        delay_ms: delay(rng),
        key: None,
        deps: Vec::new(),
    };
    Some(match kind {
        Kind::Enqueue => Op::Enqueue(req(pick(rng, &plain_jobs())?, rng)),
        Kind::EnqueueKeyed => {
            let mut r = req(rng.random_range(0..JOBS.len()), rng);
            r.key = Some(key(rng));
            Op::EnqueueDirect(r)
        }
        Kind::EnqueueDeps => {
            let mut r = req(pick(rng, &plain_jobs())?, rng);
            r.deps = deps(m, rng);
            if rng.random_bool(0.5) {
                r.delay_ms = long_delay(rng);
            }
            if r.deps.is_empty() {
                return None;
            }
            if rng.random_bool(0.2) {
                r.key = Some(key(rng));
            }
            Op::EnqueueDirect(r)
        }
        Kind::Chain => {
            let chains: Vec<usize> = (0..JOBS.len()).filter(|&j| JOBS[j].is_chain()).collect();
            let mut r = req(pick(rng, &chains)?, rng);
            if rng.random_bool(0.5) {
                r.delay_ms = long_delay(rng);
            }
            if rng.random_bool(0.2) && !m.runs.is_empty() {
                r.deps = deps(m, rng);
            }
            Op::EnqueueDirect(r)
        }
        Kind::Round => Op::Round,
        Kind::Pull => Op::Pull {
            agent: pick(rng, &connected(m))?,
            credits: rng.random_range(1..=4),
            stale: false,
        },
        Kind::StalePull => Op::Pull {
            agent: pick(rng, &connected(m))?,
            credits: rng.random_range(1..=3),
            stale: true,
        },
        Kind::Result => {
            let agent = pick(rng, &connected(m))?;
            let hold = pick(rng, &m.agents[agent].holds)?;
            let reported = if hold.cancelled && rng.random_bool(0.8) {
                ("cancelled", false)
            } else {
                outcome(rng)
            };
            result(agent, hold.run, hold.attempt, reported)
        }
        Kind::LateResult => {
            // An attempt the agent was given that is no longer its current one.
            let agent = pick(rng, &connected(m))?;
            let old: Vec<(usize, u32)> = m.agents[agent]
                .assigned
                .iter()
                .copied()
                .filter(|&(r, attempt)| !m.is_current(agent, r, attempt))
                .collect();
            let (run, attempt) = pick(rng, &old)?;
            result(agent, run, attempt, outcome(rng))
        }
        Kind::DuplicateResult => {
            let agent = pick(rng, &connected(m))?;
            let sent = pick(rng, &m.agents[agent].sent)?;
            Op::Result {
                agent,
                sent,
                twice: rng.random_bool(0.5),
            }
        }
        Kind::ForeignResult => {
            // A run another agent holds now.
            let agent = pick(rng, &connected(m))?;
            let others: Vec<(usize, u32)> = (0..m.runs.len())
                .filter(|&r| {
                    let run = &m.runs[r];
                    m.is_live(r) && run.state == RunState::Running && run.agent.is_some_and(|a| a != agent)
                })
                .map(|r| (r, m.runs[r].attempt))
                .collect();
            let (run, attempt) = pick(rng, &others)?;
            result(agent, run, attempt, outcome(rng))
        }
        Kind::BogusResult => {
            let agent = pick(rng, &connected(m))?;
            let (run, attempt) = pick(rng, &m.agents[agent].assigned)?;
            let bogus = if rng.random_bool(0.5) { "lost" } else { "exploded" };
            result(agent, run, attempt, (bogus, false))
        }
        Kind::Heartbeat => {
            let agent = pick(rng, &connected(m))?;
            let held: Vec<(usize, u32)> = m.agents[agent]
                .holds
                .iter()
                .filter(|_| rng.random_bool(0.8))
                .map(|h| (h.run, h.attempt))
                .collect();
            Op::Heartbeat { agent, held }
        }
        Kind::StaleHeartbeat => {
            // Attempts that are not current: those the agent still runs
            // after losing them (their lease expired while it was silent),
            // and, for a run it holds now, an attempt number the run is not
            // at (the one before, or the one after). They renew nothing,
            // not even the current attempt of the same run.
            let agent = pick(rng, &connected(m))?;
            let held: Vec<(usize, u32)> = m.agents[agent]
                .holds
                .iter()
                .map(|h| {
                    if !m.is_current(agent, h.run, h.attempt) {
                        (h.run, h.attempt)
                    } else if h.attempt > 1 && rng.random_bool(0.5) {
                        (h.run, h.attempt - 1)
                    } else {
                        (h.run, h.attempt + 1)
                    }
                })
                .collect();
            if held.is_empty() {
                return None;
            }
            Op::Heartbeat { agent, held }
        }
        Kind::AdvanceSmall => Op::Advance(rng.random_range(100..=2_000)),
        Kind::AdvancePastLease => Op::Advance(LEASE_MS + rng.random_range(1..=4_000)),
        Kind::AdvanceHuge => Op::Advance(3_600_000 + rng.random_range(0..=60_000)),
        Kind::ReleaseDue => Op::ReleaseDue,
        Kind::ExpireLeases => Op::ExpireLeases,
        Kind::Cancel => {
            let live: Vec<usize> = (0..m.runs.len()).filter(|&r| m.is_live(r)).collect();
            let all: Vec<usize> = (0..m.runs.len()).collect();
            let from = if rng.random_bool(0.8) && !live.is_empty() {
                &live
            } else {
                &all
            };
            Op::Cancel(pick(rng, from)?)
        }
        Kind::DlqRetry | Kind::DlqPurge => {
            let dead: Vec<usize> = (0..m.runs.len())
                .filter(|&r| !m.runs[r].purged && m.runs[r].state == RunState::Dead)
                .collect();
            let mut ids = vec![pick(rng, &dead)?];
            if rng.random_bool(0.3) {
                ids.push(rng.random_range(0..m.runs.len()));
            }
            match kind {
                Kind::DlqRetry => Op::DlqRetry(ids),
                _ => Op::DlqPurge(ids),
            }
        }
        Kind::SetEnabled => {
            let job = rng.random_range(0..JOBS.len());
            let enabled = if rng.random_bool(0.8) {
                !m.jobs[job].enabled
            } else {
                m.jobs[job].enabled
            };
            Op::SetEnabled { job, enabled }
        }
        Kind::DeleteJob => Op::DeleteJob(rng.random_range(0..JOBS.len())),
        Kind::RestoreJob => {
            let deleted: Vec<usize> = (0..JOBS.len()).filter(|&j| m.jobs[j].deleted).collect();
            Op::RestoreJob(pick(rng, &deleted)?)
        }
        Kind::Disconnect => Op::Disconnect {
            agent: pick(rng, &connected(m))?,
            stale: rng.random_bool(0.2),
        },
        Kind::Reconnect => {
            let agent = rng.random_range(0..AGENTS.len());
            let mut in_flight: Vec<(usize, u32)> = m.agents[agent]
                .holds
                .iter()
                .filter(|_| rng.random_bool(0.9))
                .map(|h| (h.run, h.attempt))
                .collect();
            if rng.random_bool(0.2) {
                // A confused agent claims another agent's attempt: it must not get it.
                let foreign: Vec<(usize, u32)> = (0..m.runs.len())
                    .filter(|&r| m.is_live(r) && m.runs[r].agent.is_some_and(|a| a != agent))
                    .map(|r| (r, m.runs[r].attempt))
                    .collect();
                in_flight.extend(pick(rng, &foreign));
            }
            Op::Reconnect { agent, in_flight }
        }
        Kind::Restart => Op::Restart,
    })
}

/// Formats an op for the log, naming runs and agents.
pub struct Describe<'a>(pub &'a Op, pub &'a Model);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.1;
        let agent = |a: usize| AGENTS[a].0;
        let runs = |rs: &[usize]| rs.iter().map(|&r| m.name(r)).collect::<Vec<_>>().join(", ");
        let attempts = |rs: &[(usize, u32)]| {
            rs.iter()
                .map(|&(r, a)| format!("{}#{a}", m.name(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let request = |f: &mut fmt::Formatter<'_>, what: &str, r: &Request| {
            write!(f, "{what} {}", JOBS[r.job].name)?;
            if let Some(p) = r.priority {
                write!(f, " priority={p}")?;
            }
            if r.delay_ms > 0 {
                write!(f, " delay={}ms", r.delay_ms)?;
            }
            if let Some(k) = &r.key {
                write!(f, " key={k}")?;
            }
            if !r.deps.is_empty() {
                write!(f, " depends_on=[{}]", runs(&r.deps))?;
            }
            Ok(())
        };
        match self.0 {
            Op::Enqueue(r) => request(f, "enqueue (round)", r),
            Op::EnqueueDirect(r) => request(f, "enqueue (direct)", r),
            Op::Round => write!(f, "round"),
            Op::Pull {
                agent: a,
                credits,
                stale,
            } => {
                let stale = if *stale { " on a stale connection" } else { "" };
                write!(f, "{} pulls {credits}{stale}", agent(*a))
            }
            Op::Result { agent: a, sent, twice } => {
                let twice = if *twice { " (twice)" } else { "" };
                let permanent = if sent.permanent { " permanent" } else { "" };
                write!(
                    f,
                    "{} reports {}#{} {}{permanent}{twice}",
                    agent(*a),
                    m.name(sent.run),
                    sent.attempt,
                    sent.outcome
                )
            }
            Op::Heartbeat { agent: a, held } => write!(f, "{} heartbeat [{}]", agent(*a), attempts(held)),
            Op::Advance(ms) => write!(f, "advance {ms}ms"),
            Op::ReleaseDue => write!(f, "release due timers"),
            Op::ExpireLeases => write!(f, "expire leases"),
            Op::Cancel(r) => write!(f, "cancel {}", m.name(*r)),
            Op::DlqRetry(rs) => write!(f, "dlq retry [{}]", runs(rs)),
            Op::DlqPurge(rs) => write!(f, "dlq purge [{}]", runs(rs)),
            Op::SetEnabled { job, enabled } => write!(f, "set {} enabled={enabled}", JOBS[*job].name),
            Op::DeleteJob(j) => write!(f, "delete job {}", JOBS[*j].name),
            Op::RestoreJob(j) => write!(f, "restore job {}", JOBS[*j].name),
            Op::Disconnect { agent: a, stale } => {
                let stale = if *stale { " (a stale stream)" } else { "" };
                write!(f, "{} disconnects{stale}", agent(*a))
            }
            Op::Reconnect { agent: a, in_flight } => {
                write!(f, "{} reconnects, in flight [{}]", agent(*a), attempts(in_flight))
            }
            Op::Restart => write!(f, "controller restart"),
        }
    }
}
