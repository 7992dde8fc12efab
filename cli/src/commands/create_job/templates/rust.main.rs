//! `@@crate@@`: an agent built on the Worker agent SDK that runs the handler
//! `@@name@@` (scaffolded by `workerctl create-job --kind rust`).
//!
//! The job's definition in scheduler.yaml says `handler: @@name@@`: its runs go
//! only to agents that registered that name, such as this one.
//!
//! ```sh
//! cargo test                                   # the handler's logic
//! cargo run -- --controller http://127.0.0.1:7070 [--token AGENT_TOKEN]
//! workerctl jobs run @@name@@ --payload '{"items": ["a", "b"]}' --wait
//! ```
//!
//! The work itself is [`process`], a plain function the unit tests call; the
//! handler around it reads the payload, honours cancellation, logs and
//! reports a metric (docs/executors.md, section "handler").

use std::process::ExitCode;

use clap::Parser;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use worker_agent::{Agent, HandlerContext, HandlerError};

/// The handler's name: the `handler:` of the job's definition.
const HANDLER: &str = "@@name@@";

/// An agent that runs the handler `@@name@@`.
#[derive(Debug, Parser)]
#[command(name = "@@crate@@", version, about)]
struct Args {
    /// Controller gRPC address.
    #[arg(long, env = "WORKER_CONTROLLER", default_value = "http://127.0.0.1:7070")]
    controller: String,

    /// Bearer token (role `agent`) for the controller.
    #[arg(long, env = "WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Display name of this agent [default: host name].
    #[arg(long)]
    name: Option<String>,

    /// Runs of the handler at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,
}

/// The payload of a run, e.g. `{"items": ["a", "b"]}`. Fields left out take
/// their defaults; a run without a payload (`null`) gets `Payload::default()`.
/// A payload that does not parse fails the attempt permanently, before the
/// handler runs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
struct Payload {
    /// The items to work on.
    items: Vec<String>,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    /// Items processed.
    processed: u32,
}

/// The work of one run, apart from the agent: replace it with yours.
///
/// An empty item is a mistake in the payload that another attempt cannot
/// fix, so it fails permanently (the run goes to the dead-letter queue); an
/// error that may pass (a network failure) should be `HandlerError::retryable`.
fn process(payload: &Payload) -> Result<Summary, HandlerError> {
    let mut processed = 0;
    for (i, item) in payload.items.iter().enumerate() {
        if item.trim().is_empty() {
            return Err(HandlerError::permanent(format!("payload field items[{i}]: empty item")));
        }
        processed += 1;
    }
    Ok(Summary { processed })
}

/// The handler: runs [`process`] unless the attempt is stopped first.
async fn handle(ctx: HandlerContext, payload: Option<Payload>) -> Result<(), HandlerError> {
    let payload = payload.unwrap_or_default();
    ctx.log(format!(
        "{} run {} attempt {}: {} item(s)",
        ctx.job(),
        ctx.run_id(),
        ctx.attempt(),
        payload.items.len()
    ));
    let work = async {
        // Long work awaits now and then, so that a cancel is seen promptly.
        tokio::task::yield_now().await;
        process(&payload)
    };
    // A cancel (`workerctl runs cancel`), the job's timeout or the agent's
    // drain fires ctx.cancelled(): stop and say why.
    let summary = tokio::select! {
        reason = ctx.cancelled() => {
            ctx.log(format!("stopped: {reason}"));
            return Err(HandlerError::retryable(format!("stopped: {reason}")));
        }
        summary = ctx.span_async("process", work) => summary?,
    };
    ctx.metric("items", summary.processed);
    ctx.log(format!("processed {} item(s)", summary.processed));
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut agent = Agent::builder(args.controller).capacity(args.capacity);
    if let Some(name) = args.name {
        agent = agent.name(name);
    }
    if let Some(token) = args.token {
        agent = agent.token(token);
    }
    let agent = agent.handler(HANDLER, handle).build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // On SIGTERM or SIGINT the agent drains: it takes no more runs and
        // lets the running ones finish (docs/executors.md).
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        agent.run(shutdown).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_items() {
        let payload: Payload = serde_json::from_str(r#"{"items": ["a", "b", "c"]}"#).unwrap();
        assert_eq!(process(&payload).unwrap(), Summary { processed: 3 });
    }

    #[test]
    fn no_payload_is_no_items() {
        let payload: Option<Payload> = serde_json::from_str("null").unwrap();
        assert_eq!(process(&payload.unwrap_or_default()).unwrap(), Summary { processed: 0 });
    }

    #[test]
    fn an_empty_item_fails_for_good() {
        let payload = Payload {
            items: vec!["a".into(), " ".into()],
        };
        let error = process(&payload).unwrap_err();
        assert!(error.is_permanent());
        assert_eq!(error.message(), "payload field items[1]: empty item");
    }
}
