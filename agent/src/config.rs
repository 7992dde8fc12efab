//! What an agent is told at start-up, and the parsers the binary uses for it.
//!
//! [`AgentConfig`] is plain data so that the controller's `--dev` mode can build
//! one in-process without going through command-line parsing. The parsers
//! ([`parse_labels`], [`parse_executors`], [`parse_allow_env`]) return
//! messages that name the bad entry, because they end up in front of an
//! operator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::AgentError;

/// Executor kinds this agent implements.
pub const KNOWN_EXECUTORS: &[&str] = &["shell", "http", "builtin"];

/// The executor of handlers registered through the SDK
/// ([`crate::Agent::builder`]); enabled only on an agent built that way, since
/// a plain agent has no handlers to run.
pub const HANDLER_EXECUTOR: &str = "handler";

/// Longest label key accepted.
const MAX_LABEL_KEY: usize = 63;
/// Longest label value accepted.
const MAX_LABEL_VALUE: usize = 255;

/// Configuration of one agent process.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Controller gRPC address, e.g. `http://127.0.0.1:7070`, or a
    /// comma-separated list of them (several controllers on one database):
    /// the agent finds the leader among them (see [`crate::controllers`]).
    /// A bare `host:port` gets `http://`.
    pub controller: String,
    /// Display name shown in `workerctl agents list`; defaults to the host name.
    pub name: String,
    /// Labels that job selectors match against.
    pub labels: BTreeMap<String, String>,
    /// How many attempts may run at the same time; at least 1.
    pub capacity: u32,
    /// Executor kinds this agent runs, a subset of [`KNOWN_EXECUTORS`] (plus
    /// [`HANDLER_EXECUTOR`] on an agent built with the SDK).
    pub executors: Vec<String>,
    /// Bearer token sent as `authorization: Bearer <token>` metadata when set.
    pub token: Option<String>,
    /// Time between SIGTERM and SIGKILL when a process group is killed; also
    /// how long a handler may take to return once its attempt was stopped.
    pub kill_grace: Duration,
    /// On shutdown or drain: how long in-flight work may still run before it is
    /// cancelled.
    pub drain_grace: Duration,
    /// Bytes of output tail kept per attempt.
    pub output_cap: usize,
    /// PEM file of the CA (or CAs) the controller's certificate must chain to,
    /// for an `https://` controller (`--tls-ca`). Without it, the Mozilla root
    /// certificates compiled into the agent (webpki-roots) are trusted.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain presented to the controller when it requires
    /// client certificates (mTLS, `--tls-cert`); needs [`AgentConfig::tls_key`].
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`AgentConfig::tls_cert`] (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// Trust exactly this server certificate (DER), whatever names it carries,
    /// instead of a CA: how the controller's `--dev` agent trusts the
    /// controller it runs in. Set by code, not by a flag; needs `https://`.
    pub tls_pinned_cert: Option<Vec<u8>>,
    /// The environment variables `${VAR}` in an `http` job's header values
    /// may read (`--allow-env`); empty: none.
    pub allow_env: Vec<EnvPattern>,
    /// PEM file of CAs trusted by `http` jobs besides the system's
    /// (`--http-ca`).
    pub http_ca: Option<PathBuf>,
}

