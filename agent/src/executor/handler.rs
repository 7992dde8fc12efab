//! The `handler` executor: runs a handler the SDK registered
//! ([`crate::sdk`]).
//!
//! * The handler named by the spec is looked up in [`Context::handlers`]; one
//!   this agent did not register is a retryable failure (another agent may
//!   have it; the controller should not have sent it here).
//! * Its payload is parsed before it runs: a payload that does not fit its
//!   type is a permanent failure naming serde's error.
//! * It runs on **its own task**, so a panic is caught (a retryable failure
//!   `handler panicked: ...`) and the agent goes on.
//! * When the stop signal fires (cancel, drain, timeout), the handler's
//!   [`HandlerContext::cancelled`] resolves; it then has the agent's kill
//!   grace to return. Either way the attempt ends with the stop's outcome
//!   (`cancelled` / `timed_out`): what the handler returned is only added to
//!   the message, and a handler that does not return in time is aborted.
//! * What it logged is the attempt's output; its metrics and spans go in
//!   [`Report::measures`].

use tracing::Instrument as _;
use worker_proto::v1::HandlerSpec;

use super::{Context, Report, Stop, StopSignal};
use crate::sdk::{HandlerContext, HandlerError, StopReason};

/// Runs the handler `spec` names until it returns or `stop` fires (plus the
/// kill grace).
pub async fn run(spec: &HandlerSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    let Some(handler) = ctx.handlers.get(&spec.name) else {
        let registered = ctx.handlers.names();
        let registered = if registered.is_empty() {
            "none".to_string()
        } else {
            registered.join(", ")
        };
        return Report::failed(
            format!(
                "handler `{}` is not registered on this agent (registered: {registered})",
                spec.name
            ),
            false,
        );
    };
    let (hctx, stopper) = HandlerContext::new(ctx);
    let work = match handler.call(hctx.clone(), &ctx.payload) {
        Ok(work) => work,
        Err(error) => return failure(error, &hctx),
    };
    let span = tracing::info_span!("handler", handler = %spec.name, run_id = %ctx.run_id, attempt = ctx.attempt);
    let mut task = AbortOnDrop(tokio::spawn(work.instrument(span)));

    let ended = tokio::select! {
        joined = &mut task.0 => Ended::Returned(returned(joined)),
        stop = stop.wait() => {
            stopper.stop(StopReason::from(stop));
            match tokio::time::timeout(ctx.kill_grace, &mut task.0).await {
                Ok(joined) => Ended::Stopped(stop, Some(returned(joined))),
                Err(_) => {
                    tracing::warn!(
                        handler = %spec.name,
                        run_id = %ctx.run_id,
                        attempt = ctx.attempt,
                        grace = %worker_duration::format(ctx.kill_grace),
                        "handler did not return after its stop; aborting it"
                    );
                    task.0.abort();
                    Ended::Stopped(stop, None)
                }
            }
        }
    };

    match ended {
        Ended::Returned(Ok(())) => {
            let (output, measures) = hctx.finish();
            let mut report = Report::succeeded(output);
            report.measures = measures;
            report
        }
        Ended::Returned(Err(error)) => failure(error, &hctx),
        Ended::Stopped(stop, returned) => {
            let (output, measures) = hctx.finish();
            let mut report = Report::stopped(stop, output);
            match returned {
                Some(Ok(())) => {}
                Some(Err(error)) => report.error = format!("{}; the handler returned: {error}", report.error),
                None => {
                    report.error = format!(
                        "{}; the handler did not return within {} and was aborted",
                        report.error,
                        worker_duration::format(ctx.kill_grace)
                    );
                }
            }
            report.measures = measures;
            report
        }
    }
}

/// How the handler's task ended.
enum Ended {
    /// It returned (or panicked) before any stop.
    Returned(Result<(), HandlerError>),
    /// The attempt was stopped; what the handler returned within the kill
    /// grace, `None` when it was aborted.
    Stopped(Stop, Option<Result<(), HandlerError>>),
}

