//! [`Agent`] and its builder: an application with handlers, running as an agent.
//!
//! The builder holds an [`AgentConfig`] — the same settings the
//! `worker-agent` binary takes as flags — and the handlers. Settings come
//! either from a whole config ([`AgentBuilder::config`]) or from the
//! convenience setters, which change one field of it. [`AgentBuilder::build`]
//! checks everything up front (the error names the field), and
//! [`Agent::run`] enters the agent's one event loop (`agent.rs`) with the
//! registry: connection, leases, capacity, drain and reconnect behave exactly
//! as in `worker-agent`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::registry::{Call, MAX_HANDLER_NAME, MAX_HANDLERS, Typed, valid_handler_name};
use super::{HandlerContext, HandlerError, Handlers};
use crate::config::HANDLER_EXECUTOR;
use crate::connection::Connector;
use crate::{AgentConfig, AgentError};

/// An agent that runs the handlers its application registered (see the
/// [module docs](crate::sdk)). Made by [`Agent::builder`].
pub struct Agent {
    config: AgentConfig,
    handlers: Handlers,
    connector: Connector,
    http: crate::executor::http::HttpSettings,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// A builder for an agent of the controller at `controller` (e.g.
    /// `http://127.0.0.1:7070`), with [`AgentConfig::new`]'s defaults except
    /// the executors: only `handler`.
    pub fn builder(controller: impl Into<String>) -> AgentBuilder {
        let mut config = AgentConfig::new(controller);
        config.executors = vec![HANDLER_EXECUTOR.to_string()];
        AgentBuilder {
            config,
            handlers: Vec::new(),
        }
    }

    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The registered handlers.
    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// Runs the agent until `shutdown` resolves (or the controller sends
    /// `Drain`) and the drain has finished — as [`crate::run`] does for
    /// `worker-agent`: connection problems are retried forever; on shutdown
    /// the agent stops pulling, lets running handlers finish for up to
    /// `drain_grace`, cancels the rest (their [`HandlerContext::cancelled`]
    /// fires), reports, and returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// None in practice: everything is checked by [`AgentBuilder::build`].
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), AgentError> {
        crate::agent::Agent::run(self.config, self.handlers, self.connector, self.http, shutdown).await
    }
}

/// Settings and handlers of an [`Agent`]; [`AgentBuilder::build`] checks them.
pub struct AgentBuilder {
    config: AgentConfig,
    handlers: Vec<(String, Arc<dyn Call>)>,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("config", &self.config)
            .field("handlers", &self.handlers.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

impl AgentBuilder {
    /// Replaces every setting with `config` (the controller address and the
    /// executors included: [`AgentConfig::new`] enables `shell`, `http` and `builtin`,
    /// so add `handler` to run handlers). Setters called afterwards change it.
    pub fn config(mut self, config: AgentConfig) -> Self {
        self.config = config;
        self
    }

    /// Display name in `workerctl agents list` (default: the host name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Adds the label `key=value`, which job selectors match.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.labels.insert(key.into(), value.into());
        self
    }

    /// How many attempts (of all handlers together) run at the same time
    /// (default 4).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// The bearer token of a role `agent` for the controller.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// Executor kinds this agent runs (default: `handler` only). Add `shell`
    /// or `builtin` to let the agent run those jobs too; `handler` must stay.
    pub fn executors<I, S>(mut self, executors: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.executors = Vec::new();
        for executor in executors {
            let executor = executor.into();
            if !self.config.executors.contains(&executor) {
                self.config.executors.push(executor);
            }
        }
        self
    }

    /// How long a handler may take to return after its attempt was told to
    /// stop, before it is aborted (also the SIGTERM → SIGKILL grace of shell
    /// jobs; default 5s).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.config.kill_grace = grace;
        self
    }

