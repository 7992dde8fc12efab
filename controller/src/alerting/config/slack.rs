//! Slack channels (`type: slack`): an incoming webhook, or a bot token posting
//! with `chat.postMessage`; their settings and their validation.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::channel::{ChannelKind, check_secret, check_secret_url, check_url};
use crate::config::jobs::Checker;

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

/// `type: slack` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlack {
    webhook_url: Option<String>,
    token: Option<String>,
    channel: Option<String>,
    api_url: Option<String>,
}

/// Checks `channels.NAME` of `type: slack`: `webhook_url` alone, or `token`
/// with `channel` (and optionally `api_url`).
pub(super) fn check_slack(c: &mut Checker<'_>, name: &str, raw: RawSlack) -> Option<ChannelKind> {
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
