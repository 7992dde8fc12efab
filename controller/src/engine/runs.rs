//! Client-side operations on runs: enqueue, scheduled fires, cancel, retry and
//! the dead-letter queue.

use std::sync::Arc;

use worker_proto::v1::{Cancel, ControllerMessage, controller_message::Msg};

use super::state::LiveRun;
use super::{Engine, MAX_PAYLOAD_BYTES};
use crate::error::{Error, Result};
use crate::job::JobDef;
use crate::model::{Overlap, Priority, RunState, Trigger};
use crate::store::{NewRun, RunRecord, StateChange};
use crate::time::now_ms;

/// A request to create one run of a defined job.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// Job name.
    pub job: String,
    /// Payload, JSON text ("" = null).
    pub payload: String,
    /// Priority name ("" = the job's).
    pub priority: String,
    /// Trigger name: "manual" or "api" ("" = api).
    pub trigger: String,
}

impl Engine {
    fn job_for_enqueue(&self, name: &str) -> Result<Arc<JobDef>> {
        let job = self
            .jobs
            .get(name)
            .ok_or_else(|| Error::not_found(format!("job \"{name}\" is not defined")))?;
        if !job.enabled {
            return Err(Error::precondition(format!("job \"{name}\" is disabled")));
        }
        Ok(job.clone())
    }

