//! The agent loop: one task that owns all agent state and reacts to events.
//!
//! State that must outlive a connection lives here, not in the session:
//!
//! * `running` — attempts being executed, each with a [`StopHandle`];
//! * `unacked` — `Finished` results not yet acknowledged by the controller,
//!   re-sent after every reconnect until an `Ack` arrives;
//! * `drain` — set once shutdown or a controller `Drain` begins.
//!
//! Events come from four sources, multiplexed with `select!`: the shutdown
//! future, completed attempts (an mpsc fed by the per-attempt tasks), the link
//! to the controller (a session's messages and heartbeat ticks, or the
//! reconnect timer), and the drain timers. Keeping a single owner means no
//! locks, and every decision about credits is made in one place.
//!
//! Credits: after `Welcome` the agent grants `capacity - running` (attempts
//! start as soon as they arrive, so there are no assigned-but-not-started ones);
//! after each finished attempt it grants one more. While draining it grants none.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use worker_proto::v1::agent_message::Msg as Out;
use worker_proto::v1::controller_message::Msg as In;
use worker_proto::v1::{Ack, Assignment, Cancel, Finished, Heartbeat, Hello, InFlight, Pull, Started};

use crate::connection::{Backoff, Connector, Session, SessionEvent};
use crate::executor::http::HttpSettings;
use crate::executor::{self, Context, Report, StopHandle, StopSignal};
use crate::live::{LiveOutput, SharedLink, spawn_flusher};
use crate::sdk::Handlers;
use crate::{AgentConfig, AgentError};

/// How long a draining agent waits for the last `Ack`s once nothing runs.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Extra time, after drain grace plus kill grace, before a drain gives up on
/// attempts that did not report (a safety net; executors always report).
const DRAIN_SLACK: Duration = Duration::from_secs(5);

/// How long an ended attempt waits for its live output to be queued.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// (run id, attempt): identifies an attempt on the wire.
type Key = (String, u32);

/// An attempt's result, sent by its task to the loop.
struct Completion {
    key: Key,
    finished: Finished,
}

/// Progress of a drain.
struct Drain {
    /// When in-flight work is cancelled.
    cancel_at: Instant,
    /// Whether it has been.
    cancelled: bool,
    /// Give up waiting for attempts to report.
    hard_stop: Instant,
    /// When the last attempt finished (starts the Ack wait).
    idle_since: Option<Instant>,
}

/// The connection to the controller, in one of its three states.
enum Link {
    /// Waiting to retry.
    Down { retry_at: Instant },
    /// A handshake in progress.
    Connecting(Pin<Box<dyn Future<Output = Result<Box<Session>, String>> + Send>>),
    /// An open session.
    Up(Box<Session>),
}

enum LinkEvent {
    Retry,
    Connected(Box<Session>),
    Failed(String),
    Message(Box<In>),
    Heartbeat,
    Lost(String),
}

impl Link {
    async fn next(&mut self) -> LinkEvent {
        match self {
            Link::Down { retry_at } => {
                tokio::time::sleep_until(*retry_at).await;
                LinkEvent::Retry
            }
            Link::Connecting(handshake) => match handshake.await {
                Ok(session) => LinkEvent::Connected(session),
                Err(error) => LinkEvent::Failed(error),
            },
            Link::Up(session) => match session.next().await {
                SessionEvent::Message(msg) => LinkEvent::Message(msg),
                SessionEvent::Heartbeat => LinkEvent::Heartbeat,
                SessionEvent::Closed(why) => LinkEvent::Lost(why),
            },
        }
    }

    fn send(&self, msg: Out) {
        if let Link::Up(session) = self {
            session.send(msg);
        }
    }

    fn is_up(&self) -> bool {
        matches!(self, Link::Up(_))
    }
}

enum Event {
    Shutdown,
    Done(Box<Completion>),
    Link(LinkEvent),
    Timer,
}

/// All state of a running agent.
pub(crate) struct Agent {
    config: AgentConfig,
    /// Handlers registered through the SDK (empty on a plain agent).
    handlers: Handlers,
    agent_id: String,
    host: String,
    running: HashMap<Key, StopHandle>,
    unacked: BTreeMap<Key, Finished>,
    done_tx: mpsc::UnboundedSender<Completion>,
    drain: Option<Drain>,
    /// The open session's stream, for the attempts' live output.
    output_link: SharedLink,
    /// What `http` attempts share (built from the configuration at start).
    http: HttpSettings,
    /// The controller's client API, for builtins that call it (`digest`,
    /// `backup`).
    controller: crate::connection::ControllerLink,
}

