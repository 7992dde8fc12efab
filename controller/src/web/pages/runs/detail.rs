//! `GET /runs/{id}`: one run. Its facts and timings (created, the wait in
//! the queue, started, finished, durations), its attempts, its state
//! transitions, its output (the stored tails once it is over; live over
//! [`super::output`] while it is not), the dependency graph of its workflow,
//! and the actions its state and the caller's role allow: cancel while it is
//! not over, retry once it is (`RetryRun`'s rule), cancel the workflow while
//! some of its runs are not over.
//!
//! The page stays under its budget: the payload is shown up to
//! [`PAYLOAD_SHOWN`] bytes, the stored output up to [`OUTPUT_SHOWN`] bytes
//! (newest attempts first), the newest [`ROWS_SHOWN`] attempts and
//! transitions.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::output::{attempt_end_line, attempt_heading};
use super::{between, is_terminal, job_href, retryable, run_duration, run_href, started_at, workflow};
use crate::http::HttpState;
use crate::web::form::FormData;
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// Payload bytes shown at most.
pub const PAYLOAD_SHOWN: usize = 16 * 1024;
/// Stored output bytes shown at most, over all attempts.
pub const OUTPUT_SHOWN: usize = 128 * 1024;
/// Attempts and transitions listed at most (the newest).
pub const ROWS_SHOWN: usize = 100;

/// The last `max` bytes of `text` (on a character boundary) and whether it
/// was cut.
fn tail(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut at = text.len() - max;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    (&text[at..], true)
}

/// The first `max` bytes of `text` (on a character boundary).
fn head(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    (&text[..at], true)
}

/// `GET /runs/{id}`.
pub async fn page(State(state): State<HttpState>, caller: Caller, Path(id): Path<String>) -> WebResult {
    let api = state.web.api()?;
    let run = api
        .get_run(caller.request("ControllerService/GetRun", pb::GetRunRequest { id: id.clone() })?)
        .await?
        .into_inner();
    let graph = if !run.workflow_id.is_empty() {
        workflow::load(&state, &run.workflow_id).await?
    } else if !run.depends_on.is_empty() {
        Some(workflow::load_upstream(&state, &run.id).await?)
    } else {
        None
    };
    let terminal = is_terminal(&run.state);
    let href = run_href(&run.id);
    let actions = html! {
        div.actions #run-actions {
            @if !terminal && caller.may("ControllerService/CancelRun") {
                (layout::action_button(&caller, &format!("{href}/cancel"), Some("cancel-run"), "Cancel run", "danger", &[],
                    Some(&format!("Really cancel run {} of {}?", run.id, run.job))))
            }
            @if retryable(&run.state) && caller.may("ControllerService/RetryRun") {
                (layout::action_button(&caller, &format!("{href}/retry"), Some("retry-run"),
                    if run.state == "dead" { "Retry (queue again)" } else { "Retry as a new run" }, "", &[], None))
            }
        }
    };
    let workflow_actions = html! {
        @if let Some(g) = &graph {
            @if !g.id.is_empty() && g.unfinished > 0 && caller.may("ControllerService/CancelWorkflow") {
                div.actions {
                    (layout::action_button(&caller, &format!("{href}/cancel-workflow"), Some("cancel-workflow"), "Cancel workflow", "danger",
                        &[("workflow", g.id.as_str())],
                        Some(&format!("Really cancel the {} unfinished runs of workflow {}?", g.unfinished, g.id))))
                }
            }
        }
    };
    let body = html! {
        (actions)
        (facts(&run))
        h2 { "Timings" }
        (timings(&run))
        h2 { "Payload" }
        (payload(&run.payload))
        h2 { "Attempts" }
        (attempts(&run))
        @if run.attempts.iter().any(|a| !a.metrics.is_empty() || !a.spans.is_empty()) {
            h2 { "Reported" }
            (reported(&run))
        }
        h2 { "Transitions" }
        (transitions(&run))
        h2 { "Output" }
        (output(&run))
        @if let Some(g) = &graph {
            (workflow::render(g, &run.id, workflow_actions))
        }
    };
    Ok(layout::page(&caller, Nav::Runs, &format!("Run {}", run.id), body))
}

fn facts(run: &pb::Run) -> Markup {
    html! {
        dl.facts {
            dt { "job" } dd { a href=(job_href(&run.job)) { (run.job) } }
            dt { "state" } dd #run-state { (layout::badge(&run.state)) }
            @if !run.reason.is_empty() { dt { "reason" } dd { (run.reason) } }
            dt { "priority" } dd { (run.priority) }
            dt { "trigger" } dd { (run.trigger) }
            dt { "attempts" } dd { (run.attempts.len()) " of at most " (run.max_attempts) }
            @if !run.idempotency_key.is_empty() { dt { "idempotency key" } dd.mono { (run.idempotency_key) } }
            @if !run.depends_on.is_empty() {
                dt { "waits on" }
                dd {
                    @for (i, up) in run.depends_on.iter().enumerate() {
                        @if i > 0 { ", " }
                        a.mono href=(run_href(up)) { (up) }
                    }
                }
            }
            @if !run.workflow_id.is_empty() {
                dt { "workflow" } dd { a.mono href="#workflow" { (run.workflow_id) } }
            }
        }
    }
}

