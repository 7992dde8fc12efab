//! `workerctl bench`: benchmarks of a running controller.
//!
//! Scenarios (each a subcommand):
//!
//! * `burn-down`: enqueue N runs in batches, report enqueue/s, then completed/s
//!   and the drain time after the last enqueue (needs real agents).
//! * `rate`: open-loop arrivals at R/s for D; enqueue→start and start→result
//!   latency percentiles from HDR histograms, measured from each run's
//!   *intended* arrival time (coordinated-omission safe; needs real agents).
//! * `schedules`: S cron schedules due at the same second; lateness of each fire
//!   from its nominal instant to the commit of its run (needs real agents).
//! * `preload`: Q runs waiting, then dispatch rate to simulated agents and the
//!   controller's memory before, with Q queued, and after. `--hold` only
//!   enqueues (no agents, nothing drained, the runs stay queued); `--existing N`
//!   enqueues nothing and drains N runs queued earlier (e.g. by `--hold` before
//!   a controller restart), timing the first assignment.
//! * `agents`: A simulated agents on one controller; memory per agent.
//! * `workload-a`: peer queues' drain test: N no-op runs enqueued in batches
//!   while no agent can take them, then K real `worker-agent` processes the
//!   bench spawns drain them; enqueue jobs/s, work jobs/s, first completion.
//! * `workload-b`: peer queues' latency test: N runs enqueued one per call at
//!   R/s (open loop, like `rate`); intended arrival → the handler's start on
//!   the agent, plus the commit latencies; spawns its own agents (or uses the
//!   connected ones with `--agents 0`).
//!
//! Modules: one per scenario; [`open_loop`] is the fixed arrival clock of
//! `rate` and `workload-b`; [`agent_procs`] the real agent processes of the
//! workloads; [`sim_agent`] the simulated agents of `preload` and `agents`;
//! [`stats`] the HDR histograms.
//!
//! Each scenario first applies its own job definitions (`bench.noop`,
//! `bench.sleep`, and `bench.preload` / `bench.sched.<i>` where needed) with
//! ApplyJobs (source `workerctl bench`). The `bench.sched.<i>` jobs are deleted
//! at the end of `schedules`.
//!
//! # Output
//!
//! The table output prints the exact configuration first, then the results.
//! `-o json` (or `-o yaml`) prints one object at the end:
//!
//! ```text
//! {
//!   "scenario": "burn-down" | "rate" | "schedules" | "preload" | "agents" |
//!               "workload-a" | "workload-b",
//!   "config": {                  // the exact parameters, defaults resolved
//!     "controller": "http://127.0.0.1:7070",
//!     "workerctl_version": "0.1.0",
//!     ...scenario parameters, see below
//!   },
//!   "server": {                  // ServerInfo read before the scenario
//!     "version", "pid", "store", "started_at", "rss_bytes",
//!     "connected_agents", "live_runs"
//!   },
//!   "results": { ...see below },
//!   "ok": true,                  // false: the benchmark could not complete (exit 1)
//!   "problems": []               // why not, one sentence each
//! }
//! ```
//!
//! A latency summary (`Latency`) is
//! `{ "count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms" }`
//! (milliseconds; recorded in microsecond HDR histograms, 1 µs to 1 h, with 3
//! significant digits, so a percentile is within 0.1% of the exact value; all
//! 0 when count is 0).
//!
//! Inside `config` and `results` the keys come in alphabetical order.
//!
//! | scenario | config | results |
//! |---|---|---|
//! | burn-down | `job`, `jobs`, `batch`, `concurrency`, `stall_timeout_s` | `enqueued`, `enqueue_seconds`, `enqueue_per_sec`, `completed`, `completed_seconds` (first enqueue → last completion), `completed_per_sec`, `drain_seconds` (last enqueue answer → last completion), `rss_before_bytes`, `rss_after_bytes` |
//! | rate | `job`, `rate`, `duration_s`, `arrivals`, `concurrency`, `grace_s` | `arrivals`, `sent`, `achieved_rate`, `errors`, `succeeded`, `failed`, `incomplete`, `enqueue_to_commit` (intended → queued committed), `enqueue_to_start` (intended → running committed), `start_to_result` (running → result committed): each a `Latency` |
//! | schedules | `count`, `lead_s`, `grace_s`, `nominal` (RFC 3339 instant T), `cron` | `fired`, `missing`, `completed`, `lateness` (`Latency`, first event of the run − T), `apply_seconds`, `apply_documents`, `deleted`, `not_deleted` |
//! | preload | `mode` (`enqueue-drain`, `hold`, `existing`), `queued` (runs the bench enqueues), `hold`, `existing` (N or null), `batch`, `concurrency`, `agents`, `capacity`, `measure`, `stall_timeout_s` (the last four null with `--hold`) | `mode`, `drained` (every run to drain was acknowledged; always false with `--hold`), `held_runs` (runs left queued on purpose: Q with `--hold`, else 0), `definition` (what ApplyJobs did to `bench.preload`: `created`, `updated`, `unchanged`), `enqueued`, `enqueue_seconds`, `enqueue_per_sec` (null with `--existing`), `controller_queued` (QueueStats `queued` before the agents start; `--existing` only, else null), `rss_before_bytes`, `rss_queued_bytes`, `live_runs_queued`, `rss_after_bytes`, `first_assignment_seconds` (agents start connecting → first Assignment to any of them), `measured_runs`, `measured_seconds`, `dispatch_per_sec` (first `measure` runs), `drained_runs`, `drain_seconds`, `drain_per_sec` (all runs), `foreign_assignments` (assignments of other jobs the simulated agents answered); with `--hold` every agent measurement is null and `drained_runs` 0 |
//! | agents | `count`, `per_connection`, `connections`, `timeout_s` | `connected`, `connect_seconds`, `rss_before_bytes`, `rss_connected_bytes`, `bytes_per_agent`, `rss_closed_bytes`, `disconnected_seconds` |
//! | workload-a | `job` (`bench.workload-a`), `jobs`, `batch`, `concurrency`, `agents`, `capacity`, `agent_bin`, `label` (`bench-run=<unique>`), `stall_timeout_s` | `enqueued`, `leftover_runs` (unfinished runs of the job left by an interrupted earlier invocation: the new agents drain them too, and they count in `completed` and `work_per_sec`), `enqueue_seconds`, `enqueue_per_sec` (phase 1, no agent able to take the runs), `completed` (GetJob `succeeded` growth), `failed` (`dead` growth), `work_seconds`, `work_per_sec` (agents' spawn → live runs back to their level before the enqueue; 0 when not all succeeded), `first_completion_seconds` (spawn → commit of the first `succeeded`; null if not seen), `rss_before_bytes`, `rss_queued_bytes`, `rss_after_bytes` |
//! | workload-b | `job` (`bench.workload-b`, or `bench.noop` with `--agents 0`), `jobs`, `rate`, `concurrency`, `grace_s`, `agents`, `capacity`, `agent_bin`, `label` (the last three null with `--agents 0`) | `arrivals`, `sent`, `achieved_rate`, `errors`, `succeeded`, `failed`, `incomplete`, `handler_start_missing` (finished runs whose end event had no handler start), `handler_before_dispatch` (runs whose handler start precedes the dispatch commit's stamp), `intended_to_handler_start` (intended → agent's handler start, the headline), `enqueue_to_commit`, `enqueue_to_start` (intended → running committed), `dispatch_to_handler_start` (running committed → handler start): each a `Latency` |
//!
//! Exit codes: 0 success; 1 the benchmark could not complete (errors, runs
//! never seen, a lagging event stream); 2 usage; 4 controller unreachable;
//! 130 interrupted (Ctrl-C or SIGTERM: the scenario stops at once and the
//! agents it spawned are killed).

