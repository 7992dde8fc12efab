//! Which answers count as success and which failures may be retried:
//! `expect_status` and `retry_on` of an `http` job, and `Retry-After`.
//!
//! A pattern is a code (`204`), a class (`2xx`) or a range (`500-504`);
//! `retry_on` also takes `network` (no answer: connect, TLS, reset, request
//! timeout). Patterns are matched case-insensitively (`5XX`).

use std::time::{Duration, SystemTime};

/// `expect_status` when the job gives none.
pub const DEFAULT_EXPECT: &[&str] = &["2xx"];
/// `retry_on` when the job gives none.
pub const DEFAULT_RETRY_ON: &[&str] = &["408", "429", "5xx", "network"];

/// A parsed `expect_status` or `retry_on` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet {
    /// Codes `from..=to` (a code is a range of one; `5xx` is `500..=599`).
    patterns: Vec<(u16, u16)>,
    /// `network` is in the list.
    network: bool,
}

impl StatusSet {
    /// Parses `items` (or `default` when empty); `network` is accepted only
    /// when `allow_network`. The error names the bad item and says what is
    /// expected.
    pub fn parse(items: &[String], default: &[&str], allow_network: bool) -> Result<StatusSet, String> {
        let mut set = StatusSet {
            patterns: Vec::new(),
            network: false,
        };
        let items: Vec<String> = if items.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            items.to_vec()
        };
        for item in &items {
            let text = item.trim().to_ascii_lowercase();
            if allow_network && text == "network" {
                set.network = true;
                continue;
            }
            match pattern(&text) {
                Some(p) => set.patterns.push(p),
                None => {
                    let also = if allow_network { ", or `network`" } else { "" };
                    return Err(format!(
                        "\"{item}\" is not a status: expected a code (404), a class (5xx) or a range (500-504){also}"
                    ));
                }
            }
        }
        Ok(set)
    }

    /// Whether `status` matches a pattern of the set.
    pub fn matches(&self, status: u16) -> bool {
        self.patterns.iter().any(|(from, to)| (*from..=*to).contains(&status))
    }

    /// Whether `network` is in the set.
    pub fn network(&self) -> bool {
        self.network
    }
}

/// A code `100..=599`, a class `1xx`..`5xx`, or a range `A-B` with `A <= B`.
fn pattern(text: &str) -> Option<(u16, u16)> {
    let code = |s: &str| {
        (s.len() == 3)
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=599).contains(c))
    };
    if let Some(class) = text.strip_suffix("xx") {
        let digit = class
            .parse::<u16>()
            .ok()
            .filter(|d| (1..=5).contains(d) && class.len() == 1)?;
        return Some((digit * 100, digit * 100 + 99));
    }
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            (a <= b).then_some((a, b))
        }
        None => code(text).map(|c| (c, c)),
    }
}

/// The wait a `Retry-After` value asks for, seen at `now`: delay-seconds
/// (`120`) or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`; a date in the
/// past asks for no wait). `None` when the value is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is a very long wait; the controller caps it.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str], network: bool) -> Result<StatusSet, String> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        StatusSet::parse(&items, DEFAULT_RETRY_ON, network)
    }

    #[test]
    fn codes_classes_and_ranges_match() {
        let s = set(&["204", "3XX", "500-503"], false).unwrap();
        for hit in [204, 300, 301, 399, 500, 503] {
            assert!(s.matches(hit), "{hit}");
        }
        for miss in [200, 205, 400, 504, 599] {
            assert!(!s.matches(miss), "{miss}");
        }
        assert!(!s.network());
    }

    #[test]
    fn defaults_apply_to_an_empty_list() {
        let expect = StatusSet::parse(&[], DEFAULT_EXPECT, false).unwrap();
        assert!(expect.matches(200) && expect.matches(299) && !expect.matches(301));
        let retry = set(&[], true).unwrap();
        assert!(retry.network());
        for code in [408, 429, 500, 503, 599] {
            assert!(retry.matches(code), "{code}");
        }
        for code in [400, 401, 404, 409] {
            assert!(!retry.matches(code), "{code}");
        }
        // A list without `network` turns network retries off.
        assert!(!set(&["5xx"], true).unwrap().network());
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        for bad in ["20", "600", "6xx", "0xx", "204-200", "abc", "", "10xx"] {
            let err = set(&[bad], true).unwrap_err();
            assert!(err.starts_with(&format!("\"{bad}\" is not a status")), "{bad}: {err}");
        }
        let err = set(&["network"], false).unwrap_err();
        assert!(!err.contains("`network`"), "{err}");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("1.5", now), None);
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
