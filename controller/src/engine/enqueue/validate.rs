//! Validating enqueue requests and building the runs they create: limits,
//! payload checks, a job's upstream chain, cycles among the items of a batch,
//! run ids and the `NewRun`/`RunRecord` of a new run. No store access and no
//! engine state: everything here is a function of its arguments, so the
//! submission and commit code in [`super`] reads as steps.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::EnqueueRequest;
use crate::config::JobSet;
use crate::error::{Error, Result};
use crate::job::JobDef;
use crate::limits::exceeds;
use crate::model::{Priority, RunState, Trigger};
use crate::store::{NewRun, RunRecord};
use crate::time::parse_rfc3339;

/// The error of an item whose job is no longer defined.
pub(super) fn undefined(job: &str) -> Error {
    Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(job)))
}

/// A validated item of a request.
pub(super) struct Item {
    pub(super) job: Arc<JobDef>,
    pub(super) priority: Priority,
    pub(super) payload: String,
    pub(super) trigger: Trigger,
    pub(super) depends_on: Vec<String>,
    pub(super) key: Option<String>,
    pub(super) not_before: Option<i64>,
    pub(super) reference: String,
    pub(super) scheduled_for: Option<i64>,
    pub(super) reason: Option<String>,
}

impl Item {
    /// Its run, with id `id`, created at `now`.
    pub(super) fn new_run(&self, id: &str, now: i64, workflow_id: Option<String>, key: Option<String>) -> NewRun {
        let mut run = new_run(
            id,
            &self.job,
            self.priority,
            self.payload.clone(),
            self.trigger,
            now,
            self.scheduled_for,
            self.not_before,
            workflow_id,
            key,
        );
        run.reason = self.reason.clone();
        run
    }
}

/// A dependency of a batch item.
pub(super) enum DepTarget {
    /// Another item of the batch.
    Item(usize),
    /// An existing run.
    Run(String),
}

