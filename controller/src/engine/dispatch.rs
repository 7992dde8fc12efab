//! The agent side of the engine: registration, credits, dispatch (group-committed
//! assignments) and results.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use worker_proto::v1::{
    Ack, Assignment, Cancel, ControllerMessage, Drain, Finished, Hello, InFlight, Welcome, controller_message::Msg,
};

use super::select::select_assignments;
use super::state::{AgentEntry, AgentSender, Core, Renewal};
use super::transitions::{self, Mover};
use super::{Counters, Engine, tail_bytes};
use crate::alerting::facts::{AttemptFact, Fact, output_tail};
use crate::api::convert::executor_to_proto;
use crate::config::JobSet;
use crate::error::{Error, Result};
use crate::limits::exceeds;
use crate::model::{Outcome, RunState};
use crate::store::{AttemptEnd, AttemptStart, StateChange};
use crate::time::{parse_rfc3339, rfc3339};

/// Most handler names one agent may register.
pub const MAX_HANDLERS: usize = 1024;

/// Executor kinds an agent may announce.
pub const EXECUTOR_KINDS: &[&str] = &["shell", "http", "builtin", "handler"];

/// What to do with an attempt that ended.
pub(super) struct Settlement {
    change: StateChange,
    end: AttemptEnd,
    job: String,
    /// Changes of runs blocked behind this one.
    dependents: Vec<StateChange>,
}

impl Engine {
    /// Registers an agent connection (new or reconnecting) and sends `Welcome`.
    /// Runs it reports in flight that are still its current attempts stay with it.
    /// Returns the connection number to pass to the other agent calls.
    pub async fn register_agent(&self, hello: &Hello, sender: AgentSender) -> Result<u64> {
        if hello.agent_id.is_empty() {
            return Err(Error::invalid("hello.agent_id", "must not be empty"));
        }
        let limits = crate::limits::current();
        if hello.capacity == 0 {
            return Err(Error::invalid("hello.capacity", "must be at least 1"));
        }
        if hello.capacity > limits.agent_capacity {
            return Err(Error::invalid(
                "hello.capacity",
                exceeds(hello.capacity, "agent_capacity", limits.agent_capacity),
            ));
        }
        check_agent_text("hello.agent_id", &hello.agent_id)?;
        check_agent_text("hello.name", &hello.name)?;
        check_agent_text("hello.host", &hello.host)?;
        if hello.labels.len() > limits.labels {
            return Err(Error::invalid(
                "hello.labels",
                exceeds(format!("{} labels", hello.labels.len()), "labels", limits.labels),
            ));
        }
        for (key, value) in &hello.labels {
            if key.is_empty() {
                return Err(Error::invalid("hello.labels", "a label key must not be empty"));
            }
            let field = format!("hello.labels.{}", crate::limits::echo(key));
            check_text(&field, key, limits.label_bytes, "label_bytes")?;
            check_text(&field, value, limits.label_bytes, "label_bytes")?;
        }
        if let Some(bad) = hello.executors.iter().find(|e| !EXECUTOR_KINDS.contains(&e.as_str())) {
            return Err(Error::invalid(
                "hello.executors",
                format!("unknown executor \"{bad}\" (expected: {})", EXECUTOR_KINDS.join(", ")),
            ));
        }
        if hello.handlers.len() > MAX_HANDLERS {
            return Err(Error::invalid(
                "hello.handlers",
                format!("{} handlers, at most {MAX_HANDLERS}", hello.handlers.len()),
            ));
        }
        if let Some(bad) = hello.handlers.iter().find(|h| !crate::job::valid_handler_name(h)) {
            return Err(Error::invalid(
                "hello.handlers",
                format!(
                    "\"{}\" is not a handler name (1 to 128 letters, digits, `.`, `_`, `:`, `-`)",
                    crate::limits::echo(bad)
                ),
            ));
        }
        if !hello.handlers.is_empty() && !hello.executors.iter().any(|e| e == "handler") {
            return Err(Error::invalid(
                "hello.handlers",
                "handlers are registered but the executor `handler` is not enabled",
            ));
        }
        let now = self.now();
        let lease = self.settings.lease_timeout.as_millis() as i64;
        let mut core = self.lock_core().await;
        core.next_connection += 1;
        let connection = core.next_connection;
        let welcome = ControllerMessage {
            msg: Some(Msg::Welcome(Welcome {
                heartbeat_interval_ms: self.settings.heartbeat_interval.as_millis() as u64,
                lease_timeout_ms: self.settings.lease_timeout.as_millis() as u64,
            })),
        };
        let _ = sender.send(Ok(welcome));
        let mut kept = BTreeSet::new();
        for InFlight { run_id, attempt } in &hello.in_flight {
            if let Some(run) = core.live.get_mut(run_id.as_str())
                && run.state == RunState::Running
                && run.attempt == *attempt
                && run.agent_id().is_none_or(|a| a == hello.agent_id)
            {
                let extra = run.extra_mut();
                extra.agent_id = Some(hello.agent_id.clone());
                extra.lease_until = now + lease;
                kept.insert((run_id.clone(), *attempt));
                if run.cancel_requested {
                    // The Cancel may have been lost with the previous connection.
                    let cancel = Cancel {
                        run_id: run_id.clone(),
                        attempt: *attempt,
                    };
                    let _ = sender.send(Ok(ControllerMessage {
                        msg: Some(Msg::Cancel(cancel)),
                    }));
                }
            }
        }
        // An earlier process of the same agent (restarted: a new id, the same
        // name and host) is not lost: it was replaced.
        for other in core.agents.values_mut() {
            if other.sender.is_none() && other.name == hello.name && other.host == hello.host {
                other.lost_reported = true;
            }
        }
        let previous = core.agents.remove(&hello.agent_id);
        // A second connection with the same id replaces the first, whose
        // stream ends with an error so that its agent notices.
        if let Some(old) = previous.as_ref().and_then(|p| p.sender.as_ref()) {
            tracing::warn!(id = %hello.agent_id, "agent connection replaced by a new one with the same id");
            let _ = old.send(Err(tonic::Status::aborted(
                "replaced: a new connection with this agent id took over this stream",
            )));
        }
        let mut running = previous.map(|p| p.running).unwrap_or_default();
        running.extend(kept.iter().cloned());
        tracing::info!(agent = %hello.name, id = %hello.agent_id, capacity = hello.capacity, kept = kept.len(), "agent connected");
        core.agents.insert(
            hello.agent_id.clone(),
            AgentEntry {
                id: hello.agent_id.clone(),
                name: if hello.name.is_empty() {
                    hello.agent_id.clone()
                } else {
                    hello.name.clone()
                },
                host: hello.host.clone(),
                labels: hello.labels.clone().into_iter().collect(),
                executors: hello.executors.clone(),
                handlers: hello.handlers.iter().cloned().collect(),
                capacity: hello.capacity,
                version: hello.version.clone(),
                credits: 0,
                sender: Some(sender),
                connection,
                connected_at: now,
                last_seen: now,
                running,
                lost_reported: false,
                draining: false,
            },
        );
        Ok(connection)
    }

