//! The timer loop: releases scheduled runs whose `not_before` has come (backoff,
//! delayed runs, jittered fires) and expires the leases of silent agents.

use std::sync::Arc;
use std::time::Duration;

use worker_proto::v1::{Cancel, ControllerMessage, controller_message::Msg};

use super::state::RunId;
use super::transitions::Mover;
use super::{Counters, Engine};
use crate::alerting::Event;
use crate::alerting::facts::{AgentFact, Fact};
use crate::error::Result;
use crate::model::{Outcome, RunState};
use crate::store::{AttemptEnd, StateChange};

/// Lease expiry is checked at least this often.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// A disconnected agent without runs is forgotten after this long.
const FORGET_AGENT_AFTER_MS: i64 = 10 * 60 * 1000;

impl Engine {
    /// Runs until shutdown.
    pub async fn timer_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            // Tests make the loop end here (`return`) or panic.
            fail::fail_point!("engine::timer_loop", |_| ());
            if let Err(e) = self.release_due().await {
                tracing::error!(error = %e, "releasing timers failed; retrying");
            }
            if let Err(e) = self.expire_leases().await {
                tracing::error!(error = %e, "expiring leases failed; retrying");
            }
            let wait = {
                let core = self.lock_core().await;
                core.timers
                    .first()
                    .map(|(t, _)| Duration::from_millis((t - self.now()).max(0) as u64))
                    .unwrap_or(SWEEP_INTERVAL)
                    .min(SWEEP_INTERVAL)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake_timers.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Moves due scheduled runs to `queued`, in one commit. If the store
    /// refuses that commit for its content, each run is released on its own,
    /// and a run whose release fails alone waits with backoff (it keeps its
    /// place: its timer moves, the store is unchanged). Returns how many runs
    /// were released.
    pub async fn release_due(&self) -> Result<usize> {
        let mut core = self.lock_core().await;
        let now = self.now();
        let due: Vec<(i64, String)> = core.timers.iter().take_while(|(t, _)| *t <= now).cloned().collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut changes: Vec<StateChange> = Vec::with_capacity(due.len());
        for (_, id) in &due {
            let from = core.live.get(id.as_str()).map_or(RunState::Scheduled, |r| r.state);
            let mut change = self.change(id, from, RunState::Queued, Mover::Timer, now, None)?;
            change.ready_at = Some(now);
            changes.push(change);
        }
        let released: Vec<bool> = match self.write(&Default::default(), &changes, &[], &[]).await {
            Ok(()) => vec![true; due.len()],
            Err(e) if e.is_unavailable() || self.failure().is_some() => return Err(e.into()),
            Err(e) if due.len() == 1 => {
                tracing::warn!(run = %due[0].1, error = %e, "releasing a timer failed");
                vec![false]
            }
            Err(e) => {
                tracing::warn!(error = %e, runs = due.len(), "releasing timers failed; releasing them one by one");
                let mut released = Vec::with_capacity(due.len());
                for change in &changes {
                    match self
                        .write(&Default::default(), std::slice::from_ref(change), &[], &[])
                        .await
                    {
                        Ok(()) => released.push(true),
                        Err(e) if e.is_unavailable() || self.failure().is_some() => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(run = %change.run_id, error = %e, "releasing a timer failed");
                            released.push(false);
                        }
                    }
                }
                released
            }
        };
        let count = released.iter().filter(|r| **r).count();
        for ((t, id), released) in due.iter().zip(released) {
            core.timers.remove(&(*t, id.clone()));
            let Some(run) = core.live.get_mut(id.as_str()) else {
                continue;
            };
            if released {
                let (job, attempt) = (run.job.clone(), run.attempt);
                core.release_hold(id);
                core.push_ready(id, now);
                self.emit(id, &job, RunState::Queued, attempt, now, None);
            } else {
                // Tried again after the backoff; the store keeps its not_before.
                let run_id: RunId = run.id.clone();
                let hold = core.hold(&run_id, now);
                if let Some(run) = core.live.get_mut(id.as_str()) {
                    run.not_before = hold.until;
                }
                core.timers.insert((hold.until, id.clone()));
                Counters::add(&self.counters.failed_writes);
            }
        }
        drop(core);
        self.wake_dispatch.notify_one();
        Ok(count)
    }

