//! The alerting part of `ControllerService`: channels, rules, history and test
//! messages (`docs/alerting.md`). Secrets never leave: channels are shown by
//! their redacted spec and a target description without tokens.

use std::collections::HashMap;

use tonic::Status;
use worker_proto::v1 as pb;

use crate::alerting::{AlertService, AlertStatus, Channel, EventParams, Rule};
use crate::error::Error;
use crate::store::{AlertQuery, AlertRecord};
use crate::time::rfc3339;

/// A channel as the API shows it.
pub fn channel_to_proto(channel: &Channel) -> pb::AlertChannel {
    pb::AlertChannel {
        name: channel.name.clone(),
        r#type: channel.kind.channel_type().to_string(),
        target: channel.to_string(),
        spec_yaml: serde_yaml_ng::to_string(&channel.redacted_spec()).unwrap_or_default(),
        enabled: Some(channel.enabled),
    }
}

/// A rule as the API shows it.
pub fn rule_to_proto(rule: &Rule) -> pb::AlertRule {
    let mut params = HashMap::new();
    match &rule.params {
        EventParams::None => {}
        EventParams::RunSlow { threshold, span } => {
            params.insert("threshold".into(), worker_duration::format(*threshold));
            if let Some(span) = span {
                params.insert("span".into(), span.clone());
            }
        }
        EventParams::MetricHigh { metric, above, per } => {
            params.insert("metric".into(), metric.clone());
            params.insert("above".into(), above.to_string());
            params.insert("per".into(), per.as_str().into());
        }
        EventParams::ConsecutiveFailures { count } => {
            params.insert("count".into(), count.to_string());
        }
        EventParams::QueueBacklog {
            max_depth,
            max_wait,
            priority,
        } => {
            if let Some(d) = max_depth {
                params.insert("max_depth".into(), d.to_string());
            }
            if let Some(w) = max_wait {
                params.insert("max_wait".into(), worker_duration::format(*w));
            }
            if let Some(p) = priority {
                params.insert("priority".into(), p.to_string());
            }
        }
    }
    pb::AlertRule {
        name: rule.name.clone(),
        event: rule.event.to_string(),
        jobs: rule.jobs.to_string(),
        min_priority: rule.min_priority.to_string(),
        channels: rule.channels.clone(),
        throttle: worker_duration::format(rule.throttle),
        params,
        spec_yaml: serde_yaml_ng::to_string(&rule.spec).unwrap_or_default(),
        enabled: rule.enabled,
    }
}

/// A history row as the API shows it.
pub fn record_to_proto(r: AlertRecord) -> pb::AlertHistoryEntry {
    pb::AlertHistoryEntry {
        id: r.id,
        alert_id: r.alert_id,
        at: rfc3339(r.at),
        kind: r.kind.to_string(),
        event: r.event.map(|e| e.to_string()).unwrap_or_default(),
        rule: r.rule.unwrap_or_default(),
        channel: r.channel,
        job: r.job.unwrap_or_default(),
        run_id: r.run_id.unwrap_or_default(),
        status: r.status.to_string(),
        attempts: r.attempts,
        answer: r.answer,
        title: r.title,
    }
}

/// The channels in force, by name.
pub fn list_channels(alerts: &AlertService) -> pb::ListAlertChannelsResponse {
    pb::ListAlertChannelsResponse {
        channels: alerts.config().channels.values().map(channel_to_proto).collect(),
    }
}

/// The rules in force, in order.
pub fn list_rules(alerts: &AlertService) -> pb::ListAlertRulesResponse {
    pb::ListAlertRulesResponse {
        rules: alerts.config().rules.iter().map(rule_to_proto).collect(),
    }
}

/// `PutAlertChannel`.
pub async fn put_channel(
    alerts: &AlertService,
    request: pb::PutAlertChannelRequest,
) -> Result<pb::AlertChannel, Status> {
    super::limits::check_yaml("spec_yaml", "<channel>", &request.spec_yaml)?;
    // Parsing and validating (all channels and rules again) off the serving threads.
    let (service, name, spec) = (alerts.clone(), request.name.clone(), request.spec_yaml);
    let handle = tokio::runtime::Handle::current();
    super::limits::off_thread(move || handle.block_on(service.put_channel(&name, &spec))).await??;
    alerts
        .config()
        .channels
        .get(&request.name)
        .map(channel_to_proto)
        .ok_or_else(|| Error::internal("the channel saved is not in force").into())
}

/// `SetAlertChannelEnabled`.
pub async fn set_channel_enabled(
    alerts: &AlertService,
    request: pb::SetAlertChannelEnabledRequest,
) -> Result<pb::AlertChannel, Status> {
    alerts.set_channel_enabled(&request.name, request.enabled).await?;
    alerts
        .config()
        .channels
        .get(&request.name)
        .map(channel_to_proto)
        .ok_or_else(|| Error::internal("the channel changed is not in force").into())
}

/// `PutAlertRule`.
pub async fn put_rule(alerts: &AlertService, request: pb::PutAlertRuleRequest) -> Result<pb::AlertRule, Status> {
    super::limits::check_yaml("spec_yaml", "<rule>", &request.spec_yaml)?;
    let (service, spec) = (alerts.clone(), request.spec_yaml);
    let handle = tokio::runtime::Handle::current();
    let name = super::limits::off_thread(move || handle.block_on(service.put_rule(&spec))).await??;
    alerts
        .config()
        .rules
        .iter()
        .find(|r| r.name == name)
        .map(rule_to_proto)
        .ok_or_else(|| Error::internal("the rule saved is not in force").into())
}

/// `ListAlertHistory`.
pub async fn history(
    alerts: &AlertService,
    request: pb::ListAlertHistoryRequest,
) -> Result<pb::ListAlertHistoryResponse, Status> {
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let status = match non_empty(request.status) {
        Some(s) => Some(s.parse::<AlertStatus>().map_err(|e| Error::invalid("status", e))?),
        None => None,
    };
    let query = AlertQuery {
        limit: match request.limit {
            0 => 0,
            n => super::limits::page(n)?,
        },
        rule: non_empty(request.rule),
        channel: non_empty(request.channel),
        job: non_empty(request.job),
        status,
    };
    let records = alerts.history(&query).await?;
    Ok(pb::ListAlertHistoryResponse {
        alerts: records.into_iter().map(record_to_proto).collect(),
    })
}
