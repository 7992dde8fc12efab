//! What the engine and the scheduler tell alerting: plain facts, sent without
//! waiting through an [`AlertSink`].
//!
//! The engine never decides whether something is worth an alert; it reports
//! what happened (an attempt ended, fires were missed or could not be created,
//! an agent went silent, this controller began leading after another) and the
//! alerting service derives the alert events (`docs/alerting.md`) from it (see [`super::detect`]). Sending is one push
//! onto an unbounded channel, so a slow or dead alert channel can never hold
//! the engine lock or delay dispatch. The sink also carries which events any rule wants, so that
//! the hot path builds no fact nobody would read (a burn-down of successes with
//! no `recovered`, `run_slow` or `consecutive_failures` rule sends nothing, and
//! with no `schedule_failed` rule a failed fire sends nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::mpsc;

use super::rules::Event;
use crate::model::{Outcome, Priority, RunState};

/// Most output an [`AttemptFact`] carries (its end): more than any channel shows.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// The last [`OUTPUT_TAIL_BYTES`] of `output`, cut on a character boundary.
pub fn output_tail(output: &str) -> String {
    crate::engine::tail_bytes(output, OUTPUT_TAIL_BYTES).to_string()
}

/// One attempt ended and its run moved on.
#[derive(Debug, Clone)]
pub struct AttemptFact {
    /// Run id.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// The run's priority.
    pub priority: Priority,
    /// The attempt that ended (1-based).
    pub attempt: u32,
    /// The run's attempt limit.
    pub max_attempts: u32,
    /// The agent's name, when known.
    pub agent: Option<String>,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// The run's state after it (`scheduled` for a retry, `dead`, `succeeded`…).
    pub state: RunState,
    /// The attempt's error (or why the run moved, e.g. "attempts exhausted").
    pub error: Option<String>,
    /// The end of the attempt's output (at most [`OUTPUT_TAIL_BYTES`]; only
    /// for unsuccessful attempts).
    pub output_tail: Option<String>,
    /// How long the attempt ran, when known.
    pub duration_ms: Option<i64>,
    /// When it ended (Unix ms).
    pub at: i64,
    /// Values the attempt reported (for `metric_high`).
    pub metrics: Vec<crate::store::MetricRecord>,
    /// Time per operation it reported (for `run_slow` with a `span`).
    pub spans: Vec<crate::store::SpanRecord>,
}

/// Schedule fires that did not run.
#[derive(Debug, Clone)]
pub struct MissedFact {
    /// Job name.
    pub job: String,
    /// The job's priority.
    pub priority: Priority,
    /// How many fires were missed.
    pub fires: u64,
    /// Why (`missed while the controller was down (catch_up: skip)`…).
    pub reason: String,
    /// The nominal instant of the (last) missed fire (Unix ms).
    pub fire_at: i64,
    /// When it was noticed (Unix ms).
    pub at: i64,
}

/// A schedule fire could not be created (its run was not enqueued); the
/// scheduler tries it again later.
#[derive(Debug, Clone)]
pub struct FailedFireFact {
    /// Job name.
    pub job: String,
    /// The job's priority.
    pub priority: Priority,
    /// The nominal instant of the fire that failed (Unix ms).
    pub fire_at: i64,
    /// How many times in a row this job's fires have failed (1 on the first failure).
    pub failures: u32,
    /// Why it failed (the error, as the operator should read it).
    pub error: String,
    /// When the scheduler tries again (Unix ms), if it does.
    pub retry_at: Option<i64>,
    /// When it failed (Unix ms).
    pub at: i64,
}

/// An agent has been silent (disconnected or without heartbeats) for longer
/// than the lease timeout.
#[derive(Debug, Clone)]
pub struct AgentFact {
    /// The agent's process-instance id.
    pub agent_id: String,
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Whether its stream is still open (silent but connected).
    pub connected: bool,
    /// Attempts it held when it went silent.
    pub running: usize,
    /// When it was last heard from (Unix ms).
    pub last_seen: i64,
    /// When it was declared lost (Unix ms).
    pub at: i64,
}

/// A controller that led before (for [`LeaderChange`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviousLeader {
    /// Its `--ha-id`.
    pub id: String,
    /// Its advertised gRPC URL.
    pub address: String,
    /// The epoch it led in.
    pub epoch: i64,
    /// When it took the lease (Unix ms, the database's clock).
    pub since: i64,
}

/// A change of leader (PostgreSQL high availability; see [`crate::ha`]):
/// this controller began a term after an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaderChange {
    /// The new leader's `--ha-id` (this controller's).
    pub id: String,
    /// Its advertised gRPC URL.
    pub address: String,
    /// The epoch of its term.
    pub epoch: i64,
    /// When it took the lease (Unix ms, the database's clock).
    pub since: i64,
    /// Who led in the term before (`None` when its record cannot be read).
    pub previous: Option<PreviousLeader>,
}

/// This controller began leading after another term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderFact {
    /// Who leads now and who led before.
    pub change: LeaderChange,
    /// When it was reported (Unix ms).
    pub at: i64,
}

