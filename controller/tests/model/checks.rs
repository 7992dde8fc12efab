//! The checks run after every step, each tagged with the invariant it guards:
//!
//! 1. `[1 state]` every run is in exactly one state, and the store, the
//!    engine's memory ([`Engine::snapshot`]: live runs, ready order, timers,
//!    agents) and the model agree on it; terminal runs are absent from memory;
//! 2. `[2 terminal]` a terminal run never changes (its row, attempts and
//!    transitions), except a DLQ retry the model asked for, or a purge;
//! 3. `[3 attempts]` at most one unfinished attempt per run, and a running
//!    run's unfinished attempt is its current one; attempts match the model;
//! 4. `[4 credits]` no agent connection receives more assignments than the
//!    credits it granted, and the engine's credits match the model's;
//! 5. `[5 dispatch]` each agent receives exactly the assignments the model's
//!    dispatch (priority, ready time, arrival; `max_concurrency`) predicts,
//!    in order, and the ready queue is in the model's order;
//! 6. `[6 recovery]` after a restart, the recovered memory agrees with the
//!    memory before it (see [`recovery`]);
//! 7. `[7 engine]` the engine never stopped, and every recorded transition
//!    is an initial state of `INITIAL_STATES` or a move of `TRANSITIONS`,
//!    following on from the previous one, exactly as the model recorded;
//! 8. `[8 protocol]` every agent receives exactly the welcomes, acks
//!    (accepted or refused, on the stream the result came on) and cancels
//!    the model predicts, and the engine's reliability counters (stale and
//!    duplicate results, lost and timed-out attempts) match.
//!
//! The answers of the calls themselves (`[api]`, `[timers]`) are compared
//! by the harness as each operation runs.
//!
//! Store reads are kept cheap: all runs and all attempts are read in two
//! queries per step; transitions (one query per run) are read for the runs
//! whose row changed in the step, and for every run at the end.
//!
//! [`Engine::snapshot`]: worker_controller::engine::Engine::snapshot

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use worker_controller::engine::transitions::{INITIAL_STATES, TRANSITIONS};
use worker_controller::engine::{Counters, EngineSnapshot};
use worker_controller::model::RunState;
use worker_controller::store::{AttemptRecord, RunRecord, TransitionRecord};

use super::config::{AGENTS, JOBS};
use super::harness::Harness;
use super::reference::{Expect, Model, Outgoing};

/// What the checks remember from one step to the next.
#[derive(Default)]
pub struct Checker {
    /// The store's rows at the last check.
    rows: BTreeMap<String, RunRecord>,
    /// Terminal runs as first seen terminal: row, attempts, transitions.
    frozen: BTreeMap<String, (RunRecord, Vec<AttemptRecord>, usize)>,
    /// Assignments received per (agent, connection) since the last restart.
    delivered: BTreeMap<(usize, u64), u64>,
    /// Restarts seen.
    restarts: u32,
}

impl Checker {
    /// Runs every check; the first failure is returned.
    pub async fn check(&mut self, h: &mut Harness) -> Result<(), String> {
        if let Some(reason) = h.engine.failure() {
            return Err(format!("[7 engine] the engine stopped: {reason}"));
        }
        if h.model.restarts != self.restarts {
            self.restarts = h.model.restarts;
            self.delivered.clear();
        }
        let got = h.drain()?;
        let expected = std::mem::take(&mut h.model.outbox);
        messages(&h.model, &expected, &got)?;
        self.credits(&h.model, &got)?;
        let snapshot = h.engine.snapshot().await;
        memory(&h.model, &snapshot)?;
        counters(&h.model, h.engine.counters())?;

        let rows = h.store_runs().await?;
        let ids: Vec<String> = rows.keys().cloned().collect();
        let mut attempts: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
        for a in h
            .store
            .attempts(&ids)
            .await
            .map_err(|e| format!("[harness] store.attempts: {e}"))?
        {
            attempts.entry(a.run_id.clone()).or_default().push(a);
        }
        store(&h.model, &rows, &attempts)?;
        let mut transitions_of: BTreeMap<String, usize> = BTreeMap::new();
        for (id, row) in &rows {
            if self.rows.get(id) != Some(row) {
                let recorded = h
                    .store
                    .transitions(id)
                    .await
                    .map_err(|e| format!("[harness] store.transitions: {e}"))?;
                transitions(&h.model, h.model.by_id[id], &recorded)?;
                transitions_of.insert(id.clone(), recorded.len());
            }
        }
        self.terminal(&h.model, &rows, &attempts, &transitions_of)?;
        self.rows = rows;
        Ok(())
    }

