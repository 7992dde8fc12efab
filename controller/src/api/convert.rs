//! Conversions from engine records to `worker.v1` messages.

use worker_proto::v1 as pb;

use crate::config::JobEntry;
use crate::engine::{AgentView, RunView};
use crate::job::{ExecutorDef, JobDef};
use crate::store::{AttemptRecord, JobDayRecord, JobStatsRecord, TransitionRecord};
use crate::time::{rfc3339, rfc3339_opt};

/// The executor of a job, with its non-retryable exit codes. `for_agent`
/// includes secret environment values (sent only to the agent that runs the
/// job); otherwise values are masked.
pub fn executor_to_proto(job: &JobDef, for_agent: bool) -> pb::ExecutorSpec {
    let kind = match &job.executor {
        ExecutorDef::Shell(shell) => pb::executor_spec::Kind::Shell(pb::ShellSpec {
            argv: shell.argv.clone(),
            script: shell.script.clone(),
            env: shell
                .env
                .iter()
                .map(|(k, v)| (k.clone(), if for_agent { v.clone() } else { "***".into() }))
                .collect(),
            cwd: shell.cwd.clone(),
            non_retryable_exit_codes: job.retry.non_retryable_exit_codes.clone(),
        }),
        ExecutorDef::Builtin(builtin) => pb::executor_spec::Kind::Builtin(pb::BuiltinSpec {
            name: builtin.name.clone(),
            args: builtin.args.clone().into_iter().collect(),
        }),
        // Header values are sent as written: `${VAR}` in them is read by the
        // agent, so there is nothing secret here to mask.
        ExecutorDef::Http(http) => pb::executor_spec::Kind::Http(pb::HttpSpec {
            method: http.method.clone(),
            url: http.url.clone(),
            headers: http.headers.clone().into_iter().collect(),
            body: http.body.clone(),
            expect_status: http.expect_status.clone(),
            retry_on: http.retry_on.clone(),
            timeout_ms: http
                .timeout
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            max_redirects: http.max_redirects,
        }),
        ExecutorDef::Handler(handler) => pb::executor_spec::Kind::Handler(pb::HandlerSpec {
            name: handler.name.clone(),
        }),
    };
    pb::ExecutorSpec { kind: Some(kind) }
}

/// A job definition; `next_fire` is its next schedule fire (Unix ms).
pub fn job_to_proto(entry: &JobEntry, next_fire: Option<i64>) -> pb::Job {
    let job = &entry.def;
    let executor = executor_to_proto(job, false);
    pb::Job {
        name: job.name.clone(),
        description: job.description.clone(),
        executor: Some(executor),
        schedule: job.schedule.as_ref().map(|s| s.expr().to_string()).unwrap_or_default(),
        timezone: job
            .schedule
            .as_ref()
            .map(|s| s.tz().name().to_string())
            .unwrap_or_default(),
        priority: job.priority.to_string(),
        timeout_ms: job.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        retry: Some(pb::RetryPolicy {
            max_attempts: job.retry.max_attempts,
            backoff: job.retry.backoff.to_string(),
            initial_delay_ms: job.retry.initial_delay.as_millis() as u64,
            max_delay_ms: job.retry.max_delay.as_millis() as u64,
            jitter: job.retry.jitter,
        }),
        overlap: job.overlap.to_string(),
        catch_up: job.catch_up.to_string(),
        selector: job.selector.clone().into_iter().collect(),
        max_concurrency: job.max_concurrency.unwrap_or(0),
        enabled: job.enabled,
        tags: job.tags.clone(),
        next_fire: rfc3339_opt(next_fire),
        max_catch_up: job.max_catch_up,
        jitter_ms: job.jitter.as_millis() as u64,
        depends_on: job.depends_on.clone(),
        dst_gap: job
            .schedule
            .as_ref()
            .map(|s| s.policy().gap.to_string())
            .unwrap_or_default(),
        dst_repeat: job
            .schedule
            .as_ref()
            .map(|s| s.policy().repeat.to_string())
            .unwrap_or_default(),
        catch_up_window_ms: job.catch_up_window.map(|w| w.as_millis() as u64).unwrap_or(0),
        source: entry.source.to_string(),
    }
}

