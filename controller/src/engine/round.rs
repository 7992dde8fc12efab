//! The commit loop: plain enqueues, dispatch and agent results share one store
//! transaction per round.
//!
//! Each round takes the core lock, then
//!
//! 1. sorts the results that arrived (see `Engine::sort_results`);
//! 2. indexes the runs of the plain enqueues that arrived, so that
//! 3. the dispatcher may assign them in the same round (see `Engine::pick`);
//! 4. commits new runs, assignments and settled results in ONE transaction;
//! 5. only then sends assignments, answers the enqueues and acknowledges the
//!    results.
//!
//! If the store refuses the transaction for its content (not because it is
//! unreachable), the round's pieces (each enqueue with its assignment, each
//! result, each other assignment) are committed in halves, and halves of
//! those, down to single pieces where needed: one poisoned piece among
//! 2,000 costs ~22 commits. What commits goes on as above; what fails alone
//! fails alone: its enqueue is refused, its result is offered again after a
//! backoff ([`Rounds`]), its run is held back from dispatch for a backoff
//! ([`super::state::Hold`]). A result is never refused for a failed commit
//! (an agent forgets a result once it is answered): it stays unanswered until
//! it is recorded, and its attempt's lease is renewed meanwhile (the agent
//! stopped reporting the attempt in its heartbeats when it sent the result).
//!
//! Rounds run back to back while there is work: whatever arrives during one
//! round's commit goes into the next (natural group commit, no timer), and an
//! idle controller commits a lone enqueue at once. One commit per round instead
//! of one per kind of work means fewer, larger transactions, and an enqueued run
//! with a free agent is started by the very commit that creates it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::dispatch::{MAX_RESULT_BATCH, Picks};
use super::enqueue::{MAX_BATCH, PendingEnqueue};
use super::state::{Core, backoff_ms};
use super::{Counters, Engine, ResultMessage};
use crate::store::{AttemptEnd, AttemptStart, InsertPlan, StateChange, WriteError};

/// The queues a commit loop (or a step-by-step test) takes rounds from: the
/// plain enqueues and agent results waiting, and results whose commit failed,
/// waiting for their backoff to end.
pub struct Rounds {
    enqueues: UnboundedReceiver<PendingEnqueue>,
    results: UnboundedReceiver<ResultMessage>,
    /// Results not recorded yet, with when to offer them again.
    held: Vec<(i64, ResultMessage)>,
    /// Failures in a row of a held result, by (run id, attempt).
    failures: HashMap<(String, u32), u32>,
    /// When the first run held back from dispatch may be assigned again:
    /// the loop wakes then (nothing else would on a quiet controller).
    wake_at: Option<i64>,
}

impl Rounds {
    /// Results held for a later round.
    pub fn held_results(&self) -> usize {
        self.held.len()
    }

    /// When the loop must run a round even if nothing arrives: the first
    /// held result is due, or a held-back run may be assigned again.
    fn next_due(&self) -> Option<i64> {
        self.held.iter().map(|(at, _)| *at).chain(self.wake_at).min()
    }

