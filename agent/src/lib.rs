//! The Worker agent: pulls assignments from the controller and runs them.
//!
//! An agent opens **one** bidirectional gRPC stream to the controller
//! (`AgentService.Connect`, see `docs/architecture.md#the-agent-protocol`),
//! introduces itself with `Hello`, and then asks for work with
//! `Pull{credits}` whenever it has free slots. Each
//! `Assignment` runs on its own task; the agent reports `Started` and
//! `Finished`, and keeps every result until the controller acknowledges it
//! with `Ack`, re-sending unacknowledged results after a reconnect. Heartbeats
//! travel on the same stream, so a live heartbeat means a live assignment path.
//!
//! # Layout
//!
//! * [`config`] — [`AgentConfig`] and the parsers for its command-line form.
//! * `connection` — opening a session (`Hello` → `Welcome`) and reconnect
//!   backoff. A session is disposable.
//! * [`controllers`] — the list of controller addresses and the order a pass
//!   over them takes to find the leader (a standby names it).
//! * `agent` — the event loop that owns everything that outlives a session:
//!   running attempts, unacknowledged results, credits, drain.
//! * [`executor`] — running one attempt: [`executor::shell`] (a process
//!   group), [`executor::http`] (one HTTP request), [`executor::builtin`]
//!   (`noop`, `sleep`) and [`executor::handler`] (a handler registered
//!   through the SDK).
//! * [`sdk`] — the SDK: an application registers typed handlers by name
//!   ([`Agent::builder`]) and runs as an agent, on the same loop.
//! * [`measure`] — metrics and spans a job reports, sent with its result.
//! * [`output`] — the capped output tail kept per attempt.
//! * [`live`] — the attempt's output streamed to the controller while it
//!   runs: batched, bounded, never blocking the job.
//! * [`tls`] — TLS of the connection (`https://`, CA file, client
//!   certificate), and the PEM loading the controller shares.
//!
//! Durations (flags, the `sleep` builtin's `duration`, messages such as
//! `timed out after 5s`) use the grammar of [`worker_duration`], shared with the
//! controller and `workerctl`.
//!
//! # Why this shape
//!
//! Work must survive the connection: a network blip must not kill jobs or lose
//! results. So the stream is a thin, replaceable pipe, and all state lives in a
//! single task that reacts to events (no locks, one place that decides
//! credits). Executors never fail the agent: every problem is an outcome the
//! controller records and retries by policy.
//!
//! # Use
//!
//! An application with handlers of its own builds an [`Agent`] (see [`sdk`]
//! for the whole picture):
//!
//! ```no_run
//! use worker_agent::{Agent, HandlerContext, HandlerError};
//!
//! async fn enrich(ctx: HandlerContext, lead: serde_json::Value) -> Result<(), HandlerError> {
//!     if ctx.is_cancelled() {
//!         return Err(HandlerError::retryable("stopped"));
//!     }
//!     ctx.log(format!("enriching {lead}"));
//!     Ok(())
//! }
//!
//! # async fn example() -> Result<(), worker_agent::AgentError> {
//! Agent::builder("http://127.0.0.1:7070")
//!     .handler("leads.enrich", enrich)
//!     .build()?
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! The `worker-agent` binary is a thin wrapper over [`run`]; the controller's
//! `--dev` mode calls [`run`] in-process:
//!
//! ```no_run
//! # async fn example() -> Result<(), worker_agent::AgentError> {
//! let config = worker_agent::AgentConfig::new("http://127.0.0.1:7070");
//! worker_agent::run(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod agent;
pub mod config;
mod connection;
pub mod controllers;
mod error;
pub mod executor;
pub mod live;
pub mod measure;
pub mod output;
pub mod sdk;
pub mod tls;

use std::future::Future;

pub use config::{AgentConfig, EnvPattern, parse_allow_env, parse_executors, parse_labels};
pub use connection::ControllerLink;
pub use error::AgentError;
pub use sdk::{Agent, AgentBuilder, HandlerContext, HandlerError, SpanGuard, StopReason};

/// Runs an agent until `shutdown` resolves (or the controller sends `Drain`)
/// and the drain has finished.
///
/// Connection problems are retried forever with backoff and never returned.
/// On shutdown the agent stops pulling, lets in-flight work finish for up to
/// `drain_grace`, cancels what is left, reports the results, waits briefly for
/// their `Ack`s, and returns `Ok(())`.
///
/// # Errors
///
/// [`AgentError`] when the configuration or controller address is invalid;
/// nothing is started in that case.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AgentError> {
    config.validate()?;
    let connector = connection::Connector::new(&config)?;
    let http = executor::http::HttpSettings::from_config(&config)?;
    agent::Agent::run(config, sdk::Handlers::default(), connector, http, shutdown).await
}
