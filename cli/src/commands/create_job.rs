//! `create-job NAME --kind shell|http|rust`: scaffolds a job that runs as
//! generated — its definition added to `scheduler.yaml`, a script or a
//! handler crate, and a test. It talks to no controller.
//!
//! # Layout
//!
//! * this file — the arguments, the [`Plan`] (every check made and every
//!   text rendered before anything is written), and [`execute`], which
//!   writes it all or nothing;
//! * `create_job/insert.rs` — adding the definition to the text of
//!   `scheduler.yaml` without changing any other byte;
//! * `create_job/templates/` — what is generated, per kind: the definition
//!   (`*.yaml`, written with two spaces per level and re-indented to the
//!   file's own), the shell script and its test, the http job's test, the
//!   Rust crate. `@@key@@` marks what is filled in.
//!
//! # Why this shape
//!
//! A scaffold that leaves half its files behind, or rewrites a hand-kept
//! `scheduler.yaml`, costs more than it saves. So nothing is overwritten,
//! ever: the command refuses when the job exists in the file or any file it
//! would write exists. Files are written under temporary names, then put in
//! place with a hard link (which fails if the name was taken meanwhile) —
//! the job's files first, `scheduler.yaml` last (renamed over the old one,
//! after checking it did not change since it was read) — and a failure
//! removes whatever was already placed, along with the directories made for
//! it. The new `scheduler.yaml` is parsed and compared with the old one plus
//! the job before it is written. The controller's own validation (cron,
//! durations, executors) is not linked into `workerctl` (it would bring the
//! controller's dependencies); the definitions are those its tests load.

mod insert;

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Format, emit};

pub use insert::{Definition, insert_job, new_document};
#[cfg(test)]
use insert::{Edit, apply_edits};

/// Longest job name the controller accepts by default (its limit
/// `job_name_bytes`).
pub const MAX_JOB_NAME: usize = 128;

/// Where `--config` points by default.
pub const DEFAULT_CONFIG: &str = "config/scheduler.yaml";

/// The URL an `http` job gets without `--url`: a host that never resolves
/// (`.invalid`), so a job nobody edited fails loudly.
pub const PLACEHOLDER_URL: &str = "https://replace-me.invalid/health";

/// What kind of job to scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A shell script `DIR/NAME.sh` run by path, and its test `DIR/NAME.test.sh`.
    Shell,
    /// An `http:` request, and a test `DIR/NAME.test.sh` that triggers it.
    Http,
    /// A Rust crate `DIR/NAME/` on the agent SDK (`handler: NAME`), with a unit test.
    Rust,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Http => "http",
            Kind::Rust => "rust",
        }
    }
}

/// Arguments of `workerctl create-job`.
#[derive(Debug, Clone, Args)]
pub struct CreateJobArgs {
    /// The job's name: a-z, 0-9, '.', '_', '-', starting with a letter or digit, at most 128.
    pub name: String,

    /// What runs it: a shell script, an HTTP request, or a Rust handler on the agent SDK.
    #[arg(long, value_enum)]
    pub kind: Kind,

    /// The scheduler.yaml to add the definition to (created when missing; its directory must exist).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Where the job's files go [default: `jobs/` beside the config's directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// With --kind http: the URL to request [default: a placeholder to edit].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// A cron schedule (e.g. "*/15 * * * *"); without it the job runs only when triggered.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,

    /// With --kind rust: the `agent/` directory of a Worker checkout, for the
    /// crate's `worker-agent` path dependency [default: the checkout
    /// workerctl was built from, when it still exists].
    #[arg(long, value_name = "PATH")]
    pub worker_agent: Option<PathBuf>,
}

/// A file the command writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Where it goes (absolute).
    pub path: PathBuf,
    /// What it holds.
    pub contents: String,
    /// Mode 0755 instead of 0644.
    pub executable: bool,
}

/// What happens to `scheduler.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// The file did not exist: it is created with this text.
    Create(String),
    /// The file is replaced: `original` as read, `updated` with the job.
    Update {
        /// The text as read (checked again just before the rename).
        original: String,
        /// The text with the job.
        updated: String,
    },
}

/// Everything the command will do, decided before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The scheduler.yaml.
    pub config: PathBuf,
    /// Its change.
    pub change: ConfigChange,
    /// The job's files, written before the config.
    pub files: Vec<NewFile>,
    /// Steps to print once done.
    pub next_steps: Vec<String>,
    /// Things the user must edit before the job can succeed.
    pub warnings: Vec<String>,
}

