//! Live output: a running attempt's output, streamed to the controller while
//! the job runs (`Output` messages on the agent's existing stream).
//!
//! Three parts, so that the job never waits for the network:
//!
//! * [`LiveOutput`]: what the executor's pipe readers push into. A push only
//!   appends to a bounded buffer under a short lock; when the buffer is full
//!   its oldest bytes are dropped and counted, and a
//!   `[... N bytes skipped ...]` line takes their place — like the stored
//!   tail, the newest output (the end of a job, what explains a failure) is
//!   what survives. The readers never block on it, so a job's stdout and
//!   stderr are drained as fast as it writes them.
//! * the flusher ([`spawn_flusher`]), one task per attempt: every
//!   [`FLUSH_EVERY`], or as soon as [`BATCH_BYTES`] are waiting, it sends what
//!   the buffer holds as one or more `Output` messages — a chatty job costs a
//!   message per batch, not per write. It sends at most [`RATE_BYTES`] per
//!   second per attempt, and only while the session has less than
//!   [`MAX_IN_FLIGHT`] bytes of output queued and not yet taken by the
//!   transport; otherwise the bytes stay (coalesced) in the buffer.
//! * [`OutputLink`]: the session's side — its sender and the count of output
//!   bytes in flight, decremented as the gRPC stream takes each message. While
//!   the agent is disconnected there is no link and output coalesces.
//!
//! When the attempt ends, [`LiveOutput::close`] makes the flusher send what is
//! left (beyond the limits, which bound it anyway) and stop; the attempt's
//! `Finished` is sent after that, on the same stream, so the controller has
//! every chunk before the result.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use worker_proto::v1::{AgentMessage, Output, agent_message};

/// How often waiting output is sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Waiting output of this many bytes is sent at once, and no `Output` carries
/// more (except the last, with a skip marker).
pub const BATCH_BYTES: usize = 16 * 1024;
/// Most bytes waiting per attempt; beyond, bytes are skipped.
pub const PENDING_BYTES: usize = 64 * 1024;
/// Most bytes per second an attempt streams (the burst is [`PENDING_BYTES`]).
pub const RATE_BYTES: usize = 1024 * 1024;
/// Most output bytes queued on a session and not yet taken by the transport.
pub const MAX_IN_FLIGHT: usize = 256 * 1024;

/// The text that stands for `n` bytes the controller will not get.
pub fn skip_marker(n: u64) -> String {
    format!("[... {n} bytes skipped ...]\n")
}

#[derive(Debug, Default)]
struct Pending {
    /// The newest bytes not sent yet.
    data: VecDeque<u8>,
    /// Bytes dropped from the front of `data` since the last send.
    skipped: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// The live-output buffer of one attempt (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct LiveOutput(Arc<Shared>);

impl LiveOutput {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends output; never waits. The buffer keeps the newest
    /// [`PENDING_BYTES`]; older bytes that were not sent in time are dropped
    /// and counted, and a marker takes their place.
    pub fn push(&self, bytes: &[u8]) {
        let mut p = self.lock();
        let keep = &bytes[bytes.len().saturating_sub(PENDING_BYTES)..];
        let overflow = (p.data.len() + keep.len()).saturating_sub(PENDING_BYTES);
        p.data.drain(..overflow);
        p.skipped += (overflow + bytes.len() - keep.len()) as u64;
        p.data.extend(keep);
        let full = p.data.len() >= BATCH_BYTES;
        drop(p);
        if full {
            self.0.wake.notify_one();
        }
    }

    /// No more output: the flusher sends what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.0.wake.notify_one();
    }

    /// Takes up to `max` bytes to send, after the skip marker if bytes were
    /// dropped (the marker comes even when `max` is smaller); `None` when
    /// nothing waits.
    fn take(&self, max: usize) -> Option<Vec<u8>> {
        let mut p = self.lock();
        let mut out = Vec::new();
        if p.skipped > 0 {
            out.extend_from_slice(skip_marker(p.skipped).as_bytes());
            p.skipped = 0;
        }
        let n = p.data.len().min(max.saturating_sub(out.len()).max(1));
        out.extend(p.data.drain(..n));
        (!out.is_empty()).then_some(out)
    }

    fn waiting(&self) -> (usize, bool) {
        let p = self.lock();
        (p.data.len() + usize::from(p.skipped > 0), p.closed)
    }
}

/// A session's outgoing stream, as the flushers use it.
#[derive(Debug, Clone)]
pub struct OutputLink {
    tx: mpsc::UnboundedSender<AgentMessage>,
    in_flight: Arc<AtomicUsize>,
}

impl OutputLink {
    /// A link over `tx`; `in_flight` is decremented by whoever takes the
    /// messages off the channel ([`OutputLink::taken`]).
    pub fn new(tx: mpsc::UnboundedSender<AgentMessage>, in_flight: Arc<AtomicUsize>) -> Self {
        Self { tx, in_flight }
    }

    /// Accounts for a message leaving the channel (call for every message).
    pub fn taken(in_flight: &AtomicUsize, message: &AgentMessage) {
        if let Some(agent_message::Msg::Output(output)) = &message.msg {
            in_flight.fetch_sub(output.data.len(), Ordering::AcqRel);
        }
    }

    fn room(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Acquire))
    }

    fn send(&self, output: Output) {
        self.in_flight.fetch_add(output.data.len(), Ordering::AcqRel);
        if self
            .tx
            .send(AgentMessage {
                msg: Some(agent_message::Msg::Output(output)),
            })
            .is_err()
        {
            // The session is gone; its counter with it.
        }
    }
}

