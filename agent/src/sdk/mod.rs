//! The SDK: an application registers typed handlers by name and runs as an
//! agent.
//!
//! A job whose definition says `handler: leads.enrich` is assigned only to an
//! agent that registered `leads.enrich` (its `Hello` lists the names, with
//! the executor `handler`). The application builds such an agent with
//! [`Agent::builder`], registers handlers with [`AgentBuilder::handler`], and
//! calls [`Agent::run`], which is the same event loop as `worker-agent`'s —
//! connection, `Pull` credits up to the capacity, leases and heartbeats,
//! reconnects that keep running attempts, and the drain on shutdown.
//!
//! ```no_run
//! use serde::Deserialize;
//! use worker_agent::{Agent, HandlerContext, HandlerError};
//!
//! #[derive(Deserialize)]
//! struct Lead {
//!     lead_id: String,
//! }
//!
//! async fn enrich(ctx: HandlerContext, lead: Lead) -> Result<(), HandlerError> {
//!     let _fetch = ctx.span("fetch");
//!     ctx.log(format!("enriching {}", lead.lead_id));
//!     ctx.metric("items", 1);
//!     Ok(())
//! }
//!
//! # async fn example() -> Result<(), worker_agent::AgentError> {
//! Agent::builder("http://127.0.0.1:7070")
//!     .name("enricher")
//!     .capacity(8)
//!     .handler("leads.enrich", enrich)
//!     .build()?
//!     .run(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! # Layout
//!
//! * `builder.rs` — [`Agent`] and [`AgentBuilder`]: settings
//!   (an [`AgentConfig`](crate::AgentConfig) plus setters), registration,
//!   the checks of `build()`, `run()`;
//! * [`Handlers`] (`registry.rs`) — the registered handlers by name,
//!   type-erased: each parses its payload into its own type;
//! * [`HandlerContext`] (`context.rs`) — what a running handler gets: the
//!   attempt's ids, the stop signal ([`HandlerContext::cancelled`]), output
//!   ([`HandlerContext::log`]), metrics and spans;
//! * [`HandlerError`] (`error.rs`) — retryable or permanent failure.
//!
//! Running an attempt is the executor's business, in
//! [`crate::executor::handler`]: the handler runs on its own task; when the
//! attempt is cancelled or times out its context's `cancelled()` fires and it
//! has the kill grace to return before it is aborted; a panic is a retryable
//! failure.
//!
//! # Why this shape
//!
//! The SDK adds handlers to the agent rather than a second agent beside it:
//! one loop means the guarantees `worker-agent` has (results kept until
//! acknowledged, at most `capacity` attempts, a drain that reports) hold for
//! handlers without being written twice. Payloads are typed through serde so
//! that a malformed payload fails once, permanently, before any handler code
//! runs, instead of being parsed (and mis-parsed) by every handler.

mod builder;
mod context;
mod error;
mod registry;

pub use builder::{Agent, AgentBuilder};
pub use context::{HandlerContext, SpanGuard, StopReason};
pub use error::HandlerError;
pub use registry::{Handlers, MAX_HANDLER_NAME, MAX_HANDLERS, valid_handler_name};
