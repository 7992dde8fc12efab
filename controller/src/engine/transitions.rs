//! The run state machine in one place: the table of legal moves, who makes
//! each, and the decision of where a run goes when an attempt ends.
//! `docs/architecture.md#the-run-state-machine` shows [`TRANSITIONS`] as a
//! table, and a test below fails when the two differ.
//!
//! Every state change the engine writes is built by [`change`], which refuses a
//! move that is not in [`TRANSITIONS`] (an engine bug, reported as an internal
//! error before anything is written). The store then applies each change only
//! where the run is still in the change's `from` state (see
//! [`crate::store::WriteError::Conflict`]), so a change computed from a stale
//! picture of a run can never land either.
//!
//! ```text
//!            ┌──────────── timer ─────────────┐
//!  create ─▶ scheduled                        ▼
//!  create ─▶ blocked ── upstream succeeded ─▶ queued ── dispatcher ─▶ running
//!  create ─────────────────────────────────▶ ▲                         │
//!                                             │ dlq retry     result / lease expiry
//!                                            dead ◀───────────────────┤
//!                          scheduled (retry) ◀────────────────────────┤
//!                                      succeeded / cancelled ◀────────┘
//! ```

use std::fmt;

use crate::error::{Error, Result};
use crate::job::RetryPolicy;
use crate::model::{Outcome, RunState};
use crate::store::StateChange;

/// The component that moves a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mover {
    /// An enqueue, a batch, a workflow or a schedule fire creating the run.
    Create,
    /// The timer loop: a `not_before` has come.
    Timer,
    /// The dispatcher: an agent with a free credit takes the run.
    Dispatcher,
    /// An agent's result for the run's current attempt.
    Agent,
    /// The timer loop: the attempt's agent was silent past the lease, or no
    /// result came within the job's timeout plus the lease.
    LeaseExpiry,
    /// An operator (or application) through the API: cancel, retry, DLQ.
    Operator,
    /// A schedule fire of a job with `overlap: replace` cancelling older runs.
    Scheduler,
    /// A change of an upstream run (succeeded, cancelled, died or purged).
    Upstream,
    /// Start-up recovery: the run's job is no longer defined.
    Recovery,
}

impl fmt::Display for Mover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mover::Create => "create",
            Mover::Timer => "timer",
            Mover::Dispatcher => "dispatcher",
            Mover::Agent => "agent result",
            Mover::LeaseExpiry => "lease expiry",
            Mover::Operator => "operator",
            Mover::Scheduler => "scheduler",
            Mover::Upstream => "upstream",
            Mover::Recovery => "recovery",
        })
    }
}

/// One legal move.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    /// State before.
    pub from: RunState,
    /// State after (the same as `from` for a change that only updates the
    /// run's reason or its pending cancel).
    pub to: RunState,
    /// Who makes it.
    pub by: Mover,
    /// When.
    pub when: &'static str,
}

const fn t(from: RunState, to: RunState, by: Mover, when: &'static str) -> Transition {
    Transition { from, to, by, when }
}

use Mover::*;
use RunState::{Blocked, Cancelled, Dead, Queued, Running, Scheduled, Succeeded};

/// The states a run is created in, and by whom.
pub const INITIAL_STATES: &[(RunState, Mover, &str)] = &[
    (Queued, Create, "ready at once"),
    (Scheduled, Create, "delayed (--delay, --at, a jittered fire)"),
    (Blocked, Create, "an upstream run has not succeeded yet"),
];