    /// The connection ended: the agent keeps its runs until their leases expire.
    pub async fn agent_disconnected(&self, agent_id: &str, connection: u64) {
        let mut core = self.lock_core().await;
        if let Some(agent) = core.agents.get_mut(agent_id)
            && agent.connection == connection
        {
            agent.sender = None;
            agent.credits = 0;
            tracing::info!(agent = %agent.name, running = agent.running.len(), "agent disconnected");
        }
    }

    /// `DrainAgent`: marks the connected agent `id` draining (it is assigned
    /// nothing more; its credits are dropped) and sends it `Drain`, after
    /// which it finishes its in-flight runs and disconnects. An agent already
    /// draining is returned as it is; an unknown id is `NotFound`, a
    /// disconnected agent (nothing to drain) `FailedPrecondition`.
    pub async fn drain_agent(&self, id: &str) -> Result<super::AgentView> {
        let mut core = self.lock_core().await;
        let Some(agent) = core.agents.get_mut(id) else {
            return Err(Error::not_found(format!(
                "agent \"{}\" is not known (ListAgents shows the agents)",
                crate::limits::echo(id)
            )));
        };
        if agent.draining {
            return Ok(super::views::agent_view(agent));
        }
        let Some(sender) = agent.sender.as_ref() else {
            return Err(Error::precondition(format!(
                "agent \"{}\" is disconnected: there is nothing to drain",
                crate::limits::echo(id)
            )));
        };
        let _ = sender.send(Ok(ControllerMessage {
            msg: Some(Msg::Drain(Drain {})),
        }));
        agent.draining = true;
        agent.credits = 0;
        tracing::info!(agent = %agent.name, id = %agent.id, running = agent.running.len(), "agent asked to drain");
        Ok(super::views::agent_view(agent))
    }

