//! Wiring: opens the store, recovers the engine, starts the loops and serves gRPC
//! until shutdown.
//!
//! The internal loops (commit rounds, timers, scheduler, alerting) are
//! supervised: if one of them ends or panics while the controller runs, or the
//! engine stops because its memory no longer matches the store, the controller
//! logs why, reports NOT_SERVING on gRPC health, and returns an error within
//! a second ([`FAILED_EXIT_DEADLINE`]), so that `main` exits non-zero and a
//! supervisor restarts it (recovery rebuilds everything from the store).
//!
//! A shutdown (SIGTERM) stops new schedule fires and dispatch at once, closes
//! the agent streams (agents keep their runs and reconnect later), lets
//! in-flight requests finish, and gives up on whatever is still running after
//! the shutdown deadline (`--shutdown-timeout`, 10 s by default): a write in
//! progress either committed or did not, and nothing acknowledged is lost.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use worker_proto::v1::agent_service_server::AgentServiceServer;
use worker_proto::v1::controller_service_server::ControllerServiceServer;

use crate::alerting::{AlertService, AlertSettings};
use crate::api::agent::AgentApi;
use crate::api::controller::ControllerApi;
use crate::config::{ConfigErrors, LoadedConfig};
use crate::engine::{Engine, EngineSettings};
use crate::store::Store;

/// How long the controller takes at most to stop after an internal failure.
pub const FAILED_EXIT_DEADLINE: Duration = Duration::from_millis(700);

/// After an internal failure, how long gRPC health keeps answering
/// NOT_SERVING before the server closes (so that pollers see it).
const NOT_SERVING_WINDOW: Duration = Duration::from_millis(300);

/// Everything `run` needs, validated by the binary before any port is bound.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The configuration directory (for messages; it is already loaded).
    pub config_dir: PathBuf,
    /// The validated `scheduler.yaml`.
    pub config: LoadedConfig,
    /// Database URL (`sqlite://worker.db`).
    pub db_url: String,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (`/healthz`, `/readyz`, `/metrics`); `None` for
    /// `--http-listen off`.
    pub http_listen: Option<SocketAddr>,
    /// Agent protocol timing.
    pub engine: EngineSettings,
    /// Alert delivery and links.
    pub alerts: AlertSettings,
    /// Also run one in-process agent with this capacity (`--dev`).
    pub dev_agent_capacity: Option<u32>,
    /// How long a shutdown may take before what still runs is abandoned.
    pub shutdown_timeout: Duration,
    /// Serve gRPC over TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<crate::tls::ServerTls>,
    /// Tokens: the bootstrap token and the per-token stream limit.
    pub auth: crate::auth::AuthSettings,
    /// Allow a non-loopback `grpc_listen` without authentication.
    pub insecure_no_auth: bool,
    /// Size and count limits (`--limit`); installed process-wide by [`run`].
    pub limits: crate::limits::Limits,
    /// History retention: the default age and the pass interval.
    pub retention: crate::engine::retention::RetentionSettings,
    /// High availability on PostgreSQL (`--ha`): take part in the election
    /// and lead only while holding the lease. `None`: the only controller.
    pub ha: Option<crate::ha::HaSettings>,
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened or migrated.
    #[error("cannot open the store {url}: {source}")]
    Store {
        /// Database URL.
        url: String,
        /// Cause.
        source: crate::error::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The stored definitions are no longer valid.
    #[error("{0}")]
    Definitions(ConfigErrors),
    /// Reflection descriptors could not be loaded.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// Alert delivery could not be set up.
    #[error("alerting: {0}")]
    Alerting(String),
    /// The settings are refused (checked once the store is open, before any
    /// port is bound); `main` exits with code 2.
    #[error("{0}")]
    Refused(String),
    /// An internal loop ended or panicked, or the engine stopped: the
    /// controller cannot go on and must be restarted.
    #[error("internal failure, the controller stopped: {0}")]
    Failed(String),
    /// This controller led and lost the leadership lease (high
    /// availability): it stopped scheduling and dispatching, and may start
    /// again as a standby.
    #[error("leadership lost: {0}")]
    LostLeadership(String),
}