/// What `create-job` prints (`-o json`: this object).
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// The job's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The scheduler.yaml the definition went to.
    pub config: String,
    /// Whether that file was created.
    pub config_created: bool,
    /// The files written, in order.
    pub files: Vec<String>,
    /// Edits needed before the job can succeed (a placeholder URL or dependency).
    pub warnings: Vec<String>,
    /// What to do next.
    pub next_steps: Vec<String>,
}

/// Runs `create-job`: plans, writes, prints what was created.
pub fn run(args: CreateJobArgs, format: Format) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    execute(&plan, &mut |_| Ok(()))?;
    let created = plan.created();
    emit(format, &created, || created_text(&created))
}

/// Checks a job name as the controller does: `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn validate_job_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_JOB_NAME {
        Err(format!(
            "job name is {} characters, more than the {MAX_JOB_NAME} the controller accepts (its limit job_name_bytes)",
            name.len()
        ))
    } else if !first_ok || !rest_ok {
        Err(format!(
            "invalid job name {:?}: use a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            name.chars().take(MAX_JOB_NAME).collect::<String>()
        ))
    } else {
        Ok(())
    }
}

/// `text` as a YAML (and TOML) double-quoted string: JSON's escaping is
/// valid in both.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

/// A job name as a YAML scalar: bare when YAML reads it back as that string,
/// quoted when it would be a number or a boolean (`123`, `1e3`, `true`).
fn yaml_name(name: &str) -> String {
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(name) {
        Ok(serde_yaml_ng::Value::String(s)) if s == name => name.to_string(),
        _ => quoted(name),
    }
}

/// The crate (and binary) name of a rust job: the job's name with `.` as
/// `-`, then `-agent`; `job-` in front when it starts with a digit.
pub fn crate_name(job: &str) -> String {
    let base = job.replace('.', "-");
    if base.starts_with(|c: char| c.is_ascii_digit()) {
        format!("job-{base}-agent")
    } else {
        format!("{base}-agent")
    }
}

/// A path as text for a generated file: valid UTF-8 without control
/// characters (it goes into YAML, TOML and comments).
fn path_text(path: &Path, flag: &str) -> Result<String, CliError> {
    let text = path
        .to_str()
        .ok_or_else(|| CliError::usage(format!("{flag}: `{}` is not valid UTF-8", path.display())))?;
    if text.chars().any(char::is_control) {
        return Err(CliError::usage(format!("{flag}: {text:?} holds a control character")));
    }
    Ok(text.to_string())
}

/// `path` made absolute against the current directory, `.` and `..`
/// resolved through the parts that exist.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    // Canonicalize the longest existing ancestor, then add the rest.
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if existing.exists() {
            let mut out = existing.canonicalize()?;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(path),
        }
    }
}

/// The `worker-agent` dependency line of a rust job's Cargo.toml, and a
/// warning when it is a placeholder.
fn worker_agent_dependency(flag: Option<&Path>) -> Result<(String, Option<String>), CliError> {
    let is_agent_dir =
        |dir: &Path| fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("name = \"worker-agent\""));
    if let Some(dir) = flag {
        let dir = absolute(dir).map_err(|e| CliError::usage(format!("--worker-agent: {e}")))?;
        if !is_agent_dir(&dir) {
            return Err(CliError::usage(format!(
                "--worker-agent: `{}` is not the agent/ directory of a Worker checkout (no Cargo.toml of package worker-agent)",
                dir.display()
            )));
        }
        let text = path_text(&dir, "--worker-agent")?;
        return Ok((
            format!(
                "# The Worker agent SDK (given with --worker-agent).\nworker-agent = {{ path = {} }}",
                quoted(&text)
            ),
            None,
        ));
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent");
    if let Ok(dir) = built_from.canonicalize()
        && is_agent_dir(&dir)
        && let Ok(text) = path_text(&dir, "worker-agent")
    {
        return Ok((
            format!(
                "# The Worker agent SDK, from the checkout workerctl was built from\n# (`workerctl create-job --worker-agent PATH` names another).\nworker-agent = {{ path = {} }}",
                quoted(&text)
            ),
            None,
        ));
    }
    Ok((
        "# EDIT: the Worker agent SDK. workerctl found no Worker checkout to point at (it\n\
         # looks for the one it was built from; `--worker-agent PATH` names one). Replace\n\
         # this with `{ path = \"/path/to/worker/agent\" }` or your Worker git repository.\n\
         worker-agent = { git = \"https://git.example.invalid/worker.git\" }"
            .to_string(),
        Some("the crate's worker-agent dependency is a placeholder: set it in Cargo.toml".to_string()),
    ))
}

