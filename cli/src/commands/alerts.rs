//! `alerts channels|rules|history|test|set-channel|delete-channel|set-rule|delete-rule`.
//!
//! Channels are shown without secrets (the controller never returns them): the
//! spec keeps `${VAR}` references as written and shows literal secrets as
//! `<redacted>`.

use std::collections::BTreeMap;

use serde::Serialize;
use worker_proto::v1 as pb;

use super::{Ctx, read_input};
use crate::cli::AlertsCmd;
use crate::error::CliError;
use crate::output::{Table, dash, emit, joined, pairs, time, truncate};

/// A channel (`-o json`: `{name, type, target, spec, enabled}`).
#[derive(Debug, Clone, Serialize)]
pub struct AlertChannel {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
    pub spec: serde_yaml_ng::Value,
    /// Rules deliver nothing to a disabled channel; a controller that does
    /// not send the field has no disabled channels.
    pub enabled: bool,
}

impl From<pb::AlertChannel> for AlertChannel {
    fn from(c: pb::AlertChannel) -> Self {
        Self {
            name: c.name,
            kind: c.r#type,
            target: c.target,
            spec: serde_yaml_ng::from_str(&c.spec_yaml).unwrap_or(serde_yaml_ng::Value::Null),
            enabled: c.enabled.unwrap_or(true),
        }
    }
}

/// A rule (`-o json`: `{name, event, jobs, min_priority, channels, throttle, params, enabled}`).
#[derive(Debug, Clone, Serialize)]
pub struct AlertRule {
    pub name: String,
    pub event: String,
    pub jobs: String,
    pub min_priority: String,
    pub channels: Vec<String>,
    pub throttle: String,
    pub params: BTreeMap<String, String>,
    pub enabled: bool,
}

impl From<pb::AlertRule> for AlertRule {
    fn from(r: pb::AlertRule) -> Self {
        Self {
            name: r.name,
            event: r.event,
            jobs: r.jobs,
            min_priority: r.min_priority,
            channels: r.channels,
            throttle: r.throttle,
            params: r.params.into_iter().collect(),
            enabled: r.enabled,
        }
    }
}

/// One alert's outcome for one channel (`-o json`: these fields, absent values null).
#[derive(Debug, Clone, Serialize)]
pub struct AlertEntry {
    pub id: String,
    pub alert_id: String,
    pub at: String,
    pub kind: String,
    pub event: Option<String>,
    pub rule: Option<String>,
    pub channel: String,
    pub job: Option<String>,
    pub run_id: Option<String>,
    pub status: String,
    pub attempts: u32,
    pub answer: String,
    pub title: String,
}