impl Agent {
    /// Runs until a drain completes. `config` must be valid, and so must
    /// `handlers` (checked by the SDK's builder).
    pub(crate) async fn run(
        config: AgentConfig,
        handlers: Handlers,
        connector: Connector,
        http: HttpSettings,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut agent = Agent {
            agent_id: ulid::Ulid::new().to_string(),
            host: crate::config::host_name(),
            config,
            handlers,
            running: HashMap::new(),
            unacked: BTreeMap::new(),
            done_tx,
            drain: None,
            output_link: SharedLink::default(),
            http,
            controller: connector.controller_link(),
        };
        tracing::info!(
            agent_id = %agent.agent_id,
            name = %agent.config.name,
            controller = %agent.config.controller,
            capacity = agent.config.capacity,
            executors = ?agent.config.executors,
            handlers = ?agent.handlers,
            "agent starting"
        );
        let mut shutdown = Box::pin(shutdown);
        let mut backoff = Backoff::new();
        let mut link = Link::Connecting(Box::pin(connector.clone().open(agent.hello())));
        // Whether "disconnected" was already logged at warn since the last success.
        let mut warned = false;

        loop {
            if let Some(drain) = &mut agent.drain
                && agent.running.is_empty()
            {
                if agent.unacked.is_empty() {
                    tracing::info!("drain complete; agent stopping");
                    return Ok(());
                }
                drain.idle_since.get_or_insert_with(Instant::now);
            }
            let timer = agent.next_timer();
            let event = tokio::select! {
                () = &mut shutdown, if agent.drain.is_none() => Event::Shutdown,
                Some(done) = done_rx.recv() => Event::Done(Box::new(done)),
                event = link.next() => Event::Link(event),
                () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => Event::Timer,
            };
            match event {
                Event::Shutdown => agent.begin_drain("shutdown requested"),
                Event::Done(done) => agent.finished(*done, &link),
                Event::Timer => {
                    if agent.on_timer() {
                        return Ok(());
                    }
                }
                Event::Link(LinkEvent::Retry) => {
                    link = Link::Connecting(Box::pin(connector.clone().open(agent.hello())));
                }
                Event::Link(LinkEvent::Connected(session)) => {
                    for (controller, why) in &session.skipped {
                        tracing::warn!(%controller, error = %why, "skipped a controller");
                    }
                    let welcome = &session.welcome;
                    tracing::info!(
                        controller = %session.controller,
                        heartbeat_ms = welcome.heartbeat_interval_ms,
                        lease_timeout_ms = welcome.lease_timeout_ms,
                        running = agent.running.len(),
                        unacked = agent.unacked.len(),
                        "{}",
                        if warned { "reconnected to controller" } else { "connected to controller" }
                    );
                    warned = false;
                    backoff.reset();
                    agent.set_output_link(Some(session.output_link()));
                    link = Link::Up(session);
                    agent.on_connected(&link);
                }
                Event::Link(LinkEvent::Failed(error)) => {
                    if warned {
                        tracing::debug!(%error, "controller still unreachable");
                    } else {
                        tracing::warn!(
                            controller = %agent.config.controller,
                            %error,
                            "cannot reach controller; retrying with backoff"
                        );
                        warned = true;
                    }
                    link = Link::Down {
                        retry_at: Instant::now() + backoff.next_delay(),
                    };
                }
                Event::Link(LinkEvent::Lost(error)) => {
                    tracing::warn!(%error, running = agent.running.len(), "connection to controller lost; reconnecting");
                    agent.set_output_link(None);
                    warned = true;
                    link = Link::Down {
                        retry_at: Instant::now() + backoff.next_delay(),
                    };
                }
                Event::Link(LinkEvent::Heartbeat) => {
                    link.send(Out::Heartbeat(Heartbeat {
                        in_flight: agent.in_flight(),
                    }));
                }
                Event::Link(LinkEvent::Message(msg)) => agent.on_message(*msg, &link),
            }
        }
    }

    /// Where live output goes from now on (`None`: it waits for a session).
    fn set_output_link(&self, link: Option<crate::live::OutputLink>) {
        *self.output_link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }

    fn hello(&self) -> Hello {
        Hello {
            agent_id: self.agent_id.clone(),
            name: self.config.name.clone(),
            host: self.host.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            executors: self.config.executors.clone(),
            capacity: self.config.capacity,
            version: env!("CARGO_PKG_VERSION").to_string(),
            in_flight: self.in_flight(),
            handlers: self.handlers.names(),
        }
    }