/// A cycle among batch items, as item indices (first repeated at the end).
pub(super) fn find_cycle(len: usize, edges: &[(usize, Vec<DepTarget>)]) -> Option<Vec<usize>> {
    let mut graph: Vec<Vec<usize>> = vec![Vec::new(); len];
    for (from, targets) in edges {
        for t in targets {
            if let DepTarget::Item(to) = t {
                graph[*from].push(*to);
            }
        }
    }
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut mark = vec![0u8; len];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(n: usize, graph: &[Vec<usize>], mark: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        mark[n] = 1;
        stack.push(n);
        for &m in &graph[n] {
            if mark[m] == 1 {
                let start = stack.iter().position(|&x| x == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m);
                return Some(cycle);
            }
            if mark[m] == 0
                && let Some(c) = visit(m, graph, mark, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        mark[n] = 2;
        None
    }
    (0..len).find_map(|n| {
        if mark[n] == 0 {
            visit(n, &graph, &mut mark, &mut stack)
        } else {
            None
        }
    })
}

/// The upstream jobs of `job` (recursively, de-duplicated), upstream first.
/// Refused when the chain is deeper than [`crate::job::MAX_CHAIN_DEPTH`] (the
/// same rule as when definitions are applied, see [`JobSet::chain_depth`]).
pub(super) fn upstream_chain(jobs: &JobSet, job: &JobDef) -> Result<Vec<Arc<JobDef>>> {
    let depth = jobs.chain_depth(&job.name);
    if depth > crate::job::MAX_CHAIN_DEPTH {
        return Err(Error::precondition(format!(
            "the chain of upstream jobs of \"{}\" is deeper than {}",
            job.name,
            crate::job::MAX_CHAIN_DEPTH
        )));
    }
    let mut order: Vec<Arc<JobDef>> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    fn walk(jobs: &JobSet, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<Arc<JobDef>>) -> Result<()> {
        let job = jobs.get(name).ok_or_else(|| {
            Error::precondition(format!("upstream job \"{}\" is not defined", crate::limits::echo(name)))
        })?;
        for upstream in &job.depends_on {
            if seen.insert(upstream.clone()) {
                walk(jobs, upstream, seen, order)?;
                order.push(jobs.get(upstream).expect("walked job exists").clone());
            }
        }
        Ok(())
    }
    walk(jobs, &job.name, &mut seen, &mut order)?;
    if let Some(disabled) = order.iter().find(|j| !j.enabled) {
        return Err(Error::precondition(format!(
            "upstream job \"{}\" of \"{}\" is disabled",
            disabled.name, job.name
        )));
    }
    Ok(order)
}

pub(super) fn validate_request(
    jobs: &JobSet,
    request: EnqueueRequest,
    now: i64,
    field: &dyn Fn(&str) -> String,
) -> Result<Item> {
    if request.job.is_empty() {
        return Err(Error::invalid(&field("job"), "a job name is required"));
    }
    let job = jobs
        .get(&request.job)
        .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(&request.job))))?;
    if !job.enabled {
        return Err(Error::precondition(format!("job \"{}\" is disabled", request.job)));
    }
    let priority = if request.priority.is_empty() {
        job.priority
    } else {
        request
            .priority
            .parse::<Priority>()
            .map_err(|e| Error::invalid(&field("priority"), e))?
    };
    let trigger = match request.trigger.as_str() {
        "" | "api" => Trigger::Api,
        "manual" => Trigger::Manual,
        other => {
            return Err(Error::invalid(
                &field("trigger"),
                format!("\"{other}\" cannot be requested (use api or manual)"),
            ));
        }
    };
    let payload = validate_payload(&request.payload).map_err(|e| Error::invalid(&field("payload"), e))?;
    let limits = crate::limits::current();
    if request.depends_on.len() > limits.dependencies {
        return Err(Error::invalid(
            &field("depends_on"),
            exceeds(
                format!("{} dependencies", request.depends_on.len()),
                "dependencies",
                limits.dependencies,
            ),
        ));
    }
    let key = (!request.idempotency_key.is_empty()).then_some(request.idempotency_key);
    if let Some(k) = &key {
        if k.len() > limits.key_bytes {
            return Err(Error::invalid(
                &field("idempotency_key"),
                exceeds(format!("{} bytes", k.len()), "key_bytes", limits.key_bytes),
            ));
        }
        if k.chars().any(char::is_control) {
            return Err(Error::invalid(
                &field("idempotency_key"),
                "must not contain control characters",
            ));
        }
    }
    if let Some(bad) = request
        .depends_on
        .iter()
        .find(|d| d.len() > limits.key_bytes || d.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            &field("depends_on"),
            format!(
                "\"{}\" is not a run id or a ref (at most key_bytes={} bytes, no control characters)",
                crate::limits::echo(bad),
                limits.key_bytes
            ),
        ));
    }
    // Nothing is kept for longer than durations may say (100 years): a start
    // beyond that horizon is a mistake, not a plan.
    let horizon_ms = worker_duration::MAX.as_millis() as u64;
    let not_before = match (request.delay_ms, request.not_before.is_empty()) {
        (0, true) => None,
        (delay, true) if delay > horizon_ms => {
            return Err(Error::invalid(
                &field("delay_ms"),
                format!("{delay} ms is longer than 100 years (at most {horizon_ms} ms, 36500d)"),
            ));
        }
        (delay, true) => Some(now + delay as i64),
        (0, false) => {
            let at = parse_rfc3339(&request.not_before).ok_or_else(|| {
                Error::invalid(
                    &field("not_before"),
                    format!(
                        "\"{}\" is not an RFC 3339 timestamp",
                        crate::limits::echo(&request.not_before)
                    ),
                )
            })?;
            if at > now.saturating_add(horizon_ms as i64) {
                return Err(Error::invalid(
                    &field("not_before"),
                    format!(
                        "{} is more than 100 years ahead (at most 36500d from now)",
                        crate::limits::echo(&request.not_before)
                    ),
                ));
            }
            (at > now).then_some(at)
        }
        (_, false) => {
            return Err(Error::invalid(
                &field("not_before"),
                "give either a delay or a not_before instant, not both",
            ));
        }
    };
    Ok(Item {
        job: job.clone(),
        priority,
        payload,
        trigger,
        depends_on: request.depends_on,
        key,
        not_before,
        reference: request.reference,
        scheduled_for: None,
        reason: None,
    })
}

