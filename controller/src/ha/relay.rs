//! Calls a standby accepts for the leader, through the store.
//!
//! A standby answers `workerctl`, the web UI's API clients and applications
//! like the leader does: it authenticates the call (the same tokens, read
//! from the store), writes it to `relayed_calls` as it came (path, headers
//! without the token, framed body) with the token's name, and notifies the
//! leader (`LISTEN worker_relay`). The leader claims pending calls in a
//! fenced write, so only the leading epoch runs them, runs each through its
//! own services as that token, and writes the gRPC answer back
//! (`NOTIFY worker_relay_done`). The standby replays it to the client byte
//! for byte. Both sides also poll, so a lost notification costs at most a
//! poll interval.
//!
//! Every unary call of the controller and catalog services is relayed:
//! reads, enqueues (single and batch) and management. Their validation,
//! idempotency keys and answers are the leader's, so a client cannot tell a
//! standby from the leader except by latency (two store round trips and a
//! notification). Streams (`WatchEvents`, `FollowRunOutput`,
//! `SnapshotStore`) and the agents' `Connect` are not relayed: a standby
//! answers them `UNAVAILABLE` naming the leader (`standby.rs`).
//!
//! A call runs once or not at all:
//!
//! * while no leader has claimed it, the standby may withdraw it (an update
//!   that only succeeds on a pending row): after [`PENDING_LIMIT`] without a
//!   leader, or when its client goes away. A withdrawn call never runs and the
//!   client is told so;
//! * once claimed, the standby waits for the answer. If the claiming leader
//!   is replaced before it answers, the client is told that the call may have
//!   taken effect (as with any call to a server that died mid-call); an
//!   enqueue with an idempotency key is then safe to repeat.
//!
//! During a failover a call to a standby waits (up to [`PENDING_LIMIT`]) for
//! the next leader instead of failing: the store holds it meanwhile.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::{BodyExt, Full};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tonic::codegen::http;

use super::standby::SeenLease;
use crate::auth::{Principal, Tokens};
use crate::store::{RELAY_CHANNEL, RELAY_DONE_CHANNEL, RelayAnswer, RelayState, RelayedCall, Store, WriteError};

/// How long a relayed call waits for a leader to claim it before the standby
/// withdraws it: longer than a failover takes (a new leader within 10 s).
pub const PENDING_LIMIT: Duration = Duration::from_secs(30);
/// How often each side looks at the store when no notification came.
const POLL: Duration = Duration::from_millis(500);
/// Calls the leader claims per statement.
const CLAIM_BATCH: i64 = 64;
/// How long answered and withdrawn calls stay in the store.
const KEEP_MS: i64 = 3_600_000;
/// How often the leader deletes old calls.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The server-streaming methods: answered by the leader only.
const STREAMS: &[&str] = &[
    "/worker.v1.ControllerService/WatchEvents",
    "/worker.v1.ControllerService/FollowRunOutput",
    "/worker.v1.ControllerService/SnapshotStore",
];

/// Whether a standby relays a call to `path` (every unary call of the
/// controller and catalog services).
pub fn relayable(path: &str) -> bool {
    (path.starts_with("/worker.v1.ControllerService/") || path.starts_with("/worker.v1.CatalogService/"))
        && !STREAMS.contains(&path)
}

/// Request headers that are not passed on: the token (the standby checked
/// it; the leader runs the call as its name), the connection's own, and the
/// client's deadline (the standby keeps it).
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "grpc-timeout",
];
/// Response headers that are not stored (the connection's own).
const DROPPED_RESPONSE_HEADERS: &[&str] = &["content-length", "date", "transfer-encoding", "connection"];

