//! The `builtin:` executor of a job: a name, and the arguments that builtin takes.
//!
//! `builtin: noop` names a builtin without arguments; `builtin: { name: sleep,
//! duration: 2s }` gives arguments. Each builtin checks its own arguments with
//! a typed struct that refuses unknown fields (one function per builtin below,
//! or a submodule when it takes more than a field or two), and turns them into
//! the flat `args` map the agent receives in `BuiltinSpec` (nested mappings as
//! dotted keys, e.g. `s3.bucket`). What an agent does with them lives in
//! `worker_agent::executor::builtin`.

mod backup;
mod digest;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::jobs::Checker;
use super::raw::{RawBuiltin, duration_text};
use crate::job::{BUILTINS, BuiltinDef, ExecutorDef, MAX_TIMEOUT};

/// Checks `builtin:` of job `job`; errors are recorded on `c`.
pub(crate) fn check(c: &mut Checker<'_>, job: &str, raw: RawBuiltin) -> Option<ExecutorDef> {
    let (name, args) = match raw {
        RawBuiltin::Name(name) => (name, Mapping::new()),
        RawBuiltin::Full(full) => (full.name, full.args),
    };
    let at = ["jobs", job, "builtin"];
    let args = match name.as_str() {
        "noop" => check_noop(c, &at, args),
        "sleep" => check_sleep(c, &at, args),
        "digest" => digest::check(c, &at, args),
        "backup" => backup::check(c, &at, args),
        _ => {
            c.error(
                &at,
                format!("unknown builtin \"{name}\" (expected one of: {})", BUILTINS.join(", ")),
            );
            return None;
        }
    }?;
    Some(ExecutorDef::Builtin(BuiltinDef { name, args }))
}

/// `noop` takes no arguments.
fn check_noop(c: &mut Checker<'_>, at: &[&str], args: Mapping) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoopArgs {}
    c.deserialize::<NoopArgs>(at, Value::Mapping(args))?;
    Some(BTreeMap::new())
}

/// `sleep` takes an optional `duration` (default 1s, at most the longest
/// job timeout).
fn check_sleep(c: &mut Checker<'_>, at: &[&str], args: Mapping) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SleepArgs {
        #[serde(default, deserialize_with = "duration_text")]
        duration: Option<String>,
    }
    let parsed = c.deserialize::<SleepArgs>(at, Value::Mapping(args))?;
    let mut args = BTreeMap::new();
    if let Some(text) = parsed.duration {
        let field = [at, &["duration"]].concat();
        match worker_duration::parse(&text) {
            Ok(d) if d > MAX_TIMEOUT => {
                c.error(&field, format!("{text} is longer than the maximum of 30d"));
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                c.error(&field, e.to_string());
                return None;
            }
        }
        args.insert("duration".to_string(), text);
    }
    Some(args)
}
