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
//!
//! This file connects (the pool), applies the migrations, and holds what the
//! other files of the backend share: [`PgStore`], the columns of a run and
//! their row decoder, and the record of an applied configuration file. The
//! queries are split by what they touch, into the same files as the SQLite
//! backend's (`store/sqlite/`), so that the two dialects compare file by file:
//!
//! * `runs.rs`: runs, attempts, transitions, dependencies and idempotency keys:
//!   inserting runs, the engine's commit rounds, purging the dead-letter queue,
//!   reading back a write that failed in doubt, the reads of runs and their
//!   history, and the recovery read at start-up;
//! * `definitions.rs`: job definitions, applied configuration files, schedule
//!   pauses, cursors and fire failures;
//! * `alerts.rs`: alert channels, rules and history;
//! * `tokens.rs`: API tokens (hashes only);
//! * `lease.rs`: the leadership lease of high availability, and the fence
//!   (`begin_fenced`) that the leader-only writes begin with;
//! * `nodelay.rs`: `TCP_NODELAY` on the connections (sqlx 0.9.0 no longer
//!   sets it; without it each commit round waited ~40 ms for a delayed ACK).

mod alerts;
mod catalog;
mod definitions;
mod digest;
mod events;
mod lease;
mod relay;

pub use relay::{RELAY_CHANNEL, RELAY_DONE_CHANNEL};
mod nodelay;
mod retention;
mod runs;
mod tokens;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};

use super::{RunRecord, parse_column, redact_url};
use crate::error::{Error, ErrorCode, Result};

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
    (
        5,
        "tokens",
        include_str!("../../../../migrations/postgres/0005_tokens.sql"),
    ),
    (
        6,
        "events",
        include_str!("../../../../migrations/postgres/0006_events.sql"),
    ),
    (
        7,
        "runs_state_created",
        include_str!("../../../../migrations/postgres/0007_runs_state_created.sql"),
    ),
    (
        8,
        "transitions in events",
        include_str!("../../../../migrations/postgres/0008_transitions_in_events.sql"),
    ),
    (
        9,
        "attempt measures",
        include_str!("../../../../migrations/postgres/0009_attempt_measures.sql"),
    ),
    (
        10,
        "catalog",
        include_str!("../../../../migrations/postgres/0010_catalog.sql"),
    ),
    (
        11,
        "leadership",
        include_str!("../../../../migrations/postgres/0011_leadership.sql"),
    ),
    (
        12,
        "relayed calls",
        include_str!("../../../../migrations/postgres/0012_relayed_calls.sql"),
    ),
];

/// Key of the advisory lock serializing migrations ("worker" + 1).
const MIGRATION_LOCK: i64 = 0x776f_726b_6572_0001;

/// How long the server lets one of the controller's transactions sit idle
/// (its client gone) before ending it and releasing its locks.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "3s";

/// Connections per controller.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a free connection (or a connect) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handle to a PostgreSQL database.
pub(super) struct PgStore {
    pool: PgPool,
    /// The leadership epoch this controller's leader-only writes carry and
    /// check (0: none, a single controller; see `lease.rs`).
    fence: std::sync::atomic::AtomicI64,
}

impl PgStore {
    /// Connects to the (existing) database at `url` and applies migrations.
    pub(super) async fn open(url: &str) -> Result<PgStore> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("db", format!("invalid database URL \"{shown}\": {e}")))?
            .application_name("worker-controller")
            // A controller that vanishes mid-transaction (killed, or cut off
            // from the database) must not hold its row locks until TCP gives
            // up: the server ends such a transaction after this long. The
            // controller's transactions never wait between statements, and a
            // standby's takeover waits for the fenced writes in flight
            // (`lease.rs`), so this also bounds how long a takeover can wait.
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)]);
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
        let port = options.get_port();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |_, _| {
                Box::pin(async move {
                    nodelay::set_on_database_sockets(port);
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| super::open_error("cannot connect to PostgreSQL at", &shown, e.into()))?;
        let store = PgStore {
            pool,
            fence: std::sync::atomic::AtomicI64::new(0),
        };
        store
            .migrate()
            .await
            .map_err(|e| super::open_error("cannot migrate PostgreSQL database", &shown, e))?;
        Ok(store)
    }

    /// Creates `schema_migrations` if needed, then applies each migration not
    /// recorded there in its own transaction, under the migration lock,
    /// recording it in the same one.
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

    /// Closes the pool, waiting for connections to finish.
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The columns of `runs` that [`run_from_row`] reads, in order.
const RUN_COLUMNS: &str = "id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before, ready_at, finished_at, attempt, max_attempts, reason, workflow_id, cancel_requested, idempotency_key";

/// A `runs` row read with [`RUN_COLUMNS`].
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
