//! Validation of `scheduler.yaml` documents and stored specs into [`JobDef`]s,
//! collecting every error with its location.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::raw::{RawCommand, RawDefaults, RawJob, RawRetention, RawRetry, RawShell};
use super::{ConfigError, ConfigErrors, interpolate_str, lines};
use crate::job::MAX_CHAIN_DEPTH;
use crate::job::{
    BUILTINS, ExecutorDef, JobDef, MAX_RETENTION, MAX_RETENTION_RUNS, MAX_TIMEOUT, Retention, RetryPolicy, ShellDef,
};
use crate::model::{Backoff, CatchUp, Overlap, Priority};
use crate::scheduler::cron::{CronSchedule, DstPolicy, parse_tz};

/// Where a definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `--config` directory (replaced when the file changes).
    Config,
    /// `workerctl apply` or another API client.
    Api,
}

impl Source {
    /// `config` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "config" => Ok(Source::Config),
            "api" => Ok(Source::Api),
            other => Err(format!("unknown definition source \"{other}\"")),
        }
    }
}

/// One job: the validated definition and the spec it was built from.
#[derive(Debug, Clone)]
pub struct JobEntry {
    /// The validated definition.
    pub def: Arc<JobDef>,
    /// The job's mapping with defaults merged in and `${VARS}` not interpolated.
    pub spec: Mapping,
    /// Where it came from.
    pub source: Source,
}

/// The job definitions, by name.
#[derive(Debug, Clone, Default)]
pub struct JobSet {
    jobs: BTreeMap<String, JobEntry>,
    /// Chain depths by job, computed on first use (see [`JobSet::chain_depth`]).
    depths: std::sync::OnceLock<BTreeMap<String, usize>>,
}

impl JobSet {
    /// Builds a set from entries (names must be unique).
    pub fn new(entries: impl IntoIterator<Item = JobEntry>) -> Self {
        JobSet {
            jobs: entries.into_iter().map(|e| (e.def.name.clone(), e)).collect(),
            depths: Default::default(),
        }
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<JobDef>> {
        self.jobs.get(name).map(|e| &e.def)
    }

    /// The entry (definition, spec, source) of `name`.
    pub fn entry(&self, name: &str) -> Option<&JobEntry> {
        self.jobs.get(name)
    }

    /// All jobs, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<JobDef>> {
        self.jobs.values().map(|e| &e.def)
    }

