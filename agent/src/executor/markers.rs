//! Marker lines: how a shell job reports metrics and spans. A line the job
//! writes to **stdout** that starts with `::worker ` is read as a report:
//!
//! ```text
//! ::worker metric api_cost_usd 0.42
//! ::worker metric items 120
//! ::worker span fetch 1.25s
//! ::worker span db.write 830ms
//! ```
//!
//! A metric's value is a decimal number (values of one name add up); a
//! span's duration is a decimal number with the unit `us`, `ms` or `s`, one
//! pass through the operation (passes of one name add up). Names follow the
//! rules of [`crate::measure`]. Marker lines stay in the output, so the log
//! shows what was reported. A marker that cannot be read is reported in the
//! output's tail (the first few, with the reason) and otherwise ignored: a
//! typo never fails a job.

use std::time::Duration;

use crate::measure::Measures;

/// The prefix of a marker line.
pub const PREFIX: &str = "::worker ";

/// Longest line checked for a marker; longer lines are ordinary output.
pub const MAX_MARKER_LINE: usize = 1024;

/// Most unreadable markers described in the output.
const MAX_PROBLEMS: usize = 3;

/// Reads marker lines out of a stream of stdout chunks.
#[derive(Debug, Default)]
pub struct MarkerScanner {
    /// The current line so far (while it may still be a marker).
    line: Vec<u8>,
    /// The current line is too long or does not start with the prefix.
    skipping: bool,
    /// What was reported.
    pub measures: Measures,
    /// Descriptions of unreadable markers (at most [`MAX_PROBLEMS`]).
    problems: Vec<String>,
    /// Unreadable markers in all.
    bad: u64,
}

impl MarkerScanner {
    /// Feeds a chunk of stdout.
    pub fn push(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if byte == b'\n' {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    self.line_ended(&line);
                }
                self.line.clear();
                self.skipping = false;
                continue;
            }
            if self.skipping {
                continue;
            }
            self.line.push(byte);
            let prefix = PREFIX.as_bytes();
            let n = self.line.len();
            if (n <= prefix.len() && self.line[..] != prefix[..n]) || n > MAX_MARKER_LINE {
                self.skipping = true;
                self.line.clear();
            }
        }
    }

    /// The end of stdout: a last line without a newline still counts.
    pub fn finish(&mut self) {
        if !self.skipping && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_ended(&line);
        }
    }

    /// Lines for the output's tail describing unreadable markers, if any.
    pub fn problems(&self) -> Option<String> {
        if self.bad == 0 {
            return None;
        }
        let mut text = String::new();
        for p in &self.problems {
            text.push_str(&format!("[worker] ignored marker: {p}\n"));
        }
        if self.bad > self.problems.len() as u64 {
            text.push_str(&format!(
                "[worker] ... and {} more unreadable markers\n",
                self.bad - self.problems.len() as u64
            ));
        }
        Some(text)
    }

    fn line_ended(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return self.problem("not UTF-8".into());
        };
        let text = text.trim_end_matches('\r');
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return;
        };
        if let Err(reason) = parse_marker(rest, &mut self.measures) {
            self.problem(format!("\"{}\": {reason}", text.trim()));
        }
    }

    fn problem(&mut self, description: String) {
        self.bad += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(description);
        }
    }
}

/// Applies one marker (the text after the prefix).
fn parse_marker(rest: &str, measures: &mut Measures) -> Result<(), String> {
    let parts: Vec<&str> = rest.split_whitespace().collect();
    match parts.as_slice() {
        ["metric", name, value] => {
            let value: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| format!("\"{value}\" is not a number"))?;
            keep(measures.metric(name, value), name)
        }
        ["span", name, duration] => {
            let took = parse_span_duration(duration)?;
            keep(measures.span(name, took), name)
        }
        _ => Err("expected `metric NAME NUMBER` or `span NAME DURATION` (e.g. 250ms, 1.5s)".into()),
    }
}

fn keep(kept: bool, name: &str) -> Result<(), String> {
    if kept {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid name (1 to {} letters, digits, `_ . : -`) or the attempt reported too many names",
            crate::measure::MAX_NAME_BYTES
        ))
    }
}

/// `1.5s`, `250ms`, `40us`.
fn parse_span_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("\"{text}\" needs a unit: us, ms or s"));
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("\"{text}\" is not a duration"))?;
    Duration::try_from_secs_f64(value * unit).map_err(|_| format!("\"{text}\" is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markers_across_chunks_and_ignores_other_lines() {
        let mut s = MarkerScanner::default();
        s.push(b"hello\n::worker metric items 3\n::wor");
        s.push(b"ker span fetch 1.5s\n  ::worker metric indented 1\n::worker metric items 2\r\n");
        s.push(b"::worker span fetch 500ms");
        s.finish();
        assert!(s.problems().is_none(), "{:?}", s.problems());
        let (metrics, spans) = s.measures.clone().into_proto();
        assert_eq!(metrics.len(), 1);
        assert_eq!((metrics[0].name.as_str(), metrics[0].value), ("items", 5.0));
        assert_eq!(
            (spans[0].name.as_str(), spans[0].count, spans[0].total_us),
            ("fetch", 2, 2_000_000)
        );
    }

    #[test]
    fn unreadable_markers_are_described_not_fatal() {
        let mut s = MarkerScanner::default();
        s.push(b"::worker metric cost abc\n::worker span x 10\n::worker bogus\n::worker metric bad name 1\n");
        s.push(format!("::worker metric {} 1\n", "x".repeat(MAX_MARKER_LINE)).as_bytes());
        s.finish();
        let text = s.problems().unwrap();
        assert!(text.contains("\"abc\" is not a number"), "{text}");
        assert!(text.contains("needs a unit"), "{text}");
        assert!(text.contains("expected `metric NAME NUMBER`"), "{text}");
        assert!(text.contains("... and 1 more"), "{text}");
        assert!(s.measures.is_empty());
    }

    #[test]
    fn span_durations() {
        assert_eq!(parse_span_duration("40us").unwrap(), Duration::from_micros(40));
        assert_eq!(parse_span_duration("2.5ms").unwrap(), Duration::from_micros(2500));
        assert_eq!(parse_span_duration("3s").unwrap(), Duration::from_secs(3));
        assert!(parse_span_duration("-1s").is_err());
        assert!(parse_span_duration("1e400s").is_err());
    }
}