fn timings(run: &pb::Run) -> Markup {
    let queued_at = run
        .transitions
        .iter()
        .find(|t| t.to_state == "queued")
        .map_or(run.created_at.as_str(), |t| t.at.as_str());
    let started = started_at(run);
    let now = crate::time::rfc3339(crate::time::now_ms());
    let wait = if !started.is_empty() {
        between(queued_at, started).map(layout::duration_ms)
    } else if run.state == "queued" {
        between(queued_at, &now).map(|ms| format!("{} so far", layout::duration_ms(ms)))
    } else {
        None
    };
    let total = if run.finished_at.is_empty() {
        None
    } else {
        between(&run.created_at, &run.finished_at).map(layout::duration_ms)
    };
    html! {
        dl.facts #timings {
            dt { "created" } dd { (layout::time(&run.created_at)) }
            @if !run.scheduled_for.is_empty() { dt { "scheduled for" } dd { (layout::time(&run.scheduled_for)) } }
            @if !run.not_before.is_empty() { dt { "not before" } dd { (layout::time(&run.not_before)) } }
            dt { "waited in the queue" } dd { (wait.unwrap_or_else(|| "—".into())) }
            dt { "started" } dd { (layout::time(started)) }
            dt { "finished" } dd { (layout::time(&run.finished_at)) }
            dt { "ran for" } dd { @let d = run_duration(run); @if d.is_empty() { "—" } @else { (d) } }
            dt { "created to finished" } dd { (total.unwrap_or_else(|| "—".into())) }
        }
    }
}

fn payload(text: &str) -> Markup {
    if text.is_empty() || text == "null" {
        return html! { p.muted { "No payload." } };
    }
    let (shown, cut) = head(text, PAYLOAD_SHOWN);
    html! {
        pre #payload { (shown) }
        @if cut { p.muted { "The first " (shown.len()) " of " (text.len()) " bytes; " code { "workerctl runs get " } "shows it whole." } }
    }
}

fn attempts(run: &pb::Run) -> Markup {
    let skip = run.attempts.len().saturating_sub(ROWS_SHOWN);
    html! {
        div.table-wrap {
            table #attempts {
                tr {
                    th.num { "#" } th { "agent" } th { "outcome" } th.num { "exit code" } th { "error" }
                    th.hide-phone { "started (UTC)" } th.num { "duration" }
                }
                @if run.attempts.is_empty() {
                    tr { td colspan="7" { span.muted { "No attempt yet." } } }
                }
                @for a in &run.attempts[skip..] {
                    tr {
                        td.num { (a.attempt) }
                        td { (a.agent) }
                        td { @if a.outcome.is_empty() { (layout::badge("running")) } @else { (layout::badge(&a.outcome)) } }
                        td.num { @if let Some(code) = a.exit_code { (code) } @else { span.muted { "—" } } }
                        td { (a.error) }
                        td.hide-phone { (layout::time(&a.started_at)) }
                        td.num {
                            @if a.outcome.is_empty() { span.muted { "running" } }
                            @else { (layout::duration_ms(a.duration_ms)) }
                        }
                    }
                }
            }
        }
        @if skip > 0 { p.muted { "The newest " (ROWS_SHOWN) " of " (run.attempts.len()) " attempts." } }
    }
}