mod agent_procs;
mod agents;
mod burn_down;
mod open_loop;
mod preload;
mod rate;
mod schedules;
mod sim_agent;
mod stats;
mod workload_a;
mod workload_b;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use worker_proto::v1 as pb;

use crate::client::{self, Auth, CONNECT_TIMEOUT, Client};
use crate::error::CliError;
use crate::output::{Format, emit, key_values};

/// Source name of the bench's ApplyJobs calls.
pub const SOURCE: &str = "workerctl bench";

/// Definitions of the jobs every scenario uses.
pub const BASE_JOBS: &str = "  bench.noop:\n    description: workerctl bench\n    builtin: noop\n    retry: { max_attempts: 1 }\n  bench.sleep:\n    description: workerctl bench\n    builtin: { name: sleep, duration: 10ms }\n    retry: { max_attempts: 1 }\n";

/// `workerctl bench ...`
#[derive(Debug, Subcommand)]
#[command(
    after_help = "burn-down, rate and schedules need a controller that already runs with real agents \
(executor `builtin`); preload and agents bring their own simulated agents; workload-a and workload-b \
spawn real worker-agent processes (the binary next to workerctl, or --agent-bin)."
)]
pub enum BenchCmd {
    /// Enqueue N runs in batches; report enqueue/s, then completed/s and the drain
    /// time (needs real agents).
    BurnDown(BurnDownArgs),
    /// Open-loop arrivals at a fixed rate; coordinated-omission-safe latency
    /// percentiles of enqueue→start and start→result (needs real agents).
    Rate(RateArgs),
    /// S cron schedules due at the same second; lateness percentiles from the
    /// nominal instant to the run's commit (needs real agents).
    Schedules(SchedulesArgs),
    /// Q runs waiting, then the dispatch rate to simulated agents and the
    /// controller's memory with Q queued.
    Preload(PreloadArgs),
    /// A simulated agents connected at once; controller memory per agent.
    Agents(AgentsArgs),
    /// Peer queues' drain test: N no-op jobs enqueued in batches while no worker
    /// can take them, then real agents spawned by the bench drain them.
    WorkloadA(WorkloadAArgs),
    /// Peer queues' latency test: jobs enqueued one per call at a fixed rate
    /// (open loop); intended arrival → handler start on the agent.
    WorkloadB(WorkloadBArgs),
}

