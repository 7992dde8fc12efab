//! `WatchEvents`: resumable, filtered delivery of the stored lifecycle events
//! (`store/events.rs`).
//!
//! One task per watch feeds a small channel that the gRPC stream drains, so a
//! client that does not read makes the task wait, never the engine. The task
//! keeps `seen`, the sequence number up to which every event has been either
//! sent or filtered out, and alternates two phases:
//!
//! * **catch-up**: read the counter's head, then the events in `(seen, head]`
//!   in pages of [`PAGE`] from the store; each page is sent, and `seen`
//!   moves to the last event sent (a full page) or to `head` (a short one).
//! * **live**: the hub's messages (subscribed before the first read, so
//!   nothing committed after it can be missed); an event at or below `seen`
//!   was already delivered from the store and is skipped, the next one
//!   (`seen + 1`) is sent, anything else is a gap (an event the hub did not
//!   carry: a write that failed in doubt yet committed, writers publishing out
//!   of order, events of a run pruned meanwhile) and sends the task back to
//!   catch-up, as does a lag (the client read too slowly for the hub's
//!   buffer). Sequence numbers are gapless at commit, so a gap is always
//!   noticed; the store then has everything up to its head.
//!
//! So every event after the cursor is delivered exactly once, in order, and a
//! slow client falls back to the store instead of being cut off.

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;
use worker_proto::v1 as pb;

use crate::error::Error;
use crate::store::{EventFilter, EventKind, EventRecord, Store};
use crate::time::rfc3339;

/// Events per store read while a watcher catches up.
pub const PAGE: u32 = 1000;

/// Most jobs one watch may filter on.
pub const MAX_JOBS: usize = 1000;

/// Events sent ahead of what the client has read (the rest waits in the
/// store or the hub).
const STREAM_BUFFER: usize = 256;

/// Where a watch starts: after this sequence number, or live from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every event after the number (0: every stored event).
    After(i64),
    /// Only events committed from now on.
    Live,
}

/// Checks a request: the filter and where to start. Errors name the field.
pub fn parse_request(request: &pb::WatchEventsRequest) -> Result<(EventFilter, Start), Error> {
    let mut jobs: Vec<String> = request.jobs.clone();
    if !request.job.is_empty() {
        jobs.push(request.job.clone());
    }
    if jobs.len() > MAX_JOBS {
        return Err(Error::invalid(
            "jobs",
            format!("{} jobs exceed the most one watch may name ({MAX_JOBS})", jobs.len()),
        ));
    }
    let limit = crate::limits::current().job_name_bytes;
    if let Some(long) = jobs.iter().find(|j| j.len() > limit) {
        return Err(Error::invalid(
            "jobs",
            format!(
                "job name \"{}\": {}",
                crate::limits::echo(long),
                crate::limits::exceeds(format!("{} bytes", long.len()), "job_name_bytes", limit)
            ),
        ));
    }
    jobs.sort();
    jobs.dedup();
    let mut kinds = Vec::new();
    for name in &request.types {
        let kind = name
            .parse::<EventKind>()
            .map_err(|e| Error::invalid("types", crate::limits::echo(&e)))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let after = i64::try_from(request.after_seq).map_err(|_| Error::invalid("after_seq", "too large"))?;
    let start = if after > 0 || request.from_start {
        Start::After(after)
    } else {
        Start::Live
    };
    Ok((EventFilter { jobs, kinds }, start))
}

/// The stream of a watch: a task reads the store and the hub and feeds it
/// (see the module docs); it ends when the receiver is dropped.
pub async fn watch(
    store: Store,
    filter: EventFilter,
    start: Start,
) -> Result<mpsc::Receiver<Result<pb::RunEvent, Status>>, Error> {
    // Subscribe first: whatever commits after the head is read below reaches
    // the hub receiver.
    let hub = store.event_hub().subscribe();
    let head = store.event_head().await?;
    let seen = match start {
        Start::Live => head,
        Start::After(after) if after > head => {
            return Err(Error::invalid(
                "after_seq",
                format!("{after} is beyond the last event ({head}): the cursor is not from this store"),
            ));
        }
        Start::After(after) => after,
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            store,
            filter,
            seen,
            tx,
        };
        if let Err(status) = watcher.run(hub).await {
            let _ = watcher.tx.send(Err(status)).await;
        }
    });
    Ok(rx)
}

/// One watch's state.
struct Watcher {
    store: Store,
    filter: EventFilter,
    /// Every event up to here was sent or filtered out.
    seen: i64,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
}

/// Why the watch task stops without an error: the client went away.
struct Gone;

