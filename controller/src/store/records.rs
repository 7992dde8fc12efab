//! Plain records read from and written to the store.

use crate::alerting::{AlertKind, AlertStatus, Event};
use crate::model::{Outcome, Priority, RunState, Trigger};

/// A run as stored. Timestamps are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Run id (ULID).
    pub id: String,
    /// Job name.
    pub job: String,
    /// Current state.
    pub state: RunState,
    /// Dispatch priority.
    pub priority: Priority,
    /// Payload, JSON text.
    pub payload: String,
    /// Why it was created.
    pub trigger: Trigger,
    /// Nominal fire instant of a scheduled run.
    pub scheduled_for: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// While scheduled: when it becomes ready.
    pub not_before: Option<i64>,
    /// When it last became queued.
    pub ready_at: Option<i64>,
    /// When it reached a terminal state.
    pub finished_at: Option<i64>,
    /// Number of the current (or last) attempt; 0 before the first.
    pub attempt: u32,
    /// Attempt number limit.
    pub max_attempts: u32,
    /// Why the run is in its state.
    pub reason: Option<String>,
    /// Workflow the run belongs to.
    pub workflow_id: Option<String>,
    /// An operator asked to cancel it while it was running.
    pub cancel_requested: bool,
    /// Idempotency key it was enqueued with.
    pub idempotency_key: Option<String>,
}

/// A new run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Run id.
    pub id: String,
    /// Job name.
    pub job: String,
    /// Initial state (`queued` or `scheduled`).
    pub state: RunState,
    /// Dispatch priority.
    pub priority: Priority,
    /// Payload, JSON text.
    pub payload: String,
    /// Why it was created.
    pub trigger: Trigger,
    /// Nominal fire instant of a scheduled run.
    pub scheduled_for: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// When a `scheduled` run becomes ready.
    pub not_before: Option<i64>,
    /// When a `queued` run became ready.
    pub ready_at: Option<i64>,
    /// Attempt number limit.
    pub max_attempts: u32,
    /// Why it is in its initial state.
    pub reason: Option<String>,
    /// Workflow the run belongs to.
    pub workflow_id: Option<String>,
    /// Idempotency key it was enqueued with.
    pub idempotency_key: Option<String>,
}

/// New runs to insert together (a workflow or a batch), with their dependencies.
#[derive(Debug, Clone, Default)]
pub struct InsertPlan {
    /// The runs, upstream first.
    pub runs: Vec<NewRun>,
    /// (run id, upstream run id) pairs.
    pub dependencies: Vec<(String, String)>,
}

/// A state change of a run, recorded with a transition row.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The run.
    pub run_id: String,
    /// State before.
    pub from: RunState,
    /// State after.
    pub to: RunState,
    /// When.
    pub at: i64,
    /// Why (error, cancel reason, ...).
    pub reason: Option<String>,
    /// New `not_before` (set for `scheduled`, cleared otherwise).
    pub not_before: Option<i64>,
    /// New ready time (for `queued`).
    pub ready_at: Option<i64>,
    /// New current attempt number.
    pub attempt: Option<u32>,
    /// New attempt number limit.
    pub max_attempts: Option<u32>,
    /// Whether a cancel is pending.
    pub cancel_requested: bool,
    /// For a change out of `running` settling an agent's result: when the
    /// agent's executor started the attempt (agent clock, µs since the Unix
    /// epoch; `Finished.started_at_unix_micros`). Not stored: it only rides
    /// on the write's live event (`Committed::handler_started`).
    pub handler_started_micros: Option<i64>,
}

impl StateChange {
    /// A change with no side fields set.
    pub fn new(run_id: &str, from: RunState, to: RunState, at: i64, reason: Option<String>) -> Self {
        StateChange {
            run_id: run_id.to_string(),
            from,
            to,
            at,
            reason,
            not_before: None,
            ready_at: None,
            attempt: None,
            max_attempts: None,
            cancel_requested: false,
            handler_started_micros: None,
        }
    }
}

/// An attempt handed to an agent.
#[derive(Debug, Clone)]
pub struct AttemptStart {
    /// The run.
    pub run_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Agent (process instance) id.
    pub agent_id: String,
    /// Agent display name.
    pub agent_name: String,
    /// When it was assigned.
    pub started_at: i64,
}

/// The end of an attempt.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    /// The run.
    pub run_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Exit code of a shell job.
    pub exit_code: Option<i32>,
    /// Error text.
    pub error: Option<String>,
    /// Output tail.
    pub output: Option<String>,
    /// When the agent actually started it (replaces the assignment time).
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: i64,
    /// Run time reported by the agent.
    pub duration_ms: Option<i64>,
    /// Values the job reported (checked by `engine::measures`).
    pub metrics: Vec<MetricRecord>,
    /// Time per operation the job reported.
    pub spans: Vec<SpanRecord>,
}

/// A named value an attempt reported (`api_cost_usd: 0.42`).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// Its name.
    pub name: String,
    /// Its value (the sum of what the attempt reported under the name).
    pub value: f64,
}