/// Fills `@@key@@` in `template` in one pass (a value holding `@@` is
/// inserted as it is). A key without a value is a bug of the templates.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("@@") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("@@") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = &after[..end];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, value)) => out.push_str(value),
            None => panic!("template placeholder @@{key}@@ has no value"),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Decides everything: checks the arguments, reads `scheduler.yaml`,
/// renders every file and the new config, and refuses when anything exists.
pub fn plan(args: &CreateJobArgs) -> Result<Plan, CliError> {
    let name = args.name.as_str();
    validate_job_name(name).map_err(CliError::usage)?;
    if args.url.is_some() && args.kind != Kind::Http {
        return Err(CliError::usage("--url is only for --kind http"));
    }
    if args.worker_agent.is_some() && args.kind != Kind::Rust {
        return Err(CliError::usage("--worker-agent is only for --kind rust"));
    }
    if let Some(url) = &args.url {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(CliError::usage(format!(
                "--url: {url:?} is not an http:// or https:// URL with a host"
            )));
        }
    }
    if let Some(cron) = &args.schedule
        && (cron.trim().is_empty() || cron.chars().any(char::is_control))
    {
        return Err(CliError::usage(format!(
            "--schedule: {cron:?} is not a cron expression"
        )));
    }

    // The config file and its directory.
    let config = absolute(&args.config).map_err(|e| CliError::usage(format!("--config: {e}")))?;
    let config_text = path_text(&config, "--config")?;
    let config_dir = config
        .parent()
        .ok_or_else(|| CliError::usage(format!("--config: `{config_text}` names no file")))?
        .to_path_buf();
    if !config_dir.is_dir() {
        return Err(CliError::usage(format!(
            "--config: the directory `{}` does not exist",
            config_dir.display()
        )));
    }
    let original = match fs::read_to_string(&config) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::usage(format!("--config: cannot read `{config_text}`: {e}"))),
    };

    // The job's directory.
    let dir = match &args.dir {
        Some(dir) => absolute(dir).map_err(|e| CliError::usage(format!("--dir: {e}")))?,
        None => config_dir.parent().unwrap_or(&config_dir).join("jobs"),
    };
    let dir_text = path_text(&dir, "--dir")?;
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::usage(format!(
            "--dir: `{dir_text}` exists and is not a directory"
        )));
    }

    let schedule_line = match &args.schedule {
        Some(cron) => format!("schedule: {}   # cron, in the zone of defaults.timezone", quoted(cron)),
        None => "# schedule: \"*/15 * * * *\"   # cron; without one the job runs when triggered".to_string(),
    };
    let yaml_name = yaml_name(name);
    let mut warnings = Vec::new();
    let mut next_steps = Vec::new();
    let load = format!(
        "load the definition: `workerctl apply -f {config_text}`, or restart the controller (it applies a changed scheduler.yaml at start)"
    );
    let (definition, files) = match args.kind {
        Kind::Shell => {
            let script = dir.join(format!("{name}.sh"));
            let test = dir.join(format!("{name}.test.sh"));
            let script_text = path_text(&script, "--dir")?;
            let test_text = path_text(&test, "--dir")?;
            let definition = fill(
                include_str!("create_job/templates/shell.yaml"),
                &[
                    ("key", &yaml_name),
                    ("name", name),
                    ("script", &script_text),
                    ("test", &test_text),
                    ("schedule", &schedule_line),
                    ("script_quoted", &quoted(&script_text)),
                ],
            );
            let vars = [("name", name)];
            next_steps.push(format!("edit the script: {script_text}"));
            next_steps.push(format!("run its test: {test_text}"));
            next_steps.push(load.clone());
            next_steps.push(format!("run it: `workerctl jobs run {name} --wait`"));
            (
                definition,
                vec![
                    NewFile {
                        path: script,
                        contents: fill(include_str!("create_job/templates/shell.sh"), &vars),
                        executable: true,
                    },
                    NewFile {
                        path: test,
                        contents: fill(include_str!("create_job/templates/shell.test.sh"), &vars),
                        executable: true,
                    },
                ],
            )
        }
        Kind::Http => {
            let test = dir.join(format!("{name}.test.sh"));
            let test_text = path_text(&test, "--dir")?;
            let (url, note) = match &args.url {
                Some(url) => (url.as_str(), ""),
                None => {
                    warnings.push(format!(
                        "the job's url is a placeholder ({PLACEHOLDER_URL}): set it in {config_text}"
                    ));
                    (PLACEHOLDER_URL, "   # EDIT: the URL to request (a placeholder)")
                }
            };
            let definition = fill(
                include_str!("create_job/templates/http.yaml"),
                &[
                    ("key", &yaml_name),
                    ("name", name),
                    ("test", &test_text),
                    ("schedule", &schedule_line),
                    ("url_quoted", &quoted(url)),
                    ("url_note", note),
                ],
            );
            if args.url.is_none() {
                next_steps.push(format!("set the job's url in {config_text}"));
            }
            next_steps.push(load.clone());
            next_steps.push(format!(
                "test it (triggers a run through workerctl; WORKER_CONTROLLER selects the controller): {test_text}"
            ));
            (
                definition,
                vec![NewFile {
                    path: test,
                    contents: fill(include_str!("create_job/templates/http.test.sh"), &[("name", name)]),
                    executable: true,
                }],
            )
        }
        Kind::Rust => {
            let krate = dir.join(name);
            let crate_text = path_text(&krate, "--dir")?;
            if krate.symlink_metadata().is_ok() {
                return Err(CliError::usage(format!(
                    "`{crate_text}` already exists; nothing was changed (remove it or choose another name)"
                )));
            }
            let (dependency, warning) = worker_agent_dependency(args.worker_agent.as_deref())?;
            warnings.extend(warning);
            let package = crate_name(name);
            let definition = fill(
                include_str!("create_job/templates/rust.yaml"),
                &[
                    ("key", &yaml_name),
                    ("name", name),
                    ("crate", &crate_text),
                    ("schedule", &schedule_line),
                ],
            );
            let vars = [
                ("name", name),
                ("crate", package.as_str()),
                ("worker_agent", &dependency),
            ];
            next_steps.push(format!("test the handler: `cd {crate_text} && cargo test`"));
            next_steps.push(load.clone());
            next_steps.push(format!(
                "start its agent: `cd {crate_text} && cargo run -- --controller http://127.0.0.1:7070`"
            ));
            next_steps.push(format!(
                "run it: `workerctl jobs run {name} --payload '{{\"items\": [\"a\", \"b\"]}}' --wait`"
            ));
            (
                definition,
                vec![
                    NewFile {
                        path: krate.join("Cargo.toml"),
                        contents: fill(include_str!("create_job/templates/rust.Cargo.toml"), &vars),
                        executable: false,
                    },
                    NewFile {
                        path: krate.join("src").join("main.rs"),
                        contents: fill(include_str!("create_job/templates/rust.main.rs"), &vars),
                        executable: false,
                    },
                    NewFile {
                        path: krate.join(".gitignore"),
                        contents: "/target\n".to_string(),
                        executable: false,
                    },
                ],
            )
        }
    };

    for file in &files {
        if file.path.symlink_metadata().is_ok() {
            return Err(CliError::usage(format!(
                "`{}` already exists; nothing was changed (remove it or choose another name)",
                file.path.display()
            )));
        }
    }
    let def = Definition {
        name,
        text: &definition,
    };
    let change = match original {
        None => ConfigChange::Create(new_document(&def).map_err(|e| CliError::usage(format!("`{config_text}` {e}")))?),
        Some(original) => {
            let inserted = insert_job(&original, &def).map_err(|e| CliError::usage(format!("`{config_text}` {e}")))?;
            ConfigChange::Update {
                original,
                updated: inserted.text,
            }
        }
    };
    Ok(Plan {
        name: name.to_string(),
        kind: args.kind,
        config,
        change,
        files,
        next_steps,
        warnings,
    })
}

