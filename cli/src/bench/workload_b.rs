//! `bench workload-b`: the latency test of peer job queues (graphile-worker's
//! and BullMQ's "enqueue one job at a time, measure until the worker picks it
//! up"), open loop and coordinated-omission safe.
//!
//! N runs are enqueued one per Enqueue call at a fixed rate R ([`open_loop`]:
//! intended arrival `start + i/R`). The headline latency goes from the
//! *intended* arrival to the start of the handler on the agent: the agent
//! reads its clock when the executor starts the attempt and sends it with its
//! result (`Finished.started_at_unix_micros`); the controller passes it on,
//! live only, on the event that ends the attempt
//! (`RunEvent.handler_started_unix_micros`). Besides, as `rate` does, the
//! controller's commits: intended → queued committed, intended → running
//! committed (the dispatch), and running committed → handler start.
//!
//! With `--agents N` (default 2) the bench spawns its own real agents, as
//! `workload-a` does (job `bench.workload-b`, selector on a label unique to
//! the invocation), waits until the controller counts them, and warms each
//! up with one run before the clock starts; with `--agents 0` it uses the
//! agents already connected (job `bench.noop`).

use std::time::Duration;

use serde::Serialize;

use super::agent_procs::{self, AgentProcs, AgentSpec, LABEL_KEY};
use super::open_loop::{self, Plan};
use super::stats::{Latency, histogram, latency_table, record};
use super::workload_a::job_counts;
use super::{Printer, Report, Target, WorkloadBArgs, apply_jobs, base_config, progress, round, secs, server_info};
use crate::output::key_values;

/// The scenario's job with its own agents.
pub const JOB: &str = "bench.workload-b";

