//! SQLite queries of runs and their history: the engine's writes of runs
//! (inserting new runs, commit rounds, purging the dead-letter queue), each
//! one transaction run by `hot.rs` on the writer's raw handle; reading back a
//! write that failed in doubt; the reads of runs, attempts, transitions (a
//! run's events of kind `run`) and a job's statistics; and the recovery read
//! of every unfinished run at start-up.
//!
//! A write's statements share one transaction: a change applies only where its
//! run is still in the change's `from` state, an attempt end only to an
//! attempt that has not ended, a purge only to dead runs, and any miss refuses
//! the whole transaction (`docs/decisions.md`, "Engine invariants"). Leases and
//! the ready queue are not stored: at start-up the engine rebuilds them in
//! memory from the unfinished runs and their attempts.

use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqlitePool};

use super::hot;
use super::{ROWS_PER_STATEMENT, RUN_COLUMNS, SqliteStore, run_from_row};
use crate::error::{Error, Result};
use crate::model::{Outcome, RunState};
use crate::store::events::{self, EventRecord};
use crate::store::write::{Write, WriteError};
use crate::store::{
    AttemptEnd, AttemptRecord, AttemptStart, DayRows, HourCount, InsertPlan, JobListRows, JobStatsRecord, MeasureRow,
    RunRecord, StateChange, TransitionRecord, parse_column,
};

/// One hour in milliseconds.
const HOUR_MS: i64 = 3_600_000;

impl SqliteStore {
    /// Inserts new runs, their dependencies and idempotency keys, with their first
    /// transitions (events), in one transaction. For scheduled fires the schedule
    /// cursor moves in the same transaction. Returns `None` (and writes nothing)
    /// when a run for the same (job, fire instant) already exists.
    pub(in crate::store) async fn insert_runs(
        &self,
        plan: &InsertPlan,
    ) -> Result<Option<Vec<EventRecord>>, WriteError> {
        // IMMEDIATE (see `HotConnection::transaction`): two concurrent inserts
        // of one fire serialize, and the second one's insert is ignored (and
        // reported).
        self.hot_write(|hot| {
            hot.transaction(|conn| {
                if !hot::insert_runs(conn, plan)? {
                    return Ok(None);
                }
                hot::write_events(conn, events::run_events(plan, &[]), &[]).map(Some)
            })
        })
        .await
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
        self.hot_write(|hot| {
            hot.transaction(|conn| {
                if !hot::insert_runs(conn, plan)? {
                    return Err(WriteError::Refused(Error::internal(
                        "a new run collided with an existing schedule fire",
                    )));
                }
                let moved = hot::apply(conn, changes, starts, ends)?;
                let moved = moving(changes, moved);
                hot::write_events(conn, events::run_events(plan, changes), &moved).map(Some)
            })
        })
        .await
        .map(Option::unwrap_or_default)
    }

    /// Deletes dead runs and applies `changes` in one transaction; every id
    /// must be a dead run.
    pub(in crate::store) async fn purge_dead(
        &self,
        ids: &[String],
        changes: &[StateChange],
    ) -> Result<Vec<EventRecord>, WriteError> {
        self.hot_write(|hot| {
            hot.transaction(|conn| {
                for id in ids {
                    hot::delete_dead(conn, id)?;
                }
                let moved = hot::apply(conn, changes, &[], &[])?;
                let moved = moving(changes, moved);
                hot::write_events(conn, events::run_events(&InsertPlan::default(), changes), &moved).map(Some)
            })
        })
        .await
        .map(Option::unwrap_or_default)
    }

