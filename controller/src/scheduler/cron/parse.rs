//! Parsing of cron expressions into per-field bit masks, and the field-wise search
//! for the next matching local (wall-clock) date-time.
//!
//! Nothing here knows about time zones: a [`Fields`] value answers "which local
//! date-times match", and [`super::CronSchedule`] maps those to instants.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

/// Bit mask of the hour field when every hour matches.
pub(super) const ALL_HOURS: u32 = (1 << 24) - 1;

/// Upper bound of steps of one [`Fields::next_match`] call. Every step either
/// returns, moves to a later day or month, or carries one unit upwards, so 400
/// years (146,097 days) plus the carries of the first day fit comfortably.
const MAX_SEARCH_STEPS: u32 = 400_000;

/// The six fields of a cron expression as bit masks (bit `n` set = value `n`
/// matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fields {
    /// Seconds 0-59 (`0` only when the expression has 5 fields).
    pub second: u64,
    /// Minutes 0-59.
    pub minute: u64,
    /// Hours 0-23.
    pub hour: u32,
    /// Days of the month 1-31.
    pub dom: u32,
    /// Months 1-12.
    pub month: u32,
    /// Days of the week 0-6, Sunday = 0 (a written 7 is folded into 0).
    pub dow: u32,
    /// The day-of-month field starts with `*` (or `?`): it does not restrict on
    /// its own (Vixie semantics, see [`Fields::day_matches`]).
    pub dom_star: bool,
    /// The day-of-week field starts with `*` (or `?`).
    pub dow_star: bool,
}

/// How one field is written and which values it takes.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// End of `*` and of an open `a/s` (day-of-week accepts 7 but `*` means 0-6).
    open_max: u32,
    /// Names of the values `name_base`, `name_base + 1`, ...
    names: &'static [&'static str],
    name_base: u32,
    /// `?` is accepted as a synonym of `*` (day fields, Quartz style).
    question: bool,
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    open_max: 59,
    names: &[],
    name_base: 0,
    question: false,
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    ..SECOND
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    max: 23,
    open_max: 23,
    ..SECOND
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    open_max: 31,
    names: &[],
    name_base: 0,
    question: true,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    open_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    name_base: 1,
    question: false,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    open_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    name_base: 0,
    question: true,
};

/// The macros and what they stand for.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Parses a whole expression. The error is the reason without the
/// `invalid cron expression "..."` prefix (the caller adds it).
pub(super) fn parse_fields(expr: &str) -> Result<Fields, String> {
    let trimmed = expr.trim();
    let expanded = if trimmed.starts_with('@') {
        MACROS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
            .map(|(_, fields)| *fields)
            .ok_or_else(|| {
                let known: Vec<&str> = MACROS.iter().map(|(name, _)| *name).collect();
                format!("unknown macro \"{trimmed}\" (expected one of {})", known.join(", "))
            })?
    } else {
        trimmed
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let (second, rest) = match parts.len() {
        5 => ("0", &parts[..]),
        6 => (parts[0], &parts[1..]),
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds field, found {n}"
            ));
        }
    };
    let mut dow = parse_field(&DAY_OF_WEEK, rest[4])?;
    if dow & (1 << 7) != 0 {
        dow = (dow & !(1 << 7)) | 1;
    }
    Ok(Fields {
        second: parse_field(&SECOND, second)?,
        minute: parse_field(&MINUTE, rest[0])?,
        hour: mask32(parse_field(&HOUR, rest[1])?),
        dom: mask32(parse_field(&DAY_OF_MONTH, rest[2])?),
        month: mask32(parse_field(&MONTH, rest[3])?),
        dow: mask32(dow),
        dom_star: is_star(rest[2]),
        dow_star: is_star(rest[4]),
    })
}

/// Narrows a mask of a field whose values are below 32.
fn mask32(mask: u64) -> u32 {
    u32::try_from(mask).unwrap_or(u32::MAX)
}

fn is_star(field: &str) -> bool {
    field.starts_with('*') || field.starts_with('?')
}

/// Parses one field (a comma-separated list) into a mask; errors name the field.
fn parse_field(spec: &FieldSpec, text: &str) -> Result<u64, String> {
    let mut mask = 0u64;
    for element in text.split(',') {
        mask |= parse_element(spec, element).map_err(|e| format!("{}: {e}", spec.name))?;
    }
    Ok(mask)
}

