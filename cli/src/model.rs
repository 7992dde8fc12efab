//! The stable JSON/YAML shapes printed by `-o json|yaml` (documented in
//! `docs/cli-json.md`).
//!
//! Proto messages are mapped into these structs so the output does not change
//! with the generated code: empty strings for unset timestamps and optional texts
//! become `null`, a run's payload is the parsed JSON value, maps are sorted.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use worker_proto::v1 as pb;

/// `""` becomes `None`.
fn opt(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

/// A proto map, sorted by key.
fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

/// The payload JSON text as a value: `null` when empty; text that is not JSON
/// (the controller never stores such) is kept as a JSON string.
pub fn parse_payload(text: &str) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// One run (its JSON shape: `docs/cli-json.md#run`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: String,
    pub job: String,
    pub state: String,
    pub priority: String,
    pub payload: serde_json::Value,
    pub trigger: String,
    pub scheduled_for: Option<String>,
    pub created_at: Option<String>,
    pub not_before: Option<String>,
    pub finished_at: Option<String>,
    pub max_attempts: u32,
    pub reason: Option<String>,
    pub attempts: Vec<Attempt>,
    pub depends_on: Vec<String>,
    pub workflow_id: Option<String>,
    /// `null` when the run was enqueued without a key.
    pub idempotency_key: Option<String>,
    pub transitions: Vec<Transition>,
}

/// One try of a run on one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub agent: Option<String>,
    /// `null` while the attempt runs.
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub output: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    /// What the job reported: `{"name": value}`, by name.
    pub metrics: BTreeMap<String, f64>,
    /// Time per operation, the slowest (largest total) first.
    pub spans: Vec<SpanTotal>,
}

/// Time an attempt spent in one operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanTotal {
    pub name: String,
    /// Times the attempt entered it.
    pub count: u64,
    /// Their total, in milliseconds (fractional).
    pub total_ms: f64,
    /// The longest of them, in milliseconds (fractional).
    pub max_ms: f64,
}

/// One UTC day of what a job's attempts reported (`jobs get`, `days`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Attempts that reported metrics or spans that day.
    pub attempts: u64,
    /// Sum per metric name.
    pub metrics: BTreeMap<String, f64>,
    /// Per span: attempts that reported it and the p50/p95 of their totals,
    /// slowest p95 first.
    pub spans: Vec<SpanDay>,
}

/// One span's day in [`JobDay`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanDay {
    pub name: String,
    pub attempts: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// Microseconds as fractional milliseconds.
fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl From<pb::JobDay> for JobDay {
    fn from(d: pb::JobDay) -> Self {
        Self {
            date: d.date,
            attempts: d.attempts,
            metrics: d.metric_sums.into_iter().map(|m| (m.name, m.value)).collect(),
            spans: d
                .spans
                .into_iter()
                .map(|s| SpanDay {
                    name: s.name,
                    attempts: s.attempts,
                    p50_ms: us_to_ms(s.p50_us),
                    p95_ms: us_to_ms(s.p95_us),
                })
                .collect(),
        }
    }
}

/// One recorded state change of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// `null` for the creation of the run.
    pub from: Option<String>,
    pub to: String,
    pub at: Option<String>,
    pub reason: Option<String>,
}

impl From<pb::Run> for Run {
    fn from(run: pb::Run) -> Self {
        Self {
            payload: parse_payload(&run.payload),
            id: run.id,
            job: run.job,
            state: run.state,
            priority: run.priority,
            trigger: run.trigger,
            scheduled_for: opt(run.scheduled_for),
            created_at: opt(run.created_at),
            not_before: opt(run.not_before),
            finished_at: opt(run.finished_at),
            max_attempts: run.max_attempts,
            reason: opt(run.reason),
            attempts: run.attempts.into_iter().map(Attempt::from).collect(),
            depends_on: run.depends_on,
            workflow_id: opt(run.workflow_id),
            idempotency_key: opt(run.idempotency_key),
            transitions: run.transitions.into_iter().map(Transition::from).collect(),
        }
    }
}

