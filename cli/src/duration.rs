//! Durations on the command line (`--timeout 1m30s`) and in tables (`1m 30s`).

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h30m`, `2d` or a bare
/// number of seconds, into milliseconds. `0` means "no limit" where allowed.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| format!("duration `{text}` is too large"));
    }
    let bad = || format!("invalid duration `{text}` (expected e.g. 500ms, 30s, 5m, 1h30m)");
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
    }
    Ok(total)
}

/// Formats milliseconds for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 4h`.
pub fn fmt_ms(ms: u64) -> String {
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    if ms < S {
        format!("{ms}ms")
    } else if ms < M {
        format!("{:.1}s", ms as f64 / S as f64)
    } else if ms < H {
        format!("{}m {:02}s", ms / M, (ms % M) / S)
    } else if ms < D {
        format!("{}h {:02}m", ms / H, (ms % H) / M)
    } else {
        format!("{}d {}h", ms / D, (ms % D) / H)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("30"), Ok(30_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("30s"), Ok(30_000));
        assert_eq!(parse_ms("5m"), Ok(300_000));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("1d"), Ok(86_400_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "5x", "1.5s", "-3s", "m5"] {
            assert!(parse_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(fmt_ms(850), "850ms");
        assert_eq!(fmt_ms(12_345), "12.3s");
        assert_eq!(fmt_ms(245_000), "4m 05s");
        assert_eq!(fmt_ms(7_380_000), "2h 03m");
        assert_eq!(fmt_ms(100_800_000), "1d 4h");
    }
}
