//! `alerts.yaml`: the serde shapes of channels and rules, and their validation
//! into an [`AlertsConfig`], collecting every error with its location the way
//! [`crate::config::jobs`] does (and with its checker).
//!
//! Values are interpolated (`${VAR}`) before validation; the uninterpolated
//! mapping of each channel and rule is kept as its `spec`. Secret values
//! (webhook URLs of Slack and Discord, the Slack bot token, the SMTP password,
//! the webhook signing secret) are held in [`Secret`], which never prints or
//! serializes its value, and no error message quotes them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_yaml_ng::{Mapping, Value};

use super::rules::{Event, EventParams, Glob, Rule};
use crate::config::jobs::Checker;
use crate::config::{ConfigError, ConfigErrors};
use crate::model::{Priority, named_enum};

/// Longest channel or rule name.
pub const MAX_NAME: usize = 64;

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

named_enum!(
    /// The `type` of a channel.
    ChannelType, "channel type" {
        /// Slack, by incoming webhook or bot token.
        Slack => "slack",
        /// Discord, by webhook.
        Discord => "discord",
        /// Email over SMTP.
        Email => "email",
        /// A JSON POST signed with HMAC-SHA256.
        Webhook => "webhook",
    }
);

named_enum!(
    /// How the SMTP connection is secured.
    SmtpTls, "tls mode" {
        /// Plain connection upgraded with STARTTLS (the default; port 587).
        Starttls => "starttls",
        /// TLS from the first byte (port 465).
        Tls => "tls",
        /// No TLS at all (port 25): only to a loopback host.
        Plain => "none",
    }
);

impl SmtpTls {
    /// The port used when `port` is not set.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::Plain => 25,
        }
    }
}

/// A Slack channel: an incoming webhook, or a bot token posting with
/// `chat.postMessage` to a channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SlackChannel {
    /// `webhook_url`.
    Webhook {
        /// The incoming webhook's URL (it embeds a token).
        webhook_url: Secret,
    },
    /// `token` and `channel` (and optionally `api_url`).
    Bot {
        /// The bot token (`xoxb-…`).
        token: Secret,
        /// The channel name or ID to post to.
        channel: String,
        /// The Web API's base URL, [`SLACK_API_URL`] unless set (`api_url`, for
        /// a proxy or a test receiver); `chat.postMessage` is appended to it.
        #[serde(skip_serializing_if = "is_default_slack_api")]
        api_url: String,
    },
}

/// The Slack Web API a bot posts to when `api_url` is not set.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// Whether `url` is [`SLACK_API_URL`] (it is then left out of serializations).
fn is_default_slack_api(url: &str) -> bool {
    url == SLACK_API_URL
}

/// A Discord channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscordChannel {
    /// The webhook's URL (it embeds a token).
    pub webhook_url: Secret,
}

/// SMTP user name and password.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmtpCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// The SMTP server of an email channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Smtp {
    /// Host name or address.
    pub host: String,
    /// Port ([`SmtpTls::default_port`] when not set).
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// Credentials, when the server wants them.
    pub credentials: Option<SmtpCredentials>,
}

/// An email channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmailChannel {
    /// The SMTP server.
    pub smtp: Smtp,
    /// The sender (`addr@host` or `Name <addr@host>`).
    pub from: String,
    /// The recipients (at least one, same forms).
    pub to: Vec<String>,
}

/// A generic webhook channel: a JSON POST with an HMAC-SHA256 signature header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookChannel {
    /// Where to POST.
    pub url: String,
    /// The key of the HMAC-SHA256 signature of the body.
    pub secret: Secret,
}

/// Where and how a channel delivers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelKind {
    /// `type: slack`.
    Slack(SlackChannel),
    /// `type: discord`.
    Discord(DiscordChannel),
    /// `type: email`.
    Email(EmailChannel),
    /// `type: webhook`.
    Webhook(WebhookChannel),
}

impl ChannelKind {
    /// The channel's `type`.
    pub fn channel_type(&self) -> ChannelType {
        match self {
            ChannelKind::Slack(_) => ChannelType::Slack,
            ChannelKind::Discord(_) => ChannelType::Discord,
            ChannelKind::Email(_) => ChannelType::Email,
            ChannelKind::Webhook(_) => ChannelType::Webhook,
        }
    }
}