impl From<pb::Attempt> for Attempt {
    fn from(a: pb::Attempt) -> Self {
        Self {
            attempt: a.attempt,
            agent: opt(a.agent),
            outcome: opt(a.outcome),
            exit_code: a.exit_code,
            error: opt(a.error),
            output: opt(a.output),
            started_at: opt(a.started_at),
            finished_at: opt(a.finished_at),
            duration_ms: a.duration_ms,
            metrics: a.metrics.into_iter().map(|m| (m.name, m.value)).collect(),
            spans: a
                .spans
                .into_iter()
                .map(|s| SpanTotal {
                    name: s.name,
                    count: s.count,
                    total_ms: us_to_ms(s.total_us),
                    max_ms: us_to_ms(s.max_us),
                })
                .collect(),
        }
    }
}

impl From<pb::Transition> for Transition {
    fn from(t: pb::Transition) -> Self {
        Self {
            from: opt(t.from_state),
            to: t.to_state,
            at: opt(t.at),
            reason: opt(t.reason),
        }
    }
}

/// A job definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub name: String,
    pub description: Option<String>,
    pub executor: Option<Executor>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub priority: String,
    pub timeout_ms: u64,
    pub retry: Option<Retry>,
    pub overlap: Option<String>,
    pub catch_up: Option<String>,
    pub max_catch_up: u32,
    pub jitter_ms: u64,
    pub selector: BTreeMap<String, String>,
    pub max_concurrency: u32,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub next_fire: Option<String>,
    /// Jobs whose runs must succeed first when this job is triggered.
    pub depends_on: Vec<String>,
    /// `shift | skip`; `null` when unset.
    pub dst_gap: Option<String>,
    /// `first | last | both`; `null` when unset.
    pub dst_repeat: Option<String>,
    /// `0` = no window.
    pub catch_up_window_ms: u64,
    /// `config | api`; `null` when unset.
    pub source: Option<String>,
}

/// How a job runs: `{"shell": {...}}`, `{"http": {...}}`, `{"builtin": {...}}`
/// or `{"handler": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    Shell(Shell),
    Http(Http),
    Builtin(Builtin),
    Handler(Handler),
}

/// An HTTP request made by the agent (templates as defined; `${VAR}` in
/// header values is shown as written: the agent reads it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Http {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect_status: Vec<String>,
    pub retry_on: Vec<String>,
    /// `0` = only the job's timeout.
    pub timeout_ms: u64,
    /// `null` = the default (10).
    pub max_redirects: Option<u32>,
}

/// A handler registered by an SDK agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handler {
    pub name: String,
}

/// A process started by the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shell {
    pub argv: Vec<String>,
    pub script: Option<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub non_retryable_exit_codes: Vec<i32>,
}

/// A task built into the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Builtin {
    pub name: String,
    pub args: BTreeMap<String, String>,
}

/// Retry policy of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: String,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: f64,
}

impl From<pb::Job> for Job {
    fn from(job: pb::Job) -> Self {
        Self {
            name: job.name,
            description: opt(job.description),
            executor: job.executor.and_then(|e| e.kind).map(Executor::from),
            schedule: opt(job.schedule),
            timezone: opt(job.timezone),
            priority: job.priority,
            timeout_ms: job.timeout_ms,
            retry: job.retry.map(|r| Retry {
                max_attempts: r.max_attempts,
                backoff: r.backoff,
                initial_delay_ms: r.initial_delay_ms,
                max_delay_ms: r.max_delay_ms,
                jitter: r.jitter,
            }),
            overlap: opt(job.overlap),
            catch_up: opt(job.catch_up),
            max_catch_up: job.max_catch_up,
            jitter_ms: job.jitter_ms,
            selector: sorted(job.selector),
            max_concurrency: job.max_concurrency,
            enabled: job.enabled,
            tags: job.tags,
            next_fire: opt(job.next_fire),
            depends_on: job.depends_on,
            dst_gap: opt(job.dst_gap),
            dst_repeat: opt(job.dst_repeat),
            catch_up_window_ms: job.catch_up_window_ms,
            source: opt(job.source),
        }
    }
}