    /// `Pull{credits}`: the agent can take more runs. Never waits for the core
    /// lock: the credits are applied by whoever takes it next (the dispatcher,
    /// which is woken here).
    pub fn add_credits(&self, agent_id: &str, connection: u64, credits: u32) {
        self.with_inbox(|inbox| inbox.credits.push((agent_id.to_string(), connection, credits)));
        self.wake_dispatch.notify_one();
    }

    /// `Heartbeat` / `Started`: renews the leases of the attempts the agent holds.
    /// Never waits for the core lock (see [`Engine::add_credits`]); the timer loop
    /// applies renewals before it looks for expired leases.
    pub fn renew_leases(&self, agent_id: &str, in_flight: &[InFlight]) {
        let held = in_flight.iter().map(|i| (i.run_id.clone(), i.attempt)).collect();
        let now = self.now();
        self.with_inbox(|inbox| {
            inbox.renewals.push(Renewal {
                agent_id: agent_id.to_string(),
                held,
                at: now,
            })
        });
    }

    /// Chooses assignments for the free credits, in priority order, and the
    /// store changes that record them (committed by the caller's round). The
    /// credits are taken now; [`Engine::picks_failed`] gives them back.
    ///
    /// Each pick carries its payload: from memory, or, for runs whose payload
    /// is only in the store (beyond the memory budget), from ONE read of all
    /// of them per round ([`Engine::load_payloads`]). When everything is in
    /// memory (the common case) nothing is read.
    pub(super) async fn pick(&self, core: &mut Core, jobs: &JobSet, now: i64) -> Result<Picks> {
        let mut picked = Picks::default();
        if !core
            .agents
            .values()
            .any(|a| a.sender.is_some() && !a.draining && a.credits > 0)
            || core.ready.is_empty()
        {
            return Ok(picked);
        }
        let mut selected = select_assignments(core, jobs, now);
        let mut payloads: Vec<Option<Arc<str>>> = selected
            .iter()
            .map(|(run_id, _)| core.live[run_id.as_str()].payload.clone())
            .collect();
        if payloads.iter().any(Option::is_none) {
            picked.held_until = self.load_payloads(core, &mut selected, &mut payloads, now).await;
        }
        for ((run_id, agent_id), payload) in selected.into_iter().zip(payloads) {
            let Some(payload) = payload else { continue };
            let run = &core.live[run_id.as_str()];
            let attempt = run.attempt + 1;
            let mut change = self.change(&run_id, run.state, RunState::Running, Mover::Dispatcher, now, None)?;
            change.attempt = Some(attempt);
            picked.changes.push(change);
            picked.starts.push(AttemptStart {
                run_id: run_id.clone(),
                attempt,
                agent_id: agent_id.clone(),
                agent_name: core.agents[&agent_id].name.clone(),
                started_at: now,
            });
            picked.payloads.push(payload);
            picked.picks.push((run_id, agent_id));
        }
        Ok(picked)
    }

    /// Reads from the store, in one query, the payloads of the `selected`
    /// runs that have none in memory, into `payloads`. A run whose payload
    /// cannot be read (the store failed) is not assigned: its agent gets the
    /// credit back and the run is held back from dispatch for a backoff.
    /// Returns when the first such hold ends. The payloads read are not kept
    /// in memory: they go out with the assignments.
    async fn load_payloads(
        &self,
        core: &mut Core,
        selected: &mut [(String, String)],
        payloads: &mut [Option<Arc<str>>],
        now: i64,
    ) -> Option<i64> {
        let missing: Vec<String> = selected
            .iter()
            .zip(payloads.iter())
            .filter(|(_, p)| p.is_none())
            .map(|((run_id, _), _)| run_id.clone())
            .collect();
        let mut read: HashMap<String, String> = match self.store.payloads(&missing).await {
            Ok(found) => found.into_iter().collect(),
            Err(e) => {
                tracing::warn!(runs = missing.len(), error = %e, "payloads could not be read from the store");
                HashMap::new()
            }
        };
        let mut held_until: Option<i64> = None;
        for ((run_id, agent_id), payload) in selected.iter().zip(payloads.iter_mut()) {
            if payload.is_some() {
                continue;
            }
            match read.remove(run_id) {
                Some(text) => *payload = Some(Arc::from(text)),
                None => {
                    if let Some(agent) = core.agents.get_mut(agent_id) {
                        agent.credits += 1;
                    }
                    let id = core.live[run_id.as_str()].id.clone();
                    let hold = core.hold(&id, now);
                    tracing::warn!(run = %run_id, failures = hold.failures, "payload not read; dispatch tried again later");
                    held_until = Some(held_until.map_or(hold.until, |at| at.min(hold.until)));
                }
            }
        }
        held_until
    }

