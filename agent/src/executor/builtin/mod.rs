//! Tasks built into the agent.
//!
//! * `noop` succeeds at once with output `noop` — useful for smoke tests and
//!   for measuring scheduling overhead;
//! * `sleep` waits for `args["duration"]` (default 1s), or for the payload's
//!   `duration_ms` number when present; it honours cancel and timeout like any
//!   other attempt;
//! * `digest` asks the controller to send the daily or weekly digest email
//!   its job defines (`digest.rs`, `docs/digest.md`);
//! * `backup` ([`backup`]) snapshots the controller's store or a PostgreSQL
//!   database into a directory and/or S3, keeping the last `keep_days` days.
//!
//! An unknown name is a permanent failure: retrying cannot make it exist.
//!
//! A builtin with more to it than a few lines gets its own submodule here,
//! with one arm in [`run`]; the controller checks its arguments in
//! `worker_controller::config::builtins` and sends them as the flat `args`
//! map (nested fields as dotted keys).

pub mod backup;
mod digest;

use std::time::Duration;

use worker_proto::v1::BuiltinSpec;

use super::{Context, Report, StopSignal};

/// Default duration of the `sleep` builtin.
const DEFAULT_SLEEP: Duration = Duration::from_secs(1);

/// Longest `sleep`: the controller's longest job timeout (30 days). Anything
/// longer is refused as a permanent failure instead of overflowing a
/// `Duration` (`{"duration_ms": 1e300}` used to panic the agent).
const MAX_SLEEP: Duration = Duration::from_secs(30 * 86_400);

/// Runs the builtin `spec` names.
pub async fn run(spec: &BuiltinSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    match spec.name.as_str() {
        "noop" => Report::succeeded("noop"),
        "backup" => backup::run(spec, ctx, stop).await,
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
        "digest" => digest::run(spec, ctx, stop).await,
        other => Report::failed(
            format!("unknown builtin `{other}` (known: noop, sleep, backup, digest)"),
            true,
        ),
    }
}

/// The `sleep` duration: payload `duration_ms` wins over `args["duration"]`.
fn sleep_duration(spec: &BuiltinSpec, payload: &str) -> Result<Duration, String> {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(payload)
        && let Some(value) = fields.get("duration_ms")
    {
        return match value.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 0.0 && ms <= MAX_SLEEP.as_millis() as f64 => {
                Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| format!("payload field duration_ms: {e}"))
            }
            Some(ms) if ms.is_finite() && ms >= 0.0 => Err(format!(
                "payload field duration_ms: {value} is longer than the maximum of {} ms (30d)",
                MAX_SLEEP.as_millis()
            )),
            _ => Err(format!(
                "payload field duration_ms must be a non-negative number, got {value}"
            )),
        };
    }
    match spec.args.get("duration") {
        Some(text) => match worker_duration::parse(text) {
            Ok(d) if d > MAX_SLEEP => Err(format!(
                "sleep argument `duration`: {text} is longer than the maximum of 30d"
            )),
            Ok(d) => Ok(d),
            Err(e) => Err(format!("sleep argument `duration`: {e}")),
        },
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

    /// Hostile durations are permanent failures, never a panic.
    #[tokio::test]
    async fn absurd_sleep_durations_are_refused() {
        for payload in [
            r#"{"duration_ms": 1e300}"#,
            r#"{"duration_ms": 1e20}"#,
            r#"{"duration_ms": -1}"#,
            r#"{"duration_ms": "soon"}"#,
            r#"{"duration_ms": 2592000001}"#,
        ] {
            let mut ctx = context();
            ctx.payload = payload.into();
            let (_h, stop) = StopSignal::new(None);
            let report = run(&spec("sleep", &[]), &ctx, stop).await;
            assert_eq!(report.outcome, Outcome::Failed, "{payload}");
            assert!(report.permanent, "{payload}");
            assert!(report.error.contains("duration_ms"), "{payload}: {}", report.error);
        }
        let (_h, stop) = StopSignal::new(None);
        let report = run(&spec("sleep", &[("duration", "400d")]), &context(), stop).await;
        assert!(
            report.permanent && report.error.contains("maximum of 30d"),
            "{}",
            report.error
        );
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
