//! Open-loop arrivals on a fixed clock (shared by `rate` and `workload-b`).
//!
//! Arrival `i` is due at `start + i / R`. Each Enqueue (one run per call) is
//! sent on a task of its own (connections round-robin), so a slow answer
//! never delays the next arrival; latencies are measured from the *intended*
//! instant, not from the moment the request actually left, so a stalled
//! sender or controller shows up in the percentiles (no coordinated
//! omission). What happens to each run afterwards is read from a WatchEvents
//! stream opened before the first arrival: the commit times of its
//! transitions (`RunEvent.at_unix_micros`) and, on the event that ends its
//! attempt, when the agent's handler started it
//! (`RunEvent.handler_started_unix_micros`). All are compared with this
//! host's clock, which is the same clock when the bench, the controller and
//! the agents run on one machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use worker_proto::v1 as pb;

use hdrhistogram::Histogram;

use super::stats::{histogram, intended_offset, record};
use super::{Target, progress};

/// How long before an arrival the bench stops sleeping on tokio's timer.
const TIMER_MARGIN: Duration = Duration::from_millis(2);

/// Waits until `due`, precisely. tokio's timer has a resolution of one
/// millisecond and rounds up, so sleeping on it alone sent each arrival up to
/// 1 ms late (0.5 ms on average), a delay of the bench's own that the
/// latencies, measured from the intended instant, then charged to the
/// controller. The last stretch is slept on the OS clock (a high-resolution
/// `nanosleep`, tens of microseconds late at most), which blocks this worker
/// thread for at most [`TIMER_MARGIN`]; nothing measured runs on it.
async fn send_at(due: Instant) {
    if let Some(early) = due.checked_sub(TIMER_MARGIN)
        && early > Instant::now()
    {
        tokio::time::sleep_until(early.into()).await;
    }
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// What is known of one run.
#[derive(Debug, Default)]
pub struct Track {
    /// Intended arrival (µs since the Unix epoch, this host's clock).
    pub intended_us: Option<i64>,
    /// Commit of `queued`.
    pub queued_us: Option<i64>,
    /// Commit of `running` (the dispatch).
    pub running_us: Option<i64>,
    /// When the agent's handler started the attempt (agent clock), from the
    /// event that ended it; `None` when that event did not carry it.
    pub handler_us: Option<i64>,
    /// Commit time of the terminal state, and whether it is `succeeded`.
    pub end: Option<(i64, bool)>,
}

impl Track {
    fn is_complete(&self) -> bool {
        self.intended_us.is_some() && self.end.is_some()
    }
}

#[derive(Debug, Default)]
struct State {
    runs: HashMap<String, Track>,
    /// Runs with both their intended time and their end.
    complete: u64,
}

impl State {
    fn update(&mut self, id: &str, done: &watch::Sender<u64>, change: impl FnOnce(&mut Track)) {
        let track = self.runs.entry(id.to_string()).or_default();
        let was = track.is_complete();
        change(track);
        if !was && track.is_complete() {
            self.complete += 1;
            done.send_replace(self.complete);
        }
    }

    fn event(&mut self, e: pb::RunEvent, done: &watch::Sender<u64>) {
        let at = e.at_unix_micros;
        self.update(&e.run_id, done, |track| {
            if e.from_state == "running" && e.handler_started_unix_micros > 0 {
                track.handler_us.get_or_insert(e.handler_started_unix_micros);
            }
            match e.state.as_str() {
                "queued" => {
                    track.queued_us.get_or_insert(at);
                }
                "running" => {
                    track.running_us.get_or_insert(at);
                }
                "succeeded" | "dead" | "cancelled" => {
                    track.end.get_or_insert((at, e.state == "succeeded"));
                }
                _ => {}
            }
        });
    }
}

/// The arrivals to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job of every run.
    pub job: String,
    /// Number of arrivals.
    pub total: u64,
    /// Arrivals per second.
    pub rate: f64,
    /// Connections the Enqueue calls are spread over.
    pub concurrency: u64,
    /// How long to wait for results after the last arrival.
    pub grace: Duration,
}

/// What the arrivals gave.
#[derive(Debug)]
pub struct Outcome {
    /// Enqueue calls answered with a run.
    pub sent: u64,
    /// Enqueue calls that failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// From the first intended arrival to the last send (at least the
    /// nominal `total / rate`).
    pub arrival_window: Duration,
    /// Why the event stream ended early, if it did.
    pub stream_error: Option<String>,
    /// Every run the bench enqueued (and any other run of the job seen).
    pub runs: HashMap<String, Track>,
}

/// What every open-loop scenario counts of the runs it sent (those whose
/// intended arrival is known).
pub struct Tally {
    /// Runs that ended `succeeded`.
    pub succeeded: u64,
    /// Runs that ended otherwise.
    pub failed: u64,
    /// Runs enqueued whose end was not seen.
    pub incomplete: u64,
    /// Intended arrival → `queued` committed (µs).
    pub enqueue_to_commit: Histogram<u64>,
    /// Intended arrival → `running` committed, the dispatch (µs).
    pub enqueue_to_start: Histogram<u64>,
}

