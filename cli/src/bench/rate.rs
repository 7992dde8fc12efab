//! `bench rate`: open-loop arrivals on a fixed clock, latency percentiles
//! measured from each run's intended arrival time.
//!
//! Arrival `i` is due at `start + i / R`. Each Enqueue is sent on a task of its
//! own (connections round-robin), so a slow answer never delays the next
//! arrival; and latencies are measured from the *intended* instant, not from
//! the moment the request actually left, so a stalled sender or controller
//! shows up in the percentiles (no coordinated omission). Instants on the
//! controller's side are the commit times of the run's transitions
//! (`RunEvent.at_unix_micros`), read from a WatchEvents stream opened before
//! the first arrival; they are compared with this host's clock, which is the
//! same clock when the bench runs on the controller's machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use worker_proto::v1 as pb;

use super::stats::{Latency, arrivals, histogram, intended_offset, latency_table, record};
use super::{
    Printer, RateArgs, Report, Target, apply_jobs, base_config, burn_down::job_text, progress, round, secs, server_info,
};
use crate::output::key_values;

/// What `rate` measured.
#[derive(Debug, Serialize)]
struct Results {
    arrivals: u64,
    sent: u64,
    achieved_rate: f64,
    errors: u64,
    succeeded: u64,
    failed: u64,
    incomplete: u64,
    enqueue_to_commit: Latency,
    enqueue_to_start: Latency,
    start_to_result: Latency,
}

/// What is known of one run.
#[derive(Debug, Default)]
struct Track {
    intended_us: Option<i64>,
    queued_us: Option<i64>,
    running_us: Option<i64>,
    /// Commit time of the terminal state, and whether it is `succeeded`.
    end: Option<(i64, bool)>,
}

#[derive(Debug, Default)]
struct State {
    runs: HashMap<String, Track>,
    /// Runs with both their intended time and their end.
    complete: u64,
}

impl State {
    fn check_complete(&mut self, id: &str, was: bool, done: &watch::Sender<u64>) {
        let track = &self.runs[id];
        if !was && track.intended_us.is_some() && track.end.is_some() {
            self.complete += 1;
            done.send_replace(self.complete);
        }
    }

    fn is_complete(track: &Track) -> bool {
        track.intended_us.is_some() && track.end.is_some()
    }

    fn event(&mut self, e: pb::RunEvent, done: &watch::Sender<u64>) {
        let track = self.runs.entry(e.run_id.clone()).or_default();
        let was = Self::is_complete(track);
        match e.state.as_str() {
            "queued" => {
                track.queued_us.get_or_insert(e.at_unix_micros);
            }
            "running" => {
                track.running_us.get_or_insert(e.at_unix_micros);
            }
            "succeeded" | "dead" | "cancelled" => {
                track.end.get_or_insert((e.at_unix_micros, e.state == "succeeded"));
            }
            _ => {}
        }
        self.check_complete(&e.run_id, was, done);
    }

