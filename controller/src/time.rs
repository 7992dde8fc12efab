//! Wall-clock helpers: the store keeps Unix milliseconds, the API RFC 3339 UTC.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds (`2026-11-29T06:43:30.123Z`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// [`rfc3339`] of an optional timestamp; empty when unset.
pub fn rfc3339_opt(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}
