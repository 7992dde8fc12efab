//! Generic webhook channels (`type: webhook`): a JSON POST signed with
//! HMAC-SHA256; their settings and their validation.

use serde::{Deserialize, Serialize};

use super::Secret;
use super::channel::{ChannelKind, check_secret, check_url, redact_url};
use crate::config::jobs::Checker;

/// A generic webhook channel: a JSON POST with an HMAC-SHA256 signature header.
/// `Debug` and `Serialize` show its URL without keys ([`redact_url`]).
#[derive(Clone, PartialEq, Serialize)]
pub struct WebhookChannel {
    /// Where to POST (it may carry a key in its query or user part).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// The key of the HMAC-SHA256 signature of the body.
    pub secret: Secret,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .finish()
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
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