    /// See [`crate::store::Store::written`].
    pub(in crate::store) async fn written(&self, write: Write<'_>) -> Result<bool> {
        let found: Option<i64> = if let Some(run) = write.plan.runs.first() {
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ?")
                .bind(&run.id)
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(start) = write.starts.first() {
            sqlx::query_scalar("SELECT 1 FROM attempts WHERE run_id = ? AND attempt = ?")
                .bind(&start.run_id)
                .bind(start.attempt)
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(end) = write.ends.first() {
            sqlx::query_scalar("SELECT 1 FROM attempts WHERE run_id = ? AND attempt = ? AND outcome IS NOT NULL")
                .bind(&end.run_id)
                .bind(end.attempt)
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(change) = write.changes.iter().find(|c| c.from != c.to) {
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ? AND state = ?")
                .bind(&change.run_id)
                .bind(change.to.as_str())
                .fetch_optional(&self.pool)
                .await?
        } else if let Some(change) = write.changes.first() {
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ? AND reason IS ? AND cancel_requested = ?")
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
        let row = sqlx::query("SELECT run_id, created_at FROM idempotency_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// (run, upstream) pairs of the given runs, by run. Read in chunks: a
    /// statement takes at most [`ROWS_PER_STATEMENT`] ids (SQLite limits the
    /// variables of one statement), and recovery asks for every blocked run.
    pub(in crate::store) async fn dependencies(&self, run_ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut pairs = Vec::new();
        for chunk in sorted_unique(run_ids).chunks(ROWS_PER_STATEMENT) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT run_id, upstream_id FROM run_dependencies WHERE run_id IN ({placeholders}) ORDER BY run_id, rowid"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            pairs.extend(query.fetch_all(&self.pool).await?.iter().map(|r| (r.get(0), r.get(1))));
        }
        Ok(pairs)
    }

    /// Runs of a workflow, oldest first.
    pub(in crate::store) async fn workflow_runs(&self, workflow_id: &str) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = ? ORDER BY created_at, id");
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
        // Oldest first, ties by id, in pages of RECOVERY_PAGE runs. Each page is
        // ONE row holding a JSON array of runs: handing a million rows over one
        // by one from SQLite's worker thread cost ~9 s of thread switches and
        // copies at start-up; a page is one hand-over and one JSON parse. A task
        // reads and parses the next pages while `f` indexes this one.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<RunRecord>>>(2);
        let pool = self.pool.clone();
        let reader = tokio::spawn(async move {
            let mut after: (i64, String) = (i64::MIN, String::new());
            loop {
                let page = recovery_page(&pool, &after, payload_limit).await;
                let full = page.as_ref().is_ok_and(|runs| runs.len() as i64 == RECOVERY_PAGE);
                if let Ok(Some(last)) = page.as_ref().map(|runs| runs.last()) {
                    after = (last.created_at, last.id.clone());
                }
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed || !full {
                    return;
                }
            }
        });
        while let Some(page) = rx.recv().await {
            for run in page? {
                f(run)?;
            }
        }
        reader
            .await
            .map_err(|e| Error::internal(format!("reading runs failed: {e}")))?;
        Ok(())
    }

    /// One run.
    pub(in crate::store) async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// (id, payload) of the runs of `ids` that exist, in no particular order,
    /// in chunks of [`ROWS_PER_STATEMENT`] ids.
    pub(in crate::store) async fn payloads(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut payloads = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT id, payload FROM runs WHERE id IN ({placeholders})");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            payloads.extend(query.fetch_all(&self.pool).await?.iter().map(|r| (r.get(0), r.get(1))));
        }
        Ok(payloads)
    }

    /// The runs of `ids` that exist, in no particular order.
    pub(in crate::store) async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({placeholders})");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                runs.push(run_from_row(&row)?);
            }
        }
        Ok(runs)
    }

    /// Runs, newest first, optionally of one job and/or in one state.
    pub(in crate::store) async fn runs(
        &self,
        job: Option<&str>,
        state: Option<RunState>,
        limit: u32,
    ) -> Result<Vec<RunRecord>> {
        // Only the filters given, so that the planner can use the (job,
        // created_at) index: `(?1 IS NULL OR job = ?1)` makes it scan the table.
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"));
        if let Some(job) = job {
            q.push(" AND job = ").push_bind(job);
        }
        if let Some(state) = state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Attempts of the given runs, by run then attempt number.
    pub(in crate::store) async fn attempts(&self, run_ids: &[String]) -> Result<Vec<AttemptRecord>> {
        // In chunks, as `dependencies` (recovery asks for every running run).
        let mut rows = Vec::new();
        for chunk in sorted_unique(run_ids).chunks(ROWS_PER_STATEMENT) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT run_id, attempt, agent_id, agent_name, started_at, finished_at, outcome, exit_code, error, output, duration_ms
                 FROM attempts WHERE run_id IN ({placeholders}) ORDER BY run_id, attempt"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
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
        let mut rows = Vec::new();
        for chunk in sorted_unique(run_ids).chunks(ROWS_PER_STATEMENT) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT run_id, attempt, kind, name, value, count, max_us
                 FROM attempt_measures WHERE run_id IN ({placeholders})"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
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
            "SELECT job, name, SUM(value) FROM attempt_measures WHERE kind = 'metric' AND finished_at >= ?1
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
                 FROM attempt_measures WHERE job = ?1 AND finished_at >= ?2) AS reported GROUP BY day",
        )
        .bind(job)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let sums = sqlx::query(
            "SELECT finished_at / 86400000 AS day, name, SUM(value) FROM attempt_measures
             WHERE job = ?1 AND finished_at >= ?2 AND kind = 'metric' GROUP BY day, name",
        )
        .bind(job)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let spans = sqlx::query(
            "SELECT finished_at / 86400000, name, value FROM attempt_measures
             WHERE job = ?1 AND finished_at >= ?2 AND kind = 'span' ORDER BY finished_at DESC LIMIT ?3",
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
            sqlx::query_scalar("SELECT outcome FROM attempts WHERE run_id = ? AND attempt = ?")
                .bind(run_id)
                .bind(attempt)
                .fetch_optional(&self.pool)
                .await?;
        outcome.flatten().map(|o| parse_column::<Outcome>(&o)).transpose()
    }