fn opt(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl From<pb::AlertHistoryEntry> for AlertEntry {
    fn from(a: pb::AlertHistoryEntry) -> Self {
        Self {
            id: a.id,
            alert_id: a.alert_id,
            at: a.at,
            kind: a.kind,
            event: opt(a.event),
            rule: opt(a.rule),
            channel: a.channel,
            job: opt(a.job),
            run_id: opt(a.run_id),
            status: a.status,
            attempts: a.attempts,
            answer: a.answer,
            title: a.title,
        }
    }
}

/// Runs an `alerts` command.
pub async fn run(ctx: &mut Ctx, cmd: AlertsCmd) -> anyhow::Result<()> {
    match cmd {
        AlertsCmd::Channels => {
            let channels: Vec<AlertChannel> = ctx
                .client
                .list_alert_channels(pb::ListAlertChannelsRequest {})
                .await?
                .into_inner()
                .channels
                .into_iter()
                .map(AlertChannel::from)
                .collect();
            emit(ctx.format, &channels, || channels_table(&channels))
        }
        AlertsCmd::Rules => {
            let rules: Vec<AlertRule> = ctx
                .client
                .list_alert_rules(pb::ListAlertRulesRequest {})
                .await?
                .into_inner()
                .rules
                .into_iter()
                .map(AlertRule::from)
                .collect();
            emit(ctx.format, &rules, || rules_table(&rules))
        }
        AlertsCmd::History {
            rule,
            channel,
            job,
            status,
            limit,
        } => {
            let request = pb::ListAlertHistoryRequest {
                limit: limit.unwrap_or(50),
                rule: rule.unwrap_or_default(),
                channel: channel.unwrap_or_default(),
                job: job.unwrap_or_default(),
                status: status.unwrap_or_default(),
            };
            let entries: Vec<AlertEntry> = ctx
                .client
                .list_alert_history(request)
                .await?
                .into_inner()
                .alerts
                .into_iter()
                .map(AlertEntry::from)
                .collect();
            emit(ctx.format, &entries, || history_table(&entries))
        }
        AlertsCmd::Test { channel } => {
            let entry: AlertEntry = ctx
                .client
                .test_alert_channel(pb::TestAlertChannelRequest { name: channel.clone() })
                .await?
                .into_inner()
                .into();
            emit(ctx.format, &entry, || {
                format!("{}: {} ({})", entry.channel, entry.status, entry.answer)
            })?;
            if entry.status != "sent" {
                return Err(CliError::failed(format!("test message to {channel} failed: {}", entry.answer)).into());
            }
            Ok(())
        }
        AlertsCmd::SetChannel { name, file } => {
            let (spec_yaml, _) = read_input(&file, "-f")?;
            let channel: AlertChannel = ctx
                .client
                .put_alert_channel(pb::PutAlertChannelRequest { name, spec_yaml })
                .await?
                .into_inner()
                .into();
            emit(ctx.format, &channel, || channels_table(std::slice::from_ref(&channel)))
        }
        AlertsCmd::DeleteChannel { name } => {
            ctx.client
                .delete_alert_channel(pb::DeleteAlertChannelRequest { name: name.clone() })
                .await?;
            emit(ctx.format, &serde_json::json!({ "deleted": name }), || {
                format!("channel {name} deleted")
            })
        }
        AlertsCmd::SetRule { file } => {
            let (spec_yaml, _) = read_input(&file, "-f")?;
            let rule: AlertRule = ctx
                .client
                .put_alert_rule(pb::PutAlertRuleRequest { spec_yaml })
                .await?
                .into_inner()
                .into();
            emit(ctx.format, &rule, || rules_table(std::slice::from_ref(&rule)))
        }
        AlertsCmd::DeleteRule { name } => {
            ctx.client
                .delete_alert_rule(pb::DeleteAlertRuleRequest { name: name.clone() })
                .await?;
            emit(ctx.format, &serde_json::json!({ "deleted": name }), || {
                format!("rule {name} deleted")
            })
        }
    }
}

fn channels_table(channels: &[AlertChannel]) -> String {
    let mut table = Table::new(["NAME", "TYPE", "TARGET", "STATE"]);
    for c in channels {
        let state = if c.enabled { "enabled" } else { "disabled" };
        table.row([c.name.clone(), c.kind.clone(), c.target.clone(), state.to_string()]);
    }
    table.render()
}

fn rules_table(rules: &[AlertRule]) -> String {
    let mut table = Table::new([
        "NAME",
        "EVENT",
        "JOBS",
        "MIN PRIORITY",
        "CHANNELS",
        "THROTTLE",
        "PARAMS",
    ]);
    for r in rules {
        table.row([
            r.name.clone(),
            r.event.clone(),
            r.jobs.clone(),
            r.min_priority.clone(),
            joined(&r.channels),
            r.throttle.clone(),
            pairs(&r.params),
        ]);
    }
    table.render()
}

fn history_table(entries: &[AlertEntry]) -> String {
    let mut table = Table::new(["AT", "STATUS", "CHANNEL", "RULE", "TRIES", "TITLE", "ANSWER"]);
    for a in entries {
        table.row([
            time(Some(&a.at)),
            a.status.clone(),
            a.channel.clone(),
            dash(a.rule.as_deref()),
            a.attempts.to_string(),
            truncate(&a.title, 70),
            truncate(&a.answer, 60),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_shows_its_state_and_absent_means_enabled() {
        let proto = |enabled: Option<bool>| pb::AlertChannel {
            name: "hook".into(),
            r#type: "webhook".into(),
            target: "hook (webhook http://127.0.0.1/x)".into(),
            spec_yaml: "type: webhook\n".into(),
            enabled,
        };
        let old = AlertChannel::from(proto(None));
        assert!(old.enabled, "a controller without the field has no disabled channels");
        let off = AlertChannel::from(proto(Some(false)));
        let json = serde_json::to_value(&off).unwrap();
        assert_eq!(json["enabled"], serde_json::json!(false));
        let table = channels_table(&[old, off]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("STATE"), "{table}");
        assert!(
            lines[1].ends_with("enabled") && lines[2].ends_with("disabled"),
            "{table}"
        );
    }
}