/// Time an attempt spent in one named operation (`fetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// The operation's name.
    pub name: String,
    /// Times the attempt entered it.
    pub count: u64,
    /// Their total duration, µs.
    pub total_us: u64,
    /// The longest of them, µs.
    pub max_us: u64,
}

/// What a job's attempts reported on one UTC day ([`crate::store::Store::job_days`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobDayRecord {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Attempts that reported metrics or spans that day.
    pub attempts: u64,
    /// Sum per metric name, sorted by name.
    pub metric_sums: Vec<(String, f64)>,
    /// Per span name: (name, attempts that reported it, p50 µs, p95 µs) of
    /// the attempts' totals, slowest p95 first.
    pub spans: Vec<(String, u64, u64, u64)>,
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The run.
    pub run_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Agent id.
    pub agent_id: String,
    /// Agent name.
    pub agent_name: String,
    /// Start.
    pub started_at: i64,
    /// End.
    pub finished_at: Option<i64>,
    /// Outcome, `None` while running.
    pub outcome: Option<Outcome>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Error text.
    pub error: Option<String>,
    /// Output tail.
    pub output: Option<String>,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// Values the job reported, by name.
    pub metrics: Vec<MetricRecord>,
    /// Time per operation, the slowest (largest total) first.
    pub spans: Vec<SpanRecord>,
}

/// A recorded transition.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRecord {
    /// State before (`None` at creation).
    pub from: Option<RunState>,
    /// State after.
    pub to: RunState,
    /// When.
    pub at: i64,
    /// Why.
    pub reason: Option<String>,
}

/// A schedule's durable cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleCursor {
    /// Job name.
    pub job: String,
    /// Nominal instant of the last fire handled.
    pub last_fired: i64,
    /// Fires missed while the controller was down.
    pub missed: u64,
    /// Fires skipped by the overlap policy.
    pub skipped: u64,
}

/// A job whose schedule fires have failed to be created.
#[derive(Debug, Clone, PartialEq)]
pub struct FireFailureRecord {
    /// Job name.
    pub job: String,
    /// Failed tries in a row of its current fire (0: it fires again).
    pub failing: u32,
    /// Failed tries ever.
    pub failed_total: u64,
    /// Nominal instant of the fire that failed last.
    pub fire_at: i64,
    /// Why it failed last.
    pub last_error: String,
    /// When it failed last.
    pub failed_at: i64,
}

/// Runs that finished within one hour, by final state (the web UI's
/// dashboard chart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourCount {
    /// The hour's start, Unix ms (a multiple of 3,600,000).
    pub hour: i64,
    /// Runs that succeeded in that hour.
    pub succeeded: u64,
    /// Runs that went to the dead-letter queue in that hour.
    pub dead: u64,
    /// Runs cancelled in that hour.
    pub cancelled: u64,
}

/// What a backend reads for [`crate::store::Store::job_list_stats`], folded
/// into one record per job by the store.
#[derive(Debug, Clone, Default)]
pub struct JobListRows {
    /// (job, state, runs in that state).
    pub counts: Vec<(String, String, i64)>,
    /// Each job's newest run.
    pub lasts: Vec<RunRecord>,
    /// (job, duration in ms) of the latest successful attempts, newest first per job.
    pub durations: Vec<(String, i64)>,
}

/// Aggregates of a job's history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStatsRecord {
    /// All runs.
    pub runs_total: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs in the DLQ.
    pub dead: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Runs not terminal.
    pub active: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Attempts that timed out.
    pub timed_out_attempts: u64,
    /// Attempts lost with their agent.
    pub lost_attempts: u64,
    /// Durations of the latest (up to 1000) successful attempts.
    pub recent_durations_ms: Vec<i64>,
    /// The newest run.
    pub last_run: Option<RunRecord>,
}

/// One alert's outcome for one channel, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// ULID of this row.
    pub id: String,
    /// The alert's id, shared by the rows of its channels.
    pub alert_id: String,
    /// When the outcome was recorded (Unix ms).
    pub at: i64,
    /// Alert, summary or test.
    pub kind: AlertKind,
    /// The event (`None` for a test).
    pub event: Option<Event>,
    /// The rule that routed it (`None` for a test).
    pub rule: Option<String>,
    /// The channel it went (or would have gone) to.
    pub channel: String,
    /// The job it is about.
    pub job: Option<String>,
    /// The run it is about.
    pub run_id: Option<String>,
    /// Sent, failed or suppressed.
    pub status: AlertStatus,
    /// Delivery attempts made (0 for a suppressed alert).
    pub attempts: u32,
    /// The channel's answer, or the error.
    pub answer: String,
    /// The alert's one-line title.
    pub title: String,
}

/// Which alert history rows to list (newest first). Filters that are set are
/// AND-ed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    /// At most this many rows: 0 means [`super::ALERT_HISTORY_DEFAULT_LIMIT`],
    /// and more than [`super::ALERT_HISTORY_MAX_LIMIT`] means that many.
    pub limit: u32,
    /// Only rows of this rule.
    pub rule: Option<String>,
    /// Only rows of this channel.
    pub channel: Option<String>,
    /// Only rows about this job.
    pub job: Option<String>,
    /// Only rows with this status.
    pub status: Option<AlertStatus>,
}

