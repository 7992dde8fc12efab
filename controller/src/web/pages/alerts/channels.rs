//! The channel form (`id="channel-form"`): new (`/alerts/channels/new`) and
//! edit (`/alerts/channels/{name}/edit`); admins only (`PutAlertChannel`).
//!
//! The form has the name, the type (slack, discord, email, webhook) and
//! each type's fields; only the chosen type's are used. They become the
//! channel's YAML mapping, built here and sent to `PutAlertChannel`, which
//! validates it; each problem it reports at `channels.NAME.FIELD` is shown
//! next to that field.
//!
//! **Secrets.** The API never returns a secret: `spec_yaml` shows literal
//! secrets (a webhook URL, a token, an HMAC key, an SMTP password, a key in
//! a URL's query) as `<redacted>`, and `${VAR}` references as written.
//! `PutAlertChannel` has no "keep the current secret": it would store
//! `<redacted>` itself as the secret (a token, a password). So the edit form
//! pre-fills only values without the marker (`${VAR}` references, URLs
//! without keys) and leaves the others empty, saying that they must be
//! entered again; a submitted value that contains the marker is refused here
//! with a message next to its field, before anything is sent.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use serde_yaml_ng::{Mapping, Value};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::{form_failed, general_errors, list_channels, problems};
use crate::http::HttpState;
use crate::web::form::{FormData, segment};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebError, WebResult};

/// How the API shows a secret.
const REDACTED: &str = "<redacted>";
const TYPES: [&str; 4] = ["slack", "discord", "email", "webhook"];
const TLS_MODES: [&str; 3] = ["starttls", "tls", "none"];

/// One input of a type: (form field, key path in the spec, label, secret, hint).
struct Input {
    field: &'static str,
    path: &'static [&'static str],
    label: &'static str,
    secret: bool,
    hint: &'static str,
}

const fn input(
    field: &'static str,
    path: &'static [&'static str],
    label: &'static str,
    secret: bool,
    hint: &'static str,
) -> Input {
    Input {
        field,
        path,
        label,
        secret,
        hint,
    }
}

/// The inputs of each type (read from `alerting/config/{slack,discord,email,webhook}.rs`).
const INPUTS: &[(&str, &[Input])] = &[
    (
        "slack",
        &[
            input(
                "slack_webhook_url",
                &["webhook_url"],
                "Incoming webhook URL",
                true,
                "either this, or a bot token with a channel",
            ),
            input("slack_token", &["token"], "Bot token", true, "xoxb-…"),
            input(
                "slack_channel",
                &["channel"],
                "Channel (for a bot)",
                false,
                "#ops or a channel id",
            ),
            input(
                "slack_api_url",
                &["api_url"],
                "API URL (for a bot)",
                false,
                "default https://slack.com/api",
            ),
        ],
    ),
    (
        "discord",
        &[input("discord_webhook_url", &["webhook_url"], "Webhook URL", true, "")],
    ),
    (
        "email",
        &[
            input("email_smtp_host", &["smtp", "host"], "SMTP host", false, ""),
            input(
                "email_smtp_port",
                &["smtp", "port"],
                "SMTP port",
                false,
                "default: 587 (starttls), 465 (tls), 25 (none)",
            ),
            input(
                "email_smtp_username",
                &["smtp", "username"],
                "SMTP user name",
                false,
                "leave empty with the password for no authentication",
            ),
            input("email_smtp_password", &["smtp", "password"], "SMTP password", true, ""),
            input("email_from", &["from"], "From", false, "addr@host or Name <addr@host>"),
            input(
                "email_to",
                &["to"],
                "To",
                false,
                "one or more addresses, separated by commas",
            ),
        ],
    ),
    (
        "webhook",
        &[
            input(
                "webhook_url",
                &["url"],
                "URL",
                false,
                "https://, or http:// to a loopback host",
            ),
            input(
                "webhook_secret",
                &["secret"],
                "HMAC secret",
                true,
                "signs the body (HMAC-SHA256)",
            ),
        ],
    ),
];

fn inputs_of(kind: &str) -> &'static [Input] {
    INPUTS.iter().find(|(t, _)| *t == kind).map(|(_, i)| *i).unwrap_or(&[])
}

