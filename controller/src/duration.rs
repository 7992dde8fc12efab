//! Human durations as used in configuration files and flags: `250ms`, `30s`,
//! `10m`, `1h`, `1d`, and concatenations such as `1h30m`.

use std::time::Duration;

/// Parses a duration like `1h30m` or `250ms`. A bare number is rejected: the unit
/// is part of what the operator meant and must be written.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration \"{text}\": expected a number at \"{rest}\""));
        }
        let value: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit \"{other}\" (use ms, s, m, h or d)"
                ));
            }
        };
        total = total
            .checked_add(
                value
                    .checked_mul(millis_per_unit)
                    .ok_or_else(|| format!("invalid duration \"{text}\": too large"))?,
            )
            .ok_or_else(|| format!("invalid duration \"{text}\": too large"))?;
    }
    // Bound durations to ~100 years so that every later addition to a timestamp fits.
    const MAX_MS: u128 = 100 * 365 * 86_400_000;
    if total > MAX_MS {
        return Err(format!("invalid duration \"{text}\": longer than 100 years"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// Formats a duration the way [`parse_duration`] reads it (`1h30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("99999999999d").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "30s", "1h30m", "1d2h3m4s5ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
