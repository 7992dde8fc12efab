//! Finds the line of a key path (`jobs.hello.retry.max_attempts`) in a YAML text.
//!
//! serde reports *what* is wrong with a field and `serde_path_to_error` *which*
//! field; this module adds *where*. It follows block-style mappings by
//! indentation, which is how configuration files are written; inside a flow
//! mapping (`retry: { max_attempts: x }`) it answers with the line of the
//! innermost block key it found, which is the line the value is on.
//!
//! A segment written `[N]` is the N-th (0-based) item of a block sequence
//! (`rules[1].event` is the segments `rules`, `[1]`, `event`), the form
//! `serde_path_to_error` prints; [`display_path`] joins segments that way.

/// Line (1-based) of the deepest key of `path` that can be found in `text`.
/// Returns `None` when not even the first segment is found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    let mut start = 0;
    let mut parent_indent: isize = -1;
    // Set after an `[N]` segment: the item's first line, whose key follows its `- `.
    let mut item_line: Option<usize> = None;
    for segment in path {
        let hit = match index_of(segment) {
            Some(n) => find_item(&lines, start, parent_indent, n),
            None => find_key(&lines, start, parent_indent, item_line, segment),
        };
        match hit {
            Some((index, indent)) => {
                found = Some(index + 1);
                if index_of(segment).is_some() {
                    start = index;
                    item_line = Some(index);
                } else {
                    start = index + 1;
                    item_line = None;
                }
                parent_indent = indent;
            }
            None => break,
        }
    }
    found
}

/// Joins key path segments for messages: `rules`, `[1]`, `event` → `rules[1].event`.
/// A segment is a key as written, which may be hostile: each is shown as
/// [`crate::limits::echo`] shows text (control characters escaped, cut after
/// [`crate::limits::ECHO_CHARS`] characters).
pub fn display_path(path: &[&str]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && index_of(segment).is_none() {
            out.push('.');
        }
        out.push_str(&crate::limits::echo(segment));
    }
    out
}

/// Splits a segment printed by `serde_path_to_error` (`to[1]`) into `to`, `[1]`.
pub fn split_indexes(segment: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        let end = if rest.starts_with('[') {
            rest.find(']').map_or(rest.len(), |e| e + 1)
        } else {
            rest.find('[').unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// `N` of an `[N]` segment.
fn index_of(segment: &str) -> Option<usize> {
    segment.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Indentation and content of a line, `None` for blank lines and comments.
fn content_of(line: &str) -> Option<(isize, &str)> {
    let content = line.trim_start();
    if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
        return None;
    }
    Some(((line.len() - content.len()) as isize, content))
}

/// The line and indentation of `key` inside the block that starts at `start`.
/// `item_line` is a sequence item's first line (`- key: value`): its key counts
/// as indented past the dash.
fn find_key(
    lines: &[&str],
    start: usize,
    parent_indent: isize,
    item_line: Option<usize>,
    key: &str,
) -> Option<(usize, isize)> {
    for (index, line) in lines.iter().enumerate().skip(start) {
        let Some((mut indent, mut content)) = content_of(line) else {
            continue;
        };
        if item_line == Some(index) {
            let inner = content.strip_prefix('-').unwrap_or(content);
            let inner_trimmed = inner.trim_start();
            indent += 1 + (inner.len() - inner_trimmed.len()) as isize;
            content = inner_trimmed;
        }
        if indent <= parent_indent {
            break; // left the parent's block
        }
        if key_of(content) == Some(key) {
            return Some((index, indent));
        }
    }
    None
}

/// The line and indentation of the `n`-th item of the block sequence that starts
/// at `start` (its dashes may be at the parent key's own indentation).
fn find_item(lines: &[&str], start: usize, parent_indent: isize, n: usize) -> Option<(usize, isize)> {
    let mut dash_indent = None;
    let mut count = 0;
    for (index, line) in lines.iter().enumerate().skip(start) {
        let Some((indent, content)) = content_of(line) else {
            continue;
        };
        let is_item = content == "-" || content.starts_with("- ");
        let dash = match dash_indent {
            None if is_item && indent >= parent_indent => *dash_indent.insert(indent),
            None => return None, // not a block sequence (or a flow one)
            Some(d) => d,
        };
        if indent < dash || (indent == dash && !is_item) {
            return None;
        }
        if indent == dash {
            if count == n {
                return Some((index, indent));
            }
            count += 1;
        }
    }
    None
}

/// The key of a `key: value` line, unquoted.
fn key_of(content: &str) -> Option<&str> {
    let content = content.strip_prefix("- ").unwrap_or(content);
    let (key, _) = content.split_once(':')?;
    let key = key.trim();
    let unquoted = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')));
    Some(unquoted.unwrap_or(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
defaults:
  timezone: UTC
jobs:
  hello:
    # comment
    shell: echo hi
    retry: { max_attempts: x }
  \"quoted.job\":
    schedule: '* * * * *'
    retry:
      max_attempts: 3
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(TEXT, &["defaults", "timezone"]), Some(2));
        assert_eq!(line_of(TEXT, &["jobs", "hello", "shell"]), Some(6));
        assert_eq!(line_of(TEXT, &["jobs", "quoted.job", "schedule"]), Some(9));
        assert_eq!(
            line_of(TEXT, &["jobs", "quoted.job", "retry", "max_attempts"]),
            Some(11)
        );
    }

    #[test]
    fn flow_mappings_answer_with_the_enclosing_line() {
        assert_eq!(line_of(TEXT, &["jobs", "hello", "retry", "max_attempts"]), Some(7));
    }

    #[test]
    fn finds_sequence_items_and_their_keys() {
        let text = "\
rules:
  - name: a
    channels:
      - x
      - y
  # comment
  - name: b
    event: run_dead
other:
- { name: c }
- name: d
  event: run_failed
";
        assert_eq!(line_of(text, &["rules", "[0]"]), Some(2));
        assert_eq!(line_of(text, &["rules", "[0]", "name"]), Some(2));
        assert_eq!(line_of(text, &["rules", "[0]", "channels", "[1]"]), Some(5));
        assert_eq!(line_of(text, &["rules", "[1]", "event"]), Some(8));
        assert_eq!(
            line_of(text, &["rules", "[0]", "event"]),
            Some(2),
            "not the next item's key"
        );
        assert_eq!(line_of(text, &["rules", "[2]"]), Some(1));
        assert_eq!(line_of(text, &["other", "[0]", "name"]), Some(10), "flow item");
        assert_eq!(
            line_of(text, &["other", "[1]", "event"]),
            Some(12),
            "dashes at the parent's indent"
        );
    }

    #[test]
    fn displays_and_splits_index_segments() {
        assert_eq!(
            display_path(&["rules", "[1]", "channels", "[0]"]),
            "rules[1].channels[0]"
        );
        assert_eq!(split_indexes("to[1]"), vec!["to", "[1]"]);
        assert_eq!(split_indexes("[0][2]"), vec!["[0]", "[2]"]);
        assert_eq!(split_indexes("plain"), vec!["plain"]);
    }

    #[test]
    fn does_not_leave_the_parent_block() {
        // `schedule` exists only under quoted.job, not under hello.
        assert_eq!(line_of(TEXT, &["jobs", "hello", "schedule"]), Some(4));
        assert_eq!(line_of(TEXT, &["nothing"]), None);
    }
}
