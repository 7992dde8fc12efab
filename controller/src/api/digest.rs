//! `ControllerService.SendDigest`: the agent running a `digest` job's attempt
//! asks the controller to compose and send the digest (`crate::digest`).
//!
//! The call gives the agent role no power beyond what the job definition
//! grants: it is honoured only for a run that exists (`NotFound`), is running
//! with this very attempt (`FailedPrecondition`), is held by an agent that
//! connected with the calling token (`PermissionDenied`; without
//! authentication every caller is the anonymous admin and this check is
//! moot), and belongs to a job whose executor is the digest builtin
//! (`PermissionDenied`). What is sent, and to whom, comes from the job's
//! definition and the alerting configuration, never from the request.
//!
//! Failures: a digest that cannot be sent as configured (no such email
//! channel, several and none named) is `FailedPrecondition`; an SMTP failure
//! is `Unavailable`, which the agent reports as a retryable failure.

use tonic::Status;
use worker_proto::v1 as pb;

use super::agent::AgentOwners;
use super::limits::check_id;
use crate::alerting::AlertService;
use crate::auth::Principal;
use crate::digest::{DigestArgs, DigestError, Window};
use crate::engine::Engine;
use crate::limits::echo;

/// Serves one `SendDigest` call from `principal`.
pub(super) async fn send_digest(
    engine: &Engine,
    alerts: &AlertService,
    owners: &AgentOwners,
    principal: &Principal,
    r: pb::SendDigestRequest,
) -> Result<pb::SendDigestResponse, Status> {
    check_id("run_id", &r.run_id)?;
    let run = engine
        .store()
        .run(&r.run_id)
        .await?
        .ok_or_else(|| Status::not_found(format!("run {} does not exist", echo(&r.run_id))))?;
    let Some((agent_id, attempt)) = engine.attempt_holder(&run.id).await else {
        return Err(Status::failed_precondition(format!(
            "run {} is not running (it is {})",
            run.id, run.state
        )));
    };
    if attempt != r.attempt {
        return Err(Status::failed_precondition(format!(
            "attempt {} of run {} is not running (attempt {attempt} is)",
            r.attempt, run.id
        )));
    }
    if !principal.is_anonymous() {
        let owner = owners.lock().unwrap_or_else(|e| e.into_inner()).get(&agent_id).cloned();
        if owner.as_deref() != Some(principal.name.as_str()) {
            tracing::warn!(run_id = %run.id, token = %principal.name, agent = %agent_id, "SendDigest refused: the run is held by another token's agent");
            return Err(Status::permission_denied(format!(
                "token \"{}\" does not run run {}: its attempt {attempt} is held by an agent of another token",
                principal.name, run.id
            )));
        }
    }
    let jobs = engine.jobs();
    let job = jobs.get(&run.job).ok_or_else(|| {
        Status::failed_precondition(format!("job \"{}\" of run {} is no longer defined", run.job, run.id))
    })?;
    let args = match DigestArgs::of_job(job) {
        Some(Ok(args)) => args,
        Some(Err(e)) => return Err(Status::failed_precondition(format!("job \"{}\": {e}", job.name))),
        None => {
            return Err(Status::permission_denied(format!(
                "run {} is of job \"{}\", whose executor is not the digest builtin",
                run.id, job.name
            )));
        }
    };
    // The window ends at the fire time of a scheduled run, else now.
    let end = run.scheduled_for.unwrap_or_else(|| engine.now());
    let tz = job.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.tz());
    let window = Window::ending_at(end, args.period, tz);
    let id = format!("digest-{}-{}", run.id, attempt);
    let sent = crate::digest::send(alerts, engine.store(), &args, window, &id)
        .await
        .map_err(|e| match e {
            DigestError::Config(message) => Status::failed_precondition(format!("job \"{}\": {message}", job.name)),
            DigestError::Store(e) => e.into(),
            e @ DigestError::Send { .. } => Status::unavailable(e.to_string()),
        })?;
    tracing::info!(run_id = %run.id, job = %job.name, sent = sent.sent, channel = %sent.channel, "digest");
    let facts = &sent.facts;
    Ok(pb::SendDigestResponse {
        sent: sent.sent,
        recipients: sent.recipients.clone(),
        window_from: window.rfc3339(window.from),
        window_to: window.rfc3339(window.to),
        attempts: facts.attempts(),
        dead: facts.dead(),
        failures: facts.failures_total,
        dead_letter: facts.dead_letter,
        answer: sent.answer.clone(),
        channel: sent.channel.clone(),
    })
}
