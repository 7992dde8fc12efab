//! The gRPC services: [`controller::ControllerApi`] for clients and
//! [`agent::AgentApi`] for agents, plus conversions in [`convert`] and the
//! alerting part of the client service in [`alerts`], resumable event watches
//! in [`events`], its token calls in [`tokens`], `FollowRunOutput` in
//! [`logs`], the store snapshot of backups in [`snapshot`]; [`limits`] bounds what a request may cost (parsing off the
//! serving threads, pages, reply bytes, ids).

pub mod agent;
pub mod alerts;
pub mod controller;
pub mod convert;
mod digest;
pub mod events;
pub mod limits;
pub mod logs;
pub mod snapshot;
pub mod tokens;