    /// All entries, by name.
    pub fn entries(&self) -> impl Iterator<Item = &JobEntry> {
        self.jobs.values()
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// No jobs at all.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// A copy with `upserts` added or replaced and `deletes` removed.
    pub fn with_changes(&self, upserts: impl IntoIterator<Item = JobEntry>, deletes: &[String]) -> JobSet {
        let mut jobs = self.jobs.clone();
        for name in deletes {
            jobs.remove(name);
        }
        for entry in upserts {
            jobs.insert(entry.def.name.clone(), entry);
        }
        JobSet {
            jobs,
            depths: Default::default(),
        }
    }

    /// Problems with `depends_on` across the set, as (job name, message):
    /// unknown jobs and cycles.
    pub fn dependency_errors(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for job in self.iter() {
            for upstream in &job.depends_on {
                if upstream == &job.name {
                    errors.push((job.name.clone(), "a job cannot depend on itself".to_string()));
                } else if !self.jobs.contains_key(upstream) {
                    errors.push((job.name.clone(), format!("unknown job \"{upstream}\"")));
                }
            }
        }
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for start in self.jobs.keys() {
            if let Some(cycle) = self.cycle_from(start)
                && reported.insert(cycle.iter().min().cloned().unwrap_or_default())
            {
                errors.push((cycle[0].clone(), format!("dependency cycle: {}", cycle.join(" -> "))));
            }
        }
        errors
    }

    /// Jobs that could not be triggered, as (job name, message): more than
    /// `dependencies` (a limit) upstream jobs, or a chain deeper than
    /// [`MAX_CHAIN_DEPTH`]: the limits triggering a job enforces, so that
    /// whatever is accepted can be triggered. (Chains through a cycle are
    /// [`JobSet::dependency_errors`].)
    pub fn limit_errors(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for job in self.iter() {
            let max = crate::limits::current().dependencies;
            if job.depends_on.len() > max {
                errors.push((
                    job.name.clone(),
                    crate::limits::exceeds(format!("{} jobs", job.depends_on.len()), "dependencies", max),
                ));
            }
            let depth = self.chain_depth(&job.name);
            if depth > MAX_CHAIN_DEPTH && depth != usize::MAX {
                errors.push((
                    job.name.clone(),
                    format!("its chain of upstream jobs is {depth} deep, over the limit of {MAX_CHAIN_DEPTH}"),
                ));
            }
        }
        errors
    }

    /// The names of `entries` that are new to this set or change their
    /// `depends_on`: the jobs that answer for the limits when they are
    /// applied (a job stored before the limits existed may still be disabled
    /// or edited otherwise).
    pub fn rewired<'a>(&self, entries: &'a [JobEntry]) -> BTreeSet<&'a str> {
        entries
            .iter()
            .filter(|e| {
                self.get(&e.def.name)
                    .is_none_or(|old| old.depends_on != e.def.depends_on)
            })
            .map(|e| e.def.name.as_str())
            .collect()
    }

    /// The [`JobSet::limit_errors`] of this set (the definitions after a
    /// change) that the change brings: those of the `changed` jobs, and those
    /// of other jobs that did not have them in `before`. A job stored before
    /// the limits existed stays as it is until it is changed (its fires fail
    /// alone, see the scheduler).
    pub fn new_limit_errors(&self, before: &JobSet, changed: &BTreeSet<&str>) -> Vec<(String, String)> {
        let old: BTreeSet<(String, String)> = before.limit_errors().into_iter().collect();
        self.limit_errors()
            .into_iter()
            .filter(|e| changed.contains(e.0.as_str()) || !old.contains(e))
            .collect()
    }

    /// The depth of the chain of upstream jobs below `name`: 0 for a job
    /// without `depends_on` (or an unknown one), else one more than its
    /// deepest upstream job. A job on or behind a cycle counts as
    /// `usize::MAX`. Computed once per set, without recursion.
    pub fn chain_depth(&self, name: &str) -> usize {
        self.depths
            .get_or_init(|| self.compute_depths())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Longest upstream chains of every job (Kahn's order: a job's depth is
    /// known once all its upstream jobs' are).
    fn compute_depths(&self) -> BTreeMap<String, usize> {
        let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut depth: BTreeMap<String, usize> = BTreeMap::new();
        let mut ready: Vec<&str> = Vec::new();
        for job in self.iter() {
            let known: Vec<&str> = job
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|u| self.jobs.contains_key(*u))
                .collect();
            for upstream in &known {
                dependents.entry(upstream).or_default().push(&job.name);
            }
            waiting.insert(&job.name, known.len());
            if known.is_empty() {
                ready.push(&job.name);
                depth.insert(job.name.clone(), 0);
            }
        }
        while let Some(name) = ready.pop() {
            let d = depth[name];
            for dependent in dependents.get(name).into_iter().flatten() {
                let entry = depth.entry(dependent.to_string()).or_insert(0);
                *entry = (*entry).max(d + 1);
                let left = waiting.get_mut(dependent).expect("every job is counted");
                *left -= 1;
                if *left == 0 {
                    ready.push(dependent);
                }
            }
        }
        for (name, left) in waiting {
            if left > 0 {
                depth.insert(name.to_string(), usize::MAX);
            }
        }
        depth
    }

    fn cycle_from(&self, start: &str) -> Option<Vec<String>> {
        fn visit(set: &JobSet, name: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
            if let Some(pos) = path.iter().position(|p| p == name) {
                let mut cycle = path[pos..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            if done.contains(name) {
                return None;
            }
            path.push(name.to_string());
            for upstream in set.get(name).map(|j| j.depends_on.clone()).unwrap_or_default() {
                if let Some(c) = visit(set, &upstream, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(name.to_string());
            None
        }
        visit(self, start, &mut Vec::new(), &mut BTreeSet::new())
    }
}

/// Collects errors with their locations while validating one document (also
/// used for `alerts.yaml`, see [`crate::alerting::config`]). Paths are key
/// segments, `[N]` for a sequence item (see [`lines`]).
pub(crate) struct Checker<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) lookup: super::env::Lookup<'a>,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker for the document `text` of `file`, interpolating with `lookup`.
    pub(crate) fn new(file: &'a Path, text: &'a str, lookup: super::env::Lookup<'a>) -> Self {
        Checker {
            file,
            text,
            lookup,
            errors: Vec::new(),
        }
    }

    /// Records `message` at `path`, with the line it is on.
    pub(crate) fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: lines::line_of(self.text, path),
            path: lines::display_path(path),
            message: message.into(),
        });
    }

    /// Deserializes `value` as `T`, reporting a failure at the field it names.
    pub(crate) fn deserialize<T: DeserializeOwned>(&mut self, base: &[&str], value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let inner = err.path().to_string();
                let mut path: Vec<&str> = base.to_vec();
                if inner != "." {
                    path.extend(inner.split('.').flat_map(lines::split_indexes));
                }
                let raw = err.into_inner().to_string();
                let message = friendlier(&raw);
                if let Some(field) = unknown_field(&raw)
                    && path.last() != Some(&field)
                {
                    let mut with_field = path.clone();
                    with_field.push(field);
                    self.error(&with_field, message);
                } else {
                    self.error(&path, message);
                }
                None
            }
        }
    }

    /// Parses `value` (when present) with `parse`, reporting a failure at `path`.
    pub(crate) fn parse<T, E: std::fmt::Display>(
        &mut self,
        path: &[&str],
        value: Option<&str>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        let value = value?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    /// Interpolates `${VARS}` in the strings of `value` at the key paths
    /// `fields` (relative to `value`; `*` matches any key), and nowhere else:
    /// other fields keep `${...}` as written. A variable that is unset or not
    /// allowed is an error at its field (naming the variable, never a value).
    pub(crate) fn interpolate_fields(&mut self, path: &[&str], value: &Value, fields: &[&[&str]]) -> Value {
        let mut out = value.clone();
        for field in fields {
            let mut at: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            self.interpolate_at(&mut at, &mut out, field);
        }
        out
    }

    fn interpolate_at(&mut self, path: &mut Vec<String>, value: &mut Value, field: &[&str]) {
        let Some((first, rest)) = field.split_first() else {
            if let Value::String(s) = value {
                match interpolate_str(s, self.lookup) {
                    Ok(v) => *s = v,
                    Err(e) => {
                        let p: Vec<&str> = path.iter().map(String::as_str).collect();
                        self.error(&p, e);
                    }
                }
            }
            return;
        };
        let Value::Mapping(map) = value else { return };
        for (key, child) in map.iter_mut() {
            let Some(key) = key.as_str() else { continue };
            if *first == "*" || *first == key {
                path.push(key.to_string());
                self.interpolate_at(path, child, rest);
                path.pop();
            }
        }
    }
}

