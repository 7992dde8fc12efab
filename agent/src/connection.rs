//! One gRPC stream to the controller, and the backoff between attempts to open one.
//!
//! [`Connector::open`] performs the opening handshake of the agent protocol
//! (`docs/architecture.md#the-agent-protocol`): connect, start
//! `AgentService.Connect` with `Hello` already queued as the first message,
//! and wait for `Welcome`. With several controller addresses it makes one
//! pass over them ([`crate::controllers::Pass`]): a standby refuses with
//! `UNAVAILABLE` and names the leader, which is tried next; the address that
//! gave the session is tried first next time. The resulting [`Session`] is then driven by
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

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;
use worker_proto::v1::agent_service_client::AgentServiceClient;
use worker_proto::v1::{AgentMessage, ControllerMessage, Hello, Welcome, agent_message, controller_message};

use crate::controllers::{self, Pass, error_chain};
use crate::live::OutputLink;
use crate::tls::ClientTls;
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

/// One controller address and the endpoint that reaches it.
#[derive(Clone)]
struct Target {
    url: String,
    endpoint: Endpoint,
}

/// The addresses a connector knows: the configured list first, then the
/// leaders standbys named that were not in it; and the one that worked last.
struct Targets {
    all: Vec<Target>,
    /// How many of `all` were configured.
    listed: usize,
    /// Index in `all` of the address that worked last (the first before any did).
    current: usize,
}

/// Shared between a connector, its clones and its [`ControllerLink`]s.
type SharedTargets = Arc<Mutex<Targets>>;

fn lock(targets: &SharedTargets) -> MutexGuard<'_, Targets> {
    targets.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens sessions to the leading controller of a list of addresses.
#[derive(Clone)]
pub(crate) struct Connector {
    targets: SharedTargets,
    tls: ClientTls,
    auth: Option<AsciiMetadataValue>,
}

/// Why one address did not give a session.
struct Failure {
    why: String,
    /// The leader a standby named.
    leader: Option<String>,
}

impl Connector {
    /// Checks the controller addresses, TLS files and token once, up front.
    pub(crate) fn new(config: &AgentConfig) -> Result<Self, AgentError> {
        let tls = ClientTls::load(config)?;
        let all = config
            .controllers()?
            .into_iter()
            .map(|url| {
                Ok(Target {
                    endpoint: endpoint_for(&url, &tls)?,
                    url,
                })
            })
            .collect::<Result<Vec<_>, AgentError>>()?;
        let auth = match &config.token {
            Some(token) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| AgentError::Config("token: not valid in a gRPC header".into()))?,
            ),
            None => None,
        };
        Ok(Self {
            targets: Arc::new(Mutex::new(Targets {
                listed: all.len(),
                all,
                current: 0,
            })),
            tls,
            auth,
        })
    }

    /// One pass over the addresses (see [`Pass`]): the first that answers
    /// `hello` with `Welcome` gives the session, and becomes the first one
    /// the next pass tries. A standby's leader hint is tried next, with the
    /// same TLS settings and token. The error lists why each address failed.
    pub(crate) async fn open(self, hello: Hello) -> Result<Box<Session>, String> {
        let (listed, start) = {
            let targets = lock(&self.targets);
            (targets.listed, targets.current)
        };
        let mut pass = Pass::new(listed, start);
        let mut skipped = Vec::new();
        while let Some(index) = pass.next() {
            let target = lock(&self.targets).all[index].clone();
            match self.open_at(&target.endpoint, hello.clone()).await {
                Ok(mut session) => {
                    lock(&self.targets).current = index;
                    session.controller = target.url;
                    session.skipped = skipped;
                    return Ok(session);
                }
                Err(Failure { mut why, leader }) => {
                    if let Some(leader) = leader {
                        match self.target_index(&leader) {
                            Ok(index) if pass.hint(index) => why.push_str(&format!("; trying the leader at {leader}")),
                            Ok(_) => {}
                            Err(error) => why.push_str(&format!("; cannot use the leader it names: {error}")),
                        }
                    }
                    skipped.push((target.url, why));
                }
            }
        }
        Err(skipped
            .iter()
            .map(|(url, why)| format!("{url}: {why}"))
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// The index of `url` among the known addresses, added when new.
    fn target_index(&self, url: &str) -> Result<usize, String> {
        let url = controllers::check_url(url)?;
        let mut targets = lock(&self.targets);
        if let Some(index) = targets.all.iter().position(|t| t.url == url) {
            return Ok(index);
        }
        let endpoint = endpoint_for(&url, &self.tls).map_err(|e| e.to_string())?;
        targets.all.push(Target { url, endpoint });
        Ok(targets.all.len() - 1)
    }

    /// Connects to `endpoint`, sends `hello` and waits for `Welcome`.
    async fn open_at(&self, endpoint: &Endpoint, hello: Hello) -> Result<Box<Session>, Failure> {
        let fail = |why: String| Failure { why, leader: None };
        let channel = endpoint.connect().await.map_err(|e| fail(error_chain(&e)))?;
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
            .map_err(|_| fail("no answer to Hello".to_string()))?
            .map_err(|status| Failure {
                why: describe_status(&status),
                leader: controllers::leader_hint(status.metadata()),
            })?;
        let mut inbound = response.into_inner();
        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(fail("no Welcome in time".into())),
            Ok(Err(status)) => {
                return Err(Failure {
                    why: describe_status(&status),
                    leader: controllers::leader_hint(status.metadata()),
                });
            }
            Ok(Ok(None)) => return Err(fail("controller closed the stream before Welcome".into())),
            Ok(Ok(Some(ControllerMessage {
                msg: Some(controller_message::Msg::Welcome(w)),
            }))) => w,
            Ok(Ok(Some(other))) => return Err(fail(format!("expected Welcome, got {other:?}"))),
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
            controller: String::new(),
            skipped: Vec::new(),
        }))
    }

    /// The controller's client API, reached at the address of the current
    /// session (the leader), with this connector's TLS settings and token.
    pub(crate) fn controller_link(&self) -> ControllerLink {
        ControllerLink {
            targets: self.targets.clone(),
            auth: self.auth.clone(),
        }
    }
}

