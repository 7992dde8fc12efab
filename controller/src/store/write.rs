//! What a write to the store can end in, and the fail points that make a write
//! fail on purpose in tests.
//!
//! Every write of the engine (new runs, state changes, attempt starts and
//! ends) is one transaction, and it ends in one of four ways:
//!
//! * committed (`Ok`);
//! * [`WriteError::Refused`]: nothing was written (a statement failed, or the
//!   store could not be reached);
//! * [`WriteError::Conflict`]: nothing was written because a change found its
//!   run in another state than the one it moves it from, or an attempt end
//!   found its attempt already ended: the engine's memory disagrees with the
//!   store;
//! * [`WriteError::InDoubt`]: the commit itself failed, so the data may or may
//!   not be written; [`super::Store::written`] tells which;
//! * [`WriteError::Fenced`]: nothing was written because another controller
//!   leads now (PostgreSQL high availability: the write's epoch is not the
//!   lease's any more).
//!
//! ## Fail points
//!
//! With the `failpoints` cargo feature (which the tests enable) the store
//! evaluates these [`fail`] points before and after each write; without it
//! they compile to nothing.
//!
//! | fail point | action | effect |
//! |---|---|---|
//! | `store::unavailable` | `return` | every write is refused as if the store were unreachable |
//! | `store::poison` | `return(ID,ID…)` | writes touching these run ids (or new runs of these jobs) are refused |
//! | `store::in_doubt` | `return` | the write is committed, then reported as failed in doubt |
//! | `store::in_doubt` | `return(lost)` | nothing is written, and the write is reported as failed in doubt |
//! | `store::in_doubt` | `return(unverifiable)` | committed, reported in doubt, and reading it back fails too |
//! | `store::slow` | `return(MS)` | each write waits MS milliseconds before it starts |

use super::{AttemptEnd, AttemptStart, InsertPlan, StateChange};
use crate::error::{Error, ErrorCode};

/// Why a write was not, or may not have been, applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Nothing was written.
    #[error("{0}")]
    Refused(Error),
    /// Nothing was written: a change or an attempt end did not find its run in
    /// the state it expected (the engine's memory disagrees with the store).
    #[error("{0}")]
    Conflict(Error),
    /// The commit failed after it was sent: the data may or may not be written.
    #[error("{0}")]
    InDoubt(Error),
    /// Nothing was written: this controller's leadership epoch is no longer
    /// the lease's (another controller took over).
    #[error("{0}")]
    Fenced(Error),
}

impl WriteError {
    /// The underlying error.
    pub fn error(&self) -> &Error {
        match self {
            WriteError::Refused(e) | WriteError::Conflict(e) | WriteError::InDoubt(e) | WriteError::Fenced(e) => e,
        }
    }

    /// Whether the store could not be reached at all (every other write would
    /// fail the same way), as opposed to refusing this write's content.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, WriteError::Refused(e) if e.code == ErrorCode::Unavailable)
    }

    /// A conflict naming what did not match.
    pub fn conflict(message: impl Into<String>) -> WriteError {
        WriteError::Conflict(Error::internal(format!("state conflict: {}", message.into())))
    }
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Refused(e.into())
    }
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        WriteError::Refused(e)
    }
}

/// A failed commit: whether it was written is unknown.
pub(super) fn in_doubt(e: sqlx::Error) -> WriteError {
    WriteError::InDoubt(e.into())
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(e) | WriteError::Conflict(e) | WriteError::Fenced(e) => e,
            WriteError::InDoubt(e) => Error {
                code: e.code,
                message: format!("the store may not have recorded it: {}", e.message),
            },
        }
    }
}

/// One write, as the store and its checks see it.
#[derive(Clone, Copy)]
pub(super) struct Write<'a> {
    pub plan: &'a InsertPlan,
    pub changes: &'a [StateChange],
    pub starts: &'a [AttemptStart],
    pub ends: &'a [AttemptEnd],
}