/// The handler's result from its task's: a panic is a retryable failure.
fn returned(joined: Result<Result<(), HandlerError>, tokio::task::JoinError>) -> Result<(), HandlerError> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(HandlerError::retryable(format!(
            "handler panicked: {}",
            panic_message(error.into_panic())
        ))),
        Err(error) => Err(HandlerError::retryable(format!("handler task failed: {error}"))),
    }
}

/// The report of a handler that failed with `error`.
fn failure(error: HandlerError, hctx: &HandlerContext) -> Report {
    let (output, measures) = hctx.finish();
    let mut report = Report::failed(error.message(), error.is_permanent());
    report.retry_after = error.retry_delay();
    report.output = output;
    report.measures = measures;
    report
}

/// The text of a panic's payload (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a payload that is not text)".to_string()
    }
}

/// Aborts the handler's task if the attempt is dropped before it ended.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::executor::Outcome;
    use crate::executor::tests::context;
    use crate::sdk::{Agent, AgentBuilder};

    #[derive(Debug, serde::Deserialize)]
    struct Lead {
        lead_id: String,
        #[serde(default)]
        wait_ms: u64,
    }

    /// Succeeds for lead `ok`, fails retryably for `busy` (asking for a 2s
    /// delay) and permanently for `gone`, panics for `boom`; waits `wait_ms`
    /// first, or until its stop, logging `cancelled: REASON`.
    async fn enrich(ctx: HandlerContext, lead: Lead) -> Result<(), HandlerError> {
        ctx.log(format!("lead {}", lead.lead_id));
        {
            let _fetch = ctx.span("fetch");
            tokio::select! {
                reason = ctx.cancelled() => {
                    ctx.log(format!("cancelled: {reason}"));
                    return Err(HandlerError::retryable(format!("gave up: {reason}")));
                }
                () = tokio::time::sleep(Duration::from_millis(lead.wait_ms)) => {}
            }
        }
        ctx.metric("items", 1);
        match lead.lead_id.as_str() {
            "busy" => Err(HandlerError::retryable("service busy").retry_after(Duration::from_secs(2))),
            "gone" => Err(HandlerError::permanent("no such lead")),
            "boom" => panic!("boom at {}", lead.lead_id),
            _ => Ok(()),
        }
    }

    /// Never looks at its stop signal.
    async fn stubborn(ctx: HandlerContext, (): ()) -> Result<(), HandlerError> {
        ctx.log("ignoring stops");
        ctx.metric("started", 1);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }

    fn agent() -> AgentBuilder {
        Agent::builder("http://127.0.0.1:7070")
            .handler("leads.enrich", enrich)
            .handler("stubborn", stubborn)
    }

    fn attempt(payload: &str) -> Context {
        let mut ctx = context();
        ctx.payload = payload.into();
        ctx.handlers = agent().build().unwrap().handlers().clone();
        ctx
    }

    fn spec(name: &str) -> HandlerSpec {
        HandlerSpec { name: name.into() }
    }

    async fn run_with(name: &str, payload: &str, timeout: Option<Duration>) -> Report {
        let (_handle, stop) = StopSignal::new(timeout);
        run(&spec(name), &attempt(payload), stop).await
    }

    #[tokio::test]
    async fn success_reports_output_metrics_and_spans() {
        let report = run_with("leads.enrich", r#"{"lead_id":"ok","wait_ms":20}"#, None).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
        assert_eq!(report.output, "lead ok\n");
        assert!(report.error.is_empty());
        assert_eq!(report.measures.metrics()[0].name, "items");
        let fetch = &report.measures.spans()[0];
        assert_eq!((fetch.name.as_str(), fetch.count), ("fetch", 1));
        assert!(fetch.total_us >= 20_000, "{fetch:?}");
    }

    #[tokio::test]
    async fn handler_errors_are_retryable_or_permanent() {
        let report = run_with("leads.enrich", r#"{"lead_id":"busy"}"#, None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!((report.error.as_str(), report.permanent), ("service busy", false));
        assert_eq!(report.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(report.output, "lead busy\n");
        assert_eq!(report.measures.metrics().len(), 1, "measures survive a failure");

        let report = run_with("leads.enrich", r#"{"lead_id":"gone"}"#, None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!((report.error.as_str(), report.permanent), ("no such lead", true));
        assert_eq!(report.retry_after, None);
    }

    #[tokio::test]
    async fn a_payload_of_the_wrong_shape_fails_permanently() {
        let report = run_with("leads.enrich", r#"{"lead":"x"}"#, None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
        assert!(report.error.contains("missing field `lead_id`"), "{}", report.error);
        assert!(report.output.is_empty(), "the handler must not have run");

        let report = run_with("stubborn", r#"{"x":1}"#, None).await;
        assert!(
            report.permanent && report.error.contains("invalid type"),
            "{}",
            report.error
        );
    }

    #[tokio::test]
    async fn an_unregistered_handler_is_a_retryable_failure() {
        let report = run_with("leads.score", "", None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(!report.permanent);
        assert_eq!(
            report.error,
            "handler `leads.score` is not registered on this agent (registered: leads.enrich, stubborn)"
        );
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("leads.enrich"), &context(), stop).await;
        assert!(report.error.contains("(registered: none)"), "{}", report.error);
    }

    #[tokio::test]
    async fn a_panic_is_a_retryable_failure() {
        let report = run_with("leads.enrich", r#"{"lead_id":"boom"}"#, None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(!report.permanent);
        assert_eq!(report.error, "handler panicked: boom at boom");
        assert_eq!(report.output, "lead boom\n");
        // The executor (and so the agent) goes on.
        let report = run_with("leads.enrich", r#"{"lead_id":"ok"}"#, None).await;
        assert_eq!(report.outcome, Outcome::Succeeded);
    }

    #[tokio::test]
    async fn cancel_is_seen_by_the_handler() {
        let (handle, stop) = StopSignal::new(None);
        let ctx = attempt(r#"{"lead_id":"ok","wait_ms":60000}"#);
        let task = tokio::spawn(async move { run(&spec("leads.enrich"), &ctx, stop).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cancelled = std::time::Instant::now();
        handle.cancel();
        let report = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            cancelled.elapsed() < Duration::from_millis(250),
            "{:?}",
            cancelled.elapsed()
        );
        assert_eq!(report.outcome, Outcome::Cancelled, "{report:?}");
        assert_eq!(report.output, "lead ok\ncancelled: cancel requested\n");
        assert_eq!(
            report.error,
            "cancelled; the handler returned: gave up: cancel requested"
        );
        assert_eq!(report.measures.spans()[0].name, "fetch");
    }

    #[tokio::test]
    async fn timeout_is_seen_by_the_handler() {
        let report = run_with(
            "leads.enrich",
            r#"{"lead_id":"ok","wait_ms":60000}"#,
            Some(Duration::from_millis(100)),
        )
        .await;
        assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
        assert_eq!(report.output, "lead ok\ncancelled: timed out after 100ms\n");
        assert!(report.error.starts_with("timed out after 100ms"), "{}", report.error);
        assert!(!report.permanent);
    }

    #[tokio::test]
    async fn a_handler_that_ignores_its_stop_is_aborted_after_the_kill_grace() {
        let started = std::time::Instant::now();
        let report = run_with("stubborn", "", Some(Duration::from_millis(50))).await;
        let took = started.elapsed();
        // context(): kill grace 300ms.
        assert!(
            took >= Duration::from_millis(340) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert_eq!(
            report.error,
            "timed out after 50ms; the handler did not return within 300ms and was aborted"
        );
        assert_eq!(report.output, "ignoring stops\n");
        assert_eq!(report.measures.metrics()[0].name, "started");
    }
}
