//! `/queue` and `/dlq`: the queue (depth per priority, queued runs in
//! dispatch order, cancel a selection) and the dead-letter queue ([`dlq`]:
//! retry or purge one run, a selection, or all).
//!
//! Reads go through `QueueStats`, `ListQueue` and `ListDlq`; actions through
//! `CancelRun`, `RetryDlq` and `PurgeDlq`, once per selected run, and the
//! flash message says how many succeeded and which failed, by run id.
//! Lists show at most [`SHOWN`] runs (the page budget); the totals come
//! from `QueueStats`.

pub mod dlq;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::runs::{job_href, run_href};
use crate::http::HttpState;
use crate::web::form::FormData;
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// Runs listed at most on `/queue` and `/dlq`.
pub const SHOWN: u32 = 100;
/// Runs one action accepts at most (a selection of a listed page).
pub const MAX_SELECTED: usize = SHOWN as usize;

/// `/queue`, `/queue/cancel`, `/dlq`, `/dlq/retry`, `/dlq/purge`.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/queue", get(queue))
        .route("/queue/cancel", post(cancel))
        .route("/dlq", get(dlq::page))
        .route("/dlq/retry", post(dlq::retry))
        .route("/dlq/purge", post(dlq::purge))
}

/// A checkbox selecting run `id` (`name="id"`), with its label for screen
/// readers.
pub fn select_box(id: &str) -> Markup {
    html! {
        label.sr-only for={ "sel-" (id) } { "select run " (id) }
        input #{ "sel-" (id) } type="checkbox" name="id" value=(id);
    }
}

/// The box that checks every `id` box of its form.
pub fn select_all(id: &str) -> Markup {
    html! {
        label.sr-only for=(id) { "select every run listed" }
        input #(id) type="checkbox" data-select-all="id";
    }
}

/// What an action on several runs did: ids done, and failures with why.
#[derive(Debug, Default)]
pub struct Tally {
    /// Runs the action applied to.
    pub done: usize,
    /// `(run id, error)` of the runs it failed for.
    pub failed: Vec<(String, String)>,
}

impl Tally {
    /// "cancelled 2 runs; 1 failed: ID: why".
    pub fn text(&self, verb: &str) -> String {
        let plural = |n: usize| if n == 1 { "run" } else { "runs" };
        let mut text = format!("{verb} {} {}", self.done, plural(self.done));
        if !self.failed.is_empty() {
            let list: Vec<String> = self
                .failed
                .iter()
                .take(10)
                .map(|(id, why)| format!("{id}: {why}"))
                .collect();
            text.push_str(&format!("; {} failed: {}", self.failed.len(), list.join("; ")));
            if self.failed.len() > 10 {
                text.push_str("; …");
            }
        }
        text
    }
}

/// The selected run ids of a form (`id`, repeated), at most
/// [`MAX_SELECTED`]; `Err` with a message when there are none or too many.
pub fn selection(form: &FormData) -> Result<Vec<String>, String> {
    let ids: Vec<String> = form
        .all("id")
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    match ids.len() {
        0 => Err("select at least one run first".into()),
        n if n > MAX_SELECTED => Err(format!("at most {MAX_SELECTED} runs at once ({n} selected)")),
        _ => Ok(ids),
    }
}

