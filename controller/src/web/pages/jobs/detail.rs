//! `GET /jobs/{name}`: one job: the facts of its definition, its stats
//! (GetJob), its schedule's state and next five fires (ListSchedules,
//! PreviewSchedule), its 20 latest runs (ListRuns), where it is defined
//! and what `export` writes for it, and the actions the caller's role
//! allows: run now (Enqueue, with payload and priority), enable/disable
//! (SetJobEnabled), pause/resume (PauseSchedule/ResumeSchedule), edit and
//! delete (DeleteJob).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::preview::{ScheduleInput, preview_markup};
use super::{CONFIG_NOTE, export_of, job_url, stored_spec};
use crate::http::HttpState;
use crate::web::form::{FormData, segment};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebError, WebResult};

/// Runs listed.
const RECENT_RUNS: u32 = 20;

/// What the "Run now" form holds when it is shown again after an error.
#[derive(Debug, Default)]
struct RunForm {
    payload: String,
    priority: String,
    /// (field, message): `payload`, `priority`, or `run` (the whole form).
    errors: Vec<(String, String)>,
}

fn ms(v: u64) -> String {
    if v == 0 { "—".into() } else { layout::duration_ms(v) }
}

/// What the job's attempts reported, a row per UTC day: metric sums and
/// each span's p50 / p95 (slowest first).
fn reported_days(days: &[pb::JobDay]) -> Markup {
    let us = |v: u64| {
        if v < 1000 {
            format!("{:.2} ms", v as f64 / 1000.0)
        } else {
            layout::duration_ms(v / 1000)
        }
    };
    html! {
        div.table-wrap {
            table #job-days {
                tr { th { "day" } th.num { "attempts" } th { "metrics (sum)" } th { "spans (p50 / p95)" } }
                @for d in days {
                    tr {
                        td { (d.date) }
                        td.num { (d.attempts) }
                        td { @for m in &d.metric_sums { span.mono { (m.name) "=" (m.value) } " " } }
                        td { @for sp in &d.spans { span.mono { (sp.name) " " (us(sp.p50_us)) " / " (us(sp.p95_us)) } " " } }
                    }
                }
            }
        }
    }
}

fn executor_text(job: &pb::Job) -> String {
    use pb::executor_spec::Kind;
    match job.executor.as_ref().and_then(|e| e.kind.as_ref()) {
        Some(Kind::Shell(s)) if !s.script.is_empty() => format!("shell: {}", s.script),
        Some(Kind::Shell(s)) => format!("shell (argv): {}", s.argv.join(" ")),
        Some(Kind::Builtin(b)) => {
            let args: Vec<String> = b.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("builtin: {} {}", b.name, args.join(" "))
        }
        Some(Kind::Http(h)) => format!(
            "http: {} {}",
            if h.method.is_empty() { "GET" } else { &h.method },
            h.url
        ),
        Some(Kind::Handler(h)) => format!("handler: {}", h.name),
        None => "—".into(),
    }
}

