//! The clap command tree of `workerctl`.
//!
//! The seed's command names are kept as aliases: `list` is `jobs list`, `job NAME`
//! is `jobs run NAME`, `schedules` is `schedules list`.

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// A duration flag (`--delay`, `--timeout`, the bench durations) in milliseconds,
/// as the API takes them. The text is read by [`worker_duration::parse`], the
/// grammar the controller and the agent use too: `250ms`, `30s`, `1h30m`, a bare
/// `0`; any other bare number is refused.
pub fn parse_ms(text: &str) -> Result<u64, worker_duration::DurationError> {
    // At most worker_duration::MAX (100 years): the milliseconds fit in a u64.
    worker_duration::parse(text).map(|d| d.as_millis() as u64)
}

/// Default address of the controller's gRPC endpoint.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7070";

/// `workerctl`: the command-line client of the Worker controller.
#[derive(Debug, Parser)]
#[command(name = "workerctl", version, about, propagate_version = true)]
pub struct Cli {
    /// gRPC address of the controller, or a comma-separated list of the
    /// addresses of several controllers on one database: every call goes to
    /// the one that leads (a standby names it).
    #[arg(long, global = true, env = "WORKER_CONTROLLER", default_value = DEFAULT_CONTROLLER, value_name = "URL[,URL...]")]
    pub controller: String,

    /// API token, sent as `authorization: Bearer <token>` on every call.
    #[arg(long, global = true, env = "WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// TLS to an https:// controller: --tls-ca, --tls-cert, --tls-key.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

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
    Job(JobRunArgs),
    /// Enqueue one run of a job (trigger `api`), or a batch of runs (`--batch`).
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
    /// Alert channels, rules and history; test messages.
    #[command(subcommand)]
    Alerts(AlertsCmd),
    /// API tokens with roles: create, list, revoke (admin only).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Cron schedules of the jobs (`schedules` alone lists them).
    Schedules {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<SchedulesCmd>,
    },
    /// Create or replace the jobs a scheduler.yaml document defines (atomically).
    Apply {
        /// The document; `-` reads stdin.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// The controller's version, store, agents and who leads (with several
    /// --controller addresses, the leader answers).
    Status,
    /// Print the current job definitions as a document `apply` accepts (YAML,
    /// whatever `-o` says).
    Export,
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell
    /// (`workerctl completions bash > /etc/bash_completion.d/workerctl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for workerctl and each of its commands into DIR
    /// (`workerctl.1`, `workerctl-runs-list.1`, ...).
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR", default_value = "man")]
        dir: std::path::PathBuf,
    },
    /// Benchmark a running controller: burn-down, rate, schedules, preload, agents,
    /// workload-a, workload-b.
    ///
    /// burn-down, rate and schedules need a controller that already runs with real
    /// agents (executor `builtin`); preload and agents start simulated agents of
    /// their own; workload-a and workload-b spawn real `worker-agent` processes. The exact configuration is printed with the results (`-o json`:
    /// one object {scenario, config, server, results, ok, problems}).
    Bench {
        /// The scenario.
        #[command(subcommand)]
        command: crate::bench::BenchCmd,
    },
    /// The job catalog: browse, preview, install, rate and review job packs,
    /// publish one, (re)write a pack's checksums (docs/catalog.md).
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Backups made by the `backup` builtin: list them, restore one
    /// (docs/backup.md). Reads the directory or bucket directly; the
    /// controller is not called.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Scaffold a job: its definition added to scheduler.yaml (comments and
    /// layout kept), a script or a Rust handler crate, and a test. Never
    /// overwrites anything; talks to no controller.
    CreateJob(crate::commands::create_job::CreateJobArgs),
}

