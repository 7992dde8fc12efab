//! Loading and validating the configuration directory (`--config DIR`).
//!
//! `DIR/scheduler.yaml` holds the job definitions (design §3). Loading is
//! all-or-nothing: the whole file is read, `${ENV}` references are interpolated,
//! every job is deserialized and validated, and *all* problems are returned
//! together, each with file, line, key path and reason. The controller refuses to
//! start (exit code 2) on any error, before it opens the store or binds a port.
//!
//! * [`raw`]: the serde shape of the file;
//! * [`jobs`]: validation into [`crate::job::JobDef`];
//! * [`lines`]: key path → line number, for error locations.

pub mod jobs;
pub mod lines;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

pub use jobs::{JobSet, parse_scheduler_yaml};

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

/// Loads `DIR/scheduler.yaml`. A missing file is an error: `--config` must point at
/// a directory holding one (it may define no jobs: `jobs: {}`).
pub fn load_dir(dir: &Path) -> Result<JobSet, ConfigErrors> {
    let file = dir.join("scheduler.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_scheduler_yaml(&file, &text, &|name| std::env::var(name).ok())
}

/// Replaces `${NAME}` (NAME of letters, digits and `_`) with the variable's value;
/// `$${` writes a literal `${`, and other `${...}` forms (such as a shell's
/// `${X:-default}`) are kept as written. Unset variables are errors located at
/// their line.
pub fn interpolate(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(literal) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = literal;
            } else if let Some(body) = after.strip_prefix("${") {
                match body.find('}') {
                    Some(end) => {
                        let name = &body[..end];
                        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        match (valid, lookup(name)) {
                            (true, Some(value)) => out.push_str(&value),
                            (true, None) => errors.push(ConfigError {
                                file: file.to_path_buf(),
                                line: Some(index + 1),
                                path: String::new(),
                                message: format!("environment variable {name} is not set (referenced as ${{{name}}})"),
                            }),
                            // Not a variable reference (e.g. a shell `${X:-default}`): kept as written.
                            (false, _) => out.push_str(&after[..end + 3]),
                        }
                        rest = &body[end + 1..];
                    }
                    None => {
                        out.push_str(after);
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_reports_unset_variables_with_lines() {
        let lookup = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        let file = Path::new("scheduler.yaml");
        assert_eq!(
            interpolate(file, "a: ${TOKEN}\nb: $${LIT} $x ${X:-y}\n", &lookup).unwrap(),
            "a: s3cret\nb: ${LIT} $x ${X:-y}\n"
        );
        let errors = interpolate(file, "a: 1\nb: ${MISSING}\n", &lookup).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(2));
        assert!(errors[0].message.contains("MISSING is not set"));
    }
}