    fn in_flight(&self) -> Vec<InFlight> {
        self.running
            .keys()
            .map(|(run_id, attempt)| InFlight {
                run_id: run_id.clone(),
                attempt: *attempt,
            })
            .collect()
    }

    /// Free slots: what the agent may ask for right after `Welcome`.
    fn free_slots(&self) -> u32 {
        self.config.capacity.saturating_sub(self.running.len() as u32)
    }

    fn on_connected(&mut self, link: &Link) {
        for finished in self.unacked.values() {
            link.send(Out::Finished(finished.clone()));
        }
        if self.drain.is_none() {
            let credits = self.free_slots();
            if credits > 0 {
                link.send(Out::Pull(Pull { credits }));
            }
        }
    }

    fn on_message(&mut self, msg: In, link: &Link) {
        match msg {
            In::Welcome(_) => tracing::debug!("ignoring a second Welcome"),
            In::Assignment(assignment) => self.start(assignment, link),
            In::Ack(Ack {
                run_id,
                attempt,
                accepted,
                reason,
            }) => {
                if self.unacked.remove(&(run_id.clone(), attempt)).is_none() {
                    tracing::debug!(%run_id, attempt, "Ack for an unknown result");
                } else if !accepted {
                    tracing::warn!(%run_id, attempt, %reason, "controller refused the result");
                } else {
                    tracing::debug!(%run_id, attempt, "result acknowledged");
                }
            }
            In::Cancel(Cancel { run_id, attempt }) => {
                let key = (run_id, attempt);
                if let Some(stop) = self.running.get(&key) {
                    tracing::info!(run_id = %key.0, attempt, "cancelling attempt");
                    stop.cancel();
                } else if let Some(finished) = self.unacked.get(&key) {
                    link.send(Out::Finished(finished.clone()));
                } else {
                    tracing::debug!(run_id = %key.0, attempt, "Cancel for an attempt not held here");
                }
            }
            In::Drain(_) => {
                if self.drain.is_none() {
                    self.begin_drain("controller asked to drain");
                }
            }
        }
    }

    fn start(&mut self, assignment: Assignment, link: &Link) {
        let key = (assignment.run_id.clone(), assignment.attempt);
        if self.running.contains_key(&key) {
            tracing::warn!(run_id = %key.0, attempt = key.1, "duplicate assignment ignored");
            return;
        }
        if let Some(finished) = self.unacked.get(&key) {
            tracing::warn!(run_id = %key.0, attempt = key.1, "assignment already finished; re-sending result");
            link.send(Out::Finished(finished.clone()));
            return;
        }
        if self.running.len() as u32 >= self.config.capacity {
            // The controller should never do this; run it anyway rather than
            // leave the attempt to expire, but make it visible.
            tracing::warn!(run_id = %key.0, attempt = key.1, "assignment beyond capacity");
        }
        // One clock reading for both forms of the start instant.
        let started = Utc::now();
        let started_at = rfc3339(started);
        let started_at_unix_micros = started.timestamp_micros();
        link.send(Out::Started(Started {
            run_id: key.0.clone(),
            attempt: key.1,
            started_at: started_at.clone(),
            started_at_unix_micros,
        }));
        tracing::info!(run_id = %key.0, attempt = key.1, job = %assignment.job, "attempt started");

        let (handle, stop) = StopSignal::new(attempt_timeout(&assignment));
        self.running.insert(key.clone(), handle);
        let live = LiveOutput::new();
        let flusher = spawn_flusher(live.clone(), self.output_link.clone(), key.0.clone(), key.1);
        let ctx = Context {
            run_id: assignment.run_id,
            attempt: assignment.attempt,
            job: assignment.job,
            payload: assignment.payload,
            kill_grace: self.config.kill_grace,
            output_cap: self.config.output_cap,
            live: Some(live.clone()),
            http: self.http.clone(),
            handlers: self.handlers.clone(),
            controller: Some(self.controller.clone()),
        };
        let spec = assignment.executor;
        let enabled = self.config.executors.clone();
        let done_tx = self.done_tx.clone();
        tokio::spawn(async move {
            let clock = Instant::now();
            let work = tokio::spawn(async move { executor::execute(spec.as_ref(), &enabled, &ctx, stop).await });
            let report = match work.await {
                Ok(report) => report,
                Err(error) => Report::failed(format!("executor task failed: {error}"), false),
            };
            // The last output goes out before the result (same stream, in order).
            live.close();
            if tokio::time::timeout(FLUSH_WAIT, flusher).await.is_err() {
                tracing::warn!(run_id = %key.0, attempt = key.1, "live output flusher did not finish");
            }
            let (metrics, spans) = report.measures.into_proto();
            let finished = Finished {
                run_id: key.0.clone(),
                attempt: key.1,
                outcome: report.outcome.as_str().to_string(),
                exit_code: report.exit_code,
                error: report.error,
                output_tail: report.output,
                started_at,
                finished_at: now_rfc3339(),
                duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                permanent: report.permanent,
                started_at_unix_micros,
                metrics,
                spans,
                retry_after_ms: report
                    .retry_after
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            };
            let _ = done_tx.send(Completion { key, finished });
        });
    }

