//! The pack format: a `pack.yaml` manifest, a `job.yaml` and the files they
//! name, each listed in the manifest with its SHA-256 (docs/catalog.md).
//!
//! A [`Pack`] is built from its files however they arrived (a directory, the
//! store, a `PublishPack` request, another controller's answer) by
//! [`Pack::from_files`], which parses the manifest and enforces the limits;
//! [`Pack::verify`] then compares every file with its listed digest. Nothing
//! is installed or published from a pack that fails either.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

use crate::config::jobs::Checker;
use crate::config::{ConfigError, ConfigErrors};

/// The manifest's file name.
pub const MANIFEST: &str = "pack.yaml";
/// The job definitions' file name.
pub const JOB_FILE: &str = "job.yaml";
/// Most files a pack may hold, `pack.yaml` included.
pub const MAX_FILES: usize = 32;
/// Largest file of a pack, in bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Largest pack (all files together), in bytes.
pub const MAX_PACK_BYTES: usize = 1024 * 1024;
/// Longest pack name, variable name or path segment, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest file path in a pack, in bytes.
pub const MAX_PATH_BYTES: usize = 255;
/// Most variables a pack may declare.
pub const MAX_VARIABLES: usize = 32;
/// Longest description, author or variable text, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;
/// The executors a manifest may name.
pub const EXECUTORS: [&str; 4] = ["shell", "http", "builtin", "handler"];

/// A pack that cannot be used, with every reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackError {
    /// The manifest or a file breaks the format or a limit (each located).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// Files do not match their manifest digests (one line per file).
    #[error("checksum verification failed:\n{}", .0.join("\n"))]
    Checksum(Vec<String>),
}

impl PackError {
    fn one(file: &str, message: impl Into<String>) -> PackError {
        PackError::Invalid(ConfigErrors(vec![whole(file, message)]))
    }
}

fn whole(file: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.into(),
        line: None,
        path: String::new(),
        message: message.into(),
    }
}

/// One variable a pack's `job.yaml` uses as `{{vars.NAME}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// What it is for (shown when asked for).
    #[serde(default)]
    pub description: String,
    /// The value when none is given.
    #[serde(default, deserialize_with = "scalar_text")]
    pub default: Option<String>,
    /// A secret: its value must be a `${VAR}` reference (read from the
    /// controller's or agent's environment), never the secret itself.
    #[serde(default)]
    pub secret: bool,
}

/// The validated `pack.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Pack name (`[a-z0-9][a-z0-9._-]*`, at most 64 bytes).
    pub name: String,
    /// Its version (semver).
    pub version: semver::Version,
    /// One paragraph on what the pack does.
    pub description: String,
    /// Who wrote it.
    pub author: String,
    /// The executors its jobs need (`shell`, `http`, `builtin`, `handler`).
    pub executors: Vec<String>,
    /// The variables `job.yaml` uses.
    pub variables: Vec<Variable>,
    /// Every file but `pack.yaml`, with its hex SHA-256.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(deserialize_with = "required_text")]
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    executors: Vec<String>,
    #[serde(default)]
    variables: Vec<Variable>,
    #[serde(default)]
    files: BTreeMap<String, String>,
}

/// A YAML scalar (string, number or bool) as text; `1.0.0` and `30` are
/// written unquoted in manifests.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(serde::de::Error::custom("expected a string, number or boolean")),
    }
}

fn required_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_text(d)?.ok_or_else(|| serde::de::Error::custom("must not be empty"))
}

/// A pack: its manifest and every file (`pack.yaml` included), by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The `pack.yaml` text.
    pub manifest_text: String,
    /// Every file by path, `pack.yaml` included.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a pack name: `[a-z0-9][a-z0-9._-]*`, at most [`MAX_NAME_BYTES`].
pub fn check_pack_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_NAME_BYTES {
        Err(format!("pack name is {} bytes, more than {MAX_NAME_BYTES}", name.len()))
    } else if !ok_first || !ok_rest {
        Err(format!(
            "invalid pack name \"{}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            crate::limits::echo(name)
        ))
    } else {
        Ok(())
    }
}

