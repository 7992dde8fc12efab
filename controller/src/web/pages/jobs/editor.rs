//! `GET|POST /jobs/new` and `GET|POST /jobs/{name}/edit`: the job editor.
//!
//! The form offers every field of a job definition (docs/configuration.md):
//! the common ones as inputs, and a textarea "other fields (YAML mapping)"
//! for the rest (an argv command, anything the inputs do not hold). On save
//! the inputs and that mapping are merged into ONE job mapping (a key set
//! in both is refused, not silently overridden), written as a
//! `scheduler.yaml` document with just that job and sent to ApplyJobs
//! (source name `web form`), which validates it with the same rules as the
//! config file and `workerctl apply`; this module checks nothing of its own
//! beyond the shape of its inputs (`key=value` lines). ApplyJobs is
//! additive (a document with one job creates or replaces only that job), so
//! creating a job under a name that exists is refused here first ("job X
//! exists"), and the name cannot change while editing.
//!
//! The API's errors name a path (`web form:3: jobs.NAME.schedule: ...`);
//! each is shown next to the input of that path (a cron error next to
//! `#cron`, with `aria-invalid`), errors of keys from the YAML textarea next
//! to it, others at the top; the form keeps what was typed (status 400).
//!
//! Editing starts from the job's stored spec (what `export` writes for it;
//! see the area's module docs for why it is read from the engine).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_yaml_ng::{Mapping, Number, Value};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::preview::{ScheduleInput, preview_markup};
use super::{CONFIG_NOTE, job_url, stored_spec};
use crate::http::HttpState;
use crate::web::form::FormData;
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebError, WebResult};

/// The `source_name` of documents the editor applies.
pub const SOURCE_NAME: &str = "web form";

/// The editor's inputs, as text, with the errors to show beside them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobForm {
    /// Job name.
    pub name: String,
    /// Input values by name (see [`TEXT_FIELDS`]).
    pub values: std::collections::BTreeMap<String, String>,
    /// `enabled` checkbox.
    pub enabled: bool,
    /// "other fields (YAML mapping)".
    pub extra_yaml: String,
    /// (field, message).
    pub errors: Vec<(String, String)>,
}

/// Inputs holding one scalar of the job mapping: (input name, key path).
const SCALARS: &[(&str, &[&str])] = &[
    ("description", &["description"]),
    ("cron", &["schedule"]),
    ("timezone", &["timezone"]),
    ("dst_gap", &["dst", "gap"]),
    ("dst_repeat", &["dst", "repeat"]),
    ("priority", &["priority"]),
    ("timeout", &["timeout"]),
    ("max_attempts", &["retry", "max_attempts"]),
    ("backoff", &["retry", "backoff"]),
    ("initial_delay", &["retry", "initial_delay"]),
    ("max_delay", &["retry", "max_delay"]),
    ("retry_jitter", &["retry", "jitter"]),
    ("overlap", &["overlap"]),
    ("max_concurrency", &["max_concurrency"]),
    ("catch_up", &["catch_up"]),
    ("max_catch_up", &["max_catch_up"]),
    ("catch_up_window", &["catch_up_window"]),
    ("jitter", &["jitter"]),
    ("retention_max_age", &["retention", "max_age"]),
    ("retention_max_runs", &["retention", "max_runs"]),
    ("retention_dead_max_age", &["retention", "dead_max_age"]),
];

/// Inputs holding a list, written comma-separated: (input name, key path).
const LISTS: &[(&str, &[&str])] = &[
    ("tags", &["tags"]),
    ("depends_on", &["depends_on"]),
    ("non_retryable", &["retry", "non_retryable_exit_codes"]),
];

/// Inputs whose text is a number in the mapping (sent as text when it is
/// not one, so that the API names the problem).
const NUMBERS: &[&str] = &[
    "max_attempts",
    "retry_jitter",
    "max_concurrency",
    "max_catch_up",
    "retention_max_runs",
    "non_retryable",
];

