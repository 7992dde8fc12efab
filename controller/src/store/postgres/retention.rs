//! PostgreSQL queries of history retention: pruning a batch of a job's
//! finished runs (see `store/retention.rs` for which) and counting what a
//! prune would delete. Freed space is reused by PostgreSQL's autovacuum.

use sqlx::{Postgres, QueryBuilder, Row};

use super::PgStore;
use crate::error::Result;
use crate::store::WriteError;
use crate::store::retention::{self, PruneBatch, PruneCounts, PruneRule};

impl PgStore {
    /// See [`crate::store::Store::prune_runs`].
    pub(in crate::store) async fn prune_runs(&self, rule: &PruneRule, limit: u32) -> Result<PruneBatch, WriteError> {
        let mut batch = PruneBatch::default();
        if rule.is_empty() || limit == 0 {
            return Ok(batch);
        }
        let mut tx = self.begin_fenced().await?;
        let mut q = QueryBuilder::<Postgres>::new("SELECT r.id, r.state FROM runs r WHERE ");
        push_condition(&mut q, rule);
        // Lock the chosen rows: a concurrent change of one of them waits.
        q.push(" ORDER BY COALESCE(r.finished_at, r.created_at), r.id LIMIT ")
            .push_bind(i64::from(limit))
            .push(" FOR UPDATE OF r");
        let rows = q.build().fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            return Ok(batch);
        }
        for row in &rows {
            batch.ids.push(row.get(0));
            batch.counts.add(&row.get::<String, _>(1), 1);
        }
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT idempotency_key FROM runs
             WHERE idempotency_key IS NOT NULL AND id = ANY($1)) AND run_id = ANY($1)",
        )
        .bind(&batch.ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM run_dependencies WHERE upstream_id = ANY($1)")
            .bind(&batch.ids)
            .execute(&mut *tx)
            .await?;
        // Attempts, transitions, events and the run's own dependency rows
        // go by cascade.
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM runs WHERE state IN {} AND id = ANY($1)",
            retention::FINISHED
        )))
        .bind(&batch.ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted != batch.ids.len() as u64 {
            return Err(WriteError::conflict("a run to prune changed during the prune"));
        }
        tx.commit().await?;
        Ok(batch)
    }

    /// See [`crate::store::Store::prune_schedule_events`].
    pub(in crate::store) async fn prune_schedule_events(&self, rule: &PruneRule, limit: u32) -> Result<u64> {
        let Some(mut q) = retention::schedule_events_delete::<Postgres>(rule, limit) else {
            return Ok(0);
        };
        Ok(q.build().execute(&self.pool).await?.rows_affected())
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT r.state, COUNT(*) FROM runs r WHERE ");
        push_condition(&mut q, rule);
        q.push(" GROUP BY r.state");
        for row in q.build().fetch_all(&self.pool).await? {
            counts.add(&row.get::<String, _>(0), row.get::<i64, _>(1) as u64);
        }
        Ok(counts)
    }
}

/// Pushes the prune condition with its values bound.
fn push_condition(q: &mut QueryBuilder<Postgres>, rule: &PruneRule) {
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