impl Watcher {
    /// Catch-up and live phases until the client goes away (`Ok`) or the
    /// store fails (`Err`, sent as the stream's last item).
    async fn run(
        &mut self,
        mut hub: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::store::Committed>>,
    ) -> Result<(), Status> {
        loop {
            match self.catch_up().await {
                Ok(Ok(())) => {}
                Ok(Err(Gone)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            match self.live(&mut hub).await {
                Ok(()) => {}
                Err(Gone) => return Ok(()),
            }
        }
    }

    /// Sends the stored events after `seen` up to the head read first.
    async fn catch_up(&mut self) -> Result<Result<(), Gone>, Error> {
        loop {
            let head = self.store.event_head().await?;
            if head <= self.seen {
                return Ok(Ok(()));
            }
            let page = self.store.events_after(self.seen, head, &self.filter, PAGE).await?;
            let full = page.len() == PAGE as usize;
            let last = page.last().map(|e| e.seq);
            for event in &page {
                if self.send(event, event.at * 1000, None).await.is_err() {
                    return Ok(Err(Gone));
                }
            }
            self.seen = match (full, last) {
                (true, Some(last)) => last,
                _ => head,
            };
        }
    }

    /// Sends the hub's events while they follow `seen` without a gap;
    /// returns (`Ok`) to catch up from the store after a gap or a lag.
    async fn live(
        &mut self,
        hub: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::store::Committed>>,
    ) -> Result<(), Gone> {
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return Err(Gone),
                message = hub.recv() => message,
            };
            let committed = match message {
                Ok(committed) => committed,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(seen = self.seen, missed, "event watcher lagged; reading the store");
                    return Ok(());
                }
                Err(RecvError::Closed) => return Err(Gone),
            };
            for event in &committed.events {
                if event.seq <= self.seen {
                    continue;
                }
                if event.seq != self.seen + 1 {
                    tracing::debug!(
                        seen = self.seen,
                        next = event.seq,
                        "gap in the live events; reading the store"
                    );
                    return Ok(());
                }
                self.seen = event.seq;
                if self.filter.matches(event) {
                    let handler_started = committed.handler_started_micros(event);
                    self.send(event, committed.committed_micros, handler_started).await?;
                }
            }
        }
    }

    async fn send(&self, event: &EventRecord, at_micros: i64, handler_started: Option<i64>) -> Result<(), Gone> {
        self.tx
            .send(Ok(to_proto(event, at_micros, handler_started)))
            .await
            .map_err(|_| Gone)
    }
}

/// An event as the API shows it; `at_micros` is the commit time for live
/// events and the event's time for stored ones; `handler_started` the agent's
/// start of the attempt a live event ends (never known for stored ones).
pub fn to_proto(event: &EventRecord, at_micros: i64, handler_started: Option<i64>) -> pb::RunEvent {
    pb::RunEvent {
        run_id: event.run_id.clone().unwrap_or_default(),
        job: event.job.clone(),
        state: event.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
        attempt: event.attempt,
        at: rfc3339(event.at),
        reason: event.reason.clone().unwrap_or_default(),
        at_unix_micros: at_micros,
        seq: event.seq as u64,
        r#type: event.kind.as_str().to_string(),
        from_state: event.from.map(|s| s.as_str().to_string()).unwrap_or_default(),
        count: event.count,
        handler_started_unix_micros: handler_started.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let (filter, start) = parse_request(&pb::WatchEventsRequest::default()).unwrap();
        assert_eq!(start, Start::Live);
        assert!(filter.jobs.is_empty() && filter.kinds.is_empty());

        let request = pb::WatchEventsRequest {
            job: "a".into(),
            jobs: vec!["b".into(), "a".into()],
            types: vec!["run".into(), "schedule_paused".into()],
            after_seq: 7,
            from_start: false,
        };
        let (filter, start) = parse_request(&request).unwrap();
        assert_eq!(start, Start::After(7));
        assert_eq!(filter.jobs, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(filter.kinds, vec![EventKind::Run, EventKind::SchedulePaused]);

        let from_start = pb::WatchEventsRequest {
            from_start: true,
            ..Default::default()
        };
        assert_eq!(parse_request(&from_start).unwrap().1, Start::After(0));

        let bad = pb::WatchEventsRequest {
            types: vec!["nope".into()],
            ..Default::default()
        };
        let e = parse_request(&bad).unwrap_err();
        assert!(
            e.message.starts_with("types: unknown event type \"nope\""),
            "{}",
            e.message
        );

        let many = pb::WatchEventsRequest {
            jobs: (0..=MAX_JOBS).map(|i| format!("j{i}")).collect(),
            ..Default::default()
        };
        assert!(
            parse_request(&many)
                .unwrap_err()
                .message
                .starts_with("jobs: 1001 jobs exceed")
        );

        let long = pb::WatchEventsRequest {
            jobs: vec!["x".repeat(10_000)],
            ..Default::default()
        };
        assert!(parse_request(&long).unwrap_err().message.contains("job_name_bytes"));
    }
}
