//! SQLite queries of alerting: the alert channels and rules (replaced as a
//! whole by each apply of `alerts.yaml`, and read in one statement so channels
//! and rules come from the same apply), and the alert history (recorded in
//! batches, read with filters, pruned by age). The history query and its row
//! decoder are shared with the other dialect (`store/mod.rs`).

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{ROWS_PER_STATEMENT, SqliteStore, record_applied};
use crate::error::Result;
use crate::store::{AlertQuery, AlertRecord, alert_from_row, alert_history_query, split_alert_specs};

/// Alert history rows deleted per transaction when pruning: the writer is
/// released between batches, so a large prune does not hold up commit rounds.
const PRUNE_BATCH: i64 = 5_000;

impl SqliteStore {
    /// Alert channels (name, spec) by name and rules (name, spec) by position,
    /// in one statement (one snapshot).
    pub(in crate::store) async fn alert_specs(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        let rows = sqlx::query(
            "SELECT TRUE AS is_channel, name, spec, 0 AS position FROM alert_channels
             UNION ALL SELECT FALSE, name, spec, position FROM alert_rules
             ORDER BY is_channel DESC, position, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(split_alert_specs(
            rows.iter().map(|r| (r.get::<bool, _>(0), r.get(1), r.get(2))),
        ))
    }

    /// Replaces every alert channel and rule in one transaction, and, when
    /// given, records the configuration file text they came from.
    pub(in crate::store) async fn save_alert_specs(
        &self,
        channels: &[(String, String)],
        rules: &[(String, String)],
        applied: Option<(&str, &str)>,
    ) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM alert_channels").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM alert_rules").execute(&mut *tx).await?;
        for chunk in channels.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO alert_channels (name, spec, updated_at) ");
            q.push_values(chunk, |mut row, (name, spec)| {
                row.push_bind(name).push_bind(spec).push_bind(now);
            });
            q.build().execute(&mut *tx).await?;
        }
        let positioned: Vec<(i64, &(String, String))> = (0i64..).zip(rules).collect();
        for chunk in positioned.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO alert_rules (name, position, spec, updated_at) ");
            q.push_values(chunk, |mut row, (position, (name, spec))| {
                row.push_bind(name).push_bind(*position).push_bind(spec).push_bind(now);
            });
            q.build().execute(&mut *tx).await?;
        }
        if let Some((file, content)) = applied {
            record_applied(&mut tx, file, content, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records alert outcomes in one transaction, as multi-row statements; rows
    /// whose id exists already are skipped.
    pub(in crate::store) async fn record_alerts(&self, records: &[AlertRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        // 13 parameters a row.
        for chunk in records.chunks(ROWS_PER_STATEMENT / 2) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO alert_history (id, alert_id, at, kind, event, rule, channel, job, run_id, status, attempts,
                     answer, title) ",
            );
            q.push_values(chunk, |mut row, record| {
                row.push_bind(&record.id)
                    .push_bind(&record.alert_id)
                    .push_bind(record.at)
                    .push_bind(record.kind.as_str())
                    .push_bind(record.event.map(|e| e.as_str()))
                    .push_bind(&record.rule)
                    .push_bind(&record.channel)
                    .push_bind(&record.job)
                    .push_bind(&record.run_id)
                    .push_bind(record.status.as_str())
                    .push_bind(i64::from(record.attempts))
                    .push_bind(&record.answer)
                    .push_bind(&record.title);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Alert history rows matching `query`, newest first, at most `limit`.
    pub(in crate::store) async fn alert_history(&self, query: &AlertQuery, limit: u32) -> Result<Vec<AlertRecord>> {
        let rows = alert_history_query::<Sqlite>(query, limit)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Deletes the alert history rows recorded before `older_than`, in batches
    /// of [`PRUNE_BATCH`] rows, each its own transaction. Returns how many.
    pub(in crate::store) async fn prune_alert_history(&self, older_than: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM alert_history WHERE rowid IN (SELECT rowid FROM alert_history WHERE at < ?1 LIMIT ?2)",
            )
            .bind(older_than)
            .bind(PRUNE_BATCH)
            .execute(&self.writer)
            .await?
            .rows_affected();
            deleted += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }
}