/// The endpoint of `url` with the agent's connection settings and TLS.
fn endpoint_for(url: &str, tls: &ClientTls) -> Result<Endpoint, AgentError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| AgentError::InvalidController {
            url: url.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true);
    tls.apply(endpoint, url)
}

/// The controller's client API (`ControllerService`) as this agent reaches
/// it: the address its `Connect` stream is open to (the leader; the first
/// address before any session), with the same TLS settings and token. Used
/// by builtins that ask the controller for something (`digest`, `backup`).
/// Cheap to clone; each call opens its connection lazily.
#[derive(Clone)]
pub struct ControllerLink {
    targets: SharedTargets,
    auth: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ControllerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ControllerLink")
            .field("uri", self.endpoint().uri())
            .finish_non_exhaustive()
    }
}

impl ControllerLink {
    /// The endpoint of the controller the agent's session is open to, with
    /// the agent's TLS settings.
    pub(crate) fn endpoint(&self) -> Endpoint {
        let targets = lock(&self.targets);
        targets.all[targets.current].endpoint.clone()
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
        let channel = self.endpoint().timeout(timeout).connect_lazy();
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
    /// The address of the controller the session is open to.
    pub(crate) controller: String,
    /// The addresses tried before it in the same pass, and why each failed.
    pub(crate) skipped: Vec<(String, String)>,
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
        assert!(Connector::new(&AgentConfig::new("http://a:1,b:2")).is_ok());
        let err = Connector::new(&AgentConfig::new("http://a:1,http://bad host:1"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("`http://bad host:1`"), "{err}");
    }

    /// A loopback address where nothing listens (connections are refused).
    fn refused() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_pass_tries_each_address_in_order_and_says_why_each_failed() {
        let (a, b) = (refused(), refused());
        let connector = Connector::new(&AgentConfig::new(format!("{a},{b}"))).unwrap();
        let err = connector.clone().open(Hello::default()).await.err().unwrap();
        let (at_a, at_b) = (
            err.find(&format!("{a}: ")).unwrap(),
            err.find(&format!("{b}: ")).unwrap(),
        );
        assert!(at_a < at_b, "{err}");
        assert!(err.contains("onnection refused"), "{err}");
        // The next pass starts where the last session was opened.
        lock(&connector.targets).current = 1;
        let err = connector.open(Hello::default()).await.err().unwrap();
        assert!(
            err.find(&format!("{b}: ")).unwrap() < err.find(&format!("{a}: ")).unwrap(),
            "{err}"
        );
    }

    #[test]
    fn a_leader_outside_the_list_gets_the_same_settings() {
        let mut config = AgentConfig::new("https://a:7070");
        config.tls_pinned_cert = Some(vec![1, 2, 3]);
        config.token = Some("s3cret".into());
        let connector = Connector::new(&config).unwrap();
        let err = connector.target_index("http://b:7070").unwrap_err();
        assert!(err.contains("need an https://"), "{err}");
        assert_eq!(connector.target_index("https://b:7070"), Ok(1));
        assert_eq!(connector.target_index("https://b:7070"), Ok(1));
        assert_eq!(connector.target_index("https://a:7070"), Ok(0));
        // The builtins' link follows the session: to b once b gave one.
        let link = connector.controller_link();
        assert_eq!(link.endpoint().uri(), "https://a:7070/");
        lock(&connector.targets).current = 1;
        assert_eq!(link.endpoint().uri(), "https://b:7070/");
        assert_eq!(link.authorization().unwrap(), "Bearer s3cret");
    }
}