impl Plan {
    /// What to print.
    pub fn created(&self) -> Created {
        Created {
            name: self.name.clone(),
            kind: self.kind,
            config: self.config.display().to_string(),
            config_created: matches!(self.change, ConfigChange::Create(_)),
            files: self.files.iter().map(|f| f.path.display().to_string()).collect(),
            warnings: self.warnings.clone(),
            next_steps: self.next_steps.clone(),
        }
    }
}

/// The table-mode text of [`Created`].
pub fn created_text(created: &Created) -> String {
    let mut out = format!("created job `{}` ({})\n", created.name, created.kind.as_str());
    let verb = if created.config_created { "created" } else { "added to" };
    out.push_str(&format!("  {verb:<9} {}\n", created.config));
    for file in &created.files {
        out.push_str(&format!("  {:<9} {file}\n", "wrote"));
    }
    for warning in &created.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out.push_str("next steps:\n");
    for (i, step) in created.next_steps.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    out
}

/// What was done so far, undone on failure.
#[derive(Default)]
struct Undo {
    dirs: Vec<PathBuf>,
    temps: Vec<PathBuf>,
    placed: Vec<PathBuf>,
}

impl Undo {
    fn rollback(&mut self) {
        for path in self.temps.drain(..).chain(self.placed.drain(..)) {
            let _ = fs::remove_file(path);
        }
        for dir in self.dirs.drain(..).rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Creates `dir` and its missing parents, recording each one made.
fn create_dirs(dir: &Path, undo: &mut Undo) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.exists() {
            break;
        }
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        fs::create_dir(&path)?;
        undo.dirs.push(path);
    }
    Ok(())
}

