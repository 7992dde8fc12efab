//! Wiring: opens the store, recovers the engine, starts the loops and serves gRPC
//! until shutdown.

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

/// How long shutdown waits for in-flight requests before giving up on them.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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
    /// Agent protocol timing.
    pub engine: EngineSettings,
    /// Alert delivery and links.
    pub alerts: AlertSettings,
    /// Also run one in-process agent with this capacity (`--dev`).
    pub dev_agent_capacity: Option<u32>,
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
/// bound gRPC address once the controller serves.
pub async fn run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), RunError> {
    let store = Store::open(&config.db_url).await.map_err(|source| RunError::Store {
        url: crate::store::redact_url(&config.db_url),
        source,
    })?;
    let jobs = crate::engine::initial_definitions(&store, &config.config.jobs, &config.config.text)
        .await
        .map_err(definitions_error(&config.db_url))?;
    let alerts_config = crate::alerting::definitions::initial_alerts(&store, config.config.alerts.as_ref())
        .await
        .map_err(definitions_error(&config.db_url))?;
    let job_count = jobs.len();
    let engine = Engine::recover(store.clone(), jobs, config.engine)
        .await
        .map_err(|source| RunError::Store {
            url: crate::store::redact_url(&config.db_url),
            source,
        })?;
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.grpc_listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Bind {
        addr: config.grpc_listen,
        source,
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    let (results_tx, results_rx) = tokio::sync::mpsc::unbounded_channel();
    loops.spawn(engine.clone().commit_loop(results_rx, stop_rx.clone()));
    // Alerting first: the scheduler's catch-up may already report missed fires.
    let alerts = AlertService::start(
        store.clone(),
        engine.clone(),
        alerts_config,
        config.alerts.clone(),
        stop_rx.clone(),
        &mut loops,
    )
    .map_err(RunError::Alerting)?;
    loops.spawn(engine.clone().timer_loop(stop_rx.clone()));
    loops.spawn(crate::scheduler::run(engine.clone(), stop_rx.clone()));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControllerServiceServer<ControllerApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(worker_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Reflection(e.to_string()))?;

    let server_stop = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            ControllerServiceServer::new(ControllerApi::new(
                engine.clone(),
                alerts,
                stop_rx.clone(),
                &config.db_url,
            ))
            .max_decoding_message_size(4 * 1024 * 1024),
        )
        .add_service(
            AgentServiceServer::new(AgentApi::new(engine.clone(), stop_rx.clone(), results_tx))
                .max_decoding_message_size(4 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(
            // No Nagle: small messages (assignments, acks) must not wait for a delayed ACK.
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(30))),
            server_stop,
        );
    let mut server = tokio::spawn(server);
    tracing::info!(%addr, jobs = job_count, config = %config.config_dir.display(), "controller serving");
    ready(addr);

    let dev_agent = config.dev_agent_capacity.map(|capacity| {
        let mut agent_config = worker_agent::AgentConfig::new(format!("http://{addr}"));
        agent_config.capacity = capacity;
        agent_config.name = format!("{}-dev", agent_config.name);
        let mut stop = stop_rx.clone();
        tokio::spawn(worker_agent::run(agent_config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let served = tokio::select! {
        result = &mut server => Some(result),
        _ = shutdown => None,
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    engine.disconnect_all_agents().await;
    if let Some(agent) = dev_agent {
        let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, agent).await;
    }
    let result = match served {
        Some(result) => result.unwrap_or(Ok(())),
        None => match tokio::time::timeout(SHUTDOWN_DEADLINE, &mut server).await {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!("gRPC server did not stop within the deadline; closing anyway");
                server.abort();
                Ok(())
            }
        },
    };
    while loops.join_next().await.is_some() {}
    store.close().await;
    tracing::info!("stopped");
    Ok(result?)
}
