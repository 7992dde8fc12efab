//! The harness: drives the real engine one operation at a time, with no
//! background loop. It plays every part the server's loops and the agents'
//! streams play in production: it runs commit rounds
//! ([`Engine::run_round`]), releases timers and expires leases, moves the
//! manual clock, and speaks for fake agents over in-process channels.
//!
//! Each operation first asks the reference model what must happen, then
//! performs it on the engine and compares the call's answer; the state
//! checks after the step are in [`super::checks`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use worker_controller::config::{JobSet, parse_scheduler_yaml};
use worker_controller::engine::state::AgentSender;
use worker_controller::engine::{Engine, EngineSettings, EnqueueOutcome, EnqueueRequest, ResultMessage, Rounds};
use worker_controller::error::{ErrorCode, Result as EngineResult};
use worker_controller::store::{RunRecord, Store};
use worker_controller::time::Clock;
use worker_proto::v1::{ControllerMessage, Finished, Hello, InFlight, controller_message::Msg};

use super::config::{AGENTS, HEARTBEAT_MS, JOBS, LEASE_MS, T0, WINDOW_MS, scheduler_yaml};
use super::ops::Op;
use super::reference::{Expect, Model, Request, Sent};

/// What an agent's stream carries.
pub type Message = Result<ControllerMessage, tonic::Status>;

/// The engine settings of every sequence.
pub fn settings() -> EngineSettings {
    EngineSettings {
        heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        lease_timeout: Duration::from_millis(LEASE_MS as u64),
        idempotency_window: Duration::from_millis(WINDOW_MS as u64),
        payload_memory_bytes: worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
    }
}

/// A fake agent's end of its streams.
pub struct AgentLink {
    /// Its current stream's sender (results are answered on it), while connected.
    pub sender: Option<AgentSender>,
    /// Every stream it opened with this engine: (connection, receiver).
    pub receivers: Vec<(u64, UnboundedReceiver<Message>)>,
}

/// One sequence: a fresh store, the engine on a manual clock, the model.
pub struct Harness {
    /// The reference model.
    pub model: Model,
    /// The store (kept across restarts).
    pub store: Store,
    /// The engine's clock.
    pub clock: Clock,
    /// The engine.
    pub engine: Arc<Engine>,
    /// Where agent results go (to the next round).
    pub results: UnboundedSender<ResultMessage>,
    /// The round queues.
    pub rounds: Rounds,
    /// The fake agents' streams.
    pub agents: Vec<AgentLink>,
    /// The definitions as configured (a deleted job is restored from them).
    configured: JobSet,
    /// Answers of plain enqueues waiting for the next round.
    answers: Vec<oneshot::Receiver<EngineResult<EnqueueOutcome>>>,
    /// Keeps the database directory for the sequence's lifetime.
    _dir: tempfile::TempDir,
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("[harness] {what}: {e}")
}

/// `Ok`/`Err(code)` of a call, for messages.
fn code_of<T>(r: &EngineResult<T>) -> Result<(), ErrorCode> {
    r.as_ref().map(|_| ()).map_err(|e| e.code)
}

impl Harness {
    /// A fresh store and engine at [`T0`], with every agent connected.
    pub async fn start() -> Result<Harness, String> {
        let dir = tempfile::tempdir().map_err(|e| failed("tempdir", e))?;
        let url = format!("sqlite://{}", dir.path().join("worker.db").display());
        let store = Store::open(&url).await.map_err(|e| failed("open the store", e))?;
        let configured = parse_scheduler_yaml(Path::new("scheduler.yaml"), &scheduler_yaml(), &|_| {
            Err("no variables".into())
        })
        .map_err(|e| failed("parse scheduler.yaml", e))?;
        let clock = Clock::manual(T0);
        let engine = Engine::recover_with_clock(store.clone(), configured.clone(), settings(), clock.clone())
            .await
            .map_err(|e| failed("start the engine", e))?;
        let (results, rounds) = engine.rounds().ok_or("[harness] rounds already taken")?;
        let mut harness = Harness {
            model: Model::new(),
            store,
            clock,
            engine,
            results,
            rounds,
            agents: AGENTS
                .iter()
                .map(|_| AgentLink {
                    sender: None,
                    receivers: Vec::new(),
                })
                .collect(),
            configured,
            answers: Vec::new(),
            _dir: dir,
        };
        for agent in 0..AGENTS.len() {
            harness.reconnect(agent, &[]).await?;
        }
        Ok(harness)
    }

