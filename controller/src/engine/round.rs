//! The commit loop: plain enqueues, dispatch and agent results share one store
//! transaction per round.
//!
//! Each round takes the core lock, then
//!
//! 1. sorts the results that arrived (see [`Engine::sort_results`]);
//! 2. indexes the runs of the plain enqueues that arrived, so that
//! 3. the dispatcher may assign them in the same round (see [`Engine::pick`]);
//! 4. commits new runs, assignments and settled results in ONE transaction;
//! 5. only then sends assignments, answers the enqueues and acknowledges the
//!    results. If the commit fails, nothing of the round is kept: the new runs
//!    are forgotten, credits given back and enqueues fail; the results stay
//!    unanswered and go into the next round (an agent forgets a result once it
//!    is answered, so refusing it would lose it).
//!
//! Rounds run back to back while there is work: whatever arrives during one
//! round's commit goes into the next (natural group commit, no timer), and an
//! idle controller commits a lone enqueue at once. One commit per round instead
//! of one per kind of work means fewer, larger transactions, and an enqueued run
//! with a free agent is started by the very commit that creates it.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::dispatch::MAX_RESULT_BATCH;
use super::enqueue::{MAX_BATCH, PendingEnqueue};
use super::{Engine, ResultMessage};
use crate::error::Result;
use crate::store::InsertPlan;
use crate::time::now_ms;

impl Engine {
    /// Runs commit rounds until shutdown. Plain enqueues reach it through the
    /// engine's enqueue queue, results through `results`; anything that makes
    /// runs or credits available wakes it through `wake_dispatch`.
    pub async fn commit_loop(
        self: Arc<Self>,
        mut results: UnboundedReceiver<ResultMessage>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let (tx, mut enqueues) = tokio::sync::mpsc::unbounded_channel();
        if self.enqueue_queue.set(tx).is_err() {
            return; // already running
        }
        // Results whose round failed to commit, retried first in the next round.
        let mut retry: Vec<ResultMessage> = Vec::new();
        loop {
            let mut pending = Vec::new();
            let mut messages = std::mem::take(&mut retry);
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                p = enqueues.recv() => match p {
                    Some(p) => pending.push(p),
                    None => return,
                },
                m = results.recv() => match m {
                    Some(m) => messages.push(m),
                    None => return,
                },
                _ = self.wake_dispatch.notified() => {}
            }
            while pending.len() < MAX_BATCH
                && let Ok(p) = enqueues.try_recv()
            {
                pending.push(p);
            }
            while messages.len() < MAX_RESULT_BATCH
                && let Ok(m) = results.try_recv()
            {
                messages.push(m);
            }
            let (committed, unrecorded) = self.round(pending, messages).await;
            retry = unrecorded;
            if let Err(e) = committed {
                tracing::error!(error = %e, results = retry.len(), "commit round failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                self.wake_dispatch.notify_one();
            } else if !retry.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }

    /// One round (see the module docs). Returns the commit's outcome, after
    /// everything of the round that could be answered was, and the results that
    /// could not be recorded (for the next round).
    async fn round(
        &self,
        pending: Vec<PendingEnqueue>,
        messages: Vec<ResultMessage>,
    ) -> (Result<()>, Vec<ResultMessage>) {
        let jobs = self.jobs();
        let now = now_ms();
        let mut core = self.lock_core().await;

        let mut sorted = self.sort_results(&core, messages);
        let (mut changes, ends) = sorted.grouped_writes();

        let plan = InsertPlan {
            runs: pending.iter().map(|p| p.new_run(now)).collect(),
            dependencies: Vec::new(),
        };
        for run in &plan.runs {
            Engine::index_new_run(&mut core, run, Default::default());
        }
        if plan.runs.iter().any(|r| r.state == crate::model::RunState::Scheduled) {
            self.wake_timers.notify_one();
        }

        let picks = self.pick(&mut core, &jobs, now);
        changes.extend(picks.changes.iter().cloned());

        let committed = if plan.runs.is_empty() && changes.is_empty() && ends.is_empty() {
            Ok(())
        } else {
            let started = std::time::Instant::now();
            let committed = self.store.commit(&plan, &changes, &picks.starts, &ends).await;
            tracing::debug!(
                new_runs = plan.runs.len(),
                changes = changes.len(),
                starts = picks.starts.len(),
                ends = ends.len(),
                micros = started.elapsed().as_micros() as u64,
                "round committed"
            );
            committed
        };

        match &committed {
            Ok(()) => {
                for (pending, run) in pending.into_iter().zip(plan.runs) {
                    self.plain_committed(pending, run);
                }
                if !picks.is_empty() {
                    self.picks_committed(&mut core, &jobs, picks, now);
                }
            }
            Err(e) => {
                Engine::picks_failed(&mut core, &picks);
                for run in &plan.runs {
                    Engine::unindex_plain(&mut core, &run.id);
                }
                for pending in pending {
                    pending.fail(e.clone());
                }
            }
        }
        self.settle_sorted(&mut core, &mut sorted, &committed).await;
        drop(core);
        let unrecorded = self.answer_results(sorted).await;
        (committed, unrecorded)
    }
}