    /// The commit of `picks` failed: the agents get their credits back and the
    /// runs stay queued.
    pub(super) fn picks_failed(core: &mut Core, picks: &Picks) {
        for (_, agent_id) in &picks.picks {
            if let Some(agent) = core.agents.get_mut(agent_id) {
                agent.credits += 1;
            }
        }
    }

    /// `picks` are committed: the runs are running, their assignments go out.
    pub(super) fn picks_committed(&self, core: &mut Core, jobs: &JobSet, picks: Picks, now: i64) {
        let lease_until = now + self.settings.lease_timeout.as_millis() as i64;
        for ((run_id, agent_id), payload) in picks.picks.iter().zip(&picks.payloads) {
            if let Some(run) = core.live.get(run_id.as_str())
                && let Some((_, ready_at, _)) = run.ready_key
            {
                self.metrics.run_started(&run.job, now - ready_at);
            }
            core.unindex(run_id);
            core.release_hold(run_id);
            // A big payload's memory goes back to the budget: it is on its way.
            core.drop_big_payload(run_id);
            let run = core.live.get_mut(run_id.as_str()).expect("picked run is live");
            run.state = RunState::Running;
            let id = run.id.clone();
            run.attempt += 1;
            let extra = run.extra_mut();
            extra.agent_id = Some(agent_id.clone());
            extra.lease_until = lease_until;
            extra.started_at = now;
            let (job_name, attempt) = (run.job.clone(), run.attempt);
            let timeout = jobs.get(&job_name).and_then(|j| j.timeout);
            run.extra_mut().deadline =
                timeout.map(|t| now + t.as_millis() as i64 + self.settings.lease_timeout.as_millis() as i64);
            *core.running_by_job.entry(job_name.clone()).or_default() += 1;
            core.running.insert(id);
            let job = jobs.get(&job_name).expect("picked run's job exists");
            let timeout_ms = job.timeout.map(|t| t.as_millis() as u64).unwrap_or(0);
            let assignment = Assignment {
                run_id: run_id.clone(),
                attempt,
                job: job_name.to_string(),
                executor: Some(executor_to_proto(job, true)),
                payload: payload.to_string(),
                timeout_ms,
                deadline: if timeout_ms > 0 {
                    rfc3339(now + timeout_ms as i64)
                } else {
                    String::new()
                },
            };
            if let Some(agent) = core.agents.get_mut(agent_id) {
                agent.running.insert((run_id.clone(), attempt));
            }
            // If the stream just closed, the lease expires and the run is retried.
            core.send_to_agent(
                agent_id,
                ControllerMessage {
                    msg: Some(Msg::Assignment(assignment)),
                },
            );
            tracing::debug!(run = %run_id, job = %job_name, attempt, agent = %agent_id, "run dispatched");
            self.emit(run_id, &job_name, RunState::Running, attempt, now, None);
        }
    }

