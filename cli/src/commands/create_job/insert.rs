//! Adding one job to the text of a `scheduler.yaml`, leaving every other byte
//! as it was.
//!
//! A YAML library that rewrites the document would lose the comments, the
//! order of keys, the quoting and the blank lines people arrange their file
//! with. So the definition is inserted as text:
//!
//! * the top-level `jobs:` line is found (a line at column 0 whose key is
//!   `jobs`, bare or quoted); the block it opens ends at the last indented
//!   line before the next top-level key (`---`, `...` or any other line that
//!   starts at column 0 and is not a comment). The new job goes right after
//!   that line, so comments at column 0 that introduce the next section stay
//!   with it;
//! * the definition is re-indented to the block's own indentation: the
//!   column of its first job, and the step its first job's fields use
//!   (2 and 2 when the block is empty);
//! * `jobs:` followed by nothing, `~`, `null` or an empty flow mapping `{}`
//!   gets the block under it (the `{}` or `null` token is removed, a comment
//!   after it kept); a non-empty flow mapping (`jobs: { a: ... }`) is refused,
//!   as the job would have to be written in flow style;
//! * no `jobs:` at all: a `jobs:` section is appended at the end; no file:
//!   the caller creates one with [`new_document`];
//! * line endings follow the file (`\r\n` when it uses them).
//!
//! The result is checked, not trusted: [`insert_job`] parses the new text
//! and requires it to equal the old document plus exactly the new job, so
//! anything the line scan misreads is refused rather than written.

use serde_yaml_ng::{Mapping, Value};

/// A change of the original text: bytes `start..end` become `replacement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// First byte replaced.
    pub start: usize,
    /// End of the replaced bytes (`start` for a pure insertion).
    pub end: usize,
    /// The new text.
    pub replacement: String,
}

/// The new document and the edits that made it from the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The whole new text.
    pub text: String,
    /// The edits, in order and not overlapping (one insertion, plus the
    /// removal of a `{}` / `null` value after `jobs:`).
    pub edits: Vec<Edit>,
}

/// Applies `edits` (sorted, not overlapping) to `original`.
pub fn apply_edits(original: &str, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(original.len() + edits.iter().map(|e| e.replacement.len()).sum::<usize>());
    let mut at = 0;
    for edit in edits {
        out.push_str(&original[at..edit.start]);
        out.push_str(&edit.replacement);
        at = edit.end;
    }
    out.push_str(&original[at..]);
    out
}

/// A definition to insert: comment lines and the job, written with the job's
/// key at column 0 and two spaces per level (as the templates are).
#[derive(Debug, Clone)]
pub struct Definition<'a> {
    /// The job's name (already valid).
    pub name: &'a str,
    /// The text: comment lines, then `NAME:` and its fields.
    pub text: &'a str,
}

/// The text of a new `scheduler.yaml` holding only `definition`.
pub fn new_document(definition: &Definition<'_>) -> Result<String, String> {
    let mut text =
        String::from("# Job definitions (format: docs/configuration.md). Durations need a unit: 30s, 5m, 1h.\njobs:\n");
    text.push_str(&reindent(definition.text, 2, 2, "\n"));
    verify("", &text, definition)?;
    Ok(text)
}