/// `bench workload-a`
#[derive(Debug, Clone, Args)]
pub struct WorkloadAArgs {
    /// Number of jobs (no-op runs) to enqueue.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// Jobs per EnqueueBatch call.
    #[arg(long, value_name = "B", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Batches in flight at once, each on its own connection.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Real `worker-agent` processes spawned once the jobs are queued.
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub agents: u64,
    /// Capacity (slots) of each agent.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// The agent binary [default: `worker-agent` next to this executable].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<std::path::PathBuf>,
    /// Give up when no job completes for this long.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = crate::cli::parse_ms)]
    pub stall_timeout: u64,
}

/// `bench workload-b`
#[derive(Debug, Clone, Args)]
pub struct WorkloadBArgs {
    /// Number of jobs, enqueued one per Enqueue call.
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// Arrivals per second (fixed clock, open loop).
    #[arg(long, value_name = "R", default_value_t = 500.0, value_parser = positive_f64)]
    pub rate: f64,
    /// Connections the Enqueue calls are spread over (round-robin).
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Real `worker-agent` processes the bench spawns (0: use the agents
    /// already connected, with job bench.noop).
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=256))]
    pub agents: u64,
    /// Capacity (slots) of each spawned agent.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// The agent binary [default: `worker-agent` next to this executable].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<std::path::PathBuf>,
    /// How long to wait for outstanding results after the last arrival.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::cli::parse_ms)]
    pub grace: u64,
}

/// Which bench job the runs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchJob {
    /// `bench.noop`: builtin noop.
    Noop,
    /// `bench.sleep`: builtin sleep 10ms.
    Sleep,
}

impl BenchJob {
    /// The job name.
    pub fn name(self) -> &'static str {
        match self {
            BenchJob::Noop => "bench.noop",
            BenchJob::Sleep => "bench.sleep",
        }
    }
}

/// `bench burn-down`
#[derive(Debug, Clone, Args)]
pub struct BurnDownArgs {
    /// Number of runs to enqueue.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// Runs per EnqueueBatch call.
    #[arg(long, value_name = "B", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Batches in flight at once, each on its own connection.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Job of the runs: noop (bench.noop) or sleep (bench.sleep, 10ms).
    #[arg(long, value_enum, default_value_t = BenchJob::Noop)]
    pub job: BenchJob,
    /// Give up when no run completes for this long.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = crate::cli::parse_ms)]
    pub stall_timeout: u64,
}

/// `bench rate`
#[derive(Debug, Clone, Args)]
pub struct RateArgs {
    /// Arrivals per second (fixed clock, open loop).
    #[arg(long, value_name = "R", default_value_t = 100.0, value_parser = positive_f64)]
    pub rate: f64,
    /// How long arrivals go on (e.g. 10s, 1m).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = positive_ms)]
    pub duration: u64,
    /// Connections the Enqueue calls are spread over (round-robin).
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Job of the runs: noop (bench.noop) or sleep (bench.sleep, 10ms).
    #[arg(long, value_enum, default_value_t = BenchJob::Noop)]
    pub job: BenchJob,
    /// How long to wait for outstanding results after the last arrival.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = crate::cli::parse_ms)]
    pub grace: u64,
}

