//! SQLite queries of the `digest` builtin (see [`crate::store::digest`]).

use sqlx::Row;

use super::SqliteStore;
use crate::error::Result;
use crate::store::digest::{DIGEST_CREATED_SLACK_MS, DigestCost, DigestFailure, DigestQuery, DigestRows, DigestSlow};

impl SqliteStore {
    /// The activity of the window `q` names (without the DLQ size).
    pub(in crate::store) async fn digest_rows(&self, q: &DigestQuery) -> Result<DigestRows> {
        let floor = q.from.saturating_sub(DIGEST_CREATED_SLACK_MS);
        let outcomes = sqlx::query(
            "SELECT r.job, a.outcome, COUNT(*) FROM runs r JOIN attempts a ON a.run_id = r.id
             WHERE r.created_at >= ?1 AND a.finished_at >= ?2 AND a.finished_at < ?3 AND a.outcome IS NOT NULL
             GROUP BY r.job, a.outcome ORDER BY r.job, a.outcome LIMIT ?4",
        )
        .bind(floor)
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.counts))
        .fetch_all(&self.pool)
        .await?;
        let run_ends = sqlx::query(
            "SELECT job, state, COUNT(*) FROM runs
             WHERE state IN ('succeeded', 'dead', 'cancelled') AND created_at >= ?1
               AND finished_at >= ?2 AND finished_at < ?3
             GROUP BY job, state ORDER BY job, state LIMIT ?4",
        )
        .bind(floor)
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.counts))
        .fetch_all(&self.pool)
        .await?;
        let failures = sqlx::query(
            "SELECT a.run_id, a.attempt, r.job, a.outcome, SUBSTR(COALESCE(a.error, ''), 1, ?5), a.finished_at
             FROM runs r JOIN attempts a ON a.run_id = r.id
             WHERE r.created_at >= ?1 AND a.finished_at >= ?2 AND a.finished_at < ?3
               AND a.outcome IN ('failed', 'timed_out', 'lost')
             ORDER BY a.finished_at DESC, a.run_id DESC, a.attempt DESC LIMIT ?4",
        )
        .bind(floor)
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.failures))
        .bind(i64::from(q.error_chars))
        .fetch_all(&self.pool)
        .await?;
        let slowest = sqlx::query(
            "SELECT r.job, COUNT(*), AVG(a.duration_ms), MAX(a.duration_ms)
             FROM runs r JOIN attempts a ON a.run_id = r.id
             WHERE r.created_at >= ?1 AND a.finished_at >= ?2 AND a.finished_at < ?3 AND a.duration_ms IS NOT NULL
             GROUP BY r.job ORDER BY MAX(a.duration_ms) DESC, r.job LIMIT ?4",
        )
        .bind(floor)
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.slowest))
        .fetch_all(&self.pool)
        .await?;
        let costs = sqlx::query(
            "SELECT job, name, SUM(value), COUNT(*) FROM attempt_measures
             WHERE kind = 'metric' AND finished_at >= ?1 AND finished_at < ?2
             GROUP BY job, name ORDER BY job, name LIMIT ?3",
        )
        .bind(q.from)
        .bind(q.to)
        .bind(i64::from(q.costs))
        .fetch_all(&self.pool)
        .await?;
        Ok(DigestRows {
            outcomes: outcomes
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2) as u64))
                .collect(),
            run_ends: run_ends
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2) as u64))
                .collect(),
            failures: failures
                .iter()
                .map(|r| DigestFailure {
                    run_id: r.get(0),
                    attempt: r.get::<i64, _>(1) as u32,
                    job: r.get(2),
                    outcome: r.get(3),
                    error: r.get(4),
                    finished_at: r.get(5),
                })
                .collect(),
            slowest: slowest
                .iter()
                .map(|r| DigestSlow {
                    job: r.get(0),
                    attempts: r.get::<i64, _>(1) as u64,
                    avg_ms: r.get(2),
                    max_ms: r.get(3),
                })
                .collect(),
            costs: costs
                .iter()
                .map(|r| DigestCost {
                    job: r.get(0),
                    metric: r.get(1),
                    sum: r.get(2),
                    reports: r.get::<i64, _>(3) as u64,
                })
                .collect(),
            dead_letter: 0,
        })
    }
}
