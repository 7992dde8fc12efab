//! `bench agents`: A simulated agents connected at once (Hello + heartbeats, no
//! credits); the controller's memory per agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sim_agent::{self, Counters, Spec};
use super::{AgentsArgs, Printer, Report, Target, apply_jobs, base_config, mib, progress, round, secs, server_info};
use crate::client::Client;
use crate::output::key_values;

/// Hello handshakes in flight at once.
const CONNECTING: usize = 64;

/// How long to wait for the controller to count the closed agents out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `agents` measured.
#[derive(Debug, Serialize)]
struct Results {
    connected: u64,
    connect_seconds: f64,
    rss_before_bytes: u64,
    rss_connected_bytes: u64,
    bytes_per_agent: f64,
    rss_closed_bytes: u64,
    disconnected_seconds: f64,
}

/// Polls ServerInfo every 50 ms until `done(connected_agents)` or `timeout`;
/// returns the last answer and whether `done` held.
async fn wait_agents(
    client: &mut Client,
    timeout: Duration,
    done: impl Fn(u64) -> bool,
) -> Result<(super::Server, bool), tonic::Status> {
    let deadline = Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let info = server_info(client).await?;
        if done(info.connected_agents) {
            return Ok((info, true));
        }
        if Instant::now() >= deadline {
            return Ok((info, false));
        }
    }
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: AgentsArgs) -> anyhow::Result<(Report, String)> {
    let count = args.count;
    let connections = count.div_ceil(args.per_connection);
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let mut config = base_config(target);
    config.insert("count".into(), count.into());
    config.insert("per_connection".into(), args.per_connection.into());
    config.insert("connections".into(), connections.into());
    config.insert("timeout_s".into(), (args.timeout as f64 / 1000.0).into());
    printer.config(
        "agents",
        &[
            ("controller", target.url.clone()),
            (
                "agents",
                format!("{count} simulated (Hello + heartbeats, no credits, executor builtin, labels bench=agents)"),
            ),
            (
                "connections",
                format!(
                    "{connections} ({} agent streams per HTTP/2 connection)",
                    args.per_connection
                ),
            ),
            ("timeout", crate::output::fmt_ms(args.timeout)),
        ],
        &server,
    );
    apply_jobs(&mut client, "").await?;
    let before = server_info(&mut client).await?;
    let base = before.connected_agents;

    progress(format!("connecting {count} agents over {connections} connection(s)"));
    let auth = target.auth()?;
    let counters = Arc::new(Counters::default());
    let channels = (0..connections)
        .map(|_| target.channel())
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut agents = Vec::with_capacity(count as usize);
    let mut problems = Vec::new();
    let mut first_error = None;
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..count {
        while starting.len() >= CONNECTING {
            collect(&mut starting, &mut agents, &mut first_error).await?;
        }
        let spec = Spec {
            agent_id: sim_agent::agent_id(i),
            name: format!("bench-agent-{i}"),
            labels: HashMap::from([("bench".to_string(), "agents".to_string())]),
            capacity: 1,
            pull: 0,
            job: String::new(),
        };
        let channel = channels[(i / args.per_connection) as usize].clone();
        starting.spawn(sim_agent::start(channel, auth.clone(), spec, counters.clone()));
    }
    while !starting.is_empty() {
        collect(&mut starting, &mut agents, &mut first_error).await?;
    }
    let opened = agents.len() as u64;
    if opened < count {
        problems.push(format!(
            "{} of {count} agents could not connect (first: {}); with one connection per agent, raise \
             `ulimit -n` or use --per-connection",
            count - opened,
            first_error.unwrap_or_default()
        ));
    }
    let (connected_info, all) =
        wait_agents(&mut client, Duration::from_millis(args.timeout), |n| n >= base + opened).await?;
    let connect_time = started.elapsed();
    if !all {
        problems.push(format!(
            "the controller counted {} of {opened} agents after {}",
            connected_info.connected_agents.saturating_sub(base),
            crate::output::fmt_ms(args.timeout)
        ));
    }
    progress(format!(
        "{opened} agents connected in {:.3}s; closing them",
        connect_time.as_secs_f64()
    ));
    let ended_early = agents.iter().filter(|a| a.ended()).count();
    if ended_early > 0 {
        problems.push(format!("{ended_early} agent streams ended while connected"));
    }

    let closing = Instant::now();
    for agent in agents {
        agent.close().await;
    }
    drop(channels);
    let (closed_info, gone) = wait_agents(&mut client, CLOSE_TIMEOUT, |n| n <= base).await?;
    let disconnected_seconds = if gone { secs(closing.elapsed()) } else { 0.0 };
    if !gone {
        progress(format!(
            "{} agents still counted {} after closing",
            closed_info.connected_agents.saturating_sub(base),
            crate::output::fmt_ms(CLOSE_TIMEOUT.as_millis() as u64)
        ));
    }

    let growth = connected_info.rss_bytes as f64 - before.rss_bytes as f64;
    let results = Results {
        connected: connected_info.connected_agents.saturating_sub(base),
        connect_seconds: secs(connect_time),
        rss_before_bytes: before.rss_bytes,
        rss_connected_bytes: connected_info.rss_bytes,
        bytes_per_agent: if opened > 0 {
            round(growth / opened as f64, 0)
        } else {
            0.0
        },
        rss_closed_bytes: closed_info.rss_bytes,
        disconnected_seconds,
    };
    let table = key_values(&[
        (
            "connected",
            format!("{} agents in {:.3}s", results.connected, results.connect_seconds),
        ),
        (
            "controller rss",
            format!(
                "{} before, {} connected, {} after closing",
                mib(results.rss_before_bytes),
                mib(results.rss_connected_bytes),
                mib(results.rss_closed_bytes)
            ),
        ),
        ("per agent", format!("{:.0} bytes", results.bytes_per_agent)),
        (
            "disconnect",
            if gone {
                format!("all counted out in {:.3}s", results.disconnected_seconds)
            } else {
                "not all counted out".to_string()
            },
        ),
    ]);
    let report = Report::new("agents", config, server, &results, problems)?;
    Ok((report, table))
}

/// Waits for one handshake to end.
async fn collect(
    starting: &mut tokio::task::JoinSet<Result<sim_agent::SimAgent, String>>,
    agents: &mut Vec<sim_agent::SimAgent>,
    first_error: &mut Option<String>,
) -> anyhow::Result<()> {
    if let Some(done) = starting.join_next().await {
        match done? {
            Ok(a) => agents.push(a),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Ok(())
}