impl From<pb::executor_spec::Kind> for Executor {
    fn from(kind: pb::executor_spec::Kind) -> Self {
        match kind {
            pb::executor_spec::Kind::Shell(s) => Executor::Shell(Shell {
                argv: s.argv,
                script: opt(s.script),
                env: sorted(s.env),
                cwd: opt(s.cwd),
                non_retryable_exit_codes: s.non_retryable_exit_codes,
            }),
            pb::executor_spec::Kind::Builtin(b) => Executor::Builtin(Builtin {
                name: b.name,
                args: sorted(b.args),
            }),
            pb::executor_spec::Kind::Http(h) => Executor::Http(Http {
                method: if h.method.is_empty() { "GET".into() } else { h.method },
                url: h.url,
                headers: sorted(h.headers),
                body: opt(h.body),
                expect_status: h.expect_status,
                retry_on: h.retry_on,
                timeout_ms: h.timeout_ms,
                max_redirects: h.max_redirects,
            }),
            pb::executor_spec::Kind::Handler(h) => Executor::Handler(Handler { name: h.name }),
        }
    }
}

impl Executor {
    /// Short description for tables: `shell: backup.sh --all`, `builtin: sleep`.
    pub fn summary(&self) -> String {
        match self {
            Executor::Shell(s) => match &s.script {
                Some(script) if s.argv.is_empty() => format!("shell: {}", first_line(script)),
                _ => format!("shell: {}", s.argv.join(" ")),
            },
            Executor::Builtin(b) => format!("builtin: {}", b.name),
            Executor::Http(h) => format!("http: {} {}", h.method, h.url),
            Executor::Handler(h) => format!("handler: {}", h.name),
        }
    }
}

/// The first line of `text`, with `…` when more follows.
fn first_line(text: &str) -> String {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}

/// `jobs get`: the job's fields plus its statistics under `stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub stats: Option<JobStats>,
    /// What its attempts reported over the last 7 UTC days (days with
    /// reports only), newest first.
    pub days: Vec<JobDay>,
}

/// Run statistics of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStats {
    pub runs_total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub lost: u64,
    pub cancelled: u64,
    pub dead: u64,
    pub active: u64,
    pub success_rate: f64,
    pub p50_duration_ms: u64,
    pub p95_duration_ms: u64,
    pub last_run_id: Option<String>,
    pub last_run_state: Option<String>,
    pub last_run_at: Option<String>,
    pub next_run_at: Option<String>,
    /// Fires missed while the controller was down.
    pub schedule_missed: u64,
    /// Fires skipped by the overlap policy.
    pub schedule_skipped: u64,
}

impl From<pb::JobStats> for JobStats {
    fn from(s: pb::JobStats) -> Self {
        Self {
            runs_total: s.runs_total,
            succeeded: s.succeeded,
            failed: s.failed,
            timed_out: s.timed_out,
            lost: s.lost,
            cancelled: s.cancelled,
            dead: s.dead,
            active: s.active,
            success_rate: s.success_rate,
            p50_duration_ms: s.p50_duration_ms,
            p95_duration_ms: s.p95_duration_ms,
            last_run_id: opt(s.last_run_id),
            last_run_state: opt(s.last_run_state),
            last_run_at: opt(s.last_run_at),
            next_run_at: opt(s.next_run_at),
            schedule_missed: s.schedule_missed,
            schedule_skipped: s.schedule_skipped,
        }
    }
}