/// `bench schedules`
#[derive(Debug, Clone, Args)]
pub struct SchedulesArgs {
    /// Number of cron schedules (jobs `bench.sched.<i>`), all due at the same second.
    #[arg(long, value_name = "S", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub count: u64,
    /// Time from now to the common fire instant (default max(5s, S/5000 s)).
    #[arg(long, value_name = "DUR", value_parser = positive_ms)]
    pub lead: Option<u64>,
    /// How long after the fire instant to wait for all fires (default max(10s, S/1000 s)).
    #[arg(long, value_name = "DUR", value_parser = positive_ms)]
    pub grace: Option<u64>,
    /// Leave the `bench.sched.*` jobs defined instead of deleting them one by one
    /// afterwards (slow for large S); meant for a throwaway controller, where
    /// they go on firing.
    #[arg(long)]
    pub keep: bool,
}

/// `bench preload`
///
/// Three modes (see [`PreloadArgs::mode`]): enqueue Q runs and drain them (the
/// default), enqueue Q runs and leave them queued (`--hold`), or drain N runs
/// queued earlier (`--existing N`, e.g. after a controller restart).
#[derive(Debug, Clone, Args)]
pub struct PreloadArgs {
    /// Runs enqueued before any agent can take them (0, the default with
    /// --existing: enqueue nothing).
    #[arg(
        long,
        value_name = "Q",
        default_value_t = 100_000,
        default_value_if("existing", clap::builder::ArgPredicate::IsPresent, "0")
    )]
    pub queued: u64,
    /// Enqueue the Q runs, report the enqueue rate and the controller's memory
    /// with them queued, then exit without starting any agent: nothing is
    /// drained, the runs stay queued (e.g. for a controller restart).
    #[arg(long, conflicts_with_all = ["existing", "agents", "capacity", "measure", "stall_timeout"])]
    pub hold: bool,
    /// Enqueue nothing: N runs of bench.preload are already queued (e.g. left by
    /// --hold before a controller restart); the simulated agents drain them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub existing: Option<u64>,
    /// Simulated agents started once the runs are queued (labels bench=preload).
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub agents: u64,
    /// Capacity (slots) of each simulated agent.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// The dispatch rate is measured over the first M runs (default min(Q or N, 50000)).
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub measure: Option<u64>,
    /// Runs per EnqueueBatch call.
    #[arg(long, value_name = "B", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Batches in flight at once, each on its own connection.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Give up when no run completes for this long.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = crate::cli::parse_ms)]
    pub stall_timeout: u64,
}

/// What `bench preload` does, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreloadMode {
    /// Enqueue this many runs, then drain them with simulated agents.
    Drain(u64),
    /// Enqueue this many runs and exit: nothing is drained (`--hold`).
    Hold(u64),
    /// Drain this many runs queued before the bench started (`--existing`).
    Existing(u64),
}

impl PreloadMode {
    /// The mode's name in the results (`enqueue-drain`, `hold`, `existing`).
    pub fn name(self) -> &'static str {
        match self {
            PreloadMode::Drain(_) => "enqueue-drain",
            PreloadMode::Hold(_) => "hold",
            PreloadMode::Existing(_) => "existing",
        }
    }

    /// Runs the bench enqueues itself.
    pub fn enqueues(self) -> u64 {
        match self {
            PreloadMode::Drain(q) | PreloadMode::Hold(q) => q,
            PreloadMode::Existing(_) => 0,
        }
    }

    /// Runs the simulated agents must drain (0 with `--hold`).
    pub fn drains(self) -> u64 {
        match self {
            PreloadMode::Drain(n) | PreloadMode::Existing(n) => n,
            PreloadMode::Hold(_) => 0,
        }
    }
}

