//! Every size and count limit of the controller in one place: [`Limits`].
//!
//! Each limit is a field with a default that suits a normal installation; the
//! operator changes them with the repeatable flag `--limit NAME=VALUE`
//! (`--limit payload_bytes=2MiB --limit page_size=500`), parsed and validated by
//! [`Limits::set`] before anything is opened or bound. Byte sizes take a plain
//! number or a `KiB`/`MiB`/`GiB` suffix.
//!
//! The limits are process-wide: the binary installs them once with [`install`]
//! before it loads the configuration, and every check reads them with
//! [`current`] (a lock-free read of a `OnceLock`). They are consulted by free
//! functions that run long before an engine exists (loading the configuration
//! files) as well as by the API and the engine, so one installed value avoids
//! threading an argument through every parser; a process that installs nothing
//! (unit tests, in-process controllers in tests) gets [`Limits::default`].
//!
//! Every rejection names the limit, its value and the flag that changes it, in
//! the form built by [`exceeds`]:
//! `1048577 bytes exceeds the limit payload_bytes=1048576 (--limit payload_bytes=...)`.

use std::fmt;
use std::sync::OnceLock;

/// All limits. See `docs/configuration.md` ("Limits") for what each bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest run payload, in bytes (enqueue, batch enqueue, `jobs run`).
    pub payload_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON payload.
    pub json_depth: usize,
    /// Deepest nesting of a YAML document (configuration files, `apply`,
    /// alert channels and rules): flow brackets plus block indentation levels.
    pub yaml_depth: usize,
    /// Longest job name, in bytes.
    pub job_name_bytes: usize,
    /// Longest alert channel or rule name, in bytes.
    pub alert_name_bytes: usize,
    /// Longest token name, in bytes (checked when a token is created).
    pub token_name_bytes: usize,
    /// Longest agent id, name or host, in bytes.
    pub agent_text_bytes: usize,
    /// Most labels of an agent, and most selector entries of a job.
    pub labels: usize,
    /// Longest label (or selector) key or value, in bytes.
    pub label_bytes: usize,
    /// Largest capacity an agent may declare in `Hello`.
    pub agent_capacity: u32,
    /// Most dependencies of one run (`depends_on` of an enqueue) and most
    /// upstream jobs of one job definition.
    pub dependencies: usize,
    /// Most runs in one batch enqueue.
    pub batch_runs: usize,
    /// Longest idempotency key, `ref` or dependency id, in bytes.
    pub key_bytes: usize,
    /// Output tail kept per attempt, in bytes (the end is kept).
    pub output_bytes: usize,
    /// Largest gRPC message the controller decodes (both services).
    pub grpc_message_bytes: usize,
    /// Largest page of a list call (`limit` of ListRuns, ListDlq, ListQueue,
    /// alert history); a request above it is refused.
    pub page_size: u32,
    /// Reply bytes of one list call: items stop being added at this budget
    /// and the reply says it was truncated.
    pub list_reply_bytes: usize,
    /// Most fires one schedule preview lists.
    pub preview_fires: u32,
    /// Most job definitions in one `apply` document.
    pub definitions_per_apply: usize,
    /// Largest configuration file (`scheduler.yaml`, `alerts.yaml`) and
    /// largest YAML document sent to `apply`, `alerts set-channel|set-rule`.
    pub config_file_bytes: usize,
    /// Most streams (agent connections, event watches, output follows) open
    /// at once per token: the same setting as `--max-streams-per-token`,
    /// which wins when both are given (see
    /// [`crate::auth::max_streams_per_token`]); enforced by the
    /// authentication layer.
    pub streams_per_token: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            payload_bytes: 1024 * 1024,
            json_depth: 64,
            yaml_depth: 32,
            job_name_bytes: 128,
            alert_name_bytes: 64,
            token_name_bytes: crate::auth::tokens::MAX_TOKEN_NAME,
            agent_text_bytes: 256,
            labels: 64,
            label_bytes: 256,
            agent_capacity: 10_000,
            dependencies: 100,
            batch_runs: 1000,
            key_bytes: 256,
            output_bytes: 64 * 1024,
            grpc_message_bytes: 4 * 1024 * 1024,
            page_size: 1000,
            list_reply_bytes: 16 * 1024 * 1024,
            preview_fires: 1000,
            definitions_per_apply: 1000,
            config_file_bytes: 4 * 1024 * 1024,
            streams_per_token: crate::auth::DEFAULT_MAX_STREAMS_PER_TOKEN,
        }
    }
}

/// How a limit's value is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A byte size: a number, or with a `KiB`/`MiB`/`GiB` suffix.
    Bytes,
    /// A count or depth.
    Count,
}

/// The name, kind, description and accessors of every field, in one table so
/// that parsing, listing and documentation cannot drift apart.
struct Field {
    name: &'static str,
    kind: Kind,
    /// Smallest value that makes sense.
    min: u64,
    get: fn(&Limits) -> u64,
    set: fn(&mut Limits, u64),
}