/// `GET /jobs/{name}`.
pub async fn page(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> WebResult {
    render(&state, &caller, &name, RunForm::default(), StatusCode::OK).await
}

async fn render(state: &HttpState, caller: &Caller, name: &str, run: RunForm, status: StatusCode) -> WebResult {
    let api = state.web.api()?;
    let detail = api
        .get_job(caller.request("ControllerService/GetJob", pb::GetJobRequest { name: name.into() })?)
        .await?
        .into_inner();
    let job = detail.job.unwrap_or_default();
    let stats = detail.stats.unwrap_or_default();
    let days = detail.days;
    let schedule = if job.schedule.is_empty() {
        None
    } else {
        api.list_schedules(caller.request("ControllerService/ListSchedules", pb::ListSchedulesRequest {})?)
            .await?
            .into_inner()
            .schedules
            .into_iter()
            .find(|s| s.job == job.name)
    };
    let runs = api
        .list_runs(caller.request(
            "ControllerService/ListRuns",
            pb::ListRunsRequest {
                job: job.name.clone(),
                state: String::new(),
                limit: RECENT_RUNS,
            },
        )?)
        .await?
        .into_inner()
        .runs;
    let preview = if job.schedule.is_empty() {
        None
    } else {
        let input = ScheduleInput {
            cron: job.schedule.clone(),
            timezone: job.timezone.clone(),
            dst_gap: job.dst_gap.clone(),
            dst_repeat: job.dst_repeat.clone(),
        };
        Some(preview_markup(state, caller, &input).await.0)
    };
    let spec = if caller.may("ControllerService/ExportJobs") {
        stored_spec(state, caller, &job.name)?
    } else {
        None
    };
    let url = job_url(&job.name);
    let retry = job.retry.clone().unwrap_or_default();
    let paused = schedule.as_ref().is_some_and(|s| s.paused);

    let body = html! {
        p {
            (layout::badge(if job.enabled { "enabled" } else { "disabled" }))
            @if paused { " " (layout::badge("paused")) }
            @if job.source == "config" { " " span.badge.plain { "from scheduler.yaml" } }
        }
        @if !job.description.is_empty() { p #description { (job.description) } }
        (actions(caller, &job, &url, paused))
        h2 { "Definition" }
        dl.facts #job-facts {
            dt { "schedule" } dd.mono {
                @if job.schedule.is_empty() { "manual (run by hand or by API)" }
                @else { (job.schedule) " in " (job.timezone) " (dst gap " (job.dst_gap) ", repeat " (job.dst_repeat) ")" }
            }
            dt { "executor" } dd.mono { (executor_text(&job)) }
            dt { "priority" } dd { (job.priority) }
            dt { "timeout" } dd { (if job.timeout_ms == 0 { "none".to_string() } else { layout::duration_ms(job.timeout_ms) }) }
            dt { "retry" } dd {
                (retry.max_attempts) " attempts, " (retry.backoff) " backoff from " (layout::duration_ms(retry.initial_delay_ms))
                " up to " (layout::duration_ms(retry.max_delay_ms)) ", jitter ±" (format!("{:.0}%", retry.jitter * 100.0))
            }
            dt { "overlap" } dd { (job.overlap) }
            dt { "catch up" } dd {
                (job.catch_up) " (at most " (job.max_catch_up) ")"
                @if job.catch_up_window_ms > 0 { ", within " (layout::duration_ms(job.catch_up_window_ms)) }
            }
            @if job.jitter_ms > 0 { dt { "fire jitter" } dd { (layout::duration_ms(job.jitter_ms)) } }
            dt { "concurrency" } dd { @if job.max_concurrency == 0 { "unlimited" } @else { "at most " (job.max_concurrency) } }
            dt { "depends on" } dd {
                @if job.depends_on.is_empty() { span.muted { "—" } }
                @for (i, d) in job.depends_on.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(job_url(d)) { (d) }
                }
            }
            dt { "agent selector" } dd.mono {
                @if job.selector.is_empty() { span.muted { "any agent" } }
                @else { (job.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")) }
            }
            dt { "tags" } dd {
                @if job.tags.is_empty() { span.muted { "—" } }
                @for (i, t) in job.tags.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href={ "/jobs" (crate::web::form::query_string([("tag", t.as_str())])) } { (t) }
                }
            }
            dt { "defined by" } dd { (if job.source == "config" { "the --config file (scheduler.yaml)" } else { "the API (apply, or this UI)" }) }
        }
        @if job.source == "config" { p.warn #config-note { (CONFIG_NOTE) } }
        h2 { "Stats" }
        dl.facts #job-stats {
            dt { "runs" } dd { (stats.runs_total) " (" (stats.active) " unfinished, " (stats.succeeded) " succeeded, " (stats.dead) " dead, " (stats.cancelled) " cancelled)" }
            dt { "success rate" } dd {
                @if stats.succeeded + stats.dead == 0 { span.muted { "— (nothing finished)" } }
                @else { (format!("{:.1}%", stats.success_rate * 100.0)) }
            }
            dt { "duration p50 / p95" } dd { (ms(stats.p50_duration_ms)) " / " (ms(stats.p95_duration_ms)) }
            dt { "failed attempts" } dd { (stats.failed) " failed, " (stats.timed_out) " timed out, " (stats.lost) " lost" }
            @if let Some(s) = &schedule {
                dt { "fires missed / skipped" } dd { (s.missed) " / " (s.skipped) }
                dt { "last fired" } dd { (layout::time(&s.last_fired)) }
                dt { "next fire" } dd { (layout::time(&s.next_fire)) " " span.muted { (s.next_fire_local) } }
                @if s.failing > 0 {
                    dt { "schedule" } dd.warn {
                        (layout::badge("schedule_failed")) " " (s.failing) " tries in a row failed; last error: "
                        span.mono { (s.last_error) }
                    }
                } @else if !s.last_error.is_empty() {
                    dt { "last fire error" } dd { span.mono { (s.last_error) } " (" (layout::time(&s.last_failed_at)) ")" }
                }
            }
        }
        @if !days.is_empty() {
            h2 { "Reported per day (UTC)" }
            (reported_days(&days))
        }
        @if let Some(preview) = preview {
            h2 { "Next fires" }
            div.preview #schedule-preview { (preview) }
        }
        h2 { "Recent runs" }
        @if runs.is_empty() {
            (layout::empty("No runs yet."))
        } @else {
            div.table-wrap {
                table #job-runs {
                    tr { th { "run" } th { "state" } th.hide-phone { "trigger" } th.hide-phone { "priority" } th { "created (UTC)" } th.hide-phone { "finished" } }
                    @for r in &runs {
                        tr {
                            td.mono { a href={ "/runs/" (segment(&r.id)) } { (r.id) } }
                            td { (layout::badge(&r.state)) }
                            td.hide-phone { (r.trigger) }
                            td.hide-phone { (r.priority) }
                            td { (layout::time(&r.created_at)) }
                            td.hide-phone { (layout::time(&r.finished_at)) }
                        }
                    }
                }
            }
            p { a href={ "/runs" (crate::web::form::query_string([("job", job.name.as_str())])) } { "All runs of this job" } }
        }
        @if caller.may("ControllerService/Enqueue") { (run_form(caller, &job, &url, &run)) }
        @if let Some((spec, _)) = &spec {
            h2 { "What export writes" }
            p.muted { "This job's part of " code { "workerctl export" } ", a document " code { "workerctl apply" } " accepts." }
            pre #job-export { (export_of(&job.name, spec)) }
        }
    };
    let mut response = layout::page(caller, Nav::Jobs, &job.name, body);
    *response.status_mut() = status;
    Ok(response)
}

