//! `bench preload`: Q runs waiting with no agent able to take them; then the
//! controller's memory with Q queued, and the dispatch rate to simulated agents
//! (labels `bench=preload`) that drain the whole queue.
//!
//! `--hold` stops after the enqueue: no agent is started and the runs stay
//! queued. `--existing N` enqueues nothing and drains N runs queued before (by
//! an earlier `--hold`, typically across a controller restart).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use worker_proto::v1 as pb;

use super::sim_agent::{self, Counters, Spec};
use super::{
    PreloadArgs, PreloadMode, Printer, Report, Target, apply_jobs, base_config, mib, per_sec, progress, secs,
    server_info,
};
use crate::output::key_values;

/// The scenario's job.
pub const JOB: &str = "bench.preload";

/// Its definition: only agents labelled `bench=preload` take it.
const DEFINITION: &str = "  bench.preload:\n    description: workerctl bench\n    builtin: noop\n    retry: { max_attempts: 1 }\n    selector: { bench: preload }\n";

/// What `preload` measured. Measurements of a phase that did not happen are
/// `None` (JSON `null`): with `--hold` everything about agents and the drain,
/// with `--existing` the enqueue.
#[derive(Debug, Serialize)]
struct Results {
    /// `enqueue-drain`, `hold` or `existing`.
    mode: &'static str,
    /// Whether the simulated agents drained every run they were to drain;
    /// always false with `--hold` (no agent was started).
    drained: bool,
    /// Runs left queued in the controller on purpose (`--hold`: Q; else 0).
    held_runs: u64,
    /// What ApplyJobs did to `bench.preload`: created, updated or unchanged.
    definition: &'static str,
    /// Runs this invocation enqueued (0 with `--existing`).
    enqueued: u64,
    enqueue_seconds: Option<f64>,
    enqueue_per_sec: Option<f64>,
    /// QueueStats `queued` (all jobs) before the agents start (`--existing` only).
    controller_queued: Option<u64>,
    rss_before_bytes: u64,
    rss_queued_bytes: u64,
    live_runs_queued: u64,
    rss_after_bytes: Option<u64>,
    /// From the moment the agents start connecting to the first Assignment
    /// any of them receives.
    first_assignment_seconds: Option<f64>,
    measured_runs: Option<u64>,
    measured_seconds: Option<f64>,
    dispatch_per_sec: Option<f64>,
    drained_runs: u64,
    drain_seconds: Option<f64>,
    drain_per_sec: Option<f64>,
    foreign_assignments: u64,
}

