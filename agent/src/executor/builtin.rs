//! Tasks built into the agent.
//!
//! * `noop` succeeds at once with output `noop` — useful for smoke tests and
//!   for measuring scheduling overhead;
//! * `sleep` waits for `args["duration"]` (default 1s), or for the payload's
//!   `duration_ms` number when present; it honours cancel and timeout like any
//!   other attempt.
//!
//! An unknown name is a permanent failure: retrying cannot make it exist.

use std::time::Duration;

use worker_proto::v1::BuiltinSpec;

use super::{Context, Report, StopSignal};

/// Default duration of the `sleep` builtin.
const DEFAULT_SLEEP: Duration = Duration::from_secs(1);

/// Runs the builtin `spec` names.
pub async fn run(spec: &BuiltinSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    match spec.name.as_str() {
        "noop" => Report::succeeded("noop"),
        "sleep" => {
            let duration = match sleep_duration(spec, &ctx.payload) {
                Ok(duration) => duration,
                Err(error) => return Report::failed(error, true),
            };
            tokio::select! {
                () = tokio::time::sleep(duration) => {
                    Report::succeeded(format!("slept {}", worker_duration::format(duration)))
                }
                stop = stop.wait() => Report::stopped(stop, String::new()),
            }
        }
        other => Report::failed(format!("unknown builtin `{other}` (known: noop, sleep)"), true),
    }
}

/// The `sleep` duration: payload `duration_ms` wins over `args["duration"]`.
fn sleep_duration(spec: &BuiltinSpec, payload: &str) -> Result<Duration, String> {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(payload)
        && let Some(value) = fields.get("duration_ms")
    {
        return match value.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Duration::from_secs_f64(ms / 1000.0)),
            _ => Err(format!(
                "payload field duration_ms must be a non-negative number, got {value}"
            )),
        };
    }
    match spec.args.get("duration") {
        Some(text) => worker_duration::parse(text).map_err(|e| format!("sleep argument `duration`: {e}")),
        None => Ok(DEFAULT_SLEEP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Outcome;
    use crate::executor::tests::context;

    fn spec(name: &str, args: &[(&str, &str)]) -> BuiltinSpec {
        BuiltinSpec {
            name: name.into(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[tokio::test]
    async fn noop_succeeds() {
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("noop", &[]), &context(), stop).await;
        assert_eq!(report, Report::succeeded("noop"));
    }

    #[tokio::test]
    async fn unknown_builtin_is_permanent() {
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("nope", &[]), &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
        assert!(report.error.contains("`nope`"));
    }

    #[tokio::test]
    async fn sleep_uses_args_and_payload() {
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("sleep", &[("duration", "20ms")]), &context(), stop).await;
        assert_eq!(report, Report::succeeded("slept 20ms"));

        let mut ctx = context();
        ctx.payload = r#"{"duration_ms": 10}"#.into();
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("sleep", &[("duration", "1h")]), &ctx, stop).await;
        assert_eq!(report, Report::succeeded("slept 10ms"));

        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("sleep", &[("duration", "soon")]), &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
    }

    #[tokio::test]
    async fn sleep_times_out_and_cancels() {
        let (_h, stop) = StopSignal::new(Some(Duration::from_millis(20)));
        let report = run(&spec("sleep", &[("duration", "1h")]), &context(), stop).await;
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert_eq!(report.error, "timed out after 20ms");

        let (handle, stop) = StopSignal::new(None);
        handle.cancel();
        let report = run(&spec("sleep", &[("duration", "1h")]), &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Cancelled);
    }
}
