//! Live output of running attempts: what agents stream while a job runs, held
//! for the clients that follow it (`FollowRunOutput`).
//!
//! Layout:
//!
//! * this module: [`LiveOutput`], the hub — one bounded buffer per attempt,
//!   fed only by the agent that holds the attempt, read by followers;
//! * [`follow`]: one follower's stream — stored tails of finished attempts,
//!   the buffer and then live chunks of the running one, attempt boundaries,
//!   and the run's end.
//!
//! Why a buffer and a `watch` instead of a channel per follower: the agent's
//! stream task appends a chunk under a short lock and bumps a
//! [`tokio::sync::watch`] (one slot, overwritten), so neither the engine nor
//! the agent ever waits for a follower, however many there are or however slow.
//! A follower reads the bytes after its own offset; when it has fallen further
//! behind than the buffer holds, it is told how many bytes it skipped and goes
//! on from the oldest byte still held (docs/decisions.md, "Live output").
//!
//! Memory: at most the `output_bytes` limit per attempt that runs (or ended
//! less than [`GRACE`] ago, so that its followers see the end). Buffers exist
//! only for attempts the engine says are running; [`LiveOutput::sweep_loop`]
//! ends buffers whose attempt is no longer current (a lost agent sends no
//! `Finished`) and frees ended ones after the grace.
//!
//! The stored tail at an attempt's end is unchanged: it still comes with the
//! agent's `Finished`, so live streaming can lose chunks without losing the
//! record.

pub mod follow;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use worker_proto::v1::Output;

use crate::engine::Engine;

/// How long an ended attempt's buffer is kept for the followers still reading it.
pub const GRACE: Duration = Duration::from_secs(5);
/// How often the sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A buffer that received nothing this long has its attempt checked against
/// the engine (was it lost, cancelled, reassigned?).
const CHECK_IDLE: Duration = Duration::from_secs(5);

/// (run id, attempt).
pub type AttemptKey = (String, u32);

/// How far an attempt's output has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Offset just past the last byte received (bytes since the attempt began).
    pub end: u64,
    /// No more bytes will come.
    pub ended: bool,
}

/// Bytes a follower reads (see [`LiveOutput::read_from`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read {
    /// Bytes between the asked offset and the oldest byte still held.
    pub skipped: u64,
    /// The bytes held after the asked offset.
    pub data: Vec<u8>,
    /// The buffer's state when read: `end` is the follower's next offset.
    pub progress: Progress,
}

/// What happened to a chunk an agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Appended to its attempt's buffer.
    Appended,
    /// A repeat of a chunk already appended (its `seq` is not new).
    Duplicate,
    /// Not the sender's attempt (or the attempt is over): ignored and counted.
    Ignored,
}

/// One attempt's buffer.
struct Entry {
    /// The agent holding the attempt, once verified with the engine (`None`
    /// for a buffer a follower opened before the first chunk).
    owner: Option<String>,
    /// The last `cap` bytes received.
    ring: VecDeque<u8>,
    /// Offset of `ring[0]`.
    start: u64,
    /// Highest `seq` appended.
    last_seq: u64,
    /// When it ended, once it has.
    ended_at: Option<Instant>,
    /// Last chunk (or creation).
    touched: Instant,
    /// Tells followers about new bytes and the end.
    progress: watch::Sender<Progress>,
}

