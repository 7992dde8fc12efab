//! Run-level dependencies: what happens to blocked runs when an upstream run
//! succeeds (released when nothing else holds them), is cancelled (cancelled
//! with it, transitively) or dies (stays blocked, with the reason shown).

use std::collections::{BTreeSet, VecDeque};

use super::Engine;
use super::state::{Core, LiveRun};
use super::transitions::Mover;
use crate::error::Result;
use crate::model::RunState;
use crate::store::StateChange;

impl Engine {
    /// The state changes of runs blocked behind `upstream` now that it reached
    /// `state`. Computed from memory; nothing is changed.
    pub(super) fn dependent_changes(
        &self,
        core: &Core,
        upstream: &str,
        state: RunState,
        now: i64,
    ) -> Result<Vec<StateChange>> {
        let blocked = |id: &String| core.live.get(id.as_str()).filter(|r| r.state == RunState::Blocked);
        let direct = core.dependents.get(upstream).cloned().unwrap_or_default();
        let mut changes = Vec::new();
        match state {
            RunState::Succeeded => {
                for run in direct.iter().filter_map(&blocked) {
                    let remaining = run.extra().waiting_on.iter().filter(|u| *u != upstream).count();
                    changes.push(if remaining > 0 {
                        let reason = format!("waiting for {remaining} upstream run(s)");
                        self.still_blocked(run, now, reason)?
                    } else if run.not_before > now {
                        let mut c = self.change(&run.id, run.state, RunState::Scheduled, Mover::Upstream, now, None)?;
                        c.not_before = Some(run.not_before);
                        c
                    } else {
                        let mut c = self.change(&run.id, run.state, RunState::Queued, Mover::Upstream, now, None)?;
                        c.ready_at = Some(now);
                        c
                    });
                }
            }
            RunState::Cancelled => {
                let mut seen: BTreeSet<String> = BTreeSet::new();
                let mut queue: VecDeque<String> = VecDeque::from([upstream.to_string()]);
                while let Some(u) = queue.pop_front() {
                    for id in core.dependents.get(&u).into_iter().flatten() {
                        if let Some(run) = blocked(id)
                            && seen.insert(id.clone())
                        {
                            let reason = format!("upstream run {u} was cancelled");
                            changes.push(self.change(
                                id,
                                run.state,
                                RunState::Cancelled,
                                Mover::Upstream,
                                now,
                                Some(reason),
                            )?);
                            queue.push_back(id.clone());
                        }
                    }
                }
            }
            RunState::Dead => {
                for run in direct.iter().filter_map(&blocked) {
                    let reason = format!("upstream run {upstream} is dead; waiting for it to be retried and succeed");
                    changes.push(self.still_blocked(run, now, reason)?);
                }
            }
            _ => {}
        }
        Ok(changes)
    }

    /// A blocked run stays blocked with a new reason. A change rewrites the
    /// run's `not_before` in the store: the run's own (it was enqueued with a
    /// delay) is written again, or a restart would forget it.
    fn still_blocked(&self, run: &LiveRun, now: i64, reason: String) -> Result<StateChange> {
        let mut change = self.change(
            &run.id,
            run.state,
            RunState::Blocked,
            Mover::Upstream,
            now,
            Some(reason),
        )?;
        change.not_before = (run.not_before > now).then_some(run.not_before);
        Ok(change)
    }

    /// Applies committed [`Self::dependent_changes`] in memory.
    pub(super) fn apply_dependent_changes(
        &self,
        core: &mut Core,
        upstream: &str,
        state: RunState,
        changes: &[StateChange],
    ) {
        match state {
            RunState::Succeeded => {
                for id in core.dependents.remove(upstream).unwrap_or_default() {
                    if let Some(run) = core.live.get_mut(id.as_str()) {
                        run.extra_mut().waiting_on.remove(upstream);
                    }
                }
            }
            RunState::Cancelled => {
                core.dependents.remove(upstream);
            }
            _ => {}
        }
        for change in changes {
            let Some(run) = core.live.get(change.run_id.as_str()) else {
                continue;
            };
            let (job, attempt) = (run.job.clone(), run.attempt);
            match change.to {
                RunState::Queued => {
                    core.push_ready(&change.run_id, change.at);
                    self.wake_dispatch.notify_one();
                }
                RunState::Scheduled => {
                    let not_before = change.not_before.unwrap_or(change.at);
                    if let Some(run) = core.live.get_mut(change.run_id.as_str()) {
                        run.state = RunState::Scheduled;
                        run.not_before = not_before;
                    }
                    core.timers.insert((not_before, change.run_id.clone()));
                    self.wake_timers.notify_one();
                }
                RunState::Cancelled => {
                    core.remove_live(&change.run_id);
                    core.dependents.remove(&change.run_id);
                }
                _ => {}
            }
            self.emit(
                &change.run_id,
                &job,
                change.to,
                attempt,
                change.at,
                change.reason.as_deref(),
            );
        }
    }
}
