//! History retention: pruning finished runs by each job's `retention:` (and
//! the controller's default age, `--retention-max-age`), in small batches.
//!
//! [`Engine::retention_loop`] runs a pass every `--retention-interval`;
//! `PruneRuns` (`workerctl runs prune`) runs one on demand, or counts what
//! one would delete (`--dry-run`). A pass goes job by job; each batch of at
//! most [`PRUNE_BATCH`] runs is one store transaction taken **under the
//! engine lock** (so no commit of the engine can meet a run that vanished
//! under it, e.g. a `dlq retry` of a dead run being pruned) and the lock is
//! given back between batches, with a pause of [`PRUNE_PAUSE`], so commit
//! rounds go on while a large backlog is pruned. Which runs qualify is in
//! `store/retention.rs`: finished ones only, never an upstream run an
//! unfinished run still waits on. Finished runs are not held in memory (a
//! terminal run leaves the indexes when it settles); the few maps keyed by
//! run id that could still name one (holds, dependents) are cleared of the
//! pruned ids in the same lock.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::error::{Error, ErrorCode, Result};
use crate::job::JobDef;
use crate::store::{PruneCounts, PruneRule};

/// Runs per prune transaction.
pub const PRUNE_BATCH: u32 = 500;

/// Pause between two batches of one pass (the engine's commits go on).
pub const PRUNE_PAUSE: Duration = Duration::from_millis(50);

/// Default of `--retention-interval`.
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// The controller-wide retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Age limit of finished runs for jobs that set no `retention.max_age`
    /// (`None`: keep them).
    pub default_max_age: Option<Duration>,
    /// Time between two passes of the retention loop.
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            default_max_age: None,
            interval: DEFAULT_RETENTION_INTERVAL,
        }
    }
}

/// What one pass pruned (or would prune) of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPruned {
    /// The job.
    pub job: String,
    /// Runs by final state.
    pub counts: PruneCounts,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Engine {
    /// Sets the controller-wide retention settings (before the loop starts).
    pub fn set_retention(&self, settings: RetentionSettings) {
        *self.retention.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    /// The controller-wide retention settings.
    pub fn retention(&self) -> RetentionSettings {
        *self.retention.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The rule that prunes `job`'s history at `now`.
    pub fn prune_rule(&self, job: &JobDef, now: i64) -> PruneRule {
        let max_age = job.retention.max_age.or(self.retention().default_max_age);
        PruneRule {
            job: job.name.clone(),
            cutoff: max_age.map(|d| now.saturating_sub(ms(d))),
            dead_cutoff: job.retention.dead_max_age.map(|d| now.saturating_sub(ms(d))),
            keep: job.retention.max_runs,
        }
    }

    /// One retention pass over every defined job, or over `only`: prunes
    /// (or, with `dry_run`, counts) their expired finished runs, in batches
    /// with `pause` between them. Returns the jobs where something was (or
    /// would be) pruned.
    pub async fn prune(&self, only: Option<&str>, dry_run: bool, pause: Duration) -> Result<Vec<JobPruned>> {
        let jobs = self.jobs();
        let defs: Vec<Arc<JobDef>> =
            match only {
                Some(name) => vec![jobs.get(name).cloned().ok_or_else(|| {
                    Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(name)))
                })?],
                None => jobs.iter().cloned().collect(),
            };
        let now = self.now();
        let mut rules: Vec<PruneRule> = defs.iter().map(|def| self.prune_rule(def, now)).collect();
        if only.is_none() {
            // A deleted job's history goes by the default rule (its own
            // `retention:` went with its definition).
            let default_cutoff = self.retention().default_max_age.map(|d| now.saturating_sub(ms(d)));
            if let Some(cutoff) = default_cutoff {
                for job in self.store.history_jobs().await? {
                    if jobs.get(&job).is_none() {
                        rules.push(PruneRule {
                            job,
                            cutoff: Some(cutoff),
                            dead_cutoff: None,
                            keep: None,
                        });
                    }
                }
            }
        }
        let mut report = Vec::new();
        for rule in rules {
            if rule.is_empty() {
                continue;
            }
            let counts = if dry_run {
                self.store.count_prunable(&rule).await?
            } else {
                let counts = self.prune_job(&rule, pause).await?;
                self.prune_schedule_events(&rule, pause).await?;
                counts
            };
            if counts.total() > 0 {
                report.push(JobPruned { job: rule.job, counts });
            }
        }
        Ok(report)
    }

    /// Prunes `rule.job`'s events that belong to no run (missed and skipped
    /// fires, pauses, resumes) by the same age and count, batch by batch;
    /// no engine lock: no in-memory state refers to them.
    async fn prune_schedule_events(&self, rule: &PruneRule, pause: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self.store.prune_schedule_events(rule, PRUNE_BATCH).await?;
            total += deleted;
            if deleted < u64::from(PRUNE_BATCH) {
                if total > 0 {
                    tracing::info!(job = %rule.job, events = total, "retention pruned schedule events");
                }
                return Ok(total);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Prunes one job batch by batch until a batch comes back short.
    async fn prune_job(&self, rule: &PruneRule, pause: Duration) -> Result<PruneCounts> {
        let mut total = PruneCounts::default();
        loop {
            let batch = {
                let mut core = self.lock_core().await;
                if let Some(reason) = self.failure() {
                    return Err(Error {
                        code: ErrorCode::Unavailable,
                        message: format!("the controller is stopping after an internal error: {reason}"),
                    });
                }
                let batch = self.store.prune_runs(rule, PRUNE_BATCH).await?;
                for id in &batch.ids {
                    core.holds.remove(id.as_str());
                    core.dependents.remove(id.as_str());
                }
                batch
            };
            total.merge(&batch.counts);
            if batch.ids.len() < PRUNE_BATCH as usize {
                return Ok(total);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Runs a retention pass every `interval` until shutdown. A failed pass
    /// is logged and tried again at the next interval.
    pub async fn retention_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let interval = self.retention().interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let pass = tokio::select! {
                pass = self.prune(None, false, PRUNE_PAUSE) => pass,
                _ = shutdown.changed() => return,
            };
            match pass {
                Ok(report) => {
                    for pruned in report {
                        tracing::info!(
                            job = %pruned.job,
                            succeeded = pruned.counts.succeeded,
                            dead = pruned.counts.dead,
                            cancelled = pruned.counts.cancelled,
                            "retention pruned finished runs"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention pass failed; trying again at the next interval"),
            }
        }
    }
}