/// Every text input the form reads, besides `name` and `extra-yaml`.
pub const TEXT_FIELDS: &[&str] = &[
    "description",
    "cron",
    "timezone",
    "dst_gap",
    "dst_repeat",
    "priority",
    "timeout",
    "max_attempts",
    "backoff",
    "initial_delay",
    "max_delay",
    "retry_jitter",
    "overlap",
    "max_concurrency",
    "catch_up",
    "max_catch_up",
    "catch_up_window",
    "jitter",
    "retention_max_age",
    "retention_max_runs",
    "retention_dead_max_age",
    "tags",
    "depends_on",
    "non_retryable",
    "executor",
    "command",
    "cwd",
    "env",
    "builtin",
    "builtin_duration",
    "selector",
];

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Removes `path` from `map` when it holds a scalar, returning its text;
/// empties mappings it leaves behind.
fn take_scalar(map: &mut Mapping, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        let text = scalar_text(map.get(*first)?)?;
        map.remove(*first);
        return Some(text);
    }
    let Some(Value::Mapping(inner)) = map.get_mut(*first) else {
        return None;
    };
    let text = take_scalar(inner, rest);
    if inner.is_empty() {
        map.remove(*first);
    }
    text
}

fn take_list(map: &mut Mapping, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    if !rest.is_empty() {
        let Some(Value::Mapping(inner)) = map.get_mut(*first) else {
            return None;
        };
        let text = take_list(inner, rest);
        if inner.is_empty() {
            map.remove(*first);
        }
        return text;
    }
    let Value::Sequence(items) = map.get(*first)? else {
        return None;
    };
    let texts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
    let texts = texts.filter(|t| {
        t.iter()
            .all(|s| !s.contains(',') && !s.trim().is_empty() && s.trim() == s)
    })?;
    map.remove(*first);
    Some(texts.join(", "))
}

/// `k=v` lines of a mapping of strings (none of them containing a newline).
fn take_pairs(map: &mut Mapping, key: &str) -> Option<String> {
    let Value::Mapping(pairs) = map.get(key)? else {
        return None;
    };
    let mut lines = Vec::new();
    for (k, v) in pairs {
        let (k, v) = (k.as_str()?, scalar_text(v)?);
        if k.contains('=') || k.contains('\n') || v.contains('\n') || k.trim() != k {
            return None;
        }
        lines.push(format!("{k}={v}"));
    }
    map.remove(key);
    Some(lines.join("\n"))
}

impl JobForm {
    /// A new job's form: enabled, shell, nothing else set.
    pub fn blank() -> JobForm {
        let mut form = JobForm {
            enabled: true,
            ..Default::default()
        };
        form.values.insert("executor".into(), "shell".into());
        form
    }