/// Every legal move of a run. Anything else is refused by [`change`].
/// `dlq purge` is not a move: it deletes a dead run (and cancels the runs
/// blocked behind it, an `Upstream` move).
pub const TRANSITIONS: &[Transition] = &[
    t(Scheduled, Queued, Timer, "its not_before has come"),
    t(Scheduled, Cancelled, Operator, "cancelled while waiting"),
    t(
        Scheduled,
        Cancelled,
        Scheduler,
        "replaced by a newer fire (overlap: replace)",
    ),
    t(Blocked, Queued, Upstream, "its last upstream run succeeded"),
    t(
        Blocked,
        Scheduled,
        Upstream,
        "its last upstream run succeeded before its not_before",
    ),
    t(
        Blocked,
        Blocked,
        Upstream,
        "an upstream run succeeded or died; others remain (reason updated)",
    ),
    t(Blocked, Cancelled, Upstream, "an upstream run was cancelled or purged"),
    t(Blocked, Cancelled, Operator, "cancelled while waiting"),
    t(
        Blocked,
        Cancelled,
        Scheduler,
        "replaced by a newer fire (overlap: replace)",
    ),
    t(Queued, Running, Dispatcher, "assigned to an agent"),
    t(Queued, Cancelled, Operator, "cancelled while waiting"),
    t(
        Queued,
        Cancelled,
        Scheduler,
        "replaced by a newer fire (overlap: replace)",
    ),
    t(Running, Running, Operator, "cancel requested (the agent is told)"),
    t(
        Running,
        Running,
        Scheduler,
        "cancel requested by a newer fire (overlap: replace)",
    ),
    t(Running, Succeeded, Agent, "the attempt succeeded"),
    t(
        Running,
        Scheduled,
        Agent,
        "the attempt failed; retried after the backoff",
    ),
    t(
        Running,
        Dead,
        Agent,
        "the attempt failed; attempts exhausted or not retryable",
    ),
    t(Running, Cancelled, Agent, "the attempt ended after a cancel request"),
    t(
        Running,
        Scheduled,
        LeaseExpiry,
        "the attempt was lost or timed out; retried after the backoff",
    ),
    t(
        Running,
        Dead,
        LeaseExpiry,
        "the attempt was lost or timed out; attempts exhausted",
    ),
    t(
        Running,
        Cancelled,
        LeaseExpiry,
        "the attempt was lost after a cancel request",
    ),
    t(
        Dead,
        Queued,
        Operator,
        "dlq retry: queued again with a renewed attempt budget",
    ),
    t(Scheduled, Dead, Recovery, "its job is no longer defined"),
    t(Blocked, Dead, Recovery, "its job is no longer defined"),
    t(Queued, Dead, Recovery, "its job is no longer defined"),
    t(Running, Dead, Recovery, "its job is no longer defined"),
];

/// The table entry for `from -> to` made by `by`, if the move is legal.
pub fn rule(from: RunState, to: RunState, by: Mover) -> Option<&'static Transition> {
    TRANSITIONS.iter().find(|t| t.from == from && t.to == to && t.by == by)
}

/// Checks a move against the table.
pub fn check(run_id: &str, from: RunState, to: RunState, by: Mover) -> Result<()> {
    match rule(from, to, by) {
        Some(_) => Ok(()),
        None => Err(Error::internal(format!(
            "illegal transition of run {run_id}: {from} -> {to} by {by}"
        ))),
    }
}

/// Checks the state a run is created in.
pub fn check_initial(run_id: &str, state: RunState) -> Result<()> {
    if INITIAL_STATES.iter().any(|(s, _, _)| *s == state) {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "illegal initial state of run {run_id}: {state}"
        )))
    }
}

/// A state change of `run_id` from `from` to `to` by `by`, at `at`, for the
/// store (which applies it only if the run is still in `from`). Refused when
/// the table has no such move.
pub fn change(
    run_id: &str,
    from: RunState,
    to: RunState,
    by: Mover,
    at: i64,
    reason: Option<String>,
) -> Result<StateChange> {
    check(run_id, from, to, by)?;
    Ok(StateChange::new(run_id, from, to, at, reason))
}

/// Longest retry delay an attempt may ask for (`Finished.retry_after_ms`, an
/// HTTP `Retry-After`): a day. A longer ask waits this long.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(86_400);

/// What is known about an attempt that ended, for [`settle`].
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Its error (or the outcome's name when it reported none).
    pub error: &'a str,
    /// The failure is marked non-retryable (shell exit code listed, SDK permanent error).
    pub permanent: bool,
    /// The attempt asked its retry to wait at least this long, in ms (an
    /// HTTP `Retry-After`; 0 = no ask). Honoured up to [`MAX_RETRY_AFTER`].
    pub retry_after_ms: u64,
    /// The attempt's number.
    pub attempt: u32,
    /// The run's attempt limit.
    pub max_attempts: u32,
    /// An operator asked to cancel the run while it ran, with this reason.
    pub cancel: Option<&'a str>,
}

