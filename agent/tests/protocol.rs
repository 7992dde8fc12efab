//! The agent against a scripted fake controller: handshake, credits,
//! assignments, cancel, Ack bookkeeping across a reconnect, and drain.
//!
//! The fake controller hands every accepted stream to the test, which then
//! plays the controller's side message by message.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use worker_agent::AgentConfig;
use worker_proto::v1::agent_message::Msg as Out;
use worker_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use worker_proto::v1::controller_message::Msg as In;
use worker_proto::v1::executor_spec::Kind;
use worker_proto::v1::{
    Ack, AgentMessage, Assignment, BuiltinSpec, Cancel, ControllerMessage, Drain, ExecutorSpec, Welcome,
};

/// One accepted `Connect` stream, seen from the controller's side.
struct Peer {
    inbound: Streaming<AgentMessage>,
    outbound: mpsc::Sender<Result<ControllerMessage, Status>>,
    authorization: Option<String>,
}

impl Peer {
    async fn send(&self, msg: In) {
        self.outbound
            .send(Ok(ControllerMessage { msg: Some(msg) }))
            .await
            .unwrap();
    }

    /// The next message other than a heartbeat or live output (panics after 3 s).
    async fn recv(&mut self) -> Out {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .expect("an agent message other than a heartbeat within 3 s")
                .expect("stream ok")
                .expect("stream open")
                .msg
                .expect("message set");
            if !matches!(msg, Out::Heartbeat(_) | Out::Output(_)) {
                return msg;
            }
        }
    }
}

struct FakeController {
    peers: mpsc::Sender<Peer>,
    /// Once set, the controller is a standby that names this leader.
    standby_for: Arc<Mutex<Option<String>>>,
}