/// The field name of serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Rewrites serde messages that do not help an operator.
fn friendlier(message: &str) -> String {
    if message.contains("untagged enum RawShell") {
        "expected a command string (run by sh -c) or a mapping { command, env, cwd }".into()
    } else if message.contains("untagged enum RawCommand") {
        "expected a command string (run by sh -c) or a list of program and arguments".into()
    } else if message.contains("untagged enum RawHttp") {
        "expected a URL (requested with GET) or a mapping { method, url, headers, body, expect_status, retry_on, timeout, max_redirects }".into()
    } else if message.contains("untagged enum RawStatus") {
        "expected a status code (404), a class (5xx) or a range (500-504)".into()
    } else if message.contains("untagged enum RawBuiltin") {
        format!(
            "expected a builtin name ({}) or a mapping {{ name, ...arguments }}",
            BUILTINS.join(", ")
        )
    } else {
        message.to_string()
    }
}

/// Parses and validates a `scheduler.yaml` document from the `--config` directory:
/// every job valid, and `depends_on` naming only jobs of the same document.
pub fn parse_scheduler_yaml(file: &Path, text: &str, lookup: super::env::Lookup<'_>) -> Result<JobSet, ConfigErrors> {
    let (entries, mut errors) = parse_document_partial(file, text, lookup, Source::Config);
    let set = JobSet::new(entries);
    let problems = set.dependency_errors().into_iter().chain(set.limit_errors());
    errors.extend(problems.map(|(job, message)| ConfigError {
        file: file.to_path_buf(),
        line: lines::line_of(text, &["jobs", &job, "depends_on"]),
        path: format!("jobs.{job}.depends_on"),
        message,
    }));
    if errors.is_empty() {
        return Ok(set);
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    Err(ConfigErrors(errors))
}

/// Parses and validates a `scheduler.yaml` document (`file` is used in messages).
/// Returns one entry per job, with the document's defaults merged into its spec.
/// `depends_on` references are not checked here (see [`JobSet::dependency_errors`]).
pub fn parse_document(
    file: &Path,
    text: &str,
    lookup: super::env::Lookup<'_>,
    source: Source,
) -> Result<Vec<JobEntry>, ConfigErrors> {
    let (entries, errors) = parse_document_partial(file, text, lookup, source);
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Like [`parse_document`], but also returns the jobs that are valid when others
/// are not, so that later checks (dependencies) can report their problems too.
pub fn parse_document_partial(
    file: &Path,
    text: &str,
    lookup: super::env::Lookup<'_>,
    source: Source,
) -> (Vec<JobEntry>, Vec<ConfigError>) {
    let mut checker = Checker {
        file,
        text,
        lookup,
        errors: Vec::new(),
    };
    let document: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            let line = err.location().map(|l| l.line());
            let error = ConfigError {
                file: file.to_path_buf(),
                line,
                path: String::new(),
                message: format!("invalid YAML: {err}"),
            };
            return (Vec::new(), vec![error]);
        }
    };
    let top = match document {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            checker.error(&[], "expected a mapping with `defaults` and `jobs`");
            return (Vec::new(), checker.errors);
        }
    };

    let mut defaults = Mapping::new();
    let mut raw_jobs: Vec<(String, Value)> = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            Some("defaults") => match value {
                Value::Null => {}
                Value::Mapping(m) => {
                    // Defaults have no field that interpolates `${VARS}`.
                    if let Some(raw) = checker.deserialize::<RawDefaults>(&["defaults"], Value::Mapping(m.clone())) {
                        check_defaults(&mut checker, raw);
                    }
                    defaults = m;
                }
                _ => checker.error(&["defaults"], "expected a mapping"),
            },
            Some("jobs") => match value {
                Value::Null => {}
                Value::Mapping(jobs) => {
                    for (name, job) in jobs {
                        match name.as_str() {
                            Some(name) => raw_jobs.push((name.to_string(), job)),
                            None => checker.error(&["jobs"], format!("job names must be strings, found {name:?}")),
                        }
                    }
                }
                _ => checker.error(&["jobs"], "expected a mapping of job name to definition"),
            },
            Some(other) => {
                let other = other.to_string();
                checker.error(
                    &[&other],
                    format!("unknown field `{other}`, expected `defaults` or `jobs`"),
                );
            }
            None => checker.error(&[], format!("unexpected key {key:?}")),
        }
    }
    if !checker.errors.is_empty() {
        // Defaults are merged into every job: report them alone, once.
        return (Vec::new(), checker.errors);
    }

    let mut entries = Vec::new();
    for (name, value) in raw_jobs {
        let spec = match value {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            _ => {
                checker.error(&["jobs", &name], "expected a mapping (the job's definition)");
                continue;
            }
        };
        if let Some(entry) = check_entry(&mut checker, &name, merge_defaults(&defaults, spec), source) {
            entries.push(entry);
        }
    }
    (entries, checker.errors)
}