async fn queue(State(state): State<HttpState>, caller: Caller) -> WebResult {
    let api = state.web.api()?;
    let stats = api
        .queue_stats(caller.request("ControllerService/QueueStats", pb::QueueStatsRequest {})?)
        .await?
        .into_inner();
    let runs = api
        .list_queue(caller.request("ControllerService/ListQueue", pb::ListQueueRequest { limit: SHOWN })?)
        .await?
        .into_inner()
        .runs;
    let may_cancel = caller.may("ControllerService/CancelRun");
    let now = crate::time::rfc3339(crate::time::now_ms());
    let body = html! {
        div.cards {
            div.card { div.value { (stats.queued) } div.label { "queued" } }
            a.card href="/runs?state=running" { div.value { (stats.running) } div.label { "running" } }
            a.card href="/runs?state=scheduled" { div.value { (stats.scheduled) } div.label { "scheduled" } }
            a.card href="/runs?state=blocked" { div.value { (stats.blocked) } div.label { "blocked" } }
            a.card href="/dlq" { div.value { (stats.dead) } div.label { "dead" } }
        }
        h2 { "By priority" }
        div.table-wrap {
            table #queue-priorities {
                tr { th { "priority" } th.num { "queued" } th.num { "oldest waits" } }
                @for p in &stats.priorities {
                    tr {
                        td { (p.priority) }
                        td.num { (p.queued) }
                        td.num { @if p.queued > 0 { (layout::duration_ms(p.oldest_wait_ms)) } @else { span.muted { "—" } } }
                    }
                }
            }
        }
        h2 { "Queued runs, in dispatch order" }
        @if (runs.len() as u64) < stats.queued {
            p.muted #queue-cut { "The first " (runs.len()) " of " (stats.queued) " queued runs." }
        }
        @if runs.is_empty() {
            (layout::empty("Nothing is queued."))
        } @else {
            form #queue-form method="post" action="/queue/cancel" {
                @if may_cancel { (layout::csrf_field(&caller)) }
                div.table-wrap {
                    table #queue-table {
                        tr {
                            @if may_cancel { th { (select_all("queue-select-all")) } }
                            th.num { "#" } th { "run" } th { "job" } th { "priority" }
                            th.num.hide-phone { "attempt" } th { "created (UTC)" } th.num { "waiting" }
                        }
                        @for (i, run) in runs.iter().enumerate() {
                            tr {
                                @if may_cancel { td { (select_box(&run.id)) } }
                                td.num { (i + 1) }
                                td.mono { a href=(run_href(&run.id)) { (run.id) } }
                                td { a href=(job_href(&run.job)) { (run.job) } }
                                td { (run.priority) }
                                td.num.hide-phone { (run.attempts.len()) "/" (run.max_attempts) }
                                td { (layout::time(&run.created_at)) }
                                td.num { (super::runs::between(&run.created_at, &now).map(layout::duration_ms).unwrap_or_default()) }
                            }
                        }
                    }
                }
                @if may_cancel {
                    div.actions {
                        button #queue-cancel-selected .danger type="submit"
                            data-confirm="Really cancel the {checked} selected queued runs?" { "Cancel selected" }
                    }
                }
            }
        }
    };
    Ok(layout::page(&caller, Nav::Queue, "Queue", body))
}

/// `POST /queue/cancel` (`id`, repeated): `CancelRun` for each.
async fn cancel(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult<Response> {
    // Refused (403) before anything when the role may not cancel.
    caller.request("ControllerService/CancelRun", ())?;
    let ids = match selection(&form) {
        Ok(ids) => ids,
        Err(why) => return Ok(layout::failed(&caller, "/queue", why)),
    };
    let api = state.web.api()?;
    let mut tally = Tally::default();
    for id in ids {
        let request = caller.request("ControllerService/CancelRun", pb::RunRequest { id: id.clone() })?;
        match api.cancel_run(request).await {
            Ok(_) => tally.done += 1,
            Err(status) => tally.failed.push((id, status.message().to_string())),
        }
    }
    Ok(if tally.done == 0 {
        layout::failed(&caller, "/queue", tally.text("cancelled"))
    } else {
        layout::done(&caller, "/queue", tally.text("cancelled"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_read_well() {
        let mut t = Tally {
            done: 1,
            ..Tally::default()
        };
        assert_eq!(t.text("retried"), "retried 1 run");
        t.done = 3;
        t.failed.push(("01X".into(), "not dead".into()));
        assert_eq!(t.text("purged"), "purged 3 runs; 1 failed: 01X: not dead");
    }

    #[test]
    fn selections_are_bounded() {
        assert!(selection(&FormData::parse(b"csrf=x")).is_err());
        assert_eq!(selection(&FormData::parse(b"id=a&id=b&id=")).unwrap(), vec!["a", "b"]);
        let many: String = (0..=MAX_SELECTED).map(|i| format!("id={i}&")).collect();
        assert!(
            selection(&FormData::parse(many.as_bytes()))
                .unwrap_err()
                .contains("at most")
        );
    }
}