fn actions(caller: &Caller, job: &pb::Job, url: &str, paused: bool) -> Markup {
    let manage = caller.may("ControllerService/SetJobEnabled");
    html! {
        div.actions #job-actions {
            @if manage {
                @if job.enabled {
                    form.inline method="post" action={ (url) "/disable" } {
                        (layout::csrf_field(caller))
                        button.secondary #toggle-enabled type="submit" { "Disable" }
                    }
                } @else {
                    form.inline method="post" action={ (url) "/enable" } {
                        (layout::csrf_field(caller))
                        button #toggle-enabled type="submit" { "Enable" }
                    }
                }
            }
            @if !job.schedule.is_empty() && caller.may("ControllerService/PauseSchedule") {
                form.inline method="post" action={ (url) (if paused { "/resume" } else { "/pause" }) } {
                    (layout::csrf_field(caller))
                    button.secondary #toggle-paused type="submit" { (if paused { "Resume schedule" } else { "Pause schedule" }) }
                }
            }
            @if caller.may("ControllerService/ApplyJobs") {
                a.button.secondary #edit-job href={ (url) "/edit" } { "Edit" }
            }
            @if caller.may("ControllerService/DeleteJob") {
                form.inline method="post" action={ (url) "/delete" } data-confirm={ "Really delete job " (job.name) "? Its history stays." } {
                    (layout::csrf_field(caller))
                    button.danger #delete-job type="submit" { "Delete" }
                }
            }
        }
    }
}

fn run_form(caller: &Caller, job: &pb::Job, url: &str, run: &RunForm) -> Markup {
    let bad_payload = layout::has_error(&run.errors, "payload");
    html! {
        h2 #run-now-heading { "Run now" }
        form.stack #run-now method="post" action={ (url) "/run" } aria-labelledby="run-now-heading" {
            (layout::csrf_field(caller))
            (layout::field_error(&run.errors, "run"))
            label for="payload" { "Payload (JSON, empty for null)" }
            textarea #payload name="payload" aria-invalid=[bad_payload.then_some("true")]
                aria-describedby=[bad_payload.then_some("payload-error")] { (run.payload) }
            (layout::field_error(&run.errors, "payload"))
            label for="priority" { "Priority" }
            select #priority name="priority" {
                option value="" selected[run.priority.is_empty()] { "the job's (" (job.priority) ")" }
                @for p in ["critical", "high", "normal", "low"] {
                    option value=(p) selected[run.priority == p] { (p) }
                }
            }
            (layout::field_error(&run.errors, "priority"))
            div.actions { button #run-now-submit type="submit" { "Run now" } }
        }
    }
}

