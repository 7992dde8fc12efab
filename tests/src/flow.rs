//! Helpers for the tests of schedules, workflows and definitions: listing runs
//! and schedules, attempt intervals, and instants of a fixed-step schedule.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use worker_proto::v1 as pb;

use crate::{Controller, parse_ts, wait_for};

/// Every run of `job` (newest first), over gRPC.
pub async fn runs_of(ctl: &Controller, job: &str) -> Vec<pb::Run> {
    let runs = ctl
        .client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: job.into(),
            state: String::new(),
            limit: 1000,
        })
        .await
        .unwrap_or_else(|e| panic!("ListRuns {job}: {e}"))
        .into_inner()
        .runs;
    for r in &runs {
        assert_eq!(r.job, job, "ListRuns filtered by job returned {r:?}");
    }
    runs
}

/// Every run (all jobs), over gRPC.
pub async fn all_runs(ctl: &Controller) -> Vec<pb::Run> {
    ctl.client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: String::new(),
            state: String::new(),
            limit: 1000,
        })
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
}

/// The entry of `job` in `workerctl schedules list -o json`.
pub async fn schedule_json(ctl: &Controller, job: &str) -> Value {
    let list = ctl.cli_json(&["schedules", "list"]).await;
    crate::json::as_array(&list)
        .iter()
        .find(|s| s.get("job").and_then(Value::as_str) == Some(job))
        .cloned()
        .unwrap_or_else(|| panic!("no schedule of {job} in {list:#}"))
}

/// `v[key]` as an unsigned integer (panics when missing).
pub fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} is not an unsigned integer in {v:#}"))
}

/// An RFC 3339 field of a gRPC message (panics when empty or malformed).
pub fn ts(what: &str, s: &str) -> DateTime<Utc> {
    assert!(!s.is_empty(), "{what} is empty");
    parse_ts(what, s)
}

/// `[started_at, finished_at]` of a finished attempt.
pub fn span(run: &pb::Run, a: &pb::Attempt) -> (DateTime<Utc>, DateTime<Utc>) {
    assert!(
        !a.started_at.is_empty() && !a.finished_at.is_empty(),
        "attempt {} of run {} not finished: {run:?}",
        a.attempt,
        run.id
    );
    (ts("started_at", &a.started_at), ts("finished_at", &a.finished_at))
}

/// The first attempt's start and the last attempt's end of a finished run.
pub fn run_span(run: &pb::Run) -> (DateTime<Utc>, DateTime<Utc>) {
    let first = run
        .attempts
        .first()
        .unwrap_or_else(|| panic!("run {} has no attempt: {run:?}", run.id));
    let last = run.attempts.last().unwrap();
    (span(run, first).0, span(run, last).1)
}

/// Instants of a schedule firing every `step` seconds on multiples of `step`
/// (`*/step * * * * *`, `step` dividing 60) in `(after, until]`.
pub fn fires_between(step: i64, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    assert!(60 % step == 0, "step {step} must divide 60");
    let mut t = after.timestamp().div_euclid(step) * step + step;
    let mut out = Vec::new();
    loop {
        let at = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
        if at <= after {
            t += step;
            continue;
        }
        if at > until {
            break;
        }
        out.push(at);
        t += step;
    }
    out
}

/// Waits until `workerctl runs get ID -o json` satisfies `check` (which
/// returns `Err(what it saw)` otherwise); returns the run.
pub async fn wait_run_json<F>(ctl: &Controller, id: &str, what: &str, timeout: Duration, check: F) -> Value
where
    F: Fn(&Value) -> Result<(), String>,
{
    wait_for(what, timeout, || async {
        let out = ctl.cli(&["runs", "get", id]).await;
        if out.code != 0 {
            return Err(format!("runs get exited {}: {}", out.code, out.stderr));
        }
        let v = out.json();
        check(&v).map(|_| v.clone()).map_err(|e| format!("{e}; run: {v:#}"))
    })
    .await
}