impl AgentConfig {
    /// A configuration with defaults: name = host name, no labels, capacity 4,
    /// executors `shell`, `http` and `builtin`, no token, kill grace 5s, drain
    /// grace 30s, output cap 64 KiB, no TLS files, no variable allowed to
    /// `http` jobs, no extra CA.
    pub fn new(controller: impl Into<String>) -> Self {
        Self {
            controller: controller.into(),
            name: host_name(),
            labels: BTreeMap::new(),
            capacity: 4,
            executors: KNOWN_EXECUTORS.iter().map(|e| e.to_string()).collect(),
            token: None,
            kill_grace: Duration::from_secs(5),
            drain_grace: Duration::from_secs(30),
            output_cap: 64 * 1024,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_pinned_cert: None,
            allow_env: Vec::new(),
            http_ca: None,
        }
    }

    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), AgentError> {
        self.validate_for(false)
    }

    /// [`AgentConfig::validate`], accepting the executor [`HANDLER_EXECUTOR`]
    /// when `with_handlers` (an agent built by the SDK).
    pub(crate) fn validate_for(&self, with_handlers: bool) -> Result<(), AgentError> {
        let bad = |msg: String| Err(AgentError::Config(msg));
        if self.controller.trim().is_empty() {
            return bad("controller: address is empty".into());
        }
        let urls = self.controllers()?;
        if self.name.trim().is_empty() {
            return bad("name: must not be empty".into());
        }
        if self.capacity == 0 {
            return bad("capacity: must be at least 1".into());
        }
        if self.executors.is_empty() {
            return bad("executors: at least one executor must be enabled".into());
        }
        for executor in self
            .executors
            .iter()
            .filter(|e| !(with_handlers && *e == HANDLER_EXECUTOR))
        {
            check_executor(executor).map_err(|e| AgentError::Config(format!("executors: {e}")))?;
        }
        for (key, value) in &self.labels {
            check_label(key, value).map_err(|e| AgentError::Config(format!("labels: {e}")))?;
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()))
        {
            return bad("token: must be non-empty printable ASCII without spaces".into());
        }
        crate::tls::validate(self, &urls)
    }

    /// The controller addresses of [`AgentConfig::controller`], normalized
    /// (a bad one is a configuration error naming it).
    pub fn controllers(&self) -> Result<Vec<String>, AgentError> {
        crate::controllers::parse_list(&self.controller).map_err(AgentError::Config)
    }
}

/// Parses `k=v,k2=v2` into labels. Empty input gives no labels; whitespace
/// around entries is ignored. Keys are 1–63 characters of `[A-Za-z0-9._/-]`,
/// values up to 255 characters; a key may appear once.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("label `{entry}` must be key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        check_label(key, value)?;
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("label `{key}` is given twice"));
        }
    }
    Ok(labels)
}

/// Parses a comma-separated executor list such as `shell,builtin`; duplicates
/// are merged, unknown names rejected.
pub fn parse_executors(text: &str) -> Result<Vec<String>, String> {
    let mut executors: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        check_executor(name)?;
        if !executors.iter().any(|e| e == name) {
            executors.push(name.to_string());
        }
    }
    if executors.is_empty() {
        return Err(format!(
            "no executor given (choose from {})",
            KNOWN_EXECUTORS.join(", ")
        ));
    }
    Ok(executors)
}

/// One entry of the `--allow-env` list: a variable name, or a prefix written
/// `PREFIX*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvPattern {
    /// Exactly this variable.
    Name(String),
    /// Every variable whose name starts with this prefix.
    Prefix(String),
}

impl EnvPattern {
    /// Whether the variable `name` is covered.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            EnvPattern::Name(n) => n == name,
            EnvPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// Parses `--allow-env`: comma-separated names of letters, digits and `_`,
/// each optionally ending in `*` (a prefix of at least one character) — the
/// grammar of the controller's `--allow-env`.
pub fn parse_allow_env(text: &str) -> Result<Vec<EnvPattern>, String> {
    let mut patterns = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, prefix) = match item.strip_suffix('*') {
            Some(p) => (p, true),
            None => (item, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "\"{item}\" is not a variable name (letters, digits and _, optionally ending in * for a prefix)"
            ));
        }
        patterns.push(if prefix {
            EnvPattern::Prefix(name.to_string())
        } else {
            EnvPattern::Name(name.to_string())
        });
    }
    Ok(patterns)
}