/// One validated channel of `alerts.yaml`. `Debug`, `Display` and `Serialize`
/// never show a secret (the spec in `Debug` output is [`Channel::redacted_spec`]).
#[derive(Clone, PartialEq, Serialize)]
pub struct Channel {
    /// Its name, as rules refer to it.
    pub name: String,
    /// Where and how it delivers (secrets interpolated).
    #[serde(flatten)]
    pub kind: ChannelKind,
    /// Its mapping as written, `${VARS}` not interpolated. Use
    /// [`Channel::redacted_spec`] to show it.
    #[serde(skip)]
    pub spec: Mapping,
}

/// Key paths (inside a channel) of the values that are secrets.
const SECRET_KEYS: &[&[&str]] = &[&["webhook_url"], &["token"], &["secret"], &["smtp", "password"]];

impl Channel {
    /// The spec with every secret value that is written out (not a whole
    /// `${VAR}` reference) replaced by [`REDACTED`]: what may be shown or exported.
    pub fn redacted_spec(&self) -> Mapping {
        let mut spec = self.spec.clone();
        for path in SECRET_KEYS {
            let (last, parents) = path.split_last().expect("non-empty path");
            let mut node = Some(&mut spec);
            for key in parents {
                node = match node.and_then(|m| m.get_mut(*key)) {
                    Some(Value::Mapping(m)) => Some(m),
                    _ => None,
                };
            }
            if let Some(value) = node.and_then(|m| m.get_mut(*last))
                && !value.as_str().is_some_and(is_env_reference)
            {
                *value = Value::String(REDACTED.into());
            }
        }
        spec
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("spec", &self.redacted_spec())
            .finish()
    }
}

/// Shows where the channel delivers from its spec as written, so that a value
/// that came from an environment variable shows as its `${VAR}` reference,
/// never as the value (a URL may carry a key in its query).
impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let written = |key: &str| self.spec.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
        match &self.kind {
            ChannelKind::Slack(SlackChannel::Webhook { .. }) => write!(f, "{} (slack webhook)", self.name),
            ChannelKind::Slack(SlackChannel::Bot { .. }) => write!(f, "{} (slack {})", self.name, written("channel")),
            ChannelKind::Discord(_) => write!(f, "{} (discord webhook)", self.name),
            ChannelKind::Email(_) => {
                let to: Vec<&str> = match self.spec.get("to") {
                    Some(Value::Sequence(list)) => list.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                write!(f, "{} (email to {})", self.name, to.join(", "))
            }
            ChannelKind::Webhook(_) => write!(f, "{} (webhook {})", self.name, written("url")),
        }
    }
}

/// Whether `text` is exactly one `${NAME}` reference.
fn is_env_reference(text: &str) -> bool {
    text.strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
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
}

/// `type: slack` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    webhook_url: Option<String>,
    token: Option<String>,
    channel: Option<String>,
    api_url: Option<String>,
}

/// `type: discord` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    webhook_url: String,
}

/// `type: email` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp: RawSmtp,
    from: String,
    to: Vec<String>,
}

/// `smtp:` of an email channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// `type: webhook` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: String,
}

/// A channel's settings, by `type`.
enum RawChannel {
    Slack(RawSlack),
    Discord(RawDiscord),
    Email(RawEmail),
    Webhook(RawWebhook),
}

/// One item of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    event: String,
    jobs: Option<String>,
    min_priority: Option<String>,
    channels: Vec<String>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    throttle: Option<String>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    threshold: Option<String>,
    count: Option<u32>,
    max_depth: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::raw::duration_text")]
    max_wait: Option<String>,
    priority: Option<String>,
}

