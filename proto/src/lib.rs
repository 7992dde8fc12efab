//! The gRPC contract of Worker, package `worker.v1`.
//!
//! * `ControllerService`: what `workerctl`, the web UI and other applications use to
//!   manage jobs and enqueue runs.
//! * `AgentService`: the stream-pull protocol between agents and the controller
//!   (`docs/architecture.md#the-agent-protocol`): `Hello`/`Welcome`, `Pull`
//!   credits, `Assignment`, `Started`, `Heartbeat`, `Finished`, `Ack`, `Cancel`,
//!   `Drain`.
//! * `CatalogService`: the job catalog (`docs/catalog.md`): list, search, show,
//!   publish, install, rate and review job packs.
//!
//! Timestamps are RFC 3339 strings in UTC (empty when unset); durations are
//! milliseconds; priorities, states and outcomes are the lower-case names the
//! controller uses everywhere (its `model.rs`), so the messages read the same
//! in `grpcurl`, JSON and YAML.

#![allow(clippy::all, missing_docs)]

/// Generated messages and services of `worker.v1`.
pub mod v1 {
    tonic::include_proto!("worker.v1");
}

/// Encoded `FileDescriptorSet` of all Worker protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/worker_descriptor.bin"));

/// Response metadata (a header of a trailers-only response) with which a
/// controller that does not lead (a standby) names the leader's advertised
/// URL, e.g. `worker-leader: http://10.0.0.5:7070`, on the calls it does not
/// relay to the leader (streams and the agents' `Connect`). It comes with status
/// `UNAVAILABLE` and a message starting `standby:`; agents and `workerctl`
/// try that URL next.
pub const LEADER_HEADER: &str = "worker-leader";
