//! PostgreSQL queries of definitions and schedules: job definitions and the text
//! of the configuration files they were applied from, schedule pauses, schedule
//! cursors (the last fire instant and the missed/skipped counters), and the
//! failures of a job's fires.
//!
//! A cursor also moves when a schedule fire's runs are inserted, in that
//! insert's transaction (`insert_runs_in` in `runs.rs`), so a fire is recorded
//! together with its runs; [`PgStore::advance_cursor`] moves it for fires that
//! create no run (paused, missed or skipped ones) and adds to the missed/skipped
//! counters. Either way it never moves backwards.

use sqlx::Row;

use super::events::write_events;
use super::{PgStore, record_applied};
use crate::error::Result;
use crate::store::events::{self, EventRecord};
use crate::store::{FireFailureRecord, ScheduleCursor};

impl PgStore {
    /// Stored job definitions: (name, spec YAML, source).
    pub(in crate::store) async fn job_specs(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT name, spec, source FROM jobs ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Writes job definitions (upserts and deletions) in one transaction, and,
    /// when given, records the configuration file text they came from.
    pub(in crate::store) async fn save_jobs(
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

    /// The text of a configuration file as last applied.
    pub(in crate::store) async fn applied_config(&self, file: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT content FROM applied_config WHERE file = $1")
            .bind(file)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Names of paused schedules.
    pub(in crate::store) async fn paused_schedules(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT job FROM schedule_pauses ORDER BY job")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Pauses or resumes a schedule.
    pub(in crate::store) async fn set_paused(&self, job: &str, paused: bool) -> Result<Vec<EventRecord>> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = self.pool.begin().await?;
        let changed = if paused {
            sqlx::query("INSERT INTO schedule_pauses (job, paused_at) VALUES ($1, $2) ON CONFLICT (job) DO NOTHING")
                .bind(job)
                .bind(now)
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query("DELETE FROM schedule_pauses WHERE job = $1")
                .bind(job)
                .execute(&mut *tx)
                .await?
        }
        .rows_affected();
        // Pausing a paused schedule (or resuming a running one) is no event.
        let pending = if changed > 0 {
            vec![events::pause_event(job, paused, now)]
        } else {
            Vec::new()
        };
        let events = write_events(&mut tx, self.epoch(), pending).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Moves a schedule cursor and adds to its missed/skipped counters (each
    /// count above zero is an event).
    pub(in crate::store) async fn advance_cursor(
        &self,
        job: &str,
        last_fired: i64,
        missed: u64,
        skipped: u64,
    ) -> Result<Vec<EventRecord>> {
        let mut tx = self.begin_fenced().await?;
        sqlx::query(
            "INSERT INTO schedule_cursors (job, last_fired, missed, skipped) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job) DO UPDATE SET last_fired = GREATEST(schedule_cursors.last_fired, excluded.last_fired),
             missed = schedule_cursors.missed + excluded.missed, skipped = schedule_cursors.skipped + excluded.skipped",
        )
        .bind(job)
        .bind(last_fired)
        .bind(missed as i64)
        .bind(skipped as i64)
        .execute(&mut *tx)
        .await?;
        let now = chrono::Utc::now().timestamp_millis();
        let events = write_events(&mut tx, self.epoch(), events::cursor_events(job, now, missed, skipped)).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Records a failed try of `job`'s fire at `fire_at`: its failures in a
    /// row and ever go up by one, and the error is kept.
    pub(in crate::store) async fn record_fire_failure(
        &self,
        job: &str,
        fire_at: i64,
        error: &str,
        at: i64,
    ) -> Result<()> {
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

    /// `job` fires again: its failures in a row go back to 0 (the last error
    /// and the total are kept).
    pub(in crate::store) async fn clear_fire_failure(&self, job: &str) -> Result<()> {
        sqlx::query("UPDATE schedule_failures SET failing = 0 WHERE job = $1")
            .bind(job)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every job whose fires have ever failed, by name.
    pub(in crate::store) async fn fire_failures(&self) -> Result<Vec<FireFailureRecord>> {
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

    /// Every schedule cursor.
    pub(in crate::store) async fn cursors(&self) -> Result<Vec<ScheduleCursor>> {
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
}
