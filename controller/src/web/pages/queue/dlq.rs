//! `/dlq`: the dead-letter queue. The newest [`super::SHOWN`] dead runs in
//! one form (`form#dlq-form`): a box per run and one to select all, a retry
//! and a purge button per run, and buttons to retry or purge the selection
//! or every dead run, each asking first (naming how many runs).
//!
//! The per-run buttons submit the same form to `/dlq/retry` or `/dlq/purge`
//! with `only=ID` (`formaction`), so they need no form of their own; a form
//! sent with `id` fields acts on those, one with `all=true` on every dead
//! run (`RetryDlq`/`PurgeDlq` with `all`).

use axum::extract::State;
use axum::response::Response;
use maud::html;
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::{SHOWN, Tally, select_all, select_box, selection};
use crate::http::HttpState;
use crate::web::form::FormData;
use crate::web::layout::{self, Nav};
use crate::web::pages::runs::{job_href, run_href};
use crate::web::{Caller, WebResult};

/// `GET /dlq`.
pub async fn page(State(state): State<HttpState>, caller: Caller) -> WebResult {
    let api = state.web.api()?;
    let stats = api
        .queue_stats(caller.request("ControllerService/QueueStats", pb::QueueStatsRequest {})?)
        .await?
        .into_inner();
    let runs = api
        .list_dlq(caller.request("ControllerService/ListDlq", pb::ListDlqRequest { limit: SHOWN })?)
        .await?
        .into_inner()
        .runs;
    let may_retry = caller.may("ControllerService/RetryDlq");
    let may_purge = caller.may("ControllerService/PurgeDlq");
    let may_act = may_retry || may_purge;
    let dead = stats.dead.max(runs.len() as u64);
    let body = html! {
        p #dlq-summary {
            (dead) " dead run" @if dead != 1 { "s" } ": runs that used up their attempts (or failed with an exit code that is not retried). "
            "Retry queues a run again with a fresh attempt budget; purge deletes it with its history."
        }
        @if (runs.len() as u64) < dead {
            p.muted #dlq-cut { "The newest " (runs.len()) " of " (dead) " dead runs." }
        }
        @if runs.is_empty() {
            (layout::empty("The dead-letter queue is empty."))
        } @else {
            form #dlq-form method="post" action="/dlq/retry" {
                @if may_act { (layout::csrf_field(&caller)) }
                div.table-wrap {
                    table #dlq-table {
                        tr {
                            @if may_act { th { (select_all("dlq-select-all")) } }
                            th { "run" } th { "job" } th { "error" } th.num { "attempts" }
                            th.hide-phone { "finished (UTC)" }
                            @if may_act { th { "actions" } }
                        }
                        @for run in &runs {
                            @let error = run.attempts.iter().max_by_key(|a| a.attempt).map_or("", |a| a.error.as_str());
                            tr {
                                @if may_act { td { (select_box(&run.id)) } }
                                td.mono { a href=(run_href(&run.id)) { (run.id) } }
                                td { a href=(job_href(&run.job)) { (run.job) } }
                                td {
                                    (run.reason)
                                    @if !error.is_empty() && error != run.reason { br; span.muted { (error) } }
                                }
                                td.num { (run.attempts.len()) }
                                td.hide-phone { (layout::time(&run.finished_at)) }
                                @if may_act {
                                    td.actions {
                                        @if may_retry {
                                            button #{ "retry-dlq-" (run.id) } type="submit" formaction="/dlq/retry"
                                                name="only" value=(run.id) { "Retry" }
                                        }
                                        @if may_purge {
                                            button #{ "purge-dlq-" (run.id) } .danger type="submit" formaction="/dlq/purge"
                                                name="only" value=(run.id)
                                                data-confirm={ "Really purge dead run " (run.id) "? Its history is deleted." } { "Purge" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if may_act {
                    div.actions {
                        @if may_retry {
                            button #dlq-retry-selected type="submit" formaction="/dlq/retry"
                                data-confirm="Retry the {checked} selected dead runs?" { "Retry selected" }
                        }
                        @if may_purge {
                            button #dlq-purge-selected .danger type="submit" formaction="/dlq/purge"
                                data-confirm="Really purge the {checked} selected dead runs? Their history is deleted." { "Purge selected" }
                        }
                    }
                }
            }
            @if may_act {
                div.actions #dlq-all {
                    @if may_retry {
                        (layout::action_button(&caller, "/dlq/retry", Some("dlq-retry-all"), &format!("Retry all {dead}"), "secondary",
                            &[("all", "true")], Some(&format!("Retry all {dead} dead runs?"))))
                    }
                    @if may_purge {
                        (layout::action_button(&caller, "/dlq/purge", Some("dlq-purge-all"), &format!("Purge all {dead}"), "danger",
                            &[("all", "true")], Some(&format!("Really purge all {dead} dead runs? Their history is deleted."))))
                    }
                }
            }
        }
    };
    Ok(layout::page(&caller, Nav::Dlq, "Dead-letter queue", body))
}

#[derive(Clone, Copy)]
enum Act {
    Retry,
    Purge,
}

impl Act {
    fn method(self) -> &'static str {
        match self {
            Act::Retry => "ControllerService/RetryDlq",
            Act::Purge => "ControllerService/PurgeDlq",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Act::Retry => "retried",
            Act::Purge => "purged",
        }
    }
}

async fn call(state: &HttpState, caller: &Caller, act: Act, request: pb::DlqRequest) -> WebResult<Vec<String>> {
    let api = state.web.api()?;
    let request = caller.request(act.method(), request)?;
    let answer = match act {
        Act::Retry => api.retry_dlq(request).await,
        Act::Purge => api.purge_dlq(request).await,
    };
    Ok(answer?.into_inner().run_ids)
}

/// Acts on `all`, the one run `only`, or the selected `id`s.
async fn act(state: HttpState, caller: Caller, form: FormData, act: Act) -> WebResult<Response> {
    // Refused (403) before anything when the role may not.
    caller.request(act.method(), ())?;
    let mut tally = Tally::default();
    if form.checked("all") {
        match call(
            &state,
            &caller,
            act,
            pb::DlqRequest {
                id: String::new(),
                all: true,
            },
        )
        .await
        {
            Ok(ids) => tally.done = ids.len(),
            Err(e) => return Ok(layout::failed(&caller, "/dlq", e.message)),
        }
    } else {
        let ids = match form.get("only").map(str::trim).filter(|s| !s.is_empty()) {
            Some(only) => vec![only.to_string()],
            None => match selection(&form) {
                Ok(ids) => ids,
                Err(why) => return Ok(layout::failed(&caller, "/dlq", why)),
            },
        };
        for id in ids {
            match call(
                &state,
                &caller,
                act,
                pb::DlqRequest {
                    id: id.clone(),
                    all: false,
                },
            )
            .await
            {
                Ok(done) => tally.done += done.len(),
                Err(e) => tally.failed.push((id, e.message)),
            }
        }
    }
    let text = tally.text(act.verb());
    Ok(if tally.done == 0 && !tally.failed.is_empty() {
        layout::failed(&caller, "/dlq", text)
    } else {
        layout::done(&caller, "/dlq", text)
    })
}

/// `POST /dlq/retry`: `RetryDlq` for `all`, `only` or each `id`.
pub async fn retry(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult<Response> {
    act(state, caller, form, Act::Retry).await
}

/// `POST /dlq/purge`: `PurgeDlq` for `all`, `only` or each `id`.
pub async fn purge(
    State(state): State<HttpState>,
    caller: Caller,
    axum::Extension(form): axum::Extension<FormData>,
) -> WebResult<Response> {
    act(state, caller, form, Act::Purge).await
}
