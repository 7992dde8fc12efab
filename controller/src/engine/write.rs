//! The engine's one path to the store: every write of runs goes through
//! [`Engine::write`] (or its variants for fires and purges), called with the
//! core lock held.
//!
//! * A commit that failed *in doubt* (the store may have it) is read back
//!   ([`crate::store::Store::written`]): committed after all is a success;
//!   not committed is a plain refusal on SQLite, where nothing can commit it
//!   later. On PostgreSQL the server may still be committing it, so only
//!   "committed" settles the doubt there. Nothing else writes runs while the
//!   core lock is held, so the answer cannot be overtaken.
//! * A *conflict* (a change that no longer finds its run in its `from` state)
//!   and a doubt that cannot be resolved mean that memory no longer matches
//!   the store: the engine stops ([`Engine::fail`]) rather than go on from a
//!   picture it cannot trust, and the controller exits for a restart.
//! * Once stopped, the engine refuses every write.

use std::time::Duration;

use super::Engine;
use super::transitions::Mover;
use crate::error::{Error, ErrorCode};
use crate::model::RunState;
use crate::store::{AttemptEnd, AttemptStart, InsertPlan, StateChange, WriteError};

/// Waits between tries to read back a commit that failed in doubt (with
/// [`READ_BACK_TIMEOUT`] per try, at most ~7.6 s in all).
const READ_BACK_WAITS_MS: [u64; 6] = [20, 50, 100, 200, 400, 800];

/// How long one read-back may take (a pool may otherwise wait 10 s for a
/// connection, and a hung connection forever).
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(1);

impl Engine {
    /// A state change checked against the table of legal moves
    /// ([`super::transitions::change`]). An illegal move is an engine bug:
    /// the engine stops rather than write it.
    pub(super) fn change(
        &self,
        run_id: &str,
        from: RunState,
        to: RunState,
        by: Mover,
        at: i64,
        reason: Option<String>,
    ) -> crate::error::Result<StateChange> {
        super::transitions::change(run_id, from, to, by, at, reason).inspect_err(|e| self.fail(e.message.clone()))
    }

    /// Commits new runs (never schedule fires), state changes, attempt starts
    /// and ends in one transaction. See the module docs for what a failure means.
    pub(super) async fn write(
        &self,
        plan: &InsertPlan,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<(), WriteError> {
        self.refuse_if_stopped()?;
        let result = self.store.commit(plan, changes, starts, ends).await;
        self.resolve(result, || async {
            self.store.written(plan, changes, starts, ends).await
        })
        .await
    }

    /// Inserts new runs (schedule fires among them): `Ok(false)` when a fire
    /// exists already for its instant (nothing is written).
    pub(super) async fn write_insert(&self, plan: &InsertPlan) -> Result<bool, WriteError> {
        self.refuse_if_stopped()?;
        match self.store.insert_runs(plan).await {
            Ok(inserted) => Ok(inserted),
            Err(e) => self
                .resolve(Err(e), || async { self.store.written(plan, &[], &[], &[]).await })
                .await
                .map(|()| true),
        }
    }

    /// Deletes dead runs and applies the changes of the runs blocked behind
    /// them, in one transaction.
    pub(super) async fn write_purge(&self, ids: &[String], changes: &[StateChange]) -> Result<(), WriteError> {
        self.refuse_if_stopped()?;
        let result = self.store.purge_dead(ids, changes).await;
        self.resolve(result, || async {
            match ids.first() {
                Some(id) => Ok(self.store.run(id).await?.is_none()),
                None => Ok(true),
            }
        })
        .await
    }

    fn refuse_if_stopped(&self) -> Result<(), WriteError> {
        match self.failure() {
            Some(reason) => Err(WriteError::Refused(Error {
                code: ErrorCode::Unavailable,
                message: format!("the controller is stopping after an internal error: {reason}"),
            })),
            None => Ok(()),
        }
    }

    /// Turns a write's result into its final outcome: reads an in-doubt
    /// commit back with `written`, stops the engine on a conflict or an
    /// unresolved doubt.
    async fn resolve<F, Fut>(&self, result: Result<(), WriteError>, written: F) -> Result<(), WriteError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<bool>>,
    {
        match result {
            Ok(()) => Ok(()),
            Err(WriteError::Conflict(e)) => {
                self.fail(format!("a write was refused by the store: {e}"));
                Err(WriteError::Conflict(e))
            }
            Err(WriteError::Fenced(e)) => {
                self.fail(format!("this controller no longer leads: {e}"));
                Err(WriteError::Fenced(e))
            }
            Err(WriteError::InDoubt(e)) => {
                let mut last = String::from("no answer");
                for wait in READ_BACK_WAITS_MS {
                    match tokio::time::timeout(READ_BACK_TIMEOUT, written()).await {
                        Ok(Ok(true)) => {
                            tracing::warn!(error = %e, "a commit failed in doubt; it was recorded");
                            return Ok(());
                        }
                        Ok(Ok(false)) if self.store.not_written_is_final() => {
                            tracing::warn!(error = %e, "a commit failed in doubt; it was not recorded");
                            return Err(WriteError::Refused(e));
                        }
                        Ok(Ok(false)) => last = "not recorded yet, but the server may still commit it".into(),
                        Ok(Err(read)) => last = read.to_string(),
                        Err(_) => last = format!("no answer within {READ_BACK_TIMEOUT:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                self.fail(format!(
                    "a commit failed in doubt ({e}) and its outcome cannot be known: {last}"
                ));
                Err(WriteError::InDoubt(e))
            }
            Err(refused) => Err(refused),
        }
    }
}
