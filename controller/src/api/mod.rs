//! The gRPC services: [`controller::ControllerApi`] for clients and
//! [`agent::AgentApi`] for agents, plus conversions in [`convert`].

pub mod agent;
pub mod controller;
pub mod convert;
