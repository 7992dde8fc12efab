//! Linear pre-scans of nesting depth, run before a parser sees the text.
//!
//! serde_yaml_ng's parse time grows with the square of the nesting depth (a
//! 280 KB document of nested `[` kept the controller busy for 42 s), and deep
//! JSON would hit serde_json's recursion limit of 128 with an unhelpful
//! message. These scans look at each byte once and answer where the document
//! first goes deeper than the limit, so that the parser is never called on it.
//!
//! The YAML scan counts, at every point, the block levels (one per indentation
//! level still open, plus one per `- `/`? ` marker opening a nested node on the
//! same line) plus the flow levels (`[`, `{` opening a node). Brackets and quote
//! marks count only where a node may start (after `: `, `- `, `[`, `{`, `,`, at
//! the start of a line), so `echo a[0` in a plain scalar, quotes inside words
//! (`it's`), comments and the content of block scalars (`|`, `>`) are ignored.
//! It can over-count a little on exotic documents; real configuration files
//! stay far below the default limit of 32.

/// Where a YAML document first nests deeper than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line.
    pub line: usize,
    /// The depth reached there.
    pub depth: usize,
}

/// Scans a YAML document; `Err` where it first nests deeper than `limit`.
pub fn check_yaml(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar: the quote byte.
    let mut quote: Option<u8> = None;
    // Inside a block scalar whose parent line had this indentation.
    let mut block_scalar: Option<usize> = None;
    for (index, line) in text.split('\n').enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let blank = bytes[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut line_depth = 0;
        let mut i = indent;
        if quote.is_none() && flow == 0 {
            if blank || bytes[indent] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            line_depth = indents.len();
        } else {
            i = 0;
        }
        let mut node_start = quote.is_none();
        while i < bytes.len() {
            let b = bytes[i];
            if let Some(q) = quote {
                if q == b'"' && b == b'\\' {
                    i += 2;
                    continue;
                }
                if b == q {
                    if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    node_start = false;
                }
                i += 1;
                continue;
            }
            let next_is_space = bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => break,
                b'"' | b'\'' if node_start => {
                    quote = Some(b);
                    node_start = false;
                }
                b'[' | b'{' if node_start => {
                    flow += 1;
                    let depth = line_depth + flow;
                    if depth > limit {
                        return Err(TooDeep { line: index + 1, depth });
                    }
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    node_start = false;
                }
                b',' if flow > 0 => node_start = true,
                b'-' | b'?' if node_start && next_is_space && flow == 0 => {
                    // A nested sequence entry (or complex key) on the same line.
                    if i > indent {
                        line_depth += 1;
                        if line_depth + flow > limit {
                            return Err(TooDeep {
                                line: index + 1,
                                depth: line_depth + flow,
                            });
                        }
                    }
                }
                b':' if next_is_space || (flow > 0 && matches!(bytes.get(i + 1), Some(b',' | b']' | b'}'))) => {
                    node_start = true;
                    i += 1;
                    continue;
                }
                b'&' | b'!' | b'*' if node_start => {
                    // Anchor, tag or alias: skip the token, a node may still follow.
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    continue;
                }
                b'|' | b'>' if node_start && flow == 0 => {
                    // A block scalar: the following more-indented lines are its text.
                    block_scalar = Some(indent);
                    break;
                }
                _ => node_start = false,
            }
            i += 1;
        }
        if line_depth + flow > limit {
            return Err(TooDeep {
                line: index + 1,
                depth: line_depth + flow,
            });
        }
    }
    Ok(())
}

