//! PostgreSQL queries of alerting: the alert channels and rules (replaced as a
//! whole by each apply of `alerts.yaml`, and read in one statement so channels
//! and rules come from the same apply), and the alert history (recorded in
//! batches, read with filters, pruned by age). The history query and its row
//! decoder are shared with the other dialect (`store/mod.rs`).

use sqlx::{Postgres, Row};

use super::{PgStore, record_applied};
use crate::error::Result;
use crate::store::{AlertQuery, AlertRecord, alert_from_row, alert_history_query, split_alert_specs};

impl PgStore {
    /// Alert channels (name, spec) by name and rules (name, spec) by position,
    /// in one statement (one snapshot).
    pub(in crate::store) async fn alert_specs(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        let rows = sqlx::query(
            "SELECT TRUE AS is_channel, name, spec, 0::bigint AS position FROM alert_channels
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
    pub(in crate::store) async fn record_alerts(&self, records: &[AlertRecord]) -> Result<()> {
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
    pub(in crate::store) async fn alert_history(&self, query: &AlertQuery, limit: u32) -> Result<Vec<AlertRecord>> {
        let rows = alert_history_query::<Postgres>(query, limit)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// Deletes the alert history rows recorded before `older_than`. Returns how many.
    pub(in crate::store) async fn prune_alert_history(&self, older_than: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM alert_history WHERE at < $1")
            .bind(older_than)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}