fn pairs(map: &http::HeaderMap, dropped: &[&str]) -> Vec<(String, String)> {
    map.iter()
        .filter(|(name, _)| !dropped.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// `status` as a trailers-only gRPC response.
pub fn status_response(status: tonic::Status) -> http::Response<Body> {
    let (parts, ()) = status.into_http::<()>().into_parts();
    http::Response::from_parts(parts, Body::empty())
}

/// The stored answer as an HTTP response: headers, body, trailers.
fn replay(answer: RelayAnswer) -> http::Response<Body> {
    let body = Full::new(Bytes::from(answer.body));
    let body = if answer.trailers.is_empty() {
        Body::new(body)
    } else {
        let trailers = header_map(&answer.trailers);
        Body::new(body.with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) }))
    };
    let mut response = http::Response::new(body);
    *response.headers_mut() = header_map(&answer.headers);
    response
}

/// The standby's side: writes calls to the store and waits for the answers.
#[derive(Clone)]
pub struct Relayer {
    store: Store,
    /// This standby's `--ha-id` (recorded with each call).
    standby: Arc<str>,
    /// Ids of answered calls, from `worker_relay_done`.
    answered: broadcast::Sender<i64>,
    /// The lease as last read (tells when a claiming leader was replaced).
    seen: watch::Receiver<Option<SeenLease>>,
    /// The largest request accepted (the gRPC message limit and its frame).
    body_limit: usize,
}

impl Relayer {
    /// A relayer for the standby `standby`, listening for answers until
    /// `stop` turns true.
    pub fn start(
        store: Store,
        standby: &str,
        seen: watch::Receiver<Option<SeenLease>>,
        stop: watch::Receiver<bool>,
    ) -> Relayer {
        let (answered, _) = broadcast::channel(1024);
        tokio::spawn(forward_answers(store.clone(), answered.clone(), stop));
        Relayer {
            store,
            standby: Arc::from(standby),
            answered,
            seen,
            body_limit: crate::limits::current().grpc_message_bytes.saturating_add(5),
        }
    }

    /// Relays `request` (already authenticated: its [`Principal`] is in the
    /// extensions) and answers with the leader's response, or with
    /// `UNAVAILABLE` saying whether the call took effect.
    pub async fn relay(&self, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let caller = parts
            .extensions
            .get::<Principal>()
            .filter(|p| !p.is_anonymous())
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let body = match axum::body::to_bytes(body, self.body_limit).await {
            Ok(body) => body,
            Err(e) => {
                return status_response(tonic::Status::resource_exhausted(format!(
                    "the request could not be read whole within {} bytes: {e}",
                    self.body_limit
                )));
            }
        };
        let call = RelayedCall {
            id: 0,
            method: parts.uri.path().to_string(),
            caller,
            headers: pairs(&parts.headers, DROPPED_REQUEST_HEADERS),
            body: body.to_vec(),
        };
        // Subscribed before writing: an answer cannot come unseen.
        let mut answered = self.answered.subscribe();
        let id = match self.store.relay_submit(&self.standby, &call).await {
            Ok(id) => id,
            Err(e) => {
                return status_response(tonic::Status::unavailable(format!(
                    "standby: cannot hand the call to the leader through the store: {e}; it did not take effect"
                )));
            }
        };
        let mut withdraw = WithdrawOnDrop {
            store: Some(self.store.clone()),
            id,
        };
        let started = Instant::now();
        let mut claimed_by = None;
        loop {
            let state = self.store.relay_state(id).await;
            match state {
                Ok(RelayState::Done(answer)) => {
                    withdraw.disarm();
                    return replay(answer);
                }
                Ok(RelayState::Withdrawn | RelayState::Missing) => {
                    withdraw.disarm();
                    return status_response(tonic::Status::unavailable(
                        "standby: the call was withdrawn before a leader took it; it did not take effect",
                    ));
                }
                Ok(RelayState::Pending) if started.elapsed() >= PENDING_LIMIT => {
                    if let Ok(true) = self.store.relay_withdraw(id).await {
                        withdraw.disarm();
                        return status_response(tonic::Status::unavailable(format!(
                            "standby: no leader took the call within {}s; it was withdrawn and did not take effect",
                            PENDING_LIMIT.as_secs()
                        )));
                    }
                }
                Ok(RelayState::Pending) => {}
                Ok(RelayState::Running { epoch }) => {
                    withdraw.disarm();
                    claimed_by = Some(epoch);
                    let leading = self.seen.borrow().as_ref().map(|s| s.lease.epoch);
                    if let Some(now) = leading.filter(|now| *now > epoch) {
                        return status_response(tonic::Status::unavailable(format!(
                            "standby: the leader of epoch {epoch} took the call and was replaced (epoch {now} leads) \
                             before it answered; the call may have taken effect"
                        )));
                    }
                }
                Err(e) if started.elapsed() >= PENDING_LIMIT => {
                    let outcome = match claimed_by {
                        Some(_) => "it may have taken effect",
                        None => "it may still run",
                    };
                    return status_response(tonic::Status::unavailable(format!(
                        "standby: cannot read the call's answer from the store: {e}; {outcome}"
                    )));
                }
                Err(e) => tracing::debug!(error = %e, id, "relay: cannot read a call's state; retrying"),
            }
            wait_answered(&mut answered, id, POLL).await;
        }
    }
}

