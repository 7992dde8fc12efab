//! PostgreSQL queries of relayed calls (`crate::ha::relay`): a standby writes
//! a call and withdraws it if no leader claimed it in time; the leader claims
//! (fenced) and answers. Notifications wake the other side; both also poll.

use sqlx::Row;

use super::PgStore;
use super::lease::DB_NOW_MS;
use crate::error::Result;
use crate::store::{RelayAnswer, RelayState, RelayedCall, WriteError};

/// The channel a standby notifies when it wrote a call (payload: the id).
pub const RELAY_CHANNEL: &str = "worker_relay";
/// The channel the leader notifies when it answered a call (payload: the id).
pub const RELAY_DONE_CHANNEL: &str = "worker_relay_done";

fn to_json(pairs: &[(String, String)]) -> String {
    serde_json::to_string(pairs).expect("string pairs serialize")
}

fn from_json(text: Option<String>) -> Vec<(String, String)> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

impl PgStore {
    /// See [`crate::store::Store::relay_submit`].
    pub(in crate::store) async fn relay_submit(&self, standby: &str, call: &RelayedCall) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO relayed_calls (method, caller, standby, request_headers, request_body, state, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', {DB_NOW_MS}) RETURNING id"
        )))
        .bind(&call.method)
        .bind(&call.caller)
        .bind(standby)
        .bind(to_json(&call.headers))
        .bind(&call.body)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RELAY_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// See [`crate::store::Store::relay_claim`].
    pub(in crate::store) async fn relay_claim(&self, limit: i64) -> Result<Vec<RelayedCall>, WriteError> {
        let mut tx = self.begin_fenced().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE relayed_calls SET state = 'running', claimed_epoch = $2, claimed_at = {DB_NOW_MS}
             WHERE id IN (SELECT id FROM relayed_calls WHERE state = 'pending'
                          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, method, caller, request_headers, request_body"
        )))
        .bind(limit)
        .bind(self.epoch())
        .fetch_all(&mut *tx)
        .await
        .map_err(crate::error::Error::from)?;
        tx.commit().await.map_err(crate::error::Error::from)?;
        let mut calls: Vec<RelayedCall> = rows
            .into_iter()
            .map(|row| RelayedCall {
                id: row.get(0),
                method: row.get(1),
                caller: row.get(2),
                headers: from_json(row.get(3)),
                body: row.get(4),
            })
            .collect();
        calls.sort_by_key(|c| c.id);
        Ok(calls)
    }

    /// See [`crate::store::Store::relay_finish`].
    pub(in crate::store) async fn relay_finish(&self, id: i64, answer: &RelayAnswer) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE relayed_calls SET state = 'done', response_headers = $2, response_body = $3,
                 response_trailers = $4, finished_at = {DB_NOW_MS}
             WHERE id = $1 AND state = 'running'"
        )))
        .bind(id)
        .bind(to_json(&answer.headers))
        .bind(&answer.body)
        .bind(to_json(&answer.trailers))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(RELAY_DONE_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    }

    /// See [`crate::store::Store::relay_state`].
    pub(in crate::store) async fn relay_state(&self, id: i64) -> Result<RelayState> {
        let row = sqlx::query(
            "SELECT state, claimed_epoch, response_headers, response_body, response_trailers
             FROM relayed_calls WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(RelayState::Missing);
        };
        let state: String = row.get(0);
        Ok(match state.as_str() {
            "pending" => RelayState::Pending,
            "running" => RelayState::Running {
                epoch: row.get::<Option<i64>, _>(1).unwrap_or(0),
            },
            "done" => RelayState::Done(RelayAnswer {
                headers: from_json(row.get(2)),
                body: row.get::<Option<Vec<u8>>, _>(3).unwrap_or_default(),
                trailers: from_json(row.get(4)),
            }),
            _ => RelayState::Withdrawn,
        })
    }

    /// See [`crate::store::Store::relay_withdraw`].
    pub(in crate::store) async fn relay_withdraw(&self, id: i64) -> Result<bool> {
        let withdrawn = sqlx::query("UPDATE relayed_calls SET state = 'withdrawn' WHERE id = $1 AND state = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(withdrawn == 1)
    }

    /// See [`crate::store::Store::relay_prune`].
    pub(in crate::store) async fn relay_prune(&self, older_than_ms: i64) -> Result<u64> {
        let pruned = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM relayed_calls WHERE state <> 'pending' AND created_at < {DB_NOW_MS} - $1"
        )))
        .bind(older_than_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    /// See [`crate::store::Store::listen`].
    pub(in crate::store) async fn listen(&self, channel: &str) -> Result<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(channel).await?;
        Ok(listener)
    }
}