    /// Sorts `Finished` results under the core lock: refused at once (bad
    /// outcome), stale (not the current attempt: answered after the lock is
    /// released), settled one by one (runs with blocked dependents: their
    /// dependents' changes depend on each other), or settled together in the
    /// caller's round commit.
    pub(super) fn sort_results(&self, core: &Core, messages: Vec<ResultMessage>) -> SortedResults {
        let mut sorted = SortedResults {
            acks: vec![None; messages.len()],
            ..SortedResults::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (index, message) in messages.into_iter().enumerate() {
            let ResultMessage {
                agent_id,
                finished,
                reply,
            } = message;
            sorted.replies.push(reply);
            sorted.agent_ids.push(agent_id.clone());
            sorted.finished.push(finished);
            let finished = &sorted.finished[index];
            let outcome = match finished.outcome.parse::<Outcome>() {
                Ok(Outcome::Lost) | Err(_) => {
                    sorted.acks[index] = Some(ack_of(
                        finished,
                        false,
                        format!("invalid outcome \"{}\"", finished.outcome),
                    ));
                    continue;
                }
                Ok(o) => o,
            };
            let current = core.live.get(finished.run_id.as_str()).is_some_and(|r| {
                r.state == RunState::Running && r.attempt == finished.attempt && r.agent_id() == Some(agent_id.as_str())
            });
            if !current || !seen.insert(finished.run_id.clone()) {
                sorted.stale.push((index, outcome));
                continue;
            }
            let end = attempt_end(finished, outcome, self.now());
            if core.dependents.contains_key(&finished.run_id) {
                sorted.singles.push((index, end, Ask::of(finished)));
                continue;
            }
            match self.settlement(core, end, Ask::of(finished), Mover::Agent) {
                Ok(mut settlement) => {
                    settlement.change.handler_started_micros = handler_started(finished);
                    sorted.grouped.push((index, settlement))
                }
                Err(e) => sorted.acks[index] = Some(ack_of(finished, false, format!("not recorded: {e}"))),
            }
        }
        sorted
    }

    /// After the round's commit: applies the grouped settlements whose commit
    /// succeeded (`committed[i]` for the i-th), then settles the singles one by
    /// one. A result whose commit failed gets no `Ack` (an agent forgets a
    /// result once it is answered, accepted or not): it stays unanswered in
    /// `sorted` for [`SortedResults::unrecorded`] to take into a later round.
    /// Called with the core lock held.
    pub(super) async fn settle_sorted(&self, core: &mut Core, sorted: &mut SortedResults, committed: &[bool]) {
        for (i, (index, settlement)) in std::mem::take(&mut sorted.grouped).into_iter().enumerate() {
            if committed.get(i).copied().unwrap_or(false) {
                self.apply_settlement(core, settlement);
                sorted.acks[index] = Some(ack_of(&sorted.finished[index], true, String::new()));
            }
        }
        for (index, end, ask) in std::mem::take(&mut sorted.singles) {
            let settled = match self.settlement(core, end, ask, Mover::Agent) {
                Ok(mut settlement) => {
                    settlement.change.handler_started_micros = handler_started(&sorted.finished[index]);
                    self.commit_settlement(core, settlement).await
                }
                Err(e) => Err(e),
            };
            match settled {
                Ok(()) => sorted.acks[index] = Some(ack_of(&sorted.finished[index], true, String::new())),
                Err(e) => {
                    Counters::add(&self.counters.failed_results);
                    tracing::warn!(run = %sorted.finished[index].run_id, error = %e, "result not recorded; offered again later")
                }
            }
        }
    }

    /// Answers the stale results (store reads, without the core lock) and sends
    /// every `Ack` on its agent's stream; an `Ack` is only `accepted` once its
    /// result is committed. Returns the results that could not be recorded
    /// (unanswered), for a later round.
    pub(super) async fn answer_results(&self, mut sorted: SortedResults) -> Vec<ResultMessage> {
        for (index, outcome) in std::mem::take(&mut sorted.stale) {
            sorted.acks[index] = Some(self.not_current(&sorted.finished[index], outcome).await);
        }
        let mut unrecorded = Vec::new();
        let answers = sorted
            .replies
            .into_iter()
            .zip(sorted.acks)
            .zip(sorted.agent_ids)
            .zip(sorted.finished);
        for (((reply, ack), agent_id), finished) in answers {
            match ack {
                Some(ack) => {
                    let _ = reply.send(Ok(ControllerMessage {
                        msg: Some(Msg::Ack(ack)),
                    }));
                }
                None => unrecorded.push(ResultMessage {
                    agent_id,
                    finished,
                    reply,
                }),
            }
        }
        unrecorded
    }

    /// The answer to a result whose attempt is not (or no longer) current.
    async fn not_current(&self, finished: &Finished, outcome: Outcome) -> Ack {
        let (run_id, attempt) = (&finished.run_id, finished.attempt);
        match self.store.attempt_outcome(run_id, attempt).await {
            Ok(Some(recorded)) if recorded == outcome => {
                Counters::add(&self.counters.duplicate_results);
                ack_of(finished, true, "duplicate result; already recorded".into())
            }
            Ok(Some(recorded)) => {
                Counters::add(&self.counters.stale_results);
                tracing::warn!(run = %run_id, attempt, %recorded, reported = %outcome, "stale result rejected");
                ack_of(
                    finished,
                    false,
                    format!("attempt {attempt} of run {run_id} was already recorded as {recorded}"),
                )
            }
            Ok(None) => {
                Counters::add(&self.counters.stale_results);
                tracing::warn!(run = %run_id, attempt, "stale result rejected");
                ack_of(
                    finished,
                    false,
                    format!("attempt {attempt} of run {run_id} is not current"),
                )
            }
            Err(e) => ack_of(finished, false, format!("store error: {e}")),
        }
    }

    /// Decides the run's next state after an attempt ended, commits it (with the
    /// changes of runs blocked behind it), and updates memory. Called with the core
    /// lock held.
    pub(super) async fn settle(&self, core: &mut Core, end: AttemptEnd, ask: Ask, by: Mover) -> Result<()> {
        let settlement = self.settlement(core, end, ask, by)?;
        self.commit_settlement(core, settlement).await
    }

    /// Commits a settlement alone (with the changes of the runs blocked behind
    /// it) and updates memory. Called with the core lock held.
    async fn commit_settlement(&self, core: &mut Core, settlement: Settlement) -> Result<()> {
        let mut changes = vec![settlement.change.clone()];
        changes.extend(settlement.dependents.iter().cloned());
        self.write(
            &Default::default(),
            &changes,
            &[],
            std::slice::from_ref(&settlement.end),
        )
        .await?;
        self.apply_settlement(core, settlement);
        Ok(())
    }

    /// What settling an ended attempt writes: the run's next state (decided
    /// by [`transitions::settle`]) and the changes of the runs blocked behind it.
    pub(super) fn settlement(&self, core: &Core, end: AttemptEnd, ask: Ask, by: Mover) -> Result<Settlement> {
        let run = core
            .live
            .get(end.run_id.as_str())
            .ok_or_else(|| Error::internal("settled run is not live"))?;
        let now = self.now();
        let error = end.error.clone().unwrap_or_else(|| end.outcome.to_string());
        let cancel = run
            .cancel_requested
            .then(|| run.extra().cancel_reason.as_deref().unwrap_or("cancelled by operator"));
        let ended = transitions::Ended {
            outcome: end.outcome,
            error: &error,
            permanent: ask.permanent,
            retry_after_ms: ask.retry_after_ms,
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            cancel,
        };
        let jobs = self.jobs();
        let decided = transitions::settle(&ended, &run.job, jobs.get(&run.job).map(|j| &j.retry), &mut rand::rng());
        let mut change = self.change(&end.run_id, run.state, decided.to, by, now, decided.reason)?;
        change.not_before = decided.retry_in_ms.map(|delay| now + delay);
        if end.outcome == Outcome::Lost && decided.to == RunState::Scheduled {
            Counters::add(&self.counters.rescued_runs);
        }
        let dependents = self.dependent_changes(core, &end.run_id, decided.to, now)?;
        Ok(Settlement {
            change,
            end,
            job: run.job.to_string(),
            dependents,
        })
    }

    /// What alerting is told about a settled attempt, if any rule could care.
    /// Read before the run leaves `running` (its agent and start are still known).
    fn attempt_fact(&self, core: &Core, s: &Settlement) -> Option<AttemptFact> {
        let sink = self.alert_sink()?;
        if !sink.wants_attempt(s.end.outcome) {
            return None;
        }
        let run = core.live.get(s.change.run_id.as_str())?;
        let started_at = run.extra().started_at;
        Some(AttemptFact {
            run_id: s.change.run_id.clone(),
            job: s.job.clone(),
            priority: run.priority,
            attempt: s.end.attempt,
            max_attempts: run.max_attempts,
            agent: run.agent_id().and_then(|a| core.agents.get(a)).map(|a| a.name.clone()),
            outcome: s.end.outcome,
            state: s.change.to,
            error: s.end.error.clone().or_else(|| s.change.reason.clone()),
            // Successes need no output (and most runs succeed: no copy on the hot path).
            output_tail: (s.end.outcome != Outcome::Succeeded)
                .then(|| s.end.output.as_deref().map(output_tail))
                .flatten(),
            duration_ms: s
                .end
                .duration_ms
                .or_else(|| (started_at > 0).then(|| s.change.at - started_at)),
            at: s.change.at,
            metrics: s.end.metrics.clone(),
            spans: s.end.spans.clone(),
        })
    }

    fn apply_settlement(&self, core: &mut Core, s: Settlement) {
        let id = s.change.run_id.clone();
        let fact = self.attempt_fact(core, &s);
        let started_at = core.live.get(id.as_str()).map_or(0, |run| run.extra().started_at);
        self.metrics.attempt_settled(
            &s.job,
            s.end.outcome,
            s.end
                .duration_ms
                .or_else(|| (started_at > 0).then(|| s.change.at - started_at)),
        );
        if !s.end.metrics.is_empty() || !s.end.spans.is_empty() {
            self.metrics.attempt_reported(&s.job, &s.end.metrics, &s.end.spans);
        }
        core.release_running(&id);
        let attempt = s.end.attempt;
        tracing::debug!(run = %id, job = %s.job, attempt, outcome = %s.end.outcome, state = %s.change.to, "attempt settled");
        match s.change.to {
            RunState::Scheduled => {
                let not_before = s.change.not_before.unwrap_or(s.change.at);
                if let Some(run) = core.live.get_mut(id.as_str()) {
                    run.state = RunState::Scheduled;
                    run.not_before = not_before;
                }
                core.timers.insert((not_before, id.clone()));
                self.wake_timers.notify_one();
            }
            _ => {
                core.remove_live(&id);
            }
        }
        self.wake_dispatch.notify_one();
        self.emit(
            &id,
            &s.job,
            s.change.to,
            attempt,
            s.change.at,
            s.change.reason.as_deref(),
        );
        self.apply_dependent_changes(core, &id, s.change.to, &s.dependents);
        if let (Some(fact), Some(sink)) = (fact, self.alert_sink()) {
            sink.send(Fact::AttemptEnded(Box::new(fact)));
        }
    }
}

/// Most results committed in one round.
pub(super) const MAX_RESULT_BATCH: usize = 1024;

/// Assignments chosen in a round (see [`Engine::pick`]).
#[derive(Default)]
pub(super) struct Picks {
    /// (run id, agent id).
    pub picks: Vec<(String, String)>,
    /// queued → running, one per pick.
    pub changes: Vec<StateChange>,
    /// The attempts they start.
    pub starts: Vec<AttemptStart>,
    /// Their payloads, one per pick.
    pub payloads: Vec<Arc<str>>,
    /// When the first run held back because its payload could not be read
    /// may be assigned again.
    pub held_until: Option<i64>,
}

impl Picks {
    /// Whether nothing was picked.
    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// (the picks whose `keep[i]` is true, the others).
    pub fn split(self, keep: &[bool]) -> (Picks, Picks) {
        let (mut kept, mut rest) = (Picks::default(), Picks::default());
        let all = self
            .picks
            .into_iter()
            .zip(self.changes)
            .zip(self.starts)
            .zip(self.payloads);
        for (i, (((pick, change), start), payload)) in all.enumerate() {
            let to = if keep.get(i).copied().unwrap_or(false) {
                &mut kept
            } else {
                &mut rest
            };
            to.picks.push(pick);
            to.changes.push(change);
            to.starts.push(start);
            to.payloads.push(payload);
        }
        (kept, rest)
    }
}

/// Results of a round, sorted by how they are settled (see [`Engine::sort_results`]).
#[derive(Default)]
pub(super) struct SortedResults {
    /// The answer to each result, by index, once known.
    acks: Vec<Option<Ack>>,
    /// The results, by index.
    finished: Vec<Finished>,
    /// The stream to answer each on, by index.
    replies: Vec<AgentSender>,
    /// The agent that sent each, by index.
    agent_ids: Vec<String>,
    /// Not the current attempt: answered from the store.
    stale: Vec<(usize, Outcome)>,
    /// Runs with blocked dependents: settled one by one.
    singles: Vec<(usize, AttemptEnd, Ask)>,
    /// Settled in the round's commit.
    grouped: Vec<(usize, Settlement)>,
}

impl SortedResults {
    /// The change and attempt end of each grouped result, for the round's commit.
    pub fn grouped_writes(&self) -> Vec<(StateChange, AttemptEnd)> {
        self.grouped
            .iter()
            .map(|(_, s)| (s.change.clone(), s.end.clone()))
            .collect()
    }
}

/// What an attempt's report asks of the retry decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// The failure must not be retried.
    pub permanent: bool,
    /// A retry must wait at least this long (an HTTP `Retry-After`), in ms.
    pub retry_after_ms: u64,
}