    /// Performs `op` on the model and on the engine, and compares the call's answer.
    pub async fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.model.note(format!("op: {}", op.kind()));
        match op {
            Op::Enqueue(req) => {
                let expected = self.model.submit_plain(req);
                match (expected, self.engine.enqueue_in_round(self.request(req))) {
                    (Ok(()), Ok(answer)) => self.answers.push(answer),
                    (Err(code), Err(e)) if e.code == code => {}
                    (expected, got) => {
                        return Err(format!(
                            "[api] plain enqueue: expected {expected:?}, got {:?}",
                            got.map(|_| "accepted for the next round")
                        ));
                    }
                }
            }
            Op::EnqueueDirect(req) => {
                let expected = self.model.enqueue_direct(req);
                let got = self.engine.enqueue(self.request(req)).await;
                match (expected, got) {
                    (Ok(direct), Ok(outcome)) => {
                        if direct.duplicate != outcome.duplicate || direct.upstream.len() != outcome.upstream.len() {
                            return Err(format!(
                                "[api] enqueue: expected duplicate={} with {} upstream run(s), got duplicate={} with {}",
                                direct.duplicate,
                                direct.upstream.len(),
                                outcome.duplicate,
                                outcome.upstream.len()
                            ));
                        }
                        if direct.duplicate {
                            let id = &self.model.runs[direct.run].id;
                            if *id != outcome.run.id {
                                return Err(format!(
                                    "[api] enqueue with a live key: expected {} ({id}), got run {}",
                                    self.model.name(direct.run),
                                    outcome.run.id
                                ));
                            }
                        } else {
                            for (&r, record) in direct.upstream.iter().zip(&outcome.upstream) {
                                self.learn(r, record)?;
                            }
                            self.learn(direct.run, &outcome.run)?;
                        }
                    }
                    (Err(code), Err(e)) if e.code == code => self.model.note(format!("enqueue: refused {code:?}")),
                    (expected, got) => {
                        return Err(format!(
                            "[api] enqueue: expected {expected:?}, got {:?}",
                            got.map(|o| o.run.id)
                        ));
                    }
                }
            }
            Op::Round => self.round().await?,
            Op::Pull { agent, credits, stale } => {
                let connection = self.model.agents[*agent].connection - u64::from(*stale);
                self.model.pull(*agent, connection, *credits);
                self.engine.add_credits(AGENTS[*agent].0, connection, *credits);
            }
            Op::Result { agent, sent, twice } => {
                for _ in 0..(1 + usize::from(*twice)) {
                    self.model.send_result(*agent, sent.clone());
                    self.send_result(*agent, sent)?;
                }
            }
            Op::Heartbeat { agent, held } => {
                self.model.heartbeat(*agent, held);
                let in_flight = self.in_flight(held);
                self.engine.renew_leases(AGENTS[*agent].0, &in_flight);
            }
            Op::Advance(ms) => {
                self.model.advance(*ms);
                self.clock.advance(*ms);
            }
            Op::ReleaseDue => {
                let expected = self.model.release_due();
                let got = self.engine.release_due().await.map_err(|e| failed("release_due", e))?;
                if got != expected {
                    return Err(format!(
                        "[timers] release_due released {got} run(s), expected {expected}"
                    ));
                }
            }
            Op::ExpireLeases => {
                let expected = self.model.expire_leases();
                let got = self
                    .engine
                    .expire_leases()
                    .await
                    .map_err(|e| failed("expire_leases", e))?;
                if got != expected {
                    return Err(format!(
                        "[timers] expire_leases ended {got} attempt(s), expected {expected}"
                    ));
                }
            }
            Op::Cancel(r) => {
                let expected = self.model.cancel(*r);
                let got = self.engine.cancel(&self.model.runs[*r].id, "model cancel").await;
                if code_of(&got) != expected {
                    return Err(format!("[api] cancel: expected {expected:?}, got {:?}", code_of(&got)));
                }
                if let Ok(record) = got {
                    let run = &self.model.runs[*r];
                    if record.state != run.state || record.cancel_requested != run.cancel_requested {
                        return Err(format!(
                            "[api] cancel answered {} cancel_requested={}, expected {} cancel_requested={}",
                            record.state, record.cancel_requested, run.state, run.cancel_requested
                        ));
                    }
                }
            }
            Op::DlqRetry(rs) => {
                let expected = self.model.requeue_dead(rs).map(|ids| self.ids(&ids));
                let got = self.engine.requeue_dead(&self.ids(rs)).await;
                let got = got.map_err(|e| e.code);
                if got != expected {
                    return Err(format!("[api] dlq retry: expected {expected:?}, got {got:?}"));
                }
            }
            Op::DlqPurge(rs) => {
                let expected = self.model.purge_dead(rs);
                let expected = self.ids(&expected);
                let got = self.engine.purge_dead(&self.ids(rs)).await;
                if got.as_ref().ok() != Some(&expected) {
                    return Err(format!("[api] dlq purge: expected Ok({expected:?}), got {got:?}"));
                }
            }
            Op::SetEnabled { job, enabled } => {
                let expected = self.model.set_enabled(*job, *enabled);
                let got = self.engine.set_job_enabled(JOBS[*job].name, *enabled).await;
                if code_of(&got) != expected {
                    return Err(format!(
                        "[api] set enabled: expected {expected:?}, got {:?}",
                        code_of(&got)
                    ));
                }
            }
            Op::DeleteJob(job) => {
                let expected = self.model.delete_job(*job);
                let got = self.engine.delete_job(JOBS[*job].name).await;
                if code_of(&got) != expected {
                    return Err(format!("[api] delete job: expected {expected:?}, got {got:?}"));
                }
            }
            Op::RestoreJob(job) => {
                let expected = self.model.restore_job(*job);
                let entry = self
                    .configured
                    .entry(JOBS[*job].name)
                    .cloned()
                    .ok_or("[harness] job not configured")?;
                let got = self.engine.apply_definitions(vec![entry]).await;
                if code_of(&got) != expected {
                    return Err(format!("[api] restore job: expected {expected:?}, got {got:?}"));
                }
            }
            Op::Disconnect { agent, stale } => {
                let connection = self.model.agents[*agent].connection - u64::from(*stale);
                self.model.disconnect(*agent, connection);
                if !*stale {
                    self.agents[*agent].sender = None;
                }
                self.engine.agent_disconnected(AGENTS[*agent].0, connection).await;
            }
            Op::Reconnect { agent, in_flight } => self.reconnect(*agent, in_flight).await?,
            Op::Restart => self.restart().await?,
        }
        Ok(())
    }

    /// The engine's request for `req`.
    fn request(&self, req: &Request) -> EnqueueRequest {
        EnqueueRequest {
            job: JOBS[req.job].name.to_string(),
            priority: req.priority.map(|p| p.to_string()).unwrap_or_default(),
            delay_ms: req.delay_ms,
            idempotency_key: req.key.clone().unwrap_or_default(),
            depends_on: self.ids(&req.deps),
            ..EnqueueRequest::default()
        }
    }

    /// The ids of runs.
    fn ids(&self, runs: &[usize]) -> Vec<String> {
        runs.iter().map(|&r| self.model.runs[r].id.clone()).collect()
    }

    fn in_flight(&self, held: &[(usize, u32)]) -> Vec<InFlight> {
        held.iter()
            .map(|&(r, attempt)| InFlight {
                run_id: self.model.runs[r].id.clone(),
                attempt,
            })
            .collect()
    }

    /// Learns the id of new run `r` from the engine's record of it, which
    /// must show the state and priority the model created it with.
    fn learn(&mut self, r: usize, record: &RunRecord) -> Result<(), String> {
        let run = &self.model.runs[r];
        let (_, initial) = run.transitions[0];
        if record.job != JOBS[run.job].name || record.state != initial || record.priority != run.priority {
            return Err(format!(
                "[api] new run {}: expected {} {initial} priority {}, got {} {} priority {}",
                self.model.name(r),
                JOBS[run.job].name,
                run.priority,
                record.job,
                record.state,
                record.priority
            ));
        }
        if self.model.by_id.contains_key(&record.id) {
            return Err(format!("[api] run id {} given twice", record.id));
        }
        self.model.set_id(r, &record.id);
        Ok(())
    }

    /// One commit round; the plain enqueues it committed are answered.
    async fn round(&mut self) -> Result<(), String> {
        let expected = self.model.round();
        let report = self.engine.run_round(&mut self.rounds).await;
        if let Some(reason) = self.engine.failure() {
            return Err(format!("[7 engine] the engine stopped in the round: {reason}"));
        }
        let answers = std::mem::take(&mut self.answers);
        for (i, (answer, created)) in answers.into_iter().zip(&expected.created).enumerate() {
            match (answer.await, created) {
                (Ok(Ok(outcome)), Some(r)) => self.learn(*r, &outcome.run)?,
                (Ok(Err(e)), None) if e.code == ErrorCode::NotFound => {}
                (got, _) => {
                    return Err(format!(
                        "[api] plain enqueue #{i} of the round: expected {}, got {:?}",
                        created.map_or("refused: its job was deleted".into(), |r| self.model.name(r)),
                        got.map(|r| r.map(|o| o.run.id))
                    ));
                }
            }
        }
        if report.failed != 0 {
            return Err(format!("[7 engine] round: {} write(s) failed", report.failed));
        }
        let created = expected.created.iter().flatten().count();
        if report.created != created {
            return Err(format!(
                "[1 state] round created {} run(s), expected {created}",
                report.created
            ));
        }
        if report.assigned != expected.assigned {
            return Err(format!(
                "[5 dispatch] round assigned {} run(s), expected {}",
                report.assigned, expected.assigned
            ));
        }
        Ok(())
    }

    /// The fake agent sends a `Finished` on its current stream.
    fn send_result(&mut self, agent: usize, sent: &Sent) -> Result<(), String> {
        let reply = self.agents[agent]
            .sender
            .clone()
            .ok_or("[harness] a disconnected agent cannot report")?;
        let message = ResultMessage {
            agent_id: AGENTS[agent].0.to_string(),
            finished: Finished {
                run_id: self.model.runs[sent.run].id.clone(),
                attempt: sent.attempt,
                outcome: sent.outcome.clone(),
                permanent: sent.permanent,
                error: format!("model: {}", sent.outcome),
                ..Finished::default()
            },
            reply,
        };
        self.results
            .send(message)
            .map_err(|_| "[harness] the rounds are gone".to_string())
    }

    /// The agent opens a new stream with `Hello`, then sends again the
    /// results it has not seen acknowledged.
    async fn reconnect(&mut self, agent: usize, in_flight: &[(usize, u32)]) -> Result<(), String> {
        let expected = self.model.register(agent, in_flight);
        let (tx, rx) = unbounded_channel();
        let (id, capacity) = AGENTS[agent];
        let hello = Hello {
            agent_id: id.to_string(),
            name: id.to_string(),
            host: "model-host".to_string(),
            executors: vec!["builtin".to_string()],
            capacity,
            version: "model".to_string(),
            in_flight: self.in_flight(in_flight),
            ..Hello::default()
        };
        let connection = self
            .engine
            .register_agent(&hello, tx.clone())
            .await
            .map_err(|e| format!("[api] register_agent: {e}"))?;
        if connection != expected {
            return Err(format!(
                "[api] register_agent: connection {connection}, expected {expected}"
            ));
        }
        self.agents[agent].sender = Some(tx);
        self.agents[agent].receivers.push((connection, rx));
        for sent in self.model.agents[agent].unacked.clone() {
            self.model.resend(agent, sent.clone());
            self.send_result(agent, &sent)?;
        }
        Ok(())
    }

    /// Drops the engine and its rounds and recovers a new one from the
    /// store; compares its memory with the old one's (check 6); the agents
    /// that were connected connect again.
    async fn restart(&mut self) -> Result<(), String> {
        let before = self.engine.snapshot().await;
        let reconnecting: Vec<usize> = (0..AGENTS.len()).filter(|&a| self.model.agents[a].connected).collect();
        let jobs = (*self.engine.jobs()).clone();
        self.model.restart();
        let engine = Engine::recover_with_clock(self.store.clone(), jobs, settings(), self.clock.clone())
            .await
            .map_err(|e| format!("[6 recovery] recovery failed: {e}"))?;
        let (results, rounds) = engine.rounds().ok_or("[harness] rounds already taken")?;
        self.engine = engine;
        self.results = results;
        self.rounds = rounds;
        for link in &mut self.agents {
            link.sender = None;
            link.receivers.clear();
        }
        for answer in std::mem::take(&mut self.answers) {
            if let Ok(Ok(outcome)) = answer.await {
                return Err(format!(
                    "[api] a plain enqueue not committed before the restart was answered with run {}",
                    outcome.run.id
                ));
            }
        }
        let after = self.engine.snapshot().await;
        super::checks::recovery(&self.model, &before, &after)?;
        for agent in reconnecting {
            let in_flight: Vec<(usize, u32)> = self.model.agents[agent]
                .holds
                .iter()
                .map(|h| (h.run, h.attempt))
                .collect();
            self.reconnect(agent, &in_flight).await?;
        }
        Ok(())
    }

    /// Every message the agents received since the last call, as
    /// (agent, connection, message), the run ids named by model index.
    pub fn drain(&mut self) -> Result<Vec<(usize, u64, Expect)>, String> {
        let mut got = Vec::new();
        for (agent, link) in self.agents.iter_mut().enumerate() {
            let current = link.receivers.last().map(|(c, _)| *c);
            for (connection, rx) in &mut link.receivers {
                while let Ok(message) = rx.try_recv() {
                    let msg = match message {
                        Ok(message) => message.msg,
                        // A reconnect ends the agent's older stream with this
                        // error, so that a live agent notices it was replaced.
                        Err(status)
                            if Some(*connection) != current
                                && status.code() == tonic::Code::Aborted
                                && status.message().starts_with("replaced:") =>
                        {
                            continue;
                        }
                        Err(status) => {
                            return Err(format!("[8 protocol] {} got an error: {status}", AGENTS[agent].0));
                        }
                    };
                    let run = |id: &str| {
                        self.model.by_id.get(id).copied().ok_or_else(|| {
                            format!("[8 protocol] {} got a message about unknown run {id}", AGENTS[agent].0)
                        })
                    };
                    let expect = match msg {
                        Some(Msg::Welcome(_)) => Expect::Welcome,
                        Some(Msg::Assignment(a)) => {
                            let r = run(&a.run_id)?;
                            if a.job != JOBS[self.model.runs[r].job].name {
                                return Err(format!("[8 protocol] assignment of {} names job {}", a.run_id, a.job));
                            }
                            Expect::Assignment {
                                run: r,
                                attempt: a.attempt,
                            }
                        }
                        Some(Msg::Ack(a)) => Expect::Ack {
                            run: run(&a.run_id)?,
                            attempt: a.attempt,
                            accepted: a.accepted,
                        },
                        Some(Msg::Cancel(c)) => Expect::Cancel {
                            run: run(&c.run_id)?,
                            attempt: c.attempt,
                        },
                        other => return Err(format!("[8 protocol] {} got {other:?}", AGENTS[agent].0)),
                    };
                    got.push((agent, *connection, expect));
                }
            }
        }
        Ok(got)
    }

    /// Ids of every run the store holds, with their records.
    pub async fn store_runs(&self) -> Result<BTreeMap<String, RunRecord>, String> {
        let runs = self
            .store
            .runs(None, None, u32::MAX)
            .await
            .map_err(|e| failed("store.runs", e))?;
        Ok(runs.into_iter().map(|r| (r.id.clone(), r)).collect())
    }
}
