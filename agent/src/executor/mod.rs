//! Running one attempt: the executor kinds and what they have in common.
//!
//! Layout:
//!
//! * this module: the shared vocabulary — [`Context`] (what the attempt is),
//!   [`StopSignal`] / [`StopHandle`] (how a running attempt is told to stop, by
//!   a `Cancel`, a drain, or its own timeout), [`Report`] (what came out) — and
//!   [`execute`], which picks the executor and refuses kinds that are not
//!   enabled on this agent;
//! * [`shell`]: child processes in their own process group, reporting
//!   metrics and spans through [`markers`] on stdout;
//! * [`http`]: one HTTP request, with [`template`] filling its URL, headers
//!   and body from the payload;
//! * [`builtin`]: tasks compiled into the agent (`noop`, `sleep`, `digest`);
//! * [`handler`]: handlers an application registered through the SDK.
//!
//! Executors never return errors: every way an attempt can go wrong (spawn
//! failure, non-zero exit, timeout, bad spec) is an outcome reported to the
//! controller, which owns the retry decision.

pub mod builtin;
pub mod handler;
pub mod http;
pub mod markers;
pub mod shell;
pub mod template;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use worker_proto::v1::ExecutorSpec;
use worker_proto::v1::executor_spec::Kind;

use crate::measure::Measures;

/// How an attempt ended, as named in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The work completed successfully.
    Succeeded,
    /// The work failed (non-zero exit, spawn failure, bad spec, ...).
    Failed,
    /// The attempt ran past its timeout and was killed.
    TimedOut,
    /// The attempt was cancelled by the controller or by a drain.
    Cancelled,
}

impl Outcome {
    /// The lower-case protocol name: `succeeded`, `failed`, `timed_out`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The result of one attempt, before timestamps are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Process exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Why it failed; empty on success.
    pub error: String,
    /// Capped tail of the output (see [`crate::output::TailBuffer`]).
    pub output: String,
    /// The failure must not be retried.
    pub permanent: bool,
    /// Metrics and spans the job reported.
    pub measures: Measures,
    /// A retryable failure asks to be retried no sooner than this (an HTTP
    /// `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Report {
    /// A successful report with the given output.
    pub fn succeeded(output: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Succeeded,
            exit_code: None,
            error: String::new(),
            output: output.into(),
            permanent: false,
            measures: Measures::default(),
            retry_after: None,
        }
    }

    /// A failed report with the given error.
    pub fn failed(error: impl Into<String>, permanent: bool) -> Self {
        Self {
            outcome: Outcome::Failed,
            exit_code: None,
            error: error.into(),
            output: String::new(),
            permanent,
            measures: Measures::default(),
            retry_after: None,
        }
    }

    /// The report of an attempt stopped by `stop`, with the output gathered so far.
    pub fn stopped(stop: Stop, output: String) -> Self {
        let (outcome, error) = match stop {
            Stop::Cancelled => (Outcome::Cancelled, "cancelled".to_string()),
            Stop::TimedOut(after) => (
                Outcome::TimedOut,
                format!("timed out after {}", worker_duration::format(after)),
            ),
        };
        Self {
            outcome,
            exit_code: None,
            error,
            output,
            permanent: false,
            measures: Measures::default(),
            retry_after: None,
        }
    }
}

/// What the attempt is and the limits it runs under.
#[derive(Debug, Clone)]
pub struct Context {
    /// Run id, exported to shell jobs as `WORKER_RUN_ID`.
    pub run_id: String,
    /// Attempt number, exported as `WORKER_ATTEMPT`.
    pub attempt: u32,
    /// Job name, exported as `WORKER_JOB`.
    pub job: String,
    /// Payload JSON text (may be empty).
    pub payload: String,
    /// SIGTERM → SIGKILL grace when a process group is killed.
    pub kill_grace: Duration,
    /// Bytes of output tail to keep.
    pub output_cap: usize,
    /// Where output also goes while the attempt runs, to be streamed to the
    /// controller (`None`: not streamed).
    pub live: Option<crate::live::LiveOutput>,
    /// What `http` attempts share: TLS roots and the variables they may read.
    pub http: http::HttpSettings,
    /// The handlers registered through the SDK (empty on a plain agent).
    pub handlers: crate::sdk::Handlers,
    /// The controller's client API, for builtins that call it (`digest`,
    /// `backup`);
    /// `None` where there is no controller (unit tests).
    pub controller: Option<crate::ControllerLink>,
}