    /// The end of a sequence: every run's transitions and dependencies.
    pub async fn finish(&mut self, h: &mut Harness) -> Result<(), String> {
        let ids: Vec<String> = self.rows.keys().cloned().collect();
        for id in &ids {
            let recorded = h
                .store
                .transitions(id)
                .await
                .map_err(|e| format!("[harness] store.transitions: {e}"))?;
            let r = h.model.by_id[id];
            transitions(&h.model, r, &recorded)?;
            if let Some((_, _, count)) = self.frozen.get(id)
                && *count != recorded.len()
            {
                return Err(format!(
                    "[2 terminal] {} had {count} transitions when it finished, now {}",
                    h.model.name(r),
                    recorded.len()
                ));
            }
        }
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (run, upstream) in h
            .store
            .dependencies(&ids)
            .await
            .map_err(|e| format!("[harness] store.dependencies: {e}"))?
        {
            deps.entry(run).or_default().insert(upstream);
        }
        for id in &ids {
            let run = &h.model.runs[h.model.by_id[id]];
            let expected: BTreeSet<String> = run.upstreams.iter().map(|&u| h.model.runs[u].id.clone()).collect();
            let got = deps.remove(id).unwrap_or_default();
            if got != expected {
                return Err(format!(
                    "[1 state] {} depends on {got:?} in the store, expected {expected:?}",
                    h.model.name(h.model.by_id[id])
                ));
            }
        }
        Ok(())
    }

