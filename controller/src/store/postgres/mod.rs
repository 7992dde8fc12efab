//! The PostgreSQL backend: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
//!
//! The same queries as the SQLite backend in PostgreSQL's dialect: `$n`
//! placeholders, BIGINT Unix-millisecond timestamps, `= ANY($1)` for id lists,
//! `GREATEST` for the monotonic cursor. Transactions run at the server's default
//! isolation (READ COMMITTED); the never-fire-twice guarantee rests on the
//! partial unique index `runs_job_fire`, which `insert_runs` turns into
//! `Ok(false)` (`ON CONFLICT DO NOTHING`) rather than an error, also when two
//! controllers insert the same fire at once. Migrations run under a
//! transaction-scoped advisory lock so controllers starting together do not race.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Row};

use super::write::{Write, WriteError};
use super::{
    AlertQuery, AlertRecord, AttemptEnd, AttemptRecord, AttemptStart, FireFailureRecord, InsertPlan, JobStatsRecord,
    RunRecord, ScheduleCursor, StateChange, TransitionRecord, parse_column, redact_url,
};
use crate::error::{Error, ErrorCode, Result};
use crate::model::{Outcome, RunState};

/// Embedded migrations, applied in order at start-up.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../../migrations/postgres/0001_init.sql")),
    (
        2,
        "definitions and dependencies",
        include_str!("../../../../migrations/postgres/0002_definitions_dependencies.sql"),
    ),
    (
        3,
        "alerts",
        include_str!("../../../../migrations/postgres/0003_alerts.sql"),
    ),
    (
        4,
        "fire failures",
        include_str!("../../../../migrations/postgres/0004_fire_failures.sql"),
    ),
];

/// Key of the advisory lock serializing migrations ("worker" + 1).
const MIGRATION_LOCK: i64 = 0x776f_726b_6572_0001;

/// Connections per controller.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a free connection (or a connect) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the unique index that makes a fire instant create one run only.
const FIRE_INDEX: &str = "runs_job_fire";