/// Parses one list element: `*`, `n`, `a-b`, with an optional `/step`.
fn parse_element(spec: &FieldSpec, element: &str) -> Result<u64, String> {
    if element.is_empty() {
        return Err("empty list element".to_string());
    }
    let (range, step) = match element.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step)?)),
        None => (element, None),
    };
    let (first, last) = if range == "*" || (spec.question && range == "?") {
        (spec.min, spec.open_max)
    } else if let Some((a, b)) = range.split_once('-') {
        if b.contains('-') {
            return Err(format!("\"{range}\" is not a valid range (expected a-b)"));
        }
        let (first, last) = (parse_value(spec, a)?, parse_value(spec, b)?);
        if first > last {
            return Err(format!("range {range} is backwards"));
        }
        (first, last)
    } else {
        let value = parse_value(spec, range)?;
        // `a/s` runs from `a` to the end of the field.
        if step.is_some() {
            (value, spec.open_max.max(value))
        } else {
            (value, value)
        }
    };
    let step = step.unwrap_or(1);
    let values = spec.open_max - spec.min + 1;
    if step > values {
        return Err(format!(
            "step {step} is larger than the field's range {}-{} ({values} values)",
            spec.min, spec.open_max
        ));
    }
    let mut mask = 0u64;
    let mut value = first;
    while value <= last {
        mask |= 1 << value;
        value = match value.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(mask)
}

fn parse_step(text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Err("missing step after \"/\"".to_string());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step \"{text}\" is not a number"));
    }
    match text.parse::<u32>() {
        Ok(0) => Err("step must be at least 1".to_string()),
        Ok(step) => Ok(step),
        // All digits but too long for u32: larger than any field.
        Err(_) => Err(format!("step {text} is larger than the field's range")),
    }
}

/// Parses a number or (in month and day-of-week) a three-letter name.
fn parse_value(spec: &FieldSpec, text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Err("missing value in range".to_string());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => Err(format!("{text} is out of range {}-{}", spec.min, spec.max)),
        };
    }
    if spec.names.is_empty() {
        return Err(format!("\"{text}\" is not a number"));
    }
    spec.names
        .iter()
        .zip(spec.name_base..)
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, value)| value)
        .ok_or_else(|| format!("unknown name \"{text}\""))
}

/// The lowest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let shifted = mask >> from;
    (shifted != 0).then(|| from + shifted.trailing_zeros())
}

impl Fields {
    /// Whether the hour field matches every hour (`*`, `*/1`, `0-23`).
    pub(super) fn every_hour(&self) -> bool {
        self.hour == ALL_HOURS
    }

    /// Whether `date` matches the day fields. Vixie semantics: when both
    /// day-of-month and day-of-week are restricted (neither starts with `*`), a
    /// day matches if either does; otherwise both must.
    pub(super) fn day_matches(&self, date: NaiveDate) -> bool {
        if self.month & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.dom & (1 << date.day()) != 0;
        let dow = self.dow & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the local date-time `t` matches every field.
    #[cfg(test)]
    pub(super) fn matches(&self, t: NaiveDateTime) -> bool {
        self.day_matches(t.date())
            && self.hour & (1 << t.hour()) != 0
            && self.minute & (1 << t.minute()) != 0
            && self.second & (1 << t.second()) != 0
    }

    /// The first matching local date-time at or after `from` (sub-seconds are
    /// ignored), on or before the day `last_day`. Jumps field by field
    /// (month, day, hour, minute, second) using the masks; bounded.
    pub(super) fn next_match(&self, from: NaiveDateTime, last_day: NaiveDate) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let (mut hour, mut minute, mut second) = (from.hour(), from.minute(), from.second());
        for _ in 0..MAX_SEARCH_STEPS {
            if date > last_day {
                return None;
            }
            if self.month & (1 << date.month()) == 0 {
                date = self.next_month_start(date)?;
                (hour, minute, second) = (0, 0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.succ_opt()?;
                (hour, minute, second) = (0, 0, 0);
                continue;
            }
            let Some(h) = next_bit(u64::from(self.hour), hour) else {
                date = date.succ_opt()?;
                (hour, minute, second) = (0, 0, 0);
                continue;
            };
            if h != hour {
                (hour, minute, second) = (h, 0, 0);
            }
            let Some(m) = next_bit(self.minute, minute) else {
                (hour, minute, second) = (hour + 1, 0, 0);
                continue;
            };
            if m != minute {
                (minute, second) = (m, 0);
            }
            let Some(s) = next_bit(self.second, second) else {
                (minute, second) = (minute + 1, 0);
                continue;
            };
            return date.and_hms_opt(hour, minute, s);
        }
        None
    }

    /// The first day of the next month (after `date`'s) that the month field allows.
    fn next_month_start(&self, date: NaiveDate) -> Option<NaiveDate> {
        let month = next_bit(u64::from(self.month), date.month() + 1);
        match month {
            Some(m) if m <= 12 => NaiveDate::from_ymd_opt(date.year(), m, 1),
            _ => {
                let first = next_bit(u64::from(self.month), 1)?;
                NaiveDate::from_ymd_opt(date.year().checked_add(1)?, first, 1)
            }
        }
    }
}
