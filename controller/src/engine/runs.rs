//! Operator actions on existing runs: cancel (single or a whole workflow),
//! retry, and the dead-letter queue.

use std::sync::Arc;

use worker_proto::v1::{Cancel, ControllerMessage, controller_message::Msg};

use super::Engine;
use super::enqueue::{EnqueueOutcome, EnqueueRequest};
use super::state::LiveRun;
use super::transitions::Mover;
use crate::error::{Error, ErrorCode, Result};
use crate::job::JobDef;
use crate::model::{Overlap, RunState};
use crate::store::RunRecord;

impl Engine {
    /// Applies `overlap` to a fire: `false` when it must be skipped (recorded).
    pub(super) async fn allow_overlap(&self, job: &Arc<JobDef>, instant: i64) -> Result<bool> {
        if job.overlap == Overlap::Allow {
            return Ok(true);
        }
        let unfinished: Vec<String> = {
            let core = self.lock_core().await;
            core.live
                .values()
                .filter(|r| *r.job == *job.name)
                .map(|r| r.id.to_string())
                .collect()
        };
        if unfinished.is_empty() {
            return Ok(true);
        }
        match job.overlap {
            Overlap::Forbid => {
                tracing::info!(job = %job.name, unfinished = unfinished.len(), "schedule fire skipped: overlap forbidden");
                self.store.advance_cursor(&job.name, instant, 0, 1).await?;
                self.metrics.fire_skipped(&job.name);
                self.report_missed_fires(
                    job,
                    1,
                    instant,
                    format!(
                        "skipped: {} run(s) of the job still unfinished (overlap: forbid)",
                        unfinished.len()
                    ),
                );
                Ok(false)
            }
            _ => {
                for id in unfinished {
                    match self
                        .cancel_by(&id, "replaced by a newer schedule fire", Mover::Scheduler)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if e.code == ErrorCode::FailedPrecondition => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
        }
    }

    /// Cancels a run: a waiting run at once (with the runs blocked behind it); a
    /// running one is asked to stop: its agent kills it and reports `cancelled`,
    /// and if the agent is gone, lease expiry cancels it. Returns the run as it
    /// is after the request.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<RunRecord> {
        self.cancel_by(id, reason, Mover::Operator).await
    }

    /// [`Engine::cancel`] on behalf of `by` (an operator, or the scheduler
    /// replacing older runs).
    pub(super) async fn cancel_by(&self, id: &str, reason: &str, by: Mover) -> Result<RunRecord> {
        let mut core = self.lock_core().await;
        let Some(run) = core.live.get(id).cloned() else {
            drop(core);
            let record = self
                .store
                .run(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("run {id} does not exist")))?;
            return Err(Error::precondition(format!("run {id} is already {}", record.state)));
        };
        let now = self.now();
        if run.state == RunState::Running {
            if !run.cancel_requested {
                let mut change = self.change(
                    id,
                    run.state,
                    RunState::Running,
                    by,
                    now,
                    Some(format!("cancel requested: {reason}")),
                )?;
                change.cancel_requested = true;
                self.write(&Default::default(), &[change], &[], &[]).await?;
                if let Some(live) = core.live.get_mut(id) {
                    live.cancel_requested = true;
                    live.extra_mut().cancel_reason = Some(reason.to_string());
                }
                if let Some(agent) = run.agent_id() {
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
            let mut changes =
                vec![self.change(id, run.state, RunState::Cancelled, by, now, Some(reason.to_string()))?];
            changes.extend(self.dependent_changes(&core, id, RunState::Cancelled, now)?);
            self.write(&Default::default(), &changes, &[], &[]).await?;
            core.unindex(id);
            core.remove_live(id);
            self.emit(id, &run.job, RunState::Cancelled, run.attempt, now, Some(reason));
            self.apply_dependent_changes(&mut core, id, RunState::Cancelled, &changes[1..]);
        }
        drop(core);
        self.store
            .run(id)
            .await?
            .ok_or_else(|| Error::internal(format!("run {id} vanished")))
    }

    /// Cancels every unfinished run of a workflow. Returns the runs affected.
    pub async fn cancel_workflow(&self, workflow_id: &str) -> Result<Vec<RunRecord>> {
        let runs = self.store.workflow_runs(workflow_id).await?;
        if runs.is_empty() {
            return Err(Error::not_found(format!("workflow {workflow_id} does not exist")));
        }
        let mut affected = Vec::new();
        for run in runs.iter().filter(|r| !r.state.is_terminal()) {
            match self.cancel(&run.id, &format!("workflow {workflow_id} cancelled")).await {
                Ok(record) => affected.push(record),
                // Already cancelled with an upstream of the same workflow.
                Err(e) if e.code == ErrorCode::FailedPrecondition => {
                    if let Some(record) = self.store.run(&run.id).await? {
                        affected.push(record);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(affected)
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
                let request = EnqueueRequest {
                    job: record.job.clone(),
                    payload: record.payload.clone(),
                    priority: record.priority.to_string(),
                    ..EnqueueRequest::default()
                };
                let EnqueueOutcome { run, .. } = self.enqueue_copy(request, id).await?;
                Ok(run)
            }
            state => Err(Error::precondition(format!(
                "run {id} is {state}; only finished runs can be retried"
            ))),
        }
    }

    async fn enqueue_copy(&self, request: EnqueueRequest, original: &str) -> Result<EnqueueOutcome> {
        self.enqueue_as(
            request,
            crate::model::Trigger::Retry,
            format!("retry of run {original}"),
        )
        .await
    }

    /// Queues dead runs again, each with a renewed attempt budget. Returns the ids
    /// requeued (runs that are no longer dead are left alone).
    pub async fn requeue_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut core = self.lock_core().await;
        let jobs = self.jobs();
        let now = self.now();
        let mut changes = Vec::new();
        let mut lives = Vec::new();
        let mut records = self.store.runs_by_id(ids).await?;
        // In the order asked for (the store answers in its own).
        let order: std::collections::HashMap<&String, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
        records.sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        for record in records {
            let id = &record.id;
            if record.state != RunState::Dead {
                continue;
            }
            let job = jobs.get(&record.job).ok_or_else(|| {
                Error::precondition(format!("job \"{}\" of run {id} is no longer defined", record.job))
            })?;
            let max_attempts = record.attempt + job.retry.max_attempts;
            let mut change = self.change(
                id,
                record.state,
                RunState::Queued,
                Mover::Operator,
                now,
                Some("retried from the dead-letter queue".into()),
            )?;
            change.ready_at = Some(now);
            change.max_attempts = Some(max_attempts);
            changes.push(change);
            lives.push(LiveRun::new(
                id.as_str().into(),
                core.job_name(&record.job),
                RunState::Queued,
                record.priority,
                record.attempt,
                max_attempts,
                core.payload_to_keep(&record.payload),
                now,
            ));
        }
        self.write(&Default::default(), &changes, &[], &[]).await?;
        let mut requeued = Vec::new();
        for live in lives {
            let (id, job, attempt) = (live.id.clone(), live.job.clone(), live.attempt);
            core.insert_live(live);
            core.push_ready(&id, now);
            self.emit(
                &id,
                &job,
                RunState::Queued,
                attempt,
                now,
                Some("retried from the dead-letter queue"),
            );
            requeued.push(id.to_string());
        }
        drop(core);
        self.wake_dispatch.notify_one();
        Ok(requeued)
    }

    /// Deletes dead runs with their history. Returns the ids deleted. Runs blocked
    /// behind a purged run can never start: they are cancelled with it, in the
    /// same transaction.
    pub async fn purge_dead(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut core = self.lock_core().await;
        let now = self.now();
        let dead: std::collections::HashSet<String> = self
            .store
            .runs_by_id(ids)
            .await?
            .into_iter()
            .filter(|r| r.state == RunState::Dead)
            .map(|r| r.id)
            .collect();
        // In the order asked for, each once.
        let mut seen = std::collections::HashSet::new();
        let purged: Vec<String> = ids
            .iter()
            .filter(|id| dead.contains(*id) && seen.insert(id.as_str()))
            .cloned()
            .collect();
        // The changes of the runs behind each purged run; a run blocked behind
        // two of them is cancelled once.
        let mut changes_of: Vec<Vec<crate::store::StateChange>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in &purged {
            let mut changes = self.dependent_changes(&core, id, RunState::Cancelled, now)?;
            changes.retain(|c| seen.insert(c.run_id.clone()));
            for change in &mut changes {
                change.reason = Some(format!("upstream run {id} was purged from the dead-letter queue"));
            }
            changes_of.push(changes);
        }
        let all: Vec<_> = changes_of.iter().flatten().cloned().collect();
        if purged.is_empty() {
            return Ok(purged);
        }
        self.write_purge(&purged, &all).await?;
        for (id, changes) in purged.iter().zip(&changes_of) {
            self.apply_dependent_changes(&mut core, id, RunState::Cancelled, changes);
        }
        Ok(purged)
    }
}
