//! The engine's hot writes on SQLite, executed as one synchronous call each:
//! inserting runs (enqueues and schedule fires), commit rounds (state changes,
//! attempt starts and ends) and purges of the dead-letter queue, with their
//! events.
//!
//! ## Why not through sqlx
//!
//! sqlx runs every SQLite statement on the connection's own worker thread and
//! hands each one over (and its result back) through channels: a commit round
//! of a dozen statements cost two dozen thread wake-ups, and the profiles of
//! the burn-down showed about 45 % of the controller's CPU in futex calls and
//! thread switches, against under 10 % in SQLite itself. Multi-row statements
//! built afresh for every round also had to be parsed and planned each time.
//!
//! Here the writer connection's handle is taken out of sqlx's worker for the
//! duration of one write ([`sqlx::sqlite::SqliteConnection::lock_handle`]) and
//! the whole transaction runs on the calling thread through `rusqlite` (which
//! links the same bundled SQLite), one row per execution of a statement that
//! was prepared once and stays cached: one hand-off per write instead of one
//! per statement, and no SQL text built or parsed per round. The calling task
//! is the engine's commit loop (or a fire), which holds the engine lock for
//! the write anyway; a round of 1,000 runs takes a few milliseconds.
//!
//! The rules are those of the sqlx path it replaced: a change applies only
//! where its run is still in the change's `from` state, an attempt end only to
//! an attempt that has not ended, a purge only to dead runs, a new run only if
//! its (job, fire instant) is new; any miss refuses the whole transaction
//! (rolled back) with the reason. A failed `COMMIT` is in doubt.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Error;
use crate::model::RunState;
use crate::store::events::{EventRecord, PendingEvent};
use crate::store::write::{self, WriteError};
use crate::store::{AttemptEnd, AttemptStart, InsertPlan, StateChange};

/// A `rusqlite` view of the sqlx writer connection, kept between writes so
/// that its prepared statements stay cached.
pub(super) struct HotConnection {
    /// The sqlite3 handle it wraps (to notice a new connection in the pool).
    handle: NonNull<libsqlite3_sys::sqlite3>,
    /// The wrapper; it never closes the handle (sqlx owns it).
    conn: Connection,
}

// SAFETY: the handle is only used while sqlx's lock on it is held (see
// `SqliteStore::hot_write`), by one thread at a time (behind a mutex).
unsafe impl Send for HotConnection {}

impl HotConnection {
    /// Wraps `handle`, reusing `previous` when it wraps the same handle.
    ///
    /// # Safety
    /// `handle` must be a live connection that the caller has locked for its
    /// exclusive use until it is done with the returned value.
    pub(super) unsafe fn wrap(
        previous: Option<HotConnection>,
        handle: NonNull<libsqlite3_sys::sqlite3>,
    ) -> Result<HotConnection, WriteError> {
        match previous {
            Some(hot) if hot.handle == handle => Ok(hot),
            other => {
                if let Some(stale) = other {
                    // sqlx replaced the connection: the old handle may be
                    // closed, so finalizing its cached statements is not safe.
                    tracing::warn!("the SQLite writer connection was replaced; its cached statements are abandoned");
                    std::mem::forget(stale.conn);
                }
                // SAFETY: the caller's contract.
                let conn = unsafe { Connection::from_handle(handle.as_ptr()) }.map_err(refused)?;
                conn.set_prepared_statement_cache_capacity(64);
                Ok(HotConnection { handle, conn })
            }
        }
    }

    /// Runs `f` inside `BEGIN IMMEDIATE` … `COMMIT`. `f` returning `None`
    /// or failing rolls the transaction back (nothing is written; `None` is
    /// passed on). A failed `COMMIT` is [`WriteError::InDoubt`].
    pub(super) fn transaction<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<Option<T>, WriteError>,
    ) -> Result<Option<T>, WriteError> {
        let conn = &self.conn;
        conn.prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(refused)?;
        match f(conn) {
            Ok(Some(value)) => match conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])) {
                Ok(_) => Ok(Some(value)),
                Err(e) => {
                    rollback(conn);
                    Err(WriteError::InDoubt(e.into()))
                }
            },
            outcome => {
                rollback(conn);
                outcome
            }
        }
    }
}

/// Rolls back the open transaction, if any (a failed `COMMIT` may have
/// ended it already).
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "rolling back a refused write failed");
    }
}

/// A statement's failure: nothing of the transaction is kept.
fn refused(e: rusqlite::Error) -> WriteError {
    WriteError::Refused(e.into())
}