impl PreloadArgs {
    /// The mode the flags ask for: exactly one of `--queued Q` (Q > 0) or
    /// `--existing N`; `--hold` needs Q > 0 (clap already refuses `--hold` with
    /// `--existing`). A usage error (exit 2) otherwise.
    pub fn mode(&self) -> Result<PreloadMode, CliError> {
        match (self.existing, self.queued, self.hold) {
            (Some(_), _, true) => Err(CliError::usage(
                "bench preload: --hold and --existing exclude each other",
            )),
            (Some(n), 0, false) => Ok(PreloadMode::Existing(n)),
            (Some(_), q, false) => Err(CliError::usage(format!(
                "bench preload: --queued {q} and --existing exclude each other: with --existing N the bench \
                 enqueues nothing (leave out --queued, or pass --queued 0)"
            ))),
            (None, 0, true) => Err(CliError::usage(
                "bench preload: --hold needs runs to enqueue: pass --queued Q with Q > 0",
            )),
            (None, 0, false) => Err(CliError::usage(
                "bench preload: --queued 0 enqueues nothing: pass --existing N to drain N runs already queued, \
                 or --queued Q with Q > 0",
            )),
            (None, q, true) => Ok(PreloadMode::Hold(q)),
            (None, q, false) => Ok(PreloadMode::Drain(q)),
        }
    }
}

/// `bench agents`
#[derive(Debug, Clone, Args)]
pub struct AgentsArgs {
    /// Number of simulated agents (Hello + heartbeats, no credits).
    #[arg(long, value_name = "A", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub count: u64,
    /// Agent streams per HTTP/2 connection (1 = one TCP connection per agent;
    /// raise it for large counts, or raise `ulimit -n`).
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub per_connection: u64,
    /// Give up when the controller has not counted all agents after this long.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = positive_ms)]
    pub timeout: u64,
}

fn positive_f64(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got `{text}`")),
    }
}

fn positive_ms(text: &str) -> Result<u64, String> {
    match crate::cli::parse_ms(text).map_err(|e| e.to_string())? {
        0 => Err("must be more than 0".into()),
        ms => Ok(ms),
    }
}

/// Connection settings shared by the scenarios.
#[derive(Debug, Clone)]
pub struct Target {
    /// The controller URL, with its scheme.
    pub url: String,
    /// API token.
    pub token: Option<String>,
}

impl Target {
    /// A new controller client on its own connection.
    pub fn client(&self) -> Result<Client, CliError> {
        client::connect(&self.url, self.token.as_deref())
    }

    /// `n` clients, each on its own connection.
    pub fn clients(&self, n: u64) -> Result<Vec<Client>, CliError> {
        (0..n.max(1)).map(|_| self.client()).collect()
    }

    /// A lazily connected channel (for agent streams).
    pub fn channel(&self) -> Result<Channel, CliError> {
        Ok(Endpoint::from_shared(self.url.clone())
            .map_err(|e| CliError::usage(format!("--controller: invalid URL `{}`: {e}", self.url)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy())
    }

    /// The interceptor adding the token.
    pub fn auth(&self) -> Result<Auth, CliError> {
        Auth::new(self.token.as_deref())
    }
}

/// The controller as ServerInfo describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Controller version.
    pub version: String,
    /// Controller process id.
    pub pid: u32,
    /// Store kind: sqlite or postgres.
    pub store: String,
    /// When the controller started (RFC 3339).
    pub started_at: String,
    /// Resident set size of the controller process, in bytes (0 if unknown).
    pub rss_bytes: u64,
    /// Agents connected now.
    pub connected_agents: u64,
    /// Runs not yet terminal, held in memory.
    pub live_runs: u64,
}

impl From<pb::ServerInfoResponse> for Server {
    fn from(s: pb::ServerInfoResponse) -> Self {
        Self {
            version: s.version,
            pid: s.pid,
            store: s.store,
            started_at: s.started_at,
            rss_bytes: s.rss_bytes,
            connected_agents: s.connected_agents,
            live_runs: s.live_runs,
        }
    }
}

/// Reads ServerInfo.
pub async fn server_info(client: &mut Client) -> Result<Server, tonic::Status> {
    Ok(client.server_info(pb::ServerInfoRequest {}).await?.into_inner().into())
}

/// Applies the base jobs plus `extra` (YAML lines under `jobs:`).
pub async fn apply_jobs(client: &mut Client, extra: &str) -> Result<pb::ApplyJobsResponse, tonic::Status> {
    let yaml = format!("jobs:\n{BASE_JOBS}{extra}");
    Ok(client
        .apply_jobs(pb::ApplyJobsRequest {
            yaml,
            source_name: SOURCE.to_string(),
        })
        .await?
        .into_inner())
}

/// Deletes a job; a job that is gone already or cannot be deleted
/// (FailedPrecondition) is not an error. Returns whether it was deleted.
pub async fn delete_job(client: &mut Client, name: &str) -> Result<bool, tonic::Status> {
    match client.delete_job(pb::DeleteJobRequest { name: name.to_string() }).await {
        Ok(_) => Ok(true),
        Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => Ok(false),
        Err(s) => Err(s),
    }
}

/// The outcome of a scenario: what it measured, and what went wrong.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Exact configuration (defaults resolved).
    pub config: serde_json::Value,
    /// ServerInfo read before the scenario.
    pub server: Server,
    /// The measurements.
    pub results: serde_json::Value,
    /// False when the benchmark could not complete.
    pub ok: bool,
    /// Why not.
    pub problems: Vec<String>,
}

