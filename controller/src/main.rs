//! `worker-controller`: parses flags, validates the configuration before binding
//! anything, then runs the controller until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use worker_controller::alerting::AlertSettings;
use worker_controller::alerting::deliver::DeliveryPolicy;
use worker_controller::auth::AuthSettings;
use worker_controller::engine::EngineSettings;
use worker_controller::limits::Limits;
use worker_controller::{ControllerConfig, config};

/// mimalloc instead of the system allocator: with a million runs queued and
/// completing, glibc's malloc spent a quarter of the controller's time sorting
/// freed chunks (`_int_malloc`, `malloc_consolidate`), see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Worker controller: schedules, queue, retries, DLQ and history, served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "worker-controller", version)]
struct Args {
    /// Configuration directory holding scheduler.yaml (and, optionally, alerts.yaml).
    #[arg(long = "config", value_name = "DIR", default_value = "config")]
    config_dir: PathBuf,
    /// Database URL.
    #[arg(long, env = "WORKER_DB_URL", default_value = "sqlite://worker.db")]
    db: String,
    /// gRPC listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    grpc_listen: SocketAddr,
    /// HTTP listen address for /healthz, /readyz and /metrics (port 0 picks
    /// a free port; `off` disables HTTP). Non-loopback needs authentication,
    /// as --grpc-listen does.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:7080", value_parser = parse_http_listen, overrides_with = "http_listen")]
    http_listen: HttpListen,
    /// Log format on stderr: `text` (for people) or `json` (one object per
    /// line, with run, job and agent ids as fields).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// How often agents send heartbeats.
    #[arg(long, default_value = "5s", value_parser = worker_duration::parse)]
    heartbeat_interval: std::time::Duration,
    /// An attempt whose agent is silent this long is lost and retried.
    #[arg(long, default_value = "20s", value_parser = worker_duration::parse)]
    lease_timeout: std::time::Duration,
    /// How long an idempotency key keeps returning its run after the run finished.
    #[arg(long, default_value = "24h", value_parser = worker_duration::parse)]
    idempotency_window: std::time::Duration,
    /// Allow a non-loopback --grpc-listen address without authentication
    /// (no token stored and no bootstrap token; only for trusted networks).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Environment variables that `${VAR}` references may read (comma-separated
    /// names; `PREFIX*` allows a prefix). References are interpolated only in a
    /// shell job's `env` values and an alert channel's secrets; any other
    /// variable is refused (docs/security.md).
    #[arg(long, env = "WORKER_ALLOW_ENV", value_name = "NAMES", default_value = "", value_parser = parse_allow_env)]
    allow_env: AllowEnv,
    /// File holding the secret of the admin token named "bootstrap" (trimmed,
    /// at least 16 characters); created or updated at start-up.
    #[arg(long, value_name = "FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Open streams (agent connections, event watches) per token [default: 256,
    /// or `--limit streams_per_token=N`; this flag wins when both are given].
    #[arg(long)]
    max_streams_per_token: Option<usize>,
    /// Base URL of the web UI as people reach it, for links in alerts.
    #[arg(long, env = "WORKER_WEB_URL", default_value = "http://127.0.0.1:7080")]
    web_url: String,
    /// Delivery attempts per alert and channel before it is recorded as failed.
    #[arg(long, default_value_t = 5)]
    alert_attempts: u32,
    /// Wait before the second delivery attempt (doubling after each, at most 5m).
    #[arg(long, default_value = "2s", value_parser = worker_duration::parse)]
    alert_backoff: std::time::Duration,
    /// Time limit of one delivery attempt (HTTP request or SMTP session).
    #[arg(long, default_value = "10s", value_parser = worker_duration::parse)]
    alert_timeout: std::time::Duration,
    /// Alert history older than this is deleted ("0s" keeps it all).
    #[arg(long, default_value = "30d", value_parser = worker_duration::parse)]
    alert_history_retention: std::time::Duration,
    /// How long a shutdown (SIGTERM, Ctrl-C) may take: in-flight requests and
    /// commits get this long, then whatever still runs is abandoned.
    #[arg(long, default_value = "10s", value_parser = worker_duration::parse)]
    shutdown_timeout: std::time::Duration,
    /// Finished runs of jobs without their own `retention.max_age` are pruned
    /// this long after they finished (e.g. 30d); unset: kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_retention_age)]
    retention_max_age: Option<std::time::Duration>,
    /// How often the controller prunes finished runs past their retention.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_retention_interval)]
    retention_interval: std::time::Duration,
    /// Bytes of payloads over 1 KiB kept in memory for waiting runs; beyond
    /// it they stay in the store until their run is dispatched.
    #[arg(long, value_name = "BYTES", default_value_t = worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES)]
    payload_memory_budget: usize,
    /// Also run one in-process agent: the one-command local setup.
    #[arg(long)]
    dev: bool,
    /// Capacity of the --dev agent.
    #[arg(long, default_value_t = 4)]
    dev_capacity: u32,
    /// PEM certificate chain to serve gRPC over TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require agents to present a client certificate signed by this CA (PEM; mTLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Change a size or count limit, e.g. `--limit payload_bytes=2MiB --limit page_size=500`
    /// (repeatable; byte sizes take KiB/MiB/GiB; the list is in docs/configuration.md).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    limits: Vec<String>,
    /// High availability: several controllers on one PostgreSQL database,
    /// one of them leading by a lease in the database (docs/high-availability.md).
    /// The others serve as standbys that name the leader to clients and agents.
    #[arg(long)]
    ha: bool,
    /// This controller's name in the leadership lease (with --ha); default
    /// HOST-PID.
    #[arg(long, value_name = "NAME")]
    ha_id: Option<String>,
    /// How long the leadership lease lasts without renewal (with --ha): a
    /// standby takes over about this long after the leader died.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = worker_duration::parse)]
    ha_lease: std::time::Duration,
    /// The URL agents and clients reach this controller's gRPC at, given to
    /// them by the standbys while it leads (with --ha); default
    /// http(s)://ADDRESS of --grpc-listen.
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// Print this program's man page (roff) on stdout and exit:
    /// `worker-controller --print-man > /usr/local/share/man/man1/worker-controller.1`.
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_man {
        return print_man();
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()));
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    // Test builds (the `failpoints` feature) take fail points from FAILPOINTS.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();

    config::env::allow(args.allow_env.0.clone());
    // Limits first: loading the configuration already obeys them.
    let limits = match Limits::from_assignments(args.limits.iter().map(String::as_str)) {
        Ok(limits) => limits,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = worker_controller::limits::install(limits);

    let loaded = match config::load_dir(&args.config_dir) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    // catalogs.yaml (remote catalogs), checked before anything is bound.
    if let Err(errors) = worker_controller::catalog::sources::check(&args.config_dir) {
        eprint!("{errors}");
        return ExitCode::from(2);
    }
    if args.lease_timeout <= args.heartbeat_interval {
        eprintln!(
            "error: --lease-timeout ({:?}) must be longer than --heartbeat-interval ({:?})",
            args.lease_timeout, args.heartbeat_interval
        );
        return ExitCode::from(2);
    }
    if args.alert_attempts == 0 || args.alert_timeout.is_zero() {
        eprintln!("error: --alert-attempts must be at least 1 and --alert-timeout longer than zero");
        return ExitCode::from(2);
    }
    if !(args.web_url.starts_with("http://") || args.web_url.starts_with("https://")) {
        eprintln!(
            "error: --web-url \"{}\": expected an http:// or https:// URL",
            args.web_url
        );
        return ExitCode::from(2);
    }
    // Whether a non-loopback --grpc-listen is allowed depends on the stored
    // tokens: server::run checks it once the store is open, before binding.
    let bootstrap_secret = match bootstrap_secret(args.bootstrap_token_file.as_deref()) {
        Ok(secret) => secret,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if args.max_streams_per_token == Some(0) {
        eprintln!("error: --max-streams-per-token must be at least 1");
        return ExitCode::from(2);
    }
    let tls = match worker_controller::tls::ServerTls::from_flags(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_client_ca.as_deref(),
        args.dev,
    ) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ha = if args.ha {
        if !(args.db.starts_with("postgres://") || args.db.starts_with("postgresql://")) {
            eprintln!(
                "error: --ha: high availability needs a PostgreSQL store (--db postgres://…); a SQLite store has one controller"
            );
            return ExitCode::from(2);
        }
        if args.ha_lease < worker_controller::ha::MIN_LEASE {
            eprintln!(
                "error: --ha-lease {:?}: at least {:?}",
                args.ha_lease,
                worker_controller::ha::MIN_LEASE
            );
            return ExitCode::from(2);
        }
        if args.dev {
            eprintln!("error: --ha and --dev cannot be combined (--dev runs one controller with its own agent)");
            return ExitCode::from(2);
        }
        let advertise_url = match &args.advertise_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => url.clone(),
            Some(url) => {
                eprintln!("error: --advertise-url \"{url}\": expected an http:// or https:// URL");
                return ExitCode::from(2);
            }
            None if args.grpc_listen.ip().is_unspecified() => {
                eprintln!(
                    "error: --ha with --grpc-listen {}: give --advertise-url, the URL other hosts reach this controller at",
                    args.grpc_listen
                );
                return ExitCode::from(2);
            }
            // Filled in with the bound address (port 0 picks one).
            None => String::new(),
        };
        Some(worker_controller::ha::HaSettings {
            id: args.ha_id.clone().unwrap_or_else(worker_controller::ha::default_id),
            advertise_url,
            lease: args.ha_lease,
        })
    } else {
        None
    };
    let mut config = ControllerConfig {
        ha,
        tls,
        config_dir: args.config_dir,
        config: loaded,
        db_url: args.db,
        grpc_listen: args.grpc_listen,
        http_listen: args.http_listen.0,
        engine: EngineSettings {
            heartbeat_interval: args.heartbeat_interval,
            lease_timeout: args.lease_timeout,
            idempotency_window: args.idempotency_window,
            payload_memory_bytes: args.payload_memory_budget,
        },
        alerts: AlertSettings {
            delivery: DeliveryPolicy {
                attempts: args.alert_attempts,
                backoff: args.alert_backoff,
                max_backoff: std::time::Duration::from_secs(300),
                timeout: args.alert_timeout,
            },
            web_url: Some(args.web_url),
            history_retention: args.alert_history_retention,
        },
        dev_agent_capacity: args.dev.then_some(args.dev_capacity.max(1)),
        shutdown_timeout: args.shutdown_timeout,
        auth: AuthSettings {
            bootstrap_secret,
            max_streams_per_token: worker_controller::auth::max_streams_per_token(args.max_streams_per_token, &limits),
        },
        insecure_no_auth: args.insecure_no_auth,
        limits,
        retention: worker_controller::engine::retention::RetentionSettings {
            default_max_age: args.retention_max_age,
            interval: args.retention_interval,
        },
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // One shutdown signal for every term: a controller that loses the
    // leadership lease starts again as a standby on the same addresses.
    let shutdown = {
        use futures::FutureExt;
        let _guard = runtime.enter();
        let (tx, rx) = tokio::sync::watch::channel(false);
        runtime.spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|stop| *stop).await;
        }
        .boxed()
        .shared()
    };
    let mut rejoining = false;
    let result = loop {
        let bound = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = bound.clone();
        let result = runtime.block_on(worker_controller::run(
            config.clone(),
            shutdown.clone(),
            move |listening| {
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(listening);
                // Test harnesses read the addresses from this line (port 0 picks one).
                let role = if listening.standby { " role=standby" } else { "" };
                match listening.http {
                    Some(http) => println!("worker-controller ready grpc={} http={http}{role}", listening.grpc),
                    None => println!("worker-controller ready grpc={}{role}", listening.grpc),
                }
            },
        ));
        match result {
            Err(worker_controller::RunError::LostLeadership(reason)) => {
                tracing::warn!(%reason, "leadership lost; starting again as a standby");
                rejoining = true;
                if let Some(listening) = *bound.lock().unwrap_or_else(|e| e.into_inner()) {
                    config.grpc_listen = listening.grpc;
                    config.http_listen = listening.http;
                }
            }
            // After a lost lease the database may still be out of reach (a
            // partition): keep trying to rejoin as a standby until it answers.
            Err(worker_controller::RunError::Store { source, .. }) if rejoining => {
                tracing::warn!(error = %source, "cannot reach the store to rejoin as a standby; trying again in 1 s");
                let stopped = runtime.block_on(async {
                    tokio::select! {
                        _ = shutdown.clone() => true,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
                    }
                });
                if stopped {
                    break Ok(());
                }
            }
            other => break other,
        }
    };
    // Tasks still running (a write past the deadline) are abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(worker_controller::RunError::Definitions(errors)) => {
            eprintln!("the stored job definitions cannot be loaded:");
            eprint!("{errors}");
            ExitCode::from(2)
        }
        Err(worker_controller::RunError::Refused(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The parsed `--http-listen`: an address, or `None` for `off`.
#[derive(Debug, Clone, Copy)]
struct HttpListen(Option<SocketAddr>);

fn parse_http_listen(text: &str) -> Result<HttpListen, String> {
    worker_controller::http::parse_listen(text).map(HttpListen)
}

/// The parsed `--allow-env` list.
#[derive(Debug, Clone)]
struct AllowEnv(Vec<config::env::Pattern>);

fn parse_allow_env(text: &str) -> Result<AllowEnv, String> {
    config::env::parse_allow_list(text).map(AllowEnv)
}

/// The bootstrap token's secret: the file's content, or else the variable
/// `WORKER_BOOTSTRAP_TOKEN` (the secret itself), trimmed; refused when
/// shorter than the minimum.
fn bootstrap_secret(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    use worker_controller::auth::tokens::MIN_BOOTSTRAP_SECRET;
    let (secret, source) = match file {
        Some(path) => {
            let mut text = String::new();
            let read = std::fs::File::open(path).and_then(|f| {
                use std::io::Read;
                // A secret is short; a larger file is a mistake (or /dev/zero).
                f.take(64 * 1024).read_to_string(&mut text)
            });
            if let Err(e) = read {
                return Err(format!("--bootstrap-token-file {}: {e}", path.display()));
            }
            (text, format!("--bootstrap-token-file {}", path.display()))
        }
        None => match std::env::var("WORKER_BOOTSTRAP_TOKEN") {
            Ok(text) => (text, "WORKER_BOOTSTRAP_TOKEN".to_string()),
            Err(_) => return Ok(None),
        },
    };
    let secret = secret.trim();
    let length = secret.chars().count();
    if length < MIN_BOOTSTRAP_SECRET {
        return Err(format!(
            "{source}: the bootstrap token is {length} characters long; it must be at least {MIN_BOOTSTRAP_SECRET}"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{source}: the bootstrap token must be printable ASCII without spaces (it is sent in a header)"
        ));
    }
    Ok(Some(secret.to_string()))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `--retention-max-age`: above zero (leave the flag out to keep runs).
fn parse_retention_age(s: &str) -> Result<std::time::Duration, String> {
    let d = worker_duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than 0s (leave the flag out to keep finished runs)".into());
    }
    Ok(d)
}

/// `--retention-interval`: from 1s to 1d.
fn parse_retention_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = worker_duration::parse(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(86_400) {
        return Err(format!("{s} is outside 1s..1d"));
    }
    Ok(d)
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
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("worker-controller").chain(args.iter().copied()))
    }

    /// `--http-listen` takes an address or `off`; the last one given wins
    /// (test harnesses pass a default first); `--log-format` is text or json.
    #[test]
    fn http_listen_and_log_format_flags() {
        assert_eq!(
            parse(&[]).unwrap().http_listen.0,
            Some("127.0.0.1:7080".parse().unwrap())
        );
        assert_eq!(parse(&["--http-listen", "off"]).unwrap().http_listen.0, None);
        let twice = parse(&["--http-listen", "127.0.0.1:0", "--http-listen", "off"]).unwrap();
        assert_eq!(twice.http_listen.0, None);
        let err = parse(&["--http-listen", "nowhere"]).unwrap_err().to_string();
        assert!(err.contains("invalid address \"nowhere\""), "{err}");
        assert_eq!(parse(&["--log-format", "json"]).unwrap().log_format, "json");
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    /// The duration flags read the grammar of `worker_duration`, as the config
    /// files, the agent and workerctl do: `30s` and a bare `0` are durations, a
    /// bare `30` is refused with the shared message.
    #[test]
    fn duration_flags_share_the_grammar() {
        let args = parse(&["--shutdown-timeout", "30s", "--alert-history-retention", "0"]).unwrap();
        assert_eq!(args.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(args.alert_history_retention, Duration::ZERO);
        let err = parse(&["--lease-timeout", "30"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains(r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#),
            "{text}"
        );
    }
}
