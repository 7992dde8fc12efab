//! The Worker controller.
//!
//! The controller owns the job definitions, the cron schedules, the priority
//! queue, retries with backoff, the dead-letter queue and the execution history.
//! Agents connect to it over gRPC and pull assignments; `workerctl` and other
//! applications manage and enqueue work through its `ControllerService`.
//!
//! Layout (a folder per component, so a change has one obvious home):
//!
//! * [`config`]: loading and validating `scheduler.yaml` (every error, located);
//! * [`alerting`]: `alerts.yaml` channels and rules, rule matching and throttling
//!   (pure; delivery builds on it);
//! * [`job`], [`model`]: job definitions and the shared vocabulary (priorities,
//!   run states, outcomes, policies);
//! * [`store`]: the SQLite store, the source of truth; all SQL lives there;
//! * [`engine`]: the run state machine: queue, dispatch, results, retries,
//!   timers, leases, DLQ; in-memory indexes rebuilt from the store at start;
//! * [`scheduler`]: cron schedules with time zones and catch-up;
//! * [`api`]: the gRPC services for clients and agents;
//! * [`server`]: wiring everything together in [`run`].
//!
//! The guarantee that shapes the code: every transition is committed to the
//! store before anyone (client or agent) is told about it.

pub mod alerting;
pub mod api;
pub mod config;
pub mod engine;
pub mod error;
pub mod job;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod time;

pub use server::{ControllerConfig, RunError, run};