impl Report {
    /// The report of `scenario`: `ok` when nothing went wrong.
    pub fn new(
        scenario: &'static str,
        config: serde_json::Map<String, serde_json::Value>,
        server: Server,
        results: &impl Serialize,
        problems: Vec<String>,
    ) -> anyhow::Result<Report> {
        Ok(Report {
            scenario,
            config: serde_json::Value::Object(config),
            server,
            results: serde_json::to_value(results)?,
            ok: problems.is_empty(),
            problems,
        })
    }
}

/// Printer of the configuration (table mode: at once) and of the results.
pub struct Printer {
    format: Format,
}

impl Printer {
    /// Prints the configuration block in table mode.
    pub fn config(&self, scenario: &str, config: &[(&str, String)], server: &Server) {
        if self.format != Format::Table {
            return;
        }
        let mut pairs: Vec<(&str, String)> = vec![("scenario", scenario.to_string())];
        pairs.extend(config.iter().cloned());
        pairs.push((
            "server",
            format!(
                "worker-controller {} pid {} store {} (rss {}, {} agents, {} live runs)",
                server.version,
                server.pid,
                server.store,
                mib(server.rss_bytes),
                server.connected_agents,
                server.live_runs
            ),
        ));
        print!("Configuration\n{}\n", indent(&key_values(&pairs)));
    }
}

/// `  ` before each line.
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A rate with one decimal.
pub fn per_sec(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        round(count as f64 / seconds, 1)
    } else {
        0.0
    }
}

/// `value` rounded to `decimals`.
pub fn round(value: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value * f).round() / f
}

/// Seconds of a duration, rounded to the millisecond.
pub fn secs(d: Duration) -> f64 {
    round(d.as_secs_f64(), 3)
}

/// Runs `workerctl bench ...` on a multi-threaded runtime of its own (the CLI's
/// runtime is single-threaded, too slow to drive a load).
/// With several controller addresses the leader is found once, and the
/// scenario runs against it alone.
pub async fn run(cmd: BenchCmd, controller: &str, token: Option<String>, format: Format) -> anyhow::Result<()> {
    let controller = controller.to_string();
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let target = Target {
                url: leader_of(&controller, token.as_deref()).await?,
                token,
            };
            run_scenario(cmd, target, format).await
        })
    })
    .await?
}

/// The address of `controllers` that leads: the only one, or the one that
/// takes a `ServerInfo` call.
async fn leader_of(controllers: &str, token: Option<&str>) -> anyhow::Result<String> {
    let urls = client::parse_controllers(controllers)?;
    if let [url] = urls.as_slice() {
        return Ok(url.clone());
    }
    let channel = client::channel(controllers, &crate::tls::TlsArgs::default())?;
    let mut client = worker_proto::v1::controller_service_client::ControllerServiceClient::with_interceptor(
        channel.clone(),
        Auth::new(token)?,
    );
    client.server_info(pb::ServerInfoRequest {}).await?;
    Ok(channel.current())
}

async fn run_scenario(cmd: BenchCmd, target: Target, format: Format) -> anyhow::Result<()> {
    let printer = Printer { format };
    let scenario = async {
        Ok::<_, anyhow::Error>(match cmd {
            BenchCmd::BurnDown(args) => burn_down::run(&target, &printer, args).await?,
            BenchCmd::Rate(args) => rate::run(&target, &printer, args).await?,
            BenchCmd::Schedules(args) => schedules::run(&target, &printer, args).await?,
            BenchCmd::Preload(args) => preload::run(&target, &printer, args).await?,
            BenchCmd::Agents(args) => agents::run(&target, &printer, args).await?,
            BenchCmd::WorkloadA(args) => workload_a::run(&target, &printer, args).await?,
            BenchCmd::WorkloadB(args) => workload_b::run(&target, &printer, args).await?,
        })
    };
    // Dropping the scenario on a signal drops what it owns: spawned agents
    // are killed (kill_on_drop), connections closed.
    let (report, table) = tokio::select! {
        done = scenario => done?,
        signal = interrupted() => {
            return Err(CliError {
                code: INTERRUPTED,
                message: format!("bench interrupted by {signal}"),
            }
            .into());
        }
    };
    emit(format, &report, || {
        let mut text = format!("Results\n{}", indent(&table));
        if !report.problems.is_empty() {
            text.push_str("Problems\n");
            for p in &report.problems {
                text.push_str(&format!("  - {p}\n"));
            }
        }
        text
    })?;
    if report.ok {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "the {} benchmark did not complete: {}",
            report.scenario,
            report.problems.join("; ")
        ))
        .into())
    }
}