/// Checks a variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME_BYTES`].
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.len() > MAX_NAME_BYTES || !ok_first || !ok_rest {
        Err(format!(
            "invalid variable name \"{}\": use letters, digits and '_', not starting with a digit, at most {MAX_NAME_BYTES} bytes",
            crate::limits::echo(name)
        ))
    } else {
        Ok(())
    }
}

/// Checks a file path of a pack: relative, `/`-separated segments of
/// `[A-Za-z0-9._-]` that are not `.` or `..`, at most [`MAX_PATH_BYTES`].
pub fn check_path(path: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid file path \"{}\": use relative paths of letters, digits, '.', '_', '-' and '/', without '.' or '..' segments, at most {MAX_PATH_BYTES} bytes",
            crate::limits::echo(path)
        )
    };
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(bad());
    }
    for segment in path.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.len() > MAX_NAME_BYTES
            || !segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// Parses and validates a `pack.yaml` text (`file` names it in messages).
/// Every problem is returned, located by line.
pub fn parse_manifest(file: &str, text: &str) -> Result<Manifest, ConfigErrors> {
    let path = Path::new(file);
    if let Err(e) = crate::config::check_document(path, text) {
        return Err(ConfigErrors(vec![e]));
    }
    let none = |name: &str| Err(format!("${{{name}}} is not read in pack.yaml"));
    let mut c = Checker::new(path, text, &none);
    let value: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: path.into(),
                line: e.location().map(|l| l.line()),
                path: String::new(),
                message: format!("invalid YAML: {e}"),
            }]));
        }
    };
    let Some(raw) = c.deserialize::<RawManifest>(&[], value) else {
        return Err(ConfigErrors(c.errors));
    };
    if let Err(e) = check_pack_name(&raw.name) {
        c.error(&["name"], e);
    }
    let version = match semver::Version::parse(&raw.version) {
        Ok(v) => Some(v),
        Err(e) => {
            c.error(
                &["version"],
                format!(
                    "\"{}\" is not a semantic version (MAJOR.MINOR.PATCH): {e}",
                    crate::limits::echo(&raw.version)
                ),
            );
            None
        }
    };
    for (field, text) in [("description", &raw.description), ("author", &raw.author)] {
        if text.len() > MAX_TEXT_BYTES {
            c.error(&[field], format!("is {} bytes, more than {MAX_TEXT_BYTES}", text.len()));
        }
    }
    if raw.description.trim().is_empty() {
        c.error(&["description"], "must not be empty");
    }
    for (i, executor) in raw.executors.iter().enumerate() {
        if !EXECUTORS.contains(&executor.as_str()) {
            c.error(
                &["executors", &format!("[{i}]")],
                format!(
                    "unknown executor \"{}\" (expected one of: {})",
                    crate::limits::echo(executor),
                    EXECUTORS.join(", ")
                ),
            );
        }
    }
    if raw.variables.len() > MAX_VARIABLES {
        c.error(
            &["variables"],
            format!("{} variables, more than {MAX_VARIABLES}", raw.variables.len()),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in raw.variables.iter().enumerate() {
        let at = format!("[{i}]");
        if let Err(e) = check_variable_name(&v.name) {
            c.error(&["variables", &at, "name"], e);
        } else if !seen.insert(v.name.clone()) {
            c.error(
                &["variables", &at, "name"],
                format!("variable \"{}\" is declared twice", v.name),
            );
        }
        if v.description.len() > MAX_TEXT_BYTES {
            c.error(
                &["variables", &at, "description"],
                format!("more than {MAX_TEXT_BYTES} bytes"),
            );
        }
        if let Some(default) = &v.default
            && let Err(e) = check_value(v, default)
        {
            c.error(&["variables", &at, "default"], e);
        }
    }
    if raw.files.len() + 1 > MAX_FILES {
        c.error(
            &["files"],
            format!("{} files, more than {MAX_FILES} with pack.yaml", raw.files.len() + 1),
        );
    }
    if !raw.files.contains_key(JOB_FILE) {
        c.error(&["files"], format!("must list {JOB_FILE}"));
    }
    for (path, digest) in &raw.files {
        if let Err(e) = check_path(path) {
            c.error(&["files", path], e);
        } else if path == MANIFEST {
            c.error(&["files", path], "pack.yaml is not listed in itself");
        }
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')) {
            c.error(
                &["files", path],
                format!(
                    "\"{}\" is not a lowercase hex SHA-256 (64 characters)",
                    crate::limits::echo(digest)
                ),
            );
        }
    }
    match version {
        Some(version) if c.errors.is_empty() => Ok(Manifest {
            name: raw.name,
            version,
            description: raw.description,
            author: raw.author,
            executors: raw.executors,
            variables: raw.variables,
            files: raw.files,
        }),
        _ => {
            let mut errors = c.errors;
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(ConfigErrors(errors))
        }
    }
}