/// How long the spawned agents have to connect and finish their warm-up run.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What `workload-b` measured.
#[derive(Debug, Serialize)]
struct Results {
    arrivals: u64,
    sent: u64,
    achieved_rate: f64,
    errors: u64,
    succeeded: u64,
    failed: u64,
    incomplete: u64,
    /// Finished runs whose end event carried no handler start (e.g. read
    /// back from the store after the event stream fell behind).
    handler_start_missing: u64,
    /// Runs whose handler started before the dispatch commit was stamped.
    handler_before_dispatch: u64,
    intended_to_handler_start: Latency,
    enqueue_to_commit: Latency,
    enqueue_to_start: Latency,
    dispatch_to_handler_start: Latency,
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: WorkloadBArgs) -> anyhow::Result<(Report, String)> {
    let spawn = args.agents > 0;
    let bin = if spawn {
        Some(agent_procs::agent_bin(args.agent_bin.as_deref())?)
    } else {
        None
    };
    let label = agent_procs::run_label();
    let job = if spawn { JOB } else { "bench.noop" };
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("job".into(), job.into());
    config.insert("jobs".into(), args.jobs.into());
    config.insert("rate".into(), args.rate.into());
    config.insert("concurrency".into(), args.concurrency.into());
    config.insert("grace_s".into(), (args.grace as f64 / 1000.0).into());
    config.insert("agents".into(), args.agents.into());
    let if_spawn = |v: serde_json::Value| if spawn { v } else { serde_json::Value::Null };
    config.insert("capacity".into(), if_spawn(args.capacity.into()));
    config.insert(
        "agent_bin".into(),
        if_spawn(bin.as_ref().map(|b| b.display().to_string()).into()),
    );
    config.insert("label".into(), if_spawn(format!("{LABEL_KEY}={label}").into()));
    let agents_line = match &bin {
        Some(bin) => format!(
            "{} × {} --executors builtin --capacity {} --labels {LABEL_KEY}={label}, one warm-up run each",
            args.agents,
            bin.display(),
            args.capacity
        ),
        None => "the agents already connected (--agents 0)".into(),
    };
    let job_line = if spawn {
        format!("{job} (builtin noop, max_attempts 1, selector {LABEL_KEY}={label})")
    } else {
        format!("{job} (builtin noop, max_attempts 1)")
    };
    printer.config(
        "workload-b",
        &[
            ("controller", target.url.clone()),
            ("job", job_line),
            (
                "arrivals",
                format!(
                    "{} at {}/s, one Enqueue each, open loop (fixed clock)",
                    args.jobs, args.rate
                ),
            ),
            (
                "connections",
                format!("{} (Enqueue calls round-robin)", args.concurrency),
            ),
            ("agents", agents_line),
            (
                "grace",
                format!(
                    "{} for results after the last arrival",
                    crate::output::fmt_ms(args.grace)
                ),
            ),
            (
                "latency",
                "from each run's intended arrival to the agent's handler start (RunEvent.handler_started_unix_micros) \
                 and to the controller's commits (RunEvent.at_unix_micros)"
                    .into(),
            ),
        ],
        &server,
    );
    let extra = if spawn {
        format!(
            "  {JOB}:\n    description: workerctl bench workload-b\n    builtin: noop\n    retry: {{ max_attempts: 1 }}\n    \
             selector: {{ {LABEL_KEY}: \"{label}\" }}\n"
        )
    } else {
        String::new()
    };
    apply_jobs(&mut client, &extra).await?;

    let procs = match bin {
        Some(bin) => {
            let spec = AgentSpec {
                bin,
                count: args.agents,
                capacity: args.capacity,
                label,
                name_prefix: "bench-workload-b".into(),
            };
            let base = server_info(&mut client).await?.connected_agents;
            let mut procs = AgentProcs::spawn(target, &spec)?;
            let connected = agent_procs::wait_connected(target, &mut procs, base, args.agents, READY_TIMEOUT).await?;
            progress(format!(
                "{} agents connected in {:.3}s; warming up",
                args.agents,
                connected.as_secs_f64()
            ));
            warm_up(target, args.agents).await?;
            Some(procs)
        }
        None => None,
    };

    let plan = Plan {
        job: job.to_string(),
        total: args.jobs,
        rate: args.rate,
        concurrency: args.concurrency,
        grace: Duration::from_millis(args.grace),
    };
    let outcome = open_loop::run(target, &plan).await;
    if let Some(procs) = procs {
        procs.stop().await;
    }
    let outcome = outcome?;

    let tally = outcome.tally();
    let (succeeded, failed, incomplete) = (tally.succeeded, tally.failed, tally.incomplete);
    let mut problems = outcome.problems(&tally, args.jobs, args.grace, "");
    // Of the runs that ended: intended → handler start, dispatch → handler start.
    let (mut handler_h, mut dispatch_handler_h) = (histogram(), histogram());
    let (mut missing, mut before_dispatch) = (0, 0);
    for t in outcome.runs.values() {
        let (Some(intended), Some(_)) = (t.intended_us, t.end) else {
            continue;
        };
        match (t.handler_us, t.running_us) {
            (Some(h), running) => {
                record(&mut handler_h, h - intended);
                if let Some(r) = running {
                    record(&mut dispatch_handler_h, h - r);
                    if h < r {
                        before_dispatch += 1;
                    }
                }
            }
            (None, _) => missing += 1,
        }
    }
    if missing > 0 {
        problems.push(format!(
            "{missing} finished runs came without the agent's handler start (events read back from the store, or \
             agents that do not send it)"
        ));
    }
    let results = Results {
        arrivals: args.jobs,
        sent: outcome.sent,
        achieved_rate: round(outcome.sent as f64 / outcome.arrival_window.as_secs_f64(), 1),
        errors: outcome.errors,
        succeeded,
        failed,
        incomplete,
        handler_start_missing: missing,
        handler_before_dispatch: before_dispatch,
        intended_to_handler_start: Latency::of(&handler_h),
        enqueue_to_commit: Latency::of(&tally.enqueue_to_commit),
        enqueue_to_start: Latency::of(&tally.enqueue_to_start),
        dispatch_to_handler_start: Latency::of(&dispatch_handler_h),
    };
    let mut table = key_values(&[
        (
            "arrivals",
            format!(
                "{} intended, {} enqueued in {:.3}s = {:.1}/s achieved, {} errors",
                args.jobs,
                outcome.sent,
                secs(outcome.arrival_window),
                results.achieved_rate,
                outcome.errors
            ),
        ),
        (
            "runs",
            format!("{succeeded} succeeded, {failed} failed, {incomplete} incomplete"),
        ),
    ]);
    table.push('\n');
    table.push_str(&latency_table(&[
        ("intended→handler start", results.intended_to_handler_start),
        ("enqueue→committed", results.enqueue_to_commit),
        ("enqueue→start (dispatch)", results.enqueue_to_start),
        ("dispatch→handler start", results.dispatch_to_handler_start),
    ]));
    let report = Report::new("workload-b", config, server, &results, problems)?;
    Ok((report, table))
}

/// One run per agent, waited for (GetJob `succeeded`, polled every 20 ms):
/// the agents have connected, pulled credits and run something before the
/// clock starts.
async fn warm_up(target: &Target, agents: u64) -> anyhow::Result<()> {
    let mut client = target.client()?;
    let before = job_counts(&mut client, JOB).await?.succeeded;
    super::enqueue_batches(target, JOB, agents, agents, 1).await?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let now = job_counts(&mut client, JOB).await?.succeeded;
        if now >= before + agents {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the warm-up runs did not succeed within {}",
                crate::output::fmt_ms(READY_TIMEOUT.as_millis() as u64)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
