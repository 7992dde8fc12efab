//! What happened in a digest's window: the store's aggregates
//! ([`Store::digest_rows`]) folded into what the email shows: per job its
//! runs and attempts by outcome, the newest failures with their errors, the
//! slowest jobs, the dead-letter queue's size and the reported costs.

use std::collections::BTreeMap;

use super::{COSTS_SHOWN, COUNT_ROWS, ERROR_CHARS, FAILURES_SHOWN, SLOWEST_SHOWN, Window};
use crate::error::Result;
use crate::store::Store;
use crate::store::digest::{DigestCost, DigestFailure, DigestQuery, DigestSlow};

/// One job's activity in the window. `succeeded`, `cancelled` and `dead`
/// count runs that ended so in the window; `failed`, `timed_out` and `lost`
/// count attempts (a run that failed once and then succeeded counts in
/// `failed` and in `succeeded`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobActivity {
    /// Job name.
    pub job: String,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Attempts that ran past their timeout.
    pub timed_out: u64,
    /// Attempts lost with their agent.
    pub lost: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Runs that went to the dead-letter queue.
    pub dead: u64,
    /// Attempts that finished, whatever their outcome.
    pub attempts: u64,
}

/// Everything a digest shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The window.
    pub window: Window,
    /// Jobs with any activity, by name.
    pub jobs: Vec<JobActivity>,
    /// The newest failed, timed-out and lost attempts (at most
    /// [`FAILURES_SHOWN`]), newest first.
    pub failures: Vec<DigestFailure>,
    /// All failed, timed-out and lost attempts of the window.
    pub failures_total: u64,
    /// The slowest jobs by their longest attempt (at most [`SLOWEST_SHOWN`]).
    pub slowest: Vec<DigestSlow>,
    /// Reported metric sums by job and metric (at most [`COSTS_SHOWN`]).
    pub costs: Vec<DigestCost>,
    /// Runs in the dead-letter queue now.
    pub dead_letter: u64,
}

impl Facts {
    /// Nothing finished in the window and the dead-letter queue is empty.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.dead_letter == 0
    }

    /// Runs that ended in the window (succeeded, cancelled or dead).
    pub fn runs_finished(&self) -> u64 {
        self.jobs.iter().map(|j| j.succeeded + j.cancelled + j.dead).sum()
    }

    /// Attempts that finished in the window.
    pub fn attempts(&self) -> u64 {
        self.jobs.iter().map(|j| j.attempts).sum()
    }

    /// Runs that went dead in the window.
    pub fn dead(&self) -> u64 {
        self.jobs.iter().map(|j| j.dead).sum()
    }
}

/// Reads the facts of `window` from `store` (a handful of bounded queries).
pub async fn gather(store: &Store, window: Window) -> Result<Facts> {
    let rows = store
        .digest_rows(&DigestQuery {
            from: window.from,
            to: window.to,
            failures: FAILURES_SHOWN,
            slowest: SLOWEST_SHOWN,
            costs: COSTS_SHOWN,
            counts: COUNT_ROWS,
            error_chars: ERROR_CHARS,
        })
        .await?;
    let mut jobs: BTreeMap<String, JobActivity> = BTreeMap::new();
    let mut failures_total = 0;
    for (job, outcome, n) in rows.outcomes {
        let entry = jobs.entry(job.clone()).or_insert_with(|| JobActivity {
            job,
            ..JobActivity::default()
        });
        entry.attempts += n;
        match outcome.as_str() {
            "failed" => entry.failed += n,
            "timed_out" => entry.timed_out += n,
            "lost" => entry.lost += n,
            _ => {}
        }
        if matches!(outcome.as_str(), "failed" | "timed_out" | "lost") {
            failures_total += n;
        }
    }
    for (job, state, n) in rows.run_ends {
        let entry = jobs.entry(job.clone()).or_insert_with(|| JobActivity {
            job,
            ..JobActivity::default()
        });
        match state.as_str() {
            "succeeded" => entry.succeeded += n,
            "cancelled" => entry.cancelled += n,
            "dead" => entry.dead += n,
            _ => {}
        }
    }
    Ok(Facts {
        window,
        jobs: jobs.into_values().collect(),
        failures: rows.failures,
        failures_total,
        slowest: rows.slowest,
        costs: rows.costs,
        dead_letter: rows.dead_letter,
    })
}

/// A duration in ms for people: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn human_ms(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < 1_000.0 {
        format!("{}ms", ms.round() as u64)
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1_000.0)
    } else if ms < 3_600_000.0 {
        let s = (ms / 1_000.0).round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (ms / 60_000.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// A metric sum for people: integers without decimals, others with up to
/// four significant decimals.
pub fn human_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(human_ms(850.0), "850ms");
        assert_eq!(human_ms(12_345.0), "12.3s");
        assert_eq!(human_ms(245_000.0), "4m05s");
        assert_eq!(human_ms(7_800_000.0), "2h10m");
        assert_eq!(human_number(3.0), "3");
        assert_eq!(human_number(0.25), "0.25");
        assert_eq!(human_number(1.0 / 3.0), "0.3333");
    }
}