    /// Ends attempts whose lease expired (recorded `lost`) or whose deadline
    /// (start + job timeout + lease) passed without a result (recorded
    /// `timed_out`, and the agent is told to cancel), then applies the retry policy.
    pub async fn expire_leases(&self) -> Result<usize> {
        let mut core = self.lock_core().await;
        let now = self.now();
        let expired: Vec<(String, u32, Option<String>, bool)> = core
            .running
            .iter()
            .filter_map(|id| core.live.get(id))
            .filter(|r| r.state == RunState::Running && !core.held(&r.id, now))
            .filter_map(|r| {
                let extra = r.extra();
                let past_deadline = extra.deadline.is_some_and(|d| d <= now);
                (past_deadline || extra.lease_until <= now)
                    .then(|| (r.id.to_string(), r.attempt, extra.agent_id.clone(), past_deadline))
            })
            .collect();
        let lease_s = self.settings.lease_timeout.as_secs_f64();
        for (run_id, attempt, agent_id, past_deadline) in &expired {
            let agent = agent_id
                .as_ref()
                .and_then(|a| core.agents.get(a))
                .map(|a| a.name.clone())
                .unwrap_or_else(|| "unknown agent".into());
            let (outcome, error) = if *past_deadline {
                Counters::add(&self.counters.deadline_expired);
                tracing::warn!(run = %run_id, attempt, %agent, "no result within timeout plus lease; attempt timed out");
                (
                    Outcome::TimedOut,
                    format!("no result from agent {agent} within the job's timeout plus the {lease_s} s lease"),
                )
            } else {
                Counters::add(&self.counters.lost_attempts);
                tracing::warn!(run = %run_id, attempt, %agent, "lease expired; attempt lost");
                (
                    Outcome::Lost,
                    format!("agent {agent} lost: no heartbeat within the {lease_s} s lease"),
                )
            };
            let end = AttemptEnd {
                run_id: run_id.clone(),
                attempt: *attempt,
                outcome,
                exit_code: None,
                error: Some(error),
                output: None,
                started_at: None,
                finished_at: now,
                duration_ms: None,
                metrics: Vec::new(),
                spans: Vec::new(),
            };
            // One failure must not keep the other expired attempts from ending:
            // this one is tried again after a backoff.
            if let Err(e) = self
                .settle(&mut core, end, super::dispatch::Ask::default(), Mover::LeaseExpiry)
                .await
            {
                if self.failure().is_some() {
                    return Err(e);
                }
                let run: RunId = run_id.as_str().into();
                let hold = core.hold(&run, now);
                Counters::add(&self.counters.failed_writes);
                tracing::error!(run = %run_id, attempt, error = %e, retry_in_ms = hold.until - now, "ending an expired attempt failed");
                continue;
            }
            core.release_hold(run_id);
            // Told only once its end is committed (it would otherwise be killed
            // while the run still counts as running).
            if *past_deadline && let Some(agent_id) = agent_id {
                let cancel = Cancel {
                    run_id: run_id.clone(),
                    attempt: *attempt,
                };
                core.send_to_agent(
                    agent_id,
                    ControllerMessage {
                        msg: Some(Msg::Cancel(cancel)),
                    },
                );
            }
        }
        self.report_lost_agents(&mut core, now);
        core.agents
            .retain(|_, a| a.sender.is_some() || !a.running.is_empty() || now - a.last_seen < FORGET_AGENT_AFTER_MS);
        Ok(expired.len())
    }

    /// Tells alerting, once per silence, about agents not heard from (no
    /// heartbeat, or disconnected and not back) for longer than the lease.
    fn report_lost_agents(&self, core: &mut super::state::Core, now: i64) {
        let Some(sink) = self.alert_sink().filter(|s| s.wants(Event::AgentLost)) else {
            return;
        };
        let lease = self.settings.lease_timeout.as_millis() as i64;
        for agent in core.agents.values_mut() {
            if agent.lost_reported || now - agent.last_seen < lease {
                continue;
            }
            agent.lost_reported = true;
            tracing::warn!(agent = %agent.name, connected = agent.sender.is_some(), "agent lost");
            sink.send(Fact::AgentLost(AgentFact {
                agent_id: agent.id.clone(),
                name: agent.name.clone(),
                host: agent.host.clone(),
                connected: agent.sender.is_some(),
                running: agent.running.len(),
                last_seen: agent.last_seen,
                at: now,
            }));
        }
    }
}