/// The current session's link, shared by the flushers (`None` while disconnected).
pub type SharedLink = Arc<Mutex<Option<OutputLink>>>;

/// Starts the flusher of attempt (`run_id`, `attempt`); it ends after
/// [`LiveOutput::close`], once the rest is sent.
pub fn spawn_flusher(live: LiveOutput, link: SharedLink, run_id: String, attempt: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut flusher = Flusher {
            run_id,
            attempt,
            seq: 0,
            tokens: PENDING_BYTES,
            refilled: Instant::now(),
        };
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = live.0.wake.notified() => {}
                _ = tick.tick() => {}
            }
            let (waiting, closed) = live.waiting();
            if waiting > 0 {
                let current = link.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(current) = current {
                    flusher.flush(&live, &current, closed);
                }
            }
            if closed {
                return;
            }
        }
    })
}

struct Flusher {
    run_id: String,
    attempt: u32,
    seq: u64,
    /// Bytes that may be sent now (refilled at [`RATE_BYTES`] per second).
    tokens: usize,
    refilled: Instant,
}

impl Flusher {
    /// Sends what the limits allow (everything when `last`).
    fn flush(&mut self, live: &LiveOutput, link: &OutputLink, last: bool) {
        let now = Instant::now();
        let earned = (now.duration_since(self.refilled).as_secs_f64() * RATE_BYTES as f64) as usize;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(PENDING_BYTES);
            self.refilled = now;
        }
        loop {
            let allowed = if last {
                BATCH_BYTES
            } else {
                self.tokens.min(link.room()).min(BATCH_BYTES)
            };
            if allowed == 0 {
                return;
            }
            let Some(data) = live.take(allowed) else { return };
            self.tokens = self.tokens.saturating_sub(data.len());
            self.seq += 1;
            link.send(Output {
                run_id: self.run_id.clone(),
                attempt: self.attempt,
                seq: self.seq,
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> (SharedLink, mpsc::UnboundedReceiver<AgentMessage>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let link = OutputLink::new(tx, in_flight.clone());
        (Arc::new(Mutex::new(Some(link))), rx, in_flight)
    }

    fn data(message: AgentMessage) -> (u64, Vec<u8>) {
        match message.msg {
            Some(agent_message::Msg::Output(o)) => (o.seq, o.data),
            other => panic!("not an Output: {other:?}"),
        }
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_bytes_and_marks_the_gap() {
        let live = LiveOutput::new();
        live.push(b"sent\n");
        assert_eq!(live.take(usize::MAX).unwrap(), b"sent\n");
        live.push(&vec![b'a'; PENDING_BYTES - 10]);
        live.push(b"0123456789XYZ");
        let marker = skip_marker(3);
        let next = live.take(marker.len() + 3).unwrap();
        assert_eq!(next, format!("{marker}aaa").into_bytes());
        let rest = live.take(usize::MAX).unwrap();
        assert!(rest.ends_with(b"aaa0123456789XYZ"));
        assert_eq!(rest.len(), PENDING_BYTES - 3);
        assert!(live.take(usize::MAX).is_none());
    }

    #[test]
    fn a_single_huge_write_keeps_its_end() {
        let live = LiveOutput::new();
        live.push(b"old");
        let mut big = vec![b'x'; 2 * PENDING_BYTES];
        big.extend_from_slice(b"END");
        live.push(&big);
        let all = live.take(usize::MAX).unwrap();
        let marker = skip_marker(3 + PENDING_BYTES as u64 + 3);
        assert!(all.starts_with(marker.as_bytes()));
        assert!(all.ends_with(b"END"));
        assert_eq!(all.len(), marker.len() + PENDING_BYTES);
    }

    #[tokio::test]
    async fn small_writes_are_batched_and_closing_sends_the_rest() {
        let (shared, mut rx, in_flight) = link();
        let live = LiveOutput::new();
        let flusher = spawn_flusher(live.clone(), shared, "r".into(), 2);
        for i in 0..100 {
            live.push(format!("{i}\n").as_bytes());
        }
        live.close();
        flusher.await.unwrap();
        let mut text = Vec::new();
        let mut messages = 0;
        while let Ok(message) = rx.try_recv() {
            OutputLink::taken(&in_flight, &message);
            let (seq, data) = data(message);
            messages += 1;
            assert_eq!(seq, messages);
            text.extend(data);
        }
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(text).unwrap(), expected);
        assert!(messages <= 2, "{messages} messages for 100 small writes");
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn nothing_is_sent_past_the_in_flight_limit() {
        let (shared, mut rx, in_flight) = link();
        in_flight.store(MAX_IN_FLIGHT, Ordering::Release);
        let live = LiveOutput::new();
        let flusher = spawn_flusher(live.clone(), shared, "r".into(), 1);
        live.push(&[b'x'; BATCH_BYTES]);
        tokio::time::sleep(FLUSH_EVERY * 3).await;
        assert!(rx.try_recv().is_err(), "sent while the transport was full");
        in_flight.store(0, Ordering::Release);
        let message = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(data(message).1.len(), BATCH_BYTES);
        live.close();
        flusher.await.unwrap();
    }

    #[tokio::test]
    async fn without_a_session_output_waits_for_one() {
        let shared: SharedLink = Arc::new(Mutex::new(None));
        let live = LiveOutput::new();
        let flusher = spawn_flusher(live.clone(), shared.clone(), "r".into(), 1);
        live.push(b"early\n");
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        *shared.lock().unwrap() = Some(OutputLink::new(tx, Arc::new(AtomicUsize::new(0))));
        let message = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(data(message), (1, b"early\n".to_vec()));
        live.close();
        flusher.await.unwrap();
    }
}
