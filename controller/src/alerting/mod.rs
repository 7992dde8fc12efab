//! Alerting (design §9): channels, rules and throttling, as pure data and pure
//! functions. Nothing here performs I/O or reads a clock, so that every decision
//! is tested with plain values; delivery (HTTP, SMTP, retries with backoff), the
//! alert history and the API build on top of it.
//!
//! `DIR/alerts.yaml` holds `channels` (where alerts go: `slack`, `discord`,
//! `email`, `webhook`) and `rules` (which events of which jobs alert which
//! channels, and how often). It is validated like `scheduler.yaml`: all or
//! nothing, every error reported at once with file, line, key path and reason
//! (rules are addressed as `rules[N]`), with the checker of [`crate::config::jobs`]
//! machinery and `${VAR}` interpolation. Secrets are held in
//! [`config::Secret`], which never prints, serializes or appears in an error.
//!
//! * [`config`]: the serde shapes of `alerts.yaml` and their validation into an
//!   [`AlertsConfig`] of [`Channel`]s and [`Rule`]s;
//! * [`rules`]: events, job globs and [`Rule::matches`], the routing decision;
//! * [`throttle`]: windows per (rule, job): the first alert is sent, later ones
//!   are counted and summarised once the window closes.
//!
//! Defaults chosen here: a rule's `jobs` is `*`, its `min_priority` `low` and its
//! `throttle` zero (every alert is sent); SMTP `tls` is `starttls` and the port
//! follows the TLS mode (587, 465 for `tls`, 25 for `none`).

pub mod config;
pub mod rules;
pub mod throttle;

pub use config::{AlertsConfig, Channel, ChannelKind, ChannelType, Secret, parse_alerts_yaml};
pub use rules::{Event, EventParams, Glob, Rule};
pub use throttle::{Decision, Summary, Throttle};