impl JobDetail {
    /// Maps a `GetJob` answer; a detail without a job (never sent by the
    /// controller) yields an empty job named `name`.
    pub fn from_proto(detail: pb::JobDetail, name: &str) -> Self {
        let job = detail.job.unwrap_or_else(|| pb::Job {
            name: name.to_string(),
            ..Default::default()
        });
        Self {
            job: job.into(),
            stats: detail.stats.map(JobStats::from),
            days: detail.days.into_iter().map(JobDay::from).collect(),
        }
    }
}

/// `queue stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub priorities: Vec<PriorityStats>,
    pub queued: u64,
    pub scheduled: u64,
    pub blocked: u64,
    pub running: u64,
    pub dead: u64,
    /// Since the controller started: attempts whose agent went silent past the lease.
    pub lost_attempts: u64,
    /// Runs retried after a lost attempt.
    pub rescued_runs: u64,
    /// Results refused because their attempt was no longer current.
    pub stale_results: u64,
    /// Results received again after they were recorded.
    pub duplicate_results: u64,
    /// Attempts ended by the controller after their timeout plus the lease.
    pub deadline_expired: u64,
    /// Results not recorded when they came (the store failed); offered again later.
    pub failed_results: u64,
    /// Schedule fires that could not be created; retried with backoff.
    pub failed_fires: u64,
    /// Other writes of one run that failed alone (an assignment, a timer, a lease expiry).
    pub failed_writes: u64,
}

/// Queued runs of one priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityStats {
    pub priority: String,
    pub queued: u64,
    pub oldest_wait_ms: u64,
}

impl From<pb::QueueStatsResponse> for QueueStats {
    fn from(s: pb::QueueStatsResponse) -> Self {
        Self {
            priorities: s
                .priorities
                .into_iter()
                .map(|p| PriorityStats {
                    priority: p.priority,
                    queued: p.queued,
                    oldest_wait_ms: p.oldest_wait_ms,
                })
                .collect(),
            queued: s.queued,
            scheduled: s.scheduled,
            blocked: s.blocked,
            running: s.running,
            dead: s.dead,
            lost_attempts: s.lost_attempts,
            rescued_runs: s.rescued_runs,
            stale_results: s.stale_results,
            duplicate_results: s.duplicate_results,
            deadline_expired: s.deadline_expired,
            failed_results: s.failed_results,
            failed_fires: s.failed_fires,
            failed_writes: s.failed_writes,
        }
    }
}

/// One API token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    pub name: String,
    pub role: String,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<pb::Token> for Token {
    fn from(t: pb::Token) -> Self {
        Self {
            name: t.name,
            role: t.role,
            created_at: opt(t.created_at),
            expires_at: opt(t.expires_at),
            revoked_at: opt(t.revoked_at),
        }
    }
}

/// A token just created: its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreatedToken {
    pub name: String,
    pub role: String,
    pub token: String,
    pub expires_at: Option<String>,
}

/// One agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    pub id: String,
    pub name: Option<String>,
    pub host: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub executors: Vec<String>,
    pub capacity: u32,
    pub state: String,
    pub connected_at: Option<String>,
    pub last_heartbeat: Option<String>,
    pub running: Vec<String>,
    pub version: Option<String>,
}

impl From<pb::Agent> for Agent {
    fn from(a: pb::Agent) -> Self {
        Self {
            id: a.id,
            name: opt(a.name),
            host: opt(a.host),
            labels: sorted(a.labels),
            executors: a.executors,
            capacity: a.capacity,
            state: a.state,
            connected_at: opt(a.connected_at),
            last_heartbeat: opt(a.last_heartbeat),
            running: a.running,
            version: opt(a.version),
        }
    }
}

