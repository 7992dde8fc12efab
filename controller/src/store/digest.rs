//! What the `digest` builtin reads (`docs/digest.md`): the activity of one
//! window, aggregated by the database. Every query is bounded: runs are
//! reached through the `runs_created` / `runs_state_created` indexes (runs
//! created at most [`DIGEST_CREATED_SLACK_MS`] before the window starts),
//! attempts through their primary key, reported metrics through
//! `attempt_measures_finished`, and every list has a row limit. Nothing
//! loads every run into memory.
//!
//! The SQL of each backend is in its `digest.rs`.

/// Attempts and runs of runs created this long before a window starts are
/// still counted (7 days): a run that waited or retried longer than that
/// before finishing in the window is left out, so the scan never leaves the
/// `created_at` index.
pub const DIGEST_CREATED_SLACK_MS: i64 = 7 * 86_400_000;

/// What [`crate::store::Store::digest_rows`] reads, and how much of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestQuery {
    /// Window start, Unix ms (inclusive).
    pub from: i64,
    /// Window end, Unix ms (exclusive).
    pub to: i64,
    /// Most failed attempts listed (newest first).
    pub failures: u32,
    /// Most slow jobs listed.
    pub slowest: u32,
    /// Most (job, metric) sums listed.
    pub costs: u32,
    /// Most (job, outcome) rows of each count.
    pub counts: u32,
    /// Longest error text read per failure, in characters.
    pub error_chars: u32,
}

/// One failed attempt in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestFailure {
    /// Run id.
    pub run_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Job name.
    pub job: String,
    /// `failed`, `timed_out` or `lost`.
    pub outcome: String,
    /// Its error, at most [`DigestQuery::error_chars`] characters.
    pub error: String,
    /// When it ended, Unix ms.
    pub finished_at: i64,
}

/// The durations of one job's attempts that finished in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestSlow {
    /// Job name.
    pub job: String,
    /// Attempts with a duration.
    pub attempts: u64,
    /// Their mean duration, ms.
    pub avg_ms: f64,
    /// The longest, ms.
    pub max_ms: i64,
}

/// One job's sum of one reported metric over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestCost {
    /// Job name.
    pub job: String,
    /// Metric name.
    pub metric: String,
    /// Sum of the values reported.
    pub sum: f64,
    /// Attempts that reported it.
    pub reports: u64,
}

/// The activity of one window, as the database aggregated it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DigestRows {
    /// (job, attempt outcome, attempts) of the attempts that ended in the
    /// window, by job then outcome.
    pub outcomes: Vec<(String, String, u64)>,
    /// (job, final state, runs) of the runs that ended in the window
    /// (`succeeded`, `dead`, `cancelled`), by job then state.
    pub run_ends: Vec<(String, String, u64)>,
    /// Failed, timed-out and lost attempts, newest first.
    pub failures: Vec<DigestFailure>,
    /// Jobs by their longest attempt, longest first.
    pub slowest: Vec<DigestSlow>,
    /// Reported metric sums, by job then metric.
    pub costs: Vec<DigestCost>,
    /// Runs in the dead-letter queue now.
    pub dead_letter: u64,
}