/// Why a running attempt must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Cancelled by the controller or by a drain.
    Cancelled,
    /// Its timeout (the contained duration) elapsed.
    TimedOut(Duration),
}

/// The controlling side of a [`StopSignal`]: cancels the attempt.
#[derive(Debug, Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Asks the attempt to stop with outcome `cancelled`. Idempotent.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

/// Resolves when the attempt must stop: on cancel, or when its timeout elapses.
#[derive(Debug)]
pub struct StopSignal {
    cancel: watch::Receiver<bool>,
    timeout: Option<(Duration, Instant)>,
}

impl StopSignal {
    /// A signal that fires after `timeout` (counted from now), or never when
    /// `None`, unless the returned handle cancels it first.
    pub fn new(timeout: Option<Duration>) -> (StopHandle, StopSignal) {
        let (tx, rx) = watch::channel(false);
        let timeout = timeout.map(|t| (t, Instant::now() + t));
        (StopHandle(tx), StopSignal { cancel: rx, timeout })
    }

    /// Waits until the attempt must stop. Cancel-safe: can be polled again.
    pub async fn wait(&mut self) -> Stop {
        let (limit, deadline) = match self.timeout {
            Some((limit, deadline)) => (limit, Some(deadline)),
            None => (Duration::ZERO, None),
        };
        let cancelled = async {
            if self.cancel.wait_for(|cancelled| *cancelled).await.is_err() {
                // Handle dropped without cancelling: only the timeout can fire.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = cancelled => Stop::Cancelled,
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                Stop::TimedOut(limit)
            }
        }
    }
}

/// Runs one attempt with the executor `spec` names, if that kind is among
/// `enabled`; otherwise reports a permanent failure naming the kind.
pub async fn execute(spec: Option<&ExecutorSpec>, enabled: &[String], ctx: &Context, stop: StopSignal) -> Report {
    let Some(kind) = spec.and_then(|s| s.kind.as_ref()) else {
        return Report::failed("assignment has no executor spec", true);
    };
    let name = match kind {
        Kind::Shell(_) => "shell",
        Kind::Http(_) => "http",
        Kind::Builtin(_) => "builtin",
        Kind::Handler(_) => "handler",
    };
    if !enabled.iter().any(|e| e == name) {
        return Report::failed(format!("executor `{name}` is not enabled on this agent"), true);
    }
    match kind {
        Kind::Shell(spec) => shell::run(spec, ctx, stop).await,
        Kind::Builtin(spec) => builtin::run(spec, ctx, stop).await,
        Kind::Http(spec) => http::run(spec, ctx, stop).await,
        Kind::Handler(spec) => handler::run(spec, ctx, stop).await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use worker_proto::v1::BuiltinSpec;

    pub(crate) fn context() -> Context {
        Context {
            run_id: "run-1".into(),
            attempt: 1,
            job: "test.job".into(),
            payload: String::new(),
            kill_grace: Duration::from_millis(300),
            output_cap: 64 * 1024,
            live: None,
            http: http::HttpSettings::default(),
            handlers: Default::default(),
            controller: None,
        }
    }

    #[tokio::test]
    async fn refuses_disabled_executor() {
        let spec = ExecutorSpec {
            kind: Some(Kind::Builtin(BuiltinSpec {
                name: "noop".into(),
                ..Default::default()
            })),
        };
        let (_h, stop) = StopSignal::new(None);
        let report = execute(Some(&spec), &["shell".into()], &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
        assert!(report.error.contains("`builtin`"), "{}", report.error);
    }

    #[tokio::test]
    async fn refuses_missing_spec() {
        let (_h, stop) = StopSignal::new(None);
        let report = execute(None, &["shell".into()], &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
    }

    #[tokio::test]
    async fn stop_signal_fires_on_cancel_and_timeout() {
        let (handle, mut stop) = StopSignal::new(None);
        handle.cancel();
        assert_eq!(stop.wait().await, Stop::Cancelled);

        let (_handle, mut stop) = StopSignal::new(Some(Duration::from_millis(20)));
        assert_eq!(stop.wait().await, Stop::TimedOut(Duration::from_millis(20)));
    }
}
