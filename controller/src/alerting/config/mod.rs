//! `alerts.yaml`: the document of `channels` and `rules`, validated into an
//! [`AlertsConfig`] all or nothing, collecting every error with its location
//! (file, line, key path) the way [`crate::config::jobs`] does (and with its
//! checker).
//!
//! Values are interpolated (`${VAR}`) before validation; the uninterpolated
//! mapping of each channel and rule is kept as its `spec`. Secret values
//! (webhook URLs of Slack and Discord, the Slack bot token, the SMTP password,
//! the webhook signing secret) are held in [`Secret`], which never prints or
//! serializes its value, and no error message quotes them.
//!
//! This file reads the document, checks names and holds [`Secret`]; the rest
//! is one file per concern, its public items re-exported here:
//! * `channel.rs`: what every channel has ([`Channel`], [`ChannelKind`]), the
//!   dispatch on its `type`, and the URL and secret checks the kinds share;
//! * `slack.rs`, `discord.rs`, `email.rs`, `webhook.rs`: each kind's settings
//!   and their validation;
//! * `rules.rs`: the validation of `rules[N]` into [`Rule`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};
use serde_yaml_ng::{Mapping, Value};

use super::rules::{Event, Rule};
use crate::config::jobs::Checker;
use crate::config::{ConfigError, ConfigErrors};
use crate::model::Priority;

mod channel;
mod discord;
mod email;
mod rules;
mod slack;
mod webhook;

pub use channel::{Channel, ChannelKind, ChannelType};
pub use discord::DiscordChannel;
pub use email::{EmailChannel, Smtp, SmtpCredentials, SmtpTls, parse_mailbox};
pub use slack::{SLACK_API_URL, SlackChannel};
pub use webhook::WebhookChannel;

use channel::check_channel;
use rules::check_rule;

/// What [`Secret`] prints instead of its value.
pub const REDACTED: &str = "<redacted>";

/// A secret value (token, password, URL with a token in it). `Debug`, `Display`
/// and `Serialize` print [`REDACTED`]; [`Secret::expose`] is the only way to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for delivery only: never log or return it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// The validated `alerts.yaml`.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Rules, in file order.
    pub rules: Vec<Rule>,
}

impl AlertsConfig {
    /// The rules that route an `event` about `job` at `priority` (see [`Rule::matches`]).
    pub fn matching(&self, event: Event, job: Option<&str>, priority: Option<Priority>) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.matches(event, job, priority))
    }

    /// The channels `rule` delivers to: those it names that are enabled, in
    /// its order. A disabled channel is skipped (nothing is sent to it and
    /// nothing is recorded for it); a rule whose channels are all disabled
    /// delivers nothing.
    pub fn delivering_channels<'a>(&'a self, rule: &'a Rule) -> impl Iterator<Item = &'a Channel> + 'a {
        rule.channels
            .iter()
            .filter_map(|name| self.channels.get(name))
            .filter(|channel| channel.enabled)
    }
}

/// Parses and validates an `alerts.yaml` document (`path` is used in messages;
/// `env` resolves `${VAR}` references). All or nothing: every problem is
/// returned, sorted by line.
pub fn parse_alerts_yaml(
    path: &Path,
    text: &str,
    env: crate::config::env::Lookup<'_>,
) -> Result<AlertsConfig, ConfigErrors> {
    let mut c = Checker::new(path, text, env);
    let document: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(err) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: err.location().map(|l| l.line()),
                path: String::new(),
                message: format!("invalid YAML: {err}"),
            }]));
        }
    };
    let top = match document {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            c.error(&[], "expected a mapping with `channels` and `rules`");
            return Err(ConfigErrors(c.errors));
        }
    };

    let mut raw_channels: Vec<(String, Value)> = Vec::new();
    let mut raw_rules: Vec<Value> = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            Some("channels") => match value {
                Value::Null => {}
                Value::Mapping(channels) => {
                    for (name, channel) in channels {
                        match name.as_str() {
                            Some(name) => raw_channels.push((name.to_string(), channel)),
                            None => c.error(&["channels"], format!("channel names must be strings, found {name:?}")),
                        }
                    }
                }
                _ => c.error(&["channels"], "expected a mapping of channel name to definition"),
            },
            Some("rules") => match value {
                Value::Null => {}
                Value::Sequence(rules) => raw_rules = rules,
                _ => c.error(&["rules"], "expected a list of rules"),
            },
            Some(other) => {
                let other = other.to_string();
                c.error(
                    &[&other],
                    format!("unknown field `{other}`, expected `channels` or `rules`"),
                );
            }
            None => c.error(&[], format!("unexpected key {key:?}")),
        }
    }

    // Rules may name any channel defined, valid or not: an invalid channel is
    // reported once, where it is defined.
    let defined: BTreeSet<String> = raw_channels.iter().map(|(name, _)| name.clone()).collect();
    let mut channels = BTreeMap::new();
    for (name, value) in raw_channels {
        if let Some(channel) = check_channel(&mut c, &name, value) {
            channels.insert(name, channel);
        }
    }
    let mut rules: Vec<Rule> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (index, value) in raw_rules.into_iter().enumerate() {
        if let Some(rule) = check_rule(&mut c, index, value, &defined, &mut names) {
            rules.push(rule);
        }
    }

    if c.errors.is_empty() {
        Ok(AlertsConfig { channels, rules })
    } else {
        let mut errors = c.errors;
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(ConfigErrors(errors))
    }
}

/// Checks a channel or rule name against `[a-z0-9][a-z0-9._-]*`, at most
/// `alert_name_bytes` (a limit).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    let max = crate::limits::current().alert_name_bytes;
    if name.len() > max {
        Err(format!(
            "{what} name is {}",
            crate::limits::exceeds(format!("{} characters", name.len()), "alert_name_bytes", max)
        ))
    } else if !first_ok || !rest_ok {
        Err(format!(
            "invalid {what} name \"{}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            crate::limits::echo(name)
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
