//! SQLite queries of history retention: pruning a batch of a job's finished
//! runs (see `store/retention.rs` for which), counting what a prune would
//! delete, and giving freed pages back to the file system.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::SqliteStore;
use crate::error::Result;
use crate::store::WriteError;
use crate::store::retention::{self, PruneBatch, PruneCounts, PruneRule};

/// Pages `PRAGMA incremental_vacuum` returns to the file system after a
/// batch (4 KiB each: at most 4 MiB of file per batch, a short write).
const VACUUM_PAGES: u32 = 1024;

impl SqliteStore {
    /// See [`crate::store::Store::prune_runs`].
    pub(in crate::store) async fn prune_runs(&self, rule: &PruneRule, limit: u32) -> Result<PruneBatch, WriteError> {
        let mut batch = PruneBatch::default();
        if rule.is_empty() || limit == 0 {
            return Ok(batch);
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT r.id, r.state FROM runs r WHERE ");
        push_condition(&mut q, rule);
        q.push(" ORDER BY COALESCE(r.finished_at, r.created_at), r.id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            return Ok(batch);
        }
        for row in &rows {
            batch.ids.push(row.get(0));
            batch.counts.add(&row.get::<String, _>(1), 1);
        }
        let mut keys = QueryBuilder::<Sqlite>::new(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT idempotency_key FROM runs
             WHERE idempotency_key IS NOT NULL AND id IN (",
        );
        push_ids(&mut keys, &batch.ids);
        keys.push(")) AND run_id IN (");
        push_ids(&mut keys, &batch.ids);
        keys.push(")");
        keys.build().execute(&mut *tx).await?;
        let mut upstream = QueryBuilder::<Sqlite>::new("DELETE FROM run_dependencies WHERE upstream_id IN (");
        push_ids(&mut upstream, &batch.ids);
        upstream.push(")");
        upstream.build().execute(&mut *tx).await?;
        // Attempts, transitions, events and the run's own dependency rows
        // go by cascade.
        let mut runs = QueryBuilder::<Sqlite>::new(format!(
            "DELETE FROM runs WHERE state IN {} AND id IN (",
            retention::FINISHED
        ));
        push_ids(&mut runs, &batch.ids);
        runs.push(")");
        let deleted = runs.build().execute(&mut *tx).await?.rows_affected();
        if deleted != batch.ids.len() as u64 {
            return Err(WriteError::conflict("a run to prune changed during the prune"));
        }
        tx.commit().await?;
        // Free pages go back to the file system when the file was created
        // with auto_vacuum=INCREMENTAL (new files are); otherwise SQLite
        // reuses them for new rows. Best effort: a failure changes nothing.
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA incremental_vacuum({VACUUM_PAGES})"
        )))
        .execute(&self.writer)
        .await
        {
            tracing::debug!(error = %e, "incremental vacuum after a prune failed");
        }
        Ok(batch)
    }

    /// See [`crate::store::Store::prune_schedule_events`].
    pub(in crate::store) async fn prune_schedule_events(&self, rule: &PruneRule, limit: u32) -> Result<u64> {
        let Some(mut q) = retention::schedule_events_delete::<Sqlite>(rule, limit) else {
            return Ok(0);
        };
        Ok(q.build().execute(&self.writer).await?.rows_affected())
    }

    /// See [`crate::store::Store::history_jobs`].
    pub(in crate::store) async fn history_jobs(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(retention::HISTORY_JOBS)
            .fetch_all(&self.pool)
            .await?)
    }

    /// See [`crate::store::Store::count_prunable`].
    pub(in crate::store) async fn count_prunable(&self, rule: &PruneRule) -> Result<PruneCounts> {
        let mut counts = PruneCounts::default();
        if rule.is_empty() {
            return Ok(counts);
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT r.state, COUNT(*) FROM runs r WHERE ");
        push_condition(&mut q, rule);
        q.push(" GROUP BY r.state");
        for row in q.build().fetch_all(&self.pool).await? {
            counts.add(&row.get::<String, _>(0), row.get::<i64, _>(1) as u64);
        }
        Ok(counts)
    }
}

/// Pushes the prune condition with its values bound.
fn push_condition(q: &mut QueryBuilder<Sqlite>, rule: &PruneRule) {
    let (sql, binds) = retention::condition(rule);
    let mut pieces = sql.split('?');
    q.push(pieces.next().unwrap_or_default());
    for (bind, piece) in binds.into_iter().zip(pieces) {
        match bind.value(rule) {
            Ok(n) => q.push_bind(n),
            Err(job) => q.push_bind(job.to_string()),
        };
        q.push(piece);
    }
}

fn push_ids(q: &mut QueryBuilder<Sqlite>, ids: &[String]) {
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.clone());
    }
}
