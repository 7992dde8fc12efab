//! `enqueue --batch FILE`: a JSON array of runs, enqueued atomically by
//! `EnqueueBatch`; items may depend on each other by `ref`.
//!
//! ```json
//! [{"ref": "a", "job": "extract"},
//!  {"job": "load", "payload": {"day": "2026-01-01"}, "priority": "high",
//!   "depends_on": ["a"], "key": "load-2026-01-01", "delay": "5m"}]
//! ```
//!
//! Only `job` is required; `delay` and `at` exclude each other. Errors name the
//! source, the (0-based) array index and the field: `runs.json[2]: unknown field
//! `prio``, `<stdin>[0].depends_on: expected an array of strings`.

use serde_json::{Map, Value};
use worker_proto::v1 as pb;

use super::{Ctx, read_input};
use crate::error::CliError;
use crate::model::BatchResult;
use crate::output::{Table, dash, emit};

/// The fields an item may have.
const FIELDS: [&str; 8] = ["ref", "job", "payload", "priority", "depends_on", "key", "delay", "at"];

/// Reads `file` (`-` = stdin), enqueues its runs and prints `[{ref, id, duplicate}]`.
pub async fn run(ctx: &mut Ctx, file: &str) -> anyhow::Result<()> {
    let (text, source) = read_input(file, "--batch")?;
    let runs = parse(&text, &source)?;
    let refs: Vec<Option<String>> = runs
        .iter()
        .map(|r| Some(r.r#ref.clone()).filter(|r| !r.is_empty()))
        .collect();
    let results = ctx
        .client
        .enqueue_batch(pb::EnqueueBatchRequest { runs })
        .await?
        .into_inner()
        .results;
    let results: Vec<BatchResult> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| BatchResult {
            reference: refs.get(i).cloned().flatten(),
            id: r.run.map(|run| run.id).unwrap_or_default(),
            duplicate: r.duplicate,
        })
        .collect();
    emit(ctx.format, &results, || results_table(&results))
}

/// `REF ID DUPLICATE`, one line per run.
pub fn results_table(results: &[BatchResult]) -> String {
    let mut table = Table::new(["REF", "ID", "DUPLICATE"]);
    for r in results {
        table.row([
            dash(r.reference.as_deref()),
            r.id.clone(),
            if r.duplicate { "yes" } else { "no" }.to_string(),
        ]);
    }
    table.render()
}

/// Parses a batch file into `EnqueueBatch` items (trigger `api`).
pub fn parse(text: &str, source: &str) -> Result<Vec<pb::EnqueueRequest>, CliError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        CliError::usage(format!(
            "{source}: not valid JSON: {e}{}",
            near(text, e.line(), e.column())
        ))
    })?;
    let Value::Array(items) = value else {
        return Err(CliError::usage(format!(
            "{source}: expected a JSON array of runs, found {}",
            kind(&value)
        )));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(fields) => parse_item(fields, &format!("{source}[{i}]")),
            other => Err(CliError::usage(format!(
                "{source}[{i}]: expected an object, found {}",
                kind(&other)
            ))),
        })
        .collect()
}

/// One item; `at` is its location (`file[i]`) for error messages.
fn parse_item(mut fields: Map<String, Value>, at: &str) -> Result<pb::EnqueueRequest, CliError> {
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(CliError::usage(format!(
            "{at}: unknown field `{unknown}` (expected {})",
            FIELDS.join(", ")
        )));
    }
    // A number is read as the duration's text, so `"delay": 30` gets the same
    // answer as `--delay 30` and `timeout: 30` in a job definition.
    if let Some(Value::Number(n)) = fields.get("delay") {
        let text = n.to_string();
        fields.insert("delay".into(), Value::String(text));
    }
    let mut string = |name: &str| -> Result<Option<String>, CliError> {
        match fields.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(CliError::usage(format!(
                "{at}.{name}: expected a string, found {}",
                kind(&other)
            ))),
        }
    };
    let job = string("job")?.ok_or_else(|| CliError::usage(format!("{at}: missing field `job`")))?;
    let reference = string("ref")?.unwrap_or_default();
    let priority = string("priority")?.unwrap_or_default();
    let key = string("key")?.unwrap_or_default();
    let delay = string("delay")?;
    let not_before = string("at")?.unwrap_or_default();
    if delay.is_some() && !not_before.is_empty() {
        return Err(CliError::usage(format!("{at}: `delay` and `at` exclude each other")));
    }
    let delay_ms = match delay {
        None => 0,
        Some(text) => crate::cli::parse_ms(&text).map_err(|e| CliError::usage(format!("{at}.delay: {e}")))?,
    };
    let depends_on = match fields.remove("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|id| match id {
                Value::String(s) => Ok(s),
                _ => Err(()),
            })
            .collect::<Result<_, ()>>()
            .map_err(|()| CliError::usage(format!("{at}.depends_on: expected an array of strings")))?,
        Some(_) => {
            return Err(CliError::usage(format!(
                "{at}.depends_on: expected an array of strings"
            )));
        }
    };
    let payload = fields.remove("payload").map(|v| v.to_string()).unwrap_or_default();
    Ok(pb::EnqueueRequest {
        job,
        payload,
        priority,
        trigger: "api".to_string(),
        depends_on,
        idempotency_key: key,
        delay_ms,
        not_before,
        r#ref: reference,
    })
}

