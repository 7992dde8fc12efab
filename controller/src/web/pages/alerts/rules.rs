//! The rule form (`id="rule-form"`): new (`/alerts/rules/new`) and edit
//! (`/alerts/rules/{name}/edit`), and enabling/disabling a rule.
//!
//! The form's fields become the rule's YAML mapping (name, event, jobs,
//! min_priority, channels, throttle, the event's parameters, enabled),
//! built here and sent to `PutAlertRule`, which validates it; each problem
//! it reports at `rules[N].FIELD` is shown next to that field. Parameters
//! left empty are left out; numbers that do not parse are sent as text so
//! that the API's own message says what is wrong. A rule's name is its
//! identity: it cannot be changed while editing (create a new rule and
//! delete the old one).

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde_yaml_ng::{Mapping, Value};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::{form_failed, general_errors, list_channels, list_rules, problems};
use crate::alerting::Event;
use crate::http::HttpState;
use crate::model::Priority;
use crate::web::form::{FormData, segment};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebError, WebResult};

/// The parameter inputs (`id="param-NAME"`), the events they belong to, and
/// a hint.
const PARAMS: &[(&str, &str, &str)] = &[
    ("threshold", "run_slow", "how long is too long, e.g. 10m"),
    (
        "span",
        "run_slow",
        "judge time in this reported span (empty: the whole attempt)",
    ),
    ("metric", "metric_high", "the reported metric, e.g. api_cost_usd"),
    ("above", "metric_high", "the limit, a number"),
    ("per", "metric_high", "attempt or day (default day, UTC)"),
    ("count", "consecutive_failures", "failures in a row, at least 2"),
    ("max_depth", "queue_backlog", "queued runs of one priority"),
    ("max_wait", "queue_backlog", "wait of the oldest queued run, e.g. 5m"),
    (
        "priority",
        "queue_backlog",
        "only this priority's queue (empty: every one)",
    ),
];

/// What the form shows.
#[derive(Debug, Default)]
struct RuleFields {
    name: String,
    event: String,
    jobs: String,
    min_priority: String,
    channels: Vec<String>,
    throttle: String,
    params: Vec<(String, String)>,
    enabled: bool,
}

impl RuleFields {
    fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn of_rule(rule: &pb::AlertRule) -> RuleFields {
        RuleFields {
            name: rule.name.clone(),
            event: rule.event.clone(),
            jobs: rule.jobs.clone(),
            min_priority: rule.min_priority.clone(),
            channels: rule.channels.clone(),
            throttle: rule.throttle.clone(),
            params: rule.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            enabled: rule.enabled,
        }
    }

