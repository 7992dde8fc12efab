//! PostgreSQL queries of high availability (`crate::ha`): the leadership lease
//! row, the record of terms, and the fence every leader-only write passes.
//!
//! Expiry is judged on the database's clock (`clock_timestamp()`), so that
//! controllers on hosts whose clocks disagree agree on when a lease ended;
//! the leader itself stops before that instant by its own clock (`crate::ha`).
//! The fence is `SELECT … FOR SHARE` of the lease row at the start of a write:
//! a standby's takeover (an `UPDATE` of that row) waits for every fenced write
//! in flight to end, and a fenced write that starts after the takeover sees
//! the new epoch and writes nothing.

use std::sync::atomic::Ordering;

use sqlx::{Postgres, Row, Transaction};

use super::PgStore;
use crate::error::{Error, ErrorCode, Result};
use crate::store::{LeaderTermRecord, LeaseRecord, WriteError};

/// The database's clock in Unix milliseconds, as SQL.
pub(super) const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl PgStore {
    /// See [`crate::store::Store::acquire_lease`].
    pub(in crate::store) async fn acquire_lease(
        &self,
        holder: &str,
        address: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let epoch: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE leader_lease SET epoch = epoch + 1, holder = $1, address = $2,
                 acquired_at = {DB_NOW_MS}, renewed_at = {DB_NOW_MS}, expires_at = {DB_NOW_MS} + $3
             WHERE id = 1 AND expires_at < {DB_NOW_MS}
             RETURNING epoch"
        )))
        .bind(holder)
        .bind(address)
        .bind(ttl_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if epoch.is_some() {
            sqlx::query(
                "INSERT INTO leader_terms (epoch, holder, address, acquired_at)
                 SELECT epoch, holder, address, acquired_at FROM leader_lease WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(epoch)
    }

    /// See [`crate::store::Store::renew_lease`].
    pub(in crate::store) async fn renew_lease(&self, epoch: i64, ttl_ms: i64) -> Result<bool> {
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE leader_lease SET renewed_at = {DB_NOW_MS}, expires_at = {DB_NOW_MS} + $2
             WHERE id = 1 AND epoch = $1"
        )))
        .bind(epoch)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// See [`crate::store::Store::release_lease`].
    pub(in crate::store) async fn release_lease(&self, epoch: i64) -> Result<bool> {
        let released = sqlx::query("UPDATE leader_lease SET expires_at = 0 WHERE id = 1 AND epoch = $1")
            .bind(epoch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(released == 1)
    }

    /// See [`crate::store::Store::lease`].
    pub(in crate::store) async fn lease(&self) -> Result<LeaseRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT epoch, holder, address, acquired_at, renewed_at, expires_at, {DB_NOW_MS}
             FROM leader_lease WHERE id = 1"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(LeaseRecord {
            epoch: row.get(0),
            holder: row.get(1),
            address: row.get(2),
            acquired_at: row.get(3),
            renewed_at: row.get(4),
            expires_at: row.get(5),
            database_now: row.get(6),
        })
    }

    /// See [`crate::store::Store::leader_term`].
    pub(in crate::store) async fn leader_term(&self, epoch: i64) -> Result<Option<LeaderTermRecord>> {
        let row = sqlx::query("SELECT epoch, holder, address, acquired_at FROM leader_terms WHERE epoch = $1")
            .bind(epoch)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| LeaderTermRecord {
            epoch: row.get(0),
            holder: row.get(1),
            address: row.get(2),
            acquired_at: row.get(3),
        }))
    }

    /// From now on every leader-only write checks that the lease's epoch is
    /// still `epoch` (0: no check, a single controller).
    pub(in crate::store) fn set_fence(&self, epoch: i64) {
        self.fence.store(epoch, Ordering::SeqCst);
    }

    /// The epoch this controller's writes carry (0 without leadership).
    pub(super) fn epoch(&self) -> i64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Begins a leader-only write: with a fence set, locks the lease row for
    /// share and refuses ([`WriteError::Fenced`]) when another epoch leads.
    pub(super) async fn begin_fenced(&self) -> Result<Transaction<'_, Postgres>, WriteError> {
        let mut tx = self.pool.begin().await?;
        let fence = self.epoch();
        if fence > 0 {
            let current: i64 = sqlx::query_scalar("SELECT epoch FROM leader_lease WHERE id = 1 FOR SHARE")
                .fetch_one(&mut *tx)
                .await?;
            if current != fence {
                return Err(WriteError::Fenced(Error {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "fenced: this controller led in epoch {fence}, and epoch {current} leads now; nothing was written"
                    ),
                }));
            }
        }
        Ok(tx)
    }
}
