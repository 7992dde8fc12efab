//! `GET /jobs`: every job, 50 a page (`?page=`), searchable by name and
//! description (`?q=`) and filterable by tag (`?tag=`), with its schedule,
//! next fire, last result, success rate, a sparkline of recent durations and
//! its state.
//!
//! One ListJobs and one ListSchedules per page; the stats of the page's rows
//! only are read from the store (`Store::job_stats`, concurrently with
//! `join_all`) rather than by GetJob per row, which would read every schedule
//! cursor once per row: with 10,000 jobs and 1,000,000 runs the page stays
//! fast because only its 50 rows' stats are read, each by the job index.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use maud::html;
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::{engine, job_url};
use crate::api::convert::stats_to_proto;
use crate::http::HttpState;
use crate::web::form::{Query, query_string};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebError, WebResult};

/// Rows per page.
pub const PAGE_SIZE: usize = 50;
/// Durations in a row's sparkline.
const SPARK_POINTS: usize = 20;

/// Whether `job` matches the search text `q` (lower-case) and `tag`.
pub fn matches(job: &pb::Job, q: &str, tag: &str) -> bool {
    let text = q.is_empty() || job.name.to_lowercase().contains(q) || job.description.to_lowercase().contains(q);
    text && (tag.is_empty() || job.tags.iter().any(|t| t == tag))
}

/// `GET /jobs`.
pub async fn list(State(state): State<HttpState>, caller: Caller, query: Query) -> WebResult {
    let api = state.web.api()?;
    let q = query.text("q");
    let tag = query.text("tag");
    let page: usize = query.text("page").parse().unwrap_or(1).max(1);
    let all = api
        .list_jobs(caller.request("ControllerService/ListJobs", pb::ListJobsRequest {})?)
        .await?
        .into_inner()
        .jobs;
    let tags: BTreeSet<String> = all.iter().flat_map(|j| j.tags.iter().cloned()).collect();
    let needle = q.to_lowercase();
    let mut jobs: Vec<pb::Job> = all.into_iter().filter(|j| matches(j, &needle, &tag)).collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    let total = jobs.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages);
    let rows: Vec<pb::Job> = jobs.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();

    let schedules: BTreeMap<String, pb::Schedule> = api
        .list_schedules(caller.request("ControllerService/ListSchedules", pb::ListSchedulesRequest {})?)
        .await?
        .into_inner()
        .schedules
        .into_iter()
        .map(|s| (s.job.clone(), s))
        .collect();
    // The page's rows' stats, straight from the store (see the module docs).
    caller.request("ControllerService/GetJob", ())?;
    let store = engine(&state)?.store();
    let stats = futures::future::join_all(rows.iter().map(|j| store.job_stats(&j.name))).await;
    let mut stats_of = Vec::with_capacity(rows.len());
    for s in stats {
        let record = s.map_err(|e| WebError::from(tonic::Status::from(e)))?;
        let mut spark: Vec<u64> = record
            .recent_durations_ms
            .iter()
            .take(SPARK_POINTS)
            .map(|d| (*d).max(0) as u64)
            .collect();
        spark.reverse(); // newest first in the store; oldest first in the line
        stats_of.push((stats_to_proto(record, None, (0, 0)), spark));
    }

    let page_link = |p: usize| {
        let p = p.to_string();
        format!(
            "/jobs{}",
            query_string([("q", q.as_str()), ("tag", tag.as_str()), ("page", p.as_str())])
        )
    };
    let body = html! {
        div.toolbar {
            form method="get" action="/jobs" role="search" {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(q) placeholder="name or description";
                label for="tag" { "Tag" }
                select #tag name="tag" {
                    option value="" { "any tag" }
                    @for t in &tags {
                        option value=(t) selected[*t == tag] { (t) }
                    }
                }
                " "
                button type="submit" { "Filter" }
            }
            @if caller.may("ControllerService/ApplyJobs") {
                a.button #new-job href="/jobs/new" { "New job" }
            }
        }
        p.muted { (total) " job(s)" @if !q.is_empty() || !tag.is_empty() { " match" } "." }
        @if rows.is_empty() {
            (layout::empty("No job matches. Define jobs in scheduler.yaml, with workerctl apply, or here."))
        } @else {
            div.table-wrap {
                table #jobs-table {
                    tr {
                        th { "name" }
                        th { "schedule" }
                        th { "next fire (UTC)" }
                        th { "last result" }
                        th.num { "success" }
                        th.hide-phone { "recent durations" }
                        th { "state" }
                    }
                    @for (job, (stats, spark)) in rows.iter().zip(&stats_of) {
                        @let schedule = schedules.get(&job.name);
                        tr {
                            td {
                                a href=(job_url(&job.name)) { (job.name) }
                                @if !job.description.is_empty() {
                                    div.muted.hide-phone { (job.description) }
                                }
                            }
                            td.mono {
                                @if job.schedule.is_empty() { span.muted { "manual" } }
                                @else { (job.schedule) " " span.muted { (job.timezone) } }
                            }
                            td { (layout::time(schedule.map(|s| s.next_fire.as_str()).unwrap_or(""))) }
                            td {
                                @if stats.last_run_id.is_empty() { span.muted { "—" } }
                                @else {
                                    a href={ "/runs/" (crate::web::form::segment(&stats.last_run_id)) } {
                                        (layout::badge(&stats.last_run_state))
                                    }
                                }
                            }
                            td.num {
                                @if stats.succeeded + stats.dead == 0 { span.muted { "—" } }
                                @else { (format!("{:.0}%", stats.success_rate * 100.0)) }
                            }
                            td.hide-phone { (layout::sparkline(spark)) }
                            td {
                                (layout::badge(if job.enabled { "enabled" } else { "disabled" }))
                                @if schedule.is_some_and(|s| s.paused) { " " (layout::badge("paused")) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 1 { a href=(page_link(page - 1)) rel="prev" { "← previous" } }
                    span { "page " (page) " of " (pages) }
                    @if page < pages { a href=(page_link(page + 1)) rel="next" { "next →" } }
                }
            }
        }
    };
    Ok(layout::page(&caller, Nav::Jobs, "Jobs", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_looks_at_name_and_description_and_tags_exactly() {
        let job = pb::Job {
            name: "nightly.report".into(),
            description: "Sends the Report".into(),
            tags: vec!["mail".into()],
            ..Default::default()
        };
        assert!(matches(&job, "", ""));
        assert!(matches(&job, "report", "mail"));
        assert!(matches(&job, "sends", ""));
        assert!(!matches(&job, "backup", ""));
        assert!(!matches(&job, "", "mai"));
    }
}
