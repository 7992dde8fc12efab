//! Loading and validating the configuration directory (`--config DIR`).
//!
//! `DIR/scheduler.yaml` holds the job definitions (the format:
//! `docs/configuration.md`). Loading is all-or-nothing: the whole file is
//! read, every job is deserialized and validated (with `${ENV}` references in
//! its values interpolated), and *all* problems are returned together, each
//! with file, line, key path and reason. A job's *spec* (its mapping with the
//! file's defaults merged in, references not interpolated) is what the store
//! keeps and `workerctl export` prints. The controller refuses to start (exit
//! code 2) on any error, before it opens the store or binds a port.
//!
//! `DIR/alerts.yaml`, optional, holds alert channels and rules; it is validated
//! at the same time by [`crate::alerting::config`] and its problems are listed
//! with those of `scheduler.yaml`.
//!
//! Before any YAML parser sees a document, [`check_document`] bounds its size
//! (`config_file_bytes`) and nesting ([`depth`], `yaml_depth`): the parser's
//! time grows with the square of the nesting depth. Files are read with
//! [`read_bounded`]: regular files only, never more than the limit.
//!
//! * [`raw`]: the serde shape of the file;
//! * [`depth`]: linear nesting pre-scans for YAML and JSON;
//! * [`fields`]: bounds on job fields (selector and environment keys, counts, durations);
//! * [`jobs`]: validation into [`crate::job::JobDef`];
//! * [`lines`]: key path → line number, for error locations.

pub mod builtins;
pub mod depth;
pub mod env;
pub mod executors;
pub mod fields;
pub mod jobs;
pub mod lines;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::alerting::{AlertsConfig, parse_alerts_yaml};

pub use jobs::{
    JobEntry, JobSet, Source, entry_from_spec, parse_document, parse_document_partial, parse_scheduler_yaml,
    spec_to_yaml,
};

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path such as `jobs.hello.schedule` (empty for whole-file problems).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// All problems found in a configuration directory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration: {} error(s)", self.0.len())?;
        for err in &self.0 {
            writeln!(f, "{err}")?;
        }
        Ok(())
    }
}

/// The validated `--config` directory.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Path of `scheduler.yaml`.
    pub file: PathBuf,
    /// Its text (to tell whether it changed since it was last applied).
    pub text: String,
    /// Its job definitions.
    pub jobs: JobSet,
    /// `alerts.yaml`, when the directory has one.
    pub alerts: Option<LoadedAlerts>,
}

/// The validated `alerts.yaml`.
#[derive(Debug, Clone)]
pub struct LoadedAlerts {
    /// Its path.
    pub file: PathBuf,
    /// Its text (to tell whether it changed since it was last applied).
    pub text: String,
    /// Its channels and rules.
    pub config: AlertsConfig,
}