    /// On shutdown or drain, how long running handlers may still run before
    /// they are cancelled (default 30s).
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.config.drain_grace = grace;
        self
    }

    /// Bytes of output tail kept per attempt (default 64 KiB).
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.config.output_cap = bytes;
        self
    }

    /// PEM file of the CA the controller's certificate must chain to (an
    /// `https://` controller; default: the Mozilla roots built in).
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls_ca = Some(path.into());
        self
    }

    /// Client certificate (PEM chain) and its key, for a controller that
    /// requires client certificates.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.tls_cert = Some(cert.into());
        self.config.tls_key = Some(key.into());
        self
    }

    /// Registers `handler` under `name`, the name jobs give in `handler:`.
    ///
    /// `handler` is an async function of the attempt's [`HandlerContext`] and
    /// its payload, parsed from JSON into `T` (an empty payload is `null`, so
    /// `Option<T>`, `()` and `serde_json::Value` accept it). A payload that
    /// does not parse fails the attempt permanently with serde's message.
    /// Each attempt runs on its own task; a panic fails the attempt
    /// (retryably) and leaves the agent running.
    pub fn handler<T, F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(HandlerContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.push((name.into(), Arc::new(Typed::new(handler))));
        self
    }

    /// Checks the settings and handlers and returns the agent.
    ///
    /// # Errors
    ///
    /// [`AgentError::Config`] naming the field: no handler, a handler name
    /// that is not valid or registered twice, `handler` missing from the
    /// executors, or any problem [`AgentConfig::validate`] reports;
    /// [`AgentError::InvalidController`] for an unusable address.
    pub fn build(self) -> Result<Agent, AgentError> {
        let bad = |msg: String| Err(AgentError::Config(msg));
        if self.handlers.is_empty() {
            return bad("handlers: none registered (add one with AgentBuilder::handler)".into());
        }
        if self.handlers.len() > MAX_HANDLERS {
            return bad(format!(
                "handlers: {} registered, at most {MAX_HANDLERS}",
                self.handlers.len()
            ));
        }
        let mut handlers = BTreeMap::new();
        for (name, handler) in self.handlers {
            if !valid_handler_name(&name) {
                return bad(format!(
                    "handlers: `{}` is not a handler name (1 to {MAX_HANDLER_NAME} ASCII letters, digits, `.`, `_`, `:`, `-`, starting with a letter or digit)",
                    name.escape_debug()
                ));
            }
            if handlers.insert(name.clone(), handler).is_some() {
                return bad(format!("handlers: `{name}` is registered twice"));
            }
        }
        if !self.config.executors.iter().any(|e| e == HANDLER_EXECUTOR) {
            return bad(format!(
                "executors: `{HANDLER_EXECUTOR}` must be enabled to run the registered handlers (enabled: {})",
                self.config.executors.join(", ")
            ));
        }
        self.config.validate_for(true)?;
        let connector = Connector::new(&self.config)?;
        let http = crate::executor::http::HttpSettings::from_config(&self.config)?;
        Ok(Agent {
            config: self.config,
            handlers: Handlers::new(handlers),
            connector,
            http,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok(_ctx: HandlerContext, _payload: serde_json::Value) -> Result<(), HandlerError> {
        Ok(())
    }

    fn builder() -> AgentBuilder {
        Agent::builder("http://127.0.0.1:7070")
    }

    fn error(builder: AgentBuilder) -> String {
        builder.build().unwrap_err().to_string()
    }

    #[test]
    fn builds_with_handlers_and_settings() {
        let agent = builder()
            .name("enricher")
            .label("region", "eu")
            .capacity(2)
            .token("secret")
            .drain_grace(Duration::from_secs(3))
            .handler("leads.enrich", ok)
            .handler("leads.score", |_ctx, _lead: Option<String>| async { Ok(()) })
            .build()
            .unwrap();
        assert_eq!(agent.handlers().names(), ["leads.enrich", "leads.score"]);
        let config = agent.config();
        assert_eq!(config.executors, ["handler"]);
        assert_eq!((config.name.as_str(), config.capacity), ("enricher", 2));
        assert_eq!(config.labels["region"], "eu");
        assert_eq!(config.drain_grace, Duration::from_secs(3));

        let agent = builder()
            .executors(["handler", "shell", "handler"])
            .handler("a", ok)
            .build()
            .unwrap();
        assert_eq!(agent.config().executors, ["handler", "shell"]);
    }

    #[test]
    fn bad_handlers_are_refused_by_name() {
        let err = error(builder());
        assert!(err.contains("handlers: none registered"), "{err}");
        let err = error(builder().handler("leads.enrich", ok).handler("leads.enrich", ok));
        assert!(err.contains("`leads.enrich` is registered twice"), "{err}");
        let err = error(builder().handler("leads enrich", ok));
        assert!(err.contains("handlers: `leads enrich` is not a handler name"), "{err}");
        let err = error(builder().handler("", ok));
        assert!(err.contains("handlers: `` is not a handler name"), "{err}");
    }

    #[test]
    fn settings_are_checked() {
        let err = error(builder().executors(["shell"]).handler("a", ok));
        assert!(err.contains("executors: `handler` must be enabled"), "{err}");
        // A whole config replaces the executors too.
        let err = error(builder().config(AgentConfig::new("http://x:1")).handler("a", ok));
        assert!(err.contains("enabled: shell, http, builtin"), "{err}");
        let err = error(builder().executors(["handler", "ftp"]).handler("a", ok));
        assert!(err.contains("executors: unknown executor `ftp`"), "{err}");
        let err = error(builder().capacity(0).handler("a", ok));
        assert!(err.contains("capacity"), "{err}");
        let err = error(builder().label("bad key", "x").handler("a", ok));
        assert!(err.contains("labels"), "{err}");
        let err = error(Agent::builder("http://bad host:1").handler("a", ok));
        assert!(err.contains("invalid controller address"), "{err}");
    }
}
