//! `agents list`, `agents drain ID`.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::model::Agent;
use crate::output::{Table, dash, emit, joined, pairs, time};

/// Lists the agents known to the controller.
pub async fn list(ctx: &mut Ctx) -> anyhow::Result<()> {
    let agents: Vec<Agent> = ctx
        .client
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner()
        .agents
        .into_iter()
        .map(Agent::from)
        .collect();
    emit(ctx.format, &agents, || agents_table(&agents))
}

/// Drains agent `id`; prints it as `agents list` would (one row, or its
/// JSON object).
pub async fn drain(ctx: &mut Ctx, id: String) -> anyhow::Result<()> {
    let agent = Agent::from(ctx.client.drain_agent(pb::DrainAgentRequest { id }).await?.into_inner());
    emit(ctx.format, &agent, || agents_table(std::slice::from_ref(&agent)))
}

/// Agents as a table.
pub fn agents_table(agents: &[Agent]) -> String {
    let mut table = Table::new([
        "NAME",
        "ID",
        "STATE",
        "HOST",
        "SLOTS",
        "EXECUTORS",
        "LABELS",
        "HEARTBEAT",
        "VERSION",
    ]);
    for a in agents {
        table.row([
            dash(a.name.as_deref()),
            a.id.clone(),
            a.state.clone(),
            dash(a.host.as_deref()),
            format!("{}/{}", a.running.len(), a.capacity),
            joined(&a.executors),
            pairs(&a.labels),
            time(a.last_heartbeat.as_deref()),
            dash(a.version.as_deref()),
        ]);
    }
    table.render()
}