/// A run with its attempts (and transitions when present).
pub fn run_to_proto(view: RunView) -> pb::Run {
    let run = view.run;
    pb::Run {
        id: run.id,
        job: run.job,
        state: run.state.to_string(),
        priority: run.priority.to_string(),
        payload: run.payload,
        trigger: run.trigger.to_string(),
        scheduled_for: rfc3339_opt(run.scheduled_for),
        created_at: rfc3339(run.created_at),
        not_before: if run.state == crate::model::RunState::Scheduled {
            rfc3339_opt(run.not_before)
        } else {
            String::new()
        },
        finished_at: rfc3339_opt(run.finished_at),
        attempts: view.attempts.into_iter().map(attempt_to_proto).collect(),
        depends_on: view.depends_on,
        workflow_id: run.workflow_id.unwrap_or_default(),
        max_attempts: run.max_attempts,
        reason: run.reason.unwrap_or_default(),
        transitions: view.transitions.into_iter().map(transition_to_proto).collect(),
        idempotency_key: run.idempotency_key.unwrap_or_default(),
    }
}

fn attempt_to_proto(a: AttemptRecord) -> pb::Attempt {
    pb::Attempt {
        attempt: a.attempt,
        agent: a.agent_name,
        outcome: a.outcome.map(|o| o.to_string()).unwrap_or_default(),
        exit_code: a.exit_code,
        error: a.error.unwrap_or_default(),
        output: a.output.unwrap_or_default(),
        started_at: rfc3339(a.started_at),
        finished_at: rfc3339_opt(a.finished_at),
        duration_ms: a.duration_ms.unwrap_or(0).max(0) as u64,
        metrics: a
            .metrics
            .into_iter()
            .map(|m| pb::Metric {
                name: m.name,
                value: m.value,
            })
            .collect(),
        spans: a
            .spans
            .into_iter()
            .map(|s| pb::Span {
                name: s.name,
                count: s.count,
                total_us: s.total_us,
                max_us: s.max_us,
            })
            .collect(),
    }
}

/// The start (Unix ms) of the UTC day holding `at` (Unix ms).
pub fn day_start(at: i64) -> i64 {
    at.div_euclid(86_400_000) * 86_400_000
}

/// A job's day of reported metrics and spans.
pub fn job_day_to_proto(d: JobDayRecord) -> pb::JobDay {
    let date = chrono::DateTime::from_timestamp(d.day * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    pb::JobDay {
        date,
        attempts: d.attempts,
        metric_sums: d
            .metric_sums
            .into_iter()
            .map(|(name, value)| pb::Metric { name, value })
            .collect(),
        spans: d
            .spans
            .into_iter()
            .map(|(name, attempts, p50_us, p95_us)| pb::SpanDay {
                name,
                attempts,
                p50_us,
                p95_us,
            })
            .collect(),
    }
}

fn transition_to_proto(t: TransitionRecord) -> pb::Transition {
    pb::Transition {
        from_state: t.from.map(|s| s.to_string()).unwrap_or_default(),
        to_state: t.to.to_string(),
        at: rfc3339(t.at),
        reason: t.reason.unwrap_or_default(),
    }
}

/// Job statistics; percentiles by nearest rank over the latest successes.
/// `schedule` holds the (missed, skipped) fire counts of its schedule.
pub fn stats_to_proto(stats: JobStatsRecord, next_run: Option<i64>, schedule: (u64, u64)) -> pb::JobStats {
    let mut durations = stats.recent_durations_ms.clone();
    durations.sort_unstable();
    let percentile = |p: f64| -> u64 {
        if durations.is_empty() {
            return 0;
        }
        let rank = ((p * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
        durations[rank - 1].max(0) as u64
    };
    let finished = stats.succeeded + stats.dead;
    pb::JobStats {
        runs_total: stats.runs_total,
        succeeded: stats.succeeded,
        failed: stats.failed_attempts,
        timed_out: stats.timed_out_attempts,
        lost: stats.lost_attempts,
        cancelled: stats.cancelled,
        dead: stats.dead,
        success_rate: if finished == 0 {
            0.0
        } else {
            stats.succeeded as f64 / finished as f64
        },
        p50_duration_ms: percentile(0.50),
        p95_duration_ms: percentile(0.95),
        last_run_id: stats.last_run.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        last_run_state: stats.last_run.as_ref().map(|r| r.state.to_string()).unwrap_or_default(),
        last_run_at: stats
            .last_run
            .as_ref()
            .map(|r| rfc3339(r.created_at))
            .unwrap_or_default(),
        next_run_at: rfc3339_opt(next_run),
        active: stats.active,
        schedule_missed: schedule.0,
        schedule_skipped: schedule.1,
    }
}

/// An agent.
pub fn agent_to_proto(a: AgentView) -> pb::Agent {
    pb::Agent {
        id: a.id,
        name: a.name,
        host: a.host,
        labels: a.labels.into_iter().collect(),
        executors: a.executors,
        handlers: a.handlers,
        capacity: a.capacity,
        state: a.state.to_string(),
        connected_at: rfc3339(a.connected_at),
        last_heartbeat: rfc3339(a.last_seen),
        running: a.running,
        version: a.version,
    }
}
