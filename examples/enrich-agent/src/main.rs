//! `enrich-agent`: an application that registers the handler `leads.enrich`
//! with the Worker agent SDK and runs as an agent (see README.md).
//!
//! This file is the thin part: flags, logging, the shutdown signal, and the
//! SDK's builder. The handler is in [`enrich`].

mod enrich;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use worker_agent::Agent;

/// An agent that enriches leads through an HTTP API (handler `leads.enrich`).
#[derive(Debug, Parser)]
#[command(name = "enrich-agent", version, about)]
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

    /// Leads enriched at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: u32,

    /// Base URL of the enrichment API (`POST {api}/enrich`).
    #[arg(long, env = "ENRICH_API_URL")]
    api: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let enricher = Arc::new(enrich::Enricher::new(&args.api)?);
    let mut agent = Agent::builder(args.controller).capacity(args.capacity);
    if let Some(name) = args.name {
        agent = agent.name(name);
    }
    if let Some(token) = args.token {
        agent = agent.token(token);
    }
    let agent = agent
        .handler("leads.enrich", move |ctx, lead| enricher.clone().enrich(ctx, lead))
        .build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        agent.run(shutdown).await?;
        Ok(())
    })
}