/// Parses and validates an `alerts.yaml` document (`path` is used in messages;
/// `env` resolves `${VAR}` references). All or nothing: every problem is
/// returned, sorted by line.
pub fn parse_alerts_yaml(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
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

/// Checks a channel or rule name against `[a-z0-9][a-z0-9._-]*`, at most [`MAX_NAME`].
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > MAX_NAME {
        Err(format!(
            "{what} name is {} characters, the limit is {MAX_NAME}",
            name.len()
        ))
    } else if !first_ok || !rest_ok {
        Err(format!(
            "invalid {what} name \"{name}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

fn check_channel(c: &mut Checker<'_>, name: &str, value: Value) -> Option<Channel> {
    let base = ["channels", name];
    if let Err(e) = check_name("channel", name) {
        c.error(&base, e);
        return None;
    }
    let Value::Mapping(spec) = value else {
        c.error(&base, "expected a mapping with the channel's `type` and settings");
        return None;
    };
    let errors_before = c.errors.len();
    let Value::Mapping(mut fields) =
        c.interpolate(&mut vec!["channels".into(), name.into()], &Value::Mapping(spec.clone()))
    else {
        unreachable!("interpolating a mapping yields a mapping");
    };
    let channel_type = match fields.remove("type") {
        None => {
            c.error(&base, format!("missing field `type` (one of: {})", channel_types()));
            return None;
        }
        Some(Value::String(t)) => match t.parse::<ChannelType>() {
            Ok(t) => t,
            Err(e) => {
                c.error(&["channels", name, "type"], e);
                return None;
            }
        },
        Some(_) => {
            c.error(
                &["channels", name, "type"],
                format!("expected one of: {}", channel_types()),
            );
            return None;
        }
    };
    let fields = Value::Mapping(fields);
    let raw = match channel_type {
        ChannelType::Slack => RawChannel::Slack(c.deserialize(&base, fields)?),
        ChannelType::Discord => RawChannel::Discord(c.deserialize(&base, fields)?),
        ChannelType::Email => RawChannel::Email(c.deserialize(&base, fields)?),
        ChannelType::Webhook => RawChannel::Webhook(c.deserialize(&base, fields)?),
    };
    if c.errors.len() > errors_before {
        return None; // an unset variable: its value would only cause more errors
    }
    let kind = match raw {
        RawChannel::Slack(raw) => check_slack(c, name, raw),
        RawChannel::Discord(raw) => {
            check_secret_url(c, &["channels", name, "webhook_url"], &raw.webhook_url);
            Some(ChannelKind::Discord(DiscordChannel {
                webhook_url: Secret(raw.webhook_url),
            }))
        }
        RawChannel::Email(raw) => check_email(c, name, raw),
        RawChannel::Webhook(raw) => {
            if let Err(e) = check_url(&raw.url) {
                c.error(&["channels", name, "url"], format!("\"{}\": {e}", raw.url));
            }
            check_secret(c, &["channels", name, "secret"], &raw.secret);
            Some(ChannelKind::Webhook(WebhookChannel {
                url: raw.url,
                secret: Secret(raw.secret),
            }))
        }
    }?;
    if c.errors.len() > errors_before {
        return None;
    }
    Some(Channel {
        name: name.to_string(),
        kind,
        spec,
    })
}

/// `slack, discord, email, webhook`.
fn channel_types() -> String {
    ChannelType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_slack(c: &mut Checker<'_>, name: &str, raw: RawSlack) -> Option<ChannelKind> {
    let at = |field: &'static str| -> [&str; 3] { ["channels", name, field] };
    if let Some(api_url) = &raw.api_url {
        if raw.token.is_none() {
            c.error(
                &at("api_url"),
                "`api_url` is for a bot: it needs a `token` (an incoming webhook posts to its `webhook_url`)",
            );
            return None;
        }
        if let Err(e) = check_url(api_url) {
            c.error(&at("api_url"), format!("\"{api_url}\": {e}"));
        }
    }
    match (raw.webhook_url, raw.token, raw.channel) {
        (Some(url), None, None) => {
            check_secret_url(c, &at("webhook_url"), &url);
            Some(ChannelKind::Slack(SlackChannel::Webhook {
                webhook_url: Secret(url),
            }))
        }
        (None, Some(token), Some(channel)) => {
            check_secret(c, &at("token"), &token);
            if channel.trim().is_empty() {
                c.error(&at("channel"), "is empty");
            }
            Some(ChannelKind::Slack(SlackChannel::Bot {
                token: Secret(token),
                channel,
                api_url: raw
                    .api_url
                    .map(|url| url.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| SLACK_API_URL.to_string()),
            }))
        }
        (Some(_), token, channel) if token.is_some() || channel.is_some() => {
            let other = if token.is_some() { "token" } else { "channel" };
            c.error(
                &at(other),
                format!("`{other}` is for a bot; use either `webhook_url` or `token` with `channel`"),
            );
            None
        }
        (None, Some(_), None) => {
            c.error(&at("token"), "a bot `token` needs a `channel` to post to");
            None
        }
        (None, None, Some(_)) => {
            c.error(
                &at("channel"),
                "`channel` needs a bot `token` (or use `webhook_url` instead)",
            );
            None
        }
        _ => {
            c.error(
                &["channels", name],
                "missing `webhook_url` (incoming webhook) or `token` and `channel` (bot)",
            );
            None
        }
    }
}

fn check_email(c: &mut Checker<'_>, name: &str, raw: RawEmail) -> Option<ChannelKind> {
    let smtp_at = |field: &'static str| -> [&str; 4] { ["channels", name, "smtp", field] };
    let host = raw.smtp.host.trim().to_string();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        c.error(&smtp_at("host"), format!("invalid host \"{}\"", raw.smtp.host));
    }
    let tls = c
        .parse(&smtp_at("tls"), raw.smtp.tls.as_deref(), |s| s.parse::<SmtpTls>())
        .unwrap_or(SmtpTls::Starttls);
    if tls == SmtpTls::Plain && !is_loopback(&host) {
        c.error(
            &smtp_at("tls"),
            format!(
                "`tls: none` sends credentials and mail in clear text: it is only allowed to a loopback host \
                 (localhost, 127.0.0.1, ::1), not \"{host}\""
            ),
        );
    }
    if raw.smtp.port == Some(0) {
        c.error(&smtp_at("port"), "must be between 1 and 65535");
    }
    let credentials = match (raw.smtp.username, raw.smtp.password) {
        (Some(username), Some(password)) => {
            if username.is_empty() {
                c.error(&smtp_at("username"), "is empty");
            }
            check_secret(c, &smtp_at("password"), &password);
            Some(SmtpCredentials {
                username,
                password: Secret(password),
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            c.error(&smtp_at("username"), "a `username` needs a `password`");
            None
        }
        (None, Some(_)) => {
            c.error(&smtp_at("password"), "a `password` needs a `username`");
            None
        }
    };
    if let Err(e) = check_address(&raw.from) {
        c.error(&["channels", name, "from"], e);
    }
    if raw.to.is_empty() {
        c.error(&["channels", name, "to"], "needs at least one recipient");
    }
    let mut seen = BTreeSet::new();
    for (index, address) in raw.to.iter().enumerate() {
        let item = format!("[{index}]");
        if let Err(e) = check_address(address) {
            c.error(&["channels", name, "to", &item], e);
        } else if !seen.insert(address.as_str()) {
            c.error(
                &["channels", name, "to", &item],
                format!("\"{address}\" is listed twice"),
            );
        }
    }
    Some(ChannelKind::Email(EmailChannel {
        smtp: Smtp {
            port: raw.smtp.port.unwrap_or(tls.default_port()),
            host,
            tls,
            credentials,
        },
        from: raw.from,
        to: raw.to,
    }))
}

/// A secret must not be empty (an empty `${VAR}` is as good as none).
fn check_secret(c: &mut Checker<'_>, path: &[&str], value: &str) {
    if value.trim().is_empty() {
        c.error(path, "is empty");
    }
}

/// A URL that is a secret: checked like [`check_url`], without quoting it.
fn check_secret_url(c: &mut Checker<'_>, path: &[&str], value: &str) {
    if value.trim().is_empty() {
        c.error(path, "is empty");
    } else if let Err(e) = check_url(value) {
        c.error(path, format!("{e} (value not shown: it is a secret)"));
    }
}

/// An `https://` URL with a host; `http://` only to a loopback host. The error
/// does not quote the URL.
fn check_url(url: &str) -> Result<(), String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("expected an https:// URL".into());
    };
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("a URL cannot contain spaces".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !https && !is_loopback(host) {
        return Err(
            "plain http:// is only allowed to a loopback host (localhost, 127.0.0.1, ::1); use https://".into(),
        );
    }
    Ok(())
}

/// `localhost`, 127.0.0.0/8 or ::1 (with or without brackets).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A mail address, `local@domain` or `Display Name <local@domain>`.
fn check_address(text: &str) -> Result<(), String> {
    parse_mailbox(text).map(|_| ())
}

/// Parses a mail address (`local@domain` or `Display Name <local@domain>`)
/// the way delivery uses it: its form is checked first (with a precise
/// reason), then lettre must read the same address from it. Address literals
/// (`root@[127.0.0.1]`), which lettre's mailbox parser does not take, are
/// built from their parts. Errors read `invalid email address "TEXT": why`.
pub fn parse_mailbox(text: &str) -> Result<lettre::message::Mailbox, String> {
    use lettre::message::Mailbox;
    let address = check_address_form(text)?;
    let invalid = |why: &str| format!("invalid email address \"{text}\": {why}");
    match text.trim().parse::<Mailbox>() {
        Ok(mailbox) if mailbox.email.to_string().eq_ignore_ascii_case(address) => Ok(mailbox),
        Ok(mailbox) => Err(invalid(&format!(
            "read as <{}>; quote the display name (\"Name\" <local@domain>)",
            mailbox.email
        ))),
        Err(e) => {
            let hint = "use `local@domain` or `Display Name <local@domain>`, quoting a name with commas or dots";
            let refused = || invalid(&format!("{} ({hint})", e.to_string().to_lowercase()));
            let (user, domain) = address.rsplit_once('@').ok_or_else(refused)?;
            if !domain.starts_with('[') {
                return Err(refused());
            }
            let email = lettre::Address::new(user, domain).map_err(|_| refused())?;
            let name = text
                .trim()
                .strip_suffix('>')
                .and_then(|rest| rest.rsplit_once('<'))
                .map(|(name, _)| name.trim().trim_matches('"').trim().to_string())
                .filter(|name| !name.is_empty());
            Ok(Mailbox::new(name, email))
        }
    }
}

/// The form of a mail address (`local@domain` or `Display Name <local@domain>`),
/// with a precise reason when it is wrong; the address part on success.
fn check_address_form(text: &str) -> Result<&str, String> {
    let invalid = |why: &str| format!("invalid email address \"{text}\": {why}");
    if text.contains(|c: char| c.is_control()) {
        return Err(invalid("control characters are not allowed"));
    }
    let trimmed = text.trim();
    let address = match trimmed.strip_suffix('>') {
        Some(rest) => {
            let (name, address) = rest.rsplit_once('<').ok_or_else(|| invalid("unbalanced `<` `>`"))?;
            if name.contains(['<', '>']) {
                return Err(invalid("unbalanced `<` `>`"));
            }
            address
        }
        None => trimmed,
    };
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or_else(|| invalid("expected local-part@domain"))?;
    const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    if local.is_empty()
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
    {
        return Err(invalid("bad local part (before the @)"));
    }
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return ip
            .parse::<IpAddr>()
            .map(|_| address)
            .map_err(|_| invalid("bad address literal"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(invalid(
            "bad domain (after the @; use the punycode form of international names)",
        ));
    }
    Ok(address)
}

/// Checks `rules[index]`; `names` collects the rule names seen so far (index by name).
fn check_rule(
    c: &mut Checker<'_>,
    index: usize,
    value: Value,
    channels: &BTreeSet<String>,
    names: &mut BTreeMap<String, usize>,
) -> Option<Rule> {
    let item = format!("[{index}]");
    let item = item.as_str();
    let base = ["rules", item];
    let Value::Mapping(spec) = value else {
        c.error(
            &base,
            "expected a mapping with the rule's `name`, `event` and `channels`",
        );
        return None;
    };
    let errors_before = c.errors.len();
    let interpolated = c.interpolate(&mut vec!["rules".into(), item.into()], &Value::Mapping(spec.clone()));
    let raw: RawRule = c.deserialize(&base, interpolated)?;
    if c.errors.len() > errors_before {
        return None; // an unset variable: its value would only cause more errors
    }
    let at = |field: &'static str| -> [&str; 3] { ["rules", item, field] };

    if let Err(e) = check_name("rule", &raw.name) {
        c.error(&at("name"), e);
    } else if let Some(first) = names.get(&raw.name) {
        c.error(
            &at("name"),
            format!("rule name \"{}\" is already used by rules[{first}]", raw.name),
        );
    } else {
        names.insert(raw.name.clone(), index);
    }
    let event = c.parse(&at("event"), Some(&raw.event), |s| s.parse::<Event>());
    let jobs = c.parse(&at("jobs"), raw.jobs.as_deref(), Glob::new).unwrap_or_default();
    let min_priority = c
        .parse(&at("min_priority"), raw.min_priority.as_deref(), |s| {
            s.parse::<Priority>()
        })
        .unwrap_or(Priority::Low);
    let throttle = c
        .parse(&at("throttle"), raw.throttle.as_deref(), worker_duration::parse)
        .unwrap_or(Duration::ZERO);
    let threshold = c.parse(&at("threshold"), raw.threshold.as_deref(), positive_duration);
    let max_wait = c.parse(&at("max_wait"), raw.max_wait.as_deref(), positive_duration);
    let queue = c.parse(&at("priority"), raw.priority.as_deref(), |s| s.parse::<Priority>());

    if raw.channels.is_empty() {
        c.error(&at("channels"), "needs at least one channel");
    }
    let mut seen = BTreeSet::new();
    for (index, channel) in raw.channels.iter().enumerate() {
        let index = format!("[{index}]");
        let path = ["rules", item, "channels", &index];
        if !channels.contains(channel) {
            let known = if channels.is_empty() {
                "no channels are defined".to_string()
            } else {
                format!("defined: {}", channels.iter().cloned().collect::<Vec<_>>().join(", "))
            };
            c.error(&path, format!("unknown channel \"{channel}\" ({known})"));
        } else if !seen.insert(channel) {
            c.error(&path, format!("\"{channel}\" is listed twice"));
        }
    }
    if raw.count == Some(0) || raw.count == Some(1) {
        c.error(
            &at("count"),
            "must be at least 2 (use `event: run_failed` to alert on every failure)",
        );
    }
    if raw.max_depth == Some(0) {
        c.error(&at("max_depth"), "must be at least 1");
    }

    // Parameters belong to one event; the event decides which are required.
    let event = event?;
    let set = [
        ("threshold", raw.threshold.is_some(), Event::RunSlow),
        ("count", raw.count.is_some(), Event::ConsecutiveFailures),
        ("max_depth", raw.max_depth.is_some(), Event::QueueBacklog),
        ("max_wait", raw.max_wait.is_some(), Event::QueueBacklog),
        ("priority", raw.priority.is_some(), Event::QueueBacklog),
    ];
    for (field, present, owner) in set {
        if present && event != owner {
            c.error(
                &["rules", item, field],
                format!("`{field}` only applies to `{owner}` rules, not `{event}`"),
            );
        }
    }
    if !event.is_about_a_job() && !jobs.matches_all() {
        c.error(&at("jobs"), format!("`{event}` is not about a job: leave `jobs` out"));
    }
    if !event.has_priority() && min_priority != Priority::Low {
        c.error(
            &at("min_priority"),
            format!("`{event}` has no priority: leave `min_priority` out"),
        );
    }
    let params = match event {
        Event::RunSlow => match threshold {
            Some(threshold) => EventParams::RunSlow { threshold },
            None => {
                if raw.threshold.is_none() {
                    c.error(&base, "`run_slow` needs a `threshold` (how long is too long, e.g. 10m)");
                }
                EventParams::None
            }
        },
        Event::ConsecutiveFailures => match raw.count {
            Some(count) => EventParams::ConsecutiveFailures { count },
            None => {
                c.error(
                    &base,
                    "`consecutive_failures` needs a `count` (failures in a row, at least 2)",
                );
                EventParams::None
            }
        },
        Event::QueueBacklog => {
            if raw.max_depth.is_none() && raw.max_wait.is_none() {
                c.error(
                    &base,
                    "`queue_backlog` needs `max_depth` (queued runs) and/or `max_wait` (oldest wait, e.g. 5m)",
                );
            }
            EventParams::QueueBacklog {
                max_depth: raw.max_depth,
                max_wait,
                priority: queue,
            }
        }
        _ => EventParams::None,
    };

    if c.errors.len() > errors_before {
        return None;
    }
    Some(Rule {
        name: raw.name,
        event,
        jobs,
        min_priority,
        channels: raw.channels,
        throttle,
        params,
        spec,
    })
}

/// A duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = worker_duration::parse(text).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
