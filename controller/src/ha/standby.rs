//! The gRPC server of a standby: health, the unary calls of the controller
//! and catalog services relayed to the leader through the store
//! (`relay.rs`), and one answer for the rest (streams and the agents'
//! `Connect`): `UNAVAILABLE`, naming the leader.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use super::relay::{Relayer, relayable, status_response};
use crate::auth::Tokens;
use crate::store::LeaseRecord;

/// The lease as a standby last read it, and when.
#[derive(Debug, Clone)]
pub struct SeenLease {
    /// The lease row.
    pub lease: LeaseRecord,
    /// When it was read (by this process's clock).
    pub read_at: std::time::Instant,
}

impl SeenLease {
    /// Whether the lease still holds now: it held when read, for longer than
    /// the time since (a dead leader is not named once its lease ran out,
    /// even before the next read).
    pub fn holds(&self) -> bool {
        let left_ms = self.lease.expires_at - self.lease.database_now;
        self.lease.is_held() && u128::try_from(left_ms).unwrap_or(0) > self.read_at.elapsed().as_millis()
    }
}

/// The status a standby answers every Worker call with: `UNAVAILABLE`, the
/// leader's address in the message and, when a controller leads, in the
/// [`worker_proto::LEADER_HEADER`] header.
pub fn standby_status(seen: Option<&SeenLease>) -> tonic::Status {
    match seen
        .filter(|s| s.holds() && !s.lease.address.is_empty())
        .map(|s| &s.lease)
    {
        Some(lease) => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(value) = lease.address.parse() {
                metadata.insert(worker_proto::LEADER_HEADER, value);
            }
            tonic::Status::with_metadata(
                tonic::Code::Unavailable,
                format!(
                    "standby: this controller does not lead; the leader is at {} (epoch {})",
                    lease.address, lease.epoch
                ),
                metadata,
            )
        }
        None => tonic::Status::unavailable("standby: this controller does not lead; no leader is known yet"),
    }
}

/// Serves the standby's gRPC on `listener` until `stop` completes: gRPC
/// health (`SERVING` for the controller and catalog services, which
/// `relayer` relays, `NOT_SERVING` for the agent service), every call
/// authenticated against `tokens`, and the [`standby_status`] answer, from
/// what `seen` holds at the time of the call, for what is not relayed.
pub async fn serve_standby(
    listener: TcpListener,
    tls: Option<&crate::tls::ServerTls>,
    tokens: Arc<Tokens>,
    relayer: Relayer,
    seen: watch::Receiver<Option<SeenLease>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for (service, status) in [
        ("worker.v1.ControllerService", tonic_health::ServingStatus::Serving),
        ("worker.v1.CatalogService", tonic_health::ServingStatus::Serving),
        ("worker.v1.AgentService", tonic_health::ServingStatus::NotServing),
    ] {
        health_reporter.set_service_status(service, status).await;
    }
    let router = tonic::service::Routes::new(health_service).into_axum_router().fallback(
        move |request: axum::extract::Request| {
            let (relayer, seen) = (relayer.clone(), seen.clone());
            async move {
                if relayable(request.uri().path()) {
                    relayer.relay(request).await
                } else {
                    status_response(standby_status(seen.borrow().as_ref()))
                }
            }
        },
    );
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.server_config())?;
    }
    server
        .layer(crate::auth::AuthLayer::new(tokens))
        .add_routes(router.into())
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(30))),
            stop,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(expires_at: i64) -> SeenLease {
        SeenLease {
            read_at: std::time::Instant::now(),
            lease: LeaseRecord {
                epoch: 3,
                holder: "b-12".into(),
                address: "http://10.0.0.2:7070".into(),
                acquired_at: 1_000,
                renewed_at: 2_000,
                expires_at,
                database_now: 2_500,
            },
        }
    }

    #[test]
    fn a_standby_names_the_leader_while_its_lease_holds() {
        let status = standby_status(Some(&lease(7_000)));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .contains("the leader is at http://10.0.0.2:7070 (epoch 3)")
        );
        assert_eq!(
            status.metadata().get(worker_proto::LEADER_HEADER).unwrap(),
            "http://10.0.0.2:7070"
        );
        // An expired lease names nobody.
        let status = standby_status(Some(&lease(2_000)));
        assert!(status.message().ends_with("no leader is known yet"));
        assert!(status.metadata().get(worker_proto::LEADER_HEADER).is_none());
        assert!(standby_status(None).message().ends_with("no leader is known yet"));
        // Read 3 s ago with 2 s left: run out since.
        let mut old = lease(4_500);
        old.read_at = std::time::Instant::now() - std::time::Duration::from_secs(3);
        assert!(standby_status(Some(&old)).message().ends_with("no leader is known yet"));
    }
}