#[tonic::async_trait]
impl AgentService for FakeController {
    type ConnectStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<ControllerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if let Some(leader) = self.standby_for.lock().unwrap().clone() {
            let mut status = Status::unavailable(format!(
                "standby: this controller does not lead; the leader is at {leader}"
            ));
            status
                .metadata_mut()
                .insert(worker_proto::LEADER_HEADER, leader.parse().unwrap());
            return Err(status);
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let (tx, rx) = mpsc::channel(16);
        let peer = Peer {
            inbound: request.into_inner(),
            outbound: tx,
            authorization,
        };
        self.peers
            .send(peer)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Starts a fake controller; returns its URL and the stream of accepted peers.
async fn fake_controller() -> (String, mpsc::Receiver<Peer>) {
    let (url, peers, _) = fake_controller_with_role().await;
    (url, peers)
}

/// [`fake_controller`], and the switch that turns it into a standby naming
/// a leader.
async fn fake_controller_with_role() -> (String, mpsc::Receiver<Peer>, Arc<Mutex<Option<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(4);
    let standby_for = Arc::new(Mutex::new(None));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(FakeController {
                peers: tx,
                standby_for: standby_for.clone(),
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx, standby_for)
}

async fn next_peer(peers: &mut mpsc::Receiver<Peer>) -> Peer {
    tokio::time::timeout(Duration::from_secs(3), peers.recv())
        .await
        .expect("agent connects")
        .unwrap()
}

/// Reads Hello, answers Welcome, and returns the Hello.
async fn handshake(peer: &mut Peer) -> worker_proto::v1::Hello {
    let Out::Hello(hello) = peer.recv().await else {
        panic!("expected Hello")
    };
    peer.send(In::Welcome(Welcome {
        heartbeat_interval_ms: 100,
        lease_timeout_ms: 1000,
    }))
    .await;
    hello
}

fn builtin(run_id: &str, name: &str, duration: &str) -> In {
    In::Assignment(Assignment {
        run_id: run_id.into(),
        attempt: 1,
        job: "test.job".into(),
        executor: Some(ExecutorSpec {
            kind: Some(Kind::Builtin(BuiltinSpec {
                name: name.into(),
                args: [("duration".to_string(), duration.to_string())].into(),
            })),
        }),
        ..Default::default()
    })
}

fn ack(run_id: &str) -> In {
    In::Ack(Ack {
        run_id: run_id.into(),
        attempt: 1,
        accepted: true,
        reason: String::new(),
    })
}

fn config(url: &str) -> AgentConfig {
    let mut config = AgentConfig::new(url);
    config.name = "test-agent".into();
    config.capacity = 2;
    config.labels = [("region".to_string(), "eu".to_string())].into();
    config.token = Some("secret".into());
    config.drain_grace = Duration::from_millis(200);
    config.kill_grace = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn assignments_credits_cancel_and_shutdown() {
    let (url, mut peers) = fake_controller().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(worker_agent::run(config(&url), async move {
        let _ = stop_rx.await;
    }));

    let mut peer = next_peer(&mut peers).await;
    assert_eq!(peer.authorization.as_deref(), Some("Bearer secret"));
    let hello = handshake(&mut peer).await;
    assert_eq!(hello.name, "test-agent");
    assert_eq!(hello.capacity, 2);
    assert_eq!(hello.labels["region"], "eu");
    assert_eq!(hello.executors, ["shell", "http", "builtin"]);
    assert!(ulid::Ulid::from_string(&hello.agent_id).is_ok());
    assert!(hello.in_flight.is_empty());
    assert!(matches!(peer.recv().await, Out::Pull(p) if p.credits == 2));

    // A quick builtin: Started, Finished, one credit back.
    peer.send(builtin("r1", "noop", "")).await;
    assert!(matches!(peer.recv().await, Out::Started(s) if s.run_id == "r1" && !s.started_at.is_empty()));
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished")
    };
    assert_eq!(
        (f.run_id.as_str(), f.outcome.as_str(), f.output_tail.as_str()),
        ("r1", "succeeded", "noop")
    );
    assert!(matches!(peer.recv().await, Out::Pull(p) if p.credits == 1));
    peer.send(ack("r1")).await;

    // A long one, cancelled; heartbeats name it while it runs.
    peer.send(builtin("r2", "sleep", "1h")).await;
    assert!(matches!(peer.recv().await, Out::Started(s) if s.run_id == "r2"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let beat = loop {
        let msg = tokio::time::timeout_at(deadline, peer.inbound.message())
            .await
            .expect("a heartbeat within 3 s")
            .unwrap()
            .unwrap()
            .msg
            .unwrap();
        if let Out::Heartbeat(beat) = msg {
            break beat;
        }
    };
    assert_eq!(beat.in_flight.len(), 1);
    assert_eq!(beat.in_flight[0].run_id, "r2");
    peer.send(In::Cancel(Cancel {
        run_id: "r2".into(),
        attempt: 1,
    }))
    .await;
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished")
    };
    assert_eq!((f.run_id.as_str(), f.outcome.as_str()), ("r2", "cancelled"));
    assert!(matches!(peer.recv().await, Out::Pull(p) if p.credits == 1));
    peer.send(ack("r2")).await;

    // Nothing in flight, nothing unacked: shutdown returns promptly.
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .expect("agent stops");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn unacked_results_are_resent_after_reconnect() {
    let (url, mut peers) = fake_controller().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(worker_agent::run(config(&url), async move {
        let _ = stop_rx.await;
    }));

    let mut peer = next_peer(&mut peers).await;
    let first = handshake(&mut peer).await;
    assert!(matches!(peer.recv().await, Out::Pull(p) if p.credits == 2));
    peer.send(builtin("r1", "noop", "")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    assert!(matches!(peer.recv().await, Out::Finished(f) if f.run_id == "r1"));
    assert!(matches!(peer.recv().await, Out::Pull(_)));
    // Also leave one attempt running across the reconnect.
    peer.send(builtin("r2", "sleep", "1h")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    drop(peer); // the stream breaks without an Ack

    let mut peer = next_peer(&mut peers).await;
    let second = handshake(&mut peer).await;
    assert_eq!(second.agent_id, first.agent_id, "same process, same id");
    assert_eq!(second.in_flight.len(), 1);
    assert_eq!(second.in_flight[0].run_id, "r2");
    assert!(matches!(peer.recv().await, Out::Finished(f) if f.run_id == "r1" && f.outcome == "succeeded"));
    assert!(
        matches!(peer.recv().await, Out::Pull(p) if p.credits == 1),
        "one slot is busy"
    );
    peer.send(ack("r1")).await;

    // Shutdown: r2 is cancelled after the drain grace and reported; no more Pulls.
    stop_tx.send(()).unwrap();
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished")
    };
    assert_eq!((f.run_id.as_str(), f.outcome.as_str()), ("r2", "cancelled"));
    peer.send(ack("r2")).await;
    let result = tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .expect("agent stops");
    result.unwrap().unwrap();
}

/// The controller the agent is connected to loses the lead: its stream
/// breaks and it now answers as a standby naming another controller (outside
/// the agent's list). The agent goes there with the same Hello a reconnect to
/// the same address sends (same id, the running attempt in flight) and
/// re-sends the unacknowledged result there.
#[tokio::test]
async fn attempts_and_results_move_to_the_leader_a_standby_names() {
    let (old_url, mut old_peers, standby_for) = fake_controller_with_role().await;
    let (new_url, mut new_peers) = fake_controller().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Nothing listens at the first address: the agent goes on to the second.
    let agent = tokio::spawn(worker_agent::run(config(&format!("{dead},{old_url}")), async move {
        let _ = stop_rx.await;
    }));

    let mut peer = next_peer(&mut old_peers).await;
    let first = handshake(&mut peer).await;
    assert!(matches!(peer.recv().await, Out::Pull(p) if p.credits == 2));
    peer.send(builtin("r1", "noop", "")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    assert!(matches!(peer.recv().await, Out::Finished(f) if f.run_id == "r1"));
    assert!(matches!(peer.recv().await, Out::Pull(_)));
    peer.send(builtin("r2", "sleep", "1h")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    *standby_for.lock().unwrap() = Some(new_url.clone());
    drop(peer); // the stream breaks without an Ack

    let mut peer = next_peer(&mut new_peers).await;
    assert_eq!(peer.authorization.as_deref(), Some("Bearer secret"), "same token");
    let second = handshake(&mut peer).await;
    assert_eq!(second.agent_id, first.agent_id, "same process, same id");
    assert_eq!(
        (second.name.as_str(), second.capacity, &second.labels, &second.executors),
        (first.name.as_str(), first.capacity, &first.labels, &first.executors)
    );
    assert_eq!(second.in_flight.len(), 1);
    assert_eq!(
        (second.in_flight[0].run_id.as_str(), second.in_flight[0].attempt),
        ("r2", 1)
    );
    assert!(matches!(peer.recv().await, Out::Finished(f) if f.run_id == "r1" && f.outcome == "succeeded"));
    assert!(
        matches!(peer.recv().await, Out::Pull(p) if p.credits == 1),
        "one slot is busy"
    );
    peer.send(ack("r1")).await;

    stop_tx.send(()).unwrap();
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished")
    };
    assert_eq!((f.run_id.as_str(), f.outcome.as_str()), ("r2", "cancelled"));
    peer.send(ack("r2")).await;
    let result = tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .expect("agent stops");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn controller_drain_lets_work_finish() {
    let (url, mut peers) = fake_controller().await;
    let mut config = config(&url);
    config.drain_grace = Duration::from_secs(5);
    let agent = tokio::spawn(worker_agent::run(config, std::future::pending()));

    let mut peer = next_peer(&mut peers).await;
    handshake(&mut peer).await;
    assert!(matches!(peer.recv().await, Out::Pull(_)));
    peer.send(builtin("r1", "sleep", "200ms")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    peer.send(In::Drain(Drain {})).await;
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished, not a Pull")
    };
    assert_eq!(f.outcome, "succeeded", "in-flight work finishes within the grace");
    peer.send(ack("r1")).await;
    let result = tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .expect("agent stops");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn disabled_executor_is_a_permanent_failure() {
    let (url, mut peers) = fake_controller().await;
    let mut config = config(&url);
    config.executors = vec!["shell".into()];
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(worker_agent::run(config, async move {
        let _ = stop_rx.await;
    }));
    let mut peer = next_peer(&mut peers).await;
    handshake(&mut peer).await;
    assert!(matches!(peer.recv().await, Out::Pull(_)));
    peer.send(builtin("r1", "noop", "")).await;
    assert!(matches!(peer.recv().await, Out::Started(_)));
    let Out::Finished(f) = peer.recv().await else {
        panic!("expected Finished")
    };
    assert_eq!(f.outcome, "failed");
    assert!(f.permanent);
    assert!(f.error.contains("builtin"), "{}", f.error);
    peer.send(ack("r1")).await;
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn invalid_config_is_rejected_up_front() {
    let mut config = AgentConfig::new("http://127.0.0.1:1");
    config.capacity = 0;
    let err = worker_agent::run(config, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("capacity"), "{err}");
}

#[tokio::test]
async fn live_output_is_batched_and_sent_before_finished() {
    let (url, mut peers) = fake_controller().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(worker_agent::run(config(&url), async move {
        let _ = stop_rx.await;
    }));
    let mut peer = next_peer(&mut peers).await;
    handshake(&mut peer).await;
    assert!(matches!(peer.recv().await, Out::Pull(_)));
    // 200 small writes, then a pause (a chunk goes out while the job runs),
    // then the last line.
    peer.send(In::Assignment(Assignment {
        run_id: "r1".into(),
        attempt: 1,
        job: "test.job".into(),
        executor: Some(ExecutorSpec {
            kind: Some(Kind::Shell(worker_proto::v1::ShellSpec {
                script: "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done; sleep 0.5; echo last".into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }))
    .await;
    let mut outputs = Vec::new();
    let finished = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), peer.inbound.message())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .unwrap()
            .msg
            .unwrap();
        match msg {
            Out::Output(output) => outputs.push(output),
            Out::Finished(finished) => break finished,
            _ => {}
        }
    };
    assert_eq!(finished.outcome, "succeeded");
    let seqs: Vec<u64> = outputs.iter().map(|o| o.seq).collect();
    assert_eq!(seqs, (1..=outputs.len() as u64).collect::<Vec<_>>());
    assert!(outputs.iter().all(|o| o.run_id == "r1" && o.attempt == 1));
    // Batched: far fewer messages than writes; the pause splits them.
    assert!((2..=10).contains(&outputs.len()), "{} Output messages", outputs.len());
    let streamed: Vec<u8> = outputs.into_iter().flat_map(|o| o.data).collect();
    assert_eq!(String::from_utf8(streamed).unwrap(), finished.output_tail);
    peer.send(ack("r1")).await;
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