/// One job schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub job: String,
    pub cron: String,
    pub timezone: Option<String>,
    pub enabled: bool,
    pub next_fire: Option<String>,
    pub next_fire_local: Option<String>,
    pub last_fired: Option<String>,
    /// Fires missed while the controller was down.
    pub missed: u64,
    /// Fires skipped by `overlap: forbid`.
    pub skipped: u64,
    pub paused: bool,
    /// `shift | skip`; `null` when unset.
    pub dst_gap: Option<String>,
    /// `first | last | both`; `null` when unset.
    pub dst_repeat: Option<String>,
    /// Failed tries in a row of its current fire; 0 while it fires.
    pub failing: u32,
    /// Failed tries ever.
    pub failed: u64,
    /// Why its last failed try failed; `null` if none ever did.
    pub last_error: Option<String>,
    /// When that was; `null` if never.
    pub last_failed_at: Option<String>,
}

impl From<pb::Schedule> for Schedule {
    fn from(s: pb::Schedule) -> Self {
        Self {
            job: s.job,
            cron: s.cron,
            timezone: opt(s.timezone),
            enabled: s.enabled,
            next_fire: opt(s.next_fire),
            next_fire_local: opt(s.next_fire_local),
            last_fired: opt(s.last_fired),
            missed: s.missed,
            skipped: s.skipped,
            paused: s.paused,
            dst_gap: opt(s.dst_gap),
            dst_repeat: opt(s.dst_repeat),
            failing: s.failing,
            failed: s.failed,
            last_error: opt(s.last_error),
            last_failed_at: opt(s.last_failed_at),
        }
    }
}

/// `enqueue` / `jobs run` without `--wait`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enqueued {
    pub id: String,
    /// The run already existed for the idempotency key; nothing was created.
    pub duplicate: bool,
    pub workflow_id: Option<String>,
    /// Ids of the runs created for the job's upstream chain, upstream first.
    pub upstream: Vec<String>,
}

impl Enqueued {
    /// Maps an `Enqueue` answer; `None` when it carries no run.
    pub fn from_proto(response: pb::EnqueueResponse) -> Option<Self> {
        let run = response.run?;
        Some(Self {
            id: run.id,
            duplicate: response.duplicate,
            workflow_id: opt(run.workflow_id),
            upstream: response.upstream.into_iter().map(|r| r.id).collect(),
        })
    }
}

/// One line of `enqueue --batch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchResult {
    /// The item's `ref`, `null` when it had none.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub id: String,
    pub duplicate: bool,
}

/// One fire of `schedules next`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fire {
    /// RFC 3339 UTC.
    pub utc: String,
    /// RFC 3339 in the schedule's zone, with its offset.
    pub local: String,
}

impl From<pb::Fire> for Fire {
    fn from(f: pb::Fire) -> Self {
        Self {
            utc: f.utc,
            local: f.local,
        }
    }
}

/// `apply`: job names by what happened to them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Applied {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

impl From<pb::ApplyJobsResponse> for Applied {
    fn from(r: pb::ApplyJobsResponse) -> Self {
        Self {
            created: r.created,
            updated: r.updated,
            unchanged: r.unchanged,
        }
    }
}

/// `jobs delete`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deleted {
    pub deleted: String,
}

/// `runs prune`: what was (or, with `dry_run`, would be) deleted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pruned {
    pub dry_run: bool,
    pub jobs: Vec<JobPruned>,
}

/// One job's pruned runs by final state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobPruned {
    pub job: String,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub total: u64,
}

impl From<pb::PruneRunsResponse> for Pruned {
    fn from(r: pb::PruneRunsResponse) -> Self {
        Pruned {
            dry_run: r.dry_run,
            jobs: r
                .jobs
                .into_iter()
                .map(|j| JobPruned {
                    job: j.job,
                    succeeded: j.succeeded,
                    dead: j.dead,
                    cancelled: j.cancelled,
                    total: j.total,
                })
                .collect(),
        }
    }
}