/// Inserts `definition` into the document `original` (see the module docs).
///
/// # Errors
///
/// A message (to be prefixed with the file's name) when the document does
/// not parse, is not a mapping, already has the job, writes `jobs` in a way
/// the text cannot be extended, or when the result would not be the old
/// document plus the job.
pub fn insert_job(original: &str, definition: &Definition<'_>) -> Result<Inserted, String> {
    let name = definition.name;
    let doc: Value = serde_yaml_ng::from_str(original).map_err(|e| format!("is not valid YAML: {e}"))?;
    let jobs_value = match &doc {
        Value::Null => None,
        Value::Mapping(top) => top.get("jobs"),
        _ => return Err("is not a mapping of `defaults:` and `jobs:` at its top level".to_string()),
    };
    match jobs_value {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(jobs)) => {
            if jobs.contains_key(name) {
                return Err(format!("already defines the job `{name}`; choose another name"));
            }
        }
        Some(_) => return Err("has a `jobs:` that is not a mapping of job name to definition".to_string()),
    }
    let newline = if original.contains("\r\n") { "\r\n" } else { "\n" };
    let lines = split_lines(original);
    let edits = match lines.iter().position(|l| is_jobs_line(l.text)) {
        None if jobs_value.is_some() => {
            return Err(
                "has a `jobs:` key this command cannot find as a line `jobs:` at column 0; add the job by hand"
                    .to_string(),
            );
        }
        None => append_section(original, &lines, definition, newline),
        Some(index) => insert_into_block(&lines, index, definition, newline)?,
    };
    let text = apply_edits(original, &edits);
    verify(original, &text, definition)?;
    Ok(Inserted { text, edits })
}

/// One line of the original: its text without the line ending, and where it
/// starts and ends (after its line ending).
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    /// Whether it ends with `\n` (the last line may not).
    terminated: bool,
}

fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for piece in text.split_inclusive('\n') {
        let end = start + piece.len();
        let terminated = piece.ends_with('\n');
        let body = piece.strip_suffix('\n').unwrap_or(piece);
        let body = body.strip_suffix('\r').unwrap_or(body);
        lines.push(Line {
            text: body,
            start,
            end,
            terminated,
        });
        start = end;
    }
    lines
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// A line at column 0 that is not blank and not a comment: a top-level key,
/// or a document marker.
fn is_top_level(line: &str) -> bool {
    !is_blank(line) && !line.starts_with([' ', '\t', '#'])
}

/// The part of a `jobs:` line after the colon, when `line` is one.
fn jobs_line_rest(line: &str) -> Option<&str> {
    let rest = ["jobs", "\"jobs\"", "'jobs'"]
        .iter()
        .find_map(|key| line.strip_prefix(key))?;
    let rest = rest.trim_start_matches(' ').strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

fn is_jobs_line(line: &str) -> bool {
    jobs_line_rest(line).is_some()
}

/// `value # comment` → (`value` trimmed, its byte offset in `rest`).
fn value_of(rest: &str) -> (&str, usize) {
    // A comment starts at `#` after whitespace; the value written here is at
    // most `{}` / `~` / `null` or something refused, so no quoted `#` matters.
    let mut cut = rest.len();
    let bytes = rest.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
            cut = i;
            break;
        }
    }
    let value = rest[..cut].trim();
    let offset = if value.is_empty() {
        0
    } else {
        rest.find(value).unwrap_or(0)
    };
    (value, offset)
}

