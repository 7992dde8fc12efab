//! Validation of `scheduler.yaml` into [`JobDef`]s, collecting every error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::raw::{RawBuiltin, RawCommand, RawDefaults, RawJob, RawRetry, RawShell};
use super::{ConfigError, ConfigErrors, interpolate, lines};
use crate::duration::parse_duration;
use crate::job::{BUILTINS, BuiltinDef, ExecutorDef, JobDef, MAX_JOB_NAME, RetryPolicy, ShellDef};
use crate::model::{Backoff, CatchUp, Overlap, Priority};
use crate::scheduler::cron::{CronSchedule, parse_tz};

/// The validated job definitions, by name.
#[derive(Debug, Clone, Default)]
pub struct JobSet {
    jobs: BTreeMap<String, Arc<JobDef>>,
}

impl JobSet {
    /// Builds a set from definitions (names must be unique).
    pub fn new(jobs: impl IntoIterator<Item = JobDef>) -> Self {
        JobSet {
            jobs: jobs.into_iter().map(|j| (j.name.clone(), Arc::new(j))).collect(),
        }
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<JobDef>> {
        self.jobs.get(name)
    }

    /// All jobs, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<JobDef>> {
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
}

/// Collects errors with their locations while validating one file.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: lines::line_of(self.text, path),
            path: path.join("."),
            message: message.into(),
        });
    }

    /// Deserializes `value` as `T`, reporting a failure at the field it names.
    fn deserialize<T: DeserializeOwned>(&mut self, base: &[&str], value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let inner = err.path().to_string();
                let mut path: Vec<&str> = base.to_vec();
                if inner != "." {
                    path.extend(inner.split('.').filter(|s| !s.is_empty()));
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

    fn parse<T>(&mut self, path: &[&str], value: Option<&str>, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let value = value?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(path, e);
                None
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
    } else if message.contains("untagged enum RawBuiltin") {
        format!(
            "expected a builtin name ({}) or a mapping {{ name, duration }}",
            BUILTINS.join(", ")
        )
    } else {
        message.to_string()
    }
}

/// Parses and validates the text of `scheduler.yaml` (`file` is used in messages).
pub fn parse_scheduler_yaml(
    file: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<JobSet, ConfigErrors> {
    let text = interpolate(file, text, lookup).map_err(ConfigErrors)?;
    let mut checker = Checker {
        file,
        text: &text,
        errors: Vec::new(),
    };
    let document: Value = match serde_yaml_ng::from_str(&text) {
        Ok(v) => v,
        Err(err) => {
            let line = err.location().map(|l| l.line());
            return Err(ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                line,
                path: String::new(),
                message: format!("invalid YAML: {err}"),
            }]));
        }
    };
    let top = match document {
        Value::Null => serde_yaml_ng::Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            checker.error(&[], "expected a mapping with `defaults` and `jobs`");
            return Err(ConfigErrors(checker.errors));
        }
    };

    let mut raw_defaults = RawDefaults::default();
    let mut raw_jobs: Vec<(String, Value)> = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            Some("defaults") => {
                if !value.is_null()
                    && let Some(d) = checker.deserialize::<RawDefaults>(&["defaults"], value)
                {
                    raw_defaults = d;
                }
            }
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

    let defaults = Defaults::check(&mut checker, raw_defaults);
    let mut jobs = Vec::new();
    for (name, value) in raw_jobs {
        let base = ["jobs", name.as_str()];
        if let Err(e) = validate_job_name(&name) {
            checker.error(&base, e);
            continue;
        }
        let raw: RawJob = if value.is_null() {
            RawJob::default()
        } else {
            match checker.deserialize(&base, value) {
                Some(raw) => raw,
                None => continue,
            }
        };
        if let Some(job) = check_job(&mut checker, &defaults, &name, raw) {
            jobs.push(job);
        }
    }
    if checker.errors.is_empty() {
        Ok(JobSet::new(jobs))
    } else {
        Err(ConfigErrors(checker.errors))
    }
}

