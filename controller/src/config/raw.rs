//! The shape of `scheduler.yaml` as serde reads it. Every struct denies unknown
//! fields; values stay strings here and are validated in [`super::jobs`] so that
//! every error can be reported with its path and line.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `defaults:`: values every job inherits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub timezone: Option<String>,
    pub priority: Option<String>,
    pub timeout: Option<String>,
    pub retry: Option<RawRetry>,
}

/// `retry:` of a job or of the defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub initial_delay: Option<String>,
    pub max_delay: Option<String>,
    pub jitter: Option<f64>,
    pub non_retryable_exit_codes: Option<Vec<i32>>,
}

/// One entry of `jobs:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub priority: Option<String>,
    pub timeout: Option<String>,
    pub retry: Option<RawRetry>,
    pub overlap: Option<String>,
    pub catch_up: Option<String>,
    pub max_catch_up: Option<u32>,
    pub jitter: Option<String>,
    pub selector: Option<BTreeMap<String, String>>,
    pub max_concurrency: Option<u32>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub shell: Option<RawShell>,
    pub builtin: Option<RawBuiltin>,
    pub depends_on: Option<Vec<String>>,
    pub dst: Option<RawDst>,
    pub catch_up_window: Option<String>,
}

/// `dst: { gap, repeat }` of a scheduled job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDst {
    pub gap: Option<String>,
    pub repeat: Option<String>,
}

/// `shell:` as a string (run by `sh -c`) or a mapping.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawShell {
    Script(String),
    Full(RawShellFull),
}

/// `shell: { command, env, cwd }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShellFull {
    pub command: RawCommand,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
}

/// `command:` as a string (`sh -c`) or an argv list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    Script(String),
    Argv(Vec<String>),
}

/// `builtin:` as a name or `{ name, duration }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawBuiltin {
    Name(String),
    Full(RawBuiltinFull),
}

/// `builtin: { name, duration }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltinFull {
    pub name: String,
    pub duration: Option<String>,
}
