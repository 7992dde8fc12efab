//! `enqueue JOB` and `jobs run NAME`: create a run, optionally wait for its end.

use std::io::Read as _;

use worker_proto::v1 as pb;

use super::Ctx;
use super::runs::run_detail;
use crate::cli::EnqueueArgs;
use crate::duration::fmt_ms;
use crate::error::CliError;
use crate::model::{Run, RunId};
use crate::output::emit;

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

/// Enqueues a run; prints its id, or with `--wait` the finished run (exit 1
/// unless it succeeded).
pub async fn run(ctx: &mut Ctx, args: EnqueueArgs, trigger: Trigger) -> anyhow::Result<()> {
    let payload = match &args.payload {
        Some(text) => read_payload(text)?,
        None => String::new(),
    };
    let request = pb::EnqueueRequest {
        job: args.job.clone(),
        payload,
        priority: args.priority.clone().unwrap_or_default(),
        trigger: trigger.as_str().to_string(),
    };
    let response = ctx.client.enqueue(request).await?.into_inner();
    let run = response
        .run
        .ok_or_else(|| CliError::failed("the controller answered without a run"))?;
    if !args.wait {
        let id = RunId { id: run.id };
        return emit(ctx.format, &id, || id.id.clone());
    }
    let timeout_ms = args.timeout.unwrap_or(0);
    let run: Run = ctx
        .client
        .wait_run(pb::WaitRunRequest { id: run.id, timeout_ms })
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
