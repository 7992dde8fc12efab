//! One gRPC stream to the controller, and the backoff between attempts to open one.
//!
//! [`Connector::open`] performs the opening handshake of the agent protocol
//! (`docs/architecture.md#the-agent-protocol`): connect, start
//! `AgentService.Connect` with `Hello` already queued as the first message,
//! and wait for `Welcome`. The resulting [`Session`] is then driven by
//! the agent loop (`agent.rs`), which owns all state that must survive a
//! reconnect — running attempts and unacknowledged results. A session is
//! disposable: when it fails, the loop drops it and opens a new one.
//!
//! Outgoing messages go through an unbounded channel wrapped in a stream that
//! tonic sends from; they are small and few (one heartbeat per interval, a
//! handful per attempt), so the sender never has to wait. Live output shares
//! the channel (so it stays in order with `Finished`) but is bounded apart:
//! the stream counts output bytes out as tonic takes them, and the flushers
//! hold back while [`crate::live::MAX_IN_FLIGHT`] bytes are queued.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;
use worker_proto::v1::agent_service_client::AgentServiceClient;
use worker_proto::v1::{AgentMessage, ControllerMessage, Hello, Welcome, agent_message, controller_message};

use crate::live::OutputLink;
use crate::{AgentConfig, AgentError};

/// How long the controller may take to answer `Hello` with `Welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive: detects a dead peer on an otherwise quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Heartbeat interval when the controller's `Welcome` leaves it at 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Opens sessions to one controller.
#[derive(Clone)]
pub(crate) struct Connector {
    endpoint: Endpoint,
    auth: Option<AsciiMetadataValue>,
}

impl Connector {
    /// Checks the controller address and token once, up front.
    pub(crate) fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        let url = if config.controller.contains("://") {
            config.controller.clone()
        } else {
            format!("http://{}", config.controller)
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|source| AgentError::InvalidController {
                url: config.controller.clone(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true);
        let endpoint = crate::tls::configure(endpoint, config)?;
        let auth = match &config.token {
            Some(token) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| AgentError::Config("token: not valid in a gRPC header".into()))?,
            ),
            None => None,
        };
        Ok(Self { endpoint, auth })
    }

    /// Connects, sends `hello` and waits for `Welcome`.
    pub(crate) async fn open(self, hello: Hello) -> Result<Box<Session>, String> {
        let channel = self.endpoint.connect().await.map_err(|e| error_chain(&e))?;
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(AgentMessage {
            msg: Some(agent_message::Msg::Hello(hello)),
        });
        let in_flight = Arc::new(AtomicUsize::new(0));
        let taken = in_flight.clone();
        let outgoing = UnboundedReceiverStream::new(rx).map(move |message| {
            OutputLink::taken(&taken, &message);
            message
        });
        let mut request = tonic::Request::new(outgoing);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        let response = tokio::time::timeout(WELCOME_TIMEOUT, client.connect(request))
            .await
            .map_err(|_| "no answer to Hello".to_string())?
            .map_err(|status| describe_status(&status))?;
        let mut inbound = response.into_inner();
        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => return Err("no Welcome in time".into()),
            Ok(Err(status)) => return Err(describe_status(&status)),
            Ok(Ok(None)) => return Err("controller closed the stream before Welcome".into()),
            Ok(Ok(Some(ControllerMessage {
                msg: Some(controller_message::Msg::Welcome(w)),
            }))) => w,
            Ok(Ok(Some(other))) => return Err(format!("expected Welcome, got {other:?}")),
        };
        let period = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms),
        };
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Box::new(Session {
            tx,
            in_flight,
            inbound,
            heartbeat,
            welcome,
        }))
    }
}

/// The controller's client API (`ControllerService`) as this agent reaches
/// it: the same address, TLS settings and token as its `Connect` stream. Used
/// by builtins that ask the controller for something (`digest`). Cheap to
/// clone; each call opens its connection lazily.
#[derive(Clone)]
pub struct ControllerLink {
    endpoint: Endpoint,
    auth: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ControllerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ControllerLink")
            .field("uri", self.endpoint.uri())
            .finish_non_exhaustive()
    }
}