/// What the form shows: name, type, every field's text and whether the
/// channel is enabled.
#[derive(Debug)]
struct ChannelFields {
    name: String,
    kind: String,
    values: Vec<(String, String)>,
    /// Fields left empty because the API showed them redacted (editing).
    withheld: Vec<String>,
    /// The `enabled` checkbox (`#channel-enabled`): unchecked writes
    /// `enabled: false` into the spec.
    enabled: bool,
}

impl Default for ChannelFields {
    fn default() -> Self {
        ChannelFields {
            name: String::new(),
            kind: String::new(),
            values: Vec::new(),
            withheld: Vec::new(),
            enabled: true,
        }
    }
}

impl ChannelFields {
    fn value(&self, field: &str) -> &str {
        self.values
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn of_channel(channel: &pb::AlertChannel) -> ChannelFields {
        let spec: Mapping = serde_yaml_ng::from_str(&channel.spec_yaml).unwrap_or_default();
        let mut fields = ChannelFields {
            name: channel.name.clone(),
            kind: channel.r#type.clone(),
            enabled: channel.enabled.unwrap_or(true),
            ..Default::default()
        };
        for input in inputs_of(&channel.r#type) {
            let mut node = spec.get(input.path[0]);
            for key in &input.path[1..] {
                node = node.and_then(|n| n.get(*key));
            }
            let text = match node {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Sequence(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            if text.contains(REDACTED) {
                fields.withheld.push(input.field.to_string());
            } else {
                fields.values.push((input.field.to_string(), text));
            }
        }
        fields
    }

    fn of_form(form: &FormData, name: Option<&str>) -> ChannelFields {
        let kind = form.text("type");
        ChannelFields {
            name: name.map(str::to_string).unwrap_or_else(|| form.text("name")),
            values: INPUTS
                .iter()
                .flat_map(|(_, inputs)| inputs.iter())
                .map(|i| (i.field.to_string(), form.text(i.field)))
                .collect(),
            kind,
            withheld: Vec::new(),
            enabled: form.checked("enabled"),
        }
    }

    /// The channel's YAML mapping, or the fields that still hold the
    /// redaction marker.
    fn spec(&self) -> Result<String, Vec<(String, String)>> {
        let marked: Vec<(String, String)> = inputs_of(&self.kind)
            .iter()
            .filter(|i| self.value(i.field).contains(REDACTED))
            .map(|i| {
                (
                    i.field.to_string(),
                    format!("{REDACTED} is how secrets are shown, not a secret: enter the value again"),
                )
            })
            .collect();
        if !marked.is_empty() {
            return Err(marked);
        }
        let mut spec = Mapping::new();
        let mut smtp = Mapping::new();
        let key = |k: &str| Value::String(k.to_string());
        spec.insert(key("type"), Value::String(self.kind.clone()));
        for input in inputs_of(&self.kind) {
            let text = self.value(input.field);
            // Required settings are sent even when empty, so that the API's
            // "is empty" lands next to them; optional ones only when set.
            let required = matches!(
                input.field,
                "discord_webhook_url"
                    | "webhook_url"
                    | "webhook_secret"
                    | "email_smtp_host"
                    | "email_from"
                    | "email_to"
            );
            if text.is_empty() && !required {
                continue;
            }
            let value = match input.field {
                "email_smtp_port" => text.parse::<u16>().map(Value::from).unwrap_or_else(|_| key(text)),
                "email_to" => Value::Sequence(
                    text.split([',', '\n'])
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(key)
                        .collect(),
                ),
                _ => key(text),
            };
            match input.path {
                ["smtp", sub] => {
                    smtp.insert(key(sub), value);
                }
                [k] => {
                    spec.insert(key(k), value);
                }
                _ => {}
            }
        }
        if self.kind == "email" {
            if let Some(tls) = self.values.iter().find(|(k, _)| k == "email_smtp_tls").map(|(_, v)| v)
                && !tls.is_empty()
            {
                smtp.insert(key("tls"), key(tls));
            }
            spec.insert(key("smtp"), Value::Mapping(smtp));
        }
        if !self.enabled {
            spec.insert(key("enabled"), Value::Bool(false));
        }
        Ok(serde_yaml_ng::to_string(&spec).unwrap_or_default())
    }
}

/// Which form field a problem's path (`channels.NAME.KEY...`) concerns.
fn field_of(path: &str, name: &str, kind: &str) -> String {
    let Some(rest) = path.strip_prefix(&format!("channels.{name}")) else {
        return String::new();
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return String::new(); // the channel as a whole
    };
    let key: Vec<&str> = rest.split('.').map(|k| k.split('[').next().unwrap_or(k)).collect();
    if key == ["type"] {
        return "type".into();
    }
    if key == ["smtp", "tls"] {
        return "email_smtp_tls".into();
    }
    inputs_of(kind)
        .iter()
        .find(|i| i.path == key.as_slice())
        .map(|i| i.field.to_string())
        .unwrap_or_default()
}

fn aria(errors: &[(String, String)], field: &str) -> (Option<&'static str>, Option<String>) {
    if layout::has_error(errors, field) {
        (Some("true"), Some(format!("{field}-error")))
    } else {
        (None, None)
    }
}

fn form_page(caller: &Caller, fields: &ChannelFields, errors: &[(String, String)], editing: bool) -> Response {
    let action = if editing {
        format!("/alerts/channels/{}/edit", segment(&fields.name))
    } else {
        "/alerts/channels/new".to_string()
    };
    let text_input = |input: &Input| -> Markup {
        let (invalid, described) = aria(errors, input.field);
        let withheld = fields.withheld.iter().any(|w| w == input.field);
        html! {
            div {
                label for=(input.field) { (input.label) }
                input id=(input.field) type=(if input.secret { "password" } else { "text" }) name=(input.field)
                    value=(fields.value(input.field)) autocomplete="off"
                    aria-invalid=[invalid] aria-describedby=[described];
                @if withheld {
                    p.hint.warn { "Set, but not shown (it is a secret): enter it again, or a ${VAR} reference." }
                }
                @if !input.hint.is_empty() { p.hint { (input.hint) } }
                (layout::field_error(errors, input.field))
            }
        }
    };
    let (type_invalid, type_described) = aria(errors, "type");
    let (tls_invalid, tls_described) = aria(errors, "email_smtp_tls");
    let tls = fields.value("email_smtp_tls").to_string();
    let body = html! {
        (general_errors(errors))
        @if editing {
            p.hint {
                "Secrets are never shown. Fields marked below hold one: they must be entered again "
                "(the controller cannot keep a secret it does not show). A ${VAR} reference is kept as written."
            }
        }
        form.stack #channel-form method="post" action=(action) {
            (layout::csrf_field(caller))
            div.row {
                div {
                    label for="channel-name" { "Name" }
                    @let (invalid, described) = aria(errors, "name");
                    input #channel-name type="text" name="name" value=(fields.name) required readonly[editing]
                        aria-invalid=[invalid] aria-describedby=[described];
                    p.hint { "a-z, 0-9, '.', '_', '-'" }
                    (layout::field_error(errors, "name"))
                }
                div {
                    label for="channel-type" { "Type" }
                    select #channel-type name="type" aria-invalid=[type_invalid] aria-describedby=[type_described] {
                        @for t in TYPES {
                            option value=(t) selected[fields.kind == t] { (t) }
                        }
                    }
                    p.hint { "only the chosen type's fields below are used" }
                    (layout::field_error(errors, "type"))
                }
            }
            @for (kind, inputs) in INPUTS {
                fieldset id={ "channel-" (kind) } data-channel-type=(kind) {
                    legend { (kind) " settings" }
                    div.row {
                        @for input in *inputs {
                            (text_input(input))
                        }
                        @if *kind == "email" {
                            div {
                                label for="email_smtp_tls" { "SMTP TLS" }
                                select #email_smtp_tls name="email_smtp_tls" aria-invalid=[tls_invalid] aria-describedby=[tls_described.as_deref()] {
                                    @for m in TLS_MODES {
                                        option value=(m) selected[tls == m] { (m) }
                                    }
                                }
                                p.hint { "none: only to a loopback host" }
                                (layout::field_error(errors, "email_smtp_tls"))
                            }
                        }
                    }
                }
            }
            div {
                label for="channel-enabled" {
                    input #channel-enabled type="checkbox" name="enabled" value="on" checked[fields.enabled];
                    " Enabled"
                }
                p.hint { "a disabled channel is kept and may be tested, but rules send it nothing" }
            }
            div.actions {
                button #save-channel type="submit" { "Save channel" }
                a.button.secondary href="/alerts" { "Cancel" }
            }
        }
    };
    let title = if editing {
        format!("Edit channel {}", fields.name)
    } else {
        "New channel".to_string()
    };
    layout::page(caller, Nav::Alerts, &title, body)
}