/// The fields of a job where `${VARS}` are interpolated: the values of a
/// shell job's `env` (sent to the agent, never shown). Everywhere else
/// `${...}` is text as written (in a command, the shell on the agent expands
/// it from the job's environment).
pub const INTERPOLATED_FIELDS: &[&[&str]] = &[&["shell", "env", "*"]];

/// Rebuilds a definition from a stored spec (interpolating `${VARS}` again).
pub fn entry_from_spec(
    name: &str,
    spec_yaml: &str,
    source: Source,
    lookup: super::env::Lookup<'_>,
) -> Result<JobEntry, ConfigErrors> {
    let file = Path::new("stored definition");
    let mut checker = Checker {
        file,
        text: "",
        lookup,
        errors: Vec::new(),
    };
    let spec: Mapping = serde_yaml_ng::from_str(spec_yaml).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: None,
            path: format!("jobs.{name}"),
            message: format!("unreadable stored spec: {e}"),
        }])
    })?;
    match check_entry(&mut checker, name, spec, source) {
        Some(entry) if checker.errors.is_empty() => Ok(entry),
        _ => Err(ConfigErrors(checker.errors)),
    }
}

/// The YAML text of a spec, as stored and exported.
pub fn spec_to_yaml(spec: &Mapping) -> String {
    serde_yaml_ng::to_string(spec).unwrap_or_default()
}

