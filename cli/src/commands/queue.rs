//! `queue stats|list`.

use worker_proto::v1 as pb;

use super::Ctx;
use super::runs::emit_page;
use crate::cli::QueueCmd;
use crate::model::QueueStats;
use crate::output::fmt_ms;
use crate::output::{Table, emit, key_values};

/// Runs a `queue` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::Stats => {
            let stats: QueueStats = ctx
                .client
                .queue_stats(pb::QueueStatsRequest {})
                .await?
                .into_inner()
                .into();
            emit(ctx.format, &stats, || stats_text(&stats))
        }
        QueueCmd::List { limit } => {
            let runs = ctx
                .client
                .list_queue(pb::ListQueueRequest {
                    limit: limit.unwrap_or(0),
                })
                .await?
                .into_inner();
            emit_page(ctx, runs)
        }
    }
}

/// `queue stats` for people: counts per state, then per priority.
pub fn stats_text(stats: &QueueStats) -> String {
    let mut out = key_values(&[
        ("queued", stats.queued.to_string()),
        ("scheduled", stats.scheduled.to_string()),
        ("blocked", stats.blocked.to_string()),
        ("running", stats.running.to_string()),
        ("dead", stats.dead.to_string()),
        ("lost attempts", stats.lost_attempts.to_string()),
        ("rescued runs", stats.rescued_runs.to_string()),
        ("stale results", stats.stale_results.to_string()),
        ("duplicate results", stats.duplicate_results.to_string()),
        ("deadline expired", stats.deadline_expired.to_string()),
        ("failed results", stats.failed_results.to_string()),
        ("failed fires", stats.failed_fires.to_string()),
        ("failed writes", stats.failed_writes.to_string()),
    ]);
    if !stats.priorities.is_empty() {
        let mut table = Table::new(["PRIORITY", "QUEUED", "OLDEST WAIT"]);
        for p in &stats.priorities {
            let wait = if p.queued == 0 {
                "-".into()
            } else {
                fmt_ms(p.oldest_wait_ms)
            };
            table.row([p.priority.clone(), p.queued.to_string(), wait]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}