    fn finished(&mut self, done: Completion, link: &Link) {
        let Completion { key, finished } = done;
        self.running.remove(&key);
        if finished.error.is_empty() {
            tracing::info!(run_id = %key.0, attempt = key.1, outcome = %finished.outcome, duration_ms = finished.duration_ms, "attempt finished");
        } else {
            tracing::info!(
                run_id = %key.0,
                attempt = key.1,
                outcome = %finished.outcome,
                error = %finished.error,
                duration_ms = finished.duration_ms,
                "attempt finished"
            );
        }
        link.send(Out::Finished(finished.clone()));
        self.unacked.insert(key, finished);
        if self.drain.is_none() && link.is_up() {
            link.send(Out::Pull(Pull { credits: 1 }));
        }
    }

    fn begin_drain(&mut self, why: &str) {
        let now = Instant::now();
        let cancel_at = now + self.config.drain_grace;
        tracing::info!(
            running = self.running.len(),
            unacked = self.unacked.len(),
            grace = %worker_duration::format(self.config.drain_grace),
            "{why}; draining"
        );
        self.drain = Some(Drain {
            cancel_at,
            cancelled: false,
            hard_stop: cancel_at + self.config.kill_grace + DRAIN_SLACK,
            idle_since: None,
        });
    }

    /// The next instant a drain timer fires, if draining.
    fn next_timer(&self) -> Option<Instant> {
        let drain = self.drain.as_ref()?;
        if let Some(idle) = drain.idle_since {
            return Some(idle + ACK_WAIT);
        }
        Some(if drain.cancelled {
            drain.hard_stop
        } else {
            drain.cancel_at
        })
    }

    /// Handles a drain timer; returns whether the agent should stop now.
    fn on_timer(&mut self) -> bool {
        let now = Instant::now();
        let Some(drain) = &mut self.drain else { return false };
        if let Some(idle) = drain.idle_since {
            if now >= idle + ACK_WAIT {
                tracing::warn!(unacked = self.unacked.len(), "stopping without Acks for some results");
                return true;
            }
            return false;
        }
        if !drain.cancelled && now >= drain.cancel_at {
            drain.cancelled = true;
            tracing::warn!(
                running = self.running.len(),
                "drain grace over; cancelling in-flight attempts"
            );
            for stop in self.running.values() {
                stop.cancel();
            }
        } else if drain.cancelled && now >= drain.hard_stop {
            tracing::error!(running = self.running.len(), "attempts did not stop in time; giving up");
            return true;
        }
        false
    }
}

/// The attempt's time limit: `timeout_ms`, else what is left until `deadline`.
fn attempt_timeout(assignment: &Assignment) -> Option<Duration> {
    if assignment.timeout_ms > 0 {
        return Some(Duration::from_millis(assignment.timeout_ms));
    }
    if assignment.deadline.is_empty() {
        return None;
    }
    match chrono::DateTime::parse_from_rfc3339(&assignment.deadline) {
        Ok(deadline) => {
            let left = deadline.with_timezone(&Utc) - Utc::now();
            Some(left.to_std().unwrap_or(Duration::ZERO))
        }
        Err(error) => {
            tracing::warn!(deadline = %assignment.deadline, %error, "ignoring unparsable deadline");
            None
        }
    }
}

fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// `at` in RFC 3339 with milliseconds, UTC.
fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_prefers_timeout_ms_then_deadline() {
        let mut a = Assignment {
            timeout_ms: 1500,
            ..Default::default()
        };
        assert_eq!(attempt_timeout(&a), Some(Duration::from_millis(1500)));
        a.timeout_ms = 0;
        assert_eq!(attempt_timeout(&a), None);
        a.deadline = (Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
        let left = attempt_timeout(&a).unwrap();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        a.deadline = "2000-01-01T00:00:00Z".into();
        assert_eq!(attempt_timeout(&a), Some(Duration::ZERO));
        a.deadline = "soon".into();
        assert_eq!(attempt_timeout(&a), None);
    }
}