/// `workerctl catalog ...`
#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Every pack of every source (newest version), with its rating.
    List {
        /// Only this source (`published`, `directory` or a remote's name).
        #[arg(long)]
        source: Option<String>,
    },
    /// The packs whose name, description or author contain TEXT.
    Search {
        /// Text to look for (any case).
        text: String,
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// One pack: manifest, variables, reviews and every file's content.
    Show {
        /// `NAME` or `NAME@VERSION`.
        pack: String,
        /// The source to take it from (default: the first that has it).
        #[arg(long)]
        source: Option<String>,
    },
    /// Verify a pack's checksums, ask for its variables and apply its jobs.
    Install {
        /// `NAME` or `NAME@VERSION`.
        pack: String,
        /// The source to take it from (default: the first that has it).
        #[arg(long)]
        source: Option<String>,
        /// A variable's value (repeatable); a secret takes a `${VAR}` reference.
        #[arg(long = "set", value_name = "VAR=VALUE")]
        set: Vec<String>,
    },
    /// Rate a pack from 1 to 5 (one rating per token; a new one replaces it).
    Rate {
        /// Pack name.
        name: String,
        /// 1 to 5.
        rating: u32,
        /// The source of the pack.
        #[arg(long)]
        source: Option<String>,
    },
    /// Review a pack (one review per token; a new one replaces it).
    Review {
        /// Pack name.
        name: String,
        /// The review.
        text: String,
        /// The source of the pack.
        #[arg(long)]
        source: Option<String>,
    },
    /// Verify a pack directory's checksums and publish it to the controller.
    Publish {
        /// The pack directory (holding pack.yaml).
        dir: std::path::PathBuf,
    },
    /// (Re)write the `files:` checksums of DIR/pack.yaml from the files in DIR
    /// (no controller needed).
    Checksum {
        /// The pack directory.
        dir: std::path::PathBuf,
    },
}

/// `workerctl backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// List the backups of a directory or S3 location, newest first.
    List {
        /// Where: a directory, or s3://BUCKET/PREFIX.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: String,
        #[command(flatten)]
        s3: BackupS3Args,
    },
    /// Restore a backup: its SHA-256 is checked against its manifest before
    /// anything is written; a SQLite backup becomes a new database file, a
    /// PostgreSQL one is loaded with pg_restore into a database without tables.
    Restore {
        /// The backup id (`workerctl backup list` shows it).
        id: String,
        /// Where the backup is: a directory, or s3://BUCKET/PREFIX.
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        from: String,
        /// Restore into: a new SQLite file PATH, or postgres://URL.
        #[arg(long, value_name = "PATH|postgres://URL")]
        to: String,
        /// Replace an existing file, or restore into a database that has
        /// tables (pg_restore --clean). Never do this over a running store.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        s3: BackupS3Args,
    },
}

/// The S3 options of `workerctl backup`; credentials come from the
/// standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
/// AWS_SESSION_TOKEN).
#[derive(Debug, Clone, clap::Args)]
pub struct BackupS3Args {
    /// The S3 endpoint URL (default: AWS).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
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
    Run(JobRunArgs),
    /// Enable a job (its schedule fires again).
    Enable {
        /// Job name.
        name: String,
    },
    /// Disable a job (its schedule stops firing).
    Disable {
        /// Job name.
        name: String,
    },
    /// Delete a job definition.
    Delete {
        /// Job name.
        name: String,
    },
}

/// Arguments of `jobs run` and `job`.
#[derive(Debug, Clone, Args)]
pub struct JobRunArgs {
    /// Job name.
    pub job: String,

    /// Options of the run.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Arguments of `enqueue`: one job, or `--batch FILE`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// Job name (absent with --batch).
    #[arg(required_unless_present = "batch")]
    pub job: Option<String>,

    /// Enqueue the runs described in FILE (a JSON array, `-` = stdin) atomically.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["job", "payload", "priority", "depends_on", "key", "delay", "at", "wait", "timeout", "follow"]
    )]
    pub batch: Option<String>,

    /// Options of the run.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Options of one run, shared by `enqueue`, `jobs run` and `job`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunOptions {
    /// Payload: JSON text passed to the controller as is; `@FILE` reads it from a
    /// file, `@-` from stdin.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,

    /// Priority of this run: low | normal | high | critical (default: the job's).
    #[arg(long, value_name = "P")]
    pub priority: Option<String>,

    /// A run id that must succeed before this run starts (repeatable).
    #[arg(long = "depends-on", value_name = "ID")]
    pub depends_on: Vec<String>,

    /// Idempotency key: while a run with this key is unfinished (or within the
    /// controller's window), enqueueing again returns that run.
    #[arg(long, value_name = "K")]
    pub key: Option<String>,

    /// Run no earlier than this long from now (e.g. 250ms, 30s, 5m, 1h30m).
    #[arg(long, value_name = "DUR", value_parser = parse_ms)]
    pub delay: Option<u64>,

    /// Run no earlier than this RFC 3339 instant (checked by the controller).
    #[arg(long, value_name = "TS", conflicts_with = "delay")]
    pub at: Option<String>,

    /// Wait until the run ends and print it; exit 1 unless it succeeded.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up after this long (e.g. 30s, 5m, 1h30m; 0 = never).
    #[arg(long, value_name = "DUR", requires = "wait", value_parser = parse_ms)]
    pub timeout: Option<u64>,

    /// Print the run's output as it arrives, then its result; exit 1 unless
    /// it succeeded (`-o json`: one object per line).
    #[arg(long, conflicts_with = "wait")]
    pub follow: bool,
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
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show one run with its attempts and the output of the last attempt.
    Get {
        /// Run id.
        id: String,
    },
    /// Print a run's output: the stored tail of each attempt, or with
    /// --follow live until the run ends (exit 1 unless it succeeded).
    Logs {
        /// Run id.
        id: String,
        /// Follow the output as the job writes it, then print the result.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a run that has not ended, or every unfinished run of a workflow.
    Cancel(CancelTarget),
    /// Retry a run: a dead run is queued again, a cancelled or succeeded run is
    /// copied into a new run.
    Retry {
        /// Run id.
        id: String,
    },
    /// Delete finished runs past their job's `retention` now (the controller
    /// also does it periodically) and print what was deleted per job.
    Prune {
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
    },
}

