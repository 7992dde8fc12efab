//! The `digest` builtin (`docs/digest.md`): asks the controller to compose
//! and send the digest this run's job defines (`ControllerService.SendDigest`,
//! with the agent's own token), and reports what it did as the attempt's
//! output.
//!
//! The agent sends only the run id and attempt number: what goes into the
//! mail and to whom comes from the job definition and the alerting
//! configuration on the controller, which holds the SMTP settings and the
//! history. The arguments in `BuiltinSpec.args` (`period`, `channel`, `to.N`,
//! `skip_empty`) are shown in the output but not needed here.
//!
//! Outcomes: an SMTP failure (`Unavailable`) or a controller that cannot be
//! reached is a retryable failure; a refusal (`PermissionDenied`,
//! `FailedPrecondition`: no email channel, a run this agent does not hold…)
//! is permanent, since retrying cannot change it. A cancel or timeout while
//! waiting stops the attempt like any other.

use std::time::Duration;

use tonic::Code;
use worker_proto::v1::{BuiltinSpec, SendDigestResponse};

use super::super::{Context, Report, StopSignal};

/// The longest wait for the controller's answer (it may retry nothing, but
/// one SMTP conversation may take several timeouts); the job's own timeout
/// stops the attempt sooner when it is shorter.
const CALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the digest builtin.
pub async fn run(spec: &BuiltinSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    let Some(controller) = &ctx.controller else {
        return Report::failed("the digest builtin needs a connection to the controller", true);
    };
    let period = spec.args.get("period").map_or("daily", String::as_str);
    tokio::select! {
        reply = controller.send_digest(&ctx.run_id, ctx.attempt, CALL_TIMEOUT) => match reply {
            Ok(reply) => Report::succeeded(describe(period, &reply)),
            Err(status) => {
                let permanent = matches!(
                    status.code(),
                    Code::PermissionDenied
                        | Code::FailedPrecondition
                        | Code::NotFound
                        | Code::InvalidArgument
                        | Code::Unauthenticated
                        | Code::Unimplemented
                );
                Report::failed(format!("digest: {}", status.message()), permanent)
            }
        },
        stop = stop.wait() => Report::stopped(stop, String::new()),
    }
}

/// The attempt's output: what was sent (or why nothing was), to whom, and
/// the counts it was made of.
pub fn describe(period: &str, r: &SendDigestResponse) -> String {
    let counts = format!(
        "{} attempts finished, {} failed, {} runs went dead; {} in the dead-letter queue",
        r.attempts, r.failures, r.dead, r.dead_letter
    );
    let window = format!("{} – {}", r.window_from, r.window_to);
    if r.sent {
        format!(
            "{period} digest sent through channel {} to {}\nwindow: {window}\n{counts}\nSMTP: {}\n",
            r.channel,
            r.recipients.join(", "),
            r.answer
        )
    } else {
        format!(
            "nothing to report: no mail sent (skip_empty)\n{period} digest, channel {}\nwindow: {window}\n{counts}\n",
            r.channel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Outcome;
    use crate::executor::tests::context;

    #[tokio::test]
    async fn without_a_controller_it_fails_for_good() {
        let (_h, stop) = StopSignal::new(None);
        let spec = BuiltinSpec {
            name: "digest".into(),
            args: [("period".to_string(), "daily".to_string())].into(),
        };
        let report = run(&spec, &context(), stop).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
    }

    #[test]
    fn the_output_says_what_was_sent() {
        let mut reply = SendDigestResponse {
            sent: true,
            recipients: vec!["ops@example.com".into(), "b@example.org".into()],
            window_from: "2024-05-05T08:00:00+02:00".into(),
            window_to: "2024-05-06T08:00:00+02:00".into(),
            attempts: 7,
            dead: 1,
            failures: 2,
            dead_letter: 3,
            answer: "250 2.0.0 Ok".into(),
            channel: "mail".into(),
        };
        let text = describe("daily", &reply);
        assert!(
            text.starts_with("daily digest sent through channel mail to ops@example.com, b@example.org"),
            "{text}"
        );
        assert!(
            text.contains("7 attempts finished, 2 failed, 1 runs went dead; 3 in the dead-letter queue"),
            "{text}"
        );
        reply.sent = false;
        assert!(describe("weekly", &reply).starts_with("nothing to report: no mail sent"));
    }
}
