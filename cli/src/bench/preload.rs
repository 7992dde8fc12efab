//! `bench preload`: Q runs waiting with no agent able to take them; then the
//! controller's memory with Q queued, and the dispatch rate to simulated agents
//! (labels `bench=preload`) that drain the whole queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::sim_agent::{self, Counters, Spec};
use super::{PreloadArgs, Printer, Report, Target, apply_jobs, base_config, mib, per_sec, progress, secs, server_info};
use crate::output::key_values;

/// The scenario's job.
pub const JOB: &str = "bench.preload";

/// Its definition: only agents labelled `bench=preload` take it.
const DEFINITION: &str = "  bench.preload:\n    description: workerctl bench\n    builtin: noop\n    retry: { max_attempts: 1 }\n    selector: { bench: preload }\n";

/// What `preload` measured.
#[derive(Debug, Serialize)]
struct Results {
    enqueue_seconds: f64,
    enqueue_per_sec: f64,
    rss_before_bytes: u64,
    rss_queued_bytes: u64,
    live_runs_queued: u64,
    rss_after_bytes: u64,
    measured_runs: u64,
    measured_seconds: f64,
    dispatch_per_sec: f64,
    drained_runs: u64,
    drain_seconds: f64,
    drain_per_sec: f64,
    foreign_assignments: u64,
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: PreloadArgs) -> anyhow::Result<(Report, String)> {
    let queued = args.queued;
    let measure = args.measure.unwrap_or(50_000).min(queued);
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("queued".into(), queued.into());
    config.insert("agents".into(), args.agents.into());
    config.insert("capacity".into(), args.capacity.into());
    config.insert("measure".into(), measure.into());
    config.insert("batch".into(), args.batch.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("stall_timeout_s".into(), (args.stall_timeout as f64 / 1000.0).into());
    printer.config(
        "preload",
        &[
            ("controller", target.url.clone()),
            (
                "job",
                format!("{JOB} (builtin noop, max_attempts 1, selector bench=preload)"),
            ),
            (
                "queued",
                format!("{queued} runs enqueued before any agent can take them"),
            ),
            (
                "enqueue",
                format!("EnqueueBatch of {} runs, {} in flight", args.batch, args.concurrency),
            ),
            (
                "agents",
                format!(
                    "{} simulated (labels bench=preload, capacity {}), answering at once",
                    args.agents, args.capacity
                ),
            ),
            (
                "measure",
                format!("dispatch rate over the first {measure} runs; all {queued} are drained"),
            ),
            ("stall timeout", crate::duration::fmt_ms(args.stall_timeout)),
        ],
        &server,
    );
    apply_jobs(&mut client, DEFINITION).await?;
    let before = server_info(&mut client).await?;

    progress(format!("enqueueing {queued} runs of {JOB}"));
    let enqueue_time = super::enqueue_batches(target, JOB, queued, args.batch, args.concurrency).await?;
    let with_queue = server_info(&mut client).await?;
    progress(format!(
        "enqueued in {:.3}s; controller rss {} with {} live runs; starting {} agents",
        enqueue_time.as_secs_f64(),
        mib(with_queue.rss_bytes),
        with_queue.live_runs,
        args.agents
    ));

    let counters = Arc::new(Counters::measuring(measure));
    let auth = target.auth()?;
    let started = Instant::now();
    let mut agents = Vec::new();
    let mut problems = Vec::new();
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let spec = Spec {
            agent_id: sim_agent::agent_id(i),
            name: format!("bench-preload-{i}"),
            labels: HashMap::from([("bench".to_string(), "preload".to_string())]),
            capacity: args.capacity,
            pull: args.capacity,
            job: JOB.to_string(),
        };
        let (channel, auth, counters) = (target.channel()?, auth.clone(), counters.clone());
        starting.spawn(sim_agent::start(channel, auth, spec, counters));
    }
    while let Some(agent) = starting.join_next().await {
        match agent? {
            Ok(a) => agents.push(a),
            Err(e) => problems.push(format!("a simulated agent could not connect: {e}")),
        }
    }
    let drained = if agents.is_empty() {
        false
    } else {
        counters
            .wait_until(Duration::from_millis(args.stall_timeout), |c| {
                c.acked.load(Ordering::Relaxed) >= queued
            })
            .await
    };
    let acked = counters.acked.load(Ordering::Relaxed);
    if !drained && !agents.is_empty() {
        problems.push(format!(
            "only {acked} of {queued} runs were acknowledged: none for {}",
            crate::duration::fmt_ms(args.stall_timeout)
        ));
    }
    let after = server_info(&mut client).await?;
    for agent in agents {
        if agent.ended() {
            if let Some(e) = agent.error().await {
                problems.push(format!("a simulated agent's stream failed: {e}"));
            }
        } else {
            agent.close().await;
        }
    }

    let measured_at = *counters.measured_at.lock().unwrap();
    let measured_seconds = measured_at.map_or(0.0, |t| secs(t - started));
    let last_ack = *counters.last_ack_at.lock().unwrap();
    let drain_seconds = last_ack.map_or(0.0, |t| secs(t - started));
    if measured_at.is_none() && problems.is_empty() {
        problems.push(format!("fewer than {measure} runs were dispatched"));
    }
    let results = Results {
        enqueue_seconds: secs(enqueue_time),
        enqueue_per_sec: per_sec(queued, enqueue_time.as_secs_f64()),
        rss_before_bytes: before.rss_bytes,
        rss_queued_bytes: with_queue.rss_bytes,
        live_runs_queued: with_queue.live_runs,
        rss_after_bytes: after.rss_bytes,
        measured_runs: if measured_at.is_some() { measure } else { 0 },
        measured_seconds,
        dispatch_per_sec: if measured_at.is_some() {
            per_sec(measure, measured_seconds)
        } else {
            0.0
        },
        drained_runs: acked,
        drain_seconds,
        drain_per_sec: per_sec(acked, drain_seconds),
        foreign_assignments: counters.foreign.load(Ordering::Relaxed),
    };
    let table = key_values(&[
        (
            "enqueue",
            format!(
                "{queued} runs in {:.3}s = {:.1} runs/s",
                results.enqueue_seconds, results.enqueue_per_sec
            ),
        ),
        (
            "controller rss",
            format!(
                "{} before, {} with {} queued ({} live runs), {} after",
                mib(results.rss_before_bytes),
                mib(results.rss_queued_bytes),
                queued,
                results.live_runs_queued,
                mib(results.rss_after_bytes)
            ),
        ),
        (
            "dispatch",
            format!(
                "first {} runs in {:.3}s = {:.1} runs/s",
                results.measured_runs, results.measured_seconds, results.dispatch_per_sec
            ),
        ),
        (
            "drain",
            format!(
                "{} runs acknowledged in {:.3}s = {:.1} runs/s",
                results.drained_runs, results.drain_seconds, results.drain_per_sec
            ),
        ),
    ]);
    let report = Report {
        scenario: "preload",
        config: json!(config),
        server,
        results: serde_json::to_value(&results)?,
        ok: problems.is_empty(),
        problems,
    };
    Ok((report, table))
}
