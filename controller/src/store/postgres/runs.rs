//! PostgreSQL queries of runs and their history: inserting new runs (with their
//! first transitions, dependencies, idempotency keys and, for schedule fires,
//! the cursor move), the engine's commit rounds (state changes, attempt starts
//! and ends, transitions), purging runs from the dead-letter queue, reading back
//! a write that failed in doubt, the reads of runs, attempts, transitions and a
//! job's statistics, and the recovery read of every unfinished run at start-up.
//!
//! The write path is one piece because its statements share one transaction: a
//! change applies only where its run is still in the change's `from` state, an
//! attempt end only to an attempt that has not ended, a purge only to dead runs,
//! and any miss refuses the whole transaction (`docs/decisions.md`, "Engine
//! invariants"). Leases and the ready queue are not stored: at start-up the
//! engine rebuilds them in memory from the unfinished runs and their attempts.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::events::write_events;
use super::{PgStore, RUN_COLUMNS, run_from_row};
use crate::error::{Error, Result};
use crate::model::{Outcome, RunState};
use crate::store::events::{self, EventRecord};
use crate::store::write::{self, Write, WriteError};
use crate::store::{
    AttemptEnd, AttemptRecord, AttemptStart, DayRows, HourCount, InsertPlan, JobListRows, JobStatsRecord, MeasureRow,
    RunRecord, StateChange, TransitionRecord, parse_column,
};

/// Name of the unique index that makes a fire instant create one run only.
const FIRE_INDEX: &str = "runs_job_fire";

/// One hour in milliseconds.
const HOUR_MS: i64 = 3_600_000;

