//! The Worker controller.
//!
//! The controller owns the job definitions, the cron schedules, the priority
//! queue, retries with backoff, the dead-letter queue and the execution history.
//! Agents connect to it over gRPC and pull assignments; `workerctl` and other
//! applications manage and enqueue work through its `ControllerService`.
//!
//! Layout (a folder per component, so a change has one obvious home; the tour
//! with one run followed through the code is `docs/architecture.md`):
//!
//! * [`config`]: loading and validating the configuration directory
//!   (`scheduler.yaml`, and `alerts.yaml` through [`alerting`]), every error
//!   located;
//! * [`job`], [`model`]: job definitions and the shared vocabulary (priorities,
//!   run states, outcomes, policies);
//! * [`store`]: the source of truth, on SQLite or PostgreSQL; all SQL lives
//!   there;
//! * [`engine`]: the run state machine: queue, dispatch, results, retries,
//!   timers, leases, DLQ; in-memory indexes rebuilt from the store at start;
//! * [`scheduler`]: cron schedules with time zones and catch-up;
//! * [`alerting`]: alert channels and rules, detection, throttling, delivery
//!   (Slack, Discord, email, webhooks) and history, in tasks of its own fed
//!   with facts by the engine;
//! * [`digest`]: the `digest` builtin's daily and weekly activity emails,
//!   composed and sent by the controller through an alert email channel;
//! * [`api`]: the gRPC services for clients and agents;
//! * [`auth`]: tokens, roles and the layer that checks every call;
//! * [`http`]: the HTTP listener: `/healthz`, `/readyz` and `/metrics`
//!   (Prometheus), and the metrics the engine records;
//! * [`web`]: the web UI on the same listener: pages rendered on the
//!   server that act through the client API's service;
//! * [`server`]: wiring everything together in [`run`], supervision, shutdown;
//! * [`tls`]: gRPC over TLS and the client certificates required of agents;
//! * [`limits`]: every size and count limit, `--limit NAME=VALUE`;
//! * [`logs`]: live output of running attempts, for `FollowRunOutput`;
//! * [`error`], [`time`]: the error type and its gRPC codes; clocks and
//!   timestamps.
//!
//! The guarantee that shapes the code: every transition is committed to the
//! store before anyone (client, agent or alerting) is told about it.

pub mod alerting;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod digest;
pub mod engine;
pub mod error;
pub mod ha;
pub mod http;
pub mod job;
pub mod limits;
pub mod logs;
pub mod model;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod time;
pub mod tls;
pub mod web;

pub use server::{ControllerConfig, Listening, RunError, run};