/// What the attempts reported: metrics, and time per operation (slowest
/// first), newest attempt first.
fn reported(run: &pb::Run) -> Markup {
    let ms = |us: u64| {
        if us < 1000 {
            format!("{:.2} ms", us as f64 / 1000.0)
        } else {
            layout::duration_ms(us / 1000)
        }
    };
    html! {
        @for a in run.attempts.iter().rev().filter(|a| !a.metrics.is_empty() || !a.spans.is_empty()) {
            h3 { "Attempt " (a.attempt) }
            @if !a.metrics.is_empty() {
                dl.facts #{"metrics-" (a.attempt)} {
                    @for m in &a.metrics { dt { (m.name) } dd { (m.value) } }
                }
            }
            @if !a.spans.is_empty() {
                div.table-wrap {
                    table #{"spans-" (a.attempt)} {
                        tr { th { "span" } th.num { "count" } th.num { "total" } th.num { "longest" } }
                        @for sp in &a.spans {
                            tr {
                                td { (sp.name) }
                                td.num { (sp.count) }
                                td.num { (ms(sp.total_us)) }
                                td.num { (ms(sp.max_us)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn transitions(run: &pb::Run) -> Markup {
    let skip = run.transitions.len().saturating_sub(ROWS_SHOWN);
    html! {
        div.table-wrap {
            table #transitions {
                tr { th { "from" } th { "to" } th { "at (UTC)" } th { "reason" } }
                @for t in &run.transitions[skip..] {
                    tr {
                        td { @if t.from_state.is_empty() { span.muted { "created" } } @else { (layout::badge(&t.from_state)) } }
                        td { (layout::badge(&t.to_state)) }
                        td { (layout::time(&t.at)) }
                        td { (t.reason) }
                    }
                }
            }
        }
        @if skip > 0 { p.muted { "The newest " (ROWS_SHOWN) " of " (run.transitions.len()) " transitions." } }
    }
}

fn output(run: &pb::Run) -> Markup {
    let follow = format!("{}/output", run_href(&run.id));
    if !is_terminal(&run.state) {
        return html! {
            pre #output data-follow=(follow) data-reload-on-end { "Waiting for output…" }
            p data-follow-status aria-live="polite" { "Live output needs JavaScript; reload the page to see more." }
        };
    }
    // Newest attempts first within the budget, shown oldest first.
    let mut budget = OUTPUT_SHOWN;
    let mut parts = Vec::new();
    let mut attempts: Vec<&pb::Attempt> = run.attempts.iter().collect();
    attempts.sort_by_key(|a| std::cmp::Reverse(a.attempt));
    for a in attempts {
        let (text, cut) = tail(&a.output, budget);
        budget -= text.len();
        parts.push((a, text, cut));
    }
    parts.reverse();
    html! {
        pre #output {
            @if parts.is_empty() { span.log-meta { "No attempt ran." } }
            @for (a, text, cut) in &parts {
                span.log-meta { (attempt_heading(a.attempt, &a.agent)) "\n" }
                @if *cut { span.log-meta { "[... earlier output not shown ...]\n" } }
                (text)
                @if !text.is_empty() && !text.ends_with('\n') { "\n" }
                span.log-meta { (attempt_end_line(a.attempt, &a.outcome, a.exit_code, &a.error)) "\n" }
            }
        }
    }
}

fn refused_or(caller: &Caller, to: &str, status: tonic::Status) -> WebResult {
    if status.code() == tonic::Code::PermissionDenied {
        return Err(status.into());
    }
    Ok(layout::failed(caller, to, status.message().to_string()))
}

/// `POST /runs/{id}/cancel`.
pub async fn cancel(State(state): State<HttpState>, caller: Caller, Path(id): Path<String>) -> WebResult<Response> {
    let request = caller.request("ControllerService/CancelRun", pb::RunRequest { id: id.clone() })?;
    let to = run_href(&id);
    match state.web.api()?.cancel_run(request).await {
        Ok(run) => {
            let run = run.into_inner();
            let text = if run.state == "cancelled" {
                format!("run {} cancelled", run.id)
            } else {
                format!("cancel of run {} requested: its agent is stopping it", run.id)
            };
            Ok(layout::done(&caller, &to, text))
        }
        Err(status) => refused_or(&caller, &to, status),
    }
}

/// `POST /runs/{id}/retry`.
pub async fn retry(State(state): State<HttpState>, caller: Caller, Path(id): Path<String>) -> WebResult<Response> {
    let request = caller.request("ControllerService/RetryRun", pb::RunRequest { id: id.clone() })?;
    match state.web.api()?.retry_run(request).await {
        Ok(run) => {
            let run = run.into_inner();
            let text = if run.id == id {
                format!("run {id} queued again")
            } else {
                format!("run {id} retried as run {}", run.id)
            };
            Ok(layout::done(&caller, &run_href(&run.id), text))
        }
        Err(status) => refused_or(&caller, &run_href(&id), status),
    }
}

/// `POST /runs/{id}/cancel-workflow` (field `workflow`).
pub async fn cancel_workflow(
    State(state): State<HttpState>,
    caller: Caller,
    Path(id): Path<String>,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult<Response> {
    let workflow = form.text("workflow");
    let request = caller.request(
        "ControllerService/CancelWorkflow",
        pb::WorkflowRequest { id: workflow.clone() },
    )?;
    let to = run_href(&id);
    match state.web.api()?.cancel_workflow(request).await {
        Ok(runs) => {
            let n = runs.into_inner().runs.len();
            let plural = if n == 1 { "" } else { "s" };
            Ok(layout::done(
                &caller,
                &to,
                format!("cancelled {n} run{plural} of workflow {workflow}"),
            ))
        }
        Err(status) => refused_or(&caller, &to, status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(tail("ab€", 4), ("b€", true));
        assert_eq!(tail("ab€", 3), ("€", true));
        assert_eq!(tail("ab€", 2), ("", true));
        assert_eq!(tail("xyz", 2), ("yz", true));
        assert_eq!(head("€abc", 2), ("", true));
        assert_eq!(head("€abc", 4), ("€a", true));
        assert_eq!(head("abc", 5), ("abc", false));
    }
}