/// What the text says just before `line`:`column` (1-based, where a JSON
/// error was found), so the message shows the field it is in: ` (after
/// `"payload": N`)`. Empty when there is nothing to show.
fn near(text: &str, line: usize, column: usize) -> String {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let before: Vec<char> = line_text.chars().take(column).collect();
    let start = before.len().saturating_sub(40);
    let shown: String = before[start..].iter().collect();
    let shown = crate::output::escape_controls(shown.trim());
    if shown.is_empty() {
        String::new()
    } else {
        format!(" (after `{shown}`)")
    }
}

/// The JSON type of `value`, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        let err = parse(text, "runs.json").unwrap_err();
        assert_eq!(err.code, 2, "{}", err.message);
        err.message
    }

    #[test]
    fn parses_every_field() {
        let runs = parse(
            r#"[
              {"ref": "a", "job": "extract"},
              {"job": "load", "payload": {"day": "2026-01-01", "n": [1, 2]}, "priority": "high",
               "depends_on": ["a", "01JRUN"], "key": "k", "delay": "1h30m"},
              {"job": "report", "payload": "text", "at": "2026-01-01T00:00:00Z", "key": null}
            ]"#,
            "runs.json",
        )
        .unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!((runs[0].r#ref.as_str(), runs[0].job.as_str()), ("a", "extract"));
        assert_eq!(runs[0].payload, "");
        assert_eq!(runs[0].trigger, "api");
        let load = &runs[1];
        assert_eq!(
            serde_json::from_str::<Value>(&load.payload).unwrap(),
            serde_json::json!({"day": "2026-01-01", "n": [1, 2]})
        );
        assert_eq!(load.priority, "high");
        assert_eq!(load.depends_on, ["a", "01JRUN"]);
        assert_eq!(load.idempotency_key, "k");
        assert_eq!(load.delay_ms, 5_400_000);
        assert_eq!(load.not_before, "");
        assert_eq!(runs[2].payload, "\"text\"");
        assert_eq!(runs[2].not_before, "2026-01-01T00:00:00Z");
        assert_eq!(runs[2].idempotency_key, "");
        assert!(parse("[]", "x").unwrap().is_empty());
    }

    #[test]
    fn invalid_json_shows_where() {
        let message = error("[{\"job\": \"hello\",\n  \"payload\": NaN}]");
        assert!(message.starts_with("runs.json: not valid JSON: "), "{message}");
        assert!(message.ends_with("(after `\"payload\": N`)"), "{message}");
        // A string "NaN" is a string payload like any other.
        let runs = parse(r#"[{"job": "hello", "payload": "NaN"}]"#, "x").unwrap();
        assert_eq!(runs[0].payload, "\"NaN\"");
    }

    #[test]
    fn errors_name_the_index_and_the_field() {
        let message = error(r#"[{"job": "a"}, {"job": "b", "prio": "high"}]"#);
        assert!(message.starts_with("runs.json[1]: unknown field `prio`"), "{message}");
        assert_eq!(
            error(r#"[{"job": "a"}, {"ref": "x"}]"#),
            "runs.json[1]: missing field `job`"
        );
        assert_eq!(
            error(r#"[{"job": 3}]"#),
            "runs.json[0].job: expected a string, found a number"
        );
        assert_eq!(
            error(r#"[{"job": "a", "depends_on": "b"}]"#),
            "runs.json[0].depends_on: expected an array of strings"
        );
        assert_eq!(
            error(r#"[{"job": "a", "depends_on": ["b", 1]}]"#),
            "runs.json[0].depends_on: expected an array of strings"
        );
        assert!(error(r#"[{"job": "a", "delay": "5x"}]"#).starts_with("runs.json[0].delay: invalid duration"));
        assert_eq!(
            error(r#"[{"job": "a", "delay": "30"}]"#),
            r#"runs.json[0].delay: invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#
        );
        assert_eq!(
            error(r#"[{"job": "a", "delay": 30}]"#),
            r#"runs.json[0].delay: invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#
        );
        assert_eq!(
            error(r#"[{"job": "a", "delay": "5s", "at": "2026-01-01T00:00:00Z"}]"#),
            "runs.json[0]: `delay` and `at` exclude each other"
        );
        assert_eq!(
            error(r#"[{"job": "a"}, 7]"#),
            "runs.json[1]: expected an object, found a number"
        );
        assert_eq!(
            error(r#"{"job": "a"}"#),
            "runs.json: expected a JSON array of runs, found an object"
        );
        assert!(error("[{").starts_with("runs.json: not valid JSON"));
    }

    #[test]
    fn table_shows_refs_and_duplicates() {
        let text = results_table(&[
            BatchResult {
                reference: Some("a".into()),
                id: "r1".into(),
                duplicate: false,
            },
            BatchResult {
                reference: None,
                id: "r2".into(),
                duplicate: true,
            },
        ]);
        assert_eq!(text, "REF  ID  DUPLICATE\na    r1  no\n-    r2  yes\n");
    }
}