    /// Recorded transitions of a run, in order.
    pub(in crate::store) async fn transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, at, reason FROM events WHERE run_id = ? AND kind = 'run' ORDER BY seq",
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
             WHERE created_at >= ?1 - 86400000 AND finished_at >= ?1 AND state IN ('succeeded', 'dead', 'cancelled')
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
        let marks = vec!["?"; jobs.len()].join(", ");
        let bind_all = |sql: String| {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for j in jobs {
                q = q.bind(j);
            }
            q
        };
        let counts = bind_all(format!(
            "SELECT job, state, COUNT(*) FROM runs WHERE job IN ({marks}) GROUP BY job, state"
        ))
        .fetch_all(&self.pool)
        .await?;
        let lasts = bind_all(format!(
            "SELECT {RUN_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job ORDER BY created_at DESC, id DESC) AS rn
             FROM runs WHERE job IN ({marks})) WHERE rn = 1"
        ))
        .fetch_all(&self.pool)
        .await?;
        let durations = bind_all(format!(
            "SELECT job, duration_ms FROM (SELECT r.job AS job, a.duration_ms AS duration_ms, a.finished_at AS finished_at,
                 ROW_NUMBER() OVER (PARTITION BY r.job ORDER BY a.finished_at DESC) AS rn
             FROM attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.job IN ({marks}) AND a.outcome = 'succeeded' AND a.duration_ms IS NOT NULL)
             WHERE rn <= {recent} ORDER BY job, finished_at DESC"
        ))
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
        let rows = sqlx::query("SELECT state, COUNT(*) FROM runs WHERE job = ? GROUP BY state")
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
            "SELECT a.outcome, COUNT(*) FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.job = ? AND a.outcome IS NOT NULL GROUP BY a.outcome",
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
             WHERE r.job = ? AND a.outcome = 'succeeded' AND a.duration_ms IS NOT NULL ORDER BY a.finished_at DESC LIMIT 1000",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = ? ORDER BY created_at DESC, id DESC LIMIT 1");
        let last = sqlx::query(AssertSqlSafe(sql))
            .bind(job)
            .fetch_optional(&self.pool)
            .await?;
        stats.last_run = last.as_ref().map(run_from_row).transpose()?;
        Ok(stats)
    }
}

/// The (job, attempt) of the changes that move their runs (those with an
/// event), out of what [`hot::apply`] returned for every change.
fn moving(changes: &[StateChange], moved: Vec<(String, u32)>) -> Vec<(String, u32)> {
    changes
        .iter()
        .zip(moved)
        .filter(|(c, _)| c.from != c.to)
        .map(|(_, m)| m)
        .collect()
}

/// The non-terminal runs after `after` (created_at, id), oldest first, at most
/// [`RECOVERY_PAGE`] of them (see [`SqliteStore::for_each_active_run`]).
/// A payload over `payload_limit` bytes is left out (empty): `octet_length`
/// reads the length from the record header, not the payload's pages.
async fn recovery_page(pool: &SqlitePool, after: &(i64, String), payload_limit: Option<i64>) -> Result<Vec<RunRecord>> {
    let page: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(id, job, state, priority,
                CASE WHEN ?4 IS NULL OR octet_length(payload) <= ?4 THEN payload ELSE '' END, trigger_kind, scheduled_for,
                created_at, not_before, ready_at, finished_at, attempt, max_attempts, reason, workflow_id,
                cancel_requested, idempotency_key) ORDER BY created_at, id)
         FROM (SELECT * FROM runs
               WHERE state NOT IN ('succeeded', 'dead', 'cancelled')
                 AND (created_at > ?1 OR (created_at = ?1 AND id > ?2))
               ORDER BY created_at, id LIMIT ?3)",
    )
    .bind(after.0)
    .bind(&after.1)
    .bind(RECOVERY_PAGE)
    .bind(payload_limit)
    .fetch_one(pool)
    .await?;
    let runs: Vec<JsonRun> = serde_json::from_str(page.as_deref().unwrap_or("[]"))
        .map_err(|e| Error::internal(format!("corrupt page of runs from the store: {e}")))?;
    runs.into_iter().map(JsonRun::into_record).collect()
}

/// Runs per page of [`SqliteStore::for_each_active_run`].
const RECOVERY_PAGE: i64 = 10_000;

/// A run as an element of a recovery page: the columns of [`RUN_COLUMNS`], in order.
#[derive(serde::Deserialize)]
struct JsonRun(
    String,
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
);

impl JsonRun {
    fn into_record(self) -> Result<RunRecord> {
        Ok(RunRecord {
            id: self.0,
            job: self.1,
            state: parse_column(&self.2)?,
            priority: parse_column(&self.3)?,
            payload: self.4,
            trigger: parse_column(&self.5)?,
            scheduled_for: self.6,
            created_at: self.7,
            not_before: self.8,
            ready_at: self.9,
            finished_at: self.10,
            attempt: self.11 as u32,
            max_attempts: self.12 as u32,
            reason: self.13,
            workflow_id: self.14,
            cancel_requested: self.15 != 0,
            idempotency_key: self.16,
        })
    }
}

/// `ids` sorted and without repeats: read in chunks of sorted ids, results
/// ordered by run id within each chunk are ordered by run id overall.
fn sorted_unique(ids: &[String]) -> Vec<&String> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