impl Ask {
    /// What `finished` asks.
    pub fn of(finished: &Finished) -> Ask {
        Ask {
            permanent: finished.permanent,
            retry_after_ms: finished.retry_after_ms,
        }
    }
}

/// A result on its way to the commit loop, with the stream to acknowledge it on.
pub struct ResultMessage {
    /// The agent that reported it.
    pub agent_id: String,
    /// The result.
    pub finished: Finished,
    /// The agent's stream.
    pub reply: AgentSender,
}

fn ack_of(finished: &Finished, accepted: bool, reason: String) -> Ack {
    Ack {
        run_id: finished.run_id.clone(),
        attempt: finished.attempt,
        accepted,
        reason,
    }
}

/// When the agent's executor started the attempt, if the agent said
/// (`Finished.started_at_unix_micros`; 0 from agents that do not send it).
fn handler_started(finished: &Finished) -> Option<i64> {
    (finished.started_at_unix_micros > 0).then_some(finished.started_at_unix_micros)
}

fn attempt_end(finished: &Finished, outcome: Outcome, now: i64) -> AttemptEnd {
    AttemptEnd {
        run_id: finished.run_id.clone(),
        attempt: finished.attempt,
        outcome,
        exit_code: finished.exit_code,
        error: (!finished.error.is_empty()).then(|| storable(&finished.error)),
        output: (!finished.output_tail.is_empty()).then(|| storable(&cap_output(&finished.output_tail))),
        started_at: parse_rfc3339(&finished.started_at),
        finished_at: parse_rfc3339(&finished.finished_at).unwrap_or(now),
        duration_ms: Some(finished.duration_ms as i64),
        metrics: super::measures::metrics(&finished.run_id, &finished.metrics),
        spans: super::measures::spans(&finished.run_id, &finished.spans),
    }
}