/// Waits until call `id` is announced as answered, or `poll` passes.
async fn wait_answered(answered: &mut broadcast::Receiver<i64>, id: i64, poll: Duration) {
    let _ = tokio::time::timeout(poll, async {
        loop {
            match answered.recv().await {
                Ok(done) if done == id => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

/// Withdraws a call its client no longer waits for, if still pending.
struct WithdrawOnDrop {
    store: Option<Store>,
    id: i64,
}

impl WithdrawOnDrop {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let id = self.id;
            tokio::spawn(async move {
                if let Ok(true) = store.relay_withdraw(id).await {
                    tracing::debug!(id, "relay: the client went away; its call was withdrawn");
                }
            });
        }
    }
}

/// Passes `worker_relay_done` notifications on to `answered` until `stop`.
async fn forward_answers(store: Store, answered: broadcast::Sender<i64>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        match store.listen(RELAY_DONE_CHANNEL).await {
            Ok(mut listener) => loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(notification) => {
                            if let Ok(id) = notification.payload().parse() {
                                let _ = answered.send(id);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "relay: the answers' notifications stopped; polling meanwhile");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            },
            Err(e) => tracing::debug!(error = %e, "relay: cannot listen for answers; polling meanwhile"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The leader's side: claims relayed calls and answers them through
/// `services` (the controller and catalog services, without the auth layer:
/// each call runs as the principal its standby authenticated, checked again
/// against `tokens`), until `stop` turns true or another epoch leads.
pub async fn serve_relayed(store: Store, services: axum::Router, tokens: Arc<Tokens>, mut stop: watch::Receiver<bool>) {
    let mut listener = None;
    let mut pruned_at: Option<Instant> = None;
    while !*stop.borrow() {
        if listener.is_none() {
            listener = match store.listen(RELAY_CHANNEL).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "relay: cannot listen for relayed calls; polling meanwhile");
                    None
                }
            };
        }
        loop {
            match store.relay_claim(CLAIM_BATCH).await {
                Ok(calls) => {
                    let full = calls.len() as i64 == CLAIM_BATCH;
                    for call in calls {
                        tokio::spawn(answer(store.clone(), services.clone(), tokens.clone(), call));
                    }
                    if !full {
                        break;
                    }
                }
                Err(WriteError::Fenced(e)) => {
                    tracing::warn!(error = %e, "relay: fenced; no more relayed calls are taken");
                    // The lease keeper ends the term; wait for the stop.
                    let _ = stop.wait_for(|s| *s).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay: cannot claim relayed calls");
                    break;
                }
            }
        }
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(Instant::now());
            match store.relay_prune(KEEP_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(calls = n, "relay: old relayed calls deleted"),
                Err(e) => tracing::warn!(error = %e, "relay: cannot delete old relayed calls"),
            }
        }
        tokio::select! {
            received = next_notification(&mut listener) => {
                if let Err(e) = received {
                    tracing::debug!(error = %e, "relay: notifications stopped; listening again");
                    listener = None;
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn next_notification(listener: &mut Option<sqlx::postgres::PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// Runs one claimed call and stores its answer.
async fn answer(store: Store, mut services: axum::Router, tokens: Arc<Tokens>, call: RelayedCall) {
    let method = call.method.strip_prefix("/worker.v1.").unwrap_or(&call.method);
    let principal = tokens
        .principal_named(&call.caller, crate::time::now_ms())
        .and_then(|p| p.authorize(method).map(|()| p));
    let response = match principal {
        Err(status) => status_response(status),
        Ok(principal) => {
            let mut request = http::Request::new(Body::from(call.body));
            *request.method_mut() = http::Method::POST;
            *request.headers_mut() = header_map(&call.headers);
            match call.method.parse() {
                Ok(uri) => {
                    *request.uri_mut() = uri;
                    request.extensions_mut().insert(principal);
                    match tower_service::Service::call(&mut services, request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
                Err(_) => status_response(tonic::Status::unimplemented(format!(
                    "not a gRPC path: {:?}",
                    call.method
                ))),
            }
        }
    };
    let (parts, body) = response.into_parts();
    let answer = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().map(|t| pairs(t, &[])).unwrap_or_default();
            RelayAnswer {
                headers: pairs(&parts.headers, DROPPED_RESPONSE_HEADERS),
                body: collected.to_bytes().to_vec(),
                trailers,
            }
        }
        Err(e) => {
            let (parts, _) =
                status_response(tonic::Status::internal(format!("the answer could not be read: {e}"))).into_parts();
            RelayAnswer {
                headers: pairs(&parts.headers, DROPPED_RESPONSE_HEADERS),
                ..Default::default()
            }
        }
    };
    for attempt in 1..=5 {
        match store.relay_finish(call.id, &answer).await {
            Ok(_) => return,
            Err(e) if attempt == 5 => {
                tracing::warn!(error = %e, id = call.id, "relay: cannot store an answer; its standby will say the outcome is unknown")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_calls_are_relayed_and_streams_are_not() {
        assert!(relayable("/worker.v1.ControllerService/Enqueue"));
        assert!(relayable("/worker.v1.ControllerService/ListJobs"));
        assert!(relayable("/worker.v1.CatalogService/InstallPack"));
        for path in STREAMS {
            assert!(!relayable(path), "{path}");
        }
        assert!(!relayable("/worker.v1.AgentService/Connect"));
        assert!(!relayable("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn the_streams_listed_are_every_streaming_method_of_the_relayed_services() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(worker_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut streaming = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let name = service.name();
                if name != "ControllerService" && name != "CatalogService" {
                    continue;
                }
                for method in &service.method {
                    if method.server_streaming() || method.client_streaming() {
                        streaming.push(format!("/worker.v1.{name}/{}", method.name()));
                    }
                }
            }
        }
        streaming.sort();
        let mut listed: Vec<String> = STREAMS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(streaming, listed);
    }

    #[test]
    fn headers_survive_the_store_and_the_token_does_not() {
        let mut map = http::HeaderMap::new();
        map.insert("authorization", "Bearer wk_secret".parse().unwrap());
        map.insert("content-type", "application/grpc".parse().unwrap());
        map.insert("x-idempotency", "abc".parse().unwrap());
        map.append("x-idempotency", "def".parse().unwrap());
        let kept = pairs(&map, DROPPED_REQUEST_HEADERS);
        assert!(kept.iter().all(|(n, _)| n != "authorization"));
        let back = header_map(&kept);
        assert_eq!(back.get("content-type").unwrap(), "application/grpc");
        assert_eq!(back.get_all("x-idempotency").iter().count(), 2);
    }
}
