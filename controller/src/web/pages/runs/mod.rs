//! `/runs...`: the runs list with its filters, a run's page, its live
//! output, and the run actions (cancel, retry, cancel its workflow).
//!
//! * [`list`]: `GET /runs`, filtered by job, state and creation time;
//! * [`detail`]: `GET /runs/{id}` (facts, timings, attempts, transitions,
//!   output, the workflow's dependency graph) and the actions
//!   `POST /runs/{id}/cancel`, `/retry`, `/cancel-workflow`;
//! * [`output`]: `GET /runs/{id}/output`, the run's output as server-sent
//!   events from `FollowRunOutput` (what `app.js` appends to `pre#output`);
//! * [`workflow`]: the workflow's runs in layers, upstream first.
//!
//! Every read and action goes through the gRPC service in process; the one
//! exception is the workflow graph, which the API cannot list (see
//! [`workflow`]).

pub mod detail;
pub mod list;
pub mod output;
pub mod workflow;

use axum::Router;
use axum::routing::{get, post};

use crate::http::HttpState;
use crate::web::form::segment;
use crate::web::layout;

/// `/runs`, `/runs/{id}`, `/runs/{id}/output` and the run actions.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/runs", get(list::list))
        .route("/runs/{id}", get(detail::page))
        .route("/runs/{id}/output", get(output::follow))
        .route("/runs/{id}/cancel", post(detail::cancel))
        .route("/runs/{id}/retry", post(detail::retry))
        .route("/runs/{id}/cancel-workflow", post(detail::cancel_workflow))
}

/// The link to a run's page.
pub fn run_href(id: &str) -> String {
    format!("/runs/{}", segment(id))
}

/// The link to a job's page.
pub fn job_href(job: &str) -> String {
    format!("/jobs/{}", segment(job))
}

/// Milliseconds between two RFC 3339 instants (`None` if either is empty or
/// the end comes first).
pub fn between(start: &str, end: &str) -> Option<u64> {
    let (a, b) = (crate::time::parse_rfc3339(start)?, crate::time::parse_rfc3339(end)?);
    (b >= a).then(|| (b - a) as u64)
}

/// When the run's first attempt started ("" before it).
pub fn started_at(run: &worker_proto::v1::Run) -> &str {
    run.attempts
        .iter()
        .min_by_key(|a| a.attempt)
        .map_or("", |a| a.started_at.as_str())
}

/// How long the run has taken: first start to finish, or to now while it
/// runs ("" before it started).
pub fn run_duration(run: &worker_proto::v1::Run) -> String {
    let start = started_at(run);
    if start.is_empty() {
        return String::new();
    }
    if run.finished_at.is_empty() {
        let now = crate::time::rfc3339(crate::time::now_ms());
        between(start, &now).map_or(String::new(), |ms| format!("{} so far", layout::duration_ms(ms)))
    } else {
        between(start, &run.finished_at).map_or(String::new(), layout::duration_ms)
    }
}

/// Whether a run in `state` is over.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "dead" | "cancelled")
}

/// Whether `RetryRun` accepts a run in `state` (the engine's rule: a dead
/// run is queued again, a cancelled or succeeded one copied).
pub fn retryable(state: &str) -> bool {
    is_terminal(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_between_instants() {
        assert_eq!(between("2026-11-30T12:00:00Z", "2026-11-30T12:00:02.500Z"), Some(2500));
        assert_eq!(between("2026-11-30T12:00:02Z", "2026-11-30T12:00:00Z"), None);
        assert_eq!(between("", "2026-11-30T12:00:00Z"), None);
        assert!(retryable("dead") && retryable("cancelled") && retryable("succeeded"));
        assert!(!retryable("running") && !retryable("queued"));
    }
}
