//! Output formats: aligned tables for people, pretty JSON or YAML for scripts.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use serde::Serialize;

/// The `-o/--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns / `key: value` lines.
    Table,
    /// Pretty-printed JSON (shapes in docs/cli-json.md).
    Json,
    /// The same values as YAML.
    Yaml,
}

/// Renders `value` as JSON or YAML, or as the text `table` builds for `Table`.
pub fn render<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<String> {
    let mut text = match format {
        Format::Table => escape_controls(&table()),
        Format::Json => serde_json::to_string_pretty(value)?,
        Format::Yaml => serde_yaml_ng::to_string(value)?,
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `text` with every control character but newline and tab written as an
/// escape (`\x1b`, `\r`, `\u{9b}`): what a job printed must not drive the
/// terminal of whoever reads it (JSON and YAML escape them already).
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Prints `value` in `format` on stdout (see [`render`]). A closed pipe
/// (`workerctl runs list | head`) is not an error.
pub fn emit<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    let text = render(format, value, table)?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A tiny column aligner: columns are padded to their widest cell and separated
/// by two spaces; the last column is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            rows: vec![headers.into_iter().map(Into::into).collect()],
        }
    }

    /// Appends a row; cells are kept on one line (newlines become spaces).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(|c| one_line(&c.into())).collect());
        self
    }

    /// The aligned text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Aligned `key: value` lines (keys padded to the longest).
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let _ = writeln!(out, "{key:<width$} {value}");
    }
    out
}

/// Newlines and tabs become spaces, so a cell stays on its line.
fn one_line(text: &str) -> String {
    if text.contains(['\n', '\r', '\t']) {
        text.split(['\n', '\r', '\t'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        text.to_string()
    }
}

/// A metric value for people: integers without a fraction, others with up
/// to four significant decimals (`120`, `0.42`, `1234.5678`).
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Fractional milliseconds for people: `0.35ms` below 1 ms, else as [`fmt_ms`].
pub fn fmt_ms_f(ms: f64) -> String {
    if ms < 1.0 {
        format!("{}ms", fmt_value((ms * 100.0).round() / 100.0))
    } else {
        fmt_ms(ms.round() as u64)
    }
}

/// Milliseconds for people, in tables: `850ms`, `12.3s`, `4m 05s`, `2h 03m`,
/// `3d 4h`. Display only: flags and files take the grammar of
/// [`worker_duration`] (see [`crate::cli::parse_ms`]).
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

/// `-` for a missing value.
pub fn dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

/// An RFC 3339 timestamp as `2025-01-02 03:04:05Z` (UTC), `-` when missing.
pub fn time(value: Option<&str>) -> String {
    match value {
        None | Some("") => "-".to_string(),
        Some(v) => chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|_| v.to_string()),
    }
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let text = one_line(text);
    if text.chars().count() <= max {
        text
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A map as `k=v,k2=v2`, `-` when empty.
pub fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let text = map
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if text.is_empty() { "-".to_string() } else { text }
}

/// A list joined with `,`, `-` when empty.
pub fn joined(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terminal escapes a job printed reach a table escaped; JSON keeps them
    /// as JSON escapes.
    #[test]
    fn tables_escape_control_characters() {
        let text = "ok\tdone\n\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m";
        let table = render(Format::Table, &text, || text.to_string()).unwrap();
        assert_eq!(table, "ok\tdone\n\\x1b[2J\\x1b]0;pwned\\x07\\r\\u{9b}31m\n");
        let json = render(Format::Json, &text, || unreachable!()).unwrap();
        assert!(json.contains("\\u001b[2J"), "{json}");
    }

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(["ID", "STATE", "JOB"]);
        table.row(["1", "running", "backup"]);
        table.row(["12345", "ok", "x"]);
        assert_eq!(
            table.render(),
            "ID     STATE    JOB\n1      running  backup\n12345  ok       x\n"
        );
    }

    #[test]
    fn last_column_is_not_padded_and_unicode_counts_chars() {
        let mut table = Table::new(["A", "B"]);
        table.row(["héé", ""]);
        table.row(["x", "multi\nline"]);
        assert_eq!(table.render(), "A    B\nhéé\nx    multi line\n");
    }

    #[test]
    fn empty_table_prints_headers() {
        assert_eq!(Table::new(["NAME", "STATE"]).render(), "NAME  STATE\n");
    }

    #[test]
    fn key_value_lines_align() {
        let text = key_values(&[("id", "1".into()), ("state", "queued".into())]);
        assert_eq!(text, "id:    1\nstate: queued\n");
    }

    #[test]
    fn helpers() {
        assert_eq!(time(Some("2025-01-02T03:04:05.123Z")), "2025-01-02 03:04:05Z");
        assert_eq!(time(Some("")), "-");
        assert_eq!(time(Some("garbage")), "garbage");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(dash(None), "-");
    }

    #[test]
    fn milliseconds_for_people() {
        assert_eq!(fmt_ms(850), "850ms");
        assert_eq!(fmt_ms(12_345), "12.3s");
        assert_eq!(fmt_ms(245_000), "4m 05s");
        assert_eq!(fmt_ms(7_380_000), "2h 03m");
        assert_eq!(fmt_ms(100_800_000), "1d 4h");
    }

    #[test]
    fn json_and_yaml_render_the_same_value() {
        #[derive(Serialize)]
        struct V {
            id: String,
            n: Option<u32>,
        }
        let v = V {
            id: "x".into(),
            n: None,
        };
        let json = render(Format::Json, &v, String::new).unwrap();
        assert_eq!(json, "{\n  \"id\": \"x\",\n  \"n\": null\n}\n");
        let yaml = render(Format::Yaml, &v, String::new).unwrap();
        assert_eq!(yaml, "id: x\nn: null\n");
        assert_eq!(render(Format::Table, &v, || "t".into()).unwrap(), "t\n");
    }
}