/// Checks a value given to `variable`: a secret must be one `${VAR}`
/// reference; any value at most [`MAX_TEXT_BYTES`] without control
/// characters other than tab.
pub fn check_value(variable: &Variable, value: &str) -> Result<(), String> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "the value of {} is {} bytes, more than {MAX_TEXT_BYTES}",
            variable.name,
            value.len()
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("the value of {} holds control characters", variable.name));
    }
    if variable.secret && !is_env_reference(value) {
        return Err(format!(
            "{} is a secret: give it as a ${{VAR}} reference (read from the environment where the job's secrets live), not as its value",
            variable.name
        ));
    }
    Ok(())
}

/// Whether `value` is exactly one `${NAME}` reference.
pub fn is_env_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|name| check_variable_name(name).is_ok())
}

impl Pack {
    /// Builds a pack from its files (`pack.yaml` among them): parses the
    /// manifest, enforces the count and size limits, and requires exactly the
    /// files the manifest lists. Digests are compared by [`Pack::verify`].
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Pack, PackError> {
        if files.len() > MAX_FILES {
            return Err(PackError::one(
                MANIFEST,
                format!("the pack has {} files, more than {MAX_FILES}", files.len()),
            ));
        }
        let mut total = 0usize;
        for (path, content) in &files {
            check_path(path).map_err(|e| PackError::one(path, e))?;
            if content.len() > MAX_FILE_BYTES {
                return Err(PackError::one(
                    path,
                    format!("the file is {} bytes, more than {MAX_FILE_BYTES}", content.len()),
                ));
            }
            total += content.len();
        }
        if total > MAX_PACK_BYTES {
            return Err(PackError::one(
                MANIFEST,
                format!("the pack is {total} bytes, more than {MAX_PACK_BYTES}"),
            ));
        }
        let text = files
            .get(MANIFEST)
            .ok_or_else(|| PackError::one(MANIFEST, "the pack has no pack.yaml"))?;
        let manifest_text = String::from_utf8(text.clone()).map_err(|_| PackError::one(MANIFEST, "is not UTF-8"))?;
        let manifest = parse_manifest(MANIFEST, &manifest_text).map_err(PackError::Invalid)?;
        let mut problems = Vec::new();
        for path in manifest.files.keys() {
            if !files.contains_key(path) {
                problems.push(whole(path, "listed in pack.yaml but missing from the pack"));
            }
        }
        for path in files.keys() {
            if path != MANIFEST && !manifest.files.contains_key(path) {
                problems.push(whole(path, "in the pack but not listed in pack.yaml's files"));
            }
        }
        if !problems.is_empty() {
            return Err(PackError::Invalid(ConfigErrors(problems)));
        }
        Ok(Pack {
            manifest,
            manifest_text,
            files,
        })
    }

    /// Reads a pack directory: every regular file under it (symlinks and
    /// other kinds are refused), within the limits.
    pub fn read_dir(dir: &Path) -> Result<Pack, PackError> {
        Pack::from_files(read_dir_files(dir)?)
    }

