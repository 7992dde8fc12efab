//! `/alerts...`: alert channels and rules (created, edited, enabled,
//! disabled, deleted), "send test" with the channel's answer, and the alert
//! history with filters (docs/alerting.md, docs/web-ui/alerts.md).
//!
//! Everything goes through the gRPC service: `ListAlertChannels`,
//! `PutAlertChannel`, `SetAlertChannelEnabled`, `DeleteAlertChannel`, `ListAlertRules`,
//! `PutAlertRule`, `DeleteAlertRule`, `ListAlertHistory` and
//! `TestAlertChannel`. The forms build the spec YAML on the server and the
//! API validates it (the whole alert configuration, as `alerts.yaml`); its
//! problems, which name a key path (`rules[2].throttle`,
//! `channels.ops.smtp.host`), are shown next to the field they concern.
//!
//! * [`mod@self`]: the overview (channels, rules, recent history) and the
//!   one-button actions (test, enable/disable, delete; a channel's
//!   enable/disable is `SetAlertChannelEnabled`, in [`channels`]);
//! * [`channels`]: the channel form (and why secrets must be entered again);
//! * [`rules`]: the rule form;
//! * [`history`][]: `/alerts/history`.
//!
//! Channel changes are for admins (`PutAlertChannel`), rule changes and tests
//! for operators too; what the caller's role may not do is not offered.

pub mod channels;
pub mod history;
pub mod rules;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use crate::http::HttpState;
use crate::web::form::segment;
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// History rows shown on the overview.
const RECENT: u32 = 10;

/// `/alerts...`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/alerts", get(overview))
        .route("/alerts/history", get(history::page))
        .route("/alerts/channels/new", get(channels::new_form).post(channels::create))
        .route(
            "/alerts/channels/{name}/edit",
            get(channels::edit_form).post(channels::update),
        )
        .route("/alerts/channels/{name}/test", post(test_channel))
        .route("/alerts/channels/{name}/toggle", post(channels::toggle))
        .route("/alerts/channels/{name}/delete", post(delete_channel))
        .route("/alerts/rules/new", get(rules::new_form).post(rules::create))
        .route("/alerts/rules/{name}/edit", get(rules::edit_form).post(rules::update))
        .route("/alerts/rules/{name}/toggle", post(rules::toggle))
        .route("/alerts/rules/{name}/delete", post(delete_rule))
}

/// The channels in force.
pub(crate) async fn list_channels(state: &HttpState, caller: &Caller) -> WebResult<Vec<pb::AlertChannel>> {
    Ok(state
        .web
        .api()?
        .list_alert_channels(caller.request("ControllerService/ListAlertChannels", pb::ListAlertChannelsRequest {})?)
        .await?
        .into_inner()
        .channels)
}

/// The rules in force, in order.
pub(crate) async fn list_rules(state: &HttpState, caller: &Caller) -> WebResult<Vec<pb::AlertRule>> {
    Ok(state
        .web
        .api()?
        .list_alert_rules(caller.request("ControllerService/ListAlertRules", pb::ListAlertRulesRequest {})?)
        .await?
        .into_inner()
        .rules)
}