macro_rules! field {
    ($name:ident, $kind:expr, $min:expr) => {
        Field {
            name: stringify!($name),
            kind: $kind,
            min: $min,
            get: |l| l.$name as u64,
            set: |l, v| l.$name = v as _,
        }
    };
}

const FIELDS: &[Field] = &[
    field!(payload_bytes, Kind::Bytes, 2),
    field!(json_depth, Kind::Count, 1),
    field!(yaml_depth, Kind::Count, 4),
    field!(job_name_bytes, Kind::Bytes, 1),
    field!(alert_name_bytes, Kind::Bytes, 1),
    field!(token_name_bytes, Kind::Bytes, 1),
    field!(agent_text_bytes, Kind::Bytes, 1),
    field!(labels, Kind::Count, 0),
    field!(label_bytes, Kind::Bytes, 1),
    field!(agent_capacity, Kind::Count, 1),
    field!(dependencies, Kind::Count, 0),
    field!(batch_runs, Kind::Count, 1),
    field!(key_bytes, Kind::Bytes, 1),
    field!(output_bytes, Kind::Bytes, 0),
    field!(grpc_message_bytes, Kind::Bytes, 64 * 1024),
    field!(page_size, Kind::Count, 1),
    field!(list_reply_bytes, Kind::Bytes, 64 * 1024),
    field!(preview_fires, Kind::Count, 1),
    field!(definitions_per_apply, Kind::Count, 1),
    field!(config_file_bytes, Kind::Bytes, 1024),
    field!(streams_per_token, Kind::Count, 1),
];

/// Largest value any limit takes (a `u32` field must hold it too).
const MAX_VALUE: u64 = u32::MAX as u64;

/// A `--limit` that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Not `NAME=VALUE`.
    #[error("--limit {0}: expected NAME=VALUE (e.g. payload_bytes=2MiB)")]
    Syntax(String),
    /// No limit has this name.
    #[error("--limit {name}: unknown limit \"{name}\" (known: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The value does not parse or is out of range.
    #[error("--limit {name}={value}: {reason}")]
    Value {
        /// The limit.
        name: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl Limits {
    /// The names of all limits, in documentation order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FIELDS.iter().map(|f| f.name)
    }

    /// Applies one `NAME=VALUE` (the argument of `--limit`).
    pub fn set(&mut self, assignment: &str) -> Result<(), LimitError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| LimitError::Syntax(assignment.to_string()))?;
        let (name, value) = (name.trim(), value.trim());
        let field = FIELDS
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| LimitError::Unknown {
                name: name.to_string(),
                known: Limits::names().collect::<Vec<_>>().join(", "),
            })?;
        let bad = |reason: String| LimitError::Value {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        };
        let parsed = match field.kind {
            Kind::Bytes => parse_bytes(value).map_err(bad)?,
            Kind::Count => value
                .parse::<u64>()
                .map_err(|_| bad("expected a whole number".to_string()))?,
        };
        if parsed < field.min || parsed > MAX_VALUE {
            return Err(bad(format!("must be between {} and {MAX_VALUE}", field.min)));
        }
        (field.set)(self, parsed);
        Ok(())
    }

    /// Defaults with every assignment applied in order (the `--limit` flags).
    pub fn from_assignments<'a>(assignments: impl IntoIterator<Item = &'a str>) -> Result<Limits, LimitError> {
        let mut limits = Limits::default();
        for a in assignments {
            limits.set(a)?;
        }
        Ok(limits)
    }

    /// `(name, value)` of every limit, values as `--limit` takes them.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        FIELDS
            .iter()
            .map(|f| {
                let v = (f.get)(self);
                let text = match f.kind {
                    Kind::Bytes => format_bytes(v),
                    Kind::Count => v.to_string(),
                };
                (f.name, text)
            })
            .collect()
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.entries().into_iter().map(|(n, v)| format!("{n}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// `1048576`, `1024KiB`, `1MiB`, `1GiB` (also `K`, `M`, `G`, `KB`... as binary units).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a byte size such as 1048576, 512KiB or 2MiB".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit \"{other}\" (use KiB, MiB or GiB)")),
    };
    number.checked_mul(factor).ok_or_else(|| "too large".to_string())
}

/// `2MiB`, `512KiB` or a plain number, whichever is exact.
fn format_bytes(v: u64) -> String {
    if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{}MiB", v >> 20)
    } else if v >= 1 << 10 && v.is_multiple_of(1 << 10) {
        format!("{}KiB", v >> 10)
    } else {
        v.to_string()
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Installs the process's limits; call it once, before anything reads them.
/// Installing the same value again is fine; a different one is refused (the
/// first stays in force): `false` then.
pub fn install(limits: Limits) -> bool {
    LIMITS.set(limits).is_ok() || *current() == limits
}

/// The limits in force: the installed ones, or the defaults.
pub fn current() -> &'static Limits {
    LIMITS.get_or_init(Limits::default)
}

/// The end of a rejection: `VALUE exceeds the limit NAME=LIMIT (--limit NAME=...)`,
/// `value` already with its unit (`1048577 bytes`, `33 levels`).
pub fn exceeds(value: impl fmt::Display, name: &str, limit: impl fmt::Display) -> String {
    format!("{value} exceeds the limit {name}={limit} (--limit {name}=...)")
}