    /// Compares every listed file with its digest; the error names each file
    /// that differs with the expected and the actual digest.
    pub fn verify(&self) -> Result<(), PackError> {
        let problems = self.checksum_errors();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PackError::Checksum(problems))
        }
    }

    /// One line per file whose content does not match its digest.
    pub fn checksum_errors(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, expected) in &self.manifest.files {
            let actual = self.files.get(path).map(|c| sha256_hex(c)).unwrap_or_default();
            if &actual != expected {
                problems.push(format!("{path}: expected sha256 {expected}, found {actual}"));
            }
        }
        problems
    }

    /// The hex SHA-256 of the manifest text (which lists every file's digest).
    pub fn digest(&self) -> String {
        sha256_hex(self.manifest_text.as_bytes())
    }

    /// The `job.yaml` text.
    pub fn job_text(&self) -> Result<&str, PackError> {
        let bytes = self
            .files
            .get(JOB_FILE)
            .ok_or_else(|| PackError::one(JOB_FILE, "the pack has no job.yaml"))?;
        std::str::from_utf8(bytes).map_err(|_| PackError::one(JOB_FILE, "is not UTF-8"))
    }
}

/// The files under `dir` by relative path, bounded by the pack limits while
/// reading (a directory with thousands of files stops at the limit).
pub fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, PackError> {
    let mut files = BTreeMap::new();
    let mut total = 0usize;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    let shown = dir.display().to_string();
    while let Some((at, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&at).map_err(|e| PackError::one(&shown, format!("cannot read {}: {e}", at.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| PackError::one(&shown, format!("cannot read {}: {e}", at.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| PackError::one(&rel, format!("cannot read: {e}")))?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
                continue;
            }
            if !kind.is_file() {
                return Err(PackError::one(&rel, "not a regular file (packs hold plain files only)"));
            }
            if files.len() >= MAX_FILES {
                return Err(PackError::one(
                    &shown,
                    format!("the pack has more than {MAX_FILES} files"),
                ));
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if len > MAX_FILE_BYTES as u64 {
                return Err(PackError::one(
                    &rel,
                    format!("the file is {len} bytes, more than {MAX_FILE_BYTES}"),
                ));
            }
            let content = std::fs::read(entry.path()).map_err(|e| PackError::one(&rel, format!("cannot read: {e}")))?;
            total += content.len();
            if total > MAX_PACK_BYTES {
                return Err(PackError::one(
                    &shown,
                    format!("the pack is more than {MAX_PACK_BYTES} bytes"),
                ));
            }
            files.insert(rel, content);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "jobs:\n  hello:\n    shell: \"echo hi\"\n";

    fn manifest(files: &[(&str, &[u8])]) -> String {
        let mut text = "name: hello\nversion: 1.0.0\ndescription: Says hello\nauthor: me\nexecutors: [shell]\nfiles:\n"
            .to_string();
        for (path, content) in files {
            text.push_str(&format!("  {path}: {}\n", sha256_hex(content)));
        }
        text
    }

    fn pack_files(extra: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        let mut listed: Vec<(&str, &[u8])> = vec![("job.yaml", JOB.as_bytes())];
        listed.extend_from_slice(extra);
        let mut files: BTreeMap<String, Vec<u8>> = listed.iter().map(|(p, c)| (p.to_string(), c.to_vec())).collect();
        files.insert("pack.yaml".into(), manifest(&listed).into_bytes());
        files
    }

    #[test]
    fn a_good_pack_parses_and_verifies() {
        let pack = Pack::from_files(pack_files(&[("README.md", b"# hello\n")])).unwrap();
        assert_eq!(pack.manifest.name, "hello");
        assert_eq!(pack.manifest.version.to_string(), "1.0.0");
        pack.verify().unwrap();
        assert_eq!(pack.job_text().unwrap(), JOB);
    }

    #[test]
    fn a_changed_file_names_the_file_and_both_digests() {
        let mut files = pack_files(&[("check.sh", b"echo ok\n")]);
        files.insert("check.sh".into(), b"echo pwned\n".to_vec());
        let pack = Pack::from_files(files).unwrap();
        let err = pack.verify().unwrap_err().to_string();
        let expected = sha256_hex(b"echo ok\n");
        let actual = sha256_hex(b"echo pwned\n");
        assert!(
            err.contains(&format!("check.sh: expected sha256 {expected}, found {actual}")),
            "{err}"
        );
    }

    #[test]
    fn unlisted_and_missing_files_are_refused() {
        let mut files = pack_files(&[]);
        files.insert("extra.sh".into(), b"x".to_vec());
        let err = Pack::from_files(files).unwrap_err().to_string();
        assert!(err.contains("extra.sh: in the pack but not listed"), "{err}");

        let mut files = pack_files(&[("a.sh", b"a")]);
        files.remove("a.sh");
        let err = Pack::from_files(files).unwrap_err().to_string();
        assert!(err.contains("a.sh: listed in pack.yaml but missing"), "{err}");
    }

    #[test]
    fn manifest_errors_are_located() {
        let text = "name: Bad Name\nversion: one\ndescription: x\nexecutors: [shell, ftp]\nvariables:\n  - name: 1X\n  - name: A\n    secret: true\n    default: plain\nfiles:\n  ../x: abc\n  job.yaml: 0000000000000000000000000000000000000000000000000000000000000000\n";
        let err = parse_manifest("pack.yaml", text).unwrap_err().to_string();
        for expected in [
            "pack.yaml:1: name: invalid pack name \"Bad Name\"",
            "pack.yaml:2: version: \"one\" is not a semantic version",
            "pack.yaml:4: executors[1]: unknown executor \"ftp\"",
            "pack.yaml:6: variables[0].name: invalid variable name \"1X\"",
            "pack.yaml:9: variables[1].default: A is a secret",
            "files.../x: invalid file path",
            "is not a lowercase hex SHA-256",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in\n{err}");
        }
        let err = parse_manifest(
            "pack.yaml",
            "name: x\nversion: 1.0.0\ndescription: d\nfiles: {job.yaml: abc}\ncolour: red\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pack.yaml:5: colour: unknown field `colour`"), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let mut files = pack_files(&[]);
        files.insert("big.bin".into(), vec![0; MAX_FILE_BYTES + 1]);
        let err = Pack::from_files(files).unwrap_err().to_string();
        assert!(
            err.contains("big.bin: the file is 262145 bytes, more than 262144"),
            "{err}"
        );

        let mut files = pack_files(&[]);
        for i in 0..MAX_FILES {
            files.insert(format!("f{i}"), vec![]);
        }
        let err = Pack::from_files(files).unwrap_err().to_string();
        assert!(err.contains("more than 32"), "{err}");

        let mut files = pack_files(&[]);
        for i in 0..5 {
            files.insert(format!("f{i}"), vec![0; MAX_FILE_BYTES]);
        }
        let err = Pack::from_files(files).unwrap_err().to_string();
        assert!(err.contains("more than 1048576"), "{err}");

        assert!(check_path("a/b.sh").is_ok());
        for bad in ["/etc/passwd", "a/../b", "a//b", "", "a b", "./a"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_pack_name(&"a".repeat(65)).unwrap_err().contains("more than 64"));
    }

    #[test]
    fn secrets_must_be_references() {
        let v = Variable {
            name: "TOKEN".into(),
            description: String::new(),
            default: None,
            secret: true,
        };
        assert!(check_value(&v, "${GITHUB_TOKEN}").is_ok());
        assert!(check_value(&v, "ghp_abc").unwrap_err().contains("is a secret"));
        assert!(check_value(&v, "${A} ${B}").is_err());
        let plain = Variable { secret: false, ..v };
        assert!(
            check_value(&plain, "line\nbreak")
                .unwrap_err()
                .contains("control characters")
        );
    }

    #[test]
    fn directories_are_read_with_subfolders() {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in pack_files(&[("scripts/run.sh", b"echo\n")]) {
            let full = dir.path().join(&path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        let pack = Pack::read_dir(dir.path()).unwrap();
        assert!(pack.files.contains_key("scripts/run.sh"));
        pack.verify().unwrap();
    }
}