/// The leadership lease as stored (PostgreSQL high availability). Times are
/// Unix milliseconds on the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The current term's number; 0 before anyone led.
    pub epoch: i64,
    /// The controller holding it (its `--ha-id`).
    pub holder: String,
    /// Where clients and agents reach the holder (its advertised gRPC URL).
    pub address: String,
    /// When the holder took it.
    pub acquired_at: i64,
    /// When the holder last renewed it.
    pub renewed_at: i64,
    /// When it ends unless renewed (0: released).
    pub expires_at: i64,
    /// The database's clock when this was read.
    pub database_now: i64,
}

impl LeaseRecord {
    /// Whether a controller holds it now (by the database's clock).
    pub fn is_held(&self) -> bool {
        self.epoch > 0 && self.expires_at > self.database_now
    }
}

/// One term of leadership as recorded in `leader_terms` (PostgreSQL high
/// availability): who took the lease in which epoch, from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderTermRecord {
    /// The term's epoch.
    pub epoch: i64,
    /// The controller that led (its `--ha-id`).
    pub holder: String,
    /// Where it was reached (its advertised gRPC URL).
    pub address: String,
    /// When it took the lease (Unix ms, the database's clock).
    pub acquired_at: i64,
}

/// A gRPC call a standby accepted for the leader (`crate::ha::relay`), as
/// the leader claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedCall {
    /// Its id (also the payload of the `worker_relay_done` notification).
    pub id: i64,
    /// The gRPC path, `/worker.v1.ControllerService/Enqueue`.
    pub method: String,
    /// The name of the token the standby authenticated; "" for the
    /// anonymous admin of a controller without tokens.
    pub caller: String,
    /// The request's headers, without the token.
    pub headers: Vec<(String, String)>,
    /// The gRPC-framed request body.
    pub body: Vec<u8>,
}

/// The leader's gRPC answer to a [`RelayedCall`], as it went out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayAnswer {
    /// The response's headers.
    pub headers: Vec<(String, String)>,
    /// The gRPC-framed response body.
    pub body: Vec<u8>,
    /// The trailers (`grpc-status`, `grpc-message`, metadata).
    pub trailers: Vec<(String, String)>,
}

/// Where a relayed call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayState {
    /// Written by a standby; no leader has claimed it yet. The standby may
    /// withdraw it; the leader claims it.
    Pending,
    /// Claimed by the leader of `epoch`, which runs it and answers.
    Running {
        /// The claiming leader's epoch.
        epoch: i64,
    },
    /// Answered (the leader wrote it).
    Done(RelayAnswer),
    /// Withdrawn by the standby before any leader claimed it: never run.
    Withdrawn,
    /// No such call (pruned).
    Missing,
}

/// An API token as stored: its name, role and the SHA-256 hash of its secret
/// (never the secret itself). Timestamps are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique name (`[a-z0-9][a-z0-9._-]*`).
    pub name: String,
    /// Role name: admin, operator, viewer, enqueuer or agent.
    pub role: String,
    /// Lowercase hex SHA-256 of the secret.
    pub hash: String,
    /// When it was created.
    pub created_at: i64,
    /// When it stops being accepted; `None`: never.
    pub expires_at: Option<i64>,
    /// When it was revoked; `None`: not revoked.
    pub revoked_at: Option<i64>,
}

/// A pack published to this controller's catalog (`catalog_packs`), without
/// its files. Timestamps are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPackRecord {
    /// Pack name.
    pub name: String,
    /// Its version (semver).
    pub version: String,
    /// The `pack.yaml` text as published.
    pub manifest: String,
    /// Hex SHA-256 of the manifest: equal digests mean equal packs (the
    /// manifest lists every file's digest).
    pub digest: String,
    /// The manifest's description.
    pub description: String,
    /// The manifest's author.
    pub author: String,
    /// When it was published.
    pub published_at: i64,
    /// The publishing token's name ("anonymous" without authentication).
    pub publisher: String,
}

/// One file of a published pack (`catalog_files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFileRecord {
    /// Relative path in the pack.
    pub path: String,
    /// The bytes.
    pub content: Vec<u8>,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
}

/// What [`crate::store::Store::publish_pack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogPublish {
    /// The pack was stored.
    Created,
    /// The same (name, version) with the same digest was stored already.
    Unchanged,
    /// The (name, version) is stored with other content (this digest).
    Conflict(String),
}

/// One rating and/or review of a pack (`catalog_reviews`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogReviewRecord {
    /// Pack name.
    pub pack: String,
    /// The token that wrote it.
    pub token: String,
    /// The forwarding controller's caller ('' when written directly).
    pub via: String,
    /// 1 to 5, when rated.
    pub rating: Option<u32>,
    /// The review text, when reviewed.
    pub review: Option<String>,
    /// When it was last changed.
    pub updated_at: i64,
}

/// The ratings of one pack: their average and count.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRatingRecord {
    /// Pack name.
    pub pack: String,
    /// Average of the ratings.
    pub average: f64,
    /// How many ratings.
    pub count: u64,
}
