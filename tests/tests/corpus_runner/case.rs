//! The format of the corpus files (`tests/corpus/*.yaml`, described in
//! `tests/corpus/README.md`) and the expansion of their macros.
//!
//! A file is `{about, cases: [...]}`; a case has a `name`, exactly one way of
//! delivery (`cli`, `grpc`, `raw`, `agent` or `config`) and an `expect`.
//! Strings may hold macros, expanded before delivery:
//! * `{{rep N|TEXT}}`: TEXT repeated N times (deep nesting, long names);
//! * `{{seq N|TEXT}}`: TEXT N times, each `#` in it replaced by 0..N (unique keys);
//! * `{{dir}}`: the case's own scratch directory (where `files` are written).
//!
//! TEXT ends at the first `}}`, so it cannot contain `}}` itself.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// One corpus file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusFile {
    /// What the file covers (shown in the README).
    #[allow(dead_code)]
    pub about: String,
    /// Its cases, run in order.
    pub cases: Vec<Case>,
}

/// One hostile input and the answer it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique within its file.
    pub name: String,
    /// Why the expectation is what it is, when it is a judgement call.
    #[serde(default)]
    #[allow(dead_code)]
    pub note: Option<String>,
    /// A known gap: the controller does not yet give this case its expected
    /// answer (the reason). Such a case is not delivered (so it cannot change
    /// the store) and the run lists it on stderr; fix the code, then remove it.
    #[serde(default)]
    pub open: Option<String>,
    /// `workerctl --controller URL -o json ARGS...`.
    #[serde(default)]
    pub cli: Option<Vec<String>>,
    /// Standard input of `cli` (text).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Standard input of `cli` as hex (for bytes that are not UTF-8).
    #[serde(default)]
    pub stdin_hex: Option<String>,
    /// Files written to `{{dir}}` before `cli` runs: name → text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// A typed gRPC call built from a JSON description.
    #[serde(default)]
    pub grpc: Option<GrpcCall>,
    /// A gRPC call with a hand-made protobuf body.
    #[serde(default)]
    pub raw: Option<RawCall>,
    /// An `AgentService.Connect` stream opened with this first message.
    #[serde(default)]
    pub agent: Option<AgentCall>,
    /// A configuration directory the controller is started with.
    #[serde(default)]
    pub config: Option<ConfigDir>,
    /// The answer it must get.
    pub expect: Expect,
}

/// `grpc:` of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCall {
    /// The method of `ControllerService` (`Enqueue`, `ListRuns`, ...).
    pub rpc: String,
    /// The request as a mapping (field names of the proto message).
    #[serde(default)]
    pub request: Option<Value>,
    /// The request as JSON text (after macro expansion), for generated ones.
    #[serde(default)]
    pub request_json: Option<String>,
}

/// `raw:` of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    /// The gRPC path, `/worker.v1.ControllerService/ListRuns`.
    pub path: String,
    /// The encoded protobuf message, in hex.
    pub body_hex: String,
}

/// `agent:` of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCall {
    /// The `Hello` (field names of the proto message).
    #[serde(default)]
    pub hello: Option<Value>,
    /// The `Hello` as JSON text (after macro expansion).
    #[serde(default)]
    pub hello_json: Option<String>,
    /// Send this instead of a `Hello` first: `pull` or `heartbeat`.
    #[serde(default)]
    pub first: Option<String>,
}

/// `config:` of a case: the files of the `--config` directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDir {
    /// `scheduler.yaml` as text (default: `jobs: {}`).
    #[serde(default)]
    pub scheduler: Option<String>,
    /// `scheduler.yaml` as hex bytes.
    #[serde(default)]
    pub scheduler_hex: Option<String>,
    /// `scheduler.yaml` as a symbolic link to this path.
    #[serde(default)]
    pub scheduler_symlink: Option<String>,
    /// `scheduler.yaml` as a sparse file of this many zero bytes.
    #[serde(default)]
    pub scheduler_sparse_bytes: Option<u64>,
    /// `alerts.yaml` as text.
    #[serde(default)]
    pub alerts: Option<String>,
}

/// One value or a list of acceptable ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// Exactly this.
    One(T),
    /// Any of these.
    Many(Vec<T>),
}

impl<T: PartialEq + Clone> OneOrMany<T> {
    /// Whether `v` is acceptable.
    pub fn accepts(&self, v: &T) -> bool {
        match self {
            OneOrMany::One(x) => x == v,
            OneOrMany::Many(xs) => xs.contains(v),
        }
    }
}

/// `expect:` of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exit code of `workerctl` or of the controller (`cli`, `config`).
    #[serde(default)]
    pub exit: Option<OneOrMany<i32>>,
    /// gRPC status code name (`Ok`, `InvalidArgument`, ...) (`grpc`, `raw`, `agent`).
    #[serde(default)]
    pub code: Option<OneOrMany<String>>,
    /// Substrings the error (stderr, or the status message) must contain,
    /// case-insensitively; `a|b` accepts either.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Substrings that must not appear anywhere in the answer.
    #[serde(default)]
    pub absent: Vec<String>,
    /// The whole answer (stdout + stderr, or status message) is at most this
    /// long (default [`DEFAULT_MAX_OUTPUT`]): a hostile input is not echoed.
    #[serde(default)]
    pub max_output_bytes: Option<usize>,
}

/// Default bound on an answer's length.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024;

/// Expands the macros of `text` (see the module docs); `dir` is `{{dir}}`.
pub fn expand(text: &str, dir: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let body_and_more = &rest[start + 2..];
        let end = body_and_more
            .find("}}")
            .ok_or_else(|| format!("unclosed macro in {:?}", truncate(text)))?;
        let body = &body_and_more[..end];
        rest = &body_and_more[end + 2..];
        if body == "dir" {
            out.push_str(dir);
            continue;
        }
        let (head, item) = body
            .split_once('|')
            .ok_or_else(|| format!("macro {{{{{body}}}}} needs `rep N|TEXT`, `seq N|TEXT` or `dir`"))?;
        let (kind, count) = head
            .split_once(' ')
            .ok_or_else(|| format!("macro {{{{{head}|..}}}} needs a count"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("macro {{{{{head}|..}}}}: bad count"))?;
        match kind {
            "rep" => out.push_str(&item.repeat(count)),
            "seq" => {
                for i in 0..count {
                    out.push_str(&item.replace('#', &i.to_string()));
                }
            }
            other => return Err(format!("unknown macro {other:?}")),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands the macros in every string of a JSON value.
pub fn expand_value(v: &Value, dir: &str) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand(s, dir)?),
        Value::Array(items) => Value::Array(items.iter().map(|i| expand_value(i, dir)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((expand(k, dir)?, expand_value(v, dir)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Decodes hex (whitespace ignored).
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|e| format!("bad hex: {e}"))
}

/// The first 120 characters of `s`, for messages.
pub fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push_str(&format!("... ({} bytes)", s.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand() {
        assert_eq!(expand("a{{rep 3|[}}b", "/d").unwrap(), "a[[[b");
        assert_eq!(expand("{{seq 3|x#,}}", "/d").unwrap(), "x0,x1,x2,");
        assert_eq!(expand("{{dir}}/f", "/d").unwrap(), "/d/f");
        assert!(expand("{{rep x|a}}", "/d").is_err());
    }
}