/// What `runs cancel` acts on: exactly one of ID or `--workflow`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct CancelTarget {
    /// Run id.
    pub id: Option<String>,
    /// Cancel every unfinished run of this workflow.
    #[arg(long, value_name = "WID")]
    pub workflow: Option<String>,
}

/// `workerctl queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Counts of runs per state and per priority.
    Stats,
    /// Queued runs in dispatch order.
    List {
        /// At most this many runs (default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
}

/// `workerctl dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead runs.
    List {
        /// At most this many runs (default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
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

/// `workerctl alerts ...`
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// List the alert channels (secrets are never shown).
    Channels,
    /// List the alert rules.
    Rules,
    /// Recorded alerts (sent, failed, suppressed), newest first.
    History {
        /// Only this rule's.
        #[arg(long)]
        rule: Option<String>,
        /// Only this channel's.
        #[arg(long)]
        channel: Option<String>,
        /// Only this job's.
        #[arg(long)]
        job: Option<String>,
        /// Only sent, failed or suppressed ones.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (default 50).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Send a test message to a channel (exit 1 if it is not accepted).
    Test {
        /// The channel's name.
        channel: String,
    },
    /// Create or replace a channel from a YAML mapping (with `type`).
    SetChannel {
        /// The channel's name.
        name: String,
        /// The channel's settings; `-` reads stdin.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// Delete a channel (refused while a rule sends to it).
    DeleteChannel {
        /// The channel's name.
        name: String,
    },
    /// Create or replace the rule a YAML mapping names (with `name`).
    SetRule {
        /// The rule; `-` reads stdin.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
    },
    /// Delete a rule.
    DeleteRule {
        /// The rule's name.
        name: String,
    },
}

/// `workerctl tokens ...`
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create a token; its secret is printed this once. The first token
    /// turns authentication on: from then on every call needs a token.
    Create {
        /// Token name (a-z, 0-9, '.', '_', '-').
        name: String,
        /// admin, operator, viewer, enqueuer or agent.
        #[arg(long)]
        role: String,
        /// Lifetime (`30d`, `12h`); default: never expires.
        #[arg(long, value_name = "DURATION", value_parser = worker_duration::parse)]
        expires: Option<std::time::Duration>,
    },
    /// List the tokens (never their secrets).
    List,
    /// Revoke a token at once; its open streams are closed.
    Revoke {
        /// Token name.
        name: String,
    },
}

/// `workerctl agents ...`
#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List the agents known to the controller.
    List,
    /// Drain an agent: it is assigned nothing more, finishes its in-flight
    /// runs and disconnects (an agent already draining is shown as it is).
    Drain {
        /// The agent's id (`workerctl agents list` shows it).
        id: String,
    },
}

/// `workerctl schedules ...`
#[derive(Debug, Subcommand)]
pub enum SchedulesCmd {
    /// List the schedules with their next fire.
    List,
    /// Stop a job's schedule (fires while paused are not caught up).
    Pause {
        /// Job name.
        name: String,
    },
    /// Restart a paused schedule.
    Resume {
        /// Job name.
        name: String,
    },
    /// Preview the next fires of a job's schedule or of a cron expression.
    Next(NextArgs),
}