    /// Check 4: assignments per connection never exceed the credits granted on it.
    fn credits(&mut self, m: &Model, got: &[(usize, u64, Expect)]) -> Result<(), String> {
        for (agent, connection, msg) in got {
            if let Expect::Assignment { .. } = msg {
                let delivered = self.delivered.entry((*agent, *connection)).or_default();
                *delivered += 1;
                let granted = m.agents[*agent].granted.get(connection).copied().unwrap_or(0);
                if *delivered > granted {
                    return Err(format!(
                        "[4 credits] {} received {delivered} assignments on connection {connection}, granted {granted} credits",
                        AGENTS[*agent].0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check 2: terminal runs stay as they were when they finished.
    fn terminal(
        &mut self,
        m: &Model,
        rows: &BTreeMap<String, RunRecord>,
        attempts: &BTreeMap<String, Vec<AttemptRecord>>,
        transitions_of: &BTreeMap<String, usize>,
    ) -> Result<(), String> {
        self.frozen.retain(|id, _| {
            let run = &m.runs[m.by_id[id]];
            !run.purged && run.state.is_terminal()
        });
        for (id, row) in rows {
            let r = m.by_id[id];
            if !m.runs[r].state.is_terminal() {
                continue;
            }
            let tries = attempts.get(id).cloned().unwrap_or_default();
            match self.frozen.get(id) {
                Some((was, tried, _)) => {
                    if was != row || *tried != tries {
                        return Err(format!(
                            "[2 terminal] {} changed after it finished:\n  was {was:?} {tried:?}\n  now {row:?} {tries:?}",
                            m.name(r)
                        ));
                    }
                }
                None => {
                    let count = transitions_of.get(id).copied().unwrap_or(m.runs[r].transitions.len());
                    self.frozen.insert(id.clone(), (row.clone(), tries, count));
                }
            }
        }
        Ok(())
    }
}

/// Messages: welcomes, assignments (in order: check 5), acks (in order)
/// and cancels (in any order: leases expire in any order), per agent.
pub fn messages(m: &Model, expected: &[Outgoing], got: &[(usize, u64, Expect)]) -> Result<(), String> {
    type Split = (
        Vec<(u64, Expect)>,
        Vec<(u64, Expect)>,
        Vec<(u64, Expect)>,
        Vec<(u64, Expect)>,
    );
    fn split(items: impl Iterator<Item = (u64, Expect)>) -> Split {
        let mut s: Split = Default::default();
        for (connection, msg) in items {
            let to = match msg {
                Expect::Welcome => &mut s.0,
                Expect::Assignment { .. } => &mut s.1,
                Expect::Ack { .. } => &mut s.2,
                Expect::Cancel { .. } => &mut s.3,
            };
            to.push((connection, msg));
        }
        s.3.sort();
        s
    }
    let show = |items: &[(u64, Expect)]| {
        items
            .iter()
            .map(|(c, msg)| match msg {
                Expect::Welcome => format!("welcome@{c}"),
                Expect::Assignment { run, attempt } => format!("{}#{attempt}@{c}", m.name(*run)),
                Expect::Ack { run, attempt, accepted } => {
                    format!(
                        "{}#{attempt}@{c} {}",
                        m.name(*run),
                        if *accepted { "accepted" } else { "refused" }
                    )
                }
                Expect::Cancel { run, attempt } => format!("{}#{attempt}@{c}", m.name(*run)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (agent, (id, _)) in AGENTS.iter().enumerate() {
        let want = split(
            expected
                .iter()
                .filter(|o| o.agent == agent)
                .map(|o| (o.connection, o.msg.clone())),
        );
        let have = split(got.iter().filter(|g| g.0 == agent).map(|g| (g.1, g.2.clone())));
        let kinds = [
            ("[8 protocol] welcomes", &want.0, &have.0),
            ("[5 dispatch] assignments", &want.1, &have.1),
            ("[8 protocol] acks", &want.2, &have.2),
            ("[8 protocol] cancels", &want.3, &have.3),
        ];
        for (what, want, have) in kinds {
            if want != have {
                return Err(format!(
                    "{what} to {id}: expected [{}], got [{}]",
                    show(want),
                    show(have)
                ));
            }
        }
    }
    Ok(())
}

/// Check 1 against the engine's memory.
pub fn memory(m: &Model, s: &EngineSnapshot) -> Result<(), String> {
    let live: BTreeSet<&str> = (0..m.runs.len())
        .filter(|&r| m.is_live(r))
        .map(|r| m.runs[r].id.as_str())
        .collect();
    let held: BTreeSet<&str> = s.runs.keys().map(String::as_str).collect();
    if live != held {
        let name = |id: &&str| m.by_id.get(*id).map_or(id.to_string(), |&r| m.name(r));
        let missing: Vec<String> = live.difference(&held).map(name).collect();
        let extra: Vec<String> = held.difference(&live).map(name).collect();
        return Err(format!(
            "[1 state] engine memory: live runs missing {missing:?}, unexpected {extra:?}"
        ));
    }
    for (id, got) in &s.runs {
        let r = m.by_id[id];
        let run = &m.runs[r];
        let waiting: BTreeSet<String> = run.waiting_on.iter().map(|&u| m.runs[u].id.clone()).collect();
        let waiting: Vec<String> = waiting.into_iter().collect();
        let agent = run.agent.map(|a| AGENTS[a].0.to_string());
        let fields = [
            ("job", got.job.clone(), JOBS[run.job].name.to_string()),
            ("state", got.state.to_string(), run.state.to_string()),
            ("priority", got.priority.to_string(), run.priority.to_string()),
            ("attempt", got.attempt.to_string(), run.attempt.to_string()),
            (
                "max_attempts",
                got.max_attempts.to_string(),
                run.max_attempts.to_string(),
            ),
            ("agent", format!("{:?}", got.agent), format!("{agent:?}")),
            (
                "cancel_requested",
                got.cancel_requested.to_string(),
                run.cancel_requested.to_string(),
            ),
            ("waiting_on", format!("{:?}", got.waiting_on), format!("{waiting:?}")),
        ];
        for (field, got, want) in fields {
            if got != want {
                return Err(format!(
                    "[1 state] engine memory: {} {field} is {got}, expected {want}",
                    m.name(r)
                ));
            }
        }
        if run.state == RunState::Scheduled && got.not_before != run.not_before {
            return Err(format!(
                "[1 state] engine memory: {} not_before is {}, expected {}",
                m.name(r),
                got.not_before,
                run.not_before
            ));
        }
    }
    let ready: Vec<String> = m.ready_order().iter().map(|&r| m.runs[r].id.clone()).collect();
    if s.ready != ready {
        let names = |ids: &[String]| ids.iter().map(|id| m.name(m.by_id[id])).collect::<Vec<_>>();
        return Err(format!(
            "[5 dispatch] ready queue is {:?}, expected {:?}",
            names(&s.ready),
            names(&ready)
        ));
    }
    let timers: Vec<(i64, String)> = m.timers().iter().map(|&(t, r)| (t, m.runs[r].id.clone())).collect();
    if s.timers != timers {
        return Err(format!("[1 state] timers are {:?}, expected {timers:?}", s.timers));
    }
    if !s.holds.is_empty() {
        return Err(format!("[1 state] runs held after failed writes: {:?}", s.holds));
    }
    let known: BTreeSet<&str> = m.agents.iter().filter(|a| a.known).map(|a| a.id).collect();
    let listed: BTreeSet<&str> = s.agents.keys().map(String::as_str).collect();
    if known != listed {
        return Err(format!("[1 state] engine knows agents {listed:?}, expected {known:?}"));
    }
    for agent in m.agents.iter().filter(|a| a.known) {
        let got = &s.agents[agent.id];
        let running: Vec<(String, u32)> = agent
            .running
            .iter()
            .map(|&(r, attempt)| (m.runs[r].id.clone(), attempt))
            .collect();
        let mut sorted = got.running.clone();
        sorted.sort();
        let mut want = running;
        want.sort();
        if got.connected != agent.connected || got.credits != agent.credits || sorted != want {
            return Err(format!(
                "[4 credits] engine's {}: connected={} credits={} running={:?}, expected connected={} credits={} running={:?}",
                agent.id, got.connected, got.credits, sorted, agent.connected, agent.credits, want
            ));
        }
    }
    Ok(())
}

/// The engine's reliability counters.
pub fn counters(m: &Model, c: &Counters) -> Result<(), String> {
    let got = [
        ("stale_results", c.stale_results.load(Ordering::Relaxed)),
        ("duplicate_results", c.duplicate_results.load(Ordering::Relaxed)),
        ("lost_attempts", c.lost_attempts.load(Ordering::Relaxed)),
        ("deadline_expired", c.deadline_expired.load(Ordering::Relaxed)),
        ("failed_results", c.failed_results.load(Ordering::Relaxed)),
        ("failed_writes", c.failed_writes.load(Ordering::Relaxed)),
    ];
    let want = [
        m.counters.stale_results,
        m.counters.duplicate_results,
        m.counters.lost_attempts,
        m.counters.deadline_expired,
        0,
        0,
    ];
    for ((name, got), want) in got.iter().zip(want) {
        if *got != want {
            return Err(format!("[8 protocol] counter {name} is {got}, expected {want}"));
        }
    }
    Ok(())
}

/// Checks 1 and 3 against the store.
pub fn store(
    m: &Model,
    rows: &BTreeMap<String, RunRecord>,
    attempts: &BTreeMap<String, Vec<AttemptRecord>>,
) -> Result<(), String> {
    for (id, row) in rows {
        let Some(&r) = m.by_id.get(id) else {
            return Err(format!("[1 state] the store holds unknown run {id} ({})", row.job));
        };
        if m.runs[r].purged {
            return Err(format!("[1 state] purged run {} is still in the store", m.name(r)));
        }
    }
    for (r, run) in m.runs.iter().enumerate() {
        if run.purged || run.id.is_empty() {
            continue;
        }
        let Some(row) = rows.get(&run.id) else {
            return Err(format!("[1 state] {} is missing from the store", m.name(r)));
        };
        let want_not_before = (run.state == RunState::Scheduled).then_some(run.not_before);
        let got_not_before = row.not_before.filter(|_| run.state == RunState::Scheduled);
        let want_ready_at = (run.state == RunState::Queued).then_some(run.ready_at);
        let got_ready_at = row.ready_at.filter(|_| run.state == RunState::Queued);
        let fields = [
            ("job", row.job.clone(), JOBS[run.job].name.to_string()),
            ("state", row.state.to_string(), run.state.to_string()),
            ("priority", row.priority.to_string(), run.priority.to_string()),
            ("attempt", row.attempt.to_string(), run.attempt.to_string()),
            (
                "max_attempts",
                row.max_attempts.to_string(),
                run.max_attempts.to_string(),
            ),
            (
                "cancel_requested",
                row.cancel_requested.to_string(),
                run.cancel_requested.to_string(),
            ),
            (
                "not_before",
                format!("{got_not_before:?}"),
                format!("{want_not_before:?}"),
            ),
            ("ready_at", format!("{got_ready_at:?}"), format!("{want_ready_at:?}")),
            (
                "finished",
                row.finished_at.is_some().to_string(),
                run.state.is_terminal().to_string(),
            ),
            (
                "idempotency_key",
                format!("{:?}", row.idempotency_key),
                format!("{:?}", run.key),
            ),
        ];
        for (field, got, want) in fields {
            if got != want {
                return Err(format!(
                    "[1 state] store: {} {field} is {got}, expected {want}",
                    m.name(r)
                ));
            }
        }
        let tries = attempts.get(&run.id).map(Vec::as_slice).unwrap_or_default();
        let unfinished: Vec<u32> = tries
            .iter()
            .filter(|a| a.outcome.is_none())
            .map(|a| a.attempt)
            .collect();
        let allowed: Vec<u32> = if run.state == RunState::Running {
            vec![run.attempt]
        } else {
            Vec::new()
        };
        if unfinished != allowed {
            return Err(format!(
                "[3 attempts] {} ({}, attempt {}) has unfinished attempts {unfinished:?}, expected {allowed:?}",
                m.name(r),
                run.state,
                run.attempt
            ));
        }
        let got: Vec<String> = tries
            .iter()
            .map(|a| format!("#{} {} at {} {:?}", a.attempt, a.agent_id, a.started_at, a.outcome))
            .collect();
        let want: Vec<String> = run
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| format!("#{} {} at {} {:?}", i + 1, AGENTS[a.agent].0, a.started_at, a.outcome))
            .collect();
        if got != want {
            return Err(format!(
                "[3 attempts] store: {} attempts are {got:?}, expected {want:?}",
                m.name(r)
            ));
        }
    }
    Ok(())
}

/// Check 7: the recorded transitions of run `r` are legal moves, chained,
/// and exactly those the model made.
pub fn transitions(m: &Model, r: usize, recorded: &[TransitionRecord]) -> Result<(), String> {
    let got: Vec<(Option<RunState>, RunState)> = recorded.iter().map(|t| (t.from, t.to)).collect();
    let show = |ts: &[(Option<RunState>, RunState)]| {
        ts.iter()
            .map(|(from, to)| match from {
                Some(from) => format!("{from}->{to}"),
                None => format!("created {to}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut previous: Option<RunState> = None;
    for (i, &(from, to)) in got.iter().enumerate() {
        let legal = match (i, from) {
            (0, None) => INITIAL_STATES.iter().any(|(s, _, _)| *s == to),
            (_, Some(from)) => previous == Some(from) && TRANSITIONS.iter().any(|t| t.from == from && t.to == to),
            _ => false,
        };
        if !legal {
            return Err(format!(
                "[7 engine] {} recorded an illegal transition #{i} in [{}]",
                m.name(r),
                show(&got)
            ));
        }
        previous = Some(to);
    }
    let run = &m.runs[r];
    if got != run.transitions || previous != Some(run.state) {
        return Err(format!(
            "[1 state] {} transitions are [{}], expected [{}]",
            m.name(r),
            show(&got),
            show(&run.transitions)
        ));
    }
    Ok(())
}

/// Check 6: what survives a restart. Every live run comes back with its
/// state, attempt, priority, attempt limit, pending cancel, upstream runs
/// not yet succeeded, and (running) agent or (scheduled) `not_before`; the
/// timers are the same; the ready queue holds the same runs, still in
/// priority then ready-time order; no agent is known until it reconnects.
pub fn recovery(m: &Model, before: &EngineSnapshot, after: &EngineSnapshot) -> Result<(), String> {
    let name = |id: &str| m.by_id.get(id).map_or(id.to_string(), |&r| m.name(r));
    for (id, was) in &before.runs {
        let r = m.by_id[id];
        if m.runs[r].state == RunState::Dead {
            continue; // its job was deleted: recovery moved it to the DLQ
        }
        let Some(now) = after.runs.get(id) else {
            return Err(format!("[6 recovery] {} was lost by the restart", name(id)));
        };
        let same = was.job == now.job
            && was.state == now.state
            && was.attempt == now.attempt
            && was.priority == now.priority
            && was.max_attempts == now.max_attempts
            && was.cancel_requested == now.cancel_requested
            && was.waiting_on == now.waiting_on
            && (was.state != RunState::Running || was.agent == now.agent)
            && (was.state != RunState::Scheduled || was.not_before == now.not_before);
        if !same {
            return Err(format!(
                "[6 recovery] {} changed across the restart:\n  before {was:?}\n  after  {now:?}",
                name(id)
            ));
        }
    }
    if let Some(extra) = after.runs.keys().find(|id| !before.runs.contains_key(*id)) {
        return Err(format!("[6 recovery] {} appeared after the restart", name(extra)));
    }
    if before.timers != after.timers {
        return Err(format!(
            "[6 recovery] timers before {:?}, after {:?}",
            before.timers, after.timers
        ));
    }
    let set = |ids: &[String]| ids.iter().cloned().collect::<BTreeSet<String>>();
    if set(&before.ready) != set(&after.ready) {
        return Err(format!(
            "[6 recovery] ready queue before {:?}, after {:?}",
            before.ready, after.ready
        ));
    }
    let key = |id: &String| {
        let run = &m.runs[m.by_id[id]];
        (std::cmp::Reverse(run.priority), run.ready_at)
    };
    if after.ready.windows(2).any(|w| key(&w[0]) > key(&w[1])) {
        return Err(format!(
            "[6 recovery] the recovered ready queue is out of priority/ready-time order: {:?}",
            after.ready.iter().map(|id| name(id)).collect::<Vec<_>>()
        ));
    }
    if !after.agents.is_empty() {
        return Err(format!(
            "[6 recovery] agents known before any reconnected: {:?}",
            after.agents
        ));
    }
    Ok(())
}
