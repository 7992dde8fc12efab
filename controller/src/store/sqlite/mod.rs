//! The SQLite backend: the embedded default (`sqlite://worker.db`).
//!
//! All writes go through one connection (`writer`): SQLite admits one writer at
//! a time anyway, so writers queue in the pool instead of sleeping on the busy
//! timeout, and the writer's page cache stays valid between commits (a write by
//! another connection would invalidate it). Reads use a separate pool.
//! Writes that belong together are committed in one transaction. SQLite runs in
//! WAL mode with `synchronous = NORMAL`: a commit survives a crash of the
//! controller process (not necessarily a power loss of the host). Transactions
//! that read before they write begin with `BEGIN IMMEDIATE`, so that concurrent
//! writers queue on the busy timeout instead of failing on a stale snapshot.
//!
//! This file opens the database (the writer and the reader pool), applies the
//! migrations, runs the background WAL checkpointer, and holds what the other
//! files of the backend share: [`SqliteStore`], the columns of a run and their
//! row decoder, the rows per multi-row statement, and the record of an applied
//! configuration file. The queries are split by what they touch, into the same
//! files as the PostgreSQL backend's (`store/postgres/`), so that the two
//! dialects compare file by file:
//!
//! * `hot.rs`: the engine's hot writes (new runs, commit rounds, purges)
//!   executed as one synchronous call on the writer's raw handle, without
//!   sqlx's per-statement hand-off (why: see the file);
//! * `runs.rs`: runs, attempts, transitions (events), dependencies and
//!   idempotency keys: the engine's writes (inserting runs, commit rounds,
//!   purging the dead-letter queue, through `hot.rs`), reading back a write
//!   that failed in doubt, the reads of runs and their history, and the
//!   recovery read at start-up;
//! * `definitions.rs`: job definitions, applied configuration files, schedule
//!   pauses, cursors and fire failures;
//! * `alerts.rs`: alert channels, rules and history;
//! * `tokens.rs`: API tokens (hashes only).

mod alerts;
mod catalog;
mod definitions;
mod digest;
mod events;
mod hot;
mod retention;
mod runs;
mod tokens;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::{RunRecord, parse_column, redact_url};
use crate::error::{Error, Result};
use crate::store::WriteError;

/// Rows per multi-row statement (at 9 parameters a row, far below SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// Embedded migrations, applied in order at start-up.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../../migrations/sqlite/0001_init.sql")),
    (
        2,
        "definitions and dependencies",
        include_str!("../../../../migrations/sqlite/0002_definitions_dependencies.sql"),
    ),
    (
        3,
        "alerts",
        include_str!("../../../../migrations/sqlite/0003_alerts.sql"),
    ),
    (
        4,
        "fire failures",
        include_str!("../../../../migrations/sqlite/0004_fire_failures.sql"),
    ),
    (
        5,
        "tokens",
        include_str!("../../../../migrations/sqlite/0005_tokens.sql"),
    ),
    (
        6,
        "events",
        include_str!("../../../../migrations/sqlite/0006_events.sql"),
    ),
    (
        7,
        "runs_state_created",
        include_str!("../../../../migrations/sqlite/0007_runs_state_created.sql"),
    ),
    (
        8,
        "transitions in events",
        include_str!("../../../../migrations/sqlite/0008_transitions_in_events.sql"),
    ),
    (
        9,
        "attempt measures",
        include_str!("../../../../migrations/sqlite/0009_attempt_measures.sql"),
    ),
    (
        10,
        "catalog",
        include_str!("../../../../migrations/sqlite/0010_catalog.sql"),
    ),
    (
        11,
        "leadership",
        include_str!("../../../../migrations/sqlite/0011_leadership.sql"),
    ),
];

/// Handle to a SQLite database.
pub(super) struct SqliteStore {
    /// The writer's handle as the hot path sees it (see `hot.rs`), kept
    /// between writes for its prepared statements. Declared first, so that
    /// it is dropped (its statements finalized) before `writer` closes the
    /// handle: sqlx panics when it closes a handle with live statements.
    hot: std::sync::Mutex<Option<hot::HotConnection>>,
    /// Readers.
    pool: SqlitePool,
    /// The one connection that writes.
    writer: SqlitePool,
}

