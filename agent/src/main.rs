//! `worker-agent`: command-line front end of the [`worker_agent`] library.
//!
//! Parses flags, sets up logging (stderr, `RUST_LOG`, default `info`), validates
//! the configuration, and runs the agent until SIGTERM or SIGINT, which start a
//! graceful drain. A second signal exits at once.
//!
//! Exit codes: 0 after a clean drain, 1 on a runtime error, 2 on bad flags or
//! configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use worker_agent::{AgentConfig, AgentError, EnvPattern, parse_allow_env, parse_executors, parse_labels};

/// Runs jobs for a Worker controller.
#[derive(Debug, Parser)]
#[command(name = "worker-agent", version, about)]
struct Args {
    /// Controller gRPC address, or a comma-separated list of the addresses of
    /// several controllers on one database: the agent connects to the one that
    /// leads (a standby names it).
    #[arg(
        long,
        env = "WORKER_CONTROLLER",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    controller: String,

    /// Display name of this agent [default: host name].
    #[arg(long)]
    name: Option<String>,

    /// Labels for job selectors, `k=v,k2=v2` (may be repeated).
    #[arg(long, value_parser = parse_labels)]
    labels: Vec<BTreeMap<String, String>>,

    /// Attempts run at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,

    /// Executor kinds to run, comma-separated.
    #[arg(long, default_value = "shell,http,builtin", value_parser = parse_executors)]
    executors: Vec<Vec<String>>,

    /// Bearer token for the controller.
    #[arg(long, env = "WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Grace between SIGTERM and SIGKILL when a job's process group is killed.
    #[arg(long, default_value = "5s", value_parser = worker_duration::parse)]
    kill_grace: Duration,

    /// On shutdown, how long in-flight jobs may still run before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = worker_duration::parse)]
    drain_grace: Duration,

    /// PEM file of the CA that signed the controller's certificate (with an
    /// https:// controller) [default: the Mozilla roots built in].
    #[arg(long, env = "WORKER_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// PEM client certificate (chain) for a controller that requires one (mTLS).
    #[arg(long, env = "WORKER_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WORKER_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Environment variables `${VAR}` in an http job's header values may read,
    /// comma-separated, `PREFIX*` for a prefix (may be repeated) [default: none].
    #[arg(long, env = "WORKER_AGENT_ALLOW_ENV", value_name = "NAMES", value_parser = parse_allow_env)]
    allow_env: Vec<Vec<EnvPattern>>,

    /// PEM file of CA certificates http jobs trust besides the system's.
    #[arg(long, env = "WORKER_AGENT_HTTP_CA", value_name = "FILE")]
    http_ca: Option<PathBuf>,

    /// Log format on stderr: `text` (for people) or `json` (one object per
    /// line, with run, job and agent ids as fields).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print this program's man page (roff) on stdout and exit:
    /// `worker-agent --print-man > /usr/local/share/man/man1/worker-agent.1`.
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_man {
        return print_man();
    }
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    let config = config_from(args);
    if let Err(error) = config.validate() {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Configuration problems are usage errors; anything else is a failure.
            let code = if error.downcast_ref::<AgentError>().is_some() {
                2
            } else {
                1
            };
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn config_from(args: Args) -> AgentConfig {
    let mut config = AgentConfig::new(args.controller);
    if let Some(name) = args.name {
        config.name = name;
    }
    config.labels = args.labels.into_iter().flatten().collect();
    config.capacity = args.capacity;
    // clap gives one list per occurrence of the flag; merge them.
    let mut executors: Vec<String> = Vec::new();
    for executor in args.executors.into_iter().flatten() {
        if !executors.contains(&executor) {
            executors.push(executor);
        }
    }
    config.executors = executors;
    config.token = args.token;
    config.kill_grace = args.kill_grace;
    config.drain_grace = args.drain_grace;
    config.tls_ca = args.tls_ca;
    config.tls_cert = args.tls_cert;
    config.tls_key = args.tls_key;
    config.allow_env = args.allow_env.into_iter().flatten().collect();
    config.http_ca = args.http_ca;
    config
}

fn run(config: AgentConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        worker_agent::run(config, shutdown).await?;
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits immediately.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        let _ = tx.send(());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal received; exiting without finishing the drain");
        std::process::exit(1);
    });
    Ok(async move {
        let _ = rx.await;
    })
}

/// Writes the man page generated from [`Args`] to stdout.
fn print_man() -> ExitCode {
    use clap::CommandFactory as _;
    match clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("worker-agent").chain(args.iter().copied()))
    }

    /// The duration flags read the grammar of `worker_duration`, as the
    /// controller and workerctl do: `30s` and a bare `0` are durations, a bare
    /// `30` is refused with the shared message (the controller's and workerctl's
    /// tests check the same three inputs).
    #[test]
    fn duration_flags_share_the_grammar() {
        for flag in ["--kill-grace", "--drain-grace"] {
            let grace = |args: Args| {
                if flag == "--kill-grace" {
                    args.kill_grace
                } else {
                    args.drain_grace
                }
            };
            assert_eq!(grace(parse(&[flag, "30s"]).unwrap()), Duration::from_secs(30));
            assert_eq!(grace(parse(&[flag, "0"]).unwrap()), Duration::ZERO);
            let err = parse(&[flag, "30"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
            let text = err.to_string();
            assert!(
                text.contains(r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#),
                "{text}"
            );
        }
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.kill_grace, args.drain_grace),
            (Duration::from_secs(5), Duration::from_secs(30))
        );
    }

    #[test]
    fn http_flags() {
        let config = config_from(parse(&[]).unwrap());
        assert_eq!(config.executors, ["shell", "http", "builtin"]);
        assert!(config.allow_env.is_empty());
        assert_eq!(config.http_ca, None);

        let config = config_from(parse(&["--allow-env", "API_TOKEN,SECRET_*", "--http-ca", "ca.pem"]).unwrap());
        assert_eq!(
            config.allow_env,
            [
                EnvPattern::Name("API_TOKEN".into()),
                EnvPattern::Prefix("SECRET_".into())
            ]
        );
        assert_eq!(config.http_ca, Some(PathBuf::from("ca.pem")));

        let err = parse(&["--allow-env", "API-TOKEN"]).unwrap_err().to_string();
        assert!(err.contains("--allow-env"), "{err}");
        assert!(err.contains("\"API-TOKEN\" is not a variable name"), "{err}");
    }
}
