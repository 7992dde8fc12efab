//! The one duration grammar of Worker, shared by the controller (`scheduler.yaml`,
//! `alerts.yaml`, its flags), the agent (its flags, the `sleep` builtin's
//! `duration`) and `workerctl` (`--delay`, `--timeout`, batch `delay`, bench flags).
//!
//! # Grammar
//!
//! A duration is one or more `<integer><unit>` parts written together, with
//! surrounding whitespace ignored:
//!
//! | unit | meaning      |
//! |------|--------------|
//! | `ms` | milliseconds |
//! | `s`  | seconds      |
//! | `m`  | minutes      |
//! | `h`  | hours        |
//! | `d`  | days (24 h)  |
//!
//! Examples: `250ms`, `30s`, `10m`, `1h30m`, `1d12h`, `0s`. The parts are added
//! up (`1h30m` is 90 minutes). Integers are unsigned decimal; there are no
//! fractions (`1.5s` is written `1500ms` or `1s500ms`), no signs and no spaces
//! between parts. The resolution is one millisecond.
//!
//! A bare `0` is accepted: zero is zero in every unit. Any other bare number,
//! such as `30`, is refused with the same message everywhere:
//!
//! ```text
//! invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)
//! ```
//!
//! # Why bare numbers are refused
//!
//! A number without a unit means different things to different readers and
//! tools: seconds to one, milliseconds to another (Worker's own JSON output
//! counts in milliseconds, `*_ms`). Before this crate existed Worker itself
//! disagreed: the CLI read `30` as 30 seconds, the controller refused it and the
//! agent accepted only `0`. Guessing a unit turns a typo into a timeout a
//! thousand times too long or too short, silently; asking for the unit costs one
//! character and makes every value read the same in a file, on a command line
//! and in a log line.
//!
//! # Bound
//!
//! Durations longer than [`MAX`] (100 years, `36500d`) are refused, so that
//! adding any parsed duration to a timestamp cannot overflow. Callers may
//! impose tighter limits of their own (e.g. a job's `timeout`).
//!
//! # Formatting
//!
//! [`format()`] writes a duration in the same grammar (`1h30m`, `250ms`, `0s`), so
//! what an operator types is what Worker prints back, and every printed value
//! of at most [`MAX`] parses again to the same duration (to the millisecond).
//!
//! ```
//! use std::time::Duration;
//!
//! assert_eq!(worker_duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
//! assert_eq!(worker_duration::parse("0"), Ok(Duration::ZERO));
//! assert_eq!(worker_duration::format(Duration::from_millis(90_250)), "1m30s250ms");
//! assert_eq!(
//!     worker_duration::parse("30").unwrap_err().to_string(),
//!     r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#
//! );
//! ```

use std::fmt;
use std::time::Duration;

/// The longest duration [`parse`] accepts: 100 years of 365 days (`36500d`).
pub const MAX: Duration = Duration::from_millis(MAX_MS);

const MAX_MS: u64 = 100 * 365 * 86_400_000;

/// The units with their length in milliseconds, longest first.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The units as the messages list them.
const UNIT_LIST: &str = "ms, s, m, h or d";

/// Parses a duration of the crate's grammar: one or more `<integer><unit>`
/// parts (`250ms`, `30s`, `1h30m`), or a bare `0`; surrounding whitespace is
/// ignored.
///
/// # Errors
///
/// A [`DurationError`] whose message (its `Display`) names the text and says
/// what is wrong with it; it is meant to be shown to the user as is.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let fail = |kind| Err(DurationError::new(text, kind));
    if text.is_empty() {
        return fail(ErrorKind::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut too_large = false;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let letters = after.len() - after.trim_start_matches(char::is_alphabetic).len();
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            if UNITS.iter().any(|(name, _)| *name == unit) {
                return fail(ErrorKind::MissingNumber { unit: unit.into() });
            }
            if !unit.is_empty() {
                return fail(ErrorKind::Unexpected { found: unit.into() });
            }
            return fail(unexpected(after));
        }
        if unit.is_empty() {
            if after.is_empty() {
                return fail(ErrorKind::MissingUnit { number: number.into() });
            }
            return fail(unexpected(after));
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return fail(ErrorKind::UnknownUnit { unit: unit.into() });
        };
        // Keep reading after an overflow: a malformed text is reported as such
        // even when one of its numbers is also too large.
        match number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .and_then(|ms| total.checked_add(ms))
        {
            Some(sum) => total = sum,
            None => too_large = true,
        }
        rest = after;
    }
    if too_large || total > MAX_MS {
        return fail(ErrorKind::TooLarge);
    }
    Ok(Duration::from_millis(total))
}

