//! `apply -f FILE` and `export`: job definitions as a scheduler.yaml document.

use std::io::Write as _;

use worker_proto::v1 as pb;

use super::{Ctx, read_input};
use crate::model::Applied;
use crate::output::emit;

/// Applies the document in `file` (`-` = stdin). The controller validates it
/// whole: an `InvalidArgument` answer lists one error per line, printed as is
/// (exit 2).
pub async fn apply(ctx: &mut Ctx, file: &str) -> anyhow::Result<()> {
    let (yaml, source_name) = read_input(file, "-f")?;
    let applied: Applied = ctx
        .client
        .apply_jobs(pb::ApplyJobsRequest { yaml, source_name })
        .await?
        .into_inner()
        .into();
    emit(ctx.format, &applied, || applied_text(&applied))
}

/// `created NAME`, `updated NAME`, `unchanged NAME`, one line per job (`no jobs`
/// for a document that defines none).
pub fn applied_text(applied: &Applied) -> String {
    let mut out = String::new();
    for (verb, names) in [
        ("created", &applied.created),
        ("updated", &applied.updated),
        ("unchanged", &applied.unchanged),
    ] {
        for name in names {
            out.push_str(&format!("{verb} {name}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("no jobs\n");
    }
    out
}

/// Prints the current definitions as YAML, whatever `-o` says.
pub async fn export(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut yaml = ctx
        .client
        .export_jobs(pb::ExportJobsRequest {})
        .await?
        .into_inner()
        .yaml;
    if !yaml.is_empty() && !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(yaml.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_lines() {
        let applied = Applied {
            created: vec!["a".into()],
            updated: vec!["b".into(), "c".into()],
            unchanged: vec!["d".into()],
        };
        assert_eq!(applied_text(&applied), "created a\nupdated b\nupdated c\nunchanged d\n");
        let empty = Applied {
            created: vec![],
            updated: vec![],
            unchanged: vec![],
        };
        assert_eq!(applied_text(&empty), "no jobs\n");
    }
}