    /// Validates and commits a new queued run; returns it.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<RunRecord> {
        if request.job.is_empty() {
            return Err(Error::invalid("job", "a job name is required"));
        }
        let job = self.job_for_enqueue(&request.job)?;
        let priority = if request.priority.is_empty() {
            job.priority
        } else {
            request
                .priority
                .parse::<Priority>()
                .map_err(|e| Error::invalid("priority", e))?
        };
        let trigger = match request.trigger.as_str() {
            "" | "api" => Trigger::Api,
            "manual" => Trigger::Manual,
            other => {
                return Err(Error::invalid(
                    "trigger",
                    format!("\"{other}\" cannot be requested (use api or manual)"),
                ));
            }
        };
        let payload = validate_payload(&request.payload)?;
        let now = now_ms();
        let run = new_run(&job, priority, payload, trigger, now, None, None);
        self.insert(run).await
    }

    /// Creates the run of a schedule fire at nominal instant `instant`, honouring
    /// the overlap policy. Returns `Ok(None)` when the fire was skipped (overlap)
    /// or already exists (the same (job, instant) never creates two runs).
    pub async fn fire(&self, job: &Arc<JobDef>, instant: i64, delay_ms: i64) -> Result<Option<RunRecord>> {
        if job.overlap != Overlap::Allow {
            let unfinished: Vec<String> = {
                let core = self.core.lock().await;
                core.live
                    .values()
                    .filter(|r| r.job == job.name)
                    .map(|r| r.id.clone())
                    .collect()
            };
            if !unfinished.is_empty() {
                match job.overlap {
                    Overlap::Forbid => {
                        tracing::info!(job = %job.name, unfinished = unfinished.len(), "schedule fire skipped: overlap forbidden");
                        self.store.advance_cursor(&job.name, instant, 0, 1).await?;
                        return Ok(None);
                    }
                    Overlap::Replace => {
                        for id in unfinished {
                            match self.cancel(&id, "replaced by a newer schedule fire").await {
                                Ok(_) => {}
                                Err(e) if e.code == crate::error::ErrorCode::FailedPrecondition => {}
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Overlap::Allow => {}
                }
            }
        }
        let now = now_ms();
        let not_before = (delay_ms > 0).then_some(now + delay_ms);
        let run = new_run(
            job,
            job.priority,
            "null".into(),
            Trigger::Schedule,
            now,
            Some(instant),
            not_before,
        );
        match self.insert(run).await {
            Ok(run) => Ok(Some(run)),
            Err(e) if e.code == crate::error::ErrorCode::FailedPrecondition => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Commits a new run, then indexes it. A duplicate schedule fire is reported
    /// as `FailedPrecondition`.
    async fn insert(&self, run: NewRun) -> Result<RunRecord> {
        let mut core = self.core.lock().await;
        if !self.store.insert_run(&run).await? {
            return Err(Error::precondition(format!(
                "job \"{}\" already fired for this instant",
                run.job
            )));
        }
        let live = LiveRun {
            id: run.id.clone(),
            job: run.job.clone(),
            state: run.state,
            priority: run.priority,
            attempt: 0,
            max_attempts: run.max_attempts,
            payload: run.payload.as_str().into(),
            not_before: run.not_before.unwrap_or(run.created_at),
            ready_key: None,
            agent_id: None,
            lease_until: 0,
            cancel_requested: false,
        };
        core.live.insert(run.id.clone(), live);
        if run.state == RunState::Queued {
            core.push_ready(&run.id, run.created_at);
            self.wake_dispatch.notify_one();
        } else {
            core.timers
                .insert((run.not_before.unwrap_or(run.created_at), run.id.clone()));
            self.wake_timers.notify_one();
        }
        drop(core);
        self.emit(&run.id, &run.job, run.state, 0, run.created_at, run.reason.as_deref());
        Ok(record_of_new(run))
    }

    /// Cancels a run: a waiting run at once; a running one is asked to stop (its
    /// agent kills it and reports `cancelled`; if the agent is gone, lease expiry
    /// cancels it). Returns the run as it is after the request.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<RunRecord> {
        let mut core = self.core.lock().await;
        let Some(run) = core.live.get(id).cloned() else {
            drop(core);
            let record = self
                .store
                .run(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("run {id} does not exist")))?;
            return Err(Error::precondition(format!("run {id} is already {}", record.state)));
        };
        let now = now_ms();
        if run.state == RunState::Running {
            if !run.cancel_requested {
                let mut change = StateChange::new(
                    id,
                    RunState::Running,
                    RunState::Running,
                    now,
                    Some(format!("cancel requested: {reason}")),
                );
                change.cancel_requested = true;
                self.store.apply(&[change], &[], &[]).await?;
                if let Some(live) = core.live.get_mut(id) {
                    live.cancel_requested = true;
                }
                if let Some(agent) = &run.agent_id {
                    let message = ControllerMessage {
                        msg: Some(Msg::Cancel(Cancel {
                            run_id: id.to_string(),
                            attempt: run.attempt,
                        })),
                    };
                    core.send_to_agent(agent, message);
                }
            }
        } else {
            let change = StateChange::new(id, run.state, RunState::Cancelled, now, Some(reason.to_string()));
            self.store.apply(&[change], &[], &[]).await?;
            core.unindex(id);
            core.live.remove(id);
            self.emit(id, &run.job, RunState::Cancelled, run.attempt, now, Some(reason));
        }
        drop(core);
        self.store
            .run(id)
            .await?
            .ok_or_else(|| Error::internal(format!("run {id} vanished")))
    }

    /// Retries a finished run: a dead one is queued again with a renewed attempt
    /// budget; a cancelled or succeeded one is copied into a new run.
    pub async fn retry(&self, id: &str) -> Result<RunRecord> {
        let record = self
            .store
            .run(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("run {id} does not exist")))?;
        match record.state {
            RunState::Dead => {
                self.requeue_dead(std::slice::from_ref(&record.id)).await?;
                self.store
                    .run(id)
                    .await?
                    .ok_or_else(|| Error::internal(format!("run {id} vanished")))
            }
            RunState::Cancelled | RunState::Succeeded => {
                let job = self.job_for_enqueue(&record.job)?;
                let mut run = new_run(
                    &job,
                    record.priority,
                    record.payload.clone(),
                    Trigger::Retry,
                    now_ms(),
                    None,
                    None,
                );
                run.reason = Some(format!("retry of run {id}"));
                self.insert(run).await
            }
            state => Err(Error::precondition(format!(
                "run {id} is {state}; only finished runs can be retried"
            ))),
        }
    }

    /// Queues dead runs again, each with a renewed attempt budget. Returns the ids
    /// requeued (runs that are no longer dead are left alone).
    pub async fn requeue_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut core = self.core.lock().await;
        let now = now_ms();
        let mut changes = Vec::new();
        let mut lives = Vec::new();
        for id in ids {
            let Some(record) = self.store.run(id).await? else {
                continue;
            };
            if record.state != RunState::Dead {
                continue;
            }
            let job = self.jobs.get(&record.job).ok_or_else(|| {
                Error::precondition(format!("job \"{}\" of run {id} is no longer defined", record.job))
            })?;
            let max_attempts = record.attempt + job.retry.max_attempts;
            let mut change = StateChange::new(
                id,
                RunState::Dead,
                RunState::Queued,
                now,
                Some("retried from the dead-letter queue".into()),
            );
            change.ready_at = Some(now);
            change.max_attempts = Some(max_attempts);
            changes.push(change);
            lives.push(LiveRun {
                id: id.clone(),
                job: record.job.clone(),
                state: RunState::Queued,
                priority: record.priority,
                attempt: record.attempt,
                max_attempts,
                payload: record.payload.into(),
                not_before: now,
                ready_key: None,
                agent_id: None,
                lease_until: 0,
                cancel_requested: false,
            });
        }
        self.store.apply(&changes, &[], &[]).await?;
        let mut requeued = Vec::new();
        for live in lives {
            let (id, job, attempt) = (live.id.clone(), live.job.clone(), live.attempt);
            core.live.insert(id.clone(), live);
            core.push_ready(&id, now);
            self.emit(
                &id,
                &job,
                RunState::Queued,
                attempt,
                now,
                Some("retried from the dead-letter queue"),
            );
            requeued.push(id);
        }
        drop(core);
        self.wake_dispatch.notify_one();
        Ok(requeued)
    }

    /// Deletes dead runs with their history. Returns the ids deleted.
    pub async fn purge_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        self.store.purge_dead(ids).await
    }
}

