//! `GET /jobs`: every job, 50 a page (`?page=`), searchable by name and
//! description (`?q=`) and filterable by tag (`?tag=`), with its schedule,
//! next fire, last result, success rate, a sparkline of recent durations and
//! its state.
//!
//! Read from the engine and the store rather than through the API, after the
//! ListJobs and ListSchedules role checks: the engine's job set is filtered and
//! paged first, and only the page's 50 rows are converted with their next fire
//! (ListJobs would compute it for all 10,000 jobs) and have their stats read
//! (`Store::job_list_stats`: three statements for the page, by the job index;
//! GetJob per row would read every schedule cursor once per row).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use maud::html;
use worker_proto::v1 as pb;

use super::job_url;
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
fn matches_def(job: &crate::job::JobDef, q: &str, tag: &str) -> bool {
    let text = q.is_empty() || job.name.to_lowercase().contains(q) || job.description.to_lowercase().contains(q);
    text && (tag.is_empty() || job.tags.iter().any(|t| t == tag))
}

/// Whether `job` matches the search `q` (lower case) and `tag`.
pub fn matches(job: &pb::Job, q: &str, tag: &str) -> bool {
    let text = q.is_empty() || job.name.to_lowercase().contains(q) || job.description.to_lowercase().contains(q);
    text && (tag.is_empty() || job.tags.iter().any(|t| t == tag))
}

/// `GET /jobs`.
pub async fn list(State(state): State<HttpState>, caller: Caller, query: Query) -> WebResult {
    // 503 while the controller recovers, as every page.
    state.web.api()?;
    let q = query.text("q");
    let tag = query.text("tag");
    let page: usize = query.text("page").parse().unwrap_or(1).max(1);
    // The definitions as the engine holds them (what ListJobs lists), filtered
    // and paged before anything per job is computed: converting all 10,000
    // jobs with their next fires, as ListJobs does, costs more than the page.
    caller.request("ControllerService/ListJobs", ())?;
    caller.request("ControllerService/ListSchedules", ())?;
    let engine = super::engine(&state)?;
    let set = engine.jobs();
    let tags: BTreeSet<String> = set.entries().flat_map(|e| e.def.tags.iter().cloned()).collect();
    let needle = q.to_lowercase();
    // Entries come in name order (a BTreeMap).
    let matching: Vec<&crate::config::jobs::JobEntry> =
        set.entries().filter(|e| matches_def(&e.def, &needle, &tag)).collect();
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages);
    let paused: std::collections::HashSet<String> = engine
        .store()
        .paused_schedules()
        .await
        .map_err(|e| WebError::from(tonic::Status::from(e)))?
        .into_iter()
        .collect();
    let now = chrono::Utc::now();
    let page_entries = matching.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE);
    let mut rows: Vec<pb::Job> = Vec::with_capacity(PAGE_SIZE);
    let mut schedules: BTreeMap<String, pb::Schedule> = BTreeMap::new();
    for entry in page_entries {
        let is_paused = paused.contains(&entry.def.name);
        let next = entry
            .def
            .schedule
            .as_ref()
            .filter(|_| entry.def.enabled && !is_paused)
            .and_then(|s| s.next_after(now))
            .map(|t| t.timestamp_millis());
        if entry.def.schedule.is_some() {
            schedules.insert(
                entry.def.name.clone(),
                pb::Schedule {
                    job: entry.def.name.clone(),
                    enabled: entry.def.enabled,
                    paused: is_paused,
                    next_fire: crate::time::rfc3339_opt(next),
                    ..pb::Schedule::default()
                },
            );
        }
        rows.push(crate::api::convert::job_to_proto(entry, next));
    }
    // The page's rows' stats, straight from the store (see the module docs).
    caller.request("ControllerService/GetJob", ())?;
    let store = engine.store();
    let names: Vec<String> = rows.iter().map(|j| j.name.clone()).collect();
    let stats = store
        .job_list_stats(&names, SPARK_POINTS as u32)
        .await
        .map_err(|e| WebError::from(tonic::Status::from(e)))?;
    let mut stats_of = Vec::with_capacity(rows.len());
    for record in stats {
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
