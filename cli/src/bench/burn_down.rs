//! `bench burn-down`: enqueue N runs in batches as fast as the controller takes
//! them, then watch real agents burn the queue down.

use std::time::{Duration, Instant};

use serde::Serialize;
use worker_proto::v1 as pb;

use super::{BurnDownArgs, Printer, Report, Target, apply_jobs, base_config, per_sec, progress, secs, server_info};
use crate::client::Client;
use crate::output::key_values;

/// What `burn-down` measured.
#[derive(Debug, Serialize)]
struct Results {
    enqueued: u64,
    enqueue_seconds: f64,
    enqueue_per_sec: f64,
    completed: u64,
    completed_seconds: f64,
    completed_per_sec: f64,
    drain_seconds: f64,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
}

async fn succeeded(client: &mut Client, job: &str) -> Result<u64, tonic::Status> {
    let detail = client
        .get_job(pb::GetJobRequest { name: job.to_string() })
        .await?
        .into_inner();
    Ok(detail.stats.map_or(0, |s| s.succeeded))
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: BurnDownArgs) -> anyhow::Result<(Report, String)> {
    let job = args.job.name();
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("job".into(), job.into());
    config.insert("jobs".into(), args.jobs.into());
    config.insert("batch".into(), args.batch.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("stall_timeout_s".into(), (args.stall_timeout as f64 / 1000.0).into());
    printer.config(
        "burn-down",
        &[
            ("controller", target.url.clone()),
            ("job", format!("{job} ({})", job_text(job))),
            ("runs", args.jobs.to_string()),
            ("batch", format!("{} runs per EnqueueBatch", args.batch)),
            (
                "concurrency",
                format!("{} batches in flight, one connection each", args.concurrency),
            ),
            (
                "completion",
                "ServerInfo.live_runs polled every 5 ms (in memory, no store query), then GetJob stats checked once"
                    .into(),
            ),
            ("stall timeout", crate::output::fmt_ms(args.stall_timeout)),
        ],
        &server,
    );
    apply_jobs(&mut client, "").await?;
    let baseline = succeeded(&mut client, job).await?;
    let baseline_live = server_info(&mut client).await?.live_runs;

    // The poller watches the controller's count of unfinished runs (a cheap,
    // in-memory figure) from the first enqueue on, on its own connection; the
    // scenario is done when every run was enqueued and the count is back down.
    let mut poll_client = target.client()?;
    let stall = Duration::from_millis(args.stall_timeout);
    let started = Instant::now();
    let enqueue_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = tokio::spawn({
        let enqueue_done = enqueue_done.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = (u64::MAX, Instant::now());
            loop {
                tick.tick().await;
                let live = server_info(&mut poll_client).await?.live_runs;
                if enqueue_done.load(std::sync::atomic::Ordering::Acquire) && live <= baseline_live {
                    return Ok::<_, tonic::Status>(Some(Instant::now()));
                }
                if live != last.0 {
                    last = (live, Instant::now());
                } else if last.1.elapsed() >= stall {
                    return Ok(None);
                }
            }
        }
    });
    progress(format!("enqueueing {} runs of {job}", args.jobs));
    let enqueue = super::enqueue_batches(target, job, args.jobs, args.batch, args.concurrency).await;
    let enqueue_time = match enqueue {
        Ok(t) => t,
        Err(e) => {
            poller.abort();
            return Err(e);
        }
    };
    enqueue_done.store(true, std::sync::atomic::Ordering::Release);
    let enqueued_at = started + enqueue_time;
    progress(format!(
        "enqueued in {:.3}s; waiting for the runs to complete",
        enqueue_time.as_secs_f64()
    ));
    let done_at = poller.await??;
    let completed = succeeded(&mut client, job).await?.saturating_sub(baseline);
    let done_at = done_at.filter(|_| completed >= args.jobs);
    let after = server_info(&mut client).await?;

    let mut problems = Vec::new();
    let (completed_seconds, drain_seconds) = match done_at {
        Some(t) => (secs(t - started), secs(t.saturating_duration_since(enqueued_at))),
        None => {
            problems.push(format!(
                "only {completed} of {} runs completed: none for {} (are agents with executor `builtin` connected?)",
                args.jobs,
                crate::output::fmt_ms(args.stall_timeout)
            ));
            (0.0, 0.0)
        }
    };
    let results = Results {
        enqueued: args.jobs,
        enqueue_seconds: secs(enqueue_time),
        enqueue_per_sec: per_sec(args.jobs, enqueue_time.as_secs_f64()),
        completed,
        completed_seconds,
        completed_per_sec: if done_at.is_some() {
            per_sec(args.jobs, completed_seconds)
        } else {
            0.0
        },
        drain_seconds,
        rss_before_bytes: server.rss_bytes,
        rss_after_bytes: after.rss_bytes,
    };
    let table = key_values(&[
        (
            "enqueue",
            format!(
                "{} runs in {:.3}s = {:.1} runs/s",
                results.enqueued, results.enqueue_seconds, results.enqueue_per_sec
            ),
        ),
        (
            "completed",
            format!(
                "{} runs in {:.3}s from the first enqueue = {:.1} runs/s",
                results.completed, results.completed_seconds, results.completed_per_sec
            ),
        ),
        (
            "drain",
            format!("{:.3}s after the last enqueue answer", results.drain_seconds),
        ),
        (
            "controller rss",
            format!(
                "{} before, {} after",
                super::mib(server.rss_bytes),
                super::mib(after.rss_bytes)
            ),
        ),
    ]);
    let report = Report::new("burn-down", config, server, &results, problems)?;
    Ok((report, table))
}

/// What a bench job does, for the configuration block.
pub fn job_text(job: &str) -> &'static str {
    match job {
        "bench.sleep" => "builtin sleep 10ms, max_attempts 1",
        _ => "builtin noop, max_attempts 1",
    }
}