/// `dlq retry|purge`: the runs acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunIds {
    pub run_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample_run() -> pb::Run {
        pb::Run {
            id: "01J0RUN".into(),
            job: "backup".into(),
            state: "running".into(),
            priority: "normal".into(),
            payload: r#"{"a": [1, 2]}"#.into(),
            trigger: "api".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            max_attempts: 3,
            attempts: vec![pb::Attempt {
                attempt: 1,
                agent: "agent-1".into(),
                started_at: "2025-01-01T00:00:01Z".into(),
                ..Default::default()
            }],
            transitions: vec![pb::Transition {
                from_state: "".into(),
                to_state: "queued".into(),
                at: "2025-01-01T00:00:00Z".into(),
                reason: "".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn run_json_shape_is_exact() {
        let value = serde_json::to_value(Run::from(sample_run())).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "01J0RUN",
                "job": "backup",
                "state": "running",
                "priority": "normal",
                "payload": {"a": [1, 2]},
                "trigger": "api",
                "scheduled_for": null,
                "created_at": "2025-01-01T00:00:00Z",
                "not_before": null,
                "finished_at": null,
                "max_attempts": 3,
                "reason": null,
                "attempts": [{
                    "attempt": 1,
                    "agent": "agent-1",
                    "outcome": null,
                    "exit_code": null,
                    "error": null,
                    "output": null,
                    "started_at": "2025-01-01T00:00:01Z",
                    "finished_at": null,
                    "duration_ms": 0,
                    "metrics": {},
                    "spans": []
                }],
                "depends_on": [],
                "workflow_id": null,
                "idempotency_key": null,
                "transitions": [{"from": null, "to": "queued", "at": "2025-01-01T00:00:00Z", "reason": null}]
            })
        );
    }

    #[test]
    fn exit_code_zero_is_kept() {
        let attempt = Attempt::from(pb::Attempt {
            exit_code: Some(0),
            outcome: "succeeded".into(),
            ..Default::default()
        });
        let value = serde_json::to_value(attempt).unwrap();
        assert_eq!(value["exit_code"], json!(0));
        assert_eq!(value["outcome"], json!("succeeded"));
    }

    #[test]
    fn payload_parsing() {
        assert_eq!(parse_payload(""), serde_json::Value::Null);
        assert_eq!(parse_payload("  "), serde_json::Value::Null);
        assert_eq!(parse_payload("null"), serde_json::Value::Null);
        assert_eq!(parse_payload("42"), json!(42));
        assert_eq!(parse_payload(r#"{"x":"y"}"#), json!({"x": "y"}));
        assert_eq!(parse_payload("not json"), json!("not json"));
    }

    #[test]
    fn job_detail_flattens_stats() {
        let detail = pb::JobDetail {
            days: Default::default(),
            job: Some(pb::Job {
                name: "backup".into(),
                priority: "high".into(),
                enabled: true,
                executor: Some(pb::ExecutorSpec {
                    kind: Some(pb::executor_spec::Kind::Builtin(pb::BuiltinSpec {
                        name: "sleep".into(),
                        args: [("duration".to_string(), "2s".to_string())].into(),
                    })),
                }),
                ..Default::default()
            }),
            stats: Some(pb::JobStats {
                runs_total: 4,
                success_rate: 0.5,
                ..Default::default()
            }),
        };
        let value = serde_json::to_value(JobDetail::from_proto(detail, "backup")).unwrap();
        assert_eq!(value["name"], json!("backup"));
        assert_eq!(value["description"], json!(null));
        assert_eq!(
            value["executor"],
            json!({"builtin": {"name": "sleep", "args": {"duration": "2s"}}})
        );
        assert_eq!(value["retry"], json!(null));
        assert_eq!(value["stats"]["runs_total"], json!(4));
        assert_eq!(value["stats"]["last_run_id"], json!(null));
        assert_eq!(value["stats"]["success_rate"], json!(0.5));
    }

    #[test]
    fn shell_executor_shape() {
        let executor = Executor::from(pb::executor_spec::Kind::Shell(pb::ShellSpec {
            script: "echo hi\necho there".into(),
            ..Default::default()
        }));
        assert_eq!(executor.summary(), "shell: echo hi …");
        assert_eq!(
            serde_json::to_value(&executor).unwrap(),
            json!({"shell": {"argv": [], "script": "echo hi\necho there", "env": {}, "cwd": null, "non_retryable_exit_codes": []}})
        );
    }

    #[test]
    fn new_job_schedule_and_stats_fields() {
        let job = serde_json::to_value(Job::from(pb::Job {
            name: "report".into(),
            depends_on: vec!["extract".into(), "load".into()],
            dst_gap: "skip".into(),
            catch_up_window_ms: 3_600_000,
            source: "config".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(job["depends_on"], json!(["extract", "load"]));
        assert_eq!(job["dst_gap"], json!("skip"));
        assert_eq!(job["dst_repeat"], json!(null));
        assert_eq!(job["catch_up_window_ms"], json!(3_600_000));
        assert_eq!(job["source"], json!("config"));

        let schedule = serde_json::to_value(Schedule::from(pb::Schedule {
            job: "report".into(),
            paused: true,
            dst_repeat: "both".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(schedule["paused"], json!(true));
        assert_eq!(schedule["dst_gap"], json!(null));
        assert_eq!(schedule["dst_repeat"], json!("both"));

        let stats = serde_json::to_value(JobStats::from(pb::JobStats {
            schedule_missed: 2,
            schedule_skipped: 5,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            (stats["schedule_missed"].clone(), stats["schedule_skipped"].clone()),
            (json!(2), json!(5))
        );

        let mut run = sample_run();
        run.idempotency_key = "k1".into();
        assert_eq!(
            serde_json::to_value(Run::from(run)).unwrap()["idempotency_key"],
            json!("k1")
        );
    }

    #[test]
    fn enqueued_shape() {
        let response = pb::EnqueueResponse {
            run: Some(pb::Run {
                id: "r3".into(),
                workflow_id: "w1".into(),
                ..Default::default()
            }),
            duplicate: true,
            upstream: vec![pb::Run {
                id: "r1".into(),
                ..Default::default()
            }],
        };
        assert_eq!(
            serde_json::to_value(Enqueued::from_proto(response).unwrap()).unwrap(),
            json!({"id": "r3", "duplicate": true, "workflow_id": "w1", "upstream": ["r1"]})
        );
        assert_eq!(Enqueued::from_proto(pb::EnqueueResponse::default()), None);
        let result = BatchResult {
            reference: None,
            id: "r1".into(),
            duplicate: false,
        };
        assert_eq!(
            serde_json::to_value(result).unwrap(),
            json!({"ref": null, "id": "r1", "duplicate": false})
        );
    }
}

/// `workerctl status`: the controller that answered and who leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub store: String,
    pub started_at: Option<String>,
    pub rss_bytes: u64,
    pub connected_agents: u64,
    pub live_runs: u64,
    pub leadership: Leadership,
}

/// Who leads, as the answering controller sees it (`docs/high-availability.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leadership {
    /// `single` (no --ha) or `leader`.
    pub role: String,
    /// The lease's epoch of the leader's term (0 when single).
    pub epoch: i64,
    /// The leader's --ha-id.
    pub id: Option<String>,
    /// The leader's advertised URL.
    pub address: Option<String>,
    /// When it took the lease.
    pub since: Option<String>,
}

impl From<pb::ServerInfoResponse> for Status {
    fn from(s: pb::ServerInfoResponse) -> Self {
        let leadership = s.leadership.unwrap_or_default();
        Self {
            version: s.version,
            pid: s.pid,
            store: s.store,
            started_at: opt(s.started_at),
            rss_bytes: s.rss_bytes,
            connected_agents: s.connected_agents,
            live_runs: s.live_runs,
            leadership: Leadership {
                role: if leadership.role.is_empty() {
                    "single".into()
                } else {
                    leadership.role
                },
                epoch: leadership.epoch,
                id: opt(leadership.id),
                address: opt(leadership.address),
                since: opt(leadership.since),
            },
        }
    }
}