    /// The form of an existing job from its stored spec: every key an input
    /// holds goes there, the rest to the YAML textarea.
    pub fn from_spec(name: &str, spec: &Mapping) -> JobForm {
        let mut rest = spec.clone();
        let mut form = JobForm {
            name: name.to_string(),
            ..Default::default()
        };
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                form.values.insert(k.to_string(), v);
            }
        };
        for (field, path) in SCALARS {
            set(field, take_scalar(&mut rest, path));
        }
        for (field, path) in LISTS {
            set(field, take_list(&mut rest, path));
        }
        set("selector", take_pairs(&mut rest, "selector"));
        // The executor: a script, or { command: script, env, cwd }; a builtin.
        match rest.get("shell").cloned() {
            Some(Value::String(script)) => {
                rest.remove("shell");
                set("executor", Some("shell".into()));
                set("command", Some(script));
            }
            Some(Value::Mapping(mut shell)) if matches!(shell.get("command"), Some(Value::String(_))) => {
                let command = take_scalar(&mut shell, &["command"]);
                let cwd = take_scalar(&mut shell, &["cwd"]);
                let env = take_pairs(&mut shell, "env");
                if shell.is_empty() {
                    rest.remove("shell");
                    set("executor", Some("shell".into()));
                    set("command", command);
                    set("cwd", cwd);
                    set("env", env);
                } else {
                    set("executor", Some("yaml".into()));
                }
            }
            Some(_) => set("executor", Some("yaml".into())),
            None => {}
        }
        match rest.get("builtin").cloned() {
            Some(Value::String(builtin)) => {
                rest.remove("builtin");
                set("executor", Some("builtin".into()));
                set("builtin", Some(builtin));
            }
            Some(Value::Mapping(mut b)) => {
                let n = take_scalar(&mut b, &["name"]);
                let d = take_scalar(&mut b, &["duration"]);
                if b.is_empty() && n.is_some() {
                    rest.remove("builtin");
                    set("executor", Some("builtin".into()));
                    set("builtin", n);
                    set("builtin_duration", d);
                } else {
                    set("executor", Some("yaml".into()));
                }
            }
            Some(_) => set("executor", Some("yaml".into())),
            None => {}
        }
        // `http:` and `handler:` are edited as YAML under "other fields".
        if rest.contains_key("http") || rest.contains_key("handler") {
            set("executor", Some("yaml".into()));
        }
        form.enabled = match rest.remove("enabled") {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                rest.insert("enabled".into(), other);
                true
            }
        };
        if !rest.is_empty() {
            form.extra_yaml = serde_yaml_ng::to_string(&rest).unwrap_or_default();
        }
        form
    }

    /// The form as posted.
    pub fn from_post(name: String, post: &FormData) -> JobForm {
        let mut values = std::collections::BTreeMap::new();
        for field in TEXT_FIELDS {
            let text = post.get(field).unwrap_or("");
            let text = if *field == "command" || *field == "env" || *field == "selector" {
                text.trim_end().to_string()
            } else {
                text.trim().to_string()
            };
            if !text.is_empty() {
                values.insert(field.to_string(), text);
            }
        }
        JobForm {
            name,
            values,
            enabled: post.checked("enabled"),
            extra_yaml: post.get("extra_yaml").unwrap_or("").to_string(),
            errors: Vec::new(),
        }
    }

    fn value(&self, field: &str) -> &str {
        self.values.get(field).map(String::as_str).unwrap_or("")
    }

    /// The one job mapping the form describes, and the keys that came from
    /// the YAML textarea; or the errors of its own inputs' shape.
    pub fn mapping(&self) -> Result<(Mapping, BTreeSet<String>), FieldErrors> {
        let mut errors = Vec::new();
        let mut job = Mapping::new();
        let typed = |field: &str, text: &str| -> Value {
            if NUMBERS.contains(&field) {
                if let Ok(n) = text.parse::<i64>() {
                    return Value::Number(Number::from(n));
                }
                if let Ok(f) = text.parse::<f64>() {
                    return Value::Number(Number::from(f));
                }
            }
            Value::String(text.to_string())
        };
        let mut put = |path: &[&str], value: Value| {
            let mut at = &mut job;
            for key in &path[..path.len() - 1] {
                let entry = at
                    .entry(Value::String(key.to_string()))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                if !entry.is_mapping() {
                    *entry = Value::Mapping(Mapping::new());
                }
                at = entry.as_mapping_mut().expect("a mapping");
            }
            at.insert(Value::String(path[path.len() - 1].to_string()), value);
        };
        for (field, path) in SCALARS {
            let text = self.value(field);
            if !text.is_empty() {
                put(path, typed(field, text));
            }
        }
        for (field, path) in LISTS {
            let items: Vec<Value> = self
                .value(field)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| typed(field, s))
                .collect();
            if !items.is_empty() {
                put(path, Value::Sequence(items));
            }
        }
        let pairs = |field: &str, errors: &mut Vec<(String, String)>| -> Option<Mapping> {
            let text = self.value(field);
            let mut map = Mapping::new();
            for line in text.lines().flat_map(|l| {
                if field == "selector" {
                    l.split(',').collect()
                } else {
                    vec![l]
                }
            }) {
                if line.trim().is_empty() {
                    continue;
                }
                match line.split_once('=') {
                    Some((k, v)) => {
                        map.insert(Value::String(k.trim().to_string()), Value::String(v.to_string()));
                    }
                    None => errors.push((field.to_string(), format!("write NAME=VALUE, one a line: \"{line}\""))),
                }
            }
            (!map.is_empty()).then_some(map)
        };
        if let Some(selector) = pairs("selector", &mut errors) {
            put(&["selector"], Value::Mapping(selector));
        }
        match self.value("executor") {
            "builtin" => {
                let name = Value::String(self.value("builtin").to_string());
                if self.value("builtin_duration").is_empty() {
                    put(&["builtin"], name);
                } else {
                    put(&["builtin", "name"], name);
                    put(
                        &["builtin", "duration"],
                        Value::String(self.value("builtin_duration").into()),
                    );
                }
            }
            "shell" => {
                let env = pairs("env", &mut errors);
                let command = Value::String(self.value("command").to_string());
                if env.is_none() && self.value("cwd").is_empty() {
                    if !self.value("command").is_empty() {
                        put(&["shell"], command);
                    }
                } else {
                    put(&["shell", "command"], command);
                    if let Some(env) = env {
                        put(&["shell", "env"], Value::Mapping(env));
                    }
                    if !self.value("cwd").is_empty() {
                        put(&["shell", "cwd"], Value::String(self.value("cwd").into()));
                    }
                }
            }
            _ => {}
        }
        put(&["enabled"], Value::Bool(self.enabled));
        let mut extra_keys = BTreeSet::new();
        if !self.extra_yaml.trim().is_empty() {
            match serde_yaml_ng::from_str::<Value>(&self.extra_yaml) {
                Ok(Value::Mapping(extra)) => {
                    for (k, v) in extra {
                        let key = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                        if job.contains_key(&k) {
                            errors.push((
                                "extra-yaml".into(),
                                format!("`{key}` is set by its field above too: set it in one place"),
                            ));
                        } else {
                            extra_keys.insert(key);
                            job.insert(k, v);
                        }
                    }
                }
                Ok(Value::Null) => {}
                Ok(_) => errors.push(("extra-yaml".into(), "expected a YAML mapping of field: value".into())),
                Err(e) => errors.push(("extra-yaml".into(), format!("invalid YAML: {e}"))),
            }
        }
        if errors.is_empty() {
            Ok((job, extra_keys))
        } else {
            Err(errors)
        }
    }
}