/// `POST /jobs/{name}/run`: Enqueue, then the new run's page; errors next
/// to the field they concern (400).
pub async fn run_now(
    State(state): State<HttpState>,
    caller: Caller,
    Path(name): Path<String>,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult {
    let payload = form.get("payload").unwrap_or("").to_string();
    let priority = form.text("priority");
    let api = state.web.api()?;
    let request = caller.request(
        "ControllerService/Enqueue",
        pb::EnqueueRequest {
            job: name.clone(),
            payload: payload.trim().to_string(),
            priority: priority.clone(),
            trigger: "manual".into(),
            ..Default::default()
        },
    )?;
    match api.enqueue(request).await {
        Ok(answer) => {
            let id = answer.into_inner().run.map(|r| r.id).unwrap_or_default();
            Ok(layout::done(
                &caller,
                &format!("/runs/{}", segment(&id)),
                format!("Run {id} of {name} created."),
            ))
        }
        Err(status) => {
            let e = WebError::from(status);
            let field = ["payload", "priority"]
                .into_iter()
                .find(|f| e.message.starts_with(&format!("{f}:")))
                .unwrap_or("run");
            if e.status == StatusCode::NOT_FOUND {
                return Err(e);
            }
            let run = RunForm {
                payload,
                priority,
                errors: vec![(field.to_string(), e.message.clone())],
            };
            render(&state, &caller, &name, run, e.status).await
        }
    }
}

async fn one_button(caller: &Caller, name: &str, result: Result<(), WebError>, done: &str) -> Response {
    let url = job_url(name);
    match result {
        Ok(()) => layout::done(caller, &url, format!("{name}: {done}.")),
        Err(e) if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::NOT_FOUND => e.into_response(),
        Err(e) => layout::failed(caller, &url, e.message),
    }
}

async fn set_enabled(state: HttpState, caller: Caller, name: String, enabled: bool) -> Response {
    let result = async {
        let request = caller.request(
            "ControllerService/SetJobEnabled",
            pb::SetJobEnabledRequest {
                name: name.clone(),
                enabled,
            },
        )?;
        state.web.api()?.set_job_enabled(request).await?;
        Ok(())
    }
    .await;
    one_button(&caller, &name, result, if enabled { "enabled" } else { "disabled" }).await
}

/// `POST /jobs/{name}/enable`.
pub async fn enable(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> Response {
    set_enabled(state, caller, name, true).await
}

/// `POST /jobs/{name}/disable`.
pub async fn disable(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> Response {
    set_enabled(state, caller, name, false).await
}

async fn set_paused(state: HttpState, caller: Caller, name: String, paused: bool) -> Response {
    let result = async {
        let api = state.web.api()?;
        let job = pb::ScheduleRequest { job: name.clone() };
        if paused {
            api.pause_schedule(caller.request("ControllerService/PauseSchedule", job)?)
                .await?;
        } else {
            api.resume_schedule(caller.request("ControllerService/ResumeSchedule", job)?)
                .await?;
        }
        Ok(())
    }
    .await;
    one_button(
        &caller,
        &name,
        result,
        if paused { "schedule paused" } else { "schedule resumed" },
    )
    .await
}

/// `POST /jobs/{name}/pause`.
pub async fn pause(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> Response {
    set_paused(state, caller, name, true).await
}

/// `POST /jobs/{name}/resume`.
pub async fn resume(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> Response {
    set_paused(state, caller, name, false).await
}

/// `POST /jobs/{name}/delete`: DeleteJob, then the list.
pub async fn delete(State(state): State<HttpState>, caller: Caller, Path(name): Path<String>) -> Response {
    let result = async {
        let request = caller.request(
            "ControllerService/DeleteJob",
            pb::DeleteJobRequest { name: name.clone() },
        )?;
        state.web.api()?.delete_job(request).await?;
        Ok::<_, WebError>(())
    }
    .await;
    match result {
        Ok(()) => layout::done(&caller, "/jobs", format!("Job {name} deleted (its history stays).")),
        Err(e) if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::NOT_FOUND => e.into_response(),
        Err(e) => layout::failed(&caller, &job_url(&name), e.message),
    }
}