/// `jobs:` missing: a new section at the end of the file.
fn append_section(original: &str, lines: &[Line<'_>], definition: &Definition<'_>, newline: &str) -> Vec<Edit> {
    let mut text = String::new();
    if lines.last().is_some_and(|l| !l.terminated) {
        text.push_str(newline);
    }
    if lines.last().is_some_and(|l| !is_blank(l.text)) {
        text.push_str(newline);
    }
    text.push_str("jobs:");
    text.push_str(newline);
    text.push_str(&reindent(definition.text, 2, 2, newline));
    vec![Edit {
        start: original.len(),
        end: original.len(),
        replacement: text,
    }]
}

/// The leading spaces of `line`.
fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether `line` is indented content (not blank, not a comment).
fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

fn insert_into_block(
    lines: &[Line<'_>],
    index: usize,
    definition: &Definition<'_>,
    newline: &str,
) -> Result<Vec<Edit>, String> {
    let jobs_line = lines[index];
    let line_no = index + 1;
    let rest = jobs_line_rest(jobs_line.text).unwrap_or("");
    let rest_start = jobs_line.start + (jobs_line.text.len() - rest.len());
    let (value, offset) = value_of(rest);
    let mut edits = Vec::new();
    match value {
        "" => {}
        "{}" | "~" | "null" | "Null" | "NULL" => {
            // `jobs: {}  # none yet` → `jobs:  # none yet`, the block below.
            let value_start = rest_start + offset;
            edits.push(Edit {
                start: rest_start,
                end: value_start + value.len(),
                replacement: String::new(),
            });
        }
        v if v.starts_with('{') => {
            return Err(format!(
                "line {line_no}: `jobs:` is a flow mapping (`{{ ... }}`); rewrite it as a block (each job on lines of its own under `jobs:`) or add the job by hand"
            ));
        }
        v => {
            return Err(format!(
                "line {line_no}: `jobs:` is followed by `{v}` on its line; this command adds jobs only to a plain block `jobs:`"
            ));
        }
    }

    // The block: indented lines (and column-0 comments) up to the next
    // top-level line.
    let mut last = index;
    let mut first_content: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(index + 1) {
        if is_top_level(line.text) {
            break;
        }
        if line.text.starts_with([' ', '\t']) && !is_blank(line.text) {
            last = i;
            if first_content.is_none() && is_content(line.text) {
                first_content = Some(i);
            }
        }
    }
    let (key_indent, step) = match first_content {
        None => (2, 2),
        Some(first) => {
            let key_indent = indent_of(lines[first].text).max(1);
            let child = lines[first + 1..=last]
                .iter()
                .filter(|l| is_content(l.text))
                .map(|l| indent_of(l.text))
                .take_while(|&i| i > key_indent)
                .next();
            (key_indent, child.map_or(key_indent, |c| c - key_indent))
        }
    };

    let after = lines[last];
    let mut text = String::new();
    if !after.terminated {
        text.push_str(newline);
    }
    if last != index {
        text.push_str(newline);
    }
    text.push_str(&reindent(definition.text, key_indent, step, newline));
    if lines.get(last + 1).is_some_and(|next| !is_blank(next.text)) {
        text.push_str(newline);
    }
    edits.push(Edit {
        start: after.end,
        end: after.end,
        replacement: text,
    });
    Ok(edits)
}

/// `text` (two spaces per level, the job's key at column 0) with every line
/// moved right by `key_indent` and its levels `step` spaces wide; lines end
/// with `newline`.
pub fn reindent(text: &str, key_indent: usize, step: usize, newline: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(newline);
            continue;
        }
        let spaces = indent_of(line);
        let level = spaces / 2;
        out.push_str(&" ".repeat(key_indent + level * step + spaces % 2));
        out.push_str(&line[spaces..]);
        out.push_str(newline);
    }
    out
}

/// Checks that `new` parses and is `old` plus the job: every other key and
/// job unchanged, the job equal to its definition parsed on its own.
fn verify(old: &str, new: &str, definition: &Definition<'_>) -> Result<(), String> {
    let parsed_def: Value = serde_yaml_ng::from_str(definition.text)
        .map_err(|e| format!("internal error: the generated definition is not valid YAML: {e}"))?;
    let job = parsed_def
        .get(definition.name)
        .cloned()
        .ok_or_else(|| "internal error: the generated definition lacks its key".to_string())?;
    let mut expected = match serde_yaml_ng::from_str::<Value>(old).map_err(|e| e.to_string())? {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => return Err("is not a mapping at its top level".to_string()),
    };
    let jobs = expected
        .entry(Value::String("jobs".into()))
        .or_insert(Value::Mapping(Mapping::new()));
    if jobs.is_null() {
        *jobs = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(jobs) = jobs {
        jobs.insert(Value::String(definition.name.to_string()), job);
    }
    let got: Value = serde_yaml_ng::from_str(new)
        .map_err(|e| format!("would not be valid YAML after adding the job ({e}); nothing was changed"))?;
    if got != Value::Mapping(expected) {
        return Err(
            "cannot take the job at the end of its `jobs:` block without changing the rest of the document (an unusual layout); add it by hand"
                .to_string(),
        );
    }
    Ok(())
}
