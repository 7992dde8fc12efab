//! SQLite queries of lifecycle events: writing a transaction's schedule
//! events with their sequence numbers (see `store/events.rs` for why a counter
//! row; run events are written by `hot.rs`), and reading them in pages for
//! `WatchEvents`.

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::{ROWS_PER_STATEMENT, SqliteStore};
use crate::error::Result;
use crate::model::RunState;
use crate::store::events::{EventFilter, EventKind, EventRecord, PendingEvent};
use crate::store::parse_column;

/// Columns of an event row, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str = "seq, kind, job, run_id, from_state, to_state, attempt, at, reason, count";

impl SqliteStore {
    /// See [`crate::store::Store::events_after`].
    pub(in crate::store) async fn events_after(
        &self,
        after: i64,
        up_to: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > "));
        q.push_bind(after).push(" AND seq <= ").push_bind(up_to);
        if !filter.jobs.is_empty() {
            q.push(" AND job IN (");
            let mut list = q.separated(", ");
            for job in &filter.jobs {
                list.push_bind(job);
            }
            q.push(")");
        }
        if !filter.kinds.is_empty() {
            q.push(" AND kind IN (");
            let mut list = q.separated(", ");
            for kind in &filter.kinds {
                list.push_bind(kind.as_str());
            }
            q.push(")");
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

/// Writes the schedule events `pending` (pauses, missed and skipped fires)
/// inside the caller's transaction: takes sequence numbers from the counter
/// and inserts the rows. Returns the events as written. Run events, whose job
/// and attempt come from the changed rows, are written by the hot path
/// (`hot::write_events`) with the engine's writes.
pub(super) async fn write_schedule_events(
    conn: &mut SqliteConnection,
    pending: Vec<PendingEvent>,
) -> Result<Vec<EventRecord>> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    debug_assert!(
        pending.iter().all(|p| !p.lookup),
        "run events go through hot::write_events"
    );
    let last: i64 =
        sqlx::query_scalar("UPDATE event_counter SET last_seq = last_seq + ? WHERE id = 1 RETURNING last_seq")
            .bind(pending.len() as i64)
            .fetch_one(&mut *conn)
            .await?;
    let first = last - pending.len() as i64 + 1;
    let mut events = Vec::with_capacity(pending.len());
    for (i, p) in pending.into_iter().enumerate() {
        let mut event = p.event;
        event.seq = first + i as i64;
        events.push(event);
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT / 2) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
        q.push_values(chunk, |mut row, e| {
            row.push_bind(e.seq)
                .push_bind(e.kind.as_str())
                .push_bind(&e.job)
                .push_bind(&e.run_id)
                .push_bind(e.from.map(RunState::as_str))
                .push_bind(e.state.map(RunState::as_str))
                .push_bind(i64::from(e.attempt))
                .push_bind(e.at)
                .push_bind(&e.reason)
                .push_bind(e.count as i64);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(events)
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<EventRecord> {
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