/// Inserts the runs of `plan` with their first transitions' events, their
/// dependencies, idempotency keys and (for fires) cursor moves. `false`: a
/// (job, fire instant) exists already; the caller must not keep anything.
pub(super) fn insert_runs(conn: &Connection, plan: &InsertPlan) -> Result<bool, WriteError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO runs (id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before,
                 ready_at, attempt, max_attempts, reason, workflow_id, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12, ?13, ?14)
             ON CONFLICT DO NOTHING",
        )
        .map_err(refused)?;
    for run in &plan.runs {
        let inserted = insert
            .execute(params![
                run.id,
                run.job,
                run.state.as_str(),
                run.priority.as_str(),
                run.payload,
                run.trigger.as_str(),
                run.scheduled_for,
                run.created_at,
                run.not_before,
                run.ready_at,
                run.max_attempts,
                run.reason,
                run.workflow_id,
                run.idempotency_key,
            ])
            .map_err(refused)?;
        // A (job, scheduled_for) that exists already is ignored by the
        // unique index: this fire happened before.
        if inserted != 1 {
            return Ok(false);
        }
    }
    let mut cursors: BTreeMap<&str, i64> = BTreeMap::new();
    for run in &plan.runs {
        if let Some(instant) = run.scheduled_for {
            let cursor = cursors.entry(run.job.as_str()).or_insert(instant);
            *cursor = (*cursor).max(instant);
        }
    }
    if !cursors.is_empty() {
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO schedule_cursors (job, last_fired) VALUES (?1, ?2)
                 ON CONFLICT (job) DO UPDATE SET last_fired = MAX(last_fired, excluded.last_fired)",
            )
            .map_err(refused)?;
        for (job, instant) in cursors {
            upsert.execute(params![job, instant]).map_err(refused)?;
        }
    }
    if plan.runs.iter().any(|r| r.idempotency_key.is_some()) {
        let mut key = conn
            .prepare_cached(
                "INSERT INTO idempotency_keys (key, run_id, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, created_at = excluded.created_at",
            )
            .map_err(refused)?;
        for run in plan.runs.iter().filter(|r| r.idempotency_key.is_some()) {
            key.execute(params![run.idempotency_key, run.id, run.created_at])
                .map_err(refused)?;
        }
    }
    if !plan.dependencies.is_empty() {
        let mut dependency = conn
            .prepare_cached("INSERT INTO run_dependencies (run_id, upstream_id) VALUES (?1, ?2)")
            .map_err(refused)?;
        for (run_id, upstream_id) in &plan.dependencies {
            dependency.execute(params![run_id, upstream_id]).map_err(refused)?;
        }
    }
    Ok(true)
}

/// Inserts what the ended attempts reported (`attempt_measures`), with
/// their run's job.
fn insert_measures(conn: &Connection, ends: &[AttemptEnd]) -> Result<(), WriteError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO attempt_measures (run_id, attempt, job, finished_at, kind, name, value, count, max_us)
             VALUES (?1, ?2, (SELECT job FROM runs WHERE id = ?1), ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(refused)?;
    for e in ends {
        for m in &e.metrics {
            insert
                .execute(params![
                    e.run_id,
                    e.attempt,
                    e.finished_at,
                    "metric",
                    m.name,
                    m.value,
                    1,
                    0
                ])
                .map_err(refused)?;
        }
        for sp in &e.spans {
            insert
                .execute(params![
                    e.run_id,
                    e.attempt,
                    e.finished_at,
                    "span",
                    sp.name,
                    sp.total_us as f64,
                    sp.count as i64,
                    sp.max_us as i64
                ])
                .map_err(refused)?;
        }
    }
    Ok(())
}

/// Applies attempt starts, attempt ends and state changes, in that order.
/// Returns, for each change, the run's job and attempt number after it (what
/// its event records).
pub(super) fn apply(
    conn: &Connection,
    changes: &[StateChange],
    starts: &[AttemptStart],
    ends: &[AttemptEnd],
) -> Result<Vec<(String, u32)>, WriteError> {
    if !starts.is_empty() {
        let mut start = conn
            .prepare_cached(
                "INSERT INTO attempts (run_id, attempt, agent_id, agent_name, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(refused)?;
        for s in starts {
            start
                .execute(params![s.run_id, s.attempt, s.agent_id, s.agent_name, s.started_at])
                .map_err(refused)?;
        }
    }
    if !ends.is_empty() {
        let mut end = conn
            .prepare_cached(
                "UPDATE attempts SET finished_at = ?3, outcome = ?4, exit_code = ?5, error = ?6, output = ?7,
                     duration_ms = ?8, started_at = COALESCE(?9, started_at)
                 WHERE run_id = ?1 AND attempt = ?2 AND outcome IS NULL",
            )
            .map_err(refused)?;
        for e in ends {
            let ended = end
                .execute(params![
                    e.run_id,
                    e.attempt,
                    e.finished_at,
                    e.outcome.as_str(),
                    e.exit_code,
                    e.error,
                    e.output,
                    e.duration_ms,
                    e.started_at,
                ])
                .map_err(refused)?;
            if ended != 1 {
                return Err(end_conflict(conn, e));
            }
        }
        if ends.iter().any(|e| !e.metrics.is_empty() || !e.spans.is_empty()) {
            insert_measures(conn, ends)?;
        }
    }
    let mut moved = Vec::with_capacity(changes.len());
    if !changes.is_empty() {
        let mut change = conn
            .prepare_cached(
                "UPDATE runs SET state = ?3, reason = ?4, not_before = ?5, ready_at = COALESCE(?6, ready_at),
                     attempt = COALESCE(?7, attempt), max_attempts = COALESCE(?8, max_attempts), finished_at = ?9,
                     cancel_requested = ?10
                 WHERE id = ?1 AND state = ?2
                 RETURNING job, attempt",
            )
            .map_err(refused)?;
        for c in changes {
            let row = change
                .query_row(
                    params![
                        c.run_id,
                        c.from.as_str(),
                        c.to.as_str(),
                        c.reason,
                        c.not_before,
                        c.ready_at,
                        c.attempt,
                        c.max_attempts,
                        c.to.is_terminal().then_some(c.at),
                        c.cancel_requested,
                    ],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)),
                )
                .optional()
                .map_err(refused)?;
            match row {
                Some(job_attempt) => moved.push(job_attempt),
                None => return Err(change_conflict(conn, c)),
            }
        }
    }
    Ok(moved)
}