/// The addresses the controller serves on, once it serves (passed to
/// `run`'s `ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The bound gRPC address.
    pub grpc: SocketAddr,
    /// The bound HTTP address, unless HTTP is off.
    pub http: Option<SocketAddr>,
    /// Whether it serves as a standby (with `--ha` every term begins so;
    /// the controller leads later on the same addresses).
    pub standby: bool,
}

/// Aborts its task when dropped (an early return leaves nothing behind).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a failure to choose the start-up definitions stops the controller.
fn definitions_error(db_url: &str) -> impl Fn(crate::engine::DefinitionsError) -> RunError + '_ {
    move |e| match e {
        crate::engine::DefinitionsError::Store(source) => RunError::Store {
            url: crate::store::redact_url(db_url),
            source,
        },
        crate::engine::DefinitionsError::Invalid(errors) => RunError::Definitions(errors),
    }
}

/// Runs the controller until `shutdown` completes. `ready` is called with the
/// bound addresses once the controller serves.
pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(Listening),
) -> Result<(), RunError> {
    let mut ready = Some(ready);
    let mut ready = move |listening: Listening| {
        if let Some(ready) = ready.take() {
            ready(listening);
        }
    };
    tokio::pin!(shutdown);
    if !crate::limits::install(config.limits) {
        let in_force = crate::limits::current();
        tracing::warn!(limits = %in_force, "limits were already installed in this process; keeping them");
    }
    let grpc_message_bytes = crate::limits::current().grpc_message_bytes;
    let store = Store::open(&config.db_url).await.map_err(|source| RunError::Store {
        url: crate::store::redact_url(&config.db_url),
        source,
    })?;
    if config.ha.is_some() && !store.supports_leadership() {
        return Err(RunError::Refused(
            "--ha: high availability needs a PostgreSQL store (--db postgres://…); a SQLite store has one controller"
                .into(),
        ));
    }
    // Tokens before the election: a standby checks the listen addresses too.
    let tokens = crate::auth::Tokens::load(store.clone(), config.auth.max_streams_per_token)
        .await
        .map_err(|source| RunError::Store {
            url: crate::store::redact_url(&config.db_url),
            source,
        })?;
    // A single controller checks the stored definitions before binding any
    // port; with high availability only the leader applies the files, once
    // it leads.
    let mut definitions = match config.ha {
        None => Some(initial_definitions(&store, &config).await?),
        Some(_) => None,
    };
    if let Some(secret) = &config.auth.bootstrap_secret {
        tokens.install_bootstrap(secret).await.map_err(|e| match e {
            crate::auth::tokens::BootstrapError::TooShort(_) => {
                RunError::Refused(format!("--bootstrap-token-file / WORKER_BOOTSTRAP_TOKEN: {e}"))
            }
            crate::auth::tokens::BootstrapError::Store(source) => RunError::Store {
                url: crate::store::redact_url(&config.db_url),
                source,
            },
        })?;
    }
    if !tokens.enabled() && !config.grpc_listen.ip().is_loopback() && !config.insecure_no_auth {
        return Err(RunError::Refused(format!(
            "--grpc-listen {}: without authentication the controller listens on loopback only \
             (create a token or give --bootstrap-token-file; --insecure-no-auth overrides this)",
            config.grpc_listen
        )));
    }
    if let Some(http) = config.http_listen
        && !tokens.enabled()
        && !http.ip().is_loopback()
        && !config.insecure_no_auth
    {
        return Err(RunError::Refused(format!(
            "--http-listen {http}: without authentication the controller listens on loopback only \
             (create a token or give --bootstrap-token-file; --insecure-no-auth overrides this; \
             --http-listen off disables HTTP)"
        )));
    }
    tracing::info!(authentication = tokens.enabled(), "tokens loaded");
    let tokens = std::sync::Arc::new(tokens);
    // HTTP first: probes see "recovering" (503) while the queue is rebuilt.
    let readiness = std::sync::Arc::new(crate::http::Readiness::new());
    let web = std::sync::Arc::new(crate::web::Web::new(
        config
            .alerts
            .web_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
    ));
    let (http_stop_tx, mut http_stop_rx) = tokio::sync::watch::channel(false);
    let (mut http_server, http_addr) = match config.http_listen {
        Some(http_listen) => {
            let listener = TcpListener::bind(http_listen).await.map_err(|source| RunError::Bind {
                addr: http_listen,
                source,
            })?;
            let addr = listener.local_addr().map_err(|source| RunError::Bind {
                addr: http_listen,
                source,
            })?;
            let state = crate::http::HttpState {
                readiness: readiness.clone(),
                tokens: tokens.clone(),
                web: web.clone(),
            };
            let stop = async move {
                let _ = http_stop_rx.wait_for(|s| *s).await;
            };
            tracing::info!(%addr, "HTTP serving the web UI, /healthz, /readyz, /metrics");
            (
                Some(AbortOnDrop(tokio::spawn(crate::http::serve(listener, state, stop)))),
                Some(addr),
            )
        }
        None => (None, None),
    };
    // High availability: bind gRPC now, serve as a standby until this
    // controller takes the lease, then lead on the same socket.
    let mut grpc_socket = None;
    let mut term = None;
    let mut keeper = None;
    if let Some(ha) = &config.ha {
        let std_listener = bind_std(config.grpc_listen).await?;
        let addr = std_listener.local_addr().map_err(|source| RunError::Bind {
            addr: config.grpc_listen,
            source,
        })?;
        let mut ha = ha.clone();
        if ha.advertise_url.is_empty() {
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            ha.advertise_url = format!("{scheme}://{addr}");
        }
        ready(Listening {
            grpc: addr,
            http: http_addr,
            standby: true,
        });
        let won = match stand_by(
            &store,
            &ha,
            &readiness,
            config.tls.as_ref(),
            &tokens,
            &std_listener,
            &mut shutdown,
        )
        .await?
        {
            Some(won) => won,
            None => {
                tracing::info!("stopped (standby)");
                let _ = http_stop_tx.send(true);
                if let Some(http) = &mut http_server {
                    let _ = tokio::time::timeout(config.shutdown_timeout, &mut http.0).await;
                }
                store.close().await;
                return Ok(());
            }
        };
        store.set_fence(won.epoch);
        // Tokens created or revoked under earlier leaders.
        if let Err(e) = tokens.refresh().await {
            tracing::warn!(error = %e, "cannot read the stored tokens again; using those read before");
        }
        // Renewals start at once: recovering a big queue may take longer
        // than the lease.
        keeper = Some({
            let (store, won, ha) = (store.clone(), won.clone(), ha.clone());
            AbortOnDrop(tokio::spawn(async move { crate::ha::keep(&store, &ha, &won).await }))
        });
        tracing::info!(epoch = won.epoch, %addr, advertise = %ha.advertise_url, "leading");
        definitions = Some(initial_definitions(&store, &config).await?);
        grpc_socket = Some(std_listener);
        term = Some((won, ha));
    }
    let (jobs, alerts_config) = definitions.expect("definitions are loaded before leading");

    // The --dev agent's token lives in memory only.
    let dev_agent_token = config
        .dev_agent_capacity
        .map(|_| tokens.mint_ephemeral("dev-agent (in-process)", crate::auth::Role::Agent));
    let job_count = jobs.len();
    let engine = Engine::recover(store.clone(), jobs, config.engine)
        .await
        .map_err(|source| RunError::Store {
            url: crate::store::redact_url(&config.db_url),
            source,
        })?;
    readiness.set_engine(engine.clone());
    let listener = match grpc_socket {
        Some(socket) => TcpListener::from_std(socket).map_err(|source| RunError::Bind {
            addr: config.grpc_listen,
            source,
        })?,
        None => TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| RunError::Bind {
                addr: config.grpc_listen,
                source,
            })?,
    };
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.grpc_listen,
        source,
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Loops::default();
    let (results_tx, rounds) = engine
        .rounds()
        .ok_or_else(|| RunError::Failed("the commit loop is connected twice".into()))?;
    loops.spawn("commit loop", engine.clone().commit_loop(rounds, stop_rx.clone()));
    // Alerting first: the scheduler's catch-up may already report missed fires.
    // `metric_high`'s day sums go on from what today's attempts reported
    // (no result is applied before the server serves).
    let watched = crate::alerting::detect::daily_metrics(&alerts_config);
    let day_sums = if watched.is_empty() {
        Vec::new()
    } else {
        let today = engine.now().div_euclid(86_400_000) * 86_400_000;
        let sums = store.metric_sums_since(today).await.map_err(|source| RunError::Store {
            url: crate::store::redact_url(&config.db_url),
            source,
        })?;
        sums.into_iter()
            .filter(|(_, metric, _)| watched.contains(metric))
            .collect()
    };
    let alerts = AlertService::start(
        store.clone(),
        engine.clone(),
        alerts_config,
        config.alerts.clone(),
        day_sums,
        stop_rx.clone(),
        &mut loops.alerting,
    )
    .map_err(RunError::Alerting)?;
    if let Some((won, ha)) = &term {
        crate::ha::announce(&store, &engine, ha, won).await;
    }
    loops.spawn("timer loop", engine.clone().timer_loop(stop_rx.clone()));
    loops.spawn("scheduler", crate::scheduler::run(engine.clone(), stop_rx.clone()));
    engine.set_retention(config.retention);
    loops.spawn("retention loop", engine.clone().retention_loop(stop_rx.clone()));

    let live_output = crate::logs::LiveOutput::new(engine.clone());
    loops.spawn("live output sweep", live_output.clone().sweep_loop(stop_rx.clone()));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControllerServiceServer<ControllerApi>>()
        .await;
    health_reporter.set_serving::<AgentServiceServer<AgentApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(worker_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Reflection(e.to_string()))?;

    // The server stops with everything else, except after an internal
    // failure, when it answers NOT_SERVING a little longer.
    let (server_stop_tx, mut server_stop_rx) = tokio::sync::watch::channel(false);
    let server_stop = async move {
        let _ = server_stop_rx.wait_for(|s| *s).await;
    };
    // One service instance answers gRPC and the web UI alike.
    let agent_owners = crate::api::agent::AgentOwners::default();
    let controller_api = std::sync::Arc::new(
        ControllerApi::new(engine.clone(), alerts, stop_rx.clone(), &config.db_url)
            .with_tokens(tokens.clone())
            .with_agent_owners(agent_owners.clone())
            .with_live_output(live_output.clone())
            .with_leadership(match &term {
                Some((won, ha)) => worker_proto::v1::Leadership {
                    role: "leader".into(),
                    epoch: won.epoch,
                    id: ha.id.clone(),
                    address: ha.advertise_url.clone(),
                    since: crate::time::rfc3339(won.acquired_at),
                },
                None => worker_proto::v1::Leadership {
                    role: "single".into(),
                    ..Default::default()
                },
            }),
    );
    web.set_api(controller_api.clone());
    // The job catalog: published packs, `DIR/catalog/`, `DIR/catalogs.yaml`'s remotes.
    let catalog_remotes = crate::catalog::sources::load(&config.config_dir).map_err(RunError::Definitions)?;
    let catalog = std::sync::Arc::new(crate::catalog::Catalog::new(
        store.clone(),
        Some(config.config_dir.join("catalog")),
        catalog_remotes,
        controller_api.clone(),
    ));
    // With high availability the leader answers the calls standbys relay
    // through the store, with the same services (no auth layer: each runs as
    // the token its standby authenticated).
    if term.is_some() {
        let relayed = tonic::service::Routes::new(
            ControllerServiceServer::from_arc(controller_api.clone()).max_decoding_message_size(grpc_message_bytes),
        )
        .add_service(
            worker_proto::v1::catalog_service_server::CatalogServiceServer::new(
                crate::catalog::service::CatalogApi::new(catalog.clone()),
            )
            .max_decoding_message_size(grpc_message_bytes),
        )
        .into_axum_router();
        loops.spawn(
            "relay loop",
            crate::ha::relay::serve_relayed(store.clone(), relayed, tokens.clone(), stop_rx.clone()),
        );
    }
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        server = server.tls_config(tls.server_config())?;
    }
    let require_client_certificates = config.tls.as_ref().is_some_and(|t| t.requires_client_certificates());
    let server = server
        .layer(crate::auth::AuthLayer::new(tokens.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ControllerServiceServer::from_arc(controller_api).max_decoding_message_size(grpc_message_bytes))
        .add_service(
            worker_proto::v1::catalog_service_server::CatalogServiceServer::new(
                crate::catalog::service::CatalogApi::new(catalog),
            )
            .max_decoding_message_size(grpc_message_bytes),
        )
        .add_service(
            AgentServiceServer::new(
                AgentApi::new(engine.clone(), stop_rx.clone(), results_tx)
                    .with_owners(agent_owners)
                    .with_live_output(live_output)
                    .require_client_certificates(require_client_certificates),
            )
            .max_decoding_message_size(grpc_message_bytes),
        )
        .serve_with_incoming_shutdown(
            // No Nagle: small messages (assignments, acks) must not wait for a delayed ACK.
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(30))),
            server_stop,
        );
    let mut server = tokio::spawn(server);
    tracing::info!(%addr, tls = config.tls.is_some(), jobs = job_count, config = %config.config_dir.display(), "controller serving");
    readiness.set_phase(crate::http::Phase::Running);
    if term.is_none() {
        ready(Listening {
            grpc: addr,
            http: http_addr,
            standby: false,
        });
    }

    let dev_agent = config.dev_agent_capacity.map(|capacity| {
        // With TLS the in-process agent goes through it too, trusting exactly
        // this controller's certificate (whatever names it carries).
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let mut agent_config = worker_agent::AgentConfig::new(format!("{scheme}://{addr}"));
        agent_config.tls_pinned_cert = config.tls.as_ref().map(|tls| tls.server_certificate());
        agent_config.capacity = capacity;
        agent_config.name = format!("{}-dev", agent_config.name);
        agent_config.token = dev_agent_token.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(worker_agent::run(agent_config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    // The leader renews its lease (`keeper`); a lease it cannot keep ends its term.
    let lost_leadership = async {
        match &mut keeper {
            Some(keeper) => match (&mut keeper.0).await {
                Ok(reason) => reason,
                Err(e) => format!("the lease keeper {}", why(e)),
            },
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        result = &mut server => Stop::Server(result),
        _ = &mut shutdown => Stop::Signal,
        reason = loops.supervise(&engine) => Stop::Failed(reason),
        reason = lost_leadership => Stop::LostLeadership(reason),
    };
    if let Stop::Failed(reason) | Stop::LostLeadership(reason) = &stopped {
        let reason = reason.clone();
        if matches!(stopped, Stop::LostLeadership(_)) {
            tracing::error!(%reason, "leadership lost: the controller stops leading at once");
            readiness.set_leadership(crate::http::Leadership::Unknown);
        } else {
            tracing::error!(%reason, "internal failure: the controller stops (a supervisor should restart it)");
        }
        readiness.set_phase(crate::http::Phase::Failed(reason.clone()));
        for service in ["", "worker.v1.ControllerService", "worker.v1.AgentService"] {
            health_reporter
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        let _ = stop_tx.send(true);
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(FAILED_EXIT_DEADLINE, async {
            engine.disconnect_all_agents().await;
            tokio::time::sleep_until(started + NOT_SERVING_WINDOW).await;
            let _ = server_stop_tx.send(true);
            let _ = http_stop_tx.send(true);
            let _ = (&mut server).await;
        })
        .await;
        server.abort();
        loops.abort();
        if let Some(agent) = dev_agent {
            agent.abort();
        }
        if matches!(stopped, Stop::LostLeadership(_)) {
            // Cut off from the database, closing the pool could wait on
            // connections that never answer.
            let _ = tokio::time::timeout(FAILED_EXIT_DEADLINE, store.close()).await;
            return Err(RunError::LostLeadership(reason));
        }
        return Err(RunError::Failed(reason));
    }

    tracing::info!(
        deadline_ms = config.shutdown_timeout.as_millis() as u64,
        "shutting down"
    );
    readiness.set_phase(crate::http::Phase::Stopping);
    let _ = stop_tx.send(true);
    let _ = server_stop_tx.send(true);
    let _ = http_stop_tx.send(true);
    let graceful = async {
        engine.disconnect_all_agents().await;
        tracing::debug!("agents disconnected");
        if let Some(agent) = dev_agent {
            let _ = agent.await;
        }
        let result = match stopped {
            Stop::Server(result) => result.unwrap_or(Ok(())),
            _ => (&mut server).await.unwrap_or(Ok(())),
        };
        tracing::debug!("gRPC server stopped");
        if let Some(http) = &mut http_server {
            let _ = (&mut http.0).await;
            tracing::debug!("HTTP server stopped");
        }
        loops.join_all().await;
        tracing::debug!("loops stopped");
        if let Some((won, _)) = &term {
            // A graceful end hands the lease on at once.
            keeper.take();
            match store.release_lease(won.epoch).await {
                Ok(_) => tracing::info!(epoch = won.epoch, "released the leadership lease"),
                Err(e) => tracing::warn!(error = %e, "cannot release the leadership lease; it expires by itself"),
            }
        }
        store.close().await;
        result
    };
    let result = match tokio::time::timeout(config.shutdown_timeout, graceful).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                deadline_ms = config.shutdown_timeout.as_millis() as u64,
                "shutdown deadline reached; abandoning what still runs"
            );
            server.abort();
            loops.abort();
            Ok(())
        }
    };
    tracing::info!("stopped");
    Ok(result?)
}

/// Why `run` stops serving.
enum Stop {
    /// The gRPC server ended on its own.
    Server(Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>),
    /// Shutdown was requested.
    Signal,
    /// An internal loop failed or the engine stopped.
    Failed(String),
    /// The leadership lease could not be kept.
    LostLeadership(String),
}

/// The controller's internal loops, by name, and alerting's tasks.
#[derive(Default)]
struct Loops {
    tasks: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
    /// Alerting's loop and history writer.
    alerting: tokio::task::JoinSet<()>,
}

impl Loops {
    fn spawn(&mut self, name: &'static str, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Resolves with the reason once a loop ends or panics, or the engine stops.
    async fn supervise(&mut self, engine: &Engine) -> String {
        let ended = tokio::select! {
            Some(joined) = self.tasks.join_next_with_id() => match joined {
                Ok((id, ())) => format!("the {} ended", self.names.get(&id).copied().unwrap_or("loop")),
                Err(e) => {
                    let name = self.names.get(&e.id()).copied().unwrap_or("loop");
                    format!("the {name} {}", why(e))
                }
            },
            Some(joined) = self.alerting.join_next() => match joined {
                Ok(()) => "the alerting loop ended".to_string(),
                Err(e) => format!("the alerting loop {}", why(e)),
            },
            reason = engine.failed() => format!("the engine stopped: {reason}"),
        };
        // A loop that ended because the engine stopped: report the cause.
        match engine.failure() {
            Some(reason) => format!("the engine stopped: {reason}"),
            None => ended,
        }
    }

    async fn join_all(&mut self) {
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let id = match &joined {
                Ok((id, ())) => *id,
                Err(e) => e.id(),
            };
            tracing::debug!(name = self.names.get(&id).copied().unwrap_or("loop"), "loop stopped");
        }
        while self.alerting.join_next().await.is_some() {}
    }

    fn abort(&mut self) {
        self.tasks.abort_all();
        self.alerting.abort_all();
    }
}

/// How a loop task ended abnormally.
fn why(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        let panic = e.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        format!("panicked: {message}")
    } else {
        "was cancelled".to_string()
    }
}

/// The job and alert definitions to start with: the configuration files,
/// applied to the store when their text changed.
async fn initial_definitions(
    store: &Store,
    config: &ControllerConfig,
) -> Result<(crate::config::JobSet, crate::alerting::config::AlertsConfig), RunError> {
    let jobs = crate::engine::initial_definitions(store, &config.config.jobs, &config.config.text)
        .await
        .map_err(definitions_error(&config.db_url))?;
    let alerts = crate::alerting::definitions::initial_alerts(store, config.config.alerts.as_ref())
        .await
        .map_err(definitions_error(&config.db_url))?;
    Ok((jobs, alerts))
}

/// Binds `addr` and hands back the standard listener, kept open across the
/// standby's server and the leader's.
async fn bind_std(addr: SocketAddr) -> Result<std::net::TcpListener, RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    listener.into_std().map_err(|source| RunError::Bind { addr, source })
}