/// How long opening a database waits for another process that holds it
/// locked (the same as the busy timeout of every statement).
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `connect` again while it fails with `SQLITE_BUSY` or `SQLITE_LOCKED`,
/// for up to [`OPEN_BUSY_TIMEOUT`]. Connecting sets the journal mode to WAL,
/// and SQLite answers that pragma `BUSY` at once, without the busy handler,
/// while another process is creating or converting the same new file (two
/// controllers started together, a test opening one file twice).
async fn retry_while_locked<T, F, Fut>(mut connect: F) -> std::result::Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + OPEN_BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match connect().await {
            Err(sqlx::Error::Database(db))
                if tokio::time::Instant::now() < deadline
                    && db
                        .code()
                        .and_then(|code| code.parse::<i64>().ok())
                        .is_some_and(|code| matches!(code & 0xff, 5 | 6)) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub(super) async fn open(url: &str) -> Result<SqliteStore> {
        let shown = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("db", format!("invalid database URL \"{shown}\": {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Takes effect on a new file only (before its first table): pages
            // freed by retention can then be given back with
            // `PRAGMA incremental_vacuum` (docs/decisions.md, "History retention").
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .busy_timeout(OPEN_BUSY_TIMEOUT);
        // The writer keeps 16 MiB of pages cached (KiB below). It checkpoints
        // itself only every 10,000 pages (~40 MiB of WAL; SQLite's default is
        // 1,000): see `checkpointer`. It is opened serialized (SQLite's own
        // mutex on the connection), so that the hot path's cached statements
        // may be finalized from whichever thread drops the store, whatever
        // sqlx's worker thread is doing.
        let writer_options = options
            .clone()
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", "10000")
            .serialized(true);
        let writer = retry_while_locked(|| {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                // One connection, used by one writer at a time: a ping before
                // each write would be one more hand-off to its worker thread.
                .test_before_acquire(false)
                .connect_with(writer_options.clone())
        })
        .await
        .map_err(|e| super::open_error("cannot open SQLite database", &shown, e.into()))?;
        let pool = retry_while_locked(|| {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.clone())
        })
        .await
        .map_err(|e| super::open_error("cannot open SQLite database", &shown, e.into()))?;
        let store = SqliteStore {
            pool,
            writer,
            hot: std::sync::Mutex::new(None),
        };
        store
            .migrate()
            .await
            .map_err(|e| super::open_error("cannot migrate SQLite database", &shown, e))?;
        tokio::spawn(checkpointer(store.pool.clone()));
        Ok(store)
    }

    /// Creates `schema_migrations` if needed, then applies each migration not
    /// recorded there in its own transaction, recording it in the same one.
    ///
    /// Every step takes the write lock first (`BEGIN IMMEDIATE`): a statement
    /// that reads the schema and only then asks to write fails at once with
    /// `SQLITE_BUSY` (no busy wait) when another process migrated meanwhile,
    /// which is what two controllers started together on a new file do.
    async fn migrate(&self) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for (version, description, sql) in MIGRATIONS {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let applied: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)")
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

    /// Runs `f` on the writer connection's raw handle, taken out of sqlx's
    /// worker thread for the call (see `hot.rs`): one hand-off per write.
    async fn hot_write<T>(
        &self,
        f: impl FnOnce(&hot::HotConnection) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let mut conn = self.writer.acquire().await?;
        let mut locked = conn.lock_handle().await?;
        let handle = locked.as_raw_handle();
        let mut slot = self.hot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: `locked` keeps sqlx's worker off the handle until it is
        // dropped, after `f` returns; the slot's mutex keeps other callers out.
        let hot = unsafe { hot::HotConnection::wrap(slot.take(), handle) }?;
        let outcome = f(&hot);
        *slot = Some(hot);
        outcome
    }

    /// `VACUUM INTO path` from a reader connection: a consistent copy of the
    /// database as of one read transaction, compacted, in a new file.
    pub(super) async fn vacuum_into(&self, path: &std::path::Path) -> Result<()> {
        let path = path
            .to_str()
            .ok_or_else(|| Error::invalid("db", "the snapshot path is not UTF-8"))?;
        sqlx::query("VACUUM INTO ?").bind(path).execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish. The hot path's
    /// cached statements are finalized first, while the handle is locked.
    pub(super) async fn close(&self) {
        if let Ok(mut conn) = self.writer.acquire().await
            && let Ok(_locked) = conn.lock_handle().await
        {
            drop(
                self.hot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
        }
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// How often committed WAL frames are copied into the database file in the background.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Copies committed WAL frames into the database file (and syncs it) every
/// [`CHECKPOINT_INTERVAL`], from a reader connection in `PASSIVE` mode, which
/// never blocks the writer. The writer still checkpoints itself, because
/// under constant writes only its checkpoint (it adds no frames meanwhile)
/// catches up completely and lets the WAL start over; without it the WAL grew
/// to 780 MB during 200,000 runs. It does so every 10,000 pages instead of
/// SQLite's default 1,000, and finds most of the copying done: at 500 runs/s
/// the default made a commit wait for a checkpoint's sync about eight times a
/// second (p99 enqueue→commit 2.7–3.1 ms; 0.8–1.0 ms at 10,000 pages, the WAL
/// staying under ~42 MB). Ends when the pool is closed.
async fn checkpointer(pool: SqlitePool) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "background WAL checkpoint failed; retrying");
        }
    }
}

/// The columns of `runs` that [`run_from_row`] reads, in order.
const RUN_COLUMNS: &str = "id, job, state, priority, payload, trigger_kind, scheduled_for, created_at, not_before, ready_at, finished_at, attempt, max_attempts, reason, workflow_id, cancel_requested, idempotency_key";

/// A `runs` row read with [`RUN_COLUMNS`].
fn run_from_row(r: &SqliteRow) -> Result<RunRecord> {
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
        cancel_requested: r.get::<i64, _>(15) != 0,
        idempotency_key: r.get(16),
    })
}

/// Records `content` as the text of configuration `file` last applied, in `tx`.
async fn record_applied(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    file: &str,
    content: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO applied_config (file, content, applied_at) VALUES (?, ?, ?)
         ON CONFLICT (file) DO UPDATE SET content = excluded.content, applied_at = excluded.applied_at",
    )
    .bind(file)
    .bind(content)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
