//! Lightweight simulated agents speaking `AgentService.Connect`: `Hello`, then
//! heartbeats; optionally `Pull` credits, answering every `Assignment` at once
//! with `Started` + `Finished{succeeded}` and one more credit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use worker_proto::v1 as pb;
use worker_proto::v1::agent_service_client::AgentServiceClient;
use worker_proto::v1::{agent_message, controller_message};

use crate::client::Auth;

/// How long the controller may take to answer `Hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters shared by the simulated agents of one scenario.
#[derive(Debug, Default)]
pub struct Counters {
    /// `Finished` messages sent.
    pub finished: AtomicU64,
    /// `Ack`s received.
    pub acked: AtomicU64,
    /// Assignments of other jobs than the scenario's (answered all the same).
    pub foreign: AtomicU64,
    /// Woken on every `Finished` / `Ack`.
    pub changed: Notify,
    /// When `measured_at` is taken: at this many `Finished` messages.
    pub measure: AtomicU64,
    /// When the `measure`-th `Finished` was sent.
    pub measured_at: Mutex<Option<Instant>>,
    /// When the last `Ack` arrived.
    pub last_ack_at: Mutex<Option<Instant>>,
    /// When the first `Assignment` (of any job) arrived at any of the agents;
    /// set once.
    pub first_assignment_at: OnceLock<Instant>,
}

impl Counters {
    /// Counters that note the instant of the `measure`-th `Finished`.
    pub fn measuring(measure: u64) -> Self {
        Self {
            measure: AtomicU64::new(measure),
            ..Default::default()
        }
    }

    /// Waits until `done()` holds, or `stall` passes without any `Finished` or
    /// `Ack`. Returns whether `done()` holds.
    pub async fn wait_until(&self, stall: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let mut last = (u64::MAX, u64::MAX);
        let mut since = Instant::now();
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return true;
            }
            let now = (
                self.finished.load(Ordering::Relaxed),
                self.acked.load(Ordering::Relaxed),
            );
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= stall {
                return false;
            }
            // A wake-up may be missed between the check and the wait: wait at
            // most 50 ms for one.
            let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
        }
    }
}

/// What one simulated agent is.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Agent id sent in `Hello` (unique per agent).
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// Labels the job selectors match.
    pub labels: HashMap<String, String>,
    /// Slots announced in `Hello`.
    pub capacity: u32,
    /// Credits granted after `Welcome` (0: never takes work).
    pub pull: u32,
    /// Assignments of this job count as the scenario's.
    pub job: String,
}

/// A connected simulated agent; dropping it closes its stream.
pub struct SimAgent {
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl SimAgent {
    /// Ends the agent: closes its stream and waits for its task.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the agent's stream has ended (by error or by the controller).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }

    /// The agent's error, if its stream ended with one.
    pub async fn error(self) -> Option<String> {
        if !self.task.is_finished() {
            self.close().await;
            return None;
        }
        match self.task.await {
            Ok(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// A unique agent id: process, time and index.
pub fn agent_id(i: u64) -> String {
    let micros = chrono::Utc::now().timestamp_micros();
    format!("bench-{}-{micros}-{i}", std::process::id())
}

/// Connects an agent on `channel`: sends `Hello`, waits for `Welcome`, then runs
/// it on a task of its own.
pub async fn start(channel: Channel, auth: Auth, spec: Spec, counters: Arc<Counters>) -> Result<SimAgent, String> {
    let mut client: AgentServiceClient<InterceptedService<Channel, Auth>> =
        AgentServiceClient::with_interceptor(channel, auth);
    let (tx, rx) = mpsc::unbounded_channel();
    let send = move |tx: &mpsc::UnboundedSender<pb::AgentMessage>, msg: agent_message::Msg| {
        let _ = tx.send(pb::AgentMessage { msg: Some(msg) });
    };
    send(
        &tx,
        agent_message::Msg::Hello(pb::Hello {
            agent_id: spec.agent_id.clone(),
            name: spec.name.clone(),
            host: "workerctl-bench".into(),
            labels: spec.labels.clone(),
            executors: vec!["builtin".into()],
            capacity: spec.capacity,
            version: env!("CARGO_PKG_VERSION").into(),
            in_flight: Vec::new(),
            handlers: Vec::new(),
        }),
    );
    let response = tokio::time::timeout(WELCOME_TIMEOUT, client.connect(UnboundedReceiverStream::new(rx)))
        .await
        .map_err(|_| "no answer to Hello".to_string())?
        .map_err(|s| status_text(&s))?;
    let mut inbound = response.into_inner();
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Err(_) => return Err("no Welcome in time".into()),
        Ok(Err(s)) => return Err(status_text(&s)),
        Ok(Ok(None)) => return Err("the controller closed the stream before Welcome".into()),
        Ok(Ok(Some(pb::ControllerMessage {
            msg: Some(controller_message::Msg::Welcome(w)),
        }))) => w,
        Ok(Ok(Some(other))) => return Err(format!("expected Welcome, got {other:?}")),
    };
    let period = Duration::from_millis(if welcome.heartbeat_interval_ms == 0 {
        5000
    } else {
        welcome.heartbeat_interval_ms
    });
    if spec.pull > 0 {
        send(&tx, agent_message::Msg::Pull(pb::Pull { credits: spec.pull }));
    }
    let task = tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    send(&tx, agent_message::Msg::Heartbeat(pb::Heartbeat { in_flight: Vec::new() }));
                }
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Ok(()),
                        Err(s) => return Err(status_text(&s)),
                    };
                    match message.msg {
                        Some(controller_message::Msg::Assignment(a)) => {
                            counters.first_assignment_at.get_or_init(Instant::now);
                            let clock = chrono::Utc::now();
                            let now = clock.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                            let started_at_unix_micros = clock.timestamp_micros();
                            send(&tx, agent_message::Msg::Started(pb::Started {
                                run_id: a.run_id.clone(),
                                attempt: a.attempt,
                                started_at: now.clone(),
                                started_at_unix_micros,
                            }));
                            send(&tx, agent_message::Msg::Finished(pb::Finished {
                                run_id: a.run_id,
                                attempt: a.attempt,
                                outcome: "succeeded".into(),
                                output_tail: "bench".into(),
                                started_at: now.clone(),
                                finished_at: now,
                                duration_ms: 0,
                                started_at_unix_micros,
                                ..Default::default()
                            }));
                            send(&tx, agent_message::Msg::Pull(pb::Pull { credits: 1 }));
                            if a.job != spec.job {
                                counters.foreign.fetch_add(1, Ordering::Relaxed);
                            }
                            let n = counters.finished.fetch_add(1, Ordering::Relaxed) + 1;
                            if n == counters.measure.load(Ordering::Relaxed) {
                                *counters.measured_at.lock().unwrap() = Some(Instant::now());
                            }
                            counters.changed.notify_waiters();
                        }
                        Some(controller_message::Msg::Ack(_)) => {
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                            *counters.last_ack_at.lock().unwrap() = Some(Instant::now());
                            counters.changed.notify_waiters();
                        }
                        Some(controller_message::Msg::Drain(_)) => return Ok(()),
                        // Attempts end at once: nothing to cancel.
                        _ => {}
                    }
                }
            }
        }
    });
    Ok(SimAgent { task })
}

fn status_text(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let t = e.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = e.source();
    }
    text
}
