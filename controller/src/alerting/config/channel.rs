//! What every channel of `alerts.yaml` has, whatever its kind: its name, its
//! [`ChannelKind`] and its spec as written (shown only redacted), the check of
//! `channels.NAME` that reads the `type` and hands the settings to the kind's
//! own check, and the URL and secret checks the kinds share.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use super::discord::{DiscordChannel, RawDiscord, check_discord};
use super::email::{EmailChannel, RawEmail, check_email};
use super::slack::{RawSlack, SlackChannel, check_slack};
use super::webhook::{RawWebhook, WebhookChannel, check_webhook};
use super::{REDACTED, check_name};
use crate::config::jobs::Checker;
use crate::model::named_enum;

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
    /// `enabled` (default `true`): a disabled channel is kept (and shown,
    /// and may be tested) but rules deliver nothing to it; see
    /// [`super::AlertsConfig::delivering_channels`]. Not serialized (the
    /// spec shows it as written).
    #[serde(skip)]
    pub enabled: bool,
    /// Its mapping as written, `${VARS}` not interpolated. Use
    /// [`Channel::redacted_spec`] to show it.
    #[serde(skip)]
    pub spec: Mapping,
}

/// Key paths (inside a channel) of the values that are secrets.
const SECRET_KEYS: &[&[&str]] = &[&["webhook_url"], &["token"], &["secret"], &["smtp", "password"]];

/// Key paths (inside a channel) where `${VARS}` are interpolated: the secrets,
/// a webhook's `url` and the SMTP user name. Nowhere else (a `${...}` in a
/// subject or an address is text as written).
pub const INTERPOLATED_KEYS: &[&[&str]] = &[
    &["webhook_url"],
    &["token"],
    &["secret"],
    &["url"],
    &["smtp", "username"],
    &["smtp", "password"],
];

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
        if let Some(Value::String(url)) = spec.get_mut("url") {
            *url = redact_url(url);
        }
        spec
    }
}

/// A URL as it may be shown: a password in its user part and every query
/// value replaced by [`REDACTED`] (webhook URLs often carry a key there); a
/// whole `${VAR}` reference is kept.
pub fn redact_url(url: &str) -> String {
    if is_env_reference(url) {
        return url.to_string();
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut shown = base.to_string();
    if let Some(scheme_end) = shown.find("://") {
        let rest = &shown[scheme_end + 3..];
        let authority_len = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_len].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            shown.replace_range(start..scheme_end + 3 + at, REDACTED);
        }
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={REDACTED}"),
                None => pair.to_string(),
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    if fragment.is_some() {
        shown.push_str("#<redacted>");
    }
    shown
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("enabled", &self.enabled)
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
            ChannelKind::Webhook(_) => write!(f, "{} (webhook {})", self.name, redact_url(&written("url"))),
        }
    }
}

/// Whether `text` is exactly one `${NAME}` reference.
fn is_env_reference(text: &str) -> bool {
    text.strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .is_some_and(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// A channel's settings, by `type`.
enum RawChannel {
    Slack(RawSlack),
    Discord(RawDiscord),
    Email(RawEmail),
    Webhook(RawWebhook),
}

/// Checks `channels.NAME`: its name, its `type`, then its settings with the
/// check of its kind.
pub(super) fn check_channel(c: &mut Checker<'_>, name: &str, value: Value) -> Option<Channel> {
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
    let Value::Mapping(mut fields) = c.interpolate_fields(&base, &Value::Mapping(spec.clone()), INTERPOLATED_KEYS)
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
    let enabled = match fields.remove("enabled") {
        None => true,
        Some(Value::Bool(enabled)) => enabled,
        Some(_) => {
            c.error(&["channels", name, "enabled"], "expected a boolean");
            true
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
        RawChannel::Discord(raw) => check_discord(c, name, raw),
        RawChannel::Email(raw) => check_email(c, name, raw),
        RawChannel::Webhook(raw) => check_webhook(c, name, raw),
    }?;
    if c.errors.len() > errors_before {
        return None;
    }
    Some(Channel {
        name: name.to_string(),
        kind,
        enabled,
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

/// A secret must not be empty (an empty `${VAR}` is as good as none).
pub(super) fn check_secret(c: &mut Checker<'_>, path: &[&str], value: &str) {
    if value.trim().is_empty() {
        c.error(path, "is empty");
    }
}

/// A URL that is a secret: checked like [`check_url`], without quoting it.
pub(super) fn check_secret_url(c: &mut Checker<'_>, path: &[&str], value: &str) {
    if value.trim().is_empty() {
        c.error(path, "is empty");
    } else if let Err(e) = check_url(value) {
        c.error(path, format!("{e} (value not shown: it is a secret)"));
    }
}

/// An `https://` URL with a host; `http://` only to a loopback host. The error
/// does not quote the URL.
pub(super) fn check_url(url: &str) -> Result<(), String> {
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
    if let Some(why) = forbidden_host(host) {
        return Err(why);
    }
    if !https && !is_loopback(host) {
        return Err(
            "plain http:// is only allowed to a loopback host (localhost, 127.0.0.1, ::1); use https://".into(),
        );
    }
    Ok(())
}

/// Why alerts may not go to `host`: a link-local address (169.254.0.0/16,
/// fe80::/10, where clouds serve instance metadata and credentials), an
/// unspecified, broadcast or multicast address, or an IPv4 address written
/// in another form than four decimal numbers (`2852039166`, `0xa9fea9fe`),
/// which would slip past these checks. A name that resolves to such an
/// address is not caught here (names are resolved at delivery).
fn forbidden_host(host: &str) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let last = host.rsplit('.').next().unwrap_or_default();
            let numeric = !last.is_empty()
                && (last.chars().all(|c| c.is_ascii_digit())
                    || last
                        .strip_prefix("0x")
                        .or_else(|| last.strip_prefix("0X"))
                        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit())));
            return numeric.then(|| "write an IPv4 address as four decimal numbers (a.b.c.d)".to_string());
        }
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let refused = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.is_unspecified() || v6.is_multicast(),
    };
    refused.then(|| {
        "the host is a link-local, unspecified, broadcast or multicast address (cloud metadata lives          at 169.254.169.254): alerts may not be sent there"
            .to_string()
    })
}

/// `localhost`, 127.0.0.0/8 or ::1 (with or without brackets).
pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