impl Outcome {
    /// The runs' ends and the two commit latencies every scenario reports.
    pub fn tally(&self) -> Tally {
        let (mut enqueue_to_commit, mut enqueue_to_start) = (histogram(), histogram());
        let (mut succeeded, mut failed) = (0, 0);
        for t in self.runs.values() {
            let Some(intended) = t.intended_us else { continue };
            if let Some(q) = t.queued_us {
                record(&mut enqueue_to_commit, q - intended);
            }
            if let Some(r) = t.running_us {
                record(&mut enqueue_to_start, r - intended);
            }
            match t.end {
                Some((_, true)) => succeeded += 1,
                Some((_, false)) => failed += 1,
                None => {}
            }
        }
        Tally {
            succeeded,
            failed,
            incomplete: self.sent - succeeded - failed,
            enqueue_to_commit,
            enqueue_to_start,
        }
    }

    /// The problems every scenario reports: an event stream that ended, failed
    /// Enqueue calls (of `arrivals`), runs without a result within `grace_ms`
    /// of the last arrival (the sentence ends with `hint`), failed runs.
    pub fn problems(&self, tally: &Tally, arrivals: u64, grace_ms: u64, hint: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(e) = &self.stream_error {
            problems.push(e.clone());
        }
        if self.errors > 0 {
            let first = self.first_error.clone().unwrap_or_default();
            problems.push(format!(
                "{} of {arrivals} Enqueue calls failed (first: {first})",
                self.errors
            ));
        }
        if tally.incomplete > 0 {
            problems.push(format!(
                "{} runs had no result within {} of the last arrival{hint}",
                tally.incomplete,
                crate::output::fmt_ms(grace_ms)
            ));
        }
        if tally.failed > 0 {
            problems.push(format!("{} runs ended without succeeding", tally.failed));
        }
        problems
    }
}

/// Opens the event stream, sends `plan.total` arrivals on the fixed clock and
/// waits (up to the grace period after the last one) for every run's end.
pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Outcome> {
    // Subscribe before the first arrival.
    let mut watch_client = target.client()?;
    let mut events = watch_client
        .watch_events(pb::WatchEventsRequest {
            job: plan.job.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let state = Arc::new(Mutex::new(State::default()));
    let (done_tx, mut done_rx) = watch::channel(0u64);
    let done_tx = Arc::new(done_tx);
    let mut reader = tokio::spawn({
        let state = state.clone();
        let done_tx = done_tx.clone();
        async move {
            loop {
                match events.message().await {
                    Ok(Some(e)) => state.lock().unwrap().event(e, &done_tx),
                    Ok(None) => {
                        return "the controller closed the event stream (it drops a subscriber that falls behind: \
                                events were lost; try a lower --rate)"
                            .to_string();
                    }
                    Err(s) => return format!("the event stream failed: {}", s.message()),
                }
            }
        }
    });

    let clients = target.clients(plan.concurrency)?;
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut sends = tokio::task::JoinSet::new();
    progress(format!("{} arrivals of {} at {}/s", plan.total, plan.job, plan.rate));
    let start = Instant::now();
    let start_us = chrono::Utc::now().timestamp_micros();
    for i in 0..plan.total {
        let offset = intended_offset(i, plan.rate);
        send_at(start + offset).await;
        let intended_us = start_us + offset.as_micros() as i64;
        let mut client = clients[(i % clients.len() as u64) as usize].clone();
        let (state, done_tx, errors, sent, first_error) = (
            state.clone(),
            done_tx.clone(),
            errors.clone(),
            sent.clone(),
            first_error.clone(),
        );
        let request = pb::EnqueueRequest {
            job: plan.job.clone(),
            trigger: "api".into(),
            ..Default::default()
        };
        sends.spawn(async move {
            match client.enqueue(request).await {
                Ok(r) => match r.into_inner().run {
                    Some(run) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        state
                            .lock()
                            .unwrap()
                            .update(&run.id, &done_tx, |t| t.intended_us = Some(intended_us));
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(s) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| s.message().to_string());
                }
            }
        });
        // Reap finished sends now and then so the set stays small.
        while sends.try_join_next().is_some() {}
    }
    let nominal = Duration::from_secs_f64(plan.total as f64 / plan.rate);
    let arrival_window = start.elapsed().max(nominal);
    let deadline = tokio::time::Instant::now() + plan.grace;
    progress("arrivals done; waiting for outstanding results");

    // Answers of the last sends, then results, both within the grace period.
    let mut stream_error = None;
    let wait = async {
        while sends.join_next().await.is_some() {}
        let expected = sent.load(Ordering::Relaxed);
        let _ = done_rx.wait_for(|c| *c >= expected).await;
    };
    tokio::select! {
        _ = tokio::time::timeout_at(deadline, wait) => {}
        e = &mut reader => stream_error = Some(e.unwrap_or_else(|e| e.to_string())),
    }
    reader.abort();
    sends.abort_all();
    let runs = std::mem::take(&mut state.lock().unwrap().runs);
    let first_error = first_error.lock().unwrap().clone();
    Ok(Outcome {
        sent: sent.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        arrival_window,
        stream_error,
        runs,
    })
}
