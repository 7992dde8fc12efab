//! Generic webhook channels (`type: webhook`): a JSON POST signed with
//! HMAC-SHA256; their settings and their validation.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::channel::{ChannelKind, check_secret, check_url};
use crate::config::jobs::Checker;

/// A generic webhook channel: a JSON POST with an HMAC-SHA256 signature header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookChannel {
    /// Where to POST.
    pub url: String,
    /// The key of the HMAC-SHA256 signature of the body.
    pub secret: Secret,
}

/// `type: webhook` without its `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: String,
    secret: String,
}

/// Checks `channels.NAME` of `type: webhook`.
pub(super) fn check_webhook(c: &mut Checker<'_>, name: &str, raw: RawWebhook) -> Option<ChannelKind> {
    if let Err(e) = check_url(&raw.url) {
        c.error(&["channels", name, "url"], format!("\"{}\": {e}", raw.url));
    }
    check_secret(c, &["channels", name, "secret"], &raw.secret);
    Some(ChannelKind::Webhook(WebhookChannel {
        url: raw.url,
        secret: Secret(raw.secret),
    }))
}