/// Serves as a standby on a clone of `socket` and campaigns until this
/// controller takes the lease (`Some`) or `shutdown` completes (`None`).
/// Meanwhile the standby relays calls to the leader and reads the tokens
/// again every lease poll.
async fn stand_by(
    store: &Store,
    ha: &crate::ha::HaSettings,
    readiness: &crate::http::Readiness,
    tls: Option<&crate::tls::ServerTls>,
    tokens: &std::sync::Arc<crate::auth::Tokens>,
    socket: &std::net::TcpListener,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<crate::ha::Term>, RunError> {
    let addr = socket.local_addr().map_err(|source| RunError::Bind {
        addr: ([0, 0, 0, 0], 0).into(),
        source,
    })?;
    let clone = socket
        .try_clone()
        .and_then(TcpListener::from_std)
        .map_err(|source| RunError::Bind { addr, source })?;
    readiness.set_leadership(crate::http::Leadership::Unknown);
    let (seen_tx, seen_rx) = tokio::sync::watch::channel(None);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (relay_stop_tx, relay_stop_rx) = tokio::sync::watch::channel(false);
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let relayer = crate::ha::relay::Relayer::start(store.clone(), &ha.id, seen_rx.clone(), relay_stop_rx.clone());
    let _refresh = AbortOnDrop(tokio::spawn({
        let (tokens, every) = (tokens.clone(), ha.poll_every());
        async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = tokens.refresh().await {
                    tracing::debug!(error = %e, "standby: cannot read the stored tokens again");
                }
            }
        }
    }));
    let tls = tls.cloned();
    let tokens = tokens.clone();
    let mut server = AbortOnDrop(tokio::spawn(async move {
        crate::ha::serve_standby(clone, tls.as_ref(), tokens, relayer, seen_rx, stop).await
    }));
    tracing::info!(%addr, id = %ha.id, "standby: serving, waiting for the leadership lease");
    let won = tokio::select! {
        won = crate::ha::campaign(store, ha, &seen_tx, readiness) => Some(won),
        _ = shutdown.as_mut() => None,
        ended = &mut server.0 => {
            return Err(RunError::Failed(format!("the standby's gRPC server ended: {ended:?}")));
        }
    };
    // The standby server stops taking connections (clients and agents come
    // back to the leader on the same socket). Calls it relayed finish in the
    // background: when this controller took the lease, its own leader
    // answers them once it serves.
    let _ = stop_tx.send(true);
    let drain = match won {
        Some(_) => crate::ha::relay::PENDING_LIMIT + Duration::from_secs(5),
        None => Duration::from_secs(1),
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(drain, &mut server.0).await;
        drop(server);
        let _ = relay_stop_tx.send(true);
    });
    Ok(won)
}