/// The spec with the document's defaults filled in where the job sets nothing
/// (`retry` and `retention` are merged field by field).
fn merge_defaults(defaults: &Mapping, mut spec: Mapping) -> Mapping {
    for (key, value) in defaults {
        match (key.as_str(), spec.get_mut(key)) {
            (Some("retry" | "retention"), Some(Value::Mapping(job_retry))) => {
                if let Value::Mapping(default_retry) = value {
                    for (k, v) in default_retry {
                        if !job_retry.contains_key(k) {
                            job_retry.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (_, Some(_)) => {}
            (_, None) => {
                spec.insert(key.clone(), value.clone());
            }
        }
    }
    spec
}

fn check_entry(c: &mut Checker<'_>, name: &str, spec: Mapping, source: Source) -> Option<JobEntry> {
    let base = ["jobs", name];
    if let Err(e) = validate_job_name(name) {
        c.error(&base, e);
        return None;
    }
    let interpolated = c.interpolate_fields(&base, &Value::Mapping(spec.clone()), INTERPOLATED_FIELDS);
    let raw: RawJob = c.deserialize(&base, interpolated)?;
    let def = check_job(c, name, raw)?;
    Some(JobEntry {
        def: Arc::new(def),
        spec,
        source,
    })
}

/// Checks a job name against `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn validate_job_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    let max = crate::limits::current().job_name_bytes;
    if name.len() > max {
        Err(format!(
            "job name is {}",
            crate::limits::exceeds(format!("{} characters", name.len()), "job_name_bytes", max)
        ))
    } else if !first_ok || !rest_ok {
        Err(format!(
            "invalid job name \"{}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            crate::limits::echo(name)
        ))
    } else {
        Ok(())
    }
}

fn check_defaults(c: &mut Checker<'_>, raw: RawDefaults) {
    c.parse(&["defaults", "timezone"], raw.timezone.as_deref(), parse_tz);
    c.parse(&["defaults", "priority"], raw.priority.as_deref(), |s| {
        s.parse::<Priority>()
    });
    c.parse(&["defaults", "timeout"], raw.timeout.as_deref(), parse_timeout);
    check_retry(c, &["defaults", "retry"], raw.retry.unwrap_or_default());
    check_retention(c, &["defaults", "retention"], raw.retention.unwrap_or_default());
}

/// `retention: { max_age, max_runs, dead_max_age }`: ages above zero and at
/// most [`MAX_RETENTION`], a count from 1 to [`MAX_RETENTION_RUNS`], and a
/// dead runs' age not shorter than `max_age` (it is meant to keep failures longer).
fn check_retention(c: &mut Checker<'_>, base: &[&str], raw: RawRetention) -> Retention {
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = base.to_vec();
        p.push(field);
        p
    };
    let age = |s: &str| -> Result<Duration, String> {
        let d = worker_duration::parse(s).map_err(|e| e.to_string())?;
        if d.is_zero() {
            Err("must be longer than 0s (leave it out to keep runs)".to_string())
        } else if d > MAX_RETENTION {
            Err(format!("{s} is longer than the limit of 100 years"))
        } else {
            Ok(d)
        }
    };
    let mut retention = Retention {
        max_age: c.parse(&at("max_age"), raw.max_age.as_deref(), age),
        max_runs: None,
        dead_max_age: c.parse(&at("dead_max_age"), raw.dead_max_age.as_deref(), age),
    };
    if let Some(n) = raw.max_runs {
        if n == 0 || n > MAX_RETENTION_RUNS {
            c.error(
                &at("max_runs"),
                format!("must be between 1 and {MAX_RETENTION_RUNS}, got {n}"),
            );
        } else {
            retention.max_runs = Some(n);
        }
    }
    if let (Some(all), Some(dead)) = (retention.max_age, retention.dead_max_age)
        && dead < all
    {
        c.error(&at("dead_max_age"), "must not be shorter than max_age");
    }
    retention
}

/// `0s` means "no timeout"; longer than [`MAX_TIMEOUT`] is refused.
fn parse_timeout(s: &str) -> Result<Option<Duration>, String> {
    let d = worker_duration::parse(s).map_err(|e| e.to_string())?;
    if d > MAX_TIMEOUT {
        return Err(format!("timeout {s} is longer than the limit of 30d"));
    }
    Ok((!d.is_zero()).then_some(d))
}

fn check_retry(c: &mut Checker<'_>, base: &[&str], raw: RawRetry) -> RetryPolicy {
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = base.to_vec();
        p.push(field);
        p
    };
    let mut policy = RetryPolicy::default();
    if let Some(n) = raw.max_attempts {
        if n == 0 || n > 1000 {
            c.error(&at("max_attempts"), format!("must be between 1 and 1000, got {n}"));
        } else {
            policy.max_attempts = n;
        }
    }
    if let Some(b) = c.parse(&at("backoff"), raw.backoff.as_deref(), |s| s.parse::<Backoff>()) {
        policy.backoff = b;
    }
    if let Some(d) = c.parse(
        &at("initial_delay"),
        raw.initial_delay.as_deref(),
        worker_duration::parse,
    ) {
        policy.initial_delay = d;
    }
    if let Some(d) = c.parse(&at("max_delay"), raw.max_delay.as_deref(), worker_duration::parse) {
        policy.max_delay = d;
    }
    if let Some(j) = raw.jitter {
        if !(0.0..=1.0).contains(&j) {
            c.error(&at("jitter"), format!("must be a fraction between 0 and 1, got {j}"));
        } else {
            policy.jitter = j;
        }
    }
    if let Some(codes) = raw.non_retryable_exit_codes {
        policy.non_retryable_exit_codes = codes;
    }
    if policy.max_delay < policy.initial_delay {
        c.error(&at("max_delay"), "must not be shorter than initial_delay");
    }
    policy
}

fn check_job(c: &mut Checker<'_>, name: &str, raw: RawJob) -> Option<JobDef> {
    let errors_before = c.errors.len();
    super::fields::check_job_fields(c, name, &raw);
    let at = |field: &'static str| -> [&str; 3] { ["jobs", name, field] };

    let timezone = c
        .parse(&at("timezone"), raw.timezone.as_deref(), parse_tz)
        .unwrap_or(chrono_tz::Tz::UTC);
    let mut policy = DstPolicy::default();
    if let Some(dst) = &raw.dst {
        if let Some(gap) = c.parse(&["jobs", name, "dst", "gap"], dst.gap.as_deref(), |s| s.parse()) {
            policy.gap = gap;
        }
        if let Some(repeat) = c.parse(&["jobs", name, "dst", "repeat"], dst.repeat.as_deref(), |s| s.parse()) {
            policy.repeat = repeat;
        }
    }
    let schedule = c.parse(&at("schedule"), raw.schedule.as_deref(), |s| {
        CronSchedule::with_policy(s, timezone, policy)
    });
    let priority = c
        .parse(&at("priority"), raw.priority.as_deref(), |s| s.parse())
        .unwrap_or(Priority::Normal);
    let timeout = c
        .parse(&at("timeout"), raw.timeout.as_deref(), parse_timeout)
        .unwrap_or(Some(Duration::from_secs(30 * 60)));
    let retry = check_retry(c, &at("retry"), raw.retry.unwrap_or_default());
    let retention = check_retention(c, &at("retention"), raw.retention.unwrap_or_default());
    let overlap = c
        .parse(&at("overlap"), raw.overlap.as_deref(), |s| s.parse())
        .unwrap_or(Overlap::Allow);
    let catch_up = c
        .parse(&at("catch_up"), raw.catch_up.as_deref(), |s| s.parse())
        .unwrap_or(CatchUp::Skip);
    let jitter = c
        .parse(&at("jitter"), raw.jitter.as_deref(), worker_duration::parse)
        .unwrap_or_default();
    let catch_up_window = c.parse(
        &at("catch_up_window"),
        raw.catch_up_window.as_deref(),
        worker_duration::parse,
    );
    if raw.max_concurrency == Some(0) {
        c.error(&at("max_concurrency"), "must be at least 1 (leave it out for no limit)");
    }
    if raw.max_catch_up == Some(0) {
        c.error(&at("max_catch_up"), "must be at least 1");
    }
    if raw.schedule.is_none() {
        let scheduled_only = [
            ("overlap", raw.overlap.is_some()),
            ("catch_up", raw.catch_up.is_some()),
            ("max_catch_up", raw.max_catch_up.is_some()),
            ("catch_up_window", raw.catch_up_window.is_some()),
            ("jitter", raw.jitter.is_some()),
            ("dst", raw.dst.is_some()),
        ];
        for (field, set) in scheduled_only {
            if set {
                c.error(&["jobs", name, field], "only applies to a job with a `schedule`");
            }
        }
    }
    let depends_on = raw.depends_on.unwrap_or_default();
    let mut seen = BTreeSet::new();
    for upstream in &depends_on {
        if let Err(e) = validate_job_name(upstream) {
            c.error(&at("depends_on"), e);
        } else if !seen.insert(upstream) {
            c.error(&at("depends_on"), format!("\"{upstream}\" is listed twice"));
        }
    }

    let given: Vec<&str> = [
        ("shell", raw.shell.is_some()),
        ("http", raw.http.is_some()),
        ("builtin", raw.builtin.is_some()),
        ("handler", raw.handler.is_some()),
    ]
    .into_iter()
    .filter_map(|(kind, set)| set.then_some(kind))
    .collect();
    let executor = if given.len() > 1 {
        let found = given.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ");
        c.error(
            &["jobs", name],
            format!("exactly one executor is allowed, found {found}"),
        );
        None
    } else if let Some(shell) = raw.shell {
        check_shell(c, name, shell)
    } else if let Some(builtin) = raw.builtin {
        super::builtins::check(c, name, builtin)
    } else if let Some(http) = raw.http {
        super::executors::check_http(c, name, http)
    } else if let Some(handler) = raw.handler {
        super::executors::check_handler(c, name, handler)
    } else {
        c.error(
            &["jobs", name],
            "missing executor: add `shell`, `http`, `builtin` or `handler`",
        );
        None
    };

    if c.errors.len() > errors_before {
        return None;
    }
    Some(JobDef {
        name: name.to_string(),
        description: raw.description.unwrap_or_default(),
        executor: executor?,
        schedule,
        priority,
        timeout,
        retry,
        overlap,
        catch_up,
        max_catch_up: raw.max_catch_up.unwrap_or(100),
        jitter,
        selector: raw.selector.unwrap_or_default(),
        max_concurrency: raw.max_concurrency,
        enabled: raw.enabled.unwrap_or(true),
        tags: raw.tags.unwrap_or_default(),
        depends_on,
        catch_up_window,
        retention,
    })
}

fn check_shell(c: &mut Checker<'_>, name: &str, raw: RawShell) -> Option<ExecutorDef> {
    let (command, env, cwd) = match raw {
        RawShell::Script(s) => (RawCommand::Script(s), BTreeMap::new(), String::new()),
        RawShell::Full(full) => (full.command, full.env.unwrap_or_default(), full.cwd.unwrap_or_default()),
    };
    let mut def = ShellDef {
        env,
        cwd,
        ..ShellDef::default()
    };
    match command {
        RawCommand::Script(s) if s.trim().is_empty() => {
            c.error(&["jobs", name, "shell"], "the command is empty");
            return None;
        }
        RawCommand::Script(s) => def.script = s,
        RawCommand::Argv(argv) if argv.is_empty() || argv[0].is_empty() => {
            c.error(&["jobs", name, "shell", "command"], "the command list is empty");
            return None;
        }
        RawCommand::Argv(argv) => def.argv = argv,
    }
    Some(ExecutorDef::Shell(def))
}

#[cfg(test)]
mod tests;
