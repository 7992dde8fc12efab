//! The reference model's operations: what each engine call must do, in
//! the order the engine's documentation gives (docs/architecture.md, "The
//! life of a run" and "The run state machine").
//!
//! Every function here first decides the call's answer (an error code, the
//! runs it creates or moves), then applies it to the model through the
//! moves of [`super::reference`] (which also record transitions and queue
//! the messages agents must receive).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use worker_controller::error::ErrorCode;
use worker_controller::model::{Outcome, Priority, RunState};

use super::config::{FORGET_AGENT_MS, JOBS, LEASE_MS, WINDOW_MS, job_index};
use super::reference::{
    Attempt, Counters, Direct, Expect, Hold, JobState, Model, PendingPlain, PendingResult, Request, RoundPrediction,
    Sent,
};

impl Model {
    /// The checks every enqueue starts with: the job exists and is enabled.
    fn validate(&self, job: usize) -> Result<(), ErrorCode> {
        if self.jobs[job].deleted {
            return Err(ErrorCode::NotFound);
        }
        if !self.jobs[job].enabled {
            return Err(ErrorCode::FailedPrecondition);
        }
        Ok(())
    }

    /// A plain enqueue handed to the next round.
    pub fn submit_plain(&mut self, req: &Request) -> Result<(), ErrorCode> {
        self.validate(req.job)?;
        self.pending_plain.push(PendingPlain {
            job: req.job,
            priority: req.priority.unwrap_or(JOBS[req.job].priority),
            not_before: (req.delay_ms > 0).then(|| self.now + req.delay_ms as i64),
        });
        Ok(())
    }

    /// An enqueue committed at once (a key, dependencies or a chain): the
    /// existing run of a live (or recent) key; else new runs, the job's
    /// chain upstream first, blocked while an upstream has not succeeded.
    pub fn enqueue_direct(&mut self, req: &Request) -> Result<Direct, ErrorCode> {
        self.validate(req.job)?;
        let priority = req.priority.unwrap_or(JOBS[req.job].priority);
        if let Some(key) = &req.key
            && let Some(&(r, at)) = self.keys.get(key)
        {
            let run = &self.runs[r];
            if !run.purged && (!run.state.is_terminal() || self.now - run.finished_at.unwrap_or(at) < WINDOW_MS) {
                self.note(if run.state.is_terminal() {
                    "enqueue: key of a finished run within the window"
                } else {
                    "enqueue: key of a live run"
                });
                return Ok(Direct {
                    run: r,
                    duplicate: true,
                    upstream: Vec::new(),
                });
            }
        }
        for &d in &req.deps {
            let dep = &self.runs[d];
            if dep.purged || dep.state == RunState::Cancelled {
                return Err(ErrorCode::InvalidArgument);
            }
        }
        let chain = upstream_chain(req.job);
        if chain.iter().any(|&j| !self.jobs[j].enabled) {
            return Err(ErrorCode::FailedPrecondition);
        }
        // The chain's runs, upstream first, then the run asked for.
        let mut run_of_job: BTreeMap<usize, usize> = BTreeMap::new();
        let mut upstream = Vec::new();
        for &job in &chain {
            let ups: Vec<usize> = JOBS[job]
                .depends_on
                .iter()
                .map(|name| run_of_job[&job_index(name).expect("defined")])
                .collect();
            let r = self.create_with(job, priority, None, ups);
            run_of_job.insert(job, r);
            upstream.push(r);
        }
        let mut ups: Vec<usize> = JOBS[req.job]
            .depends_on
            .iter()
            .map(|name| run_of_job[&job_index(name).expect("defined")])
            .collect();
        for &d in &req.deps {
            if !ups.contains(&d) {
                ups.push(d);
            }
        }
        let delay = (req.delay_ms > 0).then(|| self.now + req.delay_ms as i64);
        let r = self.create_with(req.job, priority, delay, ups);
        if let Some(key) = &req.key {
            self.runs[r].key = Some(key.clone());
            self.keys.insert(key.clone(), (r, self.now));
        }
        Ok(Direct {
            run: r,
            duplicate: false,
            upstream,
        })
    }