    /// A copy of a result (the same agent, attempt and outcome) that arrives
    /// while the first is held, or in the same round (the agent resent it
    /// after a reconnect), lends the first its stream, so the one `Ack`
    /// reaches the agent's current connection; it is not a second result.
    fn merge_resent(&mut self, messages: &mut Vec<ResultMessage>) {
        // Within the round: the first copy is kept, with the latest stream.
        let mut first: HashMap<(String, String, u32, String), usize> = HashMap::new();
        let mut duplicates = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let key = copy_key(m);
            if let Some(&j) = first.get(&key) {
                duplicates.push((j, i));
            } else {
                first.insert(key, i);
            }
        }
        for &(j, i) in &duplicates {
            let reply = messages[i].reply.clone();
            messages[j].reply = reply;
        }
        let mut keep = vec![true; messages.len()];
        for &(_, i) in &duplicates {
            keep[i] = false;
        }
        let mut keep = keep.into_iter();
        messages.retain(|_| keep.next().unwrap_or(true));
        if self.held.is_empty() {
            return;
        }
        messages.retain_mut(|m| {
            let held = self.held.iter_mut().find(|(_, h)| copy_key(h) == copy_key(m));
            match held {
                Some((_, h)) => {
                    std::mem::swap(&mut h.reply, &mut m.reply);
                    false
                }
                None => true,
            }
        });
    }

    /// Takes the held results due at `now`.
    fn take_due(&mut self, now: i64, into: &mut Vec<ResultMessage>) {
        let mut i = 0;
        while i < self.held.len() && into.len() < MAX_RESULT_BATCH {
            if self.held[i].0 <= now {
                into.push(self.held.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
    }

    /// Holds results that were not recorded. After a failure of their own,
    /// each waits its backoff (250 ms doubling, at most `max_wait_ms`); with
    /// the store unreachable they are offered again in [`STORE_DOWN_RETRY_MS`],
    /// without counting that as their failure.
    fn hold(&mut self, unrecorded: Vec<ResultMessage>, now: i64, store_down: bool, max_wait_ms: i64) {
        for message in unrecorded {
            let wait = if store_down {
                STORE_DOWN_RETRY_MS
            } else {
                let key = (message.finished.run_id.clone(), message.finished.attempt);
                let failures = self.failures.entry(key).or_insert(0);
                *failures += 1;
                backoff_ms(*failures).min(max_wait_ms)
            };
            self.held.push((now + wait, message));
        }
    }
}

/// What makes two result messages copies of one result: the agent, the
/// attempt and the outcome it reports.
fn copy_key(m: &ResultMessage) -> (String, String, u32, String) {
    (
        m.agent_id.clone(),
        m.finished.run_id.clone(),
        m.finished.attempt,
        m.finished.outcome.clone(),
    )
}

/// With the store unreachable, how soon held results are offered again.
const STORE_DOWN_RETRY_MS: i64 = 500;

/// What one round did (for logs and step-by-step tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundReport {
    /// Transactions committed (more than one when the round was split).
    pub commits: usize,
    /// Runs created.
    pub created: usize,
    /// Assignments sent.
    pub assigned: usize,
    /// Results recorded or answered.
    pub answered: usize,
    /// Enqueues, results and assignments whose commit failed.
    pub failed: usize,
    /// Nothing could be committed: the store was unreachable (or the engine stopped).
    pub store_unavailable: bool,
    /// When the first run held back from dispatch in this round may be
    /// assigned again.
    pub held_until: Option<i64>,
}

/// One piece of a round that commits (or fails) on its own when the round is
/// split: a new run with its assignment, a result, or an assignment.
#[derive(Default)]
struct Piece {
    runs: Vec<usize>,
    picks: Vec<usize>,
    results: Vec<usize>,
}

impl Engine {
    /// Connects the round queues: plain enqueues go to the returned [`Rounds`]
    /// from now on, and agent results are sent on the returned sender. `None`
    /// when they are connected already.
    pub fn rounds(&self) -> Option<(UnboundedSender<ResultMessage>, Rounds)> {
        let (tx, enqueues) = tokio::sync::mpsc::unbounded_channel();
        self.enqueue_queue.set(tx).ok()?;
        let (results_tx, results) = tokio::sync::mpsc::unbounded_channel();
        Some((
            results_tx,
            Rounds {
                enqueues,
                results,
                held: Vec::new(),
                failures: HashMap::new(),
                wake_at: None,
            },
        ))
    }

    /// Runs commit rounds until shutdown. Anything that makes runs or credits
    /// available wakes it through `wake_dispatch`; held results wake it when
    /// their backoff ends.
    pub async fn commit_loop(self: Arc<Self>, mut rounds: Rounds, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            // Tests make the loop panic here (see server::Loops).
            fail::fail_point!("engine::commit_loop");
            let mut pending = Vec::new();
            let mut messages = Vec::new();
            let held_wait = rounds
                .next_due()
                .map(|at| Duration::from_millis((at - self.now()).max(0) as u64));
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                p = rounds.enqueues.recv() => match p {
                    Some(p) => pending.push(p),
                    None => return,
                },
                m = rounds.results.recv() => match m {
                    Some(m) => messages.push(m),
                    None => return,
                },
                _ = self.wake_dispatch.notified() => {}
                _ = tokio::time::sleep(held_wait.unwrap_or(Duration::MAX)), if held_wait.is_some() => {}
            }
            let report = self.round_with(&mut rounds, pending, messages).await;
            if self.failure().is_some() {
                return;
            }
            if report.store_unavailable {
                // The store is unreachable: do not spin.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return,
                }
                self.wake_dispatch.notify_one();
            }
        }
    }

    /// Runs one round now with what is waiting (step-by-step tests drive the
    /// engine with this instead of the loop).
    pub async fn run_round(&self, rounds: &mut Rounds) -> RoundReport {
        self.round_with(rounds, Vec::new(), Vec::new()).await
    }

    async fn round_with(
        &self,
        rounds: &mut Rounds,
        mut pending: Vec<PendingEnqueue>,
        mut messages: Vec<ResultMessage>,
    ) -> RoundReport {
        let now = self.now();
        if rounds.wake_at.is_some_and(|at| at <= now) {
            rounds.wake_at = None;
        }
        rounds.take_due(now, &mut messages);
        while pending.len() < MAX_BATCH
            && let Ok(p) = rounds.enqueues.try_recv()
        {
            pending.push(p);
        }
        while messages.len() < MAX_RESULT_BATCH
            && let Ok(m) = rounds.results.try_recv()
        {
            messages.push(m);
        }
        rounds.merge_resent(&mut messages);
        let offered: Vec<(String, u32)> = messages
            .iter()
            .map(|m| (m.finished.run_id.clone(), m.finished.attempt))
            .collect();
        let (report, unrecorded) = self.round(pending, messages).await;
        // Answered results forget their failures; unrecorded ones are held.
        for key in offered {
            let still_held = unrecorded
                .iter()
                .any(|m| m.finished.run_id == key.0 && m.finished.attempt == key.1);
            if !still_held {
                rounds.failures.remove(&key);
            }
        }
        // A held result's attempt keeps its lease: the agent stopped
        // reporting it when it sent the result.
        for message in &unrecorded {
            let attempt = worker_proto::v1::InFlight {
                run_id: message.finished.run_id.clone(),
                attempt: message.finished.attempt,
            };
            self.renew_leases(&message.agent_id, std::slice::from_ref(&attempt));
        }
        let max_wait = (self.settings.lease_timeout.as_millis() as i64 / 4).max(250);
        rounds.hold(unrecorded, self.now(), report.store_unavailable, max_wait);
        if let Some(until) = report.held_until {
            rounds.wake_at = Some(rounds.wake_at.map_or(until, |at| at.min(until)));
        }
        report
    }

    /// One round (see the module docs). Returns what it did, and the results
    /// that could not be recorded (for a later round).
    async fn round(
        &self,
        pending: Vec<PendingEnqueue>,
        messages: Vec<ResultMessage>,
    ) -> (RoundReport, Vec<ResultMessage>) {
        let now = self.now();
        let mut report = RoundReport::default();
        let mut core = self.lock_core().await;
        // Read under the core lock, which `delete_job` holds while it checks
        // for unfinished runs and removes a definition: an enqueue accepted
        // before its job was deleted gets no run.
        let jobs = self.jobs();
        let pending = Engine::drop_undefined(pending, &jobs);

        let mut sorted = self.sort_results(&core, messages);
        let grouped = sorted.grouped_writes();

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

        // An illegal move stops the engine (see `Engine::change`): no picks then.
        let picks = self.pick(&mut core, &jobs, now).await.unwrap_or_default();
        report.held_until = picks.held_until;

        // The pieces a split round commits one by one: each new run with its
        // assignment (if it got one), each other assignment, each result.
        let mut pieces: Vec<Piece> = Vec::new();
        let mut piece_of_run: HashMap<&str, usize> = HashMap::new();
        for (i, run) in plan.runs.iter().enumerate() {
            piece_of_run.insert(run.id.as_str(), pieces.len());
            pieces.push(Piece {
                runs: vec![i],
                ..Piece::default()
            });
        }
        for (i, (run_id, _)) in picks.picks.iter().enumerate() {
            match piece_of_run.get(run_id.as_str()) {
                Some(&p) => pieces[p].picks.push(i),
                None => pieces.push(Piece {
                    picks: vec![i],
                    ..Piece::default()
                }),
            }
        }
        for i in 0..grouped.len() {
            pieces.push(Piece {
                results: vec![i],
                ..Piece::default()
            });
        }

        let committed = self.commit_pieces(&plan, &picks, &grouped, &pieces, &mut report).await;

        // Apply each piece's outcome.
        let mut run_outcome: Vec<Option<&Result<(), Failure>>> = vec![None; plan.runs.len()];
        let mut pick_ok = vec![false; picks.picks.len()];
        let mut result_ok = vec![false; grouped.len()];
        let mut failed_alone: Vec<bool> = vec![false; picks.picks.len()];
        for (piece, outcome) in pieces.iter().zip(&committed) {
            for &r in &piece.runs {
                run_outcome[r] = Some(outcome);
            }
            for &p in &piece.picks {
                pick_ok[p] = outcome.is_ok();
                failed_alone[p] = matches!(outcome, Err(Failure::Alone(_)));
            }
            for &g in &piece.results {
                result_ok[g] = outcome.is_ok();
                if let Err(Failure::Alone(e)) = outcome {
                    Counters::add(&self.counters.failed_results);
                    tracing::warn!(run = %grouped[g].0.run_id, error = %e, "a result could not be recorded; offered again later");
                }
            }
        }
        report.failed += committed.iter().filter(|c| c.is_err()).count();
        report.store_unavailable = committed.iter().any(|c| matches!(c, Err(Failure::Together(_))));

        for ((pending, run), outcome) in pending.into_iter().zip(plan.runs).zip(run_outcome) {
            match outcome {
                Some(Ok(())) => {
                    report.created += 1;
                    self.plain_committed(pending, run);
                }
                Some(Err(failure)) => {
                    Engine::unindex_plain(&mut core, &run.id);
                    pending.fail(failure.error());
                }
                None => unreachable!("every new run is in a piece"),
            }
        }
        let held: Vec<String> = picks
            .picks
            .iter()
            .zip(&failed_alone)
            .filter(|(_, alone)| **alone)
            .map(|((run_id, _), _)| run_id.clone())
            .collect();
        let (done, failed) = picks.split(&pick_ok);
        Engine::picks_failed(&mut core, &failed);
        for run_id in held {
            if let Some(until) = self.hold_after_failure(&mut core, &run_id, now, "an assignment could not be recorded")
            {
                report.held_until = Some(report.held_until.map_or(until, |at| at.min(until)));
            }
        }
        report.assigned += done.picks.len();
        if !done.is_empty() {
            self.picks_committed(&mut core, &jobs, done, now);
        }
        self.settle_sorted(&mut core, &mut sorted, &result_ok).await;
        drop(core);
        let unrecorded = self.answer_results(sorted).await;
        report.answered = result_ok.iter().filter(|ok| **ok).count();
        (report, unrecorded)
    }

    /// Commits the round's pieces: all in one transaction, or, when the store
    /// refuses that for its content, each piece alone. Returns each piece's
    /// outcome.
    async fn commit_pieces(
        &self,
        plan: &InsertPlan,
        picks: &Picks,
        grouped: &[(StateChange, AttemptEnd)],
        pieces: &[Piece],
        report: &mut RoundReport,
    ) -> Vec<Result<(), Failure>> {
        if pieces.is_empty() {
            return Vec::new();
        }
        let all: Vec<usize> = (0..pieces.len()).collect();
        let (whole_plan, changes, starts, ends) = writes_of(plan, picks, grouped, pieces, &all);
        let started = std::time::Instant::now();
        let whole = self.write(&whole_plan, &changes, &starts, &ends).await;
        if whole.is_ok() {
            self.metrics
                .round_committed(started.elapsed(), whole_plan.runs.len() + starts.len() + ends.len());
        }
        tracing::debug!(
            new_runs = whole_plan.runs.len(),
            changes = changes.len(),
            starts = starts.len(),
            ends = ends.len(),
            micros = started.elapsed().as_micros() as u64,
            ok = whole.is_ok(),
            "round committed"
        );
        let error = match whole {
            Ok(()) => {
                report.commits += 1;
                return vec![Ok(()); pieces.len()];
            }
            Err(e) => e,
        };
        let store_wide = |e: &WriteError| e.is_unavailable() || self.failure().is_some();
        if store_wide(&error) {
            return vec![Err(Failure::Together(error)); pieces.len()];
        }
        if pieces.len() == 1 {
            return vec![Err(Failure::Alone(error))];
        }
        tracing::warn!(error = %error, pieces = pieces.len(), "a commit round failed; committing its parts in halves");
        let mut outcomes: Vec<Option<Result<(), Failure>>> = vec![None; pieces.len()];
        // The whole failed already: start with its halves.
        let (left, right) = all.split_at(all.len() / 2);
        let mut groups = vec![right.to_vec(), left.to_vec()];
        let mut gone: Option<WriteError> = None;
        while let Some(group) = groups.pop() {
            if let Some(e) = &gone {
                // The store became unreachable, or the engine stopped: the rest fails too.
                for &i in &group {
                    outcomes[i] = Some(Err(Failure::Together(e.clone())));
                }
                continue;
            }
            let (piece_plan, changes, starts, ends) = writes_of(plan, picks, grouped, pieces, &group);
            match self.write(&piece_plan, &changes, &starts, &ends).await {
                Ok(()) => {
                    report.commits += 1;
                    for &i in &group {
                        outcomes[i] = Some(Ok(()));
                    }
                }
                Err(e) if store_wide(&e) => {
                    for &i in &group {
                        outcomes[i] = Some(Err(Failure::Together(e.clone())));
                    }
                    gone = Some(e);
                }
                Err(e) if group.len() == 1 => outcomes[group[0]] = Some(Err(Failure::Alone(e))),
                Err(_) => {
                    let (left, right) = group.split_at(group.len() / 2);
                    groups.push(right.to_vec());
                    groups.push(left.to_vec());
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every piece has an outcome"))
            .collect()
    }

    /// Holds `run_id` back after its own write failed, and counts it.
    /// Returns when the hold ends.
    pub(super) fn hold_after_failure(&self, core: &mut Core, run_id: &str, now: i64, what: &str) -> Option<i64> {
        let id = core.live.get(run_id).map(|r| r.id.clone())?;
        let hold = core.hold(&id, now);
        Counters::add(&self.counters.failed_writes);
        tracing::warn!(run = %run_id, failures = hold.failures, retry_in_ms = hold.until - now, "{what}; tried again later");
        Some(hold.until)
    }
}

/// Why a piece of a round was not committed.
#[derive(Debug, Clone)]
enum Failure {
    /// Its own commit failed while others' succeeded (or it was alone).
    Alone(WriteError),
    /// Everything failed together (store unreachable, engine stopped).
    Together(WriteError),
}

impl Failure {
    fn error(&self) -> crate::error::Error {
        match self {
            Failure::Alone(e) | Failure::Together(e) => e.clone().into(),
        }
    }
}

/// The writes of the pieces `which`.
fn writes_of(
    plan: &InsertPlan,
    picks: &Picks,
    grouped: &[(StateChange, AttemptEnd)],
    pieces: &[Piece],
    which: &[usize],
) -> (InsertPlan, Vec<StateChange>, Vec<AttemptStart>, Vec<AttemptEnd>) {
    let mut piece_plan = InsertPlan::default();
    let (mut changes, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for &i in which {
        let piece = &pieces[i];
        piece_plan.runs.extend(piece.runs.iter().map(|&r| plan.runs[r].clone()));
        for &g in &piece.results {
            changes.push(grouped[g].0.clone());
            ends.push(grouped[g].1.clone());
        }
        for &p in &piece.picks {
            changes.push(picks.changes[p].clone());
            starts.push(picks.starts[p].clone());
        }
    }
    (piece_plan, changes, starts, ends)
}
