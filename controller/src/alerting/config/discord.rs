//! Discord channels (`type: discord`): a webhook; its setting and its validation.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::channel::{ChannelKind, check_secret_url};
use crate::config::jobs::Checker;

/// A Discord channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscordChannel {
    /// The webhook's URL (it embeds a token).
    pub webhook_url: Secret,
}

/// `type: discord` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscord {
    webhook_url: String,
}

/// Checks `channels.NAME` of `type: discord`.
pub(super) fn check_discord(c: &mut Checker<'_>, name: &str, raw: RawDiscord) -> Option<ChannelKind> {
    check_secret_url(c, &["channels", name, "webhook_url"], &raw.webhook_url);
    Some(ChannelKind::Discord(DiscordChannel {
        webhook_url: Secret(raw.webhook_url),
    }))
}