/// Longest piece of a request echoed into an error message, in characters.
pub const ECHO_CHARS: usize = 128;

/// `text` as it may be echoed in an error: at most [`ECHO_CHARS`] characters
/// (then `…`), control characters escaped.
pub fn echo(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == ECHO_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with control characters other than newline and tab escaped
/// (`\u{1b}`); unchanged (not copied) when there are none.
pub fn escape_controls(text: String) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest gRPC status message sent, in bytes. The message travels in the
/// `grpc-message` header, percent-encoded (up to three bytes per byte), and
/// clients refuse header blocks over 16 KiB with a protocol error.
pub const STATUS_MESSAGE_BYTES: usize = 4096;

/// `message` cut to [`STATUS_MESSAGE_BYTES`] (on a character boundary), saying
/// how much was left out, with every control character but newline and tab
/// escaped: whatever a request put into a message (a name, a key) must not
/// drive the terminal of whoever reads the answer.
pub fn status_message(message: String) -> String {
    let message = escape_controls(message);
    if message.len() <= STATUS_MESSAGE_BYTES {
        return message;
    }
    let mut end = STATUS_MESSAGE_BYTES - 64;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes left out)", &message[..end], message.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_assignments() {
        let l = Limits::from_assignments(["payload_bytes=2MiB", "page_size=500", "yaml_depth = 16"]).unwrap();
        assert_eq!(l.payload_bytes, 2 << 20);
        assert_eq!(l.page_size, 500);
        assert_eq!(l.yaml_depth, 16);
        assert_eq!(l.json_depth, Limits::default().json_depth);
        assert_eq!(
            Limits::from_assignments(["output_bytes=512KiB"]).unwrap().output_bytes,
            512 << 10
        );
        assert_eq!(
            Limits::from_assignments(["output_bytes=1000"]).unwrap().output_bytes,
            1000
        );
    }

    #[test]
    fn bad_assignments_say_why() {
        let err = Limits::from_assignments(["nope=1"]).unwrap_err().to_string();
        assert!(err.contains("unknown limit \"nope\""), "{err}");
        assert!(
            err.contains("payload_bytes") && err.contains("streams_per_token"),
            "{err}"
        );
        let err = Limits::from_assignments(["page_size"]).unwrap_err().to_string();
        assert!(err.contains("expected NAME=VALUE"), "{err}");
        let err = Limits::from_assignments(["page_size=-1"]).unwrap_err().to_string();
        assert!(err.contains("whole number"), "{err}");
        let err = Limits::from_assignments(["page_size=0"]).unwrap_err().to_string();
        assert!(err.contains("must be between 1"), "{err}");
        let err = Limits::from_assignments(["payload_bytes=2TiB"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown unit"), "{err}");
        let err = Limits::from_assignments(["payload_bytes=8GiB"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be between"), "{err}");
    }

    #[test]
    fn every_field_is_in_the_table() {
        // A field missing from FIELDS could not be set: compare a Debug listing.
        let debug = format!("{:?}", Limits::default());
        let fields = debug.matches(": ").count();
        assert_eq!(fields, FIELDS.len(), "{debug}");
        for (name, value) in Limits::default().entries() {
            let mut l = Limits::default();
            l.set(&format!("{name}={value}")).unwrap();
            assert_eq!(l, Limits::default(), "{name}");
        }
    }

    /// Every limit that `--limit` accepts is read by the code it bounds: a
    /// field only this file mentions would be a knob that does nothing (as
    /// `streams_per_token` and `token_name_bytes` once were). The sources
    /// outside this file must read each as `limits.NAME` or `current().NAME`.
    #[test]
    fn every_accepted_limit_is_read_somewhere() {
        fn sources(dir: &std::path::Path, out: &mut String) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("src/limits.rs") {
                    out.push_str(&std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut text = String::new();
        sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut text);
        let unread: Vec<&str> = Limits::names()
            .filter(|name| !text.contains(&format!("limits.{name}")) && !text.contains(&format!("current().{name}")))
            .collect();
        assert!(unread.is_empty(), "limits accepted but read nowhere: {unread:?}");
    }

    #[test]
    fn rejection_text_and_echo() {
        assert_eq!(
            exceeds("1048577 bytes", "payload_bytes", 1048576),
            "1048577 bytes exceeds the limit payload_bytes=1048576 (--limit payload_bytes=...)"
        );
        let long = "x".repeat(20_000);
        assert_eq!(echo(&long).chars().count(), ECHO_CHARS + 1);
        assert_eq!(echo("a\u{1b}[31m"), "a\\u{1b}[31m");
        let msg = status_message("é".repeat(10_000));
        assert!(msg.len() <= STATUS_MESSAGE_BYTES + 40, "{}", msg.len());
        assert!(msg.ends_with("more bytes left out)"));
        assert_eq!(
            status_message("job \"x\u{1b}]0;t\u{7}\" is not defined\nnext\tline".into()),
            "job \"x\\u{1b}]0;t\\u{7}\" is not defined\nnext\tline"
        );
    }
}