    fn sent(&mut self, id: String, intended_us: i64, done: &watch::Sender<u64>) {
        let track = self.runs.entry(id.clone()).or_default();
        let was = Self::is_complete(track);
        track.intended_us = Some(intended_us);
        self.check_complete(&id, was, done);
    }
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: RateArgs) -> anyhow::Result<(Report, String)> {
    let job = args.job.name();
    let duration = Duration::from_millis(args.duration);
    let total = arrivals(args.rate, duration);
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("job".into(), job.into());
    config.insert("rate".into(), args.rate.into());
    config.insert("duration_s".into(), (args.duration as f64 / 1000.0).into());
    config.insert("arrivals".into(), total.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("grace_s".into(), (args.grace as f64 / 1000.0).into());
    printer.config(
        "rate",
        &[
            ("controller", target.url.clone()),
            ("job", format!("{job} ({})", job_text(job))),
            ("rate", format!("{} arrivals/s, open loop (fixed clock)", args.rate)),
            ("duration", crate::output::fmt_ms(args.duration)),
            ("arrivals", total.to_string()),
            (
                "connections",
                format!("{} (Enqueue calls round-robin)", args.concurrency),
            ),
            (
                "grace",
                format!(
                    "{} for results after the last arrival",
                    crate::output::fmt_ms(args.grace)
                ),
            ),
            (
                "latency",
                "from each run's intended arrival time to the controller's commit (RunEvent.at_unix_micros)".into(),
            ),
        ],
        &server,
    );
    apply_jobs(&mut client, "").await?;

    // Subscribe before the first arrival.
    let mut watch_client = target.client()?;
    let mut events = watch_client
        .watch_events(pb::WatchEventsRequest {
            job: job.to_string(),
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

    let clients = target.clients(args.concurrency)?;
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut sends = tokio::task::JoinSet::new();
    progress(format!("{total} arrivals of {job} at {}/s", args.rate));
    let start = Instant::now();
    let start_us = chrono::Utc::now().timestamp_micros();
    for i in 0..total {
        let offset = intended_offset(i, args.rate);
        tokio::time::sleep_until((start + offset).into()).await;
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
            job: job.to_string(),
            trigger: "api".into(),
            ..Default::default()
        };
        sends.spawn(async move {
            match client.enqueue(request).await {
                Ok(r) => match r.into_inner().run {
                    Some(run) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        state.lock().unwrap().sent(run.id, intended_us, &done_tx);
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
    let arrival_window = start.elapsed().max(duration);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(args.grace);
    progress("arrivals done; waiting for outstanding results");

    let mut problems = Vec::new();
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
    if let Some(e) = stream_error {
        problems.push(e);
    }

    let sent = sent.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let (mut commit, mut start_h, mut result_h) = (histogram(), histogram(), histogram());
    let (mut succeeded, mut failed) = (0, 0);
    {
        let state = state.lock().unwrap();
        for t in state.runs.values() {
            let Some(intended) = t.intended_us else { continue };
            if let Some(q) = t.queued_us {
                record(&mut commit, q - intended);
            }
            if let Some(r) = t.running_us {
                record(&mut start_h, r - intended);
            }
            match (t.end, t.running_us) {
                (Some((end, true)), Some(r)) => {
                    succeeded += 1;
                    record(&mut result_h, end - r);
                }
                (Some((_, true)), None) => succeeded += 1,
                (Some((_, false)), _) => failed += 1,
                (None, _) => {}
            }
        }
    }
    let incomplete = sent - succeeded - failed;
    if errors > 0 {
        let first = first_error.lock().unwrap().clone().unwrap_or_default();
        problems.push(format!("{errors} of {total} Enqueue calls failed (first: {first})"));
    }
    if incomplete > 0 {
        problems.push(format!(
            "{incomplete} runs had no result within {} of the last arrival (are agents with executor `builtin` connected?)",
            crate::output::fmt_ms(args.grace)
        ));
    }
    if failed > 0 {
        problems.push(format!("{failed} runs ended without succeeding"));
    }
    let results = Results {
        arrivals: total,
        sent,
        achieved_rate: round(sent as f64 / arrival_window.as_secs_f64(), 1),
        errors,
        succeeded,
        failed,
        incomplete,
        enqueue_to_commit: Latency::of(&commit),
        enqueue_to_start: Latency::of(&start_h),
        start_to_result: Latency::of(&result_h),
    };
    let mut table = key_values(&[
        (
            "arrivals",
            format!(
                "{} intended, {} enqueued in {:.3}s = {:.1}/s achieved, {} errors",
                total,
                sent,
                secs(arrival_window),
                results.achieved_rate,
                errors
            ),
        ),
        (
            "runs",
            format!("{succeeded} succeeded, {failed} failed, {incomplete} incomplete"),
        ),
    ]);
    table.push('\n');
    table.push_str(&latency_table(&[
        ("enqueue→committed", results.enqueue_to_commit),
        ("enqueue→start", results.enqueue_to_start),
        ("start→result", results.start_to_result),
    ]));
    let report = Report::new("rate", config, server, &results, problems)?;
    Ok((report, table))
}