/// (input, message) pairs.
pub type FieldErrors = Vec<(String, String)>;

/// A `scheduler.yaml` document defining just `name` as `job`.
pub fn document(name: &str, job: Mapping) -> String {
    let mut jobs = Mapping::new();
    jobs.insert(Value::String(name.to_string()), Value::Mapping(job));
    let mut doc = Mapping::new();
    doc.insert(Value::String("jobs".into()), Value::Mapping(jobs));
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

/// The input a key path of a job concerns (`schedule` → `cron`), or `None`
/// when no input does.
fn field_of(path: &str, extra_keys: &BTreeSet<String>) -> Option<&'static str> {
    let first = path.split(['.', '[']).next().unwrap_or("");
    if extra_keys.contains(first) {
        return Some("extra-yaml");
    }
    let exact = [
        ("dst.gap", "dst_gap"),
        ("dst.repeat", "dst_repeat"),
        ("shell.env", "env"),
        ("shell.cwd", "cwd"),
        ("builtin.duration", "builtin_duration"),
        ("retry.non_retryable_exit_codes", "non_retryable"),
        ("retry.jitter", "retry_jitter"),
        ("retention.max_age", "retention_max_age"),
        ("retention.max_runs", "retention_max_runs"),
        ("retention.dead_max_age", "retention_dead_max_age"),
    ];
    for (prefix, field) in exact {
        if path == prefix || path.starts_with(&format!("{prefix}.")) || path.starts_with(&format!("{prefix}[")) {
            return Some(field);
        }
    }
    if let Some(rest) = path.strip_prefix("retry.") {
        return TEXT_FIELDS
            .iter()
            .copied()
            .find(|f| *f == rest.split('.').next().unwrap_or(""));
    }
    Some(match first {
        "schedule" => "cron",
        "dst" => "dst_gap",
        "shell" => "command",
        "builtin" => "builtin",
        "priority" => "priority",
        "retry" => "max_attempts",
        "retention" => "retention_max_age",
        "enabled" => "enabled",
        other => return TEXT_FIELDS.iter().copied().find(|f| *f == other),
    })
}

/// The API's message split into (input, message) pairs: each line that
/// names a path of job `name` goes to the input of that path; the rest to
/// `form` (the top of the form).
pub fn map_errors(name: &str, message: &str, extra_keys: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let marker = format!("jobs.{name}");
    for line in message.lines() {
        if line.starts_with("yaml: invalid configuration:") || line.trim().is_empty() {
            continue;
        }
        let mapped = line.find(&marker).and_then(|at| {
            let rest = &line[at + marker.len()..];
            let (path, text) = if let Some(r) = rest.strip_prefix('.') {
                r.split_once(": ")?
            } else {
                ("", rest.strip_prefix(": ")?)
            };
            let field = if path.is_empty() {
                text.contains("executor").then_some("command")?
            } else {
                field_of(path, extra_keys)?
            };
            let shown = if path.is_empty() {
                text.to_string()
            } else {
                format!("{path}: {text}")
            };
            Some((field.to_string(), shown))
        });
        out.push(mapped.unwrap_or_else(|| ("form".to_string(), line.to_string())));
    }
    if out.is_empty() {
        out.push(("form".into(), message.to_string()));
    }
    out
}