/// `GET /alerts/channels/new`.
pub async fn new_form(caller: Caller) -> WebResult {
    caller.request("ControllerService/PutAlertChannel", ())?;
    let fields = ChannelFields {
        kind: "webhook".into(),
        ..Default::default()
    };
    Ok(form_page(&caller, &fields, &[], false))
}

/// `GET /alerts/channels/{name}/edit`.
pub async fn edit_form(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    caller.request("ControllerService/PutAlertChannel", ())?;
    let channel = list_channels(&state, &caller)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            WebError::not_found(format!(
                "alert channel \"{}\" is not defined",
                crate::limits::echo(&name)
            ))
        })?;
    let mut fields = ChannelFields::of_channel(&channel);
    if channel.r#type == "email"
        && let Ok(spec) = serde_yaml_ng::from_str::<Value>(&channel.spec_yaml)
        && let Some(tls) = spec.get("smtp").and_then(|s| s.get("tls")).and_then(Value::as_str)
    {
        fields.values.push(("email_smtp_tls".into(), tls.to_string()));
    }
    Ok(form_page(&caller, &fields, &[], true))
}

async fn save(state: HttpState, caller: Caller, form: FormData, name: Option<String>) -> WebResult {
    let editing = name.is_some();
    let fields = ChannelFields::of_form(&form, name.as_deref());
    if fields.name.is_empty() {
        let errors = vec![("name".to_string(), "a channel needs a name".to_string())];
        return Ok(form_failed(form_page(&caller, &fields, &errors, editing)));
    }
    let spec_yaml = match fields.spec() {
        Ok(spec) => spec,
        Err(errors) => return Ok(form_failed(form_page(&caller, &fields, &errors, editing))),
    };
    let request = caller.request(
        "ControllerService/PutAlertChannel",
        pb::PutAlertChannelRequest {
            name: fields.name.clone(),
            spec_yaml,
        },
    )?;
    match state.web.api()?.put_alert_channel(request).await {
        Ok(saved) => Ok(layout::done(
            &caller,
            "/alerts",
            format!("Channel {} saved ({}).", saved.get_ref().name, saved.get_ref().target),
        )),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let errors: Vec<(String, String)> = problems(status.message())
                .into_iter()
                .map(|(path, text)| {
                    let field = field_of(&path, &fields.name, &fields.kind);
                    // A problem elsewhere in the configuration keeps its path.
                    let text = if field.is_empty() && !path.is_empty() {
                        format!("{path}: {text}")
                    } else {
                        text
                    };
                    (field, text)
                })
                .collect();
            Ok(form_failed(form_page(&caller, &fields, &errors, editing)))
        }
        Err(status) => Err(status.into()),
    }
}