/// Scans a JSON text; `Err(depth)` when arrays and objects nest deeper than
/// `limit` (the depth reached, `limit + 1`). Strings are skipped with their
/// escapes; anything else is left to the parser.
pub fn check_json(text: &str, limit: usize) -> Result<(), usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_nesting_is_counted() {
        let deep = format!("a: {}1{}", "[".repeat(40), "]".repeat(40));
        let err = check_yaml(&deep, 32).unwrap_err();
        assert_eq!(err, TooDeep { line: 1, depth: 33 });
        let fine = format!("a: {}1{}", "[".repeat(10), "]".repeat(10));
        check_yaml(&fine, 32).unwrap();
        // Across lines, with braces.
        let multi = "x:\n".to_string() + &"{a:\n".repeat(40);
        assert!(check_yaml(&multi, 32).is_err());
    }

    #[test]
    fn block_nesting_is_counted() {
        let mut doc = String::new();
        for level in 0..40 {
            doc.push_str(&format!("{}k{level}:\n", " ".repeat(level * 2)));
        }
        let err = check_yaml(&doc, 32).unwrap_err();
        assert_eq!(err.line, 33);
        let dashes = format!("a:\n  {}x\n", "- ".repeat(40));
        assert!(check_yaml(&dashes, 32).is_err());
        // Dedenting closes levels.
        let mut doc = String::new();
        for _ in 0..100 {
            doc.push_str("a:\n  b:\n    c: 1\n");
        }
        check_yaml(&doc, 4).unwrap();
    }

    #[test]
    fn scalars_comments_and_block_text_are_not_structure() {
        let doc = r#"
jobs:
  a:
    shell: echo "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" it's a[0 {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{
    description: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ '' [[[[['
    tags: ["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]
    # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
  b:
    shell: |
      if [[ -f x ]]; then echo "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["; fi
      {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{
    selector: &sel {zone: "a{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"}
"#;
        check_yaml(doc, 8).unwrap();
        // The shipped configuration passes a small limit.
        let shipped = include_str!("../../../config/scheduler.yaml");
        check_yaml(shipped, 12).unwrap();
    }

    #[test]
    fn json_depth() {
        check_json(&format!("{}{}", "[".repeat(64), "]".repeat(64)), 64).unwrap();
        assert_eq!(
            check_json(&format!("{}{}", "[".repeat(65), "]".repeat(65)), 64),
            Err(65)
        );
        check_json(r#"{"a": "[[[[[[[[[[[[[[[[[[[[\"[[[[[[[[[[[[[["}"#, 2).unwrap();
        assert!(check_json(r#"{"a": {"b": [1]}}"#, 2).is_err());
    }

    #[test]
    fn scan_is_linear() {
        let deep = "[".repeat(280_000);
        let started = std::time::Instant::now();
        assert!(check_yaml(&deep, 32).is_err());
        assert!(check_json(&deep, 64).is_err());
        let lines = "a: [1, 2, {b: c}]\n".repeat(100_000);
        check_yaml(&lines, 32).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    /// Measurement for docs/decisions.md (run with `--ignored --nocapture`):
    /// serde_yaml_ng's time on nested brackets against the pre-scan's.
    #[test]
    #[ignore]
    fn measure_parser_against_scan() {
        for n in [5_000usize, 10_000, 20_000, 140_000] {
            let doc = format!("jobs: {}{}", "[".repeat(n), "]".repeat(n));
            let started = std::time::Instant::now();
            let scan = check_yaml(&doc, 32);
            let scan_time = started.elapsed();
            let parse_time = if n <= 20_000 {
                let started = std::time::Instant::now();
                let parsed = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&doc);
                format!(
                    "{:?} ({})",
                    started.elapsed(),
                    if parsed.is_ok() { "ok" } else { "error" }
                )
            } else {
                "not run".to_string()
            };
            println!(
                "{} bytes: scan {scan_time:?} ({scan:?}), serde_yaml_ng {parse_time}",
                doc.len()
            );
        }
        let laughs = include_str!("depth_laughs.yaml");
        let started = std::time::Instant::now();
        let parsed = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(laughs);
        println!(
            "billion laughs: {:?} in {:?}",
            parsed.map(|_| "parsed"),
            started.elapsed()
        );
    }
}
