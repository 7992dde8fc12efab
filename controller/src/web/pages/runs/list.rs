//! `GET /runs`: runs, newest first, filtered by job, state and creation time.
//!
//! Job and state go to `ListRuns`. `ListRuns` has no time filter, so `since`
//! and `until` (UTC; a `datetime-local` value or RFC 3339) are applied to the
//! runs it returns: the newest `limit` runs of the job and state (default
//! [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]). When that page was full, older
//! runs may match too, and the page says so (raise the limit or narrow the
//! job/state filter). The matching runs are shown [`PER_PAGE`] at a time.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use maud::{Markup, html};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::{job_href, run_duration, run_href, started_at};
use crate::http::HttpState;
use crate::web::form::{Query, query_string};
use crate::web::layout::{self, Nav};
use crate::web::{Caller, WebResult};

/// Runs asked of `ListRuns` when the form names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u32 = 1000;
/// Rows shown on one page.
pub const PER_PAGE: usize = 100;
/// States offered by the state filter ("" = any).
pub const STATES: &[&str] = &[
    "",
    "scheduled",
    "blocked",
    "queued",
    "running",
    "succeeded",
    "dead",
    "cancelled",
];

/// The filter as the form sent it.
#[derive(Debug, Default, Clone)]
struct Filter {
    job: String,
    state: String,
    since: String,
    until: String,
    limit: String,
    page: usize,
}

impl Filter {
    fn of(q: &Query) -> Filter {
        Filter {
            job: q.text("job"),
            state: q.text("state"),
            since: q.text("since"),
            until: q.text("until"),
            limit: q.text("limit"),
            page: q.text("page").parse().unwrap_or(1).max(1),
        }
    }

    /// The query string of this filter on page `page`.
    fn href(&self, page: usize) -> String {
        let page = page.to_string();
        let page = if page == "1" { "" } else { page.as_str() };
        format!(
            "/runs{}",
            query_string([
                ("job", self.job.as_str()),
                ("state", self.state.as_str()),
                ("since", self.since.as_str()),
                ("until", self.until.as_str()),
                ("limit", self.limit.as_str()),
                ("page", page),
            ])
        )
    }
}

/// Parses a time filter: RFC 3339, or a `datetime-local` value
/// (`2026-11-30T12:00` or with seconds), read as UTC.
pub fn parse_instant(text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(ms) = crate::time::parse_rfc3339(text) {
        return Ok(Some(ms));
    }
    let text = text.replace(' ', "T");
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&text, format) {
            return Ok(Some(t.and_utc().timestamp_millis()));
        }
    }
    Err(format!(
        "\"{}\" is not a time: use 2026-11-30T12:00 (UTC) or RFC 3339",
        text.chars().take(40).collect::<String>()
    ))
}

/// The value a `datetime-local` input shows for `ms` (UTC, to the second).
fn local_value(ms: Option<i64>) -> String {
    ms.map(|ms| crate::time::rfc3339(ms).get(..19).unwrap_or("").to_string())
        .unwrap_or_default()
}

/// `GET /runs`.
pub async fn list(axum::extract::State(state): State<HttpState>, caller: Caller, query: Query) -> WebResult {
    let filter = Filter::of(&query);
    let mut errors: Vec<(String, String)> = Vec::new();
    let since = parse_instant(&filter.since).unwrap_or_else(|e| {
        errors.push(("since".into(), e));
        None
    });
    let until = parse_instant(&filter.until).unwrap_or_else(|e| {
        errors.push(("until".into(), e));
        None
    });
    let limit = match filter.limit.as_str() {
        "" => DEFAULT_LIMIT,
        text => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(("limit".into(), format!("give a number of runs from 1 to {MAX_LIMIT}")));
                DEFAULT_LIMIT
            }
        },
    };
    let mut runs = Vec::new();
    let mut truncated = false;
    let mut full = false;
    if errors.is_empty() {
        let request = pb::ListRunsRequest {
            job: filter.job.clone(),
            state: filter.state.clone(),
            limit,
        };
        match state
            .web
            .api()?
            .list_runs(caller.request("ControllerService/ListRuns", request)?)
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                truncated = answer.truncated;
                full = answer.runs.len() as u32 >= limit;
                runs = answer.runs;
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let field = ["state", "job", "limit"]
                    .into_iter()
                    .find(|f| status.message().starts_with(&format!("{f}:")))
                    .unwrap_or("job");
                errors.push((field.into(), status.message().to_string()));
            }
            Err(status) => return Err(status.into()),
        }
    }
    let fetched = runs.len();
    let oldest_fetched = runs.last().and_then(|r| crate::time::parse_rfc3339(&r.created_at));
    runs.retain(|r| {
        let at = crate::time::parse_rfc3339(&r.created_at).unwrap_or(0);
        since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u)
    });
    // Older runs than those fetched may match: the page was full and the
    // time window reaches back past the oldest fetched run.
    let maybe_more = (full || truncated) && since.is_none_or(|s| oldest_fetched.is_none_or(|o| o > s));
    let pages = runs.len().div_ceil(PER_PAGE).max(1);
    let page = filter.page.min(pages);
    let shown = &runs[(page - 1) * PER_PAGE..(page * PER_PAGE).min(runs.len())];

    let body = html! {
        (filter_form(&filter, since, until, &errors))
        @if errors.is_empty() {
            p.muted #runs-summary {
                (runs.len()) " matching run" @if runs.len() != 1 { "s" }
                " among the newest " (fetched) " the API returned"
                @if filter.job.is_empty() && filter.state.is_empty() { "" } @else { " for this job and state" }
                "."
                @if maybe_more {
                    " " span.warn #runs-cut {
                        "The limit of " (limit) " runs cut the list"
                        @if truncated { " (or the reply-size budget did)" }
                        ": older runs may match too. Raise the limit or narrow the job or state."
                    }
                }
            }
            @if shown.is_empty() {
                (layout::empty("No run matches."))
            } @else {
                (table(shown))
                @if pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if page > 1 { a href=(filter.href(page - 1)) rel="prev" { "← newer" } }
                        span { "page " (page) " of " (pages) }
                        @if page < pages { a href=(filter.href(page + 1)) rel="next" { "older →" } }
                    }
                }
            }
        }
    };
    let response = layout::page(&caller, Nav::Runs, "Runs", body);
    Ok(if errors.is_empty() {
        response
    } else {
        (StatusCode::BAD_REQUEST, response).into_response()
    })
}

