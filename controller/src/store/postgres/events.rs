//! PostgreSQL queries of lifecycle events: writing a transaction's events with
//! their sequence numbers (see `store/events.rs`: the counter row stays locked
//! until the commit, so numbers follow commit order), and reading them in
//! pages for `WatchEvents`.

use std::collections::HashMap;

use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::PgStore;
use crate::error::Result;
use crate::model::RunState;
use crate::store::events::{EventFilter, EventKind, EventRecord, PendingEvent};
use crate::store::parse_column;

/// Columns of an event row, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str = "seq, kind, job, run_id, from_state, to_state, attempt, at, reason, count";

impl PgStore {
    /// See [`crate::store::Store::events_after`].
    pub(in crate::store) async fn events_after(
        &self,
        after: i64,
        up_to: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > "));
        q.push_bind(after).push(" AND seq <= ").push_bind(up_to);
        if !filter.jobs.is_empty() {
            q.push(" AND job = ANY(").push_bind(filter.jobs.clone()).push(")");
        }
        if !filter.kinds.is_empty() {
            let kinds: Vec<String> = filter.kinds.iter().map(|k| k.as_str().to_string()).collect();
            q.push(" AND kind = ANY(").push_bind(kinds).push(")");
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// See [`crate::store::Store::event_head`].
    pub(in crate::store) async fn event_head(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT last_seq FROM event_counter WHERE id = 1")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// Writes `pending` inside the caller's transaction: looks up the job and
/// attempt of changed runs, takes sequence numbers from the counter (locking
/// its row until the commit) and inserts the rows with the leadership `epoch`
/// of the writer (0 without high availability). Returns the events as written.
pub(super) async fn write_events(
    conn: &mut PgConnection,
    epoch: i64,
    pending: Vec<PendingEvent>,
) -> sqlx::Result<Vec<EventRecord>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let lookups: Vec<String> = pending
        .iter()
        .filter(|p| p.lookup)
        .filter_map(|p| p.event.run_id.clone())
        .collect();
    let mut runs: HashMap<String, (String, u32)> = HashMap::new();
    if !lookups.is_empty() {
        for row in sqlx::query("SELECT id, job, attempt FROM runs WHERE id = ANY($1)")
            .bind(&lookups)
            .fetch_all(&mut *conn)
            .await?
        {
            runs.insert(row.get(0), (row.get(1), row.get::<i64, _>(2) as u32));
        }
    }
    let last: i64 =
        sqlx::query_scalar("UPDATE event_counter SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq")
            .bind(pending.len() as i64)
            .fetch_one(&mut *conn)
            .await?;
    let first = last - pending.len() as i64 + 1;
    let mut events = Vec::with_capacity(pending.len());
    for (i, p) in pending.into_iter().enumerate() {
        let mut event = p.event;
        event.seq = first + i as i64;
        if p.lookup
            && let Some((job, attempt)) = event.run_id.as_ref().and_then(|id| runs.get(id))
        {
            event.job = job.clone();
            event.attempt = *attempt;
        }
        events.push(event);
    }
    sqlx::query(
        "INSERT INTO events (seq, kind, job, run_id, from_state, to_state, attempt, at, reason, count, epoch)
             SELECT *, $11 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::bigint[], $8::bigint[], $9::text[], $10::bigint[])",
    )
    .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.job.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.run_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.from.map(RunState::as_str)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.state.map(RunState::as_str)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| i64::from(e.attempt)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.count as i64).collect::<Vec<_>>())
    .bind(epoch)
    .execute(&mut *conn)
    .await?;
    Ok(events)
}

fn event_from_row(row: &sqlx::postgres::PgRow) -> Result<EventRecord> {
    let from: Option<String> = row.get(4);
    let state: Option<String> = row.get(5);
    Ok(EventRecord {
        seq: row.get(0),
        kind: parse_column::<EventKind>(&row.get::<String, _>(1))?,
        job: row.get(2),
        run_id: row.get(3),
        from: from.map(|s| parse_column::<RunState>(&s)).transpose()?,
        state: state.map(|s| parse_column::<RunState>(&s)).transpose()?,
        attempt: row.get::<i64, _>(6) as u32,
        at: row.get(7),
        reason: row.get(8),
        count: row.get::<i64, _>(9) as u64,
    })
}
