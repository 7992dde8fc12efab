//! The shape of `scheduler.yaml` as serde reads it. Every struct denies unknown
//! fields; values stay strings here and are validated in [`super::jobs`] so that
//! every error can be reported with its path and line.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Reads a duration field (`deserialize_with`, with `#[serde(default)]`) as its
/// text: a string as written, a YAML number as its digits. `timeout: 30` thus
/// reaches [`worker_duration::parse`] and is refused with its message (missing
/// unit) like `timeout: "30"`, and `timeout: 0` is the bare zero it accepts,
/// instead of serde's "invalid type: integer, expected a string".
pub fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct Text;

    impl<'de> Visitor<'de> for Text {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 30s")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    deserializer.deserialize_any(Text)
}

/// `defaults:`: values every job inherits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub timezone: Option<String>,
    pub priority: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    pub timeout: Option<String>,
    pub retry: Option<RawRetry>,
    pub retention: Option<RawRetention>,
}

/// `retention:` of a job or of the defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    #[serde(default, deserialize_with = "duration_text")]
    pub max_age: Option<String>,
    pub max_runs: Option<u64>,
    #[serde(default, deserialize_with = "duration_text")]
    pub dead_max_age: Option<String>,
}

/// `retry:` of a job or of the defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    pub initial_delay: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
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
    #[serde(default, deserialize_with = "duration_text")]
    pub timeout: Option<String>,
    pub retry: Option<RawRetry>,
    pub overlap: Option<String>,
    pub catch_up: Option<String>,
    pub max_catch_up: Option<u32>,
    #[serde(default, deserialize_with = "duration_text")]
    pub jitter: Option<String>,
    pub selector: Option<BTreeMap<String, String>>,
    pub max_concurrency: Option<u32>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub shell: Option<RawShell>,
    pub builtin: Option<RawBuiltin>,
    pub http: Option<RawHttp>,
    pub handler: Option<String>,
    pub depends_on: Option<Vec<String>>,
    pub dst: Option<RawDst>,
    #[serde(default, deserialize_with = "duration_text")]
    pub catch_up_window: Option<String>,
    pub retention: Option<RawRetention>,
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

/// `builtin:` as a name or `{ name, ...arguments }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawBuiltin {
    Name(String),
    Full(RawBuiltinFull),
}

/// `builtin: { name, ...arguments }`: the arguments are checked by the
/// builtin's own typed struct (see [`crate::config::builtins`]), which refuses
/// unknown fields.
#[derive(Debug, Deserialize)]
pub struct RawBuiltinFull {
    pub name: String,
    #[serde(flatten)]
    pub args: serde_yaml_ng::Mapping,
}

/// `http:` as a URL (a GET) or a mapping.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHttp {
    Url(String),
    Full(RawHttpFull),
}

/// `http: { method, url, headers, body, expect_status, retry_on, timeout, max_redirects }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpFull {
    pub method: Option<String>,
    pub url: String,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub expect_status: Option<Vec<RawStatus>>,
    pub retry_on: Option<Vec<RawStatus>>,
    #[serde(default, deserialize_with = "duration_text")]
    pub timeout: Option<String>,
    pub max_redirects: Option<u32>,
}

/// One entry of `expect_status` / `retry_on`: a number (`404`) or text
/// (`5xx`, `200-204`, `network`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStatus {
    Code(u64),
    Text(String),
}

impl RawStatus {
    /// The entry as text.
    pub fn text(&self) -> String {
        match self {
            RawStatus::Code(c) => c.to_string(),
            RawStatus::Text(t) => t.trim().to_string(),
        }
    }
}