/// Checks a job name against `[a-z0-9][a-z0-9._-]{0,127}`.
pub fn validate_job_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_JOB_NAME {
        Err(format!(
            "job name is {} characters, the limit is {MAX_JOB_NAME}",
            name.len()
        ))
    } else if !first_ok || !rest_ok {
        Err(format!(
            "invalid job name \"{name}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

/// Validated `defaults:`.
struct Defaults {
    timezone: Tz,
    priority: Priority,
    timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl Defaults {
    fn check(c: &mut Checker<'_>, raw: RawDefaults) -> Defaults {
        let timezone = c
            .parse(&["defaults", "timezone"], raw.timezone.as_deref(), parse_tz)
            .unwrap_or(Tz::UTC);
        let priority = c
            .parse(&["defaults", "priority"], raw.priority.as_deref(), |s| s.parse())
            .unwrap_or(Priority::Normal);
        let timeout = c
            .parse(&["defaults", "timeout"], raw.timeout.as_deref(), parse_timeout)
            .unwrap_or(Some(Duration::from_secs(30 * 60)));
        let retry = check_retry(
            c,
            &["defaults", "retry"],
            raw.retry.unwrap_or_default(),
            &RetryPolicy::default(),
        );
        Defaults {
            timezone,
            priority,
            timeout,
            retry,
        }
    }
}

/// `0s` means "no timeout".
fn parse_timeout(s: &str) -> Result<Option<Duration>, String> {
    let d = parse_duration(s)?;
    Ok((!d.is_zero()).then_some(d))
}

fn check_retry(c: &mut Checker<'_>, base: &[&str], raw: RawRetry, inherited: &RetryPolicy) -> RetryPolicy {
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = base.to_vec();
        p.push(field);
        p
    };
    let mut policy = inherited.clone();
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
    if let Some(d) = c.parse(&at("initial_delay"), raw.initial_delay.as_deref(), parse_duration) {
        policy.initial_delay = d;
    }
    if let Some(d) = c.parse(&at("max_delay"), raw.max_delay.as_deref(), parse_duration) {
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

fn check_job(c: &mut Checker<'_>, defaults: &Defaults, name: &str, raw: RawJob) -> Option<JobDef> {
    let errors_before = c.errors.len();
    let at = |field: &'static str| -> [&str; 3] { ["jobs", name, field] };

    let timezone = c
        .parse(&at("timezone"), raw.timezone.as_deref(), parse_tz)
        .unwrap_or(defaults.timezone);
    let schedule = c.parse(&at("schedule"), raw.schedule.as_deref(), |s| {
        CronSchedule::parse(s, timezone)
    });
    let priority = c
        .parse(&at("priority"), raw.priority.as_deref(), |s| s.parse())
        .unwrap_or(defaults.priority);
    let timeout = c
        .parse(&at("timeout"), raw.timeout.as_deref(), parse_timeout)
        .unwrap_or(defaults.timeout);
    let retry = match raw.retry {
        Some(r) => check_retry(c, &at("retry"), r, &defaults.retry),
        None => defaults.retry.clone(),
    };
    let overlap = c
        .parse(&at("overlap"), raw.overlap.as_deref(), |s| s.parse())
        .unwrap_or(Overlap::Allow);
    let catch_up = c
        .parse(&at("catch_up"), raw.catch_up.as_deref(), |s| s.parse())
        .unwrap_or(CatchUp::Skip);
    let jitter = c
        .parse(&at("jitter"), raw.jitter.as_deref(), parse_duration)
        .unwrap_or_default();
    if raw.max_concurrency == Some(0) {
        c.error(&at("max_concurrency"), "must be at least 1 (leave it out for no limit)");
    }
    if raw.max_catch_up == Some(0) {
        c.error(&at("max_catch_up"), "must be at least 1");
    }
    if schedule.is_none() && raw.schedule.is_none() {
        for (field, set) in [
            ("overlap", raw.overlap.is_some()),
            ("catch_up", raw.catch_up.is_some()),
            ("jitter", raw.jitter.is_some()),
        ] {
            if set {
                c.error(&["jobs", name, field], "only applies to a job with a `schedule`");
            }
        }
    }

    let executor = match (raw.shell, raw.builtin) {
        (Some(shell), None) => check_shell(c, name, shell),
        (None, Some(builtin)) => check_builtin(c, name, builtin),
        (Some(_), Some(_)) => {
            c.error(
                &["jobs", name],
                "exactly one executor is allowed, found both `shell` and `builtin`",
            );
            None
        }
        (None, None) => {
            c.error(&["jobs", name], "missing executor: add `shell` or `builtin`");
            None
        }
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

fn check_builtin(c: &mut Checker<'_>, name: &str, raw: RawBuiltin) -> Option<ExecutorDef> {
    let (builtin, duration) = match raw {
        RawBuiltin::Name(n) => (n, None),
        RawBuiltin::Full(full) => (full.name, full.duration),
    };
    if !BUILTINS.contains(&builtin.as_str()) {
        c.error(
            &["jobs", name, "builtin"],
            format!(
                "unknown builtin \"{builtin}\" (expected one of: {})",
                BUILTINS.join(", ")
            ),
        );
        return None;
    }
    let mut args = BTreeMap::new();
    if let Some(d) = duration {
        if builtin != "sleep" {
            c.error(&["jobs", name, "builtin", "duration"], "only `sleep` takes a duration");
            return None;
        }
        parse_duration(&d)
            .map_err(|e| c.error(&["jobs", name, "builtin", "duration"], e))
            .ok()?;
        args.insert("duration".to_string(), d);
    }
    Some(ExecutorDef::Builtin(BuiltinDef { name: builtin, args }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobSet, ConfigErrors> {
        parse_scheduler_yaml(Path::new("scheduler.yaml"), text, &|_| None)
    }

    #[test]
    fn defaults_apply_and_jobs_override() {
        let set = parse(
            "defaults:\n  timezone: Europe/Berlin\n  priority: low\n  retry: { max_attempts: 5, initial_delay: 1s }\njobs:\n  a:\n    shell: echo a\n  b:\n    priority: critical\n    schedule: '*/5 * * * * *'\n    retry: { initial_delay: 2s }\n    builtin: { name: sleep, duration: 2s }\n",
        )
        .unwrap();
        let a = set.get("a").unwrap();
        assert_eq!(a.priority, Priority::Low);
        assert_eq!(a.retry.max_attempts, 5);
        assert_eq!(
            a.executor,
            ExecutorDef::Shell(ShellDef {
                script: "echo a".into(),
                ..ShellDef::default()
            })
        );
        let b = set.get("b").unwrap();
        assert_eq!(b.priority, Priority::Critical);
        assert_eq!(b.retry.max_attempts, 5);
        assert_eq!(b.retry.initial_delay, Duration::from_secs(2));
        assert_eq!(b.schedule.as_ref().unwrap().tz(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn reports_every_error_with_its_line() {
        let text = "jobs:\n  a:\n    schedule: '61 * * * *'\n    shell: x\n  b:\n    timezone: Mars/Base\n    shell: x\n  c:\n    priority: urgent\n    shell: x\n  d:\n    shel: x\n";
        let errors = parse(text).unwrap_err().0;
        let located: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.path.as_str())).collect();
        assert_eq!(
            located,
            vec![
                (Some(3), "jobs.a.schedule"),
                (Some(6), "jobs.b.timezone"),
                (Some(9), "jobs.c.priority"),
                (Some(12), "jobs.d.shel")
            ]
        );
        assert!(errors[2].message.contains("unknown priority \"urgent\""));
        assert!(errors[3].message.contains("unknown field `shel`"));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let errors = parse("jobs:\n  a:\n    shell: [unclosed\n").unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert!(errors[0].line.is_some());
        assert!(errors[0].message.starts_with("invalid YAML"));
    }

    #[test]
    fn executor_is_required_and_unique() {
        let errors = parse("jobs:\n  a: {}\n  b:\n    shell: x\n    builtin: noop\n")
            .unwrap_err()
            .0;
        assert!(errors[0].message.contains("missing executor"));
        assert!(errors[1].message.contains("exactly one executor"));
    }

    #[test]
    fn bad_names_and_types() {
        let errors = parse("jobs:\n  Bad_Name:\n    shell: x\n  ok:\n    shell: x\n    max_concurrency: many\n")
            .unwrap_err()
            .0;
        assert!(errors[0].message.contains("invalid job name"));
        assert_eq!(errors[1].path, "jobs.ok.max_concurrency");
        assert_eq!(errors[1].line, Some(6));
    }
}