/// Handle to a PostgreSQL database.
pub(super) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the (existing) database at `url` and applies migrations.
    pub(super) async fn open(url: &str) -> Result<PgStore> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("db", format!("invalid database URL \"{shown}\": {e}")))?
            .application_name("worker-controller");
        // One direct connection first: the pool retries until its timeout and
        // then reports only that, while this reports the cause (refused,
        // authentication failed, no such database...).
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                super::open_error(
                    "cannot connect to PostgreSQL at",
                    &shown,
                    Error {
                        code: ErrorCode::Unavailable,
                        message: format!("no connection within {}s", ACQUIRE_TIMEOUT.as_secs()),
                    },
                )
            })?
            .map_err(|e| super::open_error("cannot connect to PostgreSQL at", &shown, e.into()))?;
        probe.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| super::open_error("cannot connect to PostgreSQL at", &shown, e.into()))?;
        let store = PgStore { pool };
        store
            .migrate()
            .await
            .map_err(|e| super::open_error("cannot migrate PostgreSQL database", &shown, e))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        for (version, description, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            // Held until this transaction ends: a second controller waits here,
            // then sees the version recorded and skips it.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query("SET LOCAL client_min_messages = warning")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
                .bind(version)
                .bind(description)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, description, "applied migration");
        }
        Ok(())
    }

    /// See [`super::Store::insert_runs`].
    pub(super) async fn insert_runs(&self, plan: &InsertPlan) -> Result<bool, WriteError> {
        let mut tx = self.pool.begin().await?;
        match insert_runs_in(&mut tx, plan).await {
            Ok(true) => {}
            Ok(false) => {
                tx.rollback().await?;
                return Ok(false);
            }
            // The transaction is dropped, so rolled back.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && e.constraint() == Some(FIRE_INDEX) => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await.map_err(super::write::in_doubt)?;
        Ok(true)
    }

    /// New runs and changes of existing ones in one transaction (the engine's
    /// commit round). A fire conflict (which plain enqueues cannot cause) fails it.
    pub(super) async fn commit(
        &self,
        plan: &InsertPlan,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<(), WriteError> {
        let mut tx = self.pool.begin().await?;
        if !insert_runs_in(&mut tx, plan).await? {
            tx.rollback().await?;
            return Err(WriteError::Refused(Error::internal(
                "a new run collided with an existing schedule fire",
            )));
        }
        apply_in(&mut tx, changes, starts, ends).await?;
        tx.commit().await.map_err(super::write::in_doubt)?;
        Ok(())
    }

    /// Deletes dead runs and applies `changes` in one transaction; every id
    /// must be a dead run.
    pub(super) async fn purge_dead(&self, ids: &[String], changes: &[StateChange]) -> Result<(), WriteError> {
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await.map_err(super::write::in_doubt)?;
        Ok(())
    }

    /// See [`super::Store::written`].
    pub(super) async fn written(&self, write: Write<'_>) -> Result<bool> {
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

    pub(super) async fn idempotency_key(&self, key: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT run_id, created_at FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub(super) async fn dependencies(&self, run_ids: &[String]) -> Result<Vec<(String, String)>> {
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

    pub(super) async fn workflow_runs(&self, workflow_id: &str) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(workflow_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub(super) async fn job_specs(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT name, spec, source FROM jobs ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    pub(super) async fn save_jobs(
        &self,
        upserts: &[(String, String, String)],
        deletes: &[String],
        applied: Option<(&str, &str)>,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await?;
        for (name, spec, source) in upserts {
            sqlx::query(
                "INSERT INTO jobs (name, spec, source, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, source = excluded.source, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(spec)
            .bind(source)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !deletes.is_empty() {
            sqlx::query("DELETE FROM jobs WHERE name = ANY($1)")
                .bind(deletes)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((file, content)) = applied {
            record_applied(&mut tx, file, content, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn applied_config(&self, file: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT content FROM applied_config WHERE file = $1")
            .bind(file)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(super) async fn paused_schedules(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT job FROM schedule_pauses ORDER BY job")
            .fetch_all(&self.pool)
            .await?)
    }

    pub(super) async fn set_paused(&self, job: &str, paused: bool) -> Result<()> {
        if paused {
            sqlx::query("INSERT INTO schedule_pauses (job, paused_at) VALUES ($1, $2) ON CONFLICT (job) DO NOTHING")
                .bind(job)
                .bind(chrono::Utc::now().timestamp_millis())
                .execute(&self.pool)
                .await?;
        } else {
            sqlx::query("DELETE FROM schedule_pauses WHERE job = $1")
                .bind(job)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn advance_cursor(&self, job: &str, last_fired: i64, missed: u64, skipped: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_cursors (job, last_fired, missed, skipped) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job) DO UPDATE SET last_fired = GREATEST(schedule_cursors.last_fired, excluded.last_fired),
             missed = schedule_cursors.missed + excluded.missed, skipped = schedule_cursors.skipped + excluded.skipped",
        )
        .bind(job)
        .bind(last_fired)
        .bind(missed as i64)
        .bind(skipped as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn record_fire_failure(&self, job: &str, fire_at: i64, error: &str, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedule_failures (job, failing, failed_total, fire_at, last_error, failed_at) VALUES ($1, 1, 1, $2, $3, $4)
             ON CONFLICT (job) DO UPDATE SET failing = schedule_failures.failing + 1,
             failed_total = schedule_failures.failed_total + 1, fire_at = excluded.fire_at,
             last_error = excluded.last_error, failed_at = excluded.failed_at",
        )
        .bind(job)
        .bind(fire_at)
        .bind(error)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn clear_fire_failure(&self, job: &str) -> Result<()> {
        sqlx::query("UPDATE schedule_failures SET failing = 0 WHERE job = $1")
            .bind(job)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn fire_failures(&self) -> Result<Vec<FireFailureRecord>> {
        let rows = sqlx::query(
            "SELECT job, failing, failed_total, fire_at, last_error, failed_at FROM schedule_failures ORDER BY job",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| FireFailureRecord {
                job: r.get(0),
                failing: r.get::<i64, _>(1) as u32,
                failed_total: r.get::<i64, _>(2) as u64,
                fire_at: r.get(3),
                last_error: r.get(4),
                failed_at: r.get(5),
            })
            .collect())
    }

    pub(super) async fn cursors(&self) -> Result<Vec<ScheduleCursor>> {
        let rows = sqlx::query("SELECT job, last_fired, missed, skipped FROM schedule_cursors")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ScheduleCursor {
                job: r.get(0),
                last_fired: r.get(1),
                missed: r.get::<i64, _>(2) as u64,
                skipped: r.get::<i64, _>(3) as u64,
            })
            .collect())
    }

    pub(super) async fn for_each_active_run(&self, f: &mut (dyn FnMut(RunRecord) -> Result<()> + Send)) -> Result<()> {
        // Rows are handed over one by one as the server sends them.
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state NOT IN ('succeeded', 'dead', 'cancelled') ORDER BY created_at, id"
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&self.pool);
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
            f(run_from_row(&row)?)?;
        }
        Ok(())
    }

    pub(super) async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(ids).fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    pub(super) async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    pub(super) async fn runs(&self, job: Option<&str>, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR state = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(job)
            .bind(state.map(|s| s.as_str()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub(super) async fn attempts(&self, run_ids: &[String]) -> Result<Vec<AttemptRecord>> {
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
                })
            })
            .collect()
    }

    pub(super) async fn attempt_outcome(&self, run_id: &str, attempt: u32) -> Result<Option<Outcome>> {
        let outcome: Option<Option<String>> =
            sqlx::query_scalar("SELECT outcome FROM attempts WHERE run_id = $1 AND attempt = $2")
                .bind(run_id)
                .bind(i64::from(attempt))
                .fetch_optional(&self.pool)
                .await?;
        outcome.flatten().map(|o| parse_column::<Outcome>(&o)).transpose()
    }

    pub(super) async fn transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>> {
        let rows =
            sqlx::query("SELECT from_state, to_state, at, reason FROM transitions WHERE run_id = $1 ORDER BY seq")
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

    pub(super) async fn dead_run_ids(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE state = 'dead' ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub(super) async fn job_stats(&self, job: &str) -> Result<JobStatsRecord> {
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

    /// Alert channels (name, spec) by name and rules (name, spec) by position,
    /// in one statement (one snapshot).
    pub(super) async fn alert_specs(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        let rows = sqlx::query(
            "SELECT TRUE AS is_channel, name, spec, 0::bigint AS position FROM alert_channels
             UNION ALL SELECT FALSE, name, spec, position FROM alert_rules
             ORDER BY is_channel DESC, position, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(super::split_alert_specs(
            rows.iter().map(|r| (r.get::<bool, _>(0), r.get(1), r.get(2))),
        ))
    }

    /// Replaces every alert channel and rule in one transaction, and, when
    /// given, records the configuration file text they came from.
    pub(super) async fn save_alert_specs(
        &self,
        channels: &[(String, String)],
        rules: &[(String, String)],
        applied: Option<(&str, &str)>,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await?;
        // Replaces serialize (readers are not blocked): without the lock, two
        // concurrent replaces under READ COMMITTED could each delete only the
        // rows they saw and leave a mix of both sets.
        sqlx::query("LOCK TABLE alert_channels, alert_rules IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM alert_channels").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM alert_rules").execute(&mut *tx).await?;
        if !channels.is_empty() {
            sqlx::query(
                "INSERT INTO alert_channels (name, spec, updated_at)
                     SELECT name, spec, $3 FROM UNNEST($1::text[], $2::text[]) AS v (name, spec)",
            )
            .bind(channels.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .bind(channels.iter().map(|(_, spec)| spec.as_str()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !rules.is_empty() {
            // WITH ORDINALITY numbers the rows in array order, from 1.
            sqlx::query(
                "INSERT INTO alert_rules (name, position, spec, updated_at)
                     SELECT name, position - 1, spec, $3
                     FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS v (name, spec, position)",
            )
            .bind(rules.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .bind(rules.iter().map(|(_, spec)| spec.as_str()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((file, content)) = applied {
            record_applied(&mut tx, file, content, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records alert outcomes in one statement (the rows as arrays, UNNEST);
    /// rows whose id exists already are skipped.
    pub(super) async fn record_alerts(&self, records: &[AlertRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO alert_history (id, alert_id, at, kind, event, rule, channel, job, run_id, status, attempts,
                 answer, title)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[],
                                      $13::text[])
                 ON CONFLICT (id) DO NOTHING",
        )
        .bind(records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.alert_id.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.event.map(|e| e.as_str())).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.rule.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.job.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.run_id.as_deref()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| i64::from(r.attempts)).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.answer.as_str()).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.title.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Alert history rows matching `query`, newest first, at most `limit`.
    pub(super) async fn alert_history(&self, query: &AlertQuery, limit: u32) -> Result<Vec<AlertRecord>> {
        let rows = super::alert_history_query::<Postgres>(query, limit)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(super::alert_from_row).collect()
    }

    /// Deletes the alert history rows recorded before `older_than`. Returns how many.
    pub(super) async fn prune_alert_history(&self, older_than: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM alert_history WHERE at < $1")
            .bind(older_than)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

const RUN_COLUMNS: &str = "id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before, ready_at, finished_at, attempt, max_attempts, reason, workflow_id, cancel_requested, idempotency_key";

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
    sqlx::query(
        "INSERT INTO transitions (run_id, from_state, to_state, at, reason)
             SELECT run_id, NULL, to_state, at, reason FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])
               AS v (run_id, to_state, at, reason)",
    )
    .bind(runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(runs.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
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
        let moved: Vec<&StateChange> = changes.iter().filter(|c| c.from != c.to).collect();
        if !moved.is_empty() {
            sqlx::query(
                "INSERT INTO transitions (run_id, from_state, to_state, at, reason)
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])",
            )
            .bind(moved.iter().map(|c| c.run_id.clone()).collect::<Vec<_>>())
            .bind(moved.iter().map(|c| c.from.as_str().to_string()).collect::<Vec<_>>())
            .bind(moved.iter().map(|c| c.to.as_str().to_string()).collect::<Vec<_>>())
            .bind(moved.iter().map(|c| c.at).collect::<Vec<_>>())
            .bind(moved.iter().map(|c| c.reason.clone()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
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
        if let Some(conflict) = super::write::change_mismatch(change, state.as_deref()) {
            return conflict;
        }
    }
    super::write::change_mismatch_unknown(changes)
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
        if let Some(conflict) = super::write::end_mismatch(end, outcome) {
            return conflict;
        }
    }
    WriteError::conflict("an attempt end did not apply to its attempt")
}

fn run_from_row(r: &PgRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0),
        job: r.get(1),
        state: parse_column(&r.get::<String, _>(2))?,
        priority: parse_column(&r.get::<String, _>(3))?,
        payload: r.get(4),
        trigger: parse_column(&r.get::<String, _>(5))?,
        scheduled_for: r.get(6),
        created_at: r.get(7),
        not_before: r.get(8),
        ready_at: r.get(9),
        finished_at: r.get(10),
        attempt: r.get::<i64, _>(11) as u32,
        max_attempts: r.get::<i64, _>(12) as u32,
        reason: r.get(13),
        workflow_id: r.get(14),
        cancel_requested: r.get(15),
        idempotency_key: r.get(16),
    })
}

/// Records `content` as the text of configuration `file` last applied, in `tx`.
async fn record_applied(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    file: &str,
    content: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO applied_config (file, content, applied_at) VALUES ($1, $2, $3)
         ON CONFLICT (file) DO UPDATE SET content = excluded.content, applied_at = excluded.applied_at",
    )
    .bind(file)
    .bind(content)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