/// What [`parse`] found at `rest`, the non-empty text where neither a number nor
/// a unit starts: a decimal fraction, or some other character.
fn unexpected(rest: &str) -> ErrorKind {
    let mut chars = rest.chars();
    let found = chars.next().unwrap_or(' ');
    if matches!(found, '.' | ',') && chars.next().is_some_and(|c| c.is_ascii_digit()) {
        ErrorKind::Fraction
    } else {
        ErrorKind::Unexpected {
            found: found.to_string(),
        }
    }
}

/// Formats `duration` in the grammar [`parse`] reads: each unit from days down to
/// milliseconds that is not zero, largest first (`1d2h`, `1h30m`, `1s500ms`,
/// `250ms`), and `0s` for zero.
///
/// Sub-millisecond parts are dropped (durations shorter than 1 ms format as
/// `0s`). `parse(&format(d))` is `d` for every whole-millisecond `d` up to
/// [`MAX`]; longer durations are formatted all the same but [`parse`] refuses
/// them.
pub fn format(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let size = u128::from(size);
        if ms >= size {
            out.push_str(&(ms / size).to_string());
            out.push_str(unit);
            ms %= size;
        }
    }
    out
}

/// Why a text is not a duration, with the text (trimmed) it was about.
///
/// Its `Display` is the message for people, always of the form
/// `invalid duration "TEXT": REASON`, e.g.
/// `invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    kind: ErrorKind,
}

impl DurationError {
    fn new(text: &str, kind: ErrorKind) -> Self {
        DurationError {
            text: text.to_string(),
            kind,
        }
    }

    /// The refused text, with surrounding whitespace trimmed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

/// The reasons [`parse`] refuses a text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing but whitespace.
    Empty,
    /// A number without a unit: a bare number other than `0` (`30`), or a last
    /// part without one (`1h30`).
    MissingUnit {
        /// The number that has no unit.
        number: String,
    },
    /// A unit that is not `ms`, `s`, `m`, `h` or `d` (`5x`, `3sec`, `1w`).
    UnknownUnit {
        /// The letters read as the unit.
        unit: String,
    },
    /// A unit without a number before it (`s`, `m5`).
    MissingNumber {
        /// The unit that has no number.
        unit: String,
    },
    /// A decimal fraction (`1.5s`, `0,5h`).
    Fraction,
    /// Something that belongs to no part: a sign, a space between parts, a
    /// word where a number should be (`-5s`, `1h 30m`, `soon`).
    Unexpected {
        /// The character, or the word, found where a number should be.
        found: String,
    },
    /// Longer than [`MAX`] (100 years), or too long to count at all.
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: ", self.text)?;
        match &self.kind {
            ErrorKind::Empty => write!(f, "empty (use {UNIT_LIST}, e.g. 30s)"),
            ErrorKind::MissingUnit { number } if *number == self.text => {
                write!(f, "missing unit (use {UNIT_LIST}, e.g. {number}s)")
            }
            ErrorKind::MissingUnit { number } => {
                write!(f, "missing unit after {number} (use {UNIT_LIST})")
            }
            ErrorKind::UnknownUnit { unit } => write!(f, "unknown unit {unit:?} (use {UNIT_LIST})"),
            ErrorKind::MissingNumber { unit } => write!(f, "missing number before {unit:?} (e.g. 5{unit})"),
            ErrorKind::Fraction => write!(
                f,
                "fractions are not allowed (use a smaller unit, e.g. 1500ms for 1.5s)"
            ),
            ErrorKind::Unexpected { found } => {
                write!(f, "unexpected {found:?} (expected <integer><unit> parts such as 1h30m)")
            }
            ErrorKind::TooLarge => write!(f, "longer than 100 years (at most 36500d)"),
        }
    }
}

