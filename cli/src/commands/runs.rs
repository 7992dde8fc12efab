//! `runs list|get|logs|cancel|retry|prune` (`cancel --workflow`; `logs` is in
//! [`super::logs`]), and the run renderings shared with `enqueue`,
//! `queue list` and `dlq list`.

use worker_proto::v1 as pb;

use super::Ctx;
use crate::cli::{CancelTarget, RunsCmd};
use crate::model::{Pruned, Run};
use crate::output::{Table, dash, emit, joined, key_values, time, truncate};
use crate::output::{fmt_ms, fmt_ms_f, fmt_value};

/// Runs a `runs` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: RunsCmd) -> anyhow::Result<()> {
    let run: Run = match cmd {
        RunsCmd::List { job, state, limit } => {
            let request = pb::ListRunsRequest {
                job: job.unwrap_or_default(),
                state: state.unwrap_or_default(),
                limit: limit.unwrap_or(0),
            };
            let reply = ctx.client.list_runs(request).await?.into_inner();
            return emit_page(ctx, reply);
        }
        RunsCmd::Logs { id, follow: true } => return super::logs::follow(ctx, id).await,
        RunsCmd::Logs { id, follow: false } => return super::logs::stored(ctx, id).await,
        RunsCmd::Get { id } => ctx.client.get_run(pb::GetRunRequest { id }).await?.into_inner().into(),
        RunsCmd::Cancel(CancelTarget { workflow: Some(id), .. }) => {
            let runs = ctx
                .client
                .cancel_workflow(pb::WorkflowRequest { id })
                .await?
                .into_inner()
                .runs;
            let runs: Vec<Run> = runs.into_iter().map(Run::from).collect();
            return emit(ctx.format, &runs, || cancelled_table(&runs));
        }
        RunsCmd::Cancel(CancelTarget { id, .. }) => ctx
            .client
            .cancel_run(pb::RunRequest {
                id: id.unwrap_or_default(),
            })
            .await?
            .into_inner()
            .into(),
        RunsCmd::Retry { id } => ctx.client.retry_run(pb::RunRequest { id }).await?.into_inner().into(),
        RunsCmd::Prune { dry_run, job } => {
            let request = pb::PruneRunsRequest {
                job: job.unwrap_or_default(),
                dry_run,
            };
            let pruned: Pruned = ctx.client.prune_runs(request).await?.into_inner().into();
            return emit(ctx.format, &pruned, || pruned_table(&pruned));
        }
    };
    emit(ctx.format, &run, || run_detail(&run))
}

/// `runs prune` for people: one line per job, then the total.
fn pruned_table(pruned: &Pruned) -> String {
    let verb = if pruned.dry_run { "would delete" } else { "deleted" };
    if pruned.jobs.is_empty() {
        return format!("nothing to prune ({verb} 0 runs)\n");
    }
    let mut table = Table::new(["JOB", "SUCCEEDED", "DEAD", "CANCELLED", "TOTAL"]);
    for j in &pruned.jobs {
        table.row([
            j.job.clone(),
            j.succeeded.to_string(),
            j.dead.to_string(),
            j.cancelled.to_string(),
            j.total.to_string(),
        ]);
    }
    let total: u64 = pruned.jobs.iter().map(|j| j.total).sum();
    format!("{}{verb} {total} run(s)\n", table.render())
}

/// Prints a list of runs (an array, or [`runs_table`]).
pub fn emit_runs(ctx: &Ctx, runs: Vec<pb::Run>) -> anyhow::Result<()> {
    let runs: Vec<Run> = runs.into_iter().map(Run::from).collect();
    emit(ctx.format, &runs, || runs_table(&runs))
}

/// Prints a page of runs (see [`emit_runs`]); when the controller stopped short
/// of the page at its reply-size budget, says so on stderr.
pub fn emit_page(ctx: &Ctx, reply: pb::ListRunsResponse) -> anyhow::Result<()> {
    if reply.truncated {
        eprintln!(
            "note: the controller stopped at {} runs, its reply-size limit (list_reply_bytes); \
             use a smaller --limit or a narrower filter to see the rest",
            reply.runs.len()
        );
    }
    emit_runs(ctx, reply.runs)
}

/// Runs as a table, one line each.
pub fn runs_table(runs: &[Run]) -> String {
    let mut table = Table::new([
        "ID", "JOB", "STATE", "PRIORITY", "TRIGGER", "ATTEMPTS", "CREATED", "FINISHED", "REASON",
    ]);
    for run in runs {
        table.row([
            run.id.clone(),
            run.job.clone(),
            run.state.clone(),
            run.priority.clone(),
            run.trigger.clone(),
            attempts(run),
            time(run.created_at.as_deref()),
            time(run.finished_at.as_deref()),
            truncate(run.reason.as_deref().unwrap_or("-"), 60),
        ]);
    }
    table.render()
}

