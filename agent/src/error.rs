//! The library's error type.
//!
//! Only problems the caller can act on surface as errors: a bad configuration or
//! controller address. Connection failures never do — the agent retries them
//! forever, and a job's failure is a result reported to the controller, not an
//! error of the agent.

/// Why [`run`](crate::run) could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid; the message names the offending field.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The controller address is not a usable URL.
    #[error("invalid controller address `{url}`: {source}")]
    InvalidController {
        /// The address as configured.
        url: String,
        /// Why tonic rejected it.
        #[source]
        source: tonic::transport::Error,
    },
}