    fn of_form(form: &FormData, name: Option<&str>) -> RuleFields {
        RuleFields {
            name: name.map(str::to_string).unwrap_or_else(|| form.text("name")),
            event: form.text("event"),
            jobs: form.text("jobs"),
            min_priority: form.text("min_priority"),
            channels: form.all("channels").into_iter().map(str::to_string).collect(),
            throttle: form.text("throttle"),
            params: PARAMS
                .iter()
                .map(|(p, _, _)| (p.to_string(), form.text(p)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            enabled: form.checked("enabled"),
        }
    }

    /// The rule's YAML mapping.
    fn spec(&self) -> String {
        let mut m = Mapping::new();
        let mut put = |k: &str, v: Value| {
            m.insert(Value::String(k.into()), v);
        };
        let text = |s: &str| Value::String(s.to_string());
        put("name", text(&self.name));
        put("event", text(&self.event));
        if !self.jobs.is_empty() {
            put("jobs", text(&self.jobs));
        }
        if !self.min_priority.is_empty() {
            put("min_priority", text(&self.min_priority));
        }
        put(
            "channels",
            Value::Sequence(self.channels.iter().map(|c| text(c)).collect()),
        );
        if !self.throttle.is_empty() {
            put("throttle", text(&self.throttle));
        }
        for (k, v) in &self.params {
            let value = match k.as_str() {
                "count" | "max_depth" => v.parse::<u64>().map(Value::from).unwrap_or_else(|_| text(v)),
                "above" => v.parse::<f64>().map(Value::from).unwrap_or_else(|_| text(v)),
                _ => text(v),
            };
            put(k, value);
        }
        if !self.enabled {
            put("enabled", Value::Bool(false));
        }
        serde_yaml_ng::to_string(&m).unwrap_or_default()
    }
}

/// Which form field a problem's path (`rules[N].FIELD...`) concerns.
fn field_of(path: &str) -> String {
    let Some(rest) = path.strip_prefix("rules[") else {
        return path.to_string();
    };
    match rest.split_once("].") {
        Some((_, field)) => field.split(['.', '[']).next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

fn input_attrs(errors: &[(String, String)], field: &str) -> (Option<&'static str>, Option<String>) {
    if layout::has_error(errors, field) {
        (Some("true"), Some(format!("{field}-error")))
    } else {
        (None, None)
    }
}

/// The form; `editing` fixes the name.
fn form_page(
    caller: &Caller,
    fields: &RuleFields,
    channels: &[pb::AlertChannel],
    errors: &[(String, String)],
    editing: bool,
) -> Response {
    let action = if editing {
        format!("/alerts/rules/{}/edit", segment(&fields.name))
    } else {
        "/alerts/rules/new".to_string()
    };
    let field = |name: &str, id: &str, label: &str, value: &str, hint: &str| -> Markup {
        let (invalid, described) = input_attrs(errors, name);
        html! {
            div {
                label for=(id) { (label) }
                input id=(id) type="text" name=(name) value=(value) aria-invalid=[invalid] aria-describedby=[described];
                @if !hint.is_empty() { p.hint { (hint) } }
                (layout::field_error(errors, name))
            }
        }
    };
    let (event_invalid, event_described) = input_attrs(errors, "event");
    let (prio_invalid, prio_described) = input_attrs(errors, "min_priority");
    let body = html! {
        (general_errors(errors))
        form.stack #rule-form method="post" action=(action) {
            (layout::csrf_field(caller))
            div {
                label for="rule-name" { "Name" }
                @let (invalid, described) = input_attrs(errors, "name");
                input #rule-name type="text" name="name" value=(fields.name) required readonly[editing]
                    aria-invalid=[invalid] aria-describedby=[described];
                p.hint { "a-z, 0-9, '.', '_', '-'" @if editing { "; a rule's name cannot change" } }
                (layout::field_error(errors, "name"))
            }
            div.row {
                div {
                    label for="rule-event" { "Event" }
                    select #rule-event name="event" aria-invalid=[event_invalid] aria-describedby=[event_described] {
                        @for e in Event::ALL {
                            option value=(e.as_str()) selected[fields.event == e.as_str()] { (e.as_str()) }
                        }
                    }
                    (layout::field_error(errors, "event"))
                }
                div {
                    label for="rule-min-priority" { "Min priority" }
                    select #rule-min-priority name="min_priority" aria-invalid=[prio_invalid] aria-describedby=[prio_described] {
                        @for p in Priority::ALL {
                            option value=(p.as_str()) selected[fields.min_priority == p.as_str()] { (p.as_str()) }
                        }
                    }
                    p.hint { "not for agent_lost, leader_changed" }
                    (layout::field_error(errors, "min_priority"))
                }
            }
            div.row {
                (field("jobs", "rule-jobs", "Jobs (glob)", &fields.jobs, "`*` matches any text, `?` one character; leave `*` for agent_lost, queue_backlog and leader_changed"))
                (field("throttle", "throttle", "Throttle", &fields.throttle, "one alert per rule and job per window, e.g. 15m; 0s sends every alert"))
            }
            fieldset {
                legend { "Channels" }
                @if channels.is_empty() {
                    p.warn { "No channel is defined: create one first." }
                }
                @for c in channels {
                    @let id = format!("rule-channel-{}", c.name);
                    label for=(id) {
                        input id=(id) type="checkbox" name="channels" value=(c.name) checked[fields.channels.contains(&c.name)];
                        " " (c.name) " " span.muted { "(" (c.r#type) ")" }
                    }
                }
                (layout::field_error(errors, "channels"))
            }
            fieldset {
                legend { "Parameters of the event" }
                div.row {
                    @for (name, event, hint) in PARAMS {
                        (field(name, &format!("param-{name}"), name, fields.param(name), &format!("{event}: {hint}")))
                    }
                }
            }
            label for="rule-enabled" {
                input #rule-enabled type="checkbox" name="enabled" value="on" checked[fields.enabled];
                " Enabled (a disabled rule is kept but matches nothing)"
            }
            div.actions {
                button #save-rule type="submit" { "Save rule" }
                a.button.secondary href="/alerts" { "Cancel" }
            }
        }
    };
    let title = if editing {
        format!("Edit rule {}", fields.name)
    } else {
        "New rule".to_string()
    };
    layout::page(caller, Nav::Alerts, &title, body)
}

/// `GET /alerts/rules/new`.
pub async fn new_form(State(state): State<HttpState>, caller: Caller) -> WebResult {
    caller.request("ControllerService/PutAlertRule", ())?;
    let channels = list_channels(&state, &caller).await?;
    let fields = RuleFields {
        event: "run_dead".into(),
        jobs: "*".into(),
        min_priority: "low".into(),
        throttle: "15m".into(),
        enabled: true,
        ..Default::default()
    };
    Ok(form_page(&caller, &fields, &channels, &[], false))
}

async fn find_rule(state: &HttpState, caller: &Caller, name: &str) -> WebResult<pb::AlertRule> {
    list_rules(state, caller)
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| WebError::not_found(format!("alert rule \"{}\" is not defined", crate::limits::echo(name))))
}

/// `GET /alerts/rules/{name}/edit`.
pub async fn edit_form(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    caller.request("ControllerService/PutAlertRule", ())?;
    let rule = find_rule(&state, &caller, &name).await?;
    let channels = list_channels(&state, &caller).await?;
    Ok(form_page(&caller, &RuleFields::of_rule(&rule), &channels, &[], true))
}

async fn save(state: HttpState, caller: Caller, form: FormData, name: Option<String>) -> WebResult {
    let editing = name.is_some();
    let fields = RuleFields::of_form(&form, name.as_deref());
    let request = caller.request(
        "ControllerService/PutAlertRule",
        pb::PutAlertRuleRequest {
            spec_yaml: fields.spec(),
        },
    )?;
    match state.web.api()?.put_alert_rule(request).await {
        Ok(saved) => {
            let saved = saved.into_inner();
            Ok(layout::done(&caller, "/alerts", format!("Rule {} saved.", saved.name)))
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let errors: Vec<(String, String)> = problems(status.message())
                .into_iter()
                .map(|(path, text)| (field_of(&path), text))
                .collect();
            let channels = list_channels(&state, &caller).await?;
            Ok(form_failed(form_page(&caller, &fields, &channels, &errors, editing)))
        }
        Err(status) => Err(status.into()),
    }
}

/// `POST /alerts/rules/new`.
pub async fn create(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult {
    save(state, caller, form, None).await
}

/// `POST /alerts/rules/{name}/edit`.
pub async fn update(
    State(state): State<HttpState>,
    caller: Caller,
    Path(name): Path<String>,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult {
    save(state, caller, form, Some(name)).await
}

/// `POST /alerts/rules/{name}/toggle`: the rule's spec as the API shows it,
/// with `enabled` flipped, sent back to `PutAlertRule`.
pub async fn toggle(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    caller.request("ControllerService/PutAlertRule", ())?;
    let rule = find_rule(&state, &caller, &name).await?;
    let mut spec: Mapping = serde_yaml_ng::from_str(&rule.spec_yaml).map_err(|e| {
        WebError::from(tonic::Status::internal(format!(
            "the rule's spec is not a mapping: {e}"
        )))
    })?;
    let enable = !rule.enabled;
    if enable {
        spec.remove("enabled");
    } else {
        spec.insert(Value::String("enabled".into()), Value::Bool(false));
    }
    let request = caller.request(
        "ControllerService/PutAlertRule",
        pb::PutAlertRuleRequest {
            spec_yaml: serde_yaml_ng::to_string(&spec).unwrap_or_default(),
        },
    )?;
    let verb = if enable { "enabled" } else { "disabled" };
    Ok(match state.web.api()?.put_alert_rule(request).await {
        Ok(_) => layout::done(&caller, "/alerts", format!("Rule {name} {verb}.")),
        Err(e) => layout::failed(&caller, "/alerts", format!("Rule {name} not {verb}: {}", e.message())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_paths_name_form_fields() {
        assert_eq!(field_of("rules[3].throttle"), "throttle");
        assert_eq!(field_of("rules[0].channels[1]"), "channels");
        assert_eq!(field_of("rules[0]"), "");
        assert_eq!(field_of("name"), "name");
    }

    #[test]
    fn the_spec_has_numbers_as_numbers_and_leaves_out_empty_fields() {
        let fields = RuleFields {
            name: "slow".into(),
            event: "run_slow".into(),
            channels: vec!["ops".into()],
            params: vec![("threshold".into(), "10m".into()), ("count".into(), "3".into())],
            enabled: false,
            ..Default::default()
        };
        let spec: serde_yaml_ng::Value = serde_yaml_ng::from_str(&fields.spec()).unwrap();
        assert_eq!(spec["threshold"], Value::from("10m"));
        assert_eq!(spec["count"], Value::from(3u64));
        assert_eq!(spec["enabled"], Value::Bool(false));
        assert!(spec.get("jobs").is_none() && spec.get("throttle").is_none());
    }
}
