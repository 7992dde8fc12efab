//! Cron expressions evaluated in an IANA time zone.
//!
//! Parsing and matching is done by `croner` (5 fields, or 6 with a leading seconds
//! field; `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; names, ranges,
//! steps, lists). Fire times are computed in the schedule's zone and returned in
//! UTC.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A validated cron expression with its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.expr, self.tz)
    }
}

impl CronSchedule {
    /// Parses `expr`; the error says what is wrong with it.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, String> {
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression \"{expr}\": expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found {fields}"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(trimmed)
            .map_err(|e| format!("invalid cron expression \"{expr}\": {e}"))?;
        Ok(CronSchedule {
            expr: trimmed.to_string(),
            cron,
            tz,
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone the expression is evaluated in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first fire strictly after `after`, if there is one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Fires in `(after, until]`, at most `limit` of the latest ones, oldest first,
    /// and the total count of fires in that period.
    pub fn fires_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> (Vec<DateTime<Utc>>, u64) {
        let mut kept = std::collections::VecDeque::new();
        let mut count = 0u64;
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor) {
            if next > until {
                break;
            }
            count += 1;
            kept.push_back(next);
            if kept.len() > limit {
                kept.pop_front();
            }
            cursor = next;
        }
        (kept.into_iter().collect(), count)
    }
}

/// Parses an IANA zone name with a clear error.
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone \"{name}\" (expected an IANA name such as Europe/Berlin or UTC)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seconds_field_and_zone() {
        let tz = parse_tz("Asia/Kolkata").unwrap();
        let s = CronSchedule::parse("30 15 10 * * *", tz).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        // 10:15:30 in Kolkata (+05:30) is 04:45:30 UTC.
        assert_eq!(
            s.next_after(after).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 4, 45, 30).unwrap()
        );
    }

    #[test]
    fn names_and_macros() {
        let utc = parse_tz("UTC").unwrap();
        assert!(CronSchedule::parse("0 9 * JAN-MAR MON-FRI", utc).is_ok());
        assert!(CronSchedule::parse("@hourly", utc).is_ok());
        let daily = CronSchedule::parse("@daily", utc).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 1, 5, 0, 0).unwrap();
        assert_eq!(
            daily.next_after(after).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        let utc = parse_tz("UTC").unwrap();
        assert!(
            CronSchedule::parse("61 * * * *", utc)
                .unwrap_err()
                .contains("invalid cron expression")
        );
        assert!(CronSchedule::parse("* * *", utc).unwrap_err().contains("found 3"));
        assert!(parse_tz("Mars/Olympus").unwrap_err().contains("unknown time zone"));
    }

    #[test]
    fn fires_between_keeps_latest() {
        let utc = parse_tz("UTC").unwrap();
        let s = CronSchedule::parse("* * * * *", utc).unwrap();
        let a = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let (kept, count) = s.fires_between(a, a + chrono::Duration::minutes(10), 3);
        assert_eq!(count, 10);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[2], a + chrono::Duration::minutes(10));
    }
}