/// What the simulated agents measured.
struct Drain {
    first_assignment_seconds: Option<f64>,
    measured_runs: u64,
    measured_seconds: f64,
    dispatch_per_sec: f64,
    drained: bool,
    drained_runs: u64,
    drain_seconds: f64,
    drain_per_sec: f64,
    foreign_assignments: u64,
    rss_after_bytes: u64,
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: PreloadArgs) -> anyhow::Result<(Report, String)> {
    let mode = args.mode()?;
    let enqueues = mode.enqueues();
    let drains = mode.drains();
    let measure = args.measure.unwrap_or(50_000).min(drains);
    let hold = matches!(mode, PreloadMode::Hold(_));
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("mode".into(), mode.name().into());
    config.insert("queued".into(), enqueues.into());
    config.insert("hold".into(), hold.into());
    config.insert("existing".into(), args.existing.into());
    config.insert("batch".into(), args.batch.into());
    config.insert("concurrency".into(), args.concurrency.into());
    // With --hold no agent is started: the agents' parameters do not apply.
    let unless_hold = |v: serde_json::Value| if hold { serde_json::Value::Null } else { v };
    config.insert("agents".into(), unless_hold(args.agents.into()));
    config.insert("capacity".into(), unless_hold(args.capacity.into()));
    config.insert("measure".into(), unless_hold(measure.into()));
    config.insert(
        "stall_timeout_s".into(),
        unless_hold((args.stall_timeout as f64 / 1000.0).into()),
    );
    let mut lines = vec![
        ("controller", target.url.clone()),
        (
            "job",
            format!("{JOB} (builtin noop, max_attempts 1, selector bench=preload)"),
        ),
    ];
    match mode {
        PreloadMode::Drain(q) | PreloadMode::Hold(q) => {
            lines.push(("queued", format!("{q} runs enqueued before any agent can take them")));
            lines.push((
                "enqueue",
                format!("EnqueueBatch of {} runs, {} in flight", args.batch, args.concurrency),
            ));
        }
        PreloadMode::Existing(n) => {
            lines.push((
                "queued",
                format!("none enqueued (--existing): {n} runs of {JOB} already queued"),
            ));
        }
    }
    if hold {
        lines.push((
            "agents",
            "none (--hold): the runs stay queued, nothing is drained".to_string(),
        ));
    } else {
        lines.push((
            "agents",
            format!(
                "{} simulated (labels bench=preload, capacity {}), answering at once",
                args.agents, args.capacity
            ),
        ));
        lines.push((
            "measure",
            format!("dispatch rate over the first {measure} runs; all {drains} are drained"),
        ));
        lines.push(("stall timeout", crate::output::fmt_ms(args.stall_timeout)));
    }
    printer.config("preload", &lines, &server);

    // Applying the same definition again is harmless: the controller reports
    // it `unchanged` and keeps it as it is (queued runs are not touched).
    let applied = apply_jobs(&mut client, DEFINITION).await?;
    let definition = if applied.created.iter().any(|j| j == JOB) {
        "created"
    } else if applied.updated.iter().any(|j| j == JOB) {
        "updated"
    } else {
        "unchanged"
    };
    let before = server_info(&mut client).await?;
    let mut problems = Vec::new();

    let (enqueue_time, with_queue) = if enqueues > 0 {
        progress(format!("enqueueing {enqueues} runs of {JOB}"));
        let time = super::enqueue_batches(target, JOB, enqueues, args.batch, args.concurrency).await?;
        let with_queue = server_info(&mut client).await?;
        progress(format!(
            "enqueued in {:.3}s; controller rss {} with {} live runs",
            time.as_secs_f64(),
            mib(with_queue.rss_bytes),
            with_queue.live_runs,
        ));
        (Some(time), with_queue)
    } else {
        (None, before.clone())
    };

    let mut controller_queued = None;
    if let PreloadMode::Existing(n) = mode {
        if definition == "created" {
            problems.push(format!(
                "--existing {n}: job {JOB} was not defined, so none of its runs can be queued"
            ));
        }
        let queued = client.queue_stats(pb::QueueStatsRequest {}).await?.into_inner().queued;
        controller_queued = Some(queued);
        progress(format!(
            "--existing {n}: the controller reports {queued} queued runs; rss {} with {} live runs",
            mib(with_queue.rss_bytes),
            with_queue.live_runs
        ));
        if queued < n {
            problems.push(format!(
                "--existing {n}: the controller reports only {queued} queued runs"
            ));
        }
    }

    let drain = if hold {
        progress(format!(
            "--hold: no agents started; {enqueues} runs stay queued in the controller"
        ));
        None
    } else if !problems.is_empty() {
        None
    } else {
        progress(format!("starting {} agents", args.agents));
        Some(drain(target, &mut client, &args, drains, measure, &mut problems).await?)
    };

    let results = Results {
        mode: mode.name(),
        drained: drain.as_ref().is_some_and(|d| d.drained),
        held_runs: if hold { enqueues } else { 0 },
        definition,
        enqueued: enqueues,
        enqueue_seconds: enqueue_time.map(secs),
        enqueue_per_sec: enqueue_time.map(|t| per_sec(enqueues, t.as_secs_f64())),
        controller_queued,
        rss_before_bytes: before.rss_bytes,
        rss_queued_bytes: with_queue.rss_bytes,
        live_runs_queued: with_queue.live_runs,
        rss_after_bytes: drain.as_ref().map(|d| d.rss_after_bytes),
        first_assignment_seconds: drain.as_ref().and_then(|d| d.first_assignment_seconds),
        measured_runs: drain.as_ref().map(|d| d.measured_runs),
        measured_seconds: drain.as_ref().map(|d| d.measured_seconds),
        dispatch_per_sec: drain.as_ref().map(|d| d.dispatch_per_sec),
        drained_runs: drain.as_ref().map_or(0, |d| d.drained_runs),
        drain_seconds: drain.as_ref().map(|d| d.drain_seconds),
        drain_per_sec: drain.as_ref().map(|d| d.drain_per_sec),
        foreign_assignments: drain.as_ref().map_or(0, |d| d.foreign_assignments),
    };
    let table = table(mode, &results);
    let report = Report::new("preload", config, server, &results, problems)?;
    Ok((report, table))
}