    /// A new run waiting for the upstream runs in `ups` that have not succeeded.
    fn create_with(&mut self, job: usize, priority: Priority, delay: Option<i64>, ups: Vec<usize>) -> usize {
        let waiting: BTreeSet<usize> = ups
            .iter()
            .copied()
            .filter(|&u| self.runs[u].state != RunState::Succeeded)
            .collect();
        let state = if !waiting.is_empty() {
            RunState::Blocked
        } else if delay.is_some() {
            RunState::Scheduled
        } else {
            RunState::Queued
        };
        let r = self.create(job, priority, state, delay);
        self.runs[r].upstreams = ups;
        self.runs[r].waiting_on = waiting;
        r
    }

    /// A commit round: results are sorted first (current or not), then the
    /// plain enqueues become runs, then free credits take the first
    /// placeable ready runs, then current results settle, then every result
    /// is answered.
    pub fn round(&mut self) -> RoundPrediction {
        #[derive(PartialEq)]
        enum Verdict {
            Invalid,
            Current(Outcome),
            Stale(Outcome),
        }
        // Copies of one result (same agent, attempt and outcome) that arrive
        // in one round are one result, answered once on the last copy's
        // connection (see `Rounds::merge_resent`).
        let mut results: Vec<PendingResult> = Vec::new();
        for res in std::mem::take(&mut self.pending_results) {
            let copy = results.iter_mut().find(|r| {
                r.agent == res.agent
                    && r.sent.run == res.sent.run
                    && r.sent.attempt == res.sent.attempt
                    && r.sent.outcome == res.sent.outcome
            });
            match copy {
                Some(first) => first.connection = res.connection,
                None => results.push(res),
            }
        }
        let mut seen = BTreeSet::new();
        let verdicts: Vec<Verdict> = results
            .iter()
            .map(|res| match res.sent.outcome.parse::<Outcome>() {
                Ok(Outcome::Lost) | Err(_) => Verdict::Invalid,
                Ok(o) if self.is_current(res.agent, res.sent.run, res.sent.attempt) && seen.insert(res.sent.run) => {
                    Verdict::Current(o)
                }
                Ok(o) => Verdict::Stale(o),
            })
            .collect();
        let mut created = Vec::new();
        for p in std::mem::take(&mut self.pending_plain) {
            if self.jobs[p.job].deleted {
                self.note("round: plain enqueue of a job deleted since, refused");
                created.push(None);
                continue;
            }
            let state = if p.not_before.is_some() {
                RunState::Scheduled
            } else {
                RunState::Queued
            };
            created.push(Some(self.create(p.job, p.priority, state, p.not_before)));
        }
        let picks = self.select();
        for &(r, a) in &picks {
            self.start(r, a);
        }
        for (res, verdict) in results.iter().zip(&verdicts) {
            if let Verdict::Current(outcome) = verdict {
                self.settle(res.sent.run, *outcome, res.sent.permanent);
            }
        }
        for (res, verdict) in results.iter().zip(&verdicts) {
            let accepted = match verdict {
                Verdict::Invalid => {
                    self.note("result: invalid outcome refused");
                    false
                }
                Verdict::Current(_) => true,
                Verdict::Stale(outcome) => {
                    if self.recorded(res.sent.run, res.sent.attempt) == Some(*outcome) {
                        self.note("result: duplicate accepted");
                        self.counters.duplicate_results += 1;
                        true
                    } else {
                        self.note("result: not current, refused");
                        self.counters.stale_results += 1;
                        false
                    }
                }
            };
            let (run, attempt) = (res.sent.run, res.sent.attempt);
            self.send(res.agent, res.connection, Expect::Ack { run, attempt, accepted });
            let unacked = &mut self.agents[res.agent].unacked;
            if let Some(i) = unacked.iter().position(|s| s.run == run && s.attempt == attempt) {
                unacked.remove(i);
            }
        }
        RoundPrediction {
            created,
            assigned: picks.len(),
        }
    }

    /// Dispatch: ready runs in order; each goes to the connected
    /// agent with a credit that has the most credits, then the fewest runs,
    /// then the smallest id; a job at its `max_concurrency` is skipped.
    fn select(&mut self) -> Vec<(usize, usize)> {
        let mut picks = Vec::new();
        let mut extra: BTreeMap<usize, u32> = BTreeMap::new();
        for r in self.ready_order() {
            let job = self.runs[r].job;
            if self.jobs[job].deleted {
                continue;
            }
            if let Some(limit) = JOBS[job].max_concurrency {
                let running = (0..self.runs.len())
                    .filter(|&x| {
                        let run = &self.runs[x];
                        run.job == job && !run.purged && run.state == RunState::Running
                    })
                    .count() as u32;
                if running + extra.get(&job).copied().unwrap_or(0) >= limit {
                    continue;
                }
            }
            let best = (0..self.agents.len())
                .filter(|&a| self.agents[a].known && self.agents[a].connected && self.agents[a].credits > 0)
                .max_by_key(|&a| {
                    let agent = &self.agents[a];
                    (agent.credits, Reverse(agent.running.len()), Reverse(agent.id))
                });
            let Some(a) = best else { continue };
            self.agents[a].credits -= 1;
            *extra.entry(job).or_default() += 1;
            picks.push((r, a));
        }
        picks
    }