impl Write<'_> {
    /// Refuses a write that changes one run twice or ends one attempt twice:
    /// its statements could not tell which change wins (an engine bug).
    pub fn check_unique(&self) -> Result<(), WriteError> {
        let mut seen = std::collections::HashSet::with_capacity(self.changes.len());
        if let Some(twice) = self.changes.iter().find(|c| !seen.insert(c.run_id.as_str())) {
            return Err(WriteError::conflict(format!(
                "run {} is changed twice in one commit",
                twice.run_id
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.ends.len());
        if let Some(twice) = self.ends.iter().find(|e| !seen.insert((e.run_id.as_str(), e.attempt))) {
            return Err(WriteError::conflict(format!(
                "attempt {} of run {} is ended twice in one commit",
                twice.attempt, twice.run_id
            )));
        }
        Ok(())
    }

    /// Whether the write touches run (or job) `id`.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    fn touches(&self, id: &str) -> bool {
        self.plan.runs.iter().any(|r| r.id == id || r.job == id)
            || self.changes.iter().any(|c| c.run_id == id)
            || self.starts.iter().any(|s| s.run_id == id)
            || self.ends.iter().any(|e| e.run_id == id)
    }
}

/// The conflict of `change` when its run is now in `state` (as the failed
/// transaction saw it after its update), if that shows the change did not
/// apply: a change that applied left its run in its `to` state.
pub(super) fn change_mismatch(change: &StateChange, state: Option<&str>) -> Option<WriteError> {
    match state {
        None => Some(WriteError::conflict(format!(
            "run {} does not exist (its change {} -> {} was refused)",
            change.run_id, change.from, change.to
        ))),
        Some(state) if state != change.to.as_str() => Some(WriteError::conflict(format!(
            "run {} is {state}, not {} (its change to {} was refused)",
            change.run_id, change.from, change.to
        ))),
        Some(_) => None,
    }
}

/// The conflict of a batch of changes of which some did not apply although
/// every run is in its change's `to` state: a run was already there.
pub(super) fn change_mismatch_unknown(chunk: &[StateChange]) -> WriteError {
    let first = chunk.iter().find(|c| c.from != c.to).or(chunk.first());
    match first {
        Some(c) => WriteError::conflict(format!(
            "a run of this commit (such as {}) was already {} before its change from {}",
            c.run_id, c.to, c.from
        )),
        None => WriteError::conflict("a change did not apply to its run"),
    }
}

/// The conflict of `end` when its attempt's recorded outcome is `outcome`
/// (`None`: no such attempt; `Some(None)`: not ended), if that shows the end
/// did not apply.
pub(super) fn end_mismatch(end: &AttemptEnd, outcome: Option<Option<String>>) -> Option<WriteError> {
    match outcome {
        None => Some(WriteError::conflict(format!(
            "attempt {} of run {} does not exist (its end was refused)",
            end.attempt, end.run_id
        ))),
        Some(Some(recorded)) if recorded != end.outcome.as_str() => Some(WriteError::conflict(format!(
            "attempt {} of run {} already ended {recorded} (its end as {} was refused)",
            end.attempt, end.run_id, end.outcome
        ))),
        _ => None,
    }
}

/// How an armed `store::in_doubt` fail point ends a write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum InDoubt {
    /// Written, reported in doubt.
    Written,
    /// Not written, reported in doubt.
    Lost,
    /// Written, reported in doubt, and not readable back.
    Unverifiable,
}

/// The argument of fail point `name` when it is armed with `return(ARG)`
/// (`Some("")` for a bare `return`), `None` when it is off.
#[cfg(feature = "failpoints")]
pub(super) fn armed(name: &str) -> Option<String> {
    fail::fail_point!(name, |arg: Option<String>| Some(arg.unwrap_or_default()));
    None
}

/// Without the `failpoints` feature no fail point is ever armed.
#[cfg(not(feature = "failpoints"))]
pub(super) fn armed(_name: &str) -> Option<String> {
    None
}

/// Evaluates the fail points that act before a write (see the module docs).
/// Returns how an armed `store::in_doubt` wants the write to end.
pub(super) async fn before(write: Write<'_>) -> Result<Option<InDoubt>, WriteError> {
    if let Some(ms) = armed("store::slow") {
        let ms = ms.parse::<u64>().unwrap_or(100);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if armed("store::unavailable").is_some() {
        return Err(WriteError::Refused(Error {
            code: ErrorCode::Unavailable,
            message: "store unavailable: refused by fail point store::unavailable".into(),
        }));
    }
    if let Some(ids) = armed("store::poison")
        && let Some(id) = ids.split(',').map(str::trim).find(|id| write.touches(id))
    {
        return Err(WriteError::Refused(Error::internal(format!(
            "store error: the write of {id} was refused by fail point store::poison"
        ))));
    }
    Ok(armed("store::in_doubt").map(|mode| match mode.as_str() {
        "lost" => InDoubt::Lost,
        "unverifiable" => InDoubt::Unverifiable,
        _ => InDoubt::Written,
    }))
}

/// The error of a write that an armed `store::in_doubt` reports in doubt.
pub(super) fn in_doubt_error() -> WriteError {
    WriteError::InDoubt(Error {
        code: ErrorCode::Unavailable,
        message: "store unavailable: the commit failed in doubt (fail point store::in_doubt)".into(),
    })
}
