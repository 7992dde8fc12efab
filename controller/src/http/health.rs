//! `/healthz` and `/readyz`.
//!
//! `/healthz` answers 200 `ok` as long as the process serves HTTP at all.
//! `/readyz` answers 200 `ready` only when every check passes, otherwise 503
//! with the first reason in plain text:
//!
//! 1. the controller has recovered and its loops run ([`Phase::Running`],
//!    set by `server::run`; the supervisor sets [`Phase::Failed`] when a loop
//!    ends or the engine stops, and shutdown sets [`Phase::Stopping`]);
//! 2. the engine has not stopped;
//! 3. leadership is known ([`Leadership`]: the hook for PostgreSQL high
//!    availability; a single controller is always [`Leadership::Single`]);
//! 4. the store answers a cheap query within [`STORE_CHECK_TIMEOUT`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use super::HttpState;
use crate::engine::Engine;

/// How long `/readyz` waits for the store's answer.
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the controller is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Rebuilding memory from the store.
    Recovering,
    /// Recovered, loops running, serving.
    Running,
    /// Shutting down (SIGTERM).
    Stopping,
    /// An internal loop ended or the engine stopped; the controller exits.
    Failed(String),
}

/// Whether this controller may act on the store (PostgreSQL high
/// availability, `crate::ha`): a standby waits for leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// One controller, no election: always ready as far as leadership goes.
    Single,
    /// An election is under way (or the store cannot be reached to take
    /// part): not ready.
    Unknown,
    /// This controller leads.
    Leader {
        /// The lease's epoch of this term.
        epoch: i64,
        /// When it took the lease (Unix ms, the database's clock).
        since: i64,
    },
    /// Another controller leads: not ready (it must not take traffic).
    Follower {
        /// The leader's epoch.
        epoch: i64,
        /// The leader's id.
        leader: String,
        /// The leader's advertised URL.
        address: String,
        /// When the leader took the lease (Unix ms, the database's clock).
        since: i64,
    },
}

impl std::fmt::Display for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |ms: i64| crate::time::rfc3339(ms);
        match self {
            Leadership::Single => f.write_str("single controller"),
            Leadership::Unknown => f.write_str("leadership unknown: an election is under way"),
            Leadership::Leader { epoch, since } => {
                write!(f, "leader: this controller (epoch {epoch}, since {})", time(*since))
            }
            Leadership::Follower {
                epoch,
                leader,
                address,
                since,
            } => write!(
                f,
                "standby: {leader} at {address} leads (epoch {epoch}, since {})",
                time(*since)
            ),
        }
    }
}

/// Shared by `server::run` (which moves the phase on) and the handlers.
pub struct Readiness {
    phase: std::sync::RwLock<Phase>,
    leadership: std::sync::RwLock<Leadership>,
    engine: OnceLock<Arc<Engine>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("phase", &self.phase())
            .field("recovered", &self.engine.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Recovering, single controller, no engine yet.
    pub fn new() -> Readiness {
        Readiness {
            phase: std::sync::RwLock::new(Phase::Recovering),
            leadership: std::sync::RwLock::new(Leadership::Single),
            engine: OnceLock::new(),
        }
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records what the election says (PostgreSQL HA).
    pub fn set_leadership(&self, leadership: Leadership) {
        *self.leadership.write().unwrap_or_else(|e| e.into_inner()) = leadership;
    }

    /// What the election says.
    pub fn leadership(&self) -> Leadership {
        self.leadership.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The recovered engine (set once).
    pub fn set_engine(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }

    /// The engine, once recovered.
    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.get()
    }

    /// `Ok` when ready, otherwise why not.
    pub async fn check(&self) -> Result<(), String> {
        let leadership = self.leadership();
        match leadership {
            Leadership::Single | Leadership::Leader { .. } => {}
            Leadership::Unknown | Leadership::Follower { .. } => return Err(leadership.to_string()),
        }
        match self.phase() {
            Phase::Running => {}
            Phase::Recovering => return Err("recovering: rebuilding the queue from the store".into()),
            Phase::Stopping => return Err("shutting down".into()),
            Phase::Failed(reason) => return Err(format!("internal failure: {reason}")),
        }
        let Some(engine) = self.engine() else {
            return Err("recovering: rebuilding the queue from the store".into());
        };
        if let Some(reason) = engine.failure() {
            return Err(format!("the engine stopped: {reason}"));
        }
        // A primary-key look-up of a run that cannot exist: one indexed read
        // on either backend.
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, engine.store().run("readyz-probe")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the store is unreachable: {e}")),
            Err(_) => Err(format!(
                "the store is unreachable: no answer within {} ms",
                STORE_CHECK_TIMEOUT.as_millis()
            )),
        }
    }
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 `ready`, or 503 and the reason.
pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.readiness.check().await {
        Ok(()) => match state.readiness.leadership() {
            Leadership::Single => (StatusCode::OK, "ready\n".to_string()),
            leader => (StatusCode::OK, format!("ready\n{leader}\n")),
        },
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineSettings;
    use crate::store::Store;

    async fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = Store::open(&format!("sqlite://{}", dir.join("worker.db").display()))
            .await
            .expect("open the store");
        let settings = EngineSettings {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(3),
            idempotency_window: Duration::from_secs(60),
            payload_memory_bytes: crate::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
        };
        Engine::recover(store, Default::default(), settings)
            .await
            .expect("recover")
    }

    /// Each phase and each leadership state gives its reason; ready only
    /// when running, recovered, leading (or alone) and the store answers.
    #[tokio::test]
    async fn readiness_follows_phase_engine_leadership_and_store() {
        let readiness = Readiness::new();
        assert!(readiness.check().await.unwrap_err().starts_with("recovering"));
        readiness.set_phase(Phase::Running);
        // Running but no engine yet: still recovering.
        assert!(readiness.check().await.unwrap_err().starts_with("recovering"));

        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path()).await;
        readiness.set_engine(engine.clone());
        assert_eq!(readiness.check().await, Ok(()));

        readiness.set_leadership(Leadership::Unknown);
        assert!(readiness.check().await.unwrap_err().starts_with("leadership unknown"));
        readiness.set_leadership(Leadership::Follower {
            epoch: 4,
            leader: "b-7".into(),
            address: "http://10.0.0.2:7070".into(),
            since: 0,
        });
        assert_eq!(
            readiness.check().await.unwrap_err(),
            "standby: b-7 at http://10.0.0.2:7070 leads (epoch 4, since 1970-01-01T00:00:00.000Z)"
        );
        readiness.set_leadership(Leadership::Leader { epoch: 5, since: 0 });
        assert_eq!(readiness.check().await, Ok(()));

        // The store closed: unreachable.
        engine.store().close().await;
        let err = readiness.check().await.unwrap_err();
        assert!(err.starts_with("the store is unreachable"), "{err}");

        readiness.set_phase(Phase::Stopping);
        assert_eq!(readiness.check().await.unwrap_err(), "shutting down");
        readiness.set_phase(Phase::Failed("the timer loop ended".into()));
        assert_eq!(
            readiness.check().await.unwrap_err(),
            "internal failure: the timer loop ended"
        );
    }
}
