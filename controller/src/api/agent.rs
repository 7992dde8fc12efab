//! `AgentService.Connect`: one bidirectional stream per agent connection (the
//! protocol: `docs/architecture.md#the-agent-protocol`).
//!
//! The first message must be `Hello`; the controller answers `Welcome`, then
//! sends assignments only against the agent's `Pull` credits. Results are
//! committed before their `Ack` is sent.
//!
//! Identity: an agent id is bound to the token (principal) that first said
//! `Hello` with it in this controller process; the same id under another
//! token is refused (`PermissionDenied`), so one agent cannot take over
//! another's stream or report its attempts. The stream ends with the token's
//! revocation (or expiry) and counts against the token's stream limit.
//!
//! `Output` chunks go to the live-output hub ([`crate::logs`]), which keeps
//! only those of attempts the engine has running on this very agent.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use worker_proto::v1::agent_service_server::AgentService;
use worker_proto::v1::{AgentMessage, ControllerMessage, InFlight, agent_message};

use crate::auth::Principal;
use crate::engine::{Engine, ResultMessage};

/// Agent id → name of the token that first connected with it, shared with
/// the client service (`SendDigest` checks that its caller's token holds the
/// run it names).
pub type AgentOwners = Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

/// How long a new stream may take to say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent-facing gRPC service.
#[derive(Clone)]
pub struct AgentApi {
    engine: Arc<Engine>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    results: mpsc::UnboundedSender<ResultMessage>,
    /// mTLS: refuse streams without a verified client certificate.
    client_certificates_required: bool,
    /// Agent id → name of the token that first connected with it.
    owners: AgentOwners,
    /// Where `Output` chunks go (shared with the client service).
    live: Arc<crate::logs::LiveOutput>,
}

impl AgentApi {
    /// A service over `engine`; results go to the engine's commit loop through
    /// `results`; streams end when `shutdown` turns true.
    pub fn new(
        engine: Arc<Engine>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        results: mpsc::UnboundedSender<ResultMessage>,
    ) -> Self {
        AgentApi {
            live: crate::logs::LiveOutput::new(engine.clone()),
            engine,
            shutdown,
            results,
            client_certificates_required: false,
            owners: Arc::default(),
        }
    }

    /// Binds `agent_id` to `principal` on first use; refuses it to any other.
    fn bind_identity(&self, agent_id: &str, principal: &Principal) -> Result<(), Status> {
        let mut owners = self.owners.lock().expect("agent owners poisoned");
        match owners.get(agent_id) {
            Some(owner) if *owner != principal.name => {
                tracing::warn!(agent = %agent_id, token = %principal.name, owner = %owner, "hello refused: agent id of another token");
                Err(Status::permission_denied(format!(
                    "hello.agent_id: agent \"{agent_id}\" belongs to another token; token \"{}\" may not connect as it",
                    principal.name
                )))
            }
            Some(_) => Ok(()),
            None => {
                owners.insert(agent_id.to_string(), principal.name.clone());
                Ok(())
            }
        }
    }

    /// Keeps the agent ids' owners in `owners` (shared with the client
    /// service, see [`AgentOwners`]).
    pub fn with_owners(mut self, owners: AgentOwners) -> Self {
        self.owners = owners;
        self
    }

    /// Feeds `Output` chunks to `live`, the hub `FollowRunOutput` reads.
    pub fn with_live_output(mut self, live: Arc<crate::logs::LiveOutput>) -> Self {
        self.live = live;
        self
    }

    /// Refuse agent streams that came without a verified TLS client
    /// certificate (`--tls-client-ca`) when `required`.
    pub fn require_client_certificates(mut self, required: bool) -> Self {
        self.client_certificates_required = required;
        self
    }
}

type ControllerStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    type ConnectStream = ControllerStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        crate::tls::check_agent_certificate(self.client_certificates_required, &request)?;
        let principal = Principal::of(&request);
        let stream_guard = principal.open_stream()?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "hello: the first message of a stream must be Hello",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("hello: not received within 10 s")),
        };
        if !hello.agent_id.is_empty() {
            self.bind_identity(&hello.agent_id, &principal)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let connection = self.engine.register_agent(&hello, tx.clone()).await?;
        let engine = self.engine.clone();
        let agent_id = hello.agent_id.clone();
        let mut shutdown = self.shutdown.clone();
        let results = self.results.clone();
        let live = self.live.clone();
        tokio::spawn(async move {
            let _stream_guard = stream_guard;
            let ended = principal.ended();
            tokio::pin!(ended);
            loop {
                let received = tokio::select! {
                    received = inbound.message() => received,
                    _ = shutdown.wait_for(|s| *s) => break,
                    status = &mut ended => {
                        tracing::info!(agent = %agent_id, token = %principal.name, %status, "agent stream closed: token no longer valid");
                        let _ = tx.send(Err(status));
                        break;
                    }
                    // The answer stream ended: the agent went away, or a new
                    // connection with its id replaced this one.
                    _ = tx.closed() => break,
                };
                let message = match received {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(agent = %agent_id, %status, "agent stream error");
                        break;
                    }
                };
                match message.msg {
                    Some(agent_message::Msg::Pull(pull)) => engine.add_credits(&agent_id, connection, pull.credits),
                    Some(agent_message::Msg::Heartbeat(hb)) => engine.renew_leases(&agent_id, &hb.in_flight),
                    Some(agent_message::Msg::Started(started)) => engine.renew_leases(
                        &agent_id,
                        &[InFlight {
                            run_id: started.run_id,
                            attempt: started.attempt,
                        }],
                    ),
                    // Chunks are taken in stream order, before the attempt's
                    // Finished: the buffer is complete when that arrives.
                    Some(agent_message::Msg::Output(output)) => {
                        live.accept(&agent_id, output).await;
                    }
                    Some(agent_message::Msg::Finished(finished)) => {
                        live.finished(&agent_id, &finished.run_id, finished.attempt);
                        let message = ResultMessage {
                            agent_id: agent_id.clone(),
                            finished,
                            reply: tx.clone(),
                        };
                        if results.send(message).is_err() {
                            break; // shutting down
                        }
                    }
                    Some(agent_message::Msg::Hello(_)) => {
                        let _ = tx.send(Err(Status::invalid_argument("hello: sent twice on one stream")));
                        break;
                    }
                    None => {}
                }
            }
            engine.agent_disconnected(&agent_id, connection).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