impl std::error::Error for DurationError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn message(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn accepts_combinations_which_add_up() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1s500ms"), Ok(ms(1500)));
        assert_eq!(parse("1d2h3m4s5ms"), Ok(ms(93_784_005)));
        // Order and repetition are not checked: the parts are summed.
        assert_eq!(parse("30m1h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1s1s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn accepts_zero_with_or_without_unit() {
        for zero in ["0", "0s", "0ms", "0d", "0h0m", " 0 ", "\t0\n"] {
            assert_eq!(parse(zero), Ok(Duration::ZERO), "{zero:?}");
        }
    }

    #[test]
    fn trims_surrounding_whitespace_only() {
        assert_eq!(parse("  7s \n"), Ok(Duration::from_secs(7)));
        assert_eq!(
            message("1h 30m"),
            r#"invalid duration "1h 30m": unexpected " " (expected <integer><unit> parts such as 1h30m)"#
        );
        assert_eq!(
            message("5 s"),
            r#"invalid duration "5 s": unexpected " " (expected <integer><unit> parts such as 1h30m)"#
        );
    }

    #[test]
    fn leading_zeros_are_numbers() {
        assert_eq!(parse("007s"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("0100ms"), Ok(ms(100)));
    }

    #[test]
    fn refuses_bare_numbers_other_than_zero() {
        assert_eq!(
            message("30"),
            r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#
        );
        assert_eq!(
            message(" 5 "),
            r#"invalid duration "5": missing unit (use ms, s, m, h or d, e.g. 5s)"#
        );
        assert_eq!(
            message("00"),
            r#"invalid duration "00": missing unit (use ms, s, m, h or d, e.g. 00s)"#
        );
        assert_eq!(
            parse("30").unwrap_err().kind(),
            &ErrorKind::MissingUnit { number: "30".into() }
        );
        assert_eq!(parse("30").unwrap_err().text(), "30");
    }

    #[test]
    fn refuses_a_last_part_without_unit() {
        assert_eq!(
            message("1h30"),
            r#"invalid duration "1h30": missing unit after 30 (use ms, s, m, h or d)"#
        );
        assert_eq!(
            message("1h0"),
            r#"invalid duration "1h0": missing unit after 0 (use ms, s, m, h or d)"#
        );
    }

    #[test]
    fn refuses_empty() {
        for empty in ["", "   ", "\n"] {
            assert_eq!(
                message(empty),
                r#"invalid duration "": empty (use ms, s, m, h or d, e.g. 30s)"#
            );
            assert_eq!(parse(empty).unwrap_err().kind(), &ErrorKind::Empty);
        }
    }

    #[test]
    fn refuses_unknown_units() {
        assert_eq!(
            message("5x"),
            r#"invalid duration "5x": unknown unit "x" (use ms, s, m, h or d)"#
        );
        assert_eq!(
            message("3sec"),
            r#"invalid duration "3sec": unknown unit "sec" (use ms, s, m, h or d)"#
        );
        assert_eq!(
            message("1w"),
            r#"invalid duration "1w": unknown unit "w" (use ms, s, m, h or d)"#
        );
        // Units are lower case.
        assert_eq!(
            message("5S"),
            r#"invalid duration "5S": unknown unit "S" (use ms, s, m, h or d)"#
        );
        assert_eq!(
            message("1hm"),
            r#"invalid duration "1hm": unknown unit "hm" (use ms, s, m, h or d)"#
        );
        assert_eq!(
            message("5µs"),
            r#"invalid duration "5µs": unknown unit "µs" (use ms, s, m, h or d)"#
        );
        // Grammar errors win over a number that is also too large.
        assert_eq!(
            parse("99999999999999999999999x").unwrap_err().kind(),
            &ErrorKind::UnknownUnit { unit: "x".into() }
        );
    }

    #[test]
    fn refuses_a_unit_without_number() {
        assert_eq!(
            message("s"),
            r#"invalid duration "s": missing number before "s" (e.g. 5s)"#
        );
        assert_eq!(
            message("m5"),
            r#"invalid duration "m5": missing number before "m" (e.g. 5m)"#
        );
        assert_eq!(
            message("1hms"),
            r#"invalid duration "1hms": unknown unit "hms" (use ms, s, m, h or d)"#
        );
        assert_eq!(
            parse("ms").unwrap_err().kind(),
            &ErrorKind::MissingNumber { unit: "ms".into() }
        );
    }

    #[test]
    fn refuses_fractions_signs_and_other_characters() {
        let fraction = r#"fractions are not allowed (use a smaller unit, e.g. 1500ms for 1.5s)"#;
        assert_eq!(message("1.5s"), format!(r#"invalid duration "1.5s": {fraction}"#));
        assert_eq!(message("0,5h"), format!(r#"invalid duration "0,5h": {fraction}"#));
        assert_eq!(message(".5s"), format!(r#"invalid duration ".5s": {fraction}"#));
        let parts = "(expected <integer><unit> parts such as 1h30m)";
        assert_eq!(
            message("-5s"),
            format!(r#"invalid duration "-5s": unexpected "-" {parts}"#)
        );
        assert_eq!(
            message("+5s"),
            format!(r#"invalid duration "+5s": unexpected "+" {parts}"#)
        );
        assert_eq!(
            message("5s."),
            format!(r#"invalid duration "5s.": unexpected "." {parts}"#)
        );
        assert_eq!(
            message("1h-30m"),
            format!(r#"invalid duration "1h-30m": unexpected "-" {parts}"#)
        );
        assert_eq!(
            message("5_000ms"),
            format!(r#"invalid duration "5_000ms": unexpected "_" {parts}"#)
        );
        assert_eq!(
            message("\"5s\""),
            format!(r#"invalid duration "\"5s\"": unexpected "\"" {parts}"#)
        );
        assert_eq!(
            message("soon"),
            format!(r#"invalid duration "soon": unexpected "soon" {parts}"#)
        );
        assert_eq!(
            message("sec5"),
            format!(r#"invalid duration "sec5": unexpected "sec" {parts}"#)
        );
        assert_eq!(
            parse("-5s").unwrap_err().kind(),
            &ErrorKind::Unexpected { found: "-".into() }
        );
    }

    #[test]
    fn is_bounded_to_100_years() {
        assert_eq!(MAX, Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(parse("36500d"), Ok(MAX));
        assert_eq!(parse("36499d23h59m59s999ms"), Ok(MAX - ms(1)));
        let too_large = |text: &str| format!("invalid duration \"{text}\": longer than 100 years (at most 36500d)");
        for text in [
            "36500d1ms",
            "36501d",
            "876001h",
            "99999999999d",
            // Overflows of u64 milliseconds: in a number, a product and a sum.
            "18446744073709551616ms",
            "18446744073709551615s",
            "18446744073709551615ms1ms",
        ] {
            assert_eq!(message(text), too_large(text));
            assert_eq!(parse(text).unwrap_err().kind(), &ErrorKind::TooLarge);
        }
    }

    #[test]
    fn formats_largest_unit_first() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(ms(250)), "250ms");
        assert_eq!(format(ms(1500)), "1s500ms");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
        assert_eq!(format(Duration::from_secs(90_000)), "1d1h");
        assert_eq!(format(ms(93_784_005)), "1d2h3m4s5ms");
        assert_eq!(format(MAX), "36500d");
        // Below a millisecond is dropped.
        assert_eq!(format(Duration::from_micros(999)), "0s");
        assert_eq!(format(Duration::from_micros(1_999)), "1ms");
        // Longer than MAX still formats (parse refuses it).
        assert_eq!(format(Duration::from_secs(365 * 86_400 * 200)), "73000d");
        assert!(!format(Duration::MAX).is_empty());
    }

    #[test]
    fn format_then_parse_round_trips() {
        let mut cases = vec![
            Duration::ZERO,
            ms(1),
            ms(999),
            ms(1000),
            ms(1001),
            ms(59_999),
            ms(60_000),
            ms(3_600_000),
            ms(3_600_001),
            ms(86_399_999),
            ms(86_400_000),
            ms(93_784_005),
            MAX - ms(1),
            MAX,
        ];
        // A deterministic spread over the whole range.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(ms(x % (MAX_MS + 1)));
            cases.push(ms(x % 100_000));
        }
        for d in cases {
            let text = format(d);
            assert_eq!(parse(&text), Ok(d), "{text}");
        }
    }

    #[test]
    fn parse_then_format_gives_the_canonical_form() {
        for (text, canonical) in [
            ("0", "0s"),
            ("0ms", "0s"),
            ("90s", "1m30s"),
            ("1500ms", "1s500ms"),
            ("24h", "1d"),
            ("30m1h", "1h30m"),
            ("1h30m", "1h30m"),
            ("1d2h3m4s5ms", "1d2h3m4s5ms"),
        ] {
            assert_eq!(format(parse(text).unwrap()), canonical, "{text}");
        }
    }

    #[test]
    fn error_is_a_std_error() {
        let err: Box<dyn std::error::Error + Send + Sync> = Box::new(parse("5").unwrap_err());
        assert_eq!(
            err.to_string(),
            r#"invalid duration "5": missing unit (use ms, s, m, h or d, e.g. 5s)"#
        );
    }
}