/// Keeps the last `output_bytes` (a limit) of an output tail (on a char boundary).
fn cap_output(output: &str) -> String {
    tail_bytes(output, crate::limits::current().output_bytes).to_string()
}

/// `text` as every store can keep it: a job's output may hold NUL bytes,
/// which PostgreSQL refuses in text, so they become U+FFFD.
pub(super) fn storable(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_string()
    }
}

/// Checks an agent's id, name or host: at most `agent_text_bytes` (a limit), no
/// control characters (they would garble logs and the store).
fn check_agent_text(field: &str, text: &str) -> Result<()> {
    check_text(
        field,
        text,
        crate::limits::current().agent_text_bytes,
        "agent_text_bytes",
    )
}

fn check_text(field: &str, text: &str, max: usize, limit: &str) -> Result<()> {
    if text.len() > max {
        return Err(Error::invalid(
            field,
            exceeds(format!("{} bytes", text.len()), limit, max),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_from_agents_become_replacement_characters() {
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable("plain"), "plain");
        let finished = Finished {
            run_id: "r".into(),
            attempt: 1,
            error: "bad\0".into(),
            output_tail: "out\0put".into(),
            ..Finished::default()
        };
        let end = attempt_end(&finished, Outcome::Failed, 5);
        assert_eq!(end.error.as_deref(), Some("bad\u{FFFD}"));
        assert_eq!(end.output.as_deref(), Some("out\u{FFFD}put"));
        assert_eq!(end.finished_at, 5);
    }

    #[test]
    fn agent_text_is_bounded_and_free_of_control_characters() {
        assert!(check_agent_text("hello.name", "build-1").is_ok());
        let err = check_agent_text("hello.name", "evil\0name").unwrap_err();
        assert_eq!(err.message, "hello.name: must not contain control characters");
        let err = check_agent_text("hello.host", &"h".repeat(257)).unwrap_err();
        assert_eq!(
            err.message,
            "hello.host: 257 bytes exceeds the limit agent_text_bytes=256 (--limit agent_text_bytes=...)"
        );
    }
}