/// Loads `DIR/scheduler.yaml` and, when present, `DIR/alerts.yaml`; the
/// problems of both are reported together. A missing `scheduler.yaml` is an
/// error: `--config` must point at a directory holding one (it may define no
/// jobs: `jobs: {}`).
pub fn load_dir(dir: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let env = env::lookup;
    let mut errors = Vec::new();
    let file = dir.join("scheduler.yaml");
    let scheduler = match read_checked(&file) {
        Ok(Some(text)) => match parse_scheduler_yaml(&file, &text, &env) {
            Ok(jobs) => Some((text, jobs)),
            Err(e) => {
                errors.extend(e.0);
                None
            }
        },
        Ok(None) => {
            errors.push(whole_file(&file, "cannot read: No such file or directory".into()));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let alerts_file = dir.join("alerts.yaml");
    let alerts = match read_checked(&alerts_file) {
        Ok(Some(text)) => match parse_alerts_yaml(&alerts_file, &text, &env) {
            Ok(config) => Some(LoadedAlerts {
                file: alerts_file,
                text,
                config,
            }),
            Err(e) => {
                errors.extend(e.0);
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match scheduler {
        Some((text, jobs)) if errors.is_empty() => Ok(LoadedConfig {
            file,
            text,
            jobs,
            alerts,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

fn whole_file(file: &Path, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        path: String::new(),
        message,
    }
}

/// Reads a configuration file of at most `config_file_bytes`: `Ok(None)` when
/// it does not exist; an error when it is not a regular file (a FIFO, a device
/// such as `/dev/zero`, also through a symlink), is larger than the limit
/// (never more than limit + 1 bytes are read) or is not UTF-8.
pub fn read_bounded(file: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    let limit = crate::limits::current().config_file_bytes;
    let metadata = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(whole_file(file, format!("cannot read: {e}"))),
    };
    if !metadata.is_file() {
        return Err(whole_file(
            file,
            "cannot read: not a regular file (configuration must be a plain file)".into(),
        ));
    }
    let too_big = |size: u64| {
        whole_file(
            file,
            format!(
                "file is {}",
                crate::limits::exceeds(format!("{size} bytes"), "config_file_bytes", limit)
            ),
        )
    };
    if metadata.len() > limit as u64 {
        return Err(too_big(metadata.len()));
    }
    let handle = std::fs::File::open(file).map_err(|e| whole_file(file, format!("cannot read: {e}")))?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    handle
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole_file(file, format!("cannot read: {e}")))?;
    if bytes.len() > limit {
        // It grew while being read.
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|e| whole_file(file, format!("cannot read: not UTF-8 ({e})")))
}

/// [`read_bounded`], then [`check_document`].
fn read_checked(file: &Path) -> Result<Option<String>, ConfigError> {
    match read_bounded(file)? {
        Some(text) => check_document(file, &text).map(|()| Some(text)),
        None => Ok(None),
    }
}

/// Checks a YAML document's size (`config_file_bytes`) and nesting
/// (`yaml_depth`) before it is parsed; the error names `file` and the line.
pub fn check_document(file: &Path, text: &str) -> Result<(), ConfigError> {
    let limits = crate::limits::current();
    if text.len() > limits.config_file_bytes {
        return Err(whole_file(
            file,
            format!(
                "document is {}",
                crate::limits::exceeds(
                    format!("{} bytes", text.len()),
                    "config_file_bytes",
                    limits.config_file_bytes
                )
            ),
        ));
    }
    depth::check_yaml(text, limits.yaml_depth).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: Some(e.line),
        path: String::new(),
        message: format!(
            "nesting depth {}",
            crate::limits::exceeds(e.depth, "yaml_depth", limits.yaml_depth)
        ),
    })
}

/// Replaces `${NAME}` (NAME of letters, digits and `_`) with the variable's value;
/// `$${` writes a literal `${`, and other `${...}` forms (such as a shell's
/// `${X:-default}`) are kept as written. The error (from `lookup`) names the
/// first variable that is unset or not allowed, never a value.
pub fn interpolate_str(text: &str, lookup: env::Lookup<'_>) -> Result<String, String> {
    worker_agent::config::substitute_env_refs(text, &mut |name| lookup(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--dev` loads the repository's `config/`: it must load on a fresh machine
    /// (no secrets set), alerts.yaml included.
    #[test]
    fn the_shipped_config_directory_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let loaded = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(!loaded.jobs.is_empty());
        let alerts = loaded.alerts.expect("config/alerts.yaml is loaded");
        assert!(alerts.config.channels.is_empty() && alerts.config.rules.is_empty());
    }

    #[test]
    fn files_are_read_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; crate::limits::current().config_file_bytes + 1]).unwrap();
        let err = read_bounded(&big).unwrap_err().to_string();
        assert!(err.contains("exceeds the limit config_file_bytes=4194304"), "{err}");
        assert!(err.contains("big.yaml"), "{err}");
        #[cfg(unix)]
        {
            let link = dir.path().join("zero.yaml");
            std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
            let err = read_bounded(&link).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
        }
        assert_eq!(read_bounded(&dir.path().join("missing.yaml")).unwrap(), None);
        let deep = format!("jobs: {}", "[".repeat(100));
        let err = check_document(Path::new("s.yaml"), &deep).unwrap_err().to_string();
        assert!(
            err.starts_with("s.yaml:1: nesting depth 33 exceeds the limit yaml_depth=32"),
            "{err}"
        );
    }

    #[test]
    fn interpolates_variables_and_keeps_shell_forms() {
        let lookup = env::from_pairs(&[("TOKEN", "s3cret")]);
        assert_eq!(
            interpolate_str("a ${TOKEN} $${LIT} $x ${X:-y} $", &lookup).unwrap(),
            "a s3cret ${LIT} $x ${X:-y} $"
        );
        let err = interpolate_str("b ${MISSING}", &lookup).unwrap_err();
        assert!(err.contains("MISSING is not set"), "{err}");
    }
}
