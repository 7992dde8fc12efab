//! `bench workload-a`: the queue-drain throughput test of peer job queues
//! (graphile-worker's and BullMQ's "queue N jobs, then time the workers
//! draining them"), with real agents.
//!
//! Phase 1 enqueues N no-op runs of `bench.workload-a` with EnqueueBatch while
//! no agent can take them: the job's selector requires a label value unique
//! to this invocation ([`agent_procs::run_label`]), which no agent carries
//! yet. Phase 2 spawns the agents (real `worker-agent` processes with that
//! label, executor `builtin`); the clock starts at the spawn and stops when
//! the controller's count of unfinished runs (`ServerInfo.live_runs`, polled
//! every 5 ms, in memory) is back to what it was before phase 1. The job's
//! `succeeded` count (GetJob) is checked once at the end. The first
//! completion is the commit time of the first `succeeded` event on a
//! WatchEvents stream opened before the spawn (and closed right after it).

use std::time::{Duration, Instant};

use serde::Serialize;
use worker_proto::v1 as pb;

use super::agent_procs::{self, AgentProcs, AgentSpec, LABEL_KEY};
use super::{
    Printer, Report, Target, WorkloadAArgs, apply_jobs, base_config, mib, per_sec, progress, round, secs, server_info,
};
use crate::client::Client;
use crate::output::key_values;

/// The scenario's job.
pub const JOB: &str = "bench.workload-a";

/// What `workload-a` measured.
#[derive(Debug, Serialize)]
struct Results {
    enqueued: u64,
    /// Unfinished runs of the job from an earlier (interrupted) invocation,
    /// drained along with this one's.
    leftover_runs: u64,
    enqueue_seconds: f64,
    enqueue_per_sec: f64,
    completed: u64,
    failed: u64,
    work_seconds: f64,
    work_per_sec: f64,
    first_completion_seconds: Option<f64>,
    rss_before_bytes: u64,
    rss_queued_bytes: u64,
    rss_after_bytes: u64,
}

/// The job's definition: only agents labelled `bench-run=<label>` take it.
fn definition(label: &str) -> String {
    format!(
        "  {JOB}:\n    description: workerctl bench workload-a\n    builtin: noop\n    retry: {{ max_attempts: 1 }}\n    \
         selector: {{ {LABEL_KEY}: \"{label}\" }}\n"
    )
}

/// Runs of a job by outcome, from GetJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobCounts {
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs in the DLQ.
    pub dead: u64,
    /// Runs not yet terminal.
    pub active: u64,
}

