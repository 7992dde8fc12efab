//! One follower of a run's output (`FollowRunOutput`).
//!
//! The follower walks the run's attempts in order. A finished attempt is shown
//! from the store (its tail, as `runs get` shows it); the running attempt from
//! the hub's buffer, then live; each attempt between an `attempt_start` and an
//! `attempt_end`. When the run is terminal, `end` carries its state and the
//! last attempt's exit code and error, and the stream ends. Between attempts
//! (a retry waiting for its backoff, a queued run waiting for an agent) the
//! follower sleeps until the engine announces a change of the run.
//!
//! Events go to the client through a small channel; the follower's own task
//! waits when the client is slow, which costs nobody else anything: it picks
//! up from the hub at its own offset, and what the buffer no longer holds is
//! reported as skipped bytes.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use worker_proto::v1 as pb;
use worker_proto::v1::output_event::Event;

use super::{AttemptKey, LiveOutput};
use crate::engine::RunView;
use crate::model::RunState;
use crate::store::AttemptRecord;

/// Most bytes in one `OutputChunk`.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Events queued for a client before the follower waits for it.
pub const QUEUE: usize = 16;
/// Longest sleep without looking at the run again (covers a missed event).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

type Tx = mpsc::Sender<Result<pb::OutputEvent, Status>>;

/// The client went away: stop.
struct Gone;

async fn send(tx: &Tx, event: Event) -> Result<(), Gone> {
    tx.send(Ok(pb::OutputEvent { event: Some(event) }))
        .await
        .map_err(|_| Gone)
}

/// Follows `run_id` until it is terminal, sending events to `tx`. Ends early
/// when `tx` closes; a run that does not exist (or a store error) ends the
/// stream with that status.
pub async fn follow(hub: &LiveOutput, run_id: &str, tx: &Tx) {
    let mut events = hub.engine().subscribe();
    if let Err(Gone) = walk(hub, run_id, tx, &mut events).await {
        tracing::debug!(%run_id, "output follower gone");
    }
}

async fn walk(
    hub: &LiveOutput,
    run_id: &str,
    tx: &Tx,
    events: &mut broadcast::Receiver<pb::RunEvent>,
) -> Result<(), Gone> {
    // Attempts whose end was sent; the attempt streamed live (its record
    // gives only the end then, not the stored tail again).
    let mut shown = 0u32;
    let mut streamed = 0u32;
    loop {
        let view = match hub.engine().run_view(run_id).await {
            Ok(view) => view,
            Err(error) => {
                let _ = tx.send(Err(error.into())).await;
                return Ok(());
            }
        };
        let mut attempts: Vec<&AttemptRecord> = view.attempts.iter().filter(|a| a.attempt > shown).collect();
        attempts.sort_by_key(|a| a.attempt);
        for attempt in attempts.into_iter().take_while(|a| a.outcome.is_some()) {
            if attempt.attempt != streamed {
                send_stored(tx, attempt).await?;
            }
            send(tx, Event::AttemptEnd(attempt_end(attempt))).await?;
            shown = attempt.attempt;
        }
        if view.run.state.is_terminal() {
            return send(tx, Event::End(run_end(&view))).await;
        }
        let current = view.run.attempt;
        if view.run.state == RunState::Running && current > shown && current != streamed {
            let agent = view
                .attempts
                .iter()
                .find(|a| a.attempt == current)
                .map(|a| a.agent_name.clone())
                .unwrap_or_default();
            send(
                tx,
                Event::AttemptStart(pb::OutputAttemptStart {
                    attempt: current,
                    agent,
                    live: true,
                }),
            )
            .await?;
            stream_live(hub, (run_id.to_string(), current), tx, events).await?;
            streamed = current;
            continue;
        }
        tokio::select! {
            () = next_event_of(events, run_id) => {}
            () = tokio::time::sleep(LOOK_AGAIN) => {}
            () = tx.closed() => return Err(Gone),
        }
    }
}

/// Sends the buffered and then the live bytes of the running attempt `key`
/// until the attempt ends (the agent reported it, or the engine moved the run on).
async fn stream_live(
    hub: &LiveOutput,
    key: AttemptKey,
    tx: &Tx,
    events: &mut broadcast::Receiver<pb::RunEvent>,
) -> Result<(), Gone> {
    let mut progress = hub.subscribe(&key);
    let mut offset = 0u64;
    let mut run_moved = false;
    loop {
        // Everything held after our offset, in pieces of at most CHUNK_BYTES.
        loop {
            let Some(read) = hub.read_from(&key, offset, CHUNK_BYTES) else {
                return Ok(());
            };
            if !read.data.is_empty() || read.skipped > 0 {
                offset = read.progress.end;
                send(
                    tx,
                    Event::Chunk(pb::OutputChunk {
                        attempt: key.1,
                        data: read.data,
                        skipped: read.skipped,
                    }),
                )
                .await?;
                continue;
            }
            if read.progress.ended || run_moved {
                return Ok(());
            }
            break;
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { return Ok(()) },
            event = next_event(events) => match event {
                // The run left this attempt (a lost agent, a cancel): take what
                // arrived until now, then go on.
                Some(e) if e.run_id == key.0 && (e.state != "running" || e.attempt != key.1) => run_moved = true,
                Some(_) => {}
                None => run_moved = hub.engine().attempt_holder(&key.0).await.is_none_or(|(_, n)| n != key.1),
            },
            () = tx.closed() => return Err(Gone),
        }
    }
}

/// The next event (`None` after a lag: some were missed, look again).
async fn next_event(events: &mut broadcast::Receiver<pb::RunEvent>) -> Option<pb::RunEvent> {
    match events.recv().await {
        Ok(event) => Some(event),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Resolves at the next event of `run_id` (or a lag).
async fn next_event_of(events: &mut broadcast::Receiver<pb::RunEvent>, run_id: &str) {
    loop {
        match next_event(events).await {
            Some(event) if event.run_id != run_id => continue,
            _ => return,
        }
    }
}

/// A finished attempt: its start and the stored tail.
async fn send_stored(tx: &Tx, attempt: &AttemptRecord) -> Result<(), Gone> {
    send(
        tx,
        Event::AttemptStart(pb::OutputAttemptStart {
            attempt: attempt.attempt,
            agent: attempt.agent_name.clone(),
            live: false,
        }),
    )
    .await?;
    let output = attempt.output.as_deref().unwrap_or_default().as_bytes();
    for piece in output.chunks(CHUNK_BYTES) {
        send(
            tx,
            Event::Chunk(pb::OutputChunk {
                attempt: attempt.attempt,
                data: piece.to_vec(),
                skipped: 0,
            }),
        )
        .await?;
    }
    Ok(())
}

fn attempt_end(attempt: &AttemptRecord) -> pb::OutputAttemptEnd {
    pb::OutputAttemptEnd {
        attempt: attempt.attempt,
        outcome: attempt.outcome.map(|o| o.as_str().to_string()).unwrap_or_default(),
        exit_code: attempt.exit_code,
        error: attempt.error.clone().unwrap_or_default(),
    }
}

fn run_end(view: &RunView) -> pb::OutputEnd {
    let last = view.attempts.iter().max_by_key(|a| a.attempt);
    pb::OutputEnd {
        state: view.run.state.as_str().to_string(),
        reason: view.run.reason.clone().unwrap_or_default(),
        attempt: last.map_or(0, |a| a.attempt),
        exit_code: last.and_then(|a| a.exit_code),
        error: last.and_then(|a| a.error.clone()).unwrap_or_default(),
    }
}