/// `DIR/.NAME.create-job-PID.tmp` next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.create-job-{}.tmp", std::process::id()))
}

/// Writes `contents` to a new temporary file beside `path` with `mode`.
fn write_temp(path: &Path, contents: &str, mode: u32, undo: &mut Undo) -> io::Result<PathBuf> {
    let temp = temp_path(path);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
    undo.temps.push(temp.clone());
    file.write_all(contents.as_bytes())?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    Ok(temp)
}

/// Puts `temp` in place as `path`, failing if `path` exists.
fn place_new(temp: &Path, path: &Path, undo: &mut Undo) -> io::Result<()> {
    match fs::hard_link(temp, path) {
        Ok(()) => {
            undo.placed.push(path.to_path_buf());
            let _ = fs::remove_file(temp);
            undo.temps.retain(|t| t != temp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // A file system without hard links: check, then rename.
            if path.symlink_metadata().is_ok() {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            fs::rename(temp, path)?;
            undo.temps.retain(|t| t != temp);
            undo.placed.push(path.to_path_buf());
            Ok(())
        }
    }
}

/// Writes the plan: the job's files, then `scheduler.yaml`; on any failure
/// removes what it wrote and the directories it made. `before_place` runs
/// before each file is put in place (tests make it fail).
pub fn execute(plan: &Plan, before_place: &mut dyn FnMut(&Path) -> io::Result<()>) -> Result<(), CliError> {
    let mut undo = Undo::default();
    let result = write_all(plan, before_place, &mut undo);
    if result.is_err() {
        undo.rollback();
    }
    result
}

fn write_all(
    plan: &Plan,
    before_place: &mut dyn FnMut(&Path) -> io::Result<()>,
    undo: &mut Undo,
) -> Result<(), CliError> {
    let failed = |path: &Path, what: &str, e: io::Error| {
        CliError::failed(format!("{what} `{}`: {e}; nothing was changed", path.display()))
    };
    let mut temps = Vec::new();
    for file in &plan.files {
        let parent = file.path.parent().unwrap_or(Path::new("/"));
        create_dirs(parent, undo).map_err(|e| failed(parent, "cannot create the directory", e))?;
        let mode = if file.executable { 0o755 } else { 0o644 };
        let temp =
            write_temp(&file.path, &file.contents, mode, undo).map_err(|e| failed(&file.path, "cannot write", e))?;
        temps.push(temp);
    }
    let config = &plan.config;
    let (text, mode) = match &plan.change {
        ConfigChange::Create(text) => (text, 0o644),
        ConfigChange::Update { updated, .. } => {
            let mode = fs::metadata(config)
                .map(|m| m.permissions().mode() & 0o7777)
                .map_err(|e| failed(config, "cannot read", e))?;
            (updated, mode)
        }
    };
    let config_temp = write_temp(config, text, mode, undo).map_err(|e| failed(config, "cannot write beside", e))?;

    for (file, temp) in plan.files.iter().zip(&temps) {
        before_place(&file.path).map_err(|e| failed(&file.path, "cannot write", e))?;
        place_new(temp, &file.path, undo).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                CliError::usage(format!(
                    "`{}` was created meanwhile; nothing was changed",
                    file.path.display()
                ))
            } else {
                failed(&file.path, "cannot write", e)
            }
        })?;
    }
    before_place(config).map_err(|e| failed(config, "cannot write", e))?;
    match &plan.change {
        ConfigChange::Create(_) => place_new(&config_temp, config, undo).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                CliError::usage(format!(
                    "`{}` was created meanwhile; nothing was changed",
                    config.display()
                ))
            } else {
                failed(config, "cannot write", e)
            }
        })?,
        ConfigChange::Update { original, .. } => {
            let now = fs::read_to_string(config).map_err(|e| failed(config, "cannot read", e))?;
            if &now != original {
                return Err(CliError::usage(format!(
                    "`{}` changed while the job was being created; nothing was changed (run the command again)",
                    config.display()
                )));
            }
            fs::rename(&config_temp, config).map_err(|e| failed(config, "cannot replace", e))?;
            undo.temps.retain(|t| t != &config_temp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
