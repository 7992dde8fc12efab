//! Sends every call to the leading controller of a list of addresses.
//!
//! [`LeaderChannel`] is the transport under the generated clients: one lazily
//! connected [`Channel`] per address. With one address it passes each call
//! straight through (as `workerctl` always did). With several it buffers the
//! request body (a `workerctl` request is finite) and sends it to the address
//! that answered last; when that address cannot be connected to, or answers
//! as a standby (`UNAVAILABLE`, `standby: ...`, the leader's URL in
//! [`worker_proto::LEADER_HEADER`]), it re-sends the same bytes to the leader
//! named, or else to the next address: one pass over the list plus one hint
//! ([`worker_agent::controllers::Pass`]). A call that failed after reaching a
//! controller is not re-sent: it may have taken effect.

use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::{BodyExt as _, Full};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Context, Poll, Service, StdError};
use tonic::transport::Channel;
use worker_agent::controllers::{self, Pass, error_chain};

use crate::error::CliError;

/// How the summary of a call no controller took starts (printed as is).
pub const NO_LEADER: &str = "no controller took the call";

/// The future of a call.
type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, StdError>> + Send>>;

/// Builds the channel of an address (the leader a standby named).
type MakeChannel = Box<dyn Fn(&str) -> Result<Channel, CliError> + Send + Sync>;

/// A gRPC transport that finds the leader among several controller addresses.
#[derive(Clone)]
pub struct LeaderChannel {
    shared: Arc<Shared>,
}

struct Shared {
    targets: Mutex<Targets>,
    make: MakeChannel,
}

/// The configured addresses first, then leaders named outside them.
struct Targets {
    all: Vec<(String, Channel)>,
    listed: usize,
    /// The one that answered last.
    current: usize,
}

impl LeaderChannel {
    /// A transport over `urls` (normalized, at least one), each connected
    /// lazily with `make`, which also builds the channel of a leader that a
    /// standby names.
    pub fn new(
        urls: &[String],
        make: impl Fn(&str) -> Result<Channel, CliError> + Send + Sync + 'static,
    ) -> Result<Self, CliError> {
        let all = urls
            .iter()
            .map(|url| Ok((url.clone(), make(url)?)))
            .collect::<Result<Vec<_>, CliError>>()?;
        Ok(Self {
            shared: Arc::new(Shared {
                targets: Mutex::new(Targets {
                    listed: all.len(),
                    all,
                    current: 0,
                }),
                make: Box::new(make),
            }),
        })
    }

    /// The address that answered last (the first before any call).
    pub fn current(&self) -> String {
        let targets = self.shared.lock();
        targets.all[targets.current].0.clone()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index of `url`, its channel built when it is new.
    fn index_of(&self, url: &str) -> Result<usize, String> {
        let url = controllers::check_url(url)?;
        if let Some(index) = self.lock().all.iter().position(|(u, _)| *u == url) {
            return Ok(index);
        }
        let channel = (self.make)(&url).map_err(|e| e.message)?;
        let mut targets = self.lock();
        targets.all.push((url, channel));
        Ok(targets.all.len() - 1)
    }

    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, StdError> {
        let (listed, start, first) = {
            let targets = self.lock();
            (targets.listed, targets.current, targets.all[targets.current].1.clone())
        };
        if listed == 1 && start == 0 {
            return call(first, request).await;
        }
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let mut pass = Pass::new(listed, start);
        let mut failures = Vec::new();
        while let Some(index) = pass.next() {
            let (url, channel) = self.lock().all[index].clone();
            let request = Request::from_parts(parts.clone(), Body::new(Full::new(bytes.clone())));
            match call(channel, request).await {
                Ok(response) => match standby(&response) {
                    None => {
                        self.lock().current = index;
                        return Ok(response);
                    }
                    Some((message, leader)) => {
                        let mut why = message;
                        if let Some(leader) = leader {
                            match self.index_of(&leader) {
                                Ok(index) => {
                                    pass.hint(index);
                                }
                                Err(error) => why.push_str(&format!(" (cannot use that address: {error})")),
                            }
                        }
                        failures.push(format!("{url}: {why}"));
                    }
                },
                Err(error) if is_connect_error(&*error) => failures.push(format!("{url}: {}", error_chain(&*error))),
                Err(error) => return Err(error),
            }
        }
        Err(Box::new(tonic::Status::unavailable(format!(
            "{NO_LEADER}: {}",
            failures.join("; ")
        ))))
    }
}

impl Service<Request<Body>> for LeaderChannel {
    type Response = Response<Body>;
    type Error = StdError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its channel's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.send(request).await })
    }
}

/// Sends `request` on `channel` once it is ready.
async fn call(mut channel: Channel, request: Request<Body>) -> Result<Response<Body>, StdError> {
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    Ok(channel.call(request).await?)
}

/// The message and leader hint of a standby's answer; `None` for any other.
fn standby(response: &Response<Body>) -> Option<(String, Option<String>)> {
    let headers = response.headers();
    if headers.get("grpc-status")?.as_bytes() != b"14" {
        return None;
    }
    let leader = headers
        .get(worker_proto::LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(controllers::normalize);
    // Only the status and message: a malformed details header must not matter.
    let mut status = tonic::codegen::http::HeaderMap::new();
    for name in ["grpc-status", "grpc-message"] {
        if let Some(value) = headers.get(name) {
            status.insert(name, value.clone());
        }
    }
    let message = tonic::Status::from_header_map(&status)?.message().to_string();
    (leader.is_some() || message.starts_with(controllers::STANDBY_PREFIX)).then_some((message, leader))
}

/// Whether `error` happened while connecting: the call never reached a
/// controller, so sending it elsewhere cannot run it twice.
fn is_connect_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use worker_proto::v1::ListJobsRequest;
    use worker_proto::v1::controller_service_client::ControllerServiceClient;

    use super::*;

    /// A loopback address where nothing listens.
    fn refused() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    fn lazy(url: &str) -> Result<Channel, CliError> {
        Ok(tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| CliError::usage(e.to_string()))?
            .connect_lazy())
    }

    #[tokio::test]
    async fn a_call_no_address_takes_says_why_for_each_in_order() {
        let (a, b) = (refused(), refused());
        let channel = LeaderChannel::new(&[a.clone(), b.clone()], lazy).unwrap();
        let status = ControllerServiceClient::new(channel.clone())
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let message = status.message();
        assert!(message.starts_with(NO_LEADER), "{message}");
        let (at_a, at_b) = (
            message.find(&format!("{a}: ")).unwrap(),
            message.find(&format!("{b}: ")).unwrap(),
        );
        assert!(at_a < at_b, "{message}");
        assert!(message.contains("onnection refused"), "{message}");
        assert_eq!(channel.current(), a, "nothing answered: the first stays first");
    }

    #[tokio::test]
    async fn one_address_is_passed_through() {
        let a = refused();
        let channel = LeaderChannel::new(std::slice::from_ref(&a), lazy).unwrap();
        let status = ControllerServiceClient::new(channel)
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap_err();
        // The transport's own status, as without a list.
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().starts_with(NO_LEADER), "{}", status.message());
    }
}
