//! Finds the line of a key path (`jobs.hello.retry.max_attempts`) in a YAML text.
//!
//! serde reports *what* is wrong with a field and `serde_path_to_error` *which*
//! field; this module adds *where*. It follows block-style mappings by
//! indentation, which is how configuration files are written; inside a flow
//! mapping (`retry: { max_attempts: x }`) it answers with the line of the
//! innermost block key it found, which is the line the value is on.

/// Line (1-based) of the deepest key of `path` that can be found in `text`.
/// Returns `None` when not even the first segment is found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    let mut start = 0;
    let mut parent_indent: isize = -1;
    for segment in path {
        let mut hit = None;
        for (index, line) in lines.iter().enumerate().skip(start) {
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
                continue;
            }
            let indent = (line.len() - content.len()) as isize;
            if indent <= parent_indent {
                break; // left the parent's block
            }
            if key_of(content) == Some(segment) {
                hit = Some((index, indent));
                break;
            }
        }
        match hit {
            Some((index, indent)) => {
                found = Some(index + 1);
                start = index + 1;
                parent_indent = indent;
            }
            None => break,
        }
    }
    found
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
    fn does_not_leave_the_parent_block() {
        // `schedule` exists only under quoted.job, not under hello.
        assert_eq!(line_of(TEXT, &["jobs", "hello", "schedule"]), Some(4));
        assert_eq!(line_of(TEXT, &["nothing"]), None);
    }
}