/// The runs `runs cancel --workflow` cancelled: `ID JOB STATE`.
pub fn cancelled_table(runs: &[Run]) -> String {
    let mut table = Table::new(["ID", "JOB", "STATE"]);
    for run in runs {
        table.row([run.id.clone(), run.job.clone(), run.state.clone()]);
    }
    table.render()
}

/// One run for people: its fields as `key: value` lines, its attempts and
/// transitions as tables, then the output tail of the last attempt.
pub fn run_detail(run: &Run) -> String {
    let payload = if run.payload.is_null() {
        "-".to_string()
    } else {
        truncate(&run.payload.to_string(), 200)
    };
    let mut out = key_values(&[
        ("id", run.id.clone()),
        ("job", run.job.clone()),
        ("state", run.state.clone()),
        ("reason", dash(run.reason.as_deref())),
        ("priority", run.priority.clone()),
        ("trigger", run.trigger.clone()),
        ("payload", payload),
        ("attempts", attempts(run)),
        ("created at", time(run.created_at.as_deref())),
        ("scheduled for", time(run.scheduled_for.as_deref())),
        ("not before", time(run.not_before.as_deref())),
        ("finished at", time(run.finished_at.as_deref())),
        ("depends on", joined(&run.depends_on)),
        ("workflow", dash(run.workflow_id.as_deref())),
        ("idempotency key", dash(run.idempotency_key.as_deref())),
    ]);
    if !run.attempts.is_empty() {
        let mut table = Table::new(["ATTEMPT", "AGENT", "OUTCOME", "EXIT", "STARTED", "DURATION", "ERROR"]);
        for a in &run.attempts {
            table.row([
                a.attempt.to_string(),
                dash(a.agent.as_deref()),
                a.outcome.clone().unwrap_or_else(|| "running".into()),
                a.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                time(a.started_at.as_deref()),
                if a.finished_at.is_some() {
                    fmt_ms(a.duration_ms)
                } else {
                    "-".into()
                },
                truncate(a.error.as_deref().unwrap_or("-"), 60),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    for a in run
        .attempts
        .iter()
        .filter(|a| !a.metrics.is_empty() || !a.spans.is_empty())
    {
        out.push_str(&format!("\nreported by attempt {}:\n", a.attempt));
        if !a.metrics.is_empty() {
            let metrics: Vec<String> = a
                .metrics
                .iter()
                .map(|(k, v)| format!("{k}={}", fmt_value(*v)))
                .collect();
            out.push_str(&format!("  metrics: {}\n", metrics.join(" ")));
        }
        if !a.spans.is_empty() {
            let mut table = Table::new(["SPAN", "COUNT", "TOTAL", "MAX"]);
            for s in &a.spans {
                table.row([
                    s.name.clone(),
                    s.count.to_string(),
                    fmt_ms_f(s.total_ms),
                    fmt_ms_f(s.max_ms),
                ]);
            }
            out.push_str(&indent(&table.render()));
        }
    }
    if !run.transitions.is_empty() {
        let mut table = Table::new(["AT", "FROM", "TO", "REASON"]);
        for t in &run.transitions {
            table.row([
                time(t.at.as_deref()),
                dash(t.from.as_deref()),
                t.to.clone(),
                truncate(t.reason.as_deref().unwrap_or("-"), 80),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if let Some(last) = run.attempts.iter().max_by_key(|a| a.attempt)
        && let Some(output) = &last.output
    {
        out.push_str(&format!("\noutput of attempt {}:\n", last.attempt));
        out.push_str(output);
        if !output.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `text` with every line indented by two spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `attempts used/max`.
fn attempts(run: &Run) -> String {
    format!("{}/{}", run.attempts.len(), run.max_attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_shows_fields_attempts_and_output_tail() {
        let run = Run::from(pb::Run {
            id: "r1".into(),
            job: "backup".into(),
            state: "dead".into(),
            max_attempts: 2,
            attempts: vec![
                pb::Attempt {
                    attempt: 1,
                    outcome: "failed".into(),
                    exit_code: Some(1),
                    output: "first".into(),
                    finished_at: "2025-01-01T00:00:02Z".into(),
                    duration_ms: 2000,
                    ..Default::default()
                },
                pb::Attempt {
                    attempt: 2,
                    outcome: "timed_out".into(),
                    output: "second\n".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let text = run_detail(&run);
        assert!(text.starts_with("id:"), "{text}");
        assert!(text.contains("attempts:        2/2"), "{text}");
        assert!(text.contains("ATTEMPT  AGENT  OUTCOME"), "{text}");
        assert!(text.contains("2.0s"), "{text}");
        assert!(text.ends_with("output of attempt 2:\nsecond\n"), "{text}");
        assert!(!text.contains("first"), "{text}");
    }
}