/// `GET /jobs/new`.
pub async fn new_form(State(state): State<HttpState>, caller: Caller) -> WebResult {
    caller.request("ControllerService/ApplyJobs", ())?;
    Ok(render(&state, &caller, None, &JobForm::blank(), false, StatusCode::OK).await)
}

/// `GET /jobs/{name}/edit`.
pub async fn edit_form(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    caller.request("ControllerService/ApplyJobs", ())?;
    let (spec, from_config) = stored_spec(&state, &caller, &name)?
        .ok_or_else(|| WebError::not_found(format!("job \"{}\" is not defined", crate::limits::echo(&name))))?;
    let form = JobForm::from_spec(&name, &spec);
    Ok(render(&state, &caller, Some(&name), &form, from_config, StatusCode::OK).await)
}

/// `POST /jobs/new`.
pub async fn create(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(post): axum::Extension<FormData>,
) -> WebResult {
    let form = JobForm::from_post(post.text("name"), &post);
    save(&state, &caller, form, false).await
}

/// `POST /jobs/{name}/edit`.
pub async fn update(
    State(state): State<HttpState>,
    caller: Caller,
    Path(name): Path<String>,
    axum::Extension(post): axum::Extension<FormData>,
) -> WebResult {
    let form = JobForm::from_post(name, &post);
    save(&state, &caller, form, true).await
}

async fn save(state: &HttpState, caller: &Caller, mut form: JobForm, editing: bool) -> WebResult {
    let api = state.web.api()?;
    caller.request("ControllerService/ApplyJobs", ())?;
    let name = form.name.clone();
    let exists = match api
        .get_job(caller.request("ControllerService/GetJob", pb::GetJobRequest { name: name.clone() })?)
        .await
    {
        Ok(_) => true,
        Err(s) if s.code() == tonic::Code::NotFound => false,
        Err(s) => return Err(s.into()),
    };
    if name.is_empty() {
        form.errors.push(("name".into(), "give the job a name".into()));
    } else if !editing && exists {
        form.errors.push((
            "name".into(),
            format!("job {name} exists: edit it, or choose another name"),
        ));
    } else if editing && !exists {
        return Err(WebError::not_found(format!(
            "job \"{}\" is not defined (deleted meanwhile?)",
            crate::limits::echo(&name)
        )));
    }
    let mapping = form.mapping();
    if let Err(errors) = &mapping {
        form.errors.extend(errors.iter().cloned());
    }
    if !form.errors.is_empty() {
        return Ok(render(
            state,
            caller,
            editing.then_some(name.as_str()),
            &form,
            false,
            StatusCode::BAD_REQUEST,
        )
        .await);
    }
    let (job, extra_keys) = mapping.expect("checked above");
    let request = caller.request(
        "ControllerService/ApplyJobs",
        pb::ApplyJobsRequest {
            yaml: document(&name, job),
            source_name: SOURCE_NAME.into(),
        },
    )?;
    match api.apply_jobs(request).await {
        Ok(answer) => {
            let a = answer.into_inner();
            let what = if !a.created.is_empty() {
                "created"
            } else if !a.updated.is_empty() {
                "saved"
            } else {
                "unchanged"
            };
            Ok(layout::done(caller, &job_url(&name), format!("Job {name} {what}.")))
        }
        Err(status) => {
            let e = WebError::from(status);
            if e.status == StatusCode::FORBIDDEN {
                return Err(e);
            }
            form.errors = map_errors(&name, &e.message, &extra_keys);
            let status = if e.status.is_client_error() {
                e.status
            } else {
                StatusCode::BAD_REQUEST
            };
            Ok(render(state, caller, editing.then_some(name.as_str()), &form, false, status).await)
        }
    }
}

fn select(id: &str, name: &str, current: &str, default_label: &str, options: &[&str], extra: Markup) -> Markup {
    html! {
        select id=(id) name=(name) {
            option value="" selected[current.is_empty()] { (default_label) }
            @for o in options { option value=(o) selected[current == *o] { (o) } }
            @if !current.is_empty() && !options.contains(&current) {
                option value=(current) selected { (current) }
            }
        }
        (extra)
    }
}

