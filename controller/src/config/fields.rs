//! Bounds on the fields of one job that the serde shape cannot express:
//! selector and environment keys, counts and durations that would be absurd
//! (a retry delay of 100 years, a concurrency of four billion), NUL bytes that
//! no process can receive. Called by the job checks; every error names its
//! field and, for a configurable limit, the limit.

use std::time::Duration;

use super::jobs::Checker;
use super::raw::{RawCommand, RawJob, RawShell};
use crate::job::MAX_TIMEOUT;
use crate::limits::{current, echo, exceeds};

/// Largest `max_concurrency`: more parallel runs than any installation has slots.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Largest `max_catch_up`: missed fires run after a restart.
pub const MAX_CATCH_UP: u32 = 10_000;
/// Most `non_retryable_exit_codes`.
pub const MAX_EXIT_CODES: usize = 256;
/// Longest `catch_up_window`.
pub const MAX_CATCH_UP_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// Checks the fields of `raw` (job `name`) that the other checks leave alone.
pub(crate) fn check_job_fields(c: &mut Checker<'_>, name: &str, raw: &RawJob) {
    let at = |field: &'static str| -> [&str; 3] { ["jobs", name, field] };
    let limits = current();
    if let Some(selector) = &raw.selector {
        if selector.len() > limits.labels {
            c.error(
                &at("selector"),
                exceeds(format!("{} entries", selector.len()), "labels", limits.labels),
            );
        }
        for (key, value) in selector {
            if key.is_empty() {
                c.error(&at("selector"), "a selector key must not be empty");
            } else if let Some(problem) = text_problem(key, limits.label_bytes, "label_bytes")
                .or_else(|| text_problem(value, limits.label_bytes, "label_bytes"))
            {
                c.error(&["jobs", name, "selector", key], problem);
            }
        }
    }
    if let Some(n) = raw.max_concurrency
        && n > MAX_CONCURRENCY
    {
        c.error(
            &at("max_concurrency"),
            format!("{n} is over the maximum of {MAX_CONCURRENCY}"),
        );
    }
    if let Some(n) = raw.max_catch_up
        && n > MAX_CATCH_UP
    {
        c.error(
            &at("max_catch_up"),
            format!("{n} is over the maximum of {MAX_CATCH_UP}"),
        );
    }
    if let Some(w) = &raw.catch_up_window
        && let Ok(d) = worker_duration::parse(w)
        && d > MAX_CATCH_UP_WINDOW
    {
        c.error(
            &at("catch_up_window"),
            format!("{w} is longer than the maximum of 366d"),
        );
    }
    if let Some(j) = &raw.jitter
        && let Ok(d) = worker_duration::parse(j)
        && d > MAX_TIMEOUT
    {
        c.error(&at("jitter"), format!("{j} is longer than the maximum of 30d"));
    }
    if let Some(retry) = &raw.retry {
        for (field, value) in [("initial_delay", &retry.initial_delay), ("max_delay", &retry.max_delay)] {
            if let Some(text) = value
                && let Ok(d) = worker_duration::parse(text)
                && d > MAX_TIMEOUT
            {
                c.error(
                    &["jobs", name, "retry", field],
                    format!("{text} is longer than the maximum of 30d"),
                );
            }
        }
        if let Some(codes) = &retry.non_retryable_exit_codes
            && codes.len() > MAX_EXIT_CODES
        {
            c.error(
                &["jobs", name, "retry", "non_retryable_exit_codes"],
                format!("{} codes is over the maximum of {MAX_EXIT_CODES}", codes.len()),
            );
        }
    }
    if let Some(RawShell::Full(shell)) = &raw.shell {
        for (key, value) in shell.env.iter().flatten() {
            let problem = if key.is_empty() {
                Some("an environment variable name must not be empty".to_string())
            } else if key.contains('=') {
                Some(format!("variable name \"{}\" must not contain '='", echo(key)))
            } else if key.contains('\0') || value.contains('\0') {
                Some(format!("variable \"{}\" must not contain NUL bytes", echo(key)))
            } else {
                None
            };
            if let Some(problem) = problem {
                c.error(&["jobs", name, "shell", "env"], problem);
            }
        }
        if shell.cwd.as_deref().is_some_and(|d| d.contains('\0')) {
            c.error(&["jobs", name, "shell", "cwd"], "must not contain NUL bytes");
        }
        if let RawCommand::Argv(argv) = &shell.command
            && argv.iter().any(|a| a.contains('\0'))
        {
            c.error(&["jobs", name, "shell", "command"], "must not contain NUL bytes");
        }
    }
    let script = match &raw.shell {
        Some(RawShell::Script(s)) => Some(s),
        Some(RawShell::Full(full)) => match &full.command {
            RawCommand::Script(s) => Some(s),
            RawCommand::Argv(_) => None,
        },
        None => None,
    };
    if script.is_some_and(|s| s.contains('\0')) {
        c.error(&at("shell"), "the command must not contain NUL bytes");
    }
}

/// Why `text` cannot be a label key or value, if it cannot.
fn text_problem(text: &str, max: usize, limit: &str) -> Option<String> {
    if text.len() > max {
        Some(exceeds(format!("{} bytes", text.len()), limit, max))
    } else if text.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn errors(yaml: &str) -> Vec<String> {
        let lookup = |_: &str| Err("no variables".to_string());
        match super::super::parse_document(Path::new("s.yaml"), yaml, &lookup, super::super::Source::Api) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn selector_and_env_keys_are_checked() {
        let e = errors("jobs:\n  a:\n    shell: x\n    selector: { '': b }\n");
        assert!(
            e[0].contains("jobs.a.selector: a selector key must not be empty"),
            "{e:?}"
        );
        let e = errors("jobs:\n  a:\n    shell: { command: x, env: { 'A=B': c } }\n");
        assert!(
            e[0].contains("jobs.a.shell.env: variable name \"A=B\" must not contain '='"),
            "{e:?}"
        );
        let e = errors("jobs:\n  a:\n    shell: { command: x, env: { '': c } }\n");
        assert!(e[0].contains("must not be empty"), "{e:?}");
        let e = errors("jobs:\n  a:\n    shell: { command: x, env: { \"A\\0\": c } }\n");
        assert!(e[0].contains("NUL"), "{e:?}");
        assert!(errors("jobs:\n  a:\n    shell: { command: x, env: { A_1: 'b=c' } }\n").is_empty());
    }

    #[test]
    fn absurd_counts_and_durations_are_refused() {
        let e = errors("jobs:\n  a:\n    shell: x\n    max_concurrency: 4000000000\n");
        assert!(
            e[0].contains("jobs.a.max_concurrency: 4000000000 is over the maximum"),
            "{e:?}"
        );
        let e = errors("jobs:\n  a:\n    shell: x\n    retry: { max_delay: 36000d }\n");
        assert!(
            e.iter().any(|e| e.contains("jobs.a.retry.max_delay: 36000d is longer")),
            "{e:?}"
        );
        let e = errors("jobs:\n  a:\n    builtin: { name: sleep, duration: 400d }\n");
        assert!(e[0].contains("jobs.a.builtin.duration: 400d is longer"), "{e:?}");
        let e = errors("jobs:\n  a:\n    shell: x\n    max_concurrency: -1\n");
        assert!(e[0].contains("jobs.a.max_concurrency"), "{e:?}");
        let e = errors("jobs:\n  a:\n    shell: x\n    timeout: -5s\n");
        assert!(e[0].contains("jobs.a.timeout"), "{e:?}");
    }
}