/// Exit code of an interrupted bench (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

/// Waits for Ctrl-C or SIGTERM; returns its name.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Common `config` fields.
pub fn base_config(target: &Target) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("controller".into(), target.url.clone().into());
    map.insert("workerctl_version".into(), env!("CARGO_PKG_VERSION").into());
    map
}

/// Progress line on stderr.
pub fn progress(text: impl AsRef<str>) {
    eprintln!("bench: {}", text.as_ref());
}

/// Enqueues `total` runs of `job` in batches of `batch`, `concurrency` batches in
/// flight (each on its own connection). Returns the wall time of the whole.
pub async fn enqueue_batches(
    target: &Target,
    job: &str,
    total: u64,
    batch: u64,
    concurrency: u64,
) -> anyhow::Result<Duration> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let batches = total.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in target.clients(concurrency.min(batches))? {
        let next = next.clone();
        let job = job.to_string();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    return Ok::<(), tonic::Status>(());
                }
                let n = batch.min(total - i * batch);
                let runs = (0..n)
                    .map(|_| pb::EnqueueRequest {
                        job: job.clone(),
                        trigger: "api".into(),
                        ..Default::default()
                    })
                    .collect();
                client.enqueue_batch(pb::EnqueueBatchRequest { runs }).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn bench(args: &[&str]) -> Result<BenchCmd, clap::Error> {
        let cli = Cli::try_parse_from(["workerctl", "bench"].iter().chain(args.iter()).copied())?;
        match cli.command {
            Command::Bench { command } => Ok(command),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn burn_down_defaults_and_flags() {
        let BenchCmd::BurnDown(a) = bench(&["burn-down"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.jobs, a.batch, a.concurrency, a.job),
            (10_000, 500, 4, BenchJob::Noop)
        );
        let BenchCmd::BurnDown(a) = bench(&[
            "burn-down",
            "--jobs",
            "2000",
            "--batch",
            "100",
            "--concurrency",
            "2",
            "--job",
            "sleep",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!((a.jobs, a.batch, a.concurrency, a.job), (2000, 100, 2, BenchJob::Sleep));
        assert!(bench(&["burn-down", "--jobs", "0"]).is_err());
        assert!(bench(&["burn-down", "--job", "shell"]).is_err());
    }

    #[test]
    fn rate_flags() {
        let BenchCmd::Rate(a) = bench(&["rate", "--rate", "200", "--duration", "3s"]).unwrap() else {
            panic!()
        };
        assert_eq!((a.rate, a.duration, a.grace, a.concurrency), (200.0, 3000, 10_000, 8));
        let BenchCmd::Rate(a) = bench(&["rate", "--rate", "0.5"]).unwrap() else {
            panic!()
        };
        assert_eq!((a.rate, a.duration), (0.5, 10_000));
        assert!(bench(&["rate", "--rate", "0"]).is_err());
        assert!(bench(&["rate", "--rate", "-3"]).is_err());
        assert!(bench(&["rate", "--rate", "nan"]).is_err());
        assert!(bench(&["rate", "--duration", "0s"]).is_err());
    }

    #[test]
    fn workload_flags() {
        let BenchCmd::WorkloadA(a) = bench(&["workload-a"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.jobs, a.batch, a.agents, a.capacity, a.agent_bin),
            (100_000, 1000, 2, 64, None)
        );
        let BenchCmd::WorkloadA(a) = bench(&[
            "workload-a",
            "--jobs",
            "200",
            "--agents",
            "1",
            "--agent-bin",
            "/x/worker-agent",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!((a.jobs, a.agents), (200, 1));
        assert_eq!(a.agent_bin.as_deref(), Some(std::path::Path::new("/x/worker-agent")));
        assert!(bench(&["workload-a", "--agents", "0"]).is_err());
        assert!(bench(&["workload-a", "--jobs", "0"]).is_err());

        let BenchCmd::WorkloadB(b) = bench(&["workload-b"]).unwrap() else {
            panic!()
        };
        assert_eq!((b.jobs, b.rate, b.agents, b.grace), (5000, 500.0, 2, 10_000));
        let BenchCmd::WorkloadB(b) = bench(&["workload-b", "--rate", "5000", "--agents", "0"]).unwrap() else {
            panic!()
        };
        assert_eq!((b.rate, b.agents), (5000.0, 0));
        assert!(bench(&["workload-b", "--rate", "0"]).is_err());
    }

    fn preload(args: &[&str]) -> Result<PreloadArgs, clap::Error> {
        let all: Vec<&str> = ["preload"].iter().chain(args.iter()).copied().collect();
        match bench(&all)? {
            BenchCmd::Preload(a) => Ok(a),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn preload_hold_and_existing() {
        // Default: enqueue 100000 and drain them.
        let a = preload(&[]).unwrap();
        assert_eq!((a.queued, a.hold, a.existing), (100_000, false, None));
        assert_eq!(a.mode().unwrap(), PreloadMode::Drain(100_000));

        // --hold: enqueue Q, drain nothing.
        let a = preload(&["--queued", "1000000", "--hold"]).unwrap();
        assert_eq!(a.mode().unwrap(), PreloadMode::Hold(1_000_000));
        assert_eq!(
            (a.mode().unwrap().enqueues(), a.mode().unwrap().drains()),
            (1_000_000, 0)
        );
        assert_eq!(a.mode().unwrap().name(), "hold");

        // --existing N, with --queued 0 or without --queued: enqueue nothing, drain N.
        for args in [
            &["--queued", "0", "--existing", "20000", "--measure", "500"][..],
            &["--existing", "20000", "--measure", "500"][..],
        ] {
            let a = preload(args).unwrap();
            assert_eq!(
                (a.queued, a.existing, a.measure),
                (0, Some(20_000), Some(500)),
                "{args:?}"
            );
            let mode = a.mode().unwrap();
            assert_eq!(mode, PreloadMode::Existing(20_000));
            assert_eq!((mode.enqueues(), mode.drains(), mode.name()), (0, 20_000, "existing"));
        }

        // Usage errors (exit 2): either from clap, or from mode().
        let usage = |args: &[&str]| match preload(args) {
            Err(e) => assert_eq!(e.exit_code(), 2, "{args:?}: {e}"),
            Ok(a) => assert_eq!(a.mode().unwrap_err().code, crate::error::USAGE, "{args:?}"),
        };
        usage(&["--queued", "0"]); // nothing to enqueue, nothing existing
        usage(&["--queued", "5", "--existing", "5"]); // both
        usage(&["--queued", "0", "--hold"]); // nothing to hold
        usage(&["--existing", "5", "--hold"]);
        usage(&["--existing", "0"]);
        usage(&["--hold", "--measure", "10"]); // agent flags mean nothing with --hold
        usage(&["--hold", "--agents", "3"]);
        usage(&["--queued", "-1"]);
        assert!(preload(&["--existing", "5", "--hold"]).is_err(), "clap refuses it");
    }

    #[test]
    fn other_scenarios_parse() {
        let BenchCmd::Schedules(a) = bench(&["schedules", "--count", "100"]).unwrap() else {
            panic!()
        };
        assert_eq!((a.count, a.lead, a.grace), (100, None, None));
        let BenchCmd::Schedules(a) = bench(&["schedules", "--lead", "20s"]).unwrap() else {
            panic!()
        };
        assert_eq!(a.lead, Some(20_000));
        let BenchCmd::Preload(a) = bench(&["preload", "--queued", "5000"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.queued, a.agents, a.capacity, a.measure, a.batch),
            (5000, 2, 64, None, 1000)
        );
        let BenchCmd::Agents(a) = bench(&["agents", "--count", "50", "--per-connection", "10"]).unwrap() else {
            panic!()
        };
        assert_eq!((a.count, a.per_connection), (50, 10));
        assert!(bench(&["agents", "--count", "0"]).is_err());
        assert!(bench(&[]).is_err());
        // The global flags work after the scenario too.
        let cli = Cli::try_parse_from(["workerctl", "bench", "agents", "-o", "json", "--controller", "x:1"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.controller, "x:1");
    }
}