/// Arguments of `schedules next`: exactly one of NAME or `--cron`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(false).args(["name", "cron"]))]
pub struct NextArgs {
    /// Job name.
    pub name: Option<String>,
    /// A cron expression instead of a job.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// With --cron: IANA time zone (default UTC).
    #[arg(long, value_name = "TZ", conflicts_with = "name")]
    pub tz: Option<String>,
    /// Start after this RFC 3339 instant (default now).
    #[arg(long, value_name = "TS")]
    pub from: Option<String>,
    /// How many fires (default 10, at most 1000).
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// With --cron: a local time in a DST gap is shifted past it or skipped.
    #[arg(long, value_name = "POLICY", conflicts_with = "name", value_parser = ["shift", "skip"])]
    pub dst_gap: Option<String>,
    /// With --cron: a local time repeated by DST fires at its first, last or both occurrences.
    #[arg(long, value_name = "POLICY", conflicts_with = "name", value_parser = ["first", "last", "both"])]
    pub dst_repeat: Option<String>,
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
            Command::Enqueue(args) => assert_eq!(args.run.timeout, Some(5000)),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("workerctl").chain(args.iter().copied()))
    }

    /// `--delay` and `--timeout` read the grammar of `worker_duration`, as the
    /// controller and the agent do: `30s` and a bare `0` are durations, a bare
    /// `30` is refused with the shared message (it used to mean 30 s here only;
    /// the controller's and the agent's tests check the same three inputs).
    #[test]
    fn duration_flags_share_the_grammar() {
        let run = |args: &[&str]| match parse(args).map(|cli| cli.command) {
            Ok(Command::Enqueue(a)) => Ok((a.run.delay, a.run.timeout)),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(run(&["enqueue", "j", "--delay", "30s"]).unwrap(), (Some(30_000), None));
        assert_eq!(run(&["enqueue", "j", "--delay", "0"]).unwrap(), (Some(0), None));
        assert_eq!(
            run(&["enqueue", "j", "--wait", "--timeout", "30s"]).unwrap(),
            (None, Some(30_000))
        );
        assert_eq!(
            run(&["enqueue", "j", "--wait", "--timeout", "0"]).unwrap(),
            (None, Some(0))
        );
        for args in [
            &["enqueue", "j", "--delay", "30"][..],
            &["enqueue", "j", "--wait", "--timeout", "30"],
        ] {
            let err = run(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}");
            let text = err.to_string();
            assert!(
                text.contains(r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#),
                "{text}"
            );
        }
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("36500d"), Ok(3_153_600_000_000));
        assert!(parse_ms("36501d").is_err());
    }

    #[test]
    fn enqueue_run_options() {
        let cli = parse(&[
            "enqueue",
            "j",
            "--depends-on",
            "r1",
            "--depends-on",
            "r2",
            "--key",
            "k1",
            "--delay",
            "1h30m",
        ])
        .unwrap();
        let Command::Enqueue(args) = cli.command else {
            panic!("not enqueue")
        };
        assert_eq!(args.job.as_deref(), Some("j"));
        assert_eq!(args.run.depends_on, ["r1", "r2"]);
        assert_eq!(args.run.key.as_deref(), Some("k1"));
        assert_eq!(args.run.delay, Some(5_400_000));
        assert_eq!(args.run.at, None);

        let cli = parse(&["jobs", "run", "j", "--at", "2026-01-01T00:00:00Z", "--delay", "250ms"]);
        assert_eq!(cli.unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
        let cli = parse(&["job", "j", "--at", "not a time"]).unwrap();
        assert!(matches!(cli.command, Command::Job(ref a) if a.run.at.as_deref() == Some("not a time")));
        assert!(parse(&["enqueue", "j", "--delay", "5x"]).is_err());
    }

    #[test]
    fn batch_excludes_job_and_run_options() {
        let cli = parse(&["enqueue", "--batch", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Enqueue(ref a) if a.batch.as_deref() == Some("-") && a.job.is_none()));
        assert!(parse(&["enqueue"]).is_err());
        for extra in [
            &["j"][..],
            &["--payload", "{}"],
            &["--priority", "high"],
            &["--depends-on", "r1"],
            &["--key", "k"],
            &["--delay", "5s"],
            &["--at", "2026-01-01T00:00:00Z"],
            &["--wait"],
        ] {
            let mut args = vec!["enqueue", "--batch", "f.json"];
            args.extend_from_slice(extra);
            assert!(parse(&args).is_err(), "{extra:?}");
        }
        // `jobs run` has no --batch.
        assert!(parse(&["jobs", "run", "j", "--batch", "f"]).is_err());
    }

    #[test]
    fn cancel_takes_an_id_or_a_workflow() {
        assert!(parse(&["runs", "cancel"]).is_err());
        assert!(parse(&["runs", "cancel", "r1", "--workflow", "w1"]).is_err());
        let cli = parse(&["runs", "cancel", "--workflow", "w1"]).unwrap();
        assert!(
            matches!(cli.command, Command::Runs(RunsCmd::Cancel(ref t)) if t.workflow.as_deref() == Some("w1") && t.id.is_none())
        );
        let cli = parse(&["runs", "cancel", "r1"]).unwrap();
        assert!(matches!(cli.command, Command::Runs(RunsCmd::Cancel(ref t)) if t.id.as_deref() == Some("r1")));
    }

    fn next_args(args: &[&str]) -> Result<NextArgs, clap::Error> {
        let mut all = vec!["schedules", "next"];
        all.extend_from_slice(args);
        match parse(&all)?.command {
            Command::Schedules {
                command: Some(SchedulesCmd::Next(args)),
            } => Ok(args),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn schedules_next_rules() {
        // Exactly one of NAME / --cron.
        assert!(next_args(&[]).is_err());
        assert!(next_args(&["backup", "--cron", "0 3 * * *"]).is_err());
        let a = next_args(&["backup", "--count", "3", "--from", "2026-03-29T00:00:00Z"]).unwrap();
        assert_eq!((a.name.as_deref(), a.count, a.cron), (Some("backup"), Some(3), None));
        // --tz and --dst-* only with --cron.
        for extra in [
            ["--tz", "Europe/Paris"],
            ["--dst-gap", "skip"],
            ["--dst-repeat", "both"],
        ] {
            let mut args = vec!["backup"];
            args.extend_from_slice(&extra);
            assert!(next_args(&args).is_err(), "{extra:?}");
        }
        let a = next_args(&[
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Paris",
            "--dst-gap",
            "skip",
            "--dst-repeat",
            "last",
        ])
        .unwrap();
        assert_eq!(a.tz.as_deref(), Some("Europe/Paris"));
        assert_eq!(
            (a.dst_gap.as_deref(), a.dst_repeat.as_deref()),
            (Some("skip"), Some("last"))
        );
        // Policies are checked.
        assert!(next_args(&["--cron", "* * * * *", "--dst-gap", "later"]).is_err());
        assert!(next_args(&["--cron", "* * * * *", "--dst-repeat", "none"]).is_err());
    }

    #[test]
    fn new_commands_parse() {
        assert!(matches!(parse(&["apply", "-f", "-"]).unwrap().command, Command::Apply { ref file } if file == "-"));
        assert!(parse(&["apply"]).is_err());
        assert!(matches!(
            parse(&["export", "-o", "json"]).unwrap().command,
            Command::Export
        ));
        assert!(matches!(
            parse(&["jobs", "enable", "a"]).unwrap().command,
            Command::Jobs(JobsCmd::Enable { .. })
        ));
        assert!(matches!(
            parse(&["jobs", "disable", "a"]).unwrap().command,
            Command::Jobs(JobsCmd::Disable { .. })
        ));
        assert!(matches!(
            parse(&["jobs", "delete", "a"]).unwrap().command,
            Command::Jobs(JobsCmd::Delete { .. })
        ));
        assert!(matches!(
            parse(&["schedules", "pause", "a"]).unwrap().command,
            Command::Schedules {
                command: Some(SchedulesCmd::Pause { .. })
            }
        ));
        assert!(matches!(
            parse(&["schedules", "resume", "a"]).unwrap().command,
            Command::Schedules {
                command: Some(SchedulesCmd::Resume { .. })
            }
        ));
    }

    #[test]
    fn aliases_and_global_flags() {
        let cli = Cli::try_parse_from(["workerctl", "list", "-o", "json"]).unwrap();
        assert!(matches!(cli.command, Command::List));
        assert_eq!(cli.output, Format::Json);
        let cli = Cli::try_parse_from(["workerctl", "schedules"]).unwrap();
        assert!(matches!(cli.command, Command::Schedules { command: None }));
        let cli = Cli::try_parse_from(["workerctl", "job", "backup", "--wait"]).unwrap();
        assert!(matches!(cli.command, Command::Job(ref a) if a.job == "backup" && a.run.wait));
    }
}
