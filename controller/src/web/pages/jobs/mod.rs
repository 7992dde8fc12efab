//! `/jobs...`: the job definitions: a searchable list ([`list`]), one job's
//! page with its stats, next fires, recent runs and actions ([`detail`]), the
//! editor that creates and changes definitions ([`editor`]), and the cron
//! preview fragment the editor refreshes as you type ([`preview`]).
//!
//! Every action goes through the gRPC service (ApplyJobs, DeleteJob,
//! SetJobEnabled, PauseSchedule, ResumeSchedule, Enqueue, PreviewSchedule),
//! as do the reads it offers at a cost a page can afford (ListJobs,
//! ListSchedules, GetJob, ListRuns). Two reads go to the engine directly, each
//! for a reason given where it happens:
//! * the list's per-row stats (GetJob reads every schedule cursor per call,
//!   which a page of 50 rows over 10,000 jobs cannot afford): the store's
//!   `job_stats` for the page's rows only, concurrently, converted by the
//!   API's own `stats_to_proto`;
//! * one job's stored spec, i.e. its part of what ExportJobs writes
//!   (ExportJobs serializes every definition; the page needs one), shown
//!   only to callers that may call ExportJobs.

pub mod detail;
pub mod editor;
pub mod list;
pub mod preview;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde_yaml_ng::{Mapping, Value};

use crate::engine::Engine;
use crate::http::HttpState;
use crate::web::form::segment;
use crate::web::{Caller, WebError};

/// This area's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/jobs", get(list::list))
        .route("/jobs/new", get(editor::new_form).post(editor::create))
        .route("/jobs/preview", get(preview::fragment))
        .route("/jobs/{name}", get(detail::page))
        .route("/jobs/{name}/edit", get(editor::edit_form).post(editor::update))
        .route("/jobs/{name}/run", axum::routing::post(detail::run_now))
        .route("/jobs/{name}/enable", axum::routing::post(detail::enable))
        .route("/jobs/{name}/disable", axum::routing::post(detail::disable))
        .route("/jobs/{name}/pause", axum::routing::post(detail::pause))
        .route("/jobs/{name}/resume", axum::routing::post(detail::resume))
        .route("/jobs/{name}/delete", axum::routing::post(detail::delete))
}

/// `/jobs/{name}`, the name encoded.
pub fn job_url(name: &str) -> String {
    format!("/jobs/{}", segment(name))
}

/// The engine, or 503 while the controller recovers.
fn engine(state: &HttpState) -> Result<&Arc<Engine>, WebError> {
    state
        .readiness
        .engine()
        .ok_or_else(|| WebError::from(tonic::Status::unavailable("the controller is recovering; try again")))
}

/// A stored job's spec and whether it came from the `--config` file, for a
/// caller that may read definitions (ExportJobs); `None` for an unknown job.
fn stored_spec(state: &HttpState, caller: &Caller, name: &str) -> Result<Option<(Mapping, bool)>, WebError> {
    caller.request("ControllerService/ExportJobs", ())?;
    let jobs = engine(state)?.jobs();
    Ok(jobs
        .entry(name)
        .map(|e| (e.spec.clone(), e.source == crate::config::Source::Config)))
}

/// What `export` writes for one job: a document with just its mapping, as
/// ExportJobs writes it.
fn export_of(name: &str, spec: &Mapping) -> String {
    let mut jobs = Mapping::new();
    jobs.insert(Value::String(name.to_string()), Value::Mapping(spec.clone()));
    let mut doc = Mapping::new();
    doc.insert(Value::String("jobs".into()), Value::Mapping(jobs));
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

/// The explanation shown for a job defined in the `--config` file (what
/// happens to edits is in `engine/definitions.rs`: the file is applied again
/// only when its text changed, and then its jobs replace the stored ones).
pub const CONFIG_NOTE: &str = "Defined in scheduler.yaml of the controller's --config directory. \
    Changes made here (edit, enable, disable) are kept across restarts, but the next time the \
    controller starts with a changed scheduler.yaml that still defines this job, the file's \
    definition replaces them.";
