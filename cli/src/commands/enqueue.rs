//! `enqueue JOB` and `jobs run NAME`: create a run, optionally wait for its end;
//! `enqueue --batch FILE`: create many runs at once.

use std::io::Read as _;

use worker_proto::v1 as pb;

use super::runs::run_detail;
use super::{Ctx, batch};
use crate::cli::{EnqueueArgs, RunOptions};
use crate::error::CliError;
use crate::model::{Enqueued, Run};
use crate::output::fmt_ms;
use crate::output::{Format, emit};

/// The `trigger` recorded on the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `jobs run` / `job`.
    Manual,
    /// `enqueue`.
    Api,
}

impl Trigger {
    /// The proto name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Api => "api",
        }
    }
}

/// States a run never leaves.
pub const TERMINAL_STATES: [&str; 3] = ["succeeded", "dead", "cancelled"];

/// Note printed on stderr (table mode) when the enqueue returned an existing run.
pub const DUPLICATE_NOTE: &str = "duplicate of an existing run (idempotency key)";

/// `enqueue`: one run of a job (trigger `api`), or the runs of `--batch FILE`.
pub async fn run(ctx: &mut Ctx, args: EnqueueArgs) -> anyhow::Result<()> {
    match (args.batch, args.job) {
        (Some(file), _) => batch::run(ctx, &file).await,
        (None, Some(job)) => run_one(ctx, job, args.run, Trigger::Api).await,
        (None, None) => Err(CliError::usage("enqueue: a JOB or --batch FILE is required").into()),
    }
}

/// Enqueues one run of `job`; prints its id (and whether it is a duplicate),
/// with `--wait` the finished run, with `--follow` its output as it comes
/// (both: exit 1 unless it succeeded).
pub async fn run_one(ctx: &mut Ctx, job: String, opts: RunOptions, trigger: Trigger) -> anyhow::Result<()> {
    let payload = match &opts.payload {
        Some(text) => read_payload(text)?,
        None => String::new(),
    };
    let request = pb::EnqueueRequest {
        job,
        payload,
        priority: opts.priority.clone().unwrap_or_default(),
        trigger: trigger.as_str().to_string(),
        depends_on: opts.depends_on.clone(),
        idempotency_key: opts.key.clone().unwrap_or_default(),
        delay_ms: opts.delay.unwrap_or(0),
        not_before: opts.at.clone().unwrap_or_default(),
        r#ref: String::new(),
    };
    let response = ctx.client.enqueue(request).await?.into_inner();
    let enqueued =
        Enqueued::from_proto(response).ok_or_else(|| CliError::failed("the controller answered without a run"))?;
    if opts.follow {
        if ctx.format == Format::Table {
            eprintln!(
                "run {}{}",
                enqueued.id,
                if enqueued.duplicate {
                    " (duplicate of an existing run)"
                } else {
                    ""
                }
            );
        }
        return super::logs::follow(ctx, enqueued.id).await;
    }
    if !opts.wait {
        if enqueued.duplicate && ctx.format == Format::Table {
            eprintln!("{DUPLICATE_NOTE}");
        }
        return emit(ctx.format, &enqueued, || enqueued.id.clone());
    }
    let timeout_ms = opts.timeout.unwrap_or(0);
    let run: Run = ctx
        .client
        .wait_run(pb::WaitRunRequest {
            id: enqueued.id,
            timeout_ms,
        })
        .await?
        .into_inner()
        .into();
    emit(ctx.format, &run, || run_detail(&run))?;
    check_outcome(&run, timeout_ms)
}

/// `Ok` when the awaited run succeeded, else the exit-1 error describing why.
pub fn check_outcome(run: &Run, timeout_ms: u64) -> anyhow::Result<()> {
    if run.state == "succeeded" {
        return Ok(());
    }
    let message = if TERMINAL_STATES.contains(&run.state.as_str()) {
        let reason = run.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        format!("run {} ended {}{reason}", run.id, run.state)
    } else if timeout_ms == 0 {
        format!("run {} is still {} (the controller ended the wait)", run.id, run.state)
    } else {
        format!("run {} is still {} after {}", run.id, run.state, fmt_ms(timeout_ms))
    };
    Err(CliError::failed(message).into())
}

/// The `--payload` value: the text itself, or `@FILE` / `@-` (stdin). It is not
/// validated here: the controller checks it and names the field.
pub fn read_payload(value: &str) -> Result<String, CliError> {
    match value.strip_prefix('@') {
        None => Ok(value.to_string()),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("--payload: cannot read stdin: {e}")))?;
            Ok(text)
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("--payload: cannot read `{path}`: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_passed_as_is_or_read_from_a_file() {
        assert_eq!(read_payload("{not json").unwrap(), "{not json");
        let path = std::env::temp_dir().join(format!("workerctl-payload-{}.json", std::process::id()));
        std::fs::write(&path, "{\"big\": true}").unwrap();
        assert_eq!(
            read_payload(&format!("@{}", path.display())).unwrap(),
            "{\"big\": true}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_payload("@/nonexistent/workerctl").unwrap_err().code, 2);
    }

    fn run_in(state: &str) -> Run {
        Run::from(pb::Run {
            id: "r1".into(),
            state: state.into(),
            reason: "exit 3".into(),
            ..Default::default()
        })
    }

    #[test]
    fn only_succeeded_passes() {
        assert!(check_outcome(&run_in("succeeded"), 0).is_ok());
        for state in ["dead", "cancelled", "running", "queued"] {
            let err = check_outcome(&run_in(state), 5000).unwrap_err();
            let (code, message) = crate::error::describe(&err, "");
            assert_eq!(code, 1);
            assert!(message.contains(state), "{message}");
        }
    }
}
