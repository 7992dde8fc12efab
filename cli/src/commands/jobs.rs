//! `jobs list|get|run|enable|disable|delete`.

use worker_proto::v1 as pb;

use super::Ctx;
use super::enqueue::{self, Trigger};
use crate::cli::JobsCmd;
use crate::model::{Deleted, Job, JobDetail, JobStats};
use crate::output::{Table, dash, emit, joined, key_values, pairs, time, truncate};
use crate::output::{fmt_ms, fmt_ms_f, fmt_value};

/// Runs a `jobs` subcommand.
pub async fn run(ctx: &mut Ctx, cmd: JobsCmd) -> anyhow::Result<()> {
    match cmd {
        JobsCmd::List => {
            let jobs: Vec<Job> = ctx
                .client
                .list_jobs(pb::ListJobsRequest {})
                .await?
                .into_inner()
                .jobs
                .into_iter()
                .map(Job::from)
                .collect();
            emit(ctx.format, &jobs, || jobs_table(&jobs))
        }
        JobsCmd::Get { name } => {
            let detail = ctx
                .client
                .get_job(pb::GetJobRequest { name: name.clone() })
                .await?
                .into_inner();
            let detail = JobDetail::from_proto(detail, &name);
            emit(ctx.format, &detail, || job_detail(&detail))
        }
        JobsCmd::Run(args) => enqueue::run_one(ctx, args.job, args.run, Trigger::Manual).await,
        JobsCmd::Enable { name } => set_enabled(ctx, name, true).await,
        JobsCmd::Disable { name } => set_enabled(ctx, name, false).await,
        JobsCmd::Delete { name } => {
            ctx.client
                .delete_job(pb::DeleteJobRequest { name: name.clone() })
                .await?;
            let deleted = Deleted { deleted: name };
            emit(ctx.format, &deleted, || format!("deleted {}", deleted.deleted))
        }
    }
}

/// `jobs enable|disable`: prints the job (the object of `jobs list`).
async fn set_enabled(ctx: &mut Ctx, name: String, enabled: bool) -> anyhow::Result<()> {
    let job: Job = ctx
        .client
        .set_job_enabled(pb::SetJobEnabledRequest { name, enabled })
        .await?
        .into_inner()
        .into();
    emit(ctx.format, &job, || {
        job_detail(&JobDetail {
            job: job.clone(),
            stats: None,
            days: Vec::new(),
        })
    })
}

/// `jobs list` as a table.
pub fn jobs_table(jobs: &[Job]) -> String {
    let mut table = Table::new([
        "NAME",
        "ENABLED",
        "SCHEDULE",
        "PRIORITY",
        "EXECUTOR",
        "NEXT FIRE",
        "DEPENDS ON",
        "TAGS",
    ]);
    for job in jobs {
        table.row([
            job.name.clone(),
            yes_no(job.enabled),
            schedule(job),
            job.priority.clone(),
            truncate(
                &job.executor.as_ref().map(|e| e.summary()).unwrap_or_else(|| "-".into()),
                40,
            ),
            time(job.next_fire.as_deref()),
            joined(&job.depends_on),
            joined(&job.tags),
        ]);
    }
    table.render()
}

/// `jobs get` as `key: value` lines: the job, then its statistics.
pub fn job_detail(detail: &JobDetail) -> String {
    let job = &detail.job;
    let retry = match &job.retry {
        Some(r) => format!(
            "{} attempts, {} backoff {}..{}, jitter {}",
            r.max_attempts,
            if r.backoff.is_empty() { "default" } else { &r.backoff },
            fmt_ms(r.initial_delay_ms),
            fmt_ms(r.max_delay_ms),
            r.jitter
        ),
        None => "-".into(),
    };
    let mut out = key_values(&[
        ("name", job.name.clone()),
        ("description", dash(job.description.as_deref())),
        ("enabled", yes_no(job.enabled)),
        (
            "executor",
            job.executor.as_ref().map(|e| e.summary()).unwrap_or_else(|| "-".into()),
        ),
        ("schedule", schedule(job)),
        (
            "dst",
            format!(
                "gap {}, repeat {}",
                dash(job.dst_gap.as_deref()),
                dash(job.dst_repeat.as_deref())
            ),
        ),
        ("next fire", time(job.next_fire.as_deref())),
        ("depends on", joined(&job.depends_on)),
        ("priority", job.priority.clone()),
        (
            "timeout",
            if job.timeout_ms == 0 {
                "none".into()
            } else {
                fmt_ms(job.timeout_ms)
            },
        ),
        ("retry", retry),
        ("overlap", dash(job.overlap.as_deref())),
        ("catch up", catch_up(job)),
        ("jitter", fmt_ms(job.jitter_ms)),
        ("selector", pairs(&job.selector)),
        (
            "max concurrency",
            if job.max_concurrency == 0 {
                "unlimited".into()
            } else {
                job.max_concurrency.to_string()
            },
        ),
        ("tags", joined(&job.tags)),
        ("source", dash(job.source.as_deref())),
    ]);
    if let Some(stats) = &detail.stats {
        out.push_str("\nstats:\n");
        out.push_str(&indent(&stats_lines(stats)));
    }
    if !detail.days.is_empty() {
        out.push_str("\nreported per day (UTC):\n");
        out.push_str(&indent(&days_table(detail)));
    }
    out
}