impl ControllerLink {
    /// The controller's endpoint, with the agent's TLS settings.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The agent's `authorization` header value, when it has a token.
    pub(crate) fn authorization(&self) -> Option<&AsciiMetadataValue> {
        self.auth.as_ref()
    }

    /// `SendDigest` for attempt `attempt` of run `run_id`, within `timeout`.
    pub async fn send_digest(
        &self,
        run_id: &str,
        attempt: u32,
        timeout: Duration,
    ) -> Result<worker_proto::v1::SendDigestResponse, tonic::Status> {
        let channel = self.endpoint.clone().timeout(timeout).connect_lazy();
        let mut client = worker_proto::v1::controller_service_client::ControllerServiceClient::new(channel);
        let mut request = tonic::Request::new(worker_proto::v1::SendDigestRequest {
            run_id: run_id.to_string(),
            attempt,
        });
        request.set_timeout(timeout);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        client.send_digest(request).await.map(tonic::Response::into_inner)
    }
}

impl Connector {
    /// The controller's client API, reached like this connector reaches the
    /// agent protocol.
    pub(crate) fn controller_link(&self) -> ControllerLink {
        ControllerLink {
            endpoint: self.endpoint.clone(),
            auth: self.auth.clone(),
        }
    }
}

/// What happened on an open session.
pub(crate) enum SessionEvent {
    /// The controller sent a message.
    Message(Box<controller_message::Msg>),
    /// Time to send a heartbeat.
    Heartbeat,
    /// The stream ended; the text says why.
    Closed(String),
}

/// An open `Connect` stream after a successful handshake.
pub(crate) struct Session {
    tx: mpsc::UnboundedSender<AgentMessage>,
    /// Live-output bytes queued on `tx` and not yet taken by the transport.
    in_flight: Arc<AtomicUsize>,
    inbound: tonic::Streaming<ControllerMessage>,
    heartbeat: Interval,
    /// The controller's `Welcome`.
    pub(crate) welcome: Welcome,
}

impl Session {
    /// Queues `msg` for sending. A failure shows up as [`SessionEvent::Closed`].
    pub(crate) fn send(&self, msg: agent_message::Msg) {
        let _ = self.tx.send(AgentMessage { msg: Some(msg) });
    }

    /// The session's stream as the live-output flushers use it.
    pub(crate) fn output_link(&self) -> OutputLink {
        OutputLink::new(self.tx.clone(), self.in_flight.clone())
    }

    /// Waits for the next message or heartbeat tick. Cancel-safe.
    pub(crate) async fn next(&mut self) -> SessionEvent {
        loop {
            tokio::select! {
                message = self.inbound.message() => match message {
                    Ok(Some(ControllerMessage { msg: Some(msg) })) => return SessionEvent::Message(Box::new(msg)),
                    Ok(Some(ControllerMessage { msg: None })) => continue,
                    Ok(None) => return SessionEvent::Closed("controller closed the stream".into()),
                    Err(status) => return SessionEvent::Closed(describe_status(&status)),
                },
                _ = self.heartbeat.tick() => return SessionEvent::Heartbeat,
            }
        }
    }
}

/// Exponential reconnect backoff: 100ms doubling up to 5s, each delay jittered
/// down by up to half so that many agents do not reconnect in lockstep.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// A backoff at its minimum.
    pub(crate) fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    /// Back to the minimum, after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(rand::random_range(0.5..=1.0))
    }
}

fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(&format!(" ({})", error_chain(source)));
    }
    text
}

/// `error: cause: cause ...` — tonic's transport errors say little on their own.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_MIN);
    }

    #[test]
    fn connector_accepts_bare_addresses_and_rejects_bad_ones() {
        assert!(Connector::new(&AgentConfig::new("127.0.0.1:7070")).is_ok());
        assert!(Connector::new(&AgentConfig::new("http://127.0.0.1:7070")).is_ok());
        assert!(Connector::new(&AgentConfig::new("http://bad host:1")).is_err());
    }
}