/// Replaces each `${NAME}` (NAME of letters, digits and `_`) in `text` with
/// what `resolve` answers for NAME; `$${` writes a literal `${`, and other
/// `${...}` forms (a shell's `${X:-default}`) are kept as written. The first
/// error of `resolve` is returned. The grammar of `${VAR}` everywhere: the
/// controller's `env` values and channel secrets, the agent's `http` headers.
pub fn substitute_env_refs(
    text: &str,
    resolve: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                out.push_str(after);
                return Ok(out);
            };
            let name = &body[..end];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.push_str(&resolve(name)?);
            } else {
                out.push_str(&after[..end + 3]);
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn check_executor(name: &str) -> Result<(), String> {
    if KNOWN_EXECUTORS.contains(&name) {
        Ok(())
    } else if name == HANDLER_EXECUTOR {
        Err(format!(
            "executor `{name}` runs handlers registered through the SDK (worker_agent::Agent::builder); \
             this agent has none (it supports {})",
            KNOWN_EXECUTORS.join(", ")
        ))
    } else {
        Err(format!(
            "unknown executor `{name}` (this agent supports {})",
            KNOWN_EXECUTORS.join(", ")
        ))
    }
}

fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("label `{key}={value}` has an empty key"));
    }
    if key.len() > MAX_LABEL_KEY {
        return Err(format!("label key `{key}` is longer than {MAX_LABEL_KEY} characters"));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(format!(
            "label key `{key}` contains `{c}` (allowed: A-Z a-z 0-9 . _ - /)"
        ));
    }
    if value.chars().count() > MAX_LABEL_VALUE {
        return Err(format!(
            "value of label `{key}` is longer than {MAX_LABEL_VALUE} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("value of label `{key}` contains a control character"));
    }
    Ok(())
}

/// The machine's host name, or `localhost` when it cannot be read.
pub fn host_name() -> String {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_string();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..len]).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    "localhost".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels() {
        let labels = parse_labels("region=eu, tier = gpu ,empty=").unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels["region"], "eu");
        assert_eq!(labels["tier"], "gpu");
        assert_eq!(labels["empty"], "");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels(" , ").unwrap().is_empty());
        assert_eq!(parse_labels("a=b=c").unwrap()["a"], "b=c");
    }

    #[test]
    fn label_errors_name_the_entry() {
        let err = parse_labels("region=eu,gpu").unwrap_err();
        assert!(err.contains("`gpu`"), "{err}");
        let err = parse_labels("=x").unwrap_err();
        assert!(err.contains("empty key"), "{err}");
        let err = parse_labels("a b=x").unwrap_err();
        assert!(err.contains("`a b`"), "{err}");
        let err = parse_labels("a=1,a=2").unwrap_err();
        assert!(err.contains("twice"), "{err}");
        assert!(parse_labels(&format!("{}=x", "k".repeat(64))).is_err());
    }

    #[test]
    fn parses_executors() {
        assert_eq!(parse_executors("shell,builtin").unwrap(), ["shell", "builtin"]);
        assert_eq!(parse_executors(" builtin , builtin ").unwrap(), ["builtin"]);
        assert_eq!(parse_executors("shell,http").unwrap(), ["shell", "http"]);
        let err = parse_executors("shell,ftp").unwrap_err();
        assert!(err.contains("`ftp`"), "{err}");
        let err = parse_executors("handler").unwrap_err();
        assert!(err.contains("SDK"), "{err}");
        assert!(parse_executors("").is_err());
    }

    #[test]
    fn the_allow_list_parses_names_and_prefixes() {
        assert_eq!(
            parse_allow_env(" API_TOKEN, WORKER_SECRET_* ,").unwrap(),
            vec![
                EnvPattern::Name("API_TOKEN".into()),
                EnvPattern::Prefix("WORKER_SECRET_".into())
            ]
        );
        assert_eq!(parse_allow_env("").unwrap(), vec![]);
        for bad in ["*", "A-B", "A B", "$X", "A*B"] {
            let err = parse_allow_env(bad).unwrap_err();
            assert!(err.contains("is not a variable name"), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert!(EnvPattern::Name("A".into()).matches("A"));
        assert!(!EnvPattern::Name("A".into()).matches("AB"));
        assert!(EnvPattern::Prefix("WORKER_SECRET_".into()).matches("WORKER_SECRET_X"));
        assert!(!EnvPattern::Prefix("WORKER_SECRET_".into()).matches("WORKER_DB_URL"));
    }

    #[test]
    fn validates_config() {
        let config = AgentConfig::new("http://127.0.0.1:7070");
        assert!(config.validate().is_ok());
        assert!(!config.name.is_empty());
        let mut bad = config.clone();
        bad.capacity = 0;
        assert!(bad.validate().unwrap_err().to_string().contains("capacity"));
        let mut bad = config.clone();
        bad.executors = vec!["ftp".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("ftp"));
        let mut bad = config.clone();
        bad.token = Some("has space".into());
        assert!(bad.validate().unwrap_err().to_string().contains("token"));
        let mut list = config;
        list.controller = "http://a:7070, b:7070".into();
        assert!(list.validate().is_ok());
        assert_eq!(list.controllers().unwrap(), ["http://a:7070", "http://b:7070"]);
        list.controller = "http://a:7070,http://b c:7070".into();
        let text = list.validate().unwrap_err().to_string();
        assert!(
            text.contains("controller") && text.contains("`http://b c:7070`"),
            "{text}"
        );
    }
}