/// Where a run goes after an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The next state: `succeeded`, `scheduled` (retry), `dead` or `cancelled`.
    pub to: RunState,
    /// Why (recorded on the run and the transition).
    pub reason: Option<String>,
    /// For a retry: the delay before the next attempt may start, in ms.
    pub retry_in_ms: Option<i64>,
}

/// Decides the next state of a run whose attempt ended, in this order: a
/// success succeeds; otherwise a cancel request cancels; a permanent failure
/// and an exhausted budget kill (the DLQ); otherwise the job's retry policy
/// schedules the next attempt. Without a policy (the job was deleted while the
/// attempt ran) nothing says how to retry: dead.
pub fn settle(ended: &Ended<'_>, job: &str, retry: Option<&RetryPolicy>, rng: &mut impl rand::Rng) -> Settled {
    let error = ended.error;
    let (to, reason, retry_in_ms) = match ended.outcome {
        Outcome::Succeeded => (Succeeded, None, None),
        _ if ended.cancel.is_some() => (
            Cancelled,
            Some(ended.cancel.unwrap_or("cancelled by operator").to_string()),
            None,
        ),
        _ if ended.permanent => (Dead, Some(format!("non-retryable failure: {error}")), None),
        _ if ended.attempt >= ended.max_attempts => (
            Dead,
            Some(format!("attempts exhausted ({}): {error}", ended.attempt)),
            None,
        ),
        _ => match retry {
            Some(policy) => {
                let asked = ended.retry_after_ms.min(MAX_RETRY_AFTER.as_millis() as u64) as i64;
                let delay = (policy.delay(ended.attempt, rng).as_millis() as i64).max(asked);
                let reason = format!(
                    "attempt {} {}: {error}; retry in {delay} ms",
                    ended.attempt, ended.outcome
                );
                (Scheduled, Some(reason), Some(delay))
            }
            None => (Dead, Some(format!("job \"{job}\" is no longer defined: {error}")), None),
        },
    };
    Settled {
        to,
        reason,
        retry_in_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/architecture.md` shows the state machine as a table; it must be
    /// this one, row for row, so a newcomer never reads a stale copy.
    #[test]
    fn the_architecture_document_shows_this_table() {
        let doc = include_str!("../../../docs/architecture.md");
        let shown: Vec<&str> = doc
            .lines()
            .skip_while(|line| *line != "| from | to | mover | when |")
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .collect();
        let mut table: Vec<String> = INITIAL_STATES
            .iter()
            .map(|(to, by, when)| format!("| (new) | `{to}` | `{by:?}` | {when} |"))
            .collect();
        table.extend(
            TRANSITIONS
                .iter()
                .map(|t| format!("| `{}` | `{}` | `{:?}` | {} |", t.from, t.to, t.by, t.when)),
        );
        assert_eq!(
            shown,
            table,
            "docs/architecture.md's table of moves differs from TRANSITIONS; its rows should be:\n{}",
            table.join("\n")
        );
    }

    #[test]
    fn terminal_states_are_never_left_except_dead_by_dlq_retry() {
        for t in TRANSITIONS {
            if t.from.is_terminal() {
                assert_eq!((t.from, t.to, t.by), (Dead, Queued, Operator), "{t:?}");
            }
        }
        assert!(change("r", Succeeded, Queued, Operator, 0, None).is_err());
        assert!(change("r", Cancelled, Running, Dispatcher, 0, None).is_err());
        assert!(change("r", Dead, Running, Agent, 0, None).is_err());
    }

    #[test]
    fn every_non_terminal_state_has_a_way_out_and_a_way_in() {
        for state in RunState::ALL.iter().filter(|s| !s.is_terminal()) {
            assert!(
                TRANSITIONS.iter().any(|t| t.from == *state && t.to != *state),
                "{state} has no exit"
            );
        }
        for state in RunState::ALL {
            let entered = TRANSITIONS.iter().any(|t| t.to == *state && t.from != *state)
                || INITIAL_STATES.iter().any(|(s, _, _)| s == state);
            assert!(entered, "{state} is never entered");
        }
    }

    #[test]
    fn only_the_dispatcher_starts_a_run_and_only_attempt_ends_leave_running() {
        for t in TRANSITIONS {
            if t.to == Running && t.from != Running {
                assert_eq!(t.by, Dispatcher, "{t:?}");
            }
            if t.from == Running && t.to != Running {
                assert!(matches!(t.by, Agent | LeaseExpiry | Recovery), "{t:?}");
            }
        }
    }

    #[test]
    fn illegal_moves_name_the_run_and_the_move() {
        let err = change("r1", Succeeded, Running, Dispatcher, 0, None).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Internal);
        assert_eq!(
            err.message,
            "illegal transition of run r1: succeeded -> running by dispatcher"
        );
        assert!(check_initial("r1", Running).is_err());
        assert!(check_initial("r1", Blocked).is_ok());
    }

    fn ended(outcome: Outcome, attempt: u32, max_attempts: u32) -> Ended<'static> {
        Ended {
            outcome,
            error: "exit code 1",
            permanent: false,
            retry_after_ms: 0,
            attempt,
            max_attempts,
            cancel: None,
        }
    }

    #[test]
    fn settlement_follows_success_cancel_permanent_budget_then_retry() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let rng = &mut rand::rng();
        let retry = settle(&ended(Outcome::Failed, 1, 3), "j", Some(&policy), rng);
        assert_eq!(retry.to, Scheduled);
        assert_eq!(retry.retry_in_ms, Some(policy.initial_delay.as_millis() as i64));
        assert_eq!(
            settle(&ended(Outcome::Succeeded, 3, 3), "j", Some(&policy), rng).to,
            Succeeded
        );
        let exhausted = settle(&ended(Outcome::Lost, 3, 3), "j", Some(&policy), rng);
        assert_eq!(exhausted.to, Dead);
        assert_eq!(exhausted.reason.as_deref(), Some("attempts exhausted (3): exit code 1"));
        let mut asked = ended(Outcome::Failed, 1, 3);
        asked.retry_after_ms = 90_000;
        assert_eq!(
            settle(&asked, "j", Some(&policy), rng).retry_in_ms,
            Some(90_000),
            "Retry-After above the backoff wins"
        );
        asked.retry_after_ms = 1_000;
        assert_eq!(
            settle(&asked, "j", Some(&policy), rng).retry_in_ms,
            Some(policy.initial_delay.as_millis() as i64),
            "the backoff above Retry-After wins"
        );
        asked.retry_after_ms = u64::MAX;
        assert_eq!(
            settle(&asked, "j", Some(&policy), rng).retry_in_ms,
            Some(MAX_RETRY_AFTER.as_millis() as i64)
        );
        let mut permanent = ended(Outcome::Failed, 1, 3);
        permanent.permanent = true;
        assert_eq!(settle(&permanent, "j", Some(&policy), rng).to, Dead);
        let mut cancelled = ended(Outcome::Cancelled, 1, 3);
        cancelled.cancel = Some("no longer needed");
        let c = settle(&cancelled, "j", Some(&policy), rng);
        assert_eq!((c.to, c.reason.as_deref()), (Cancelled, Some("no longer needed")));
        // A success wins over a cancel request that came too late.
        let mut late = ended(Outcome::Succeeded, 1, 3);
        late.cancel = Some("too late");
        assert_eq!(settle(&late, "j", Some(&policy), rng).to, Succeeded);
        // The job was deleted while the attempt ran.
        let orphan = settle(&ended(Outcome::Failed, 1, 3), "gone", None, rng);
        assert_eq!(orphan.to, Dead);
        assert!(
            orphan
                .reason
                .as_deref()
                .unwrap()
                .contains("job \"gone\" is no longer defined")
        );
        // Every decision is a legal move for both movers of attempt ends.
        for s in [retry, exhausted, c, orphan] {
            assert!(rule(Running, s.to, Agent).is_some() && rule(Running, s.to, LeaseExpiry).is_some());
        }
    }
}