/// `POST /alerts/channels/new`.
pub async fn create(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult {
    save(state, caller, form, None).await
}

/// `POST /alerts/channels/{name}/edit`.
pub async fn update(
    State(state): State<HttpState>,
    caller: Caller,
    Path(name): Path<String>,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult {
    save(state, caller, form, Some(name)).await
}

/// `POST /alerts/channels/{name}/toggle`: `SetAlertChannelEnabled` with the
/// channel's state flipped. Unlike a rule's toggle, the spec is not sent
/// back (the API shows its secrets redacted): the controller flips the flag
/// in the spec it stores.
pub async fn toggle(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    caller.request("ControllerService/SetAlertChannelEnabled", ())?;
    let channel = list_channels(&state, &caller)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            WebError::not_found(format!(
                "alert channel \"{}\" is not defined",
                crate::limits::echo(&name)
            ))
        })?;
    let enable = !channel.enabled.unwrap_or(true);
    let request = caller.request(
        "ControllerService/SetAlertChannelEnabled",
        pb::SetAlertChannelEnabledRequest {
            name: name.clone(),
            enabled: enable,
        },
    )?;
    let verb = if enable { "enabled" } else { "disabled" };
    Ok(match state.web.api()?.set_alert_channel_enabled(request).await {
        Ok(_) => layout::done(&caller, "/alerts", format!("Channel {name} {verb}.")),
        Err(e) => layout::failed(
            &caller,
            "/alerts",
            format!("Channel {name} not {verb}: {}", e.message()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: &str, spec: &str) -> pb::AlertChannel {
        pb::AlertChannel {
            name: "ops".into(),
            r#type: kind.into(),
            target: String::new(),
            spec_yaml: spec.into(),
            enabled: None,
        }
    }

    #[test]
    fn redacted_secrets_are_withheld_and_never_sent_back() {
        let fields = ChannelFields::of_channel(&channel(
            "webhook",
            "type: webhook\nurl: http://127.0.0.1:9/x?key=<redacted>\nsecret: <redacted>\n",
        ));
        assert_eq!(fields.withheld, ["webhook_url", "webhook_secret"]);
        assert_eq!(fields.value("webhook_url"), "");
        let refs = ChannelFields::of_channel(&channel(
            "email",
            "type: email\nsmtp: { host: localhost, port: 25, tls: none, username: u, password: \"${PW}\" }\nfrom: a@b.c\nto: [x@y.z, q@r.s]\n",
        ));
        assert!(refs.withheld.is_empty());
        assert_eq!(refs.value("email_smtp_password"), "${PW}");
        assert_eq!(refs.value("email_to"), "x@y.z, q@r.s");
        assert_eq!(refs.value("email_smtp_port"), "25");

        let sent = ChannelFields {
            name: "ops".into(),
            kind: "slack".into(),
            values: vec![
                ("slack_token".into(), "<redacted>".into()),
                ("slack_channel".into(), "#ops".into()),
            ],
            ..Default::default()
        };
        let errors = sent.spec().unwrap_err();
        assert_eq!(errors[0].0, "slack_token");
    }

    #[test]
    fn specs_are_built_from_the_chosen_type_only() {
        let fields = ChannelFields {
            name: "mail".into(),
            kind: "email".into(),
            values: vec![
                ("email_smtp_host".into(), "localhost".into()),
                ("email_smtp_port".into(), "2525".into()),
                ("email_smtp_tls".into(), "none".into()),
                ("email_from".into(), "w@example.com".into()),
                ("email_to".into(), "a@example.com, b@example.com".into()),
                ("webhook_secret".into(), "ignored".into()),
            ],
            ..Default::default()
        };
        let spec: Value = serde_yaml_ng::from_str(&fields.spec().unwrap()).unwrap();
        assert!(spec.get("enabled").is_none(), "enabled is the default: not written");
        assert_eq!(spec["smtp"]["port"], Value::from(2525u16));
        assert_eq!(spec["smtp"]["tls"], Value::from("none"));
        assert_eq!(spec["to"][1], Value::from("b@example.com"));
        assert!(spec.get("secret").is_none() && spec["smtp"].get("password").is_none());
        assert_eq!(field_of("channels.mail.smtp.host", "mail", "email"), "email_smtp_host");
        assert_eq!(field_of("channels.mail.to[1]", "mail", "email"), "email_to");
        assert_eq!(field_of("channels.mail", "mail", "email"), "");
        assert_eq!(
            field_of("channels.web.hook.secret", "web.hook", "webhook"),
            "webhook_secret"
        );
    }

    #[test]
    fn the_enabled_checkbox_follows_the_channel_and_writes_the_flag() {
        let mut shown = channel(
            "webhook",
            "type: webhook\nurl: http://127.0.0.1:9/x\nsecret: \"${S}\"\n",
        );
        assert!(ChannelFields::of_channel(&shown).enabled, "absent means enabled");
        shown.enabled = Some(false);
        let fields = ChannelFields::of_channel(&shown);
        assert!(!fields.enabled);
        let spec: Value = serde_yaml_ng::from_str(&fields.spec().unwrap()).unwrap();
        assert_eq!(spec["enabled"], Value::Bool(false));
    }
}