/// The runs of `job` so far.
pub async fn job_counts(client: &mut Client, job: &str) -> Result<JobCounts, tonic::Status> {
    let detail = client
        .get_job(pb::GetJobRequest { name: job.to_string() })
        .await?
        .into_inner();
    Ok(detail.stats.map_or(JobCounts::default(), |s| JobCounts {
        succeeded: s.succeeded,
        dead: s.dead,
        active: s.active,
    }))
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: WorkloadAArgs) -> anyhow::Result<(Report, String)> {
    let bin = agent_procs::agent_bin(args.agent_bin.as_deref())?;
    let label = agent_procs::run_label();
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("job".into(), JOB.into());
    config.insert("jobs".into(), args.jobs.into());
    config.insert("batch".into(), args.batch.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("agents".into(), args.agents.into());
    config.insert("capacity".into(), args.capacity.into());
    config.insert("agent_bin".into(), bin.display().to_string().into());
    config.insert("label".into(), format!("{LABEL_KEY}={label}").into());
    config.insert("stall_timeout_s".into(), (args.stall_timeout as f64 / 1000.0).into());
    printer.config(
        "workload-a",
        &[
            ("controller", target.url.clone()),
            (
                "job",
                format!("{JOB} (builtin noop, max_attempts 1, selector {LABEL_KEY}={label})"),
            ),
            ("runs", format!("{} enqueued before any agent can take them", args.jobs)),
            (
                "enqueue",
                format!("EnqueueBatch of {} runs, {} in flight", args.batch, args.concurrency),
            ),
            (
                "agents",
                format!(
                    "{} × {} --executors builtin --capacity {} --labels {LABEL_KEY}={label}, spawned after the enqueue",
                    args.agents,
                    bin.display(),
                    args.capacity
                ),
            ),
            (
                "work",
                "from the agents' spawn until ServerInfo.live_runs (polled every 5 ms) is back to its level before \
                 the enqueue; GetJob succeeded checked at the end"
                    .into(),
            ),
            ("stall timeout", crate::output::fmt_ms(args.stall_timeout)),
        ],
        &server,
    );
    apply_jobs(&mut client, &definition(&label)).await?;
    let before = job_counts(&mut client, JOB).await?;
    // Runs left unfinished by an interrupted earlier invocation: the job's
    // new selector makes them this invocation's agents' work too, so they
    // are drained along (and counted out of the baseline).
    let leftover = before.active;
    if leftover > 0 {
        progress(format!(
            "{leftover} runs of {JOB} left by an earlier invocation are drained along"
        ));
    }
    let baseline_live = server_info(&mut client).await?.live_runs.saturating_sub(leftover);

    // Phase 1: enqueue, nobody can take the runs.
    progress(format!("enqueueing {} runs of {JOB}", args.jobs));
    let enqueue_time = super::enqueue_batches(target, JOB, args.jobs, args.batch, args.concurrency).await?;
    let queued = server_info(&mut client).await?;
    progress(format!(
        "enqueued in {:.3}s; starting {} agents",
        enqueue_time.as_secs_f64(),
        args.agents
    ));

    // Phase 2: the first completion comes from the event stream; the end from
    // the live-run count.
    let mut watch_client = target.client()?;
    let mut events = watch_client
        .watch_events(pb::WatchEventsRequest {
            job: JOB.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let spec = AgentSpec {
        bin,
        count: args.agents,
        capacity: args.capacity,
        label,
        name_prefix: "bench-workload-a".into(),
    };
    let spawned_us = chrono::Utc::now().timestamp_micros();
    let spawned = Instant::now();
    let mut procs = AgentProcs::spawn(target, &spec)?;
    let first = tokio::spawn(async move {
        loop {
            match events.message().await {
                Ok(Some(e)) if e.state == "succeeded" => return Some(e.at_unix_micros),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    });
    let stall = Duration::from_millis(args.stall_timeout);
    let done_at = {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (u64::MAX, Instant::now());
        loop {
            tick.tick().await;
            let live = server_info(&mut client).await?.live_runs;
            if live <= baseline_live {
                break Some(Instant::now());
            }
            if let Some(e) = procs.exited() {
                progress(e);
                break None;
            }
            if live != last.0 {
                last = (live, Instant::now());
            } else if last.1.elapsed() >= stall {
                break None;
            }
        }
    };
    let work_time = done_at.map(|t| t - spawned);
    let first_completion = match tokio::time::timeout(Duration::from_secs(1), first).await {
        Ok(Ok(Some(at))) => Some(round((at - spawned_us) as f64 / 1e6, 3)),
        Ok(_) => None,
        Err(_) => None,
    };
    procs.stop().await;
    let end = job_counts(&mut client, JOB).await?;
    let after = server_info(&mut client).await?;
    let completed = end.succeeded.saturating_sub(before.succeeded);
    let failed = end.dead.saturating_sub(before.dead);

    let mut problems = Vec::new();
    if work_time.is_none() {
        problems.push(format!(
            "only {completed} of {} runs completed: the queue stopped moving for {} or an agent exited",
            args.jobs,
            crate::output::fmt_ms(args.stall_timeout)
        ));
    } else if completed < args.jobs + leftover || end.active > 0 {
        problems.push(format!(
            "the live runs are back down but only {completed} of {} runs of {JOB} succeeded ({failed} dead, {} \
             unfinished)",
            args.jobs + leftover,
            end.active
        ));
    }
    if first_completion.is_none() {
        problems.push("no succeeded event was seen on the event stream".into());
    }
    let work_seconds = work_time.map_or(0.0, secs);
    let results = Results {
        enqueued: args.jobs,
        leftover_runs: leftover,
        enqueue_seconds: secs(enqueue_time),
        enqueue_per_sec: per_sec(args.jobs, enqueue_time.as_secs_f64()),
        completed,
        failed,
        work_seconds,
        work_per_sec: if problems.is_empty() {
            per_sec(args.jobs + leftover, work_time.unwrap_or_default().as_secs_f64())
        } else {
            0.0
        },
        first_completion_seconds: first_completion,
        rss_before_bytes: server.rss_bytes,
        rss_queued_bytes: queued.rss_bytes,
        rss_after_bytes: after.rss_bytes,
    };
    let table = key_values(&[
        (
            "enqueue",
            format!(
                "{} runs in {:.3}s = {:.1} jobs/s",
                results.enqueued, results.enqueue_seconds, results.enqueue_per_sec
            ),
        ),
        (
            "work",
            format!(
                "{} succeeded ({} dead) in {:.3}s from the agents' spawn = {:.1} jobs/s",
                results.completed, results.failed, results.work_seconds, results.work_per_sec
            ),
        ),
        (
            "first completion",
            results
                .first_completion_seconds
                .map_or("not seen".into(), |s| format!("{s:.3}s after the spawn")),
        ),
        (
            "controller rss",
            format!(
                "{} before, {} queued, {} after",
                mib(results.rss_before_bytes),
                mib(results.rss_queued_bytes),
                mib(results.rss_after_bytes)
            ),
        ),
    ]);
    let report = Report::new("workload-a", config, server, &results, problems)?;
    Ok((report, table))
}