impl PgStore {
    /// See [`crate::store::Store::insert_runs`].
    pub(in crate::store) async fn insert_runs(
        &self,
        plan: &InsertPlan,
    ) -> Result<Option<Vec<EventRecord>>, WriteError> {
        let mut tx = self.begin_fenced().await?;
        match insert_runs_in(&mut tx, plan).await {
            Ok(true) => {}
            Ok(false) => {
                tx.rollback().await?;
                return Ok(None);
            }
            // The transaction is dropped, so rolled back.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && e.constraint() == Some(FIRE_INDEX) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let events = write_events(&mut tx, self.epoch(), events::run_events(plan, &[])).await?;
        tx.commit().await.map_err(write::in_doubt)?;
        Ok(Some(events))
    }

    /// New runs and changes of existing ones in one transaction (the engine's
    /// commit round). A fire conflict (which plain enqueues cannot cause) fails it.
    pub(in crate::store) async fn commit(
        &self,
        plan: &InsertPlan,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<Vec<EventRecord>, WriteError> {
        let mut tx = self.begin_fenced().await?;
        if !insert_runs_in(&mut tx, plan).await? {
            tx.rollback().await?;
            return Err(WriteError::Refused(Error::internal(
                "a new run collided with an existing schedule fire",
            )));
        }
        apply_in(&mut tx, changes, starts, ends).await?;
        let events = write_events(&mut tx, self.epoch(), events::run_events(plan, changes)).await?;
        tx.commit().await.map_err(write::in_doubt)?;
        Ok(events)
    }

    /// Deletes dead runs and applies `changes` in one transaction; every id
    /// must be a dead run.
    pub(in crate::store) async fn purge_dead(
        &self,
        ids: &[String],
        changes: &[StateChange],
    ) -> Result<Vec<EventRecord>, WriteError> {
        let mut tx = self.begin_fenced().await?;
        let deleted: Vec<String> =
            sqlx::query_scalar("DELETE FROM runs WHERE id = ANY($1) AND state = 'dead' RETURNING id")
                .bind(ids)
                .fetch_all(&mut *tx)
                .await?;
        if deleted.len() != ids.len() {
            let deleted: HashSet<&String> = deleted.iter().collect();
            let missing = ids.iter().find(|id| !deleted.contains(id)).cloned().unwrap_or_default();
            return Err(WriteError::conflict(format!(
                "run {missing} is not in the dead-letter queue"
            )));
        }
        apply_in(&mut tx, changes, &[], &[]).await?;
        let events = write_events(
            &mut tx,
            self.epoch(),
            events::run_events(&InsertPlan::default(), changes),
        )
        .await?;
        tx.commit().await.map_err(write::in_doubt)?;
        Ok(events)
    }

    /// See [`crate::store::Store::written`].
    pub(in crate::store) async fn written(&self, write: Write<'_>) -> Result<bool> {
        let found: Option<i32> = if let Some(run) = write.plan.runs.first() {
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = $1")
                .bind(&run.id)
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(start) = write.starts.first() {
            sqlx::query_scalar("SELECT 1 FROM attempts WHERE run_id = $1 AND attempt = $2")
                .bind(&start.run_id)
                .bind(i64::from(start.attempt))
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(end) = write.ends.first() {
            sqlx::query_scalar("SELECT 1 FROM attempts WHERE run_id = $1 AND attempt = $2 AND outcome IS NOT NULL")
                .bind(&end.run_id)
                .bind(i64::from(end.attempt))
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(change) = write.changes.iter().find(|c| c.from != c.to) {
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = $1 AND state = $2")
                .bind(&change.run_id)
                .bind(change.to.as_str())
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(change) = write.changes.first() {
            sqlx::query_scalar(
                "SELECT 1 FROM runs WHERE id = $1 AND reason IS NOT DISTINCT FROM $2 AND cancel_requested = $3",
            )
            .bind(&change.run_id)
            .bind(&change.reason)
            .bind(change.cancel_requested)
            .fetch_optional(&self.pool)
            .await?
        } else {
            Some(1)
        };
        Ok(found.is_some())
    }

    /// The run an idempotency key points at, with the time the key was recorded.
    pub(in crate::store) async fn idempotency_key(&self, key: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT run_id, created_at FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// (run, upstream) pairs of the given runs.
    pub(in crate::store) async fn dependencies(&self, run_ids: &[String]) -> Result<Vec<(String, String)>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query("SELECT run_id, upstream_id FROM run_dependencies WHERE run_id = ANY($1) ORDER BY run_id, seq")
                .bind(run_ids)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    /// Runs of a workflow, oldest first.
    pub(in crate::store) async fn workflow_runs(&self, workflow_id: &str) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(workflow_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs that are not terminal, oldest first (to rebuild in-memory indexes).
    pub(in crate::store) async fn for_each_active_run(
        &self,
        payload_limit: Option<i64>,
        f: &mut (dyn FnMut(RunRecord) -> Result<()> + Send),
    ) -> Result<()> {
        // Rows are handed over one by one as the server sends them. A payload
        // over the limit is left out (empty): `octet_length` reads the size
        // of a TOASTed value without fetching it.
        let columns = RUN_COLUMNS.replacen(
            "payload",
            "CASE WHEN $1::bigint IS NULL OR octet_length(payload) <= $1 THEN payload ELSE '' END",
            1,
        );
        let sql = format!(
            "SELECT {columns} FROM runs WHERE state NOT IN ('succeeded', 'dead', 'cancelled') ORDER BY created_at, id"
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).bind(payload_limit).fetch(&self.pool);
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
            f(run_from_row(&row)?)?;
        }
        Ok(())
    }

    /// One run.
    pub(in crate::store) async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// (id, payload) of the runs of `ids` that exist, in no particular order.
    pub(in crate::store) async fn payloads(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, payload FROM runs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The runs of `ids` that exist, in no particular order.
    pub(in crate::store) async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(ids).fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs, newest first, optionally of one job and/or in one state.
    pub(in crate::store) async fn runs(
        &self,
        job: Option<&str>,
        state: Option<RunState>,
        limit: u32,
    ) -> Result<Vec<RunRecord>> {
        // Only the filters given, so that the planner can use the (job,
        // created_at) index whatever the plan cache holds.
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE TRUE"));
        if let Some(job) = job {
            q.push(" AND job = ").push_bind(job);
        }
        if let Some(state) = state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Attempts of the given runs, by run then attempt number.
    pub(in crate::store) async fn attempts(&self, run_ids: &[String]) -> Result<Vec<AttemptRecord>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT run_id, attempt, agent_id, agent_name, started_at, finished_at, outcome, exit_code, error, output, duration_ms
             FROM attempts WHERE run_id = ANY($1) ORDER BY run_id, attempt",
        )
        .bind(run_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome: Option<String> = r.get(6);
                Ok(AttemptRecord {
                    run_id: r.get(0),
                    attempt: r.get::<i64, _>(1) as u32,
                    agent_id: r.get(2),
                    agent_name: r.get(3),
                    started_at: r.get(4),
                    finished_at: r.get(5),
                    outcome: outcome.map(|o| parse_column::<Outcome>(&o)).transpose()?,
                    exit_code: r.get(7),
                    error: r.get(8),
                    output: r.get(9),
                    duration_ms: r.get(10),
                    // Read by the store's facade (`Store::attempts`).
                    metrics: Vec::new(),
                    spans: Vec::new(),
                })
            })
            .collect()
    }

    /// What the attempts of the given runs reported (`attempt_measures`).
    pub(in crate::store) async fn measures(&self, run_ids: &[String]) -> Result<Vec<MeasureRow>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT run_id, attempt, kind, name, value, count, max_us FROM attempt_measures WHERE run_id = ANY($1)",
        )
        .bind(run_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| MeasureRow {
                run_id: r.get(0),
                attempt: r.get::<i64, _>(1) as u32,
                kind: r.get(2),
                name: r.get(3),
                value: r.get(4),
                count: r.get(5),
                max_us: r.get(6),
            })
            .collect())
    }

    /// (job, metric, sum of its values) over the attempts that ended since `since`.
    pub(in crate::store) async fn metric_sums_since(&self, since: i64) -> Result<Vec<(String, String, f64)>> {
        let rows = sqlx::query(
            "SELECT job, name, SUM(value) FROM attempt_measures WHERE kind = 'metric' AND finished_at >= $1
             GROUP BY job, name",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// The aggregated reports of `job` since `since` (Unix ms), by UTC day.
    pub(in crate::store) async fn job_day_rows(&self, job: &str, since: i64) -> Result<DayRows> {
        let attempts = sqlx::query(
            "SELECT day, COUNT(*) FROM (SELECT DISTINCT finished_at / 86400000 AS day, run_id, attempt
                 FROM attempt_measures WHERE job = $1 AND finished_at >= $2) AS reported GROUP BY day",
        )
        .bind(job)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let sums = sqlx::query(
            "SELECT finished_at / 86400000 AS day, name, SUM(value)::float8 FROM attempt_measures
             WHERE job = $1 AND finished_at >= $2 AND kind = 'metric' GROUP BY day, name",
        )
        .bind(job)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let spans = sqlx::query(
            "SELECT finished_at / 86400000, name, value FROM attempt_measures
             WHERE job = $1 AND finished_at >= $2 AND kind = 'span' ORDER BY finished_at DESC LIMIT $3",
        )
        .bind(job)
        .bind(since)
        .bind(crate::store::MAX_SPAN_ROWS)
        .fetch_all(&self.pool)
        .await?;
        Ok(DayRows {
            attempts: attempts.iter().map(|r| (r.get(0), r.get(1))).collect(),
            sums: sums.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect(),
            spans: spans.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect(),
        })
    }

    /// The outcome recorded for (run, attempt), if it has finished.
    pub(in crate::store) async fn attempt_outcome(&self, run_id: &str, attempt: u32) -> Result<Option<Outcome>> {
        let outcome: Option<Option<String>> =
            sqlx::query_scalar("SELECT outcome FROM attempts WHERE run_id = $1 AND attempt = $2")
                .bind(run_id)
                .bind(i64::from(attempt))
                .fetch_optional(&self.pool)
                .await?;
        outcome.flatten().map(|o| parse_column::<Outcome>(&o)).transpose()
    }

    /// Recorded transitions of a run, in order.
    pub(in crate::store) async fn transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, at, reason FROM events WHERE run_id = $1 AND kind = 'run' ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.get(0);
                Ok(TransitionRecord {
                    from: from.map(|f| parse_column::<RunState>(&f)).transpose()?,
                    to: parse_column(&r.get::<String, _>(1))?,
                    at: r.get(2),
                    reason: r.get(3),
                })
            })
            .collect()
    }

    /// Ids of all runs in the dead-letter queue.
    pub(in crate::store) async fn dead_run_ids(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE state = 'dead' ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// How many runs are in the dead-letter queue (one indexed count).
    pub(in crate::store) async fn count_dead(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'dead'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// Runs finished since `since`, by hour and final state (see
    /// [`crate::store::Store::finished_per_hour`]).
    pub(in crate::store) async fn finished_per_hour(&self, since: i64) -> Result<Vec<HourCount>> {
        let rows = sqlx::query(
            "SELECT finished_at / 3600000 AS hour, state, COUNT(*) FROM runs
             WHERE created_at >= $1 - 86400000 AND finished_at >= $1 AND state IN ('succeeded', 'dead', 'cancelled')
             GROUP BY hour, state ORDER BY hour",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut hours: Vec<HourCount> = Vec::new();
        for r in &rows {
            let hour = r.get::<i64, _>(0) * HOUR_MS;
            let state: RunState = parse_column(&r.get::<String, _>(1))?;
            let n = r.get::<i64, _>(2) as u64;
            if hours.last().is_none_or(|h| h.hour != hour) {
                hours.push(HourCount {
                    hour,
                    ..HourCount::default()
                });
            }
            let h = hours.last_mut().expect("pushed above");
            match state {
                RunState::Succeeded => h.succeeded += n,
                RunState::Dead => h.dead += n,
                RunState::Cancelled => h.cancelled += n,
                _ => {}
            }
        }
        Ok(hours)
    }

    /// The rows of several jobs' summaries (see
    /// [`crate::store::Store::job_list_stats`]).
    pub(in crate::store) async fn job_list_rows(&self, jobs: &[String], recent: u32) -> Result<JobListRows> {
        let counts = sqlx::query("SELECT job, state, COUNT(*) FROM runs WHERE job = ANY($1) GROUP BY job, state")
            .bind(jobs)
            .fetch_all(&self.pool)
            .await?;
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job ORDER BY created_at DESC, id DESC) AS rn
             FROM runs WHERE job = ANY($1)) AS numbered WHERE rn = 1"
        );
        let lasts = sqlx::query(AssertSqlSafe(sql)).bind(jobs).fetch_all(&self.pool).await?;
        let durations = sqlx::query(
            "SELECT job, duration_ms FROM (SELECT r.job AS job, a.duration_ms AS duration_ms, a.finished_at AS finished_at,
                 ROW_NUMBER() OVER (PARTITION BY r.job ORDER BY a.finished_at DESC) AS rn
             FROM attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.job = ANY($1) AND a.outcome = 'succeeded' AND a.duration_ms IS NOT NULL) AS numbered
             WHERE rn <= $2 ORDER BY job, finished_at DESC",
        )
        .bind(jobs)
        .bind(i64::from(recent))
        .fetch_all(&self.pool)
        .await?;
        Ok(JobListRows {
            counts: counts
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<i64, _>(2)))
                .collect(),
            lasts: lasts.iter().map(run_from_row).collect::<Result<_>>()?,
            durations: durations
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                .collect(),
        })
    }

    /// Statistics of one job's history.
    pub(in crate::store) async fn job_stats(&self, job: &str) -> Result<JobStatsRecord> {
        let mut stats = JobStatsRecord::default();
        let rows = sqlx::query("SELECT state, COUNT(*) FROM runs WHERE job = $1 GROUP BY state")
            .bind(job)
            .fetch_all(&self.pool)
            .await?;
        for r in &rows {
            let state: RunState = parse_column(&r.get::<String, _>(0))?;
            let n = r.get::<i64, _>(1) as u64;
            stats.runs_total += n;
            match state {
                RunState::Succeeded => stats.succeeded = n,
                RunState::Dead => stats.dead = n,
                RunState::Cancelled => stats.cancelled = n,
                _ => stats.active += n,
            }
        }
        let rows = sqlx::query(
            "SELECT a.outcome, COUNT(*) FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.job = $1 AND a.outcome IS NOT NULL GROUP BY a.outcome",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let n = r.get::<i64, _>(1) as u64;
            match parse_column::<Outcome>(&r.get::<String, _>(0))? {
                Outcome::Failed => stats.failed_attempts = n,
                Outcome::TimedOut => stats.timed_out_attempts = n,
                Outcome::Lost => stats.lost_attempts = n,
                Outcome::Succeeded | Outcome::Cancelled => {}
            }
        }
        stats.recent_durations_ms = sqlx::query_scalar(
            "SELECT a.duration_ms FROM attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.job = $1 AND a.outcome = 'succeeded' AND a.duration_ms IS NOT NULL ORDER BY a.finished_at DESC LIMIT 1000",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 ORDER BY created_at DESC, id DESC LIMIT 1");
        let last = sqlx::query(AssertSqlSafe(sql))
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        stats.last_run = last.as_ref().map(run_from_row).transpose()?;
        Ok(stats)
    }
}