/// Checks size and syntax; returns the payload text to store ("null" when empty).
pub fn validate_payload(payload: &str) -> Result<String> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(
            "payload",
            format!(
                "{} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
                payload.len()
            ),
        ));
    }
    if payload.trim().is_empty() {
        return Ok("null".into());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map_err(|e| Error::invalid("payload", format!("not valid JSON: {e}")))?;
    Ok(payload.to_string())
}

fn new_run(
    job: &JobDef,
    priority: Priority,
    payload: String,
    trigger: Trigger,
    now: i64,
    scheduled_for: Option<i64>,
    not_before: Option<i64>,
) -> NewRun {
    let state = if not_before.is_some() {
        RunState::Scheduled
    } else {
        RunState::Queued
    };
    NewRun {
        id: ulid::Ulid::new().to_string().to_lowercase(),
        job: job.name.clone(),
        state,
        priority,
        payload,
        trigger,
        scheduled_for,
        created_at: now,
        not_before,
        ready_at: (state == RunState::Queued).then_some(now),
        max_attempts: job.retry.max_attempts,
        reason: None,
        workflow_id: None,
    }
}

fn record_of_new(run: NewRun) -> RunRecord {
    RunRecord {
        id: run.id,
        job: run.job,
        state: run.state,
        priority: run.priority,
        payload: run.payload,
        trigger: run.trigger,
        scheduled_for: run.scheduled_for,
        created_at: run.created_at,
        not_before: run.not_before,
        ready_at: run.ready_at,
        finished_at: None,
        attempt: 0,
        max_attempts: run.max_attempts,
        reason: run.reason,
        workflow_id: run.workflow_id,
        cancel_requested: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_limits_and_syntax() {
        assert_eq!(validate_payload("").unwrap(), "null");
        assert_eq!(validate_payload("{\"a\":1}").unwrap(), "{\"a\":1}");
        let err = validate_payload("{bad").unwrap_err();
        assert!(err.message.starts_with("payload: not valid JSON"), "{}", err.message);
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES - 1));
        let err = validate_payload(&big).unwrap_err();
        assert!(
            err.message
                .starts_with("payload: 1048577 bytes is over the limit of 1048576"),
            "{}",
            err.message
        );
    }
}
