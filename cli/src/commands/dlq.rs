//! `dlq list|retry|purge`.

use worker_proto::v1 as pb;

use super::Ctx;
use super::runs::emit_page;
use crate::cli::{DlqCmd, DlqTarget};
use crate::model::RunIds;
use crate::output::emit;

/// Runs a `dlq` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { limit } => {
            let runs = ctx
                .client
                .list_dlq(pb::ListDlqRequest {
                    limit: limit.unwrap_or(0),
                })
                .await?
                .into_inner();
            emit_page(ctx, runs)
        }
        DlqCmd::Retry(target) => {
            let ids = ctx.client.retry_dlq(request(target)).await?.into_inner().run_ids;
            print_ids(ctx, "retried", ids)
        }
        DlqCmd::Purge(target) => {
            let ids = ctx.client.purge_dlq(request(target)).await?.into_inner().run_ids;
            print_ids(ctx, "purged", ids)
        }
    }
}

/// The request for one run or for all (clap guarantees exactly one).
fn request(target: DlqTarget) -> pb::DlqRequest {
    pb::DlqRequest {
        id: target.id.unwrap_or_default(),
        all: target.all,
    }
}

/// `{"run_ids": [...]}`, or `<verb> N run(s)` and the ids for people.
fn print_ids(ctx: &Ctx, verb: &str, run_ids: Vec<String>) -> anyhow::Result<()> {
    let ids = RunIds { run_ids };
    emit(ctx.format, &ids, || ids_text(verb, &ids.run_ids))
}

/// `retried 2 run(s)` followed by one id a line.
fn ids_text(verb: &str, ids: &[String]) -> String {
    let mut out = format!("{verb} {} run(s)\n", ids.len());
    for id in ids {
        out.push_str(id);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_text_counts_and_lists() {
        assert_eq!(ids_text("purged", &["a".into(), "b".into()]), "purged 2 run(s)\na\nb\n");
        assert_eq!(ids_text("retried", &[]), "retried 0 run(s)\n");
    }
}
