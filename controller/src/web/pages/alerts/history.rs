//! `GET /alerts/history`: recorded alerts (sent, failed, suppressed), newest
//! first, from `ListAlertHistory` with its filters (rule, channel, job,
//! status) in a GET form, at most [`LIMITS`]'s largest number of rows.

use axum::extract::State;
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use crate::http::HttpState;
use crate::web::form::{Query, segment};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// Rows a page may ask for (`?limit=`); the first is the default.
pub const LIMITS: [u32; 3] = [50, 200, 500];
const STATUSES: [&str; 3] = ["sent", "failed", "suppressed"];

/// `ListAlertHistory`.
pub(crate) async fn fetch(
    state: &HttpState,
    caller: &Caller,
    request: pb::ListAlertHistoryRequest,
) -> WebResult<Vec<pb::AlertHistoryEntry>> {
    Ok(state
        .web
        .api()?
        .list_alert_history(caller.request("ControllerService/ListAlertHistory", request)?)
        .await?
        .into_inner()
        .alerts)
}

/// The history table (`id="history-table"`).
pub(crate) fn table(entries: &[pb::AlertHistoryEntry]) -> Markup {
    html! {
        div.table-wrap {
            table #history-table {
                tr {
                    th { "at" } th.hide-phone { "kind" } th { "event" } th { "rule" } th { "channel" }
                    th { "job" } th.hide-phone { "run" } th { "status" } th.num.hide-phone { "attempts" }
                    th.hide-phone { "answer" } th { "title" }
                }
                @for e in entries {
                    tr {
                        td { (layout::time(&e.at)) }
                        td.hide-phone { (e.kind) }
                        td { (e.event) }
                        td.mono { (e.rule) }
                        td.mono { (e.channel) }
                        td {
                            @if !e.job.is_empty() { a href={ "/jobs/" (segment(&e.job)) } { (e.job) } }
                        }
                        td.hide-phone.mono {
                            @if !e.run_id.is_empty() { a href={ "/runs/" (segment(&e.run_id)) } { (e.run_id) } }
                        }
                        td { (layout::badge(&e.status)) }
                        td.num.hide-phone { (e.attempts) }
                        td.hide-phone.mono { (e.answer) }
                        td { (e.title) }
                    }
                }
            }
        }
    }
}

/// `GET /alerts/history?rule=&channel=&job=&status=&limit=`.
pub async fn page(State(state): State<HttpState>, caller: Caller, query: Query) -> WebResult {
    let (rule, channel, job, status) = (
        query.text("rule"),
        query.text("channel"),
        query.text("job"),
        query.text("status"),
    );
    let limit = query
        .text("limit")
        .parse::<u32>()
        .ok()
        .filter(|l| LIMITS.contains(l))
        .unwrap_or(LIMITS[0]);
    let request = pb::ListAlertHistoryRequest {
        limit,
        rule: rule.clone(),
        channel: channel.clone(),
        job: job.clone(),
        status: status.clone(),
    };
    let entries = fetch(&state, &caller, request).await?;
    let body = html! {
        form.toolbar #history-filter method="get" action="/alerts/history" {
            div {
                label for="filter-rule" { "rule" }
                input #filter-rule type="text" name="rule" value=(rule);
            }
            div {
                label for="filter-channel" { "channel" }
                input #filter-channel type="text" name="channel" value=(channel);
            }
            div {
                label for="filter-job" { "job" }
                input #filter-job type="text" name="job" value=(job);
            }
            div {
                label for="filter-status" { "status" }
                select #filter-status name="status" {
                    option value="" selected[status.is_empty()] { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[status == s] { (s) }
                    }
                }
            }
            div {
                label for="filter-limit" { "rows" }
                select #filter-limit name="limit" {
                    @for l in LIMITS {
                        option value=(l) selected[limit == l] { (l) }
                    }
                }
            }
            button type="submit" { "Filter" }
            a.button.secondary href="/alerts/history" { "Clear" }
        }
        @if entries.is_empty() {
            (layout::empty("No alert matches."))
        } @else {
            (table(&entries))
            @if entries.len() as u32 == limit {
                p.muted { "The newest " (limit) " are shown; narrow the filters or show more rows." }
            }
        }
        p { a href="/alerts" { "Back to alerts" } }
    };
    Ok(layout::page(&caller, Nav::Alerts, "Alert history", body))
}