/// Starts the simulated agents and waits until they have acknowledged `total`
/// runs (or none for the stall timeout); then closes them.
async fn drain(
    target: &Target,
    client: &mut crate::client::Client,
    args: &PreloadArgs,
    total: u64,
    measure: u64,
    problems: &mut Vec<String>,
) -> anyhow::Result<Drain> {
    let counters = Arc::new(Counters::measuring(measure));
    let auth = target.auth()?;
    let started = Instant::now();
    let mut agents = Vec::new();
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
                c.acked.load(Ordering::Relaxed) >= total
            })
            .await
    };
    let acked = counters.acked.load(Ordering::Relaxed);
    if !drained && !agents.is_empty() {
        problems.push(format!(
            "only {acked} of {total} runs were acknowledged: none for {}",
            crate::output::fmt_ms(args.stall_timeout)
        ));
    }
    let after = server_info(client).await?;
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
    Ok(Drain {
        first_assignment_seconds: counters.first_assignment_at.get().map(|t| secs(*t - started)),
        measured_runs: if measured_at.is_some() { measure } else { 0 },
        measured_seconds,
        dispatch_per_sec: if measured_at.is_some() {
            per_sec(measure, measured_seconds)
        } else {
            0.0
        },
        drained: drained && acked >= total,
        drained_runs: acked,
        drain_seconds,
        drain_per_sec: per_sec(acked, drain_seconds),
        foreign_assignments: counters.foreign.load(Ordering::Relaxed),
        rss_after_bytes: after.rss_bytes,
    })
}

/// The results block of the table output.
fn table(mode: PreloadMode, r: &Results) -> String {
    let mut rows = Vec::new();
    match (mode, r.enqueue_seconds, r.enqueue_per_sec) {
        (PreloadMode::Existing(n), ..) => rows.push((
            "enqueue",
            format!(
                "none (--existing): {n} runs expected queued; the controller reports {} queued",
                r.controller_queued.map_or("?".to_string(), |q| q.to_string())
            ),
        )),
        (_, Some(seconds), Some(rate)) => rows.push((
            "enqueue",
            format!("{} runs in {seconds:.3}s = {rate:.1} runs/s", r.enqueued),
        )),
        _ => {}
    }
    let queued_what = match mode {
        PreloadMode::Existing(_) => "the existing runs".to_string(),
        PreloadMode::Drain(q) | PreloadMode::Hold(q) => q.to_string(),
    };
    let rss = match (mode, r.rss_after_bytes) {
        (PreloadMode::Existing(_), after) => format!(
            "{} with {queued_what} queued ({} live runs), {} after",
            mib(r.rss_queued_bytes),
            r.live_runs_queued,
            after.map_or("-".to_string(), mib)
        ),
        (_, after) => format!(
            "{} before, {} with {queued_what} queued ({} live runs), {}",
            mib(r.rss_before_bytes),
            mib(r.rss_queued_bytes),
            r.live_runs_queued,
            after.map_or("no reading after (--hold)".to_string(), |a| format!("{} after", mib(a)))
        ),
    };
    rows.push(("controller rss", rss));
    if let PreloadMode::Hold(q) = mode {
        rows.push((
            "drain",
            format!("nothing drained (--hold): no agents were started; the {q} runs stay queued in the controller"),
        ));
        return key_values(&rows);
    }
    if r.measured_seconds.is_none() {
        // The agents were not started (see the problems).
        rows.push((
            "drain",
            "nothing drained: no agents were started (see Problems)".to_string(),
        ));
        return key_values(&rows);
    }
    rows.push((
        "first assignment",
        match r.first_assignment_seconds {
            Some(s) => format!("{s:.3} s after agents connected (from the start of their connections)"),
            None => "none received".to_string(),
        },
    ));
    rows.push((
        "dispatch",
        format!(
            "first {} runs in {:.3}s = {:.1} runs/s",
            r.measured_runs.unwrap_or(0),
            r.measured_seconds.unwrap_or(0.0),
            r.dispatch_per_sec.unwrap_or(0.0)
        ),
    ));
    rows.push((
        "drain",
        format!(
            "{} runs acknowledged in {:.3}s = {:.1} runs/s",
            r.drained_runs,
            r.drain_seconds.unwrap_or(0.0),
            r.drain_per_sec.unwrap_or(0.0)
        ),
    ));
    key_values(&rows)
}
