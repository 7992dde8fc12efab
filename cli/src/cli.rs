//! The clap command tree of `workerctl` (design §11).
//!
//! The seed's command names are kept as aliases: `list` is `jobs list`, `job NAME`
//! is `jobs run NAME`, `schedules` is `schedules list`.

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Default address of the controller's gRPC endpoint.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7070";

/// `workerctl`: the command-line client of the Worker controller.
#[derive(Debug, Parser)]
#[command(name = "workerctl", version, about, propagate_version = true)]
pub struct Cli {
    /// gRPC address of the controller.
    #[arg(long, global = true, env = "WORKER_CONTROLLER", default_value = DEFAULT_CONTROLLER)]
    pub controller: String,

    /// API token, sent as `authorization: Bearer <token>` on every call.
    #[arg(long, global = true, env = "WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Output format: human-readable table, or JSON / YAML for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Job definitions: list, inspect, run.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Same as `jobs list`.
    List,
    /// Same as `jobs run NAME`.
    Job(EnqueueArgs),
    /// Enqueue one run of a job (trigger `api`).
    Enqueue(EnqueueArgs),
    /// Runs: list, inspect, cancel, retry.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// The queue of runs waiting for an agent.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// The dead-letter queue: runs in state `dead`.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Connected agents.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Cron schedules of the jobs (`schedules` alone lists them).
    Schedules {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<SchedulesCmd>,
    },
}

/// `workerctl jobs ...`
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List the defined jobs.
    List,
    /// Show one job and its run statistics.
    Get {
        /// Job name.
        name: String,
    },
    /// Run a job now (trigger `manual`).
    Run(EnqueueArgs),
}

/// Arguments of `enqueue`, `jobs run` and `job`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Job name.
    pub job: String,

    /// Payload: JSON text passed to the controller as is; `@FILE` reads it from a
    /// file, `@-` from stdin.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,

    /// Priority of this run: low | normal | high | critical (default: the job's).
    #[arg(long, value_name = "P")]
    pub priority: Option<String>,

    /// Wait until the run ends and print it; exit 1 unless it succeeded.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this long (e.g. 30s, 5m, 1h30m; 0 = never).
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = crate::duration::parse_ms)]
    pub timeout: Option<u64>,
}

/// `workerctl runs ...`
#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// List runs, newest first.
    List {
        /// Only runs of this job.
        #[arg(long, value_name = "J")]
        job: Option<String>,
        /// Only runs in this state: scheduled | blocked | queued | running |
        /// succeeded | dead | cancelled.
        #[arg(long, value_name = "S")]
        state: Option<String>,
        /// At most this many runs (default 50).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Show one run with its attempts and the output of the last attempt.
    Get {
        /// Run id.
        id: String,
    },
    /// Cancel a run that has not ended.
    Cancel {
        /// Run id.
        id: String,
    },
    /// Retry a run: a dead run is queued again, a cancelled or succeeded run is
    /// copied into a new run.
    Retry {
        /// Run id.
        id: String,
    },
}

/// `workerctl queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Counts of runs per state and per priority.
    Stats,
    /// Queued runs in dispatch order.
    List {
        /// At most this many runs (default 50).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// `workerctl dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead runs.
    List {
        /// At most this many runs (default 50).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Queue dead runs again with a renewed attempt budget.
    Retry(DlqTarget),
    /// Delete dead runs.
    Purge(DlqTarget),
}

/// Which dead runs a `dlq retry|purge` acts on: exactly one of ID or `--all`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct DlqTarget {
    /// Run id.
    pub id: Option<String>,
    /// Every dead run.
    #[arg(long)]
    pub all: bool,
}

/// `workerctl agents ...`
#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List the agents known to the controller.
    List,
}

/// `workerctl schedules ...`
#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// List the schedules with their next fire.
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dlq_requires_exactly_one_target() {
        assert!(Cli::try_parse_from(["workerctl", "dlq", "retry"]).is_err());
        assert!(Cli::try_parse_from(["workerctl", "dlq", "purge", "X", "--all"]).is_err());
        assert!(Cli::try_parse_from(["workerctl", "dlq", "purge", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["workerctl", "dlq", "retry", "X"]).is_ok());
    }

    #[test]
    fn timeout_requires_wait() {
        assert!(Cli::try_parse_from(["workerctl", "enqueue", "j", "--timeout", "5s"]).is_err());
        let cli = Cli::try_parse_from(["workerctl", "enqueue", "j", "--wait", "--timeout", "5s"]).unwrap();
        match cli.command {
            Command::Enqueue(args) => assert_eq!(args.timeout, Some(5000)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn aliases_and_global_flags() {
        let cli = Cli::try_parse_from(["workerctl", "list", "-o", "json"]).unwrap();
        assert!(matches!(cli.command, Command::List));
        assert_eq!(cli.output, Format::Json);
        let cli = Cli::try_parse_from(["workerctl", "schedules"]).unwrap();
        assert!(matches!(cli.command, Command::Schedules { command: None }));
        let cli = Cli::try_parse_from(["workerctl", "job", "backup", "--wait"]).unwrap();
        assert!(matches!(cli.command, Command::Job(ref a) if a.job == "backup" && a.wait));
    }
}
