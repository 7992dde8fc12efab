//! Alerting (the operator's reference is `docs/alerting.md`): rules route
//! events about runs, schedules, agents and the queue to channels (Slack,
//! Discord, email, signed webhooks), with a throttle per (rule, job), a
//! `recovered` notice, retried delivery and a recorded history.
//!
//! `DIR/alerts.yaml` holds `channels` and `rules`. It is validated like
//! `scheduler.yaml`: all or nothing, every error reported at once with file,
//! line, key path and reason (rules are addressed as `rules[N]`), with `${VAR}`
//! interpolation. Secrets are held in [`config::Secret`], which never prints,
//! serializes or appears in an error. Channels and rules are persisted and can
//! be changed through the API ([`definitions`]).
//!
//! The pure parts (no I/O, no clock; tested with plain values):
//! * [`config`]: `alerts.yaml` into an [`AlertsConfig`] of [`Channel`]s and [`Rule`]s;
//! * [`rules`]: events, job globs and [`Rule::matches`], the routing decision;
//! * [`facts`]: what the engine and the scheduler report ([`facts::AlertSink`]);
//! * [`detect`]: facts and polled state into events, routed to rules;
//! * [`throttle`]: windows per (rule, job): the first alert is sent, later ones
//!   are counted and summarised once the window closes;
//! * [`alert`], [`message`]: an alert and its rendering per channel type.
//!
//! The parts that talk to the world:
//! * [`deliver`]: HTTP and SMTP delivery with retries and backoff;
//! * [`service`]: the alert loop, delivery tasks and the history writer;
//! * [`definitions`]: which channels and rules are in force, and API changes.
//!
//! Defaults chosen here: a rule's `jobs` is `*`, its `min_priority` `low` and its
//! `throttle` zero (every alert is sent); SMTP `tls` is `starttls` and the port
//! follows the TLS mode (587, 465 for `tls`, 25 for `none`).

pub mod alert;
pub mod config;
pub mod definitions;
pub mod deliver;
pub mod detect;
pub mod facts;
pub mod message;
pub mod rules;
pub mod service;
pub mod throttle;

pub use alert::{Alert, AlertKind, AlertStatus};
pub use config::{AlertsConfig, Channel, ChannelKind, ChannelType, Secret, parse_alerts_yaml};
pub use rules::{Event, EventParams, Glob, Rule};
pub use service::{AlertService, AlertSettings};
pub use throttle::{Decision, Summary, Throttle};