/// Deletes the dead run `id`; a conflict if it is not a dead run.
pub(super) fn delete_dead(conn: &Connection, id: &str) -> Result<(), WriteError> {
    let deleted = conn
        .prepare_cached("DELETE FROM runs WHERE id = ?1 AND state = 'dead'")
        .and_then(|mut s| s.execute([id]))
        .map_err(refused)?;
    if deleted != 1 {
        return Err(WriteError::conflict(format!(
            "run {id} is not in the dead-letter queue"
        )));
    }
    Ok(())
}

/// Writes `pending` (the events of a write, see `events::run_events`) with
/// sequence numbers taken from the counter row. The job and attempt of an
/// event that needs them come from `moved`, in order (what [`apply`] returned
/// for the changes that move their runs). Returns the events as written.
pub(super) fn write_events(
    conn: &Connection,
    pending: Vec<PendingEvent>,
    moved: &[(String, u32)],
) -> Result<Vec<EventRecord>, WriteError> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let last: i64 = conn
        .prepare_cached("UPDATE event_counter SET last_seq = last_seq + ?1 WHERE id = 1 RETURNING last_seq")
        .and_then(|mut s| s.query_row([pending.len() as i64], |r| r.get(0)))
        .map_err(refused)?;
    let first = last - pending.len() as i64 + 1;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (seq, kind, job, run_id, from_state, to_state, attempt, at, reason, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(refused)?;
    let mut moved = moved.iter();
    let mut events = Vec::with_capacity(pending.len());
    for (i, p) in pending.into_iter().enumerate() {
        let mut event = p.event;
        event.seq = first + i as i64;
        if p.lookup {
            let (job, attempt) = moved
                .next()
                .ok_or_else(|| WriteError::Refused(Error::internal("an event has no change to describe")))?;
            event.job.clone_from(job);
            event.attempt = *attempt;
        }
        insert
            .execute(params![
                event.seq,
                event.kind.as_str(),
                event.job,
                event.run_id,
                event.from.map(RunState::as_str),
                event.state.map(RunState::as_str),
                event.attempt,
                event.at,
                event.reason,
                event.count as i64,
            ])
            .map_err(refused)?;
        events.push(event);
    }
    Ok(events)
}

/// The conflict of `change`, which did not apply: names the state its run is in.
fn change_conflict(conn: &Connection, change: &StateChange) -> WriteError {
    let state = conn
        .prepare_cached("SELECT state FROM runs WHERE id = ?1")
        .and_then(|mut s| s.query_row([&change.run_id], |r| r.get::<_, String>(0)).optional());
    match state {
        Ok(state) => write::change_mismatch(change, state.as_deref())
            .unwrap_or_else(|| write::change_mismatch_unknown(std::slice::from_ref(change))),
        Err(e) => refused(e),
    }
}

/// The conflict of `end`, which did not apply: names the attempt's outcome.
fn end_conflict(conn: &Connection, end: &AttemptEnd) -> WriteError {
    let outcome = conn
        .prepare_cached("SELECT outcome FROM attempts WHERE run_id = ?1 AND attempt = ?2")
        .and_then(|mut s| {
            s.query_row(params![end.run_id, end.attempt], |r| r.get::<_, Option<String>>(0))
                .optional()
        });
    match outcome {
        Ok(outcome) => write::end_mismatch(end, outcome)
            .unwrap_or_else(|| WriteError::conflict("an attempt end did not apply to its attempt")),
        Err(e) => refused(e),
    }
}