fn filter_form(filter: &Filter, since: Option<i64>, until: Option<i64>, errors: &[(String, String)]) -> Markup {
    let field = |name: &str| layout::has_error(errors, name).then_some("true");
    let described = |name: &str| layout::has_error(errors, name).then(|| format!("{name}-error"));
    let since_value = if layout::has_error(errors, "since") {
        filter.since.clone()
    } else {
        local_value(since)
    };
    let until_value = if layout::has_error(errors, "until") {
        filter.until.clone()
    } else {
        local_value(until)
    };
    html! {
        form.toolbar #runs-filter method="get" action="/runs" {
            div {
                label for="filter-job" { "Job" }
                input #filter-job type="search" name="job" value=(filter.job) placeholder="any job"
                    aria-invalid=[field("job")] aria-describedby=[described("job")];
                (layout::field_error(errors, "job"))
            }
            div {
                label for="filter-state" { "State" }
                select #filter-state name="state" aria-invalid=[field("state")] aria-describedby=[described("state")] {
                    @for s in STATES {
                        option value=(s) selected[*s == filter.state] { @if s.is_empty() { "any state" } @else { (s) } }
                    }
                    @if !STATES.contains(&filter.state.as_str()) {
                        option value=(filter.state) selected { (filter.state) }
                    }
                }
                (layout::field_error(errors, "state"))
            }
            div {
                label for="filter-since" { "Created from (UTC)" }
                input #filter-since type="datetime-local" step="1" name="since" value=(since_value)
                    aria-invalid=[field("since")] aria-describedby=[described("since")];
                (layout::field_error(errors, "since"))
            }
            div {
                label for="filter-until" { "Created before (UTC)" }
                input #filter-until type="datetime-local" step="1" name="until" value=(until_value)
                    aria-invalid=[field("until")] aria-describedby=[described("until")];
                (layout::field_error(errors, "until"))
            }
            div {
                label for="filter-limit" { "Newest runs searched" }
                input #filter-limit type="number" min="1" max=(MAX_LIMIT) name="limit"
                    value=(filter.limit) placeholder=(DEFAULT_LIMIT)
                    aria-invalid=[field("limit")] aria-describedby=[described("limit")];
                (layout::field_error(errors, "limit"))
            }
            div { button type="submit" { "Filter" } " " a href="/runs" { "clear" } }
        }
    }
}

/// The runs table (`table#runs-table`).
fn table(runs: &[pb::Run]) -> Markup {
    html! {
        div.table-wrap {
            table #runs-table {
                tr {
                    th { "run" } th { "job" } th { "state" } th.hide-phone { "priority" }
                    th.hide-phone { "trigger" } th.num { "attempt" } th { "created (UTC)" }
                    th.hide-phone { "started / finished" } th.num { "duration" }
                }
                @for run in runs {
                    tr {
                        td.mono { a href=(run_href(&run.id)) { (run.id) } }
                        td { a href=(job_href(&run.job)) { (run.job) } }
                        td { (layout::badge(&run.state)) }
                        td.hide-phone { (run.priority) }
                        td.hide-phone { (run.trigger) }
                        td.num { (run.attempts.len()) "/" (run.max_attempts) }
                        td { (layout::time(&run.created_at)) }
                        td.hide-phone { (layout::time(started_at(run))) br; (layout::time(&run.finished_at)) }
                        td.num { (run_duration(run)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters_accept_local_and_rfc3339() {
        let at = crate::time::parse_rfc3339("2026-11-30T12:00:00Z").unwrap();
        assert_eq!(parse_instant("2026-11-30T12:00").unwrap(), Some(at));
        assert_eq!(parse_instant("2026-11-30T12:00:00").unwrap(), Some(at));
        assert_eq!(parse_instant("2026-11-30 12:00:00").unwrap(), Some(at));
        assert_eq!(parse_instant("2026-11-30T13:00:00+01:00").unwrap(), Some(at));
        assert_eq!(parse_instant("").unwrap(), None);
        assert!(parse_instant("yesterday").unwrap_err().contains("not a time"));
        assert_eq!(local_value(Some(at)), "2026-11-30T12:00:00");
    }

    #[test]
    fn filter_links_keep_the_filter() {
        let f = Filter {
            job: "a b".into(),
            state: "dead".into(),
            ..Filter::default()
        };
        assert_eq!(f.href(1), "/runs?job=a+b&state=dead");
        assert_eq!(f.href(2), "/runs?job=a+b&state=dead&page=2");
    }
}