/// Something that happened, for alerting to judge.
#[derive(Debug, Clone)]
pub enum Fact {
    /// An attempt ended.
    AttemptEnded(Box<AttemptFact>),
    /// Schedule fires were missed or skipped.
    ScheduleMissed(MissedFact),
    /// A schedule fire could not be created (reported on each failed try).
    ScheduleFailed(FailedFireFact),
    /// An agent was lost.
    AgentLost(AgentFact),
    /// This controller took over the leadership from another term.
    LeaderChanged(LeaderFact),
}

/// Where the engine and the scheduler send [`Fact`]s. Cheap to clone; sending
/// never blocks and never fails loudly (with alerting stopped, facts are dropped).
#[derive(Debug, Clone)]
pub struct AlertSink {
    tx: mpsc::UnboundedSender<Fact>,
    interest: Arc<AtomicU32>,
}

impl AlertSink {
    /// A sink sending on `tx`, wanting the events whose bits `interest` holds
    /// (see [`interest_mask`]).
    pub fn new(tx: mpsc::UnboundedSender<Fact>, interest: Arc<AtomicU32>) -> AlertSink {
        AlertSink { tx, interest }
    }

    /// Whether some rule is about `event`.
    pub fn wants(&self, event: Event) -> bool {
        self.interest.load(Ordering::Relaxed) & bit(event) != 0
    }

    /// Whether an attempt that ended with `outcome` can matter to some rule.
    /// Successes matter only to `recovered`, `consecutive_failures` (they reset
    /// the count), `run_slow` and `metric_high`; cancellations only to
    /// `metric_high`.
    pub fn wants_attempt(&self, outcome: Outcome) -> bool {
        let wanted = match outcome {
            Outcome::Succeeded => &[
                Event::Recovered,
                Event::ConsecutiveFailures,
                Event::RunSlow,
                Event::MetricHigh,
            ][..],
            // What a cancelled attempt reported still counts (a cost was paid).
            Outcome::Cancelled => &[Event::MetricHigh][..],
            _ => &[
                Event::RunFailed,
                Event::RunTimedOut,
                Event::RunDead,
                Event::ConsecutiveFailures,
                Event::Recovered,
                Event::RunSlow,
                Event::MetricHigh,
            ][..],
        };
        wanted.iter().any(|e| self.wants(*e))
    }

    /// Sends a fact (dropped when alerting has stopped).
    pub fn send(&self, fact: Fact) {
        let _ = self.tx.send(fact);
    }
}

/// The bit of `event` in an interest mask.
fn bit(event: Event) -> u32 {
    let index = Event::ALL.iter().position(|e| *e == event).unwrap_or(0);
    1 << index
}

/// The interest mask of a set of events.
pub fn interest_mask(events: impl IntoIterator<Item = Event>) -> u32 {
    events.into_iter().fold(0, |mask, e| mask | bit(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tails_keep_the_end_on_a_char_boundary() {
        assert_eq!(output_tail("short"), "short");
        let long = format!("{}é{}", "a".repeat(10_000), "z".repeat(OUTPUT_TAIL_BYTES - 1));
        let tail = output_tail(&long);
        assert!(tail.len() <= OUTPUT_TAIL_BYTES && tail.ends_with('z'));
        assert!(!tail.contains('é'), "the cut fell inside é and moved past it");
    }

    #[test]
    fn interest_selects_which_attempt_ends_are_sent() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let interest = Arc::new(AtomicU32::new(interest_mask([Event::RunDead])));
        let sink = AlertSink::new(tx, interest.clone());
        assert!(sink.wants(Event::RunDead) && !sink.wants(Event::RunFailed));
        assert!(sink.wants_attempt(Outcome::Failed));
        assert!(!sink.wants_attempt(Outcome::Succeeded), "no rule cares about successes");
        assert!(!sink.wants_attempt(Outcome::Cancelled));
        interest.store(interest_mask([Event::Recovered]), Ordering::Relaxed);
        assert!(sink.wants_attempt(Outcome::Succeeded) && sink.wants_attempt(Outcome::Lost));
        interest.store(0, Ordering::Relaxed);
        assert!(!sink.wants_attempt(Outcome::TimedOut));
    }

    #[test]
    fn every_event_has_its_own_interest_bit() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let interest = Arc::new(AtomicU32::new(0));
        let sink = AlertSink::new(tx, interest.clone());
        assert!(Event::ALL.len() <= 32, "the mask is a u32");
        for event in Event::ALL {
            interest.store(interest_mask([*event]), Ordering::Relaxed);
            for other in Event::ALL {
                assert_eq!(sink.wants(*other), other == event, "{event} vs {other}");
            }
        }
        interest.store(interest_mask([Event::ScheduleMissed]), Ordering::Relaxed);
        assert!(
            !sink.wants(Event::ScheduleFailed),
            "schedule_missed is not schedule_failed"
        );
        interest.store(
            interest_mask([Event::ScheduleFailed, Event::RunDead]),
            Ordering::Relaxed,
        );
        assert!(sink.wants(Event::ScheduleFailed) && !sink.wants(Event::ScheduleMissed));
        assert!(
            !sink.wants_attempt(Outcome::Succeeded),
            "schedule_failed wants no attempt ends"
        );
    }
}