impl Entry {
    fn new(owner: Option<String>) -> Entry {
        Entry {
            owner,
            ring: VecDeque::new(),
            start: 0,
            last_seq: 0,
            ended_at: None,
            touched: Instant::now(),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    fn end(&self) -> u64 {
        self.start + self.ring.len() as u64
    }

    /// Appends `data`, keeping the last `cap` bytes.
    fn append(&mut self, data: &[u8], cap: usize) {
        let end = self.end() + data.len() as u64;
        let keep = &data[data.len().saturating_sub(cap)..];
        let overflow = (self.ring.len() + keep.len()).saturating_sub(cap);
        self.ring.drain(..overflow);
        self.ring.extend(keep);
        self.start = end - self.ring.len() as u64;
        self.touched = Instant::now();
        self.progress.send_replace(Progress { end, ended: false });
    }

    /// The bytes from `offset` on (at most `max`), and how many before them
    /// the ring no longer holds.
    fn read(&self, offset: u64, max: usize) -> Read {
        let from = offset.clamp(self.start, self.end());
        let skip = (from - self.start) as usize;
        let take = self.ring.len().saturating_sub(skip).min(max);
        let data: Vec<u8> = self.ring.range(skip..skip + take).copied().collect();
        let end = from + take as u64;
        Read {
            skipped: from.saturating_sub(offset),
            data,
            progress: Progress {
                end,
                ended: self.ended_at.is_some() && end == self.end(),
            },
        }
    }

    fn finish(&mut self) {
        if self.ended_at.is_none() {
            self.ended_at = Some(Instant::now());
            let end = self.end();
            self.progress.send_replace(Progress { end, ended: true });
        }
    }
}

/// The live output of every running attempt (see the module docs).
pub struct LiveOutput {
    engine: Arc<Engine>,
    attempts: std::sync::Mutex<HashMap<AttemptKey, Entry>>,
    ignored: AtomicU64,
}

impl LiveOutput {
    /// An empty hub that checks attempt ownership with `engine`.
    pub fn new(engine: Arc<Engine>) -> Arc<LiveOutput> {
        Arc::new(LiveOutput {
            engine,
            attempts: Default::default(),
            ignored: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptKey, Entry>> {
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine the hub checks ownership with.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Takes a chunk `agent_id` sent. Appended only when the engine has the
    /// attempt running on that agent (checked once per attempt, then
    /// remembered); anything else is ignored and counted.
    pub async fn accept(&self, agent_id: &str, output: Output) -> Accepted {
        let key = (output.run_id, output.attempt);
        let cap = crate::limits::current().output_bytes;
        {
            let mut attempts = self.lock();
            match attempts.get_mut(&key) {
                Some(entry) if entry.owner.as_deref() == Some(agent_id) && entry.ended_at.is_none() => {
                    return append(entry, output.seq, &output.data, cap);
                }
                Some(entry) if entry.owner.is_some() || entry.ended_at.is_some() => return self.ignore(agent_id, &key),
                _ => {}
            }
        }
        // First chunk of the attempt (or one a follower waits for): is it
        // really this agent's?
        let holder = self.engine.attempt_holder(&key.0).await;
        if holder.as_ref().map(|(a, n)| (a.as_str(), *n)) != Some((agent_id, key.1)) {
            return self.ignore(agent_id, &key);
        }
        let mut attempts = self.lock();
        let entry = attempts.entry(key.clone()).or_insert_with(|| Entry::new(None));
        match &entry.owner {
            None if entry.ended_at.is_none() => entry.owner = Some(agent_id.to_string()),
            Some(owner) if owner == agent_id && entry.ended_at.is_none() => {}
            _ => {
                drop(attempts);
                return self.ignore(agent_id, &key);
            }
        }
        append(entry, output.seq, &output.data, cap)
    }

    fn ignore(&self, agent_id: &str, key: &AttemptKey) -> Accepted {
        let total = self.ignored.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(agent = %agent_id, run_id = %key.0, attempt = key.1, total, "output chunk for an attempt not held by its sender ignored");
        Accepted::Ignored
    }

    /// `agent_id` reported the attempt finished: every chunk of it came
    /// before, so its buffer is complete.
    pub fn finished(&self, agent_id: &str, run_id: &str, attempt: u32) {
        let key = (run_id.to_string(), attempt);
        if let Some(entry) = self.lock().get_mut(&key)
            && entry.owner.as_deref() == Some(agent_id)
        {
            entry.finish();
        }
    }

    /// Tells followers of `key` about new bytes and its end; opens an empty
    /// buffer when the attempt has sent nothing yet. Call only for an attempt
    /// the engine has running (the sweep ends the buffer otherwise).
    pub fn subscribe(&self, key: &AttemptKey) -> watch::Receiver<Progress> {
        self.lock()
            .entry(key.clone())
            .or_insert_with(|| Entry::new(None))
            .progress
            .subscribe()
    }

    /// The bytes of `key` from `offset` on, at most `max` of them (`None`
    /// when its buffer is gone).
    pub fn read_from(&self, key: &AttemptKey, offset: u64, max: usize) -> Option<Read> {
        self.lock().get(key).map(|entry| entry.read(offset, max))
    }

    /// Bytes held now, over all attempts.
    pub fn buffered_bytes(&self) -> u64 {
        self.lock().values().map(|e| e.ring.len() as u64).sum()
    }

    /// Chunks ignored since start (see [`Accepted::Ignored`]).
    pub fn ignored_chunks(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// Frees ended buffers after [`GRACE`] and ends those whose attempt the
    /// engine no longer has running; until `shutdown`.
    pub async fn sweep_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            self.sweep().await;
        }
    }

    /// One pass of [`LiveOutput::sweep_loop`].
    pub async fn sweep(&self) {
        let now = Instant::now();
        let idle: Vec<AttemptKey> = {
            let mut attempts = self.lock();
            attempts.retain(|_, e| e.ended_at.is_none_or(|at| now.duration_since(at) < GRACE));
            attempts
                .iter()
                .filter(|(_, e)| e.ended_at.is_none() && now.duration_since(e.touched) >= CHECK_IDLE)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in idle {
            let holder = self.engine.attempt_holder(&key.0).await;
            let mut attempts = self.lock();
            let Some(entry) = attempts.get_mut(&key) else { continue };
            let current = holder.is_some_and(|(agent, attempt)| {
                attempt == key.1 && entry.owner.as_deref().is_none_or(|owner| owner == agent)
            });
            if current {
                entry.touched = now;
            } else {
                entry.finish();
            }
        }
    }
}

/// Appends a chunk unless its `seq` was seen (an agent re-sending after a
/// reconnect never does, but a stream must not be able to rewind the buffer).
fn append(entry: &mut Entry, seq: u64, data: &[u8], cap: usize) -> Accepted {
    if seq != 0 && seq <= entry.last_seq {
        return Accepted::Duplicate;
    }
    entry.last_seq = seq;
    entry.append(data, cap);
    Accepted::Appended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_bytes_and_counts_offsets() {
        let mut entry = Entry::new(Some("a".into()));
        entry.append(b"hello ", 8);
        entry.append(b"world", 8);
        assert_eq!(entry.end(), 11);
        assert_eq!(entry.start, 3);
        assert_eq!(entry.ring.iter().copied().collect::<Vec<u8>>(), b"lo world");
        entry.append(b"0123456789", 8);
        assert_eq!((entry.start, entry.end()), (13, 21));
        assert_eq!(entry.ring.iter().copied().collect::<Vec<u8>>(), b"23456789");
        assert_eq!(*entry.progress.borrow(), Progress { end: 21, ended: false });
        entry.finish();
        assert!(entry.progress.borrow().ended);
    }

    #[test]
    fn a_follower_behind_the_ring_is_told_what_it_skipped() {
        let mut entry = Entry::new(Some("a".into()));
        entry.append(b"0123456789", 4);
        // Behind: offset 2, the ring holds 6..10.
        let read = entry.read(2, 100);
        assert_eq!(
            (read.skipped, read.data.as_slice(), read.progress.end),
            (4, &b"6789"[..], 10)
        );
        // In step, in pieces of at most `max`.
        entry.append(b"abc", 4);
        let read = entry.read(10, 2);
        assert_eq!(
            (read.skipped, read.data.as_slice(), read.progress.end),
            (0, &b"ab"[..], 12)
        );
        assert!(!read.progress.ended);
        entry.finish();
        let read = entry.read(12, 2);
        assert_eq!(read.data, b"c");
        assert!(read.progress.ended, "the last byte read and the attempt over");
        assert!(entry.read(13, 2).data.is_empty());
        assert!(entry.read(99, 2).data.is_empty(), "past the end: nothing, no panic");
    }

    #[test]
    fn repeated_seqs_are_not_appended() {
        let mut entry = Entry::new(None);
        assert_eq!(append(&mut entry, 1, b"a", 10), Accepted::Appended);
        assert_eq!(append(&mut entry, 1, b"a", 10), Accepted::Duplicate);
        assert_eq!(append(&mut entry, 2, b"b", 10), Accepted::Appended);
        assert_eq!(entry.end(), 2);
    }
}