/// Inserts the runs of `plan` on `conn`, inside the caller's transaction. Each
/// kind of row is one statement with the rows as arrays (UNNEST), so a plan of
/// thousands of runs costs a handful of round trips. `false`: a (job, fire
/// instant) exists already; nothing may be kept.
async fn insert_runs_in(conn: &mut PgConnection, plan: &InsertPlan) -> sqlx::Result<bool> {
    // Each kind of row is one statement with the rows as arrays (UNNEST), so
    // a plan of thousands of runs costs a handful of round trips.
    let runs = &plan.runs;
    // A concurrent insert of the same fire makes this wait for the other
    // transaction, then skip that row (fewer rows returned) if it committed.
    let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO runs (id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before,
             ready_at, attempt, max_attempts, reason, workflow_id, idempotency_key)
             SELECT id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before, ready_at,
                    0, max_attempts, reason, workflow_id, idempotency_key
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                         $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[])
               AS v (id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before, ready_at,
                     max_attempts, reason, workflow_id, idempotency_key)
             ON CONFLICT (job, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.job.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.priority.as_str()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.payload.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.not_before).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.ready_at).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| i64::from(r.max_attempts)).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.workflow_id.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.idempotency_key.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
    if inserted.len() != runs.len() {
        return Ok(false);
    }
    // One row per job and per key: a statement may not upsert a row twice.
    let mut cursors: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    let mut keys: std::collections::BTreeMap<&str, (&str, i64)> = std::collections::BTreeMap::new();
    for run in runs {
        if let Some(instant) = run.scheduled_for {
            let cursor = cursors.entry(run.job.as_str()).or_insert(instant);
            *cursor = (*cursor).max(instant);
        }
        if let Some(key) = &run.idempotency_key {
            keys.insert(key.as_str(), (run.id.as_str(), run.created_at));
        }
    }
    if !cursors.is_empty() {
        sqlx::query(
                "INSERT INTO schedule_cursors (job, last_fired) SELECT * FROM UNNEST($1::text[], $2::bigint[])
                 ON CONFLICT (job) DO UPDATE SET last_fired = GREATEST(schedule_cursors.last_fired, excluded.last_fired)",
            )
            .bind(cursors.keys().copied().collect::<Vec<_>>())
            .bind(cursors.values().copied().collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
    }
    if !keys.is_empty() {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, run_id, created_at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, created_at = excluded.created_at",
        )
        .bind(keys.keys().copied().collect::<Vec<_>>())
        .bind(keys.values().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(keys.values().map(|(_, at)| *at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !plan.dependencies.is_empty() {
        // UNNEST yields the rows in array order, so `seq` keeps the declared order.
        sqlx::query("INSERT INTO run_dependencies (run_id, upstream_id) SELECT * FROM UNNEST($1::text[], $2::text[])")
            .bind(plan.dependencies.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>())
            .bind(plan.dependencies.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Applies state changes, new attempts and finished attempts on `conn`, inside
/// the caller's transaction: one statement per kind of row, with the rows as
/// arrays (UNNEST), so a batch costs a handful of round trips, not three per run.
async fn apply_in(
    conn: &mut PgConnection,
    changes: &[StateChange],
    starts: &[AttemptStart],
    ends: &[AttemptEnd],
) -> Result<(), WriteError> {
    if !starts.is_empty() {
        sqlx::query(
            "INSERT INTO attempts (run_id, attempt, agent_id, agent_name, started_at)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])",
        )
        .bind(starts.iter().map(|s| s.run_id.clone()).collect::<Vec<_>>())
        .bind(starts.iter().map(|s| i64::from(s.attempt)).collect::<Vec<_>>())
        .bind(starts.iter().map(|s| s.agent_id.clone()).collect::<Vec<_>>())
        .bind(starts.iter().map(|s| s.agent_name.clone()).collect::<Vec<_>>())
        .bind(starts.iter().map(|s| s.started_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !ends.is_empty() {
        let ended = sqlx::query(
            "UPDATE attempts SET finished_at = v.finished_at, outcome = v.outcome, exit_code = v.exit_code,
                 error = v.error, output = v.output, duration_ms = v.duration_ms,
                 started_at = COALESCE(v.started_at, attempts.started_at)
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::text[],
                             $8::bigint[], $9::bigint[])
                   AS v (run_id, attempt, finished_at, outcome, exit_code, error, output, duration_ms, started_at)
                 WHERE attempts.run_id = v.run_id AND attempts.attempt = v.attempt AND attempts.outcome IS NULL",
        )
        .bind(ends.iter().map(|e| e.run_id.clone()).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| i64::from(e.attempt)).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.finished_at).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.outcome.as_str().to_string()).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.exit_code).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.error.clone()).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.output.clone()).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.duration_ms).collect::<Vec<_>>())
        .bind(ends.iter().map(|e| e.started_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if ended != ends.len() as u64 {
            return Err(end_conflict(conn, ends).await);
        }
        if ends.iter().any(|e| !e.metrics.is_empty() || !e.spans.is_empty()) {
            insert_measures(conn, ends).await?;
        }
    }
    if !changes.is_empty() {
        let changed = sqlx::query(
            "UPDATE runs SET state = v.state, reason = v.reason, not_before = v.not_before,
                 ready_at = COALESCE(v.ready_at, runs.ready_at), attempt = COALESCE(v.attempt, runs.attempt),
                 max_attempts = COALESCE(v.max_attempts, runs.max_attempts), finished_at = v.finished_at,
                 cancel_requested = v.cancel_requested
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                             $8::bigint[], $9::boolean[], $10::text[])
                   AS v (id, state, reason, not_before, ready_at, attempt, max_attempts, finished_at, cancel_requested,
                         from_state)
                 WHERE runs.id = v.id AND runs.state = v.from_state",
        )
        .bind(changes.iter().map(|c| c.run_id.clone()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.to.as_str().to_string()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.reason.clone()).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.not_before).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.ready_at).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.attempt.map(i64::from)).collect::<Vec<_>>())
        .bind(
            changes
                .iter()
                .map(|c| c.max_attempts.map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.to.is_terminal().then_some(c.at))
                .collect::<Vec<_>>(),
        )
        .bind(changes.iter().map(|c| c.cancel_requested).collect::<Vec<_>>())
        .bind(changes.iter().map(|c| c.from.as_str()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if changed != changes.len() as u64 {
            return Err(change_conflict(conn, changes).await);
        }
    }
    Ok(())
}

/// The conflict of a batch of changes some of which did not apply: names the
/// first run not in its change's `from` state (as the transaction sees it).
async fn change_conflict(conn: &mut PgConnection, changes: &[StateChange]) -> WriteError {
    for change in changes {
        let state: Option<String> = match sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
            .bind(&change.run_id)
            .fetch_optional(&mut *conn)
            .await
        {
            Ok(state) => state,
            Err(e) => return e.into(),
        };
        if let Some(conflict) = write::change_mismatch(change, state.as_deref()) {
            return conflict;
        }
    }
    write::change_mismatch_unknown(changes)
}

/// The conflict of a batch of attempt ends some of which did not apply.
async fn end_conflict(conn: &mut PgConnection, ends: &[AttemptEnd]) -> WriteError {
    for end in ends {
        let outcome: Option<Option<String>> =
            match sqlx::query_scalar("SELECT outcome FROM attempts WHERE run_id = $1 AND attempt = $2")
                .bind(&end.run_id)
                .bind(i64::from(end.attempt))
                .fetch_optional(&mut *conn)
                .await
            {
                Ok(outcome) => outcome,
                Err(e) => return e.into(),
            };
        if let Some(conflict) = write::end_mismatch(end, outcome) {
            return conflict;
        }
    }
    WriteError::conflict("an attempt end did not apply to its attempt")
}

/// Inserts what the ended attempts reported (`attempt_measures`), with
/// their run's job, in one statement.
async fn insert_measures(conn: &mut PgConnection, ends: &[AttemptEnd]) -> Result<(), sqlx::Error> {
    let mut run_ids = Vec::new();
    let mut attempts = Vec::new();
    let mut finished = Vec::new();
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut counts = Vec::new();
    let mut maxes = Vec::new();
    for e in ends {
        let metrics = e.metrics.iter().map(|m| ("metric", &m.name, m.value, 1, 0));
        let spans = e
            .spans
            .iter()
            .map(|s| ("span", &s.name, s.total_us as f64, s.count as i64, s.max_us as i64));
        for (kind, name, value, count, max_us) in metrics.chain(spans) {
            run_ids.push(e.run_id.clone());
            attempts.push(i64::from(e.attempt));
            finished.push(e.finished_at);
            kinds.push(kind);
            names.push(name.clone());
            values.push(value);
            counts.push(count);
            maxes.push(max_us);
        }
    }
    sqlx::query(
        "INSERT INTO attempt_measures (run_id, attempt, job, finished_at, kind, name, value, count, max_us)
         SELECT v.run_id, v.attempt, r.job, v.finished_at, v.kind, v.name, v.value, v.count, v.max_us
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::float8[], $7::bigint[],
                     $8::bigint[])
              AS v (run_id, attempt, finished_at, kind, name, value, count, max_us)
         JOIN runs r ON r.id = v.run_id",
    )
    .bind(run_ids)
    .bind(attempts)
    .bind(finished)
    .bind(kinds)
    .bind(names)
    .bind(values)
    .bind(counts)
    .bind(maxes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
