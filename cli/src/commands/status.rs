//! `status`: the answering controller (version, store, agents, runs held)
//! and who leads. With several `--controller` addresses the call reaches the
//! leader, so this also tells which controller leads now.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::model::Status;
use crate::output::{Table, dash, emit, time};

/// Prints the controller's status.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let status = Status::from(ctx.client.server_info(pb::ServerInfoRequest {}).await?.into_inner());
    emit(ctx.format, &status, || status_table(&status))
}

/// The status as two columns.
fn status_table(s: &Status) -> String {
    let mut table = Table::new(["FIELD", "VALUE"]);
    let leader = match s.leadership.role.as_str() {
        "leader" => format!(
            "{} at {} (epoch {}, since {})",
            dash(s.leadership.id.as_deref()),
            dash(s.leadership.address.as_deref()),
            s.leadership.epoch,
            time(s.leadership.since.as_deref())
        ),
        _ => "single controller (no --ha)".to_string(),
    };
    for (field, value) in [
        ("leader", leader),
        ("version", s.version.clone()),
        ("store", s.store.clone()),
        ("pid", s.pid.to_string()),
        ("started", time(s.started_at.as_deref())),
        ("agents", s.connected_agents.to_string()),
        ("live runs", s.live_runs.to_string()),
        ("rss", format!("{} MiB", s.rss_bytes / (1024 * 1024))),
    ] {
        table.row([field.to_string(), value]);
    }
    table.render()
}