/// A rule's parameters as `name=value` pairs.
fn params_text(rule: &pb::AlertRule) -> String {
    let mut params: Vec<(&String, &String)> = rule.params.iter().collect();
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /alerts`.
async fn overview(State(state): State<HttpState>, caller: Caller) -> WebResult {
    let channels = list_channels(&state, &caller).await?;
    let rules = list_rules(&state, &caller).await?;
    let recent = history::fetch(
        &state,
        &caller,
        pb::ListAlertHistoryRequest {
            limit: RECENT,
            ..Default::default()
        },
    )
    .await?;
    let may_channel = caller.may("ControllerService/PutAlertChannel");
    let may_toggle_channel = caller.may("ControllerService/SetAlertChannelEnabled");
    let may_delete_channel = caller.may("ControllerService/DeleteAlertChannel");
    let may_test = caller.may("ControllerService/TestAlertChannel");
    let may_rule = caller.may("ControllerService/PutAlertRule");
    let may_delete_rule = caller.may("ControllerService/DeleteAlertRule");
    let body = html! {
        h2 { "Channels" }
        @if may_channel {
            div.toolbar { a.button #new-channel href="/alerts/channels/new" { "New channel" } }
        }
        @if channels.is_empty() {
            (layout::empty("No channel is defined: alerts have nowhere to go."))
        } @else {
            div.table-wrap {
                table #channels-table {
                    tr { th { "name" } th { "type" } th { "target" } th { "state" } th { "actions" } }
                    @for c in &channels {
                        @let base = format!("/alerts/channels/{}", segment(&c.name));
                        @let enabled = c.enabled.unwrap_or(true);
                        tr id={ "channel-" (c.name) } {
                            td.mono { (c.name) }
                            td { (c.r#type) }
                            td { (c.target) }
                            td { (layout::badge(if enabled { "enabled" } else { "disabled" })) }
                            td {
                                div.actions {
                                    @if may_test {
                                        form.inline method="post" action={ (base) "/test" } {
                                            (layout::csrf_field(&caller))
                                            button.secondary id={ "test-" (c.name) } type="submit" { "Send test" }
                                        }
                                    }
                                    @if may_channel {
                                        a.button.secondary id={ "edit-channel-" (c.name) } href={ (base) "/edit" } { "Edit" }
                                    }
                                    @if may_toggle_channel {
                                        form.inline method="post" action={ (base) "/toggle" } {
                                            (layout::csrf_field(&caller))
                                            button.secondary id={ "toggle-channel-" (c.name) } type="submit" {
                                                @if enabled { "Disable" } @else { "Enable" }
                                            }
                                        }
                                    }
                                    @if may_delete_channel {
                                        (layout::action_button(&caller, &format!("{base}/delete"), None, "Delete", "danger", &[],
                                            Some(&format!("Really delete channel {}?", c.name))))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Rules" }
        @if may_rule {
            div.toolbar { a.button #new-rule href="/alerts/rules/new" { "New rule" } }
        }
        @if rules.is_empty() {
            (layout::empty("No rule is defined: nothing alerts."))
        } @else {
            div.table-wrap {
                table #rules-table {
                    tr {
                        th { "name" } th { "event" } th { "jobs" } th.hide-phone { "min priority" }
                        th { "channels" } th { "throttle" } th.hide-phone { "params" } th { "state" } th { "actions" }
                    }
                    @for r in &rules {
                        @let base = format!("/alerts/rules/{}", segment(&r.name));
                        tr id={ "rule-" (r.name) } {
                            td.mono { (r.name) }
                            td { (r.event) }
                            td.mono { (r.jobs) }
                            td.hide-phone { (r.min_priority) }
                            td { (r.channels.join(", ")) }
                            td { (r.throttle) }
                            td.hide-phone.mono { (params_text(r)) }
                            td { (layout::badge(if r.enabled { "enabled" } else { "disabled" })) }
                            td {
                                div.actions {
                                    @if may_rule {
                                        a.button.secondary id={ "edit-rule-" (r.name) } href={ (base) "/edit" } { "Edit" }
                                        form.inline method="post" action={ (base) "/toggle" } {
                                            (layout::csrf_field(&caller))
                                            button.secondary id={ "toggle-rule-" (r.name) } type="submit" {
                                                @if r.enabled { "Disable" } @else { "Enable" }
                                            }
                                        }
                                    }
                                    @if may_delete_rule {
                                        (layout::action_button(&caller, &format!("{base}/delete"), None, "Delete", "danger", &[],
                                            Some(&format!("Really delete rule {}?", r.name))))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Recent alerts" }
        @if recent.is_empty() {
            (layout::empty("No alert has been sent yet."))
        } @else {
            (history::table(&recent))
        }
        p { a #history-link href="/alerts/history" { "All alert history, with filters" } }
    };
    Ok(layout::page(&caller, Nav::Alerts, "Alerts", body))
}

/// `POST /alerts/channels/{name}/test`: sends a test message (one attempt)
/// and shows the channel's answer.
async fn test_channel(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    let entry = state
        .web
        .api()?
        .test_alert_channel(caller.request(
            "ControllerService/TestAlertChannel",
            pb::TestAlertChannelRequest { name: name.clone() },
        )?)
        .await?
        .into_inner();
    let body = html! {
        section #test-result data-status=(entry.status) aria-live="polite" {
            p {
                "Test message to channel " strong.mono { (name) } ": " (layout::badge(&entry.status))
            }
            dl.facts {
                dt { "status" } dd #test-status { (entry.status) }
                dt { "attempts" } dd #test-attempts { (entry.attempts) }
                dt { "answer" } dd #test-answer .mono { (entry.answer) }
                dt { "title" } dd { (entry.title) }
                dt { "at" } dd { (layout::time(&entry.at)) }
            }
        }
        p { a href="/alerts" { "Back to alerts" } " · " a href={ "/alerts/history?channel=" (segment(&name)) } { "this channel's history" } }
    };
    let status = if entry.status == "sent" {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((status, layout::page(&caller, Nav::Alerts, "Channel test", body)).into_response())
}

/// `POST /alerts/channels/{name}/delete` (refused while a rule sends to it).
async fn delete_channel(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    let request = caller.request(
        "ControllerService/DeleteAlertChannel",
        pb::DeleteAlertChannelRequest { name: name.clone() },
    )?;
    Ok(match state.web.api()?.delete_alert_channel(request).await {
        Ok(_) => layout::done(&caller, "/alerts", format!("Channel {name} deleted.")),
        Err(e) => layout::failed(
            &caller,
            "/alerts",
            format!("Channel {name} not deleted: {}", e.message()),
        ),
    })
}

/// `POST /alerts/rules/{name}/delete`.
async fn delete_rule(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    let request = caller.request(
        "ControllerService/DeleteAlertRule",
        pb::DeleteAlertRuleRequest { name: name.clone() },
    )?;
    Ok(match state.web.api()?.delete_alert_rule(request).await {
        Ok(_) => layout::done(&caller, "/alerts", format!("Rule {name} deleted.")),
        Err(e) => layout::failed(&caller, "/alerts", format!("Rule {name} not deleted: {}", e.message())),
    })
}

/// Splits an `InvalidArgument` message of `PutAlertChannel`/`PutAlertRule`
/// (`spec: PATH: problem; PATH: problem`) into (path, problem) pairs; a
/// problem without a path has an empty one.
pub(crate) fn problems(message: &str) -> Vec<(String, String)> {
    let text = message.strip_prefix("spec: ").unwrap_or(message);
    if let Some(rest) = message.strip_prefix("spec.name: ") {
        return vec![("name".into(), rest.to_string())];
    }
    text.split("; ")
        .map(|problem| match problem.split_once(": ") {
            Some((path, rest))
                if (path.starts_with("channels.") || path.starts_with("rules")) && !path.contains(' ') =>
            {
                (path.to_string(), rest.to_string())
            }
            _ => (String::new(), problem.to_string()),
        })
        .collect()
}

/// A form's errors that concern no field, shown above it.
pub(crate) fn general_errors(errors: &[(String, String)]) -> Markup {
    html! {
        @for (field, text) in errors {
            @if field.is_empty() {
                p.field-error #form-error role="alert" { (text) }
            }
        }
    }
}

/// A 4xx response with a re-rendered form.
pub(crate) fn form_failed(page: Response) -> Response {
    (StatusCode::BAD_REQUEST, page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_problems_are_split_by_path() {
        let got = problems("spec: rules[1].throttle: invalid duration \"x\"; rules[1]: `run_slow` needs a `threshold`");
        assert_eq!(
            got,
            vec![
                ("rules[1].throttle".to_string(), "invalid duration \"x\"".to_string()),
                ("rules[1]".to_string(), "`run_slow` needs a `threshold`".to_string()),
            ]
        );
        assert_eq!(problems("spec.name: a rule needs a `name`")[0].0, "name");
        assert_eq!(problems("spec: invalid YAML: x")[0].0, "");
    }
}