async fn render(
    state: &HttpState,
    caller: &Caller,
    editing: Option<&str>,
    form: &JobForm,
    from_config: bool,
    status: StatusCode,
) -> Response {
    let input = ScheduleInput {
        cron: form.value("cron").to_string(),
        timezone: form.value("timezone").to_string(),
        dst_gap: form.value("dst_gap").to_string(),
        dst_repeat: form.value("dst_repeat").to_string(),
    };
    let (preview, cron_ok) = preview_markup(state, caller, &input).await;
    let errors = &form.errors;
    let invalid = |f: &str| layout::has_error(errors, f).then_some("true");
    let described = |f: &str| layout::has_error(errors, f).then(|| format!("{f}-error"));
    let text = |id: &str, label: &str, hint: &str| {
        html! {
            div {
                label for=(id) { (label) }
                input type="text" id=(id) name=(id) value=(form.value(id)) aria-invalid=[invalid(id)] aria-describedby=[described(id)];
                @if !hint.is_empty() { p.hint { (hint) } }
                (layout::field_error(errors, id))
            }
        }
    };
    let (action, title) = match editing {
        Some(name) => (format!("{}/edit", job_url(name)), format!("Edit {name}")),
        None => ("/jobs/new".to_string(), "New job".to_string()),
    };
    let cron_invalid = !cron_ok || layout::has_error(errors, "cron");
    let executor = form.value("executor");
    let body = html! {
        @if from_config { p.warn #config-note { (CONFIG_NOTE) " Saving here makes it an API definition." } }
        form.stack #job-form method="post" action=(action) novalidate {
            (layout::csrf_field(caller))
            @for (field, text) in errors {
                @if field == "form" { p.field-error role="alert" { (text) } }
            }
            fieldset {
                legend { "Job" }
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required readonly[editing.is_some()]
                    aria-invalid=[invalid("name")] aria-describedby=[described("name")];
                p.hint { "Lower-case letters, digits, '.', '_' and '-'; cannot change once created." }
                (layout::field_error(errors, "name"))
                label for="description" { "Description" }
                input #description type="text" name="description" value=(form.value("description"));
                (layout::field_error(errors, "description"))
                div.row {
                    div {
                        label for="job-priority" { "Priority" }
                        (select("job-priority", "priority", form.value("priority"), "default (normal)", &["critical", "high", "normal", "low"], layout::field_error(errors, "priority")))
                    }
                    (text("tags", "Tags", "comma-separated"))
                }
                label for="enabled" {
                    input #enabled type="checkbox" name="enabled" value="true" checked[form.enabled];
                    " Enabled (a disabled job is neither scheduled nor enqueueable)"
                }
                (layout::field_error(errors, "enabled"))
            }
            fieldset {
                legend { "Schedule" }
                label for="cron" { "Cron expression" }
                input #cron type="text" name="cron" value=(form.value("cron")) data-preview-input autocomplete="off"
                    aria-invalid=(if cron_invalid { "true" } else { "false" })
                    aria-describedby={ "cron-hint schedule-preview" @if layout::has_error(errors, "cron") { " cron-error" } };
                p.hint #cron-hint { "minute hour day-of-month month day-of-week (a leading seconds field is allowed), or @daily, @hourly…; empty: run manually or by API" }
                (layout::field_error(errors, "cron"))
                div.row {
                    div {
                        label for="timezone" { "Time zone" }
                        input #timezone type="text" name="timezone" value=(form.value("timezone")) list="zones" data-preview-input
                            placeholder="UTC" aria-invalid=[invalid("timezone")] aria-describedby=[described("timezone")];
                        (layout::field_error(errors, "timezone"))
                    }
                    div {
                        label for="dst_gap" { "Time skipped by DST" }
                        select #dst_gap name="dst_gap" data-preview-input {
                            option value="" selected[form.value("dst_gap").is_empty()] { "default (shift)" }
                            option value="shift" selected[form.value("dst_gap") == "shift"] { "shift: fire at the end of the gap" }
                            option value="skip" selected[form.value("dst_gap") == "skip"] { "skip: do not fire" }
                        }
                        (layout::field_error(errors, "dst_gap"))
                    }
                    div {
                        label for="dst_repeat" { "Time repeated by DST" }
                        select #dst_repeat name="dst_repeat" data-preview-input {
                            option value="" selected[form.value("dst_repeat").is_empty()] { "default (first)" }
                            option value="first" selected[form.value("dst_repeat") == "first"] { "first occurrence" }
                            option value="last" selected[form.value("dst_repeat") == "last"] { "last occurrence" }
                            option value="both" selected[form.value("dst_repeat") == "both"] { "both occurrences" }
                        }
                        (layout::field_error(errors, "dst_repeat"))
                    }
                }
                datalist #zones { @for tz in chrono_tz::TZ_VARIANTS.iter() { option value=(tz.name()) {} } }
                div.preview #schedule-preview data-preview="/jobs/preview" aria-live="polite" { (preview) }
                div.row {
                    div {
                        label for="overlap" { "While a run is unfinished, a fire…" }
                        (select("overlap", "overlap", form.value("overlap"), "default (allow)", &["allow", "forbid", "replace"], layout::field_error(errors, "overlap")))
                    }
                    div {
                        label for="catch_up" { "Fires missed while down" }
                        (select("catch_up", "catch_up", form.value("catch_up"), "default (skip)", &["skip", "latest", "all"], layout::field_error(errors, "catch_up")))
                    }
                }
                div.row {
                    (text("max_catch_up", "Most missed fires run (catch up: all)", ""))
                    (text("catch_up_window", "Catch up only fires this recent", "a duration, e.g. 6h"))
                    (text("jitter", "Random delay per fire, up to", "e.g. 30s"))
                }
            }
            fieldset {
                legend { "What it runs" }
                label for="executor" { "Executor" }
                select #executor name="executor" {
                    option value="shell" selected[executor == "shell" || executor.is_empty()] { "shell command" }
                    option value="builtin" selected[executor == "builtin"] { "builtin task" }
                    option value="yaml" selected[executor == "yaml"] { "as written under other fields (http, handler)" }
                }
                label for="command" { "Shell command (run by sh -c; the payload is on its standard input)" }
                textarea #command name="command" rows="3" aria-invalid=[invalid("command")] aria-describedby=[described("command")] { (form.value("command")) }
                (layout::field_error(errors, "command"))
                div.row {
                    (text("cwd", "Working directory", "empty: the agent's"))
                    div {
                        label for="env" { "Environment (NAME=VALUE, one a line; ${VAR} from the controller's allowed variables)" }
                        textarea #env name="env" rows="2" aria-invalid=[invalid("env")] aria-describedby=[described("env")] { (form.value("env")) }
                        (layout::field_error(errors, "env"))
                    }
                }
                div.row {
                    div {
                        label for="builtin" { "Builtin task" }
                        (select("builtin", "builtin", form.value("builtin"), "—", crate::job::BUILTINS, layout::field_error(errors, "builtin")))
                    }
                    (text("builtin_duration", "Sleep duration", "for sleep, e.g. 5s"))
                }
            }
            fieldset {
                legend { "Time limit and retries" }
                div.row {
                    (text("timeout", "Timeout of one attempt", "e.g. 10m; 0s = none"))
                    (text("max_attempts", "Attempts in total", "1 to 1000"))
                    div {
                        label for="backoff" { "Backoff" }
                        (select("backoff", "backoff", form.value("backoff"), "default (exponential)", &["exponential", "fixed", "linear"], layout::field_error(errors, "backoff")))
                    }
                }
                div.row {
                    (text("initial_delay", "First retry delay", "e.g. 30s"))
                    (text("max_delay", "Longest retry delay", "e.g. 1h"))
                    (text("retry_jitter", "Retry jitter (fraction)", "e.g. 0.2"))
                }
                (text("non_retryable", "Exit codes that are not retried", "comma-separated, e.g. 2, 64"))
            }
            fieldset {
                legend { "Placement, concurrency, dependencies, retention" }
                div.row {
                    (text("max_concurrency", "Most runs at once", "empty: unlimited"))
                    (text("depends_on", "Depends on jobs", "comma-separated job names"))
                }
                div {
                    label for="selector" { "Agent labels that must match (key=value, comma-separated)" }
                    input #selector type="text" name="selector" value=(form.value("selector").replace('\n', ", "))
                        aria-invalid=[invalid("selector")] aria-describedby=[described("selector")];
                    (layout::field_error(errors, "selector"))
                }
                div.row {
                    (text("retention_max_age", "Keep finished runs for", "e.g. 30d"))
                    (text("retention_max_runs", "Keep at most runs", "e.g. 1000"))
                    (text("retention_dead_max_age", "Keep dead runs for", "e.g. 90d"))
                }
            }
            fieldset {
                legend { "Other fields" }
                label for="extra-yaml" { "Other fields (YAML mapping), merged into the job" }
                textarea #extra-yaml name="extra_yaml" rows="4" aria-invalid=[invalid("extra-yaml")] aria-describedby=[described("extra-yaml")]
                    placeholder="shell:\n  command: [./sync.sh, --full]" { (form.extra_yaml) }
                (layout::field_error(errors, "extra-yaml"))
            }
            div.actions {
                button #save-job type="submit" { "Save" }
                @if let Some(name) = editing { a.button.secondary href=(job_url(name)) { "Cancel" } }
                @else { a.button.secondary href="/jobs" { "Cancel" } }
            }
        }
    };
    let mut response = layout::page(caller, Nav::Jobs, &title, body);
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_through_the_form() {
        let spec: Mapping = serde_yaml_ng::from_str(
            "description: nightly\nschedule: 30 2 * * *\ntimezone: Europe/Berlin\ndst: { gap: skip }\n\
             priority: high\ntimeout: 10m\nretry: { max_attempts: 5, jitter: 0.5, non_retryable_exit_codes: [2, 64] }\n\
             tags: [a, b]\nselector: { region: eu }\nshell: { command: echo hi, env: { T: '${T}' } }\n\
             retention: { max_runs: 10 }\ncatch_up_window: 6h\nenabled: false\n",
        )
        .unwrap();
        let form = JobForm::from_spec("x", &spec);
        assert_eq!(form.value("cron"), "30 2 * * *");
        assert_eq!(form.value("dst_gap"), "skip");
        assert_eq!(form.value("non_retryable"), "2, 64");
        assert_eq!(form.value("env"), "T=${T}");
        assert!(!form.enabled);
        assert_eq!(form.extra_yaml, "", "everything has an input");
        let (back, extra) = form.mapping().unwrap();
        assert!(extra.is_empty());
        assert_eq!(back.get("retry"), spec.get("retry"));
        assert_eq!(back.get("shell"), spec.get("shell"));
        assert_eq!(back.get("retention"), spec.get("retention"));
        assert_eq!(back.get("dst"), spec.get("dst"));
        assert_eq!(back.get("tags"), spec.get("tags"));
        assert_eq!(back.len(), spec.len());
    }

    #[test]
    fn an_argv_command_stays_in_the_yaml_and_conflicts_are_refused() {
        let spec: Mapping = serde_yaml_ng::from_str("shell: { command: [a, b] }\n").unwrap();
        let form = JobForm::from_spec("x", &spec);
        assert_eq!(form.value("executor"), "yaml");
        assert!(form.extra_yaml.contains("command"));
        let (back, extra) = form.mapping().unwrap();
        assert_eq!(back.get("shell"), spec.get("shell"));
        assert!(extra.contains("shell"));

        let mut form = JobForm::blank();
        form.values.insert("command".into(), "echo".into());
        form.extra_yaml = "shell: ls\n".into();
        let errors = form.mapping().unwrap_err();
        assert_eq!(errors[0].0, "extra-yaml");
    }

    #[test]
    fn api_errors_go_next_to_their_inputs() {
        let message = "yaml: invalid configuration: 3 error(s)\n\
            web form:3: jobs.a.b.schedule: invalid cron expression \"61 * * * *\": minute\n\
            web form:5: jobs.a.b.retry.max_attempts: must be 1..1000\n\
            web form:7: jobs.a.b.foo: unknown field `foo`\n\
            web form:2: jobs.a.b: missing executor: add `shell` or `builtin`";
        let extra: BTreeSet<String> = ["foo".to_string()].into();
        let errors = map_errors("a.b", message, &extra);
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["cron", "max_attempts", "extra-yaml", "command"]);
        assert!(errors[0].1.starts_with("schedule: invalid cron expression"));
        let other = map_errors("a", "jobs: something else", &BTreeSet::new());
        assert_eq!(other[0].0, "form");
    }
}