/// Checks size and syntax; returns the payload text to store ("null" when empty).
/// The error names no field: the caller adds it.
pub fn validate_payload(payload: &str) -> std::result::Result<String, String> {
    let limits = crate::limits::current();
    if payload.len() > limits.payload_bytes {
        return Err(exceeds(
            format!("{} bytes", payload.len()),
            "payload_bytes",
            limits.payload_bytes,
        ));
    }
    if payload.trim().is_empty() {
        return Ok("null".into());
    }
    // Before the parser: serde_json stops at depth 128 with a vaguer message.
    if let Err(depth) = crate::config::depth::check_json(payload, limits.json_depth) {
        return Err(format!(
            "nesting {}",
            exceeds(format!("depth {depth}"), "json_depth", limits.json_depth)
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload).map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(payload.to_string())
}

/// A new run or workflow id: a ULID, monotonic within this process so that ids
/// created in the same millisecond still sort in creation order.
pub(super) fn new_id() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let id = generator
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new());
    id.to_string().to_lowercase()
}

#[allow(clippy::too_many_arguments)]
pub(in crate::engine) fn new_run(
    id: &str,
    job: &JobDef,
    priority: Priority,
    payload: String,
    trigger: Trigger,
    now: i64,
    scheduled_for: Option<i64>,
    not_before: Option<i64>,
    workflow_id: Option<String>,
    idempotency_key: Option<String>,
) -> NewRun {
    let state = if not_before.is_some() {
        RunState::Scheduled
    } else {
        RunState::Queued
    };
    NewRun {
        id: id.to_string(),
        job: job.name.clone(),
        state,
        priority,
        payload,
        trigger,
        scheduled_for,
        created_at: now,
        not_before,
        ready_at: (state == RunState::Queued).then_some(now),
        max_attempts: job.retry.max_attempts,
        reason: None,
        workflow_id,
        idempotency_key,
    }
}

pub(in crate::engine) fn record_of_new(run: NewRun) -> RunRecord {
    RunRecord {
        id: run.id,
        job: run.job,
        state: run.state,
        priority: run.priority,
        payload: run.payload,
        trigger: run.trigger,
        scheduled_for: run.scheduled_for,
        created_at: run.created_at,
        not_before: run.not_before,
        ready_at: run.ready_at,
        finished_at: None,
        attempt: 0,
        max_attempts: run.max_attempts,
        reason: run.reason,
        workflow_id: run.workflow_id,
        cancel_requested: false,
        idempotency_key: run.idempotency_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_limits_and_syntax() {
        assert_eq!(validate_payload("").unwrap(), "null");
        assert_eq!(validate_payload("{\"a\":1}").unwrap(), "{\"a\":1}");
        assert!(validate_payload("{bad").unwrap_err().starts_with("not valid JSON"));
        let big = format!("\"{}\"", "x".repeat(crate::limits::current().payload_bytes - 1));
        assert_eq!(
            validate_payload(&big).unwrap_err(),
            "1048577 bytes exceeds the limit payload_bytes=1048576 (--limit payload_bytes=...)"
        );
        // Depth: 64 levels pass, 65 are refused before serde_json (whose own
        // limit is 128) sees them.
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        validate_payload(&ok).unwrap();
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            validate_payload(&deep).unwrap_err(),
            "nesting depth 65 exceeds the limit json_depth=64 (--limit json_depth=...)"
        );
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let edges = vec![
            (0, vec![DepTarget::Item(1)]),
            (1, vec![DepTarget::Item(2)]),
            (2, vec![DepTarget::Item(0), DepTarget::Run("x".into())]),
        ];
        assert_eq!(find_cycle(3, &edges), Some(vec![0, 1, 2, 0]));
        let acyclic = vec![(0, vec![DepTarget::Item(1)]), (1, vec![DepTarget::Item(2)])];
        assert_eq!(find_cycle(3, &acyclic), None);
    }
}