/// What the job's attempts reported, a row per day: metric sums and the
/// p50/p95 of each span, slowest first.
fn days_table(detail: &JobDetail) -> String {
    let mut table = Table::new(["DATE", "ATTEMPTS", "METRICS (SUM)", "SPANS (P50/P95)"]);
    for d in &detail.days {
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={}", fmt_value(*v)))
            .collect();
        let spans: Vec<String> = d
            .spans
            .iter()
            .map(|s| format!("{} {}/{}", s.name, fmt_ms_f(s.p50_ms), fmt_ms_f(s.p95_ms)))
            .collect();
        table.row([
            d.date.clone(),
            d.attempts.to_string(),
            truncate(&metrics.join(" "), 60),
            truncate(&spans.join(", "), 80),
        ]);
    }
    table.render()
}

/// The statistics of `jobs get` as `key: value` lines.
fn stats_lines(s: &JobStats) -> String {
    let finished = s.runs_total.saturating_sub(s.active);
    let rate = if finished == 0 {
        "-".into()
    } else {
        format!("{:.1}%", s.success_rate * 100.0)
    };
    let duration = |ms: u64| {
        if s.succeeded == 0 && ms == 0 {
            "-".into()
        } else {
            fmt_ms(ms)
        }
    };
    let last = match &s.last_run_id {
        Some(id) => format!(
            "{id} {} at {}",
            dash(s.last_run_state.as_deref()),
            time(s.last_run_at.as_deref())
        ),
        None => "-".into(),
    };
    key_values(&[
        ("runs", format!("{} ({} active)", s.runs_total, s.active)),
        ("succeeded", s.succeeded.to_string()),
        ("dead", s.dead.to_string()),
        ("cancelled", s.cancelled.to_string()),
        (
            "failed attempts",
            format!("{} failed, {} timed out, {} lost", s.failed, s.timed_out, s.lost),
        ),
        ("success rate", rate),
        ("duration p50", duration(s.p50_duration_ms)),
        ("duration p95", duration(s.p95_duration_ms)),
        ("last run", last),
        ("next run", time(s.next_run_at.as_deref())),
        (
            "schedule fires",
            format!("{} missed, {} skipped", s.schedule_missed, s.schedule_skipped),
        ),
    ])
}

/// `latest (max 1, within 1h 00m)`.
fn catch_up(job: &Job) -> String {
    let window = if job.catch_up_window_ms == 0 {
        String::new()
    } else {
        format!(", within {}", fmt_ms(job.catch_up_window_ms))
    };
    format!("{} (max {}{window})", dash(job.catch_up.as_deref()), job.max_catch_up)
}

/// `cron (timezone)`, `-` when unscheduled.
fn schedule(job: &Job) -> String {
    match (&job.schedule, &job.timezone) {
        (Some(cron), Some(tz)) => format!("{cron} ({tz})"),
        (Some(cron), None) => cron.clone(),
        (None, _) => "-".into(),
    }
}

/// `yes` / `no`.
fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

/// Every line indented by two spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_detail_shows_rate_and_percentiles() {
        let detail = JobDetail::from_proto(
            pb::JobDetail {
                days: Default::default(),
                job: Some(pb::Job {
                    name: "backup".into(),
                    schedule: "0 3 * * *".into(),
                    depends_on: vec!["extract".into(), "load".into()],
                    catch_up: "latest".into(),
                    max_catch_up: 1,
                    catch_up_window_ms: 3_600_000,
                    source: "api".into(),
                    ..Default::default()
                }),
                stats: Some(pb::JobStats {
                    runs_total: 10,
                    succeeded: 9,
                    dead: 1,
                    success_rate: 0.9,
                    p50_duration_ms: 1500,
                    p95_duration_ms: 125_000,
                    schedule_missed: 3,
                    ..Default::default()
                }),
            },
            "backup",
        );
        let text = job_detail(&detail);
        assert!(text.contains("success rate:    90.0%"), "{text}");
        assert!(text.contains("duration p50:    1.5s"), "{text}");
        assert!(text.contains("duration p95:    2m 05s"), "{text}");
        assert!(text.contains("schedule:        0 3 * * *"), "{text}");
        assert!(text.contains("depends on:      extract,load"), "{text}");
        assert!(
            text.contains("catch up:        latest (max 1, within 1h 00m)"),
            "{text}"
        );
        assert!(text.contains("source:          api"), "{text}");
        assert!(text.contains("schedule fires:  3 missed, 0 skipped"), "{text}");
        let table = jobs_table(std::slice::from_ref(&detail.job));
        assert!(
            table.contains("DEPENDS ON") && table.contains("extract,load"),
            "{table}"
        );
    }
}