    /// The next attempt of queued run `r` goes to agent `a`.
    fn start(&mut self, r: usize, a: usize) {
        let now = self.now;
        self.change(r, RunState::Running);
        let run = &mut self.runs[r];
        run.attempt += 1;
        run.agent = Some(a);
        run.lease_until = now + LEASE_MS;
        run.deadline = JOBS[run.job].timeout_ms.map(|t| now + t + LEASE_MS);
        run.attempts.push(Attempt {
            agent: a,
            started_at: now,
            outcome: None,
        });
        let attempt = run.attempt;
        let agent = &mut self.agents[a];
        agent.running.insert((r, attempt));
        agent.holds.push(Hold {
            run: r,
            attempt,
            cancelled: false,
        });
        agent.assigned.push((r, attempt));
        let connection = agent.connection;
        self.send(a, connection, Expect::Assignment { run: r, attempt });
    }

    /// Scheduled runs whose `not_before` has come are queued, in timer order.
    pub fn release_due(&mut self) -> usize {
        let now = self.now;
        let due: Vec<usize> = self
            .timers()
            .into_iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, r)| r)
            .collect();
        for &r in &due {
            self.change(r, RunState::Queued);
        }
        due.len()
    }

    /// Attempts past their deadline end `timed_out` (and the agent is told
    /// to cancel); attempts whose lease expired end `lost`; both then follow
    /// the retry policy. Disconnected agents without runs silent for 10
    /// minutes are forgotten.
    pub fn expire_leases(&mut self) -> usize {
        let now = self.now;
        let expired: Vec<(usize, bool)> = (0..self.runs.len())
            .filter(|&r| !self.runs[r].purged && self.runs[r].state == RunState::Running)
            .filter_map(|r| {
                let run = &self.runs[r];
                let past_deadline = run.deadline.is_some_and(|d| d <= now);
                (past_deadline || run.lease_until <= now).then_some((r, past_deadline))
            })
            .collect();
        for &(r, past_deadline) in &expired {
            let (agent, attempt) = (self.runs[r].agent, self.runs[r].attempt);
            let outcome = if past_deadline {
                self.counters.deadline_expired += 1;
                Outcome::TimedOut
            } else {
                self.counters.lost_attempts += 1;
                Outcome::Lost
            };
            self.settle(r, outcome, false);
            if past_deadline && let Some(a) = agent {
                self.send_cancel(a, r, attempt);
            }
        }
        for agent in &mut self.agents {
            if agent.known && !agent.connected && agent.running.is_empty() && now - agent.last_seen >= FORGET_AGENT_MS {
                agent.known = false;
            }
        }
        expired.len()
    }

    /// Cancel: a waiting run at once with the runs blocked behind it; a
    /// running one gets a pending cancel and its agent is told.
    pub fn cancel(&mut self, r: usize) -> Result<(), ErrorCode> {
        let run = &self.runs[r];
        if run.purged {
            return Err(ErrorCode::NotFound);
        }
        if run.state.is_terminal() {
            return Err(ErrorCode::FailedPrecondition);
        }
        if run.state == RunState::Running {
            if !run.cancel_requested {
                let (agent, attempt) = (run.agent, run.attempt);
                self.runs[r].cancel_requested = true;
                if let Some(a) = agent {
                    self.send_cancel(a, r, attempt);
                }
            }
            return Ok(());
        }
        self.change(r, RunState::Cancelled);
        self.cancel_dependents(r);
        Ok(())
    }

    /// DLQ retry: dead runs are queued with a renewed attempt budget; others
    /// are left alone; a dead run of a deleted job refuses the whole call.
    pub fn requeue_dead(&mut self, ids: &[usize]) -> Result<Vec<usize>, ErrorCode> {
        let mut chosen: Vec<usize> = Vec::new();
        for &r in ids {
            let run = &self.runs[r];
            if run.purged || run.state != RunState::Dead || chosen.contains(&r) {
                continue;
            }
            if self.jobs[run.job].deleted {
                self.note("dlq retry: refused, job deleted");
                return Err(ErrorCode::FailedPrecondition);
            }
            chosen.push(r);
        }
        for &r in &chosen {
            self.note("dlq retry: requeued");
            self.change(r, RunState::Queued);
            let run = &mut self.runs[r];
            run.max_attempts = run.attempt + JOBS[run.job].max_attempts;
        }
        Ok(chosen)
    }

    /// DLQ purge: dead runs are deleted; the runs blocked behind them are cancelled.
    pub fn purge_dead(&mut self, ids: &[usize]) -> Vec<usize> {
        let mut purged: Vec<usize> = Vec::new();
        for &r in ids {
            if !purged.contains(&r) && !self.runs[r].purged && self.runs[r].state == RunState::Dead {
                purged.push(r);
            }
        }
        for &r in &purged {
            self.note("dlq purge: purged");
            self.cancel_dependents(r);
        }
        for &r in &purged {
            self.runs[r].purged = true;
        }
        purged
    }

    /// Enables or disables a job.
    pub fn set_enabled(&mut self, job: usize, enabled: bool) -> Result<(), ErrorCode> {
        if self.jobs[job].deleted {
            return Err(ErrorCode::NotFound);
        }
        self.jobs[job].enabled = enabled;
        Ok(())
    }

    /// Deletes a job: refused while another job depends on it or while it
    /// has unfinished runs. A plain enqueue accepted but not committed yet is
    /// not a run: the round refuses it instead.
    pub fn delete_job(&mut self, job: usize) -> Result<(), ErrorCode> {
        if self.jobs[job].deleted {
            return Err(ErrorCode::NotFound);
        }
        let name = JOBS[job].name;
        let depended_on = JOBS
            .iter()
            .enumerate()
            .any(|(j, spec)| !self.jobs[j].deleted && spec.depends_on.contains(&name));
        if depended_on || self.live_runs_of(job) > 0 {
            self.note("delete job: refused");
            return Err(ErrorCode::FailedPrecondition);
        }
        self.note("delete job: deleted");
        self.jobs[job].deleted = true;
        Ok(())
    }

    /// Defines a deleted job again, as configured; refused while a job it
    /// depends on is deleted.
    pub fn restore_job(&mut self, job: usize) -> Result<(), ErrorCode> {
        let missing = JOBS[job]
            .depends_on
            .iter()
            .any(|name| self.jobs[job_index(name).expect("defined")].deleted);
        if missing {
            return Err(ErrorCode::InvalidArgument);
        }
        self.jobs[job] = JobState {
            enabled: true,
            deleted: false,
        };
        Ok(())
    }

    /// `Pull{n}` on `connection`: counted only on the agent's current
    /// connection, capped at four times its capacity.
    pub fn pull(&mut self, agent: usize, connection: u64, n: u32) {
        let a = &mut self.agents[agent];
        *a.granted.entry(connection).or_default() += u64::from(n);
        if a.known && a.connected && a.connection == connection {
            a.credits = a.credits.saturating_add(n).min(a.capacity.saturating_mul(4).max(1));
        }
    }

    /// `Heartbeat`: renews the leases of the listed attempts the agent holds.
    pub fn heartbeat(&mut self, agent: usize, held: &[(usize, u32)]) {
        let now = self.now;
        if self.agents[agent].known {
            let a = &mut self.agents[agent];
            a.last_seen = a.last_seen.max(now);
        }
        for &(r, attempt) in held {
            let run = &self.runs[r];
            if !self.is_current(agent, r, attempt) && run.state == RunState::Running && run.agent == Some(agent) {
                self.note("heartbeat: another attempt of a run the agent holds");
            }
            if self.is_current(agent, r, attempt) {
                let run = &mut self.runs[r];
                run.lease_until = run.lease_until.max(now + LEASE_MS);
            }
        }
    }

    /// The stream of `connection` ended.
    pub fn disconnect(&mut self, agent: usize, connection: u64) {
        let a = &mut self.agents[agent];
        if a.known && a.connection == connection {
            a.connected = false;
            a.credits = 0;
        }
    }

    /// `Hello`: a new connection; the attempts it reports in flight that are
    /// still its current ones stay with it (lease renewed; a pending cancel
    /// is sent again). Returns the connection number.
    pub fn register(&mut self, agent: usize, in_flight: &[(usize, u32)]) -> u64 {
        let now = self.now;
        self.next_connection += 1;
        let connection = self.next_connection;
        self.send(agent, connection, Expect::Welcome);
        let mut kept = BTreeSet::new();
        for &(r, attempt) in in_flight {
            let run = &mut self.runs[r];
            if !run.purged
                && run.state == RunState::Running
                && run.attempt == attempt
                && run.agent.is_none_or(|a| a == agent)
            {
                run.agent = Some(agent);
                run.lease_until = now + LEASE_MS;
                kept.insert((r, attempt));
                *self.events.entry("reconnect: attempt kept".into()).or_default() += 1;
                if run.cancel_requested {
                    for hold in self.agents[agent]
                        .holds
                        .iter_mut()
                        .filter(|h| h.run == r && h.attempt == attempt)
                    {
                        hold.cancelled = true;
                    }
                    self.send(agent, connection, Expect::Cancel { run: r, attempt });
                }
            }
        }
        let a = &mut self.agents[agent];
        if !a.known {
            a.running.clear();
        }
        a.running.extend(kept);
        a.known = true;
        a.connected = true;
        a.connection = connection;
        a.credits = 0;
        a.last_seen = now;
        connection
    }

    /// The fake agent sends a result on its current connection: it stops
    /// holding the attempt and waits for the `Ack`.
    pub fn send_result(&mut self, agent: usize, sent: Sent) {
        let a = &mut self.agents[agent];
        a.holds.retain(|h| !(h.run == sent.run && h.attempt == sent.attempt));
        a.unacked.push(sent.clone());
        a.sent.push(sent.clone());
        let connection = a.connection;
        self.pending_results.push(PendingResult {
            agent,
            connection,
            sent,
        });
    }

    /// The fake agent sends an unacknowledged result again (after a reconnect).
    pub fn resend(&mut self, agent: usize, sent: Sent) {
        let connection = self.agents[agent].connection;
        self.pending_results.push(PendingResult {
            agent,
            connection,
            sent,
        });
    }

    /// Moves the clock.
    pub fn advance(&mut self, ms: i64) {
        self.now += ms;
    }

    /// A controller restart: memory is rebuilt from the store. Agents and
    /// their credits are gone (they reconnect), running runs get a fresh
    /// lease, queued runs arrive again in recovery order, waiting plain
    /// enqueues and results are lost (their callers see an error or no
    /// `Ack`), counters start at zero.
    pub fn restart(&mut self) {
        let now = self.now;
        self.restarts += 1;
        self.pending_plain.clear();
        self.pending_results.clear();
        self.counters = Counters::default();
        self.next_connection = 0;
        for agent in &mut self.agents {
            agent.known = false;
            agent.connected = false;
            agent.credits = 0;
            agent.running.clear();
            agent.granted.clear();
        }
        for r in 0..self.runs.len() {
            if !self.is_live(r) {
                continue;
            }
            if self.jobs[self.runs[r].job].deleted {
                self.change(r, RunState::Dead);
                continue;
            }
            if self.runs[r].state == RunState::Running {
                self.note("restart: running run recovered");
                self.runs[r].lease_until = now + LEASE_MS;
            }
        }
        let mut queued: Vec<usize> = (0..self.runs.len())
            .filter(|&r| self.is_live(r) && self.runs[r].state == RunState::Queued)
            .collect();
        queued.sort_by(|&a, &b| {
            let (x, y) = (&self.runs[a], &self.runs[b]);
            x.created_at.cmp(&y.created_at).then_with(|| x.id.cmp(&y.id))
        });
        for r in queued {
            self.next_seq += 1;
            self.runs[r].seq = self.next_seq;
        }
    }
}

/// The upstream jobs of `job`, recursively, de-duplicated, upstream first.
pub fn upstream_chain(job: usize) -> Vec<usize> {
    fn walk(job: usize, seen: &mut BTreeSet<usize>, order: &mut Vec<usize>) {
        for name in JOBS[job].depends_on {
            let up = job_index(name).expect("defined");
            if seen.insert(up) {
                walk(up, seen, order);
                order.push(up);
            }
        }
    }
    let mut order = Vec::new();
    walk(job, &mut BTreeSet::new(), &mut order);
    order
}
