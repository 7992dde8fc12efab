//! The scheduler: turns cron schedules into runs.
//!
//! At start-up it reads each schedule's durable cursor (the nominal instant of the
//! last fire handled) and applies the job's `catch_up` policy to the fires missed
//! while the controller was down: `skip` counts them, `latest` runs the last one,
//! `all` runs up to `max_catch_up` of the latest, in both cases only those within
//! `catch_up_window` when one is set. Then it sleeps until the next fire of any
//! schedule, and plans again whenever definitions or pauses change. Each fire is
//! created with its nominal instant; the store refuses a second run for the same
//! (job, instant), so no fire happens twice, across restarts too. Fires of a
//! paused schedule move its cursor without creating runs, so resuming never
//! catches up the paused period.
//!
//! A fire that cannot be created (its job's chain cannot be enqueued, the
//! store refuses its row) fails alone: the other schedules due with it fire
//! (see [`Engine::fire_many`]), and the failed one is recorded, counted,
//! reported to alerting (`schedule_failed`) and tried again after a backoff
//! (1 s, doubling, at most 5 min). If the job's next fire comes due before a
//! retry succeeds, the failed fire is given up as missed and the newest due
//! one is tried instead, so a schedule that failed for a while fires once
//! when it recovers, not once per missed instant.
//!
//! On shutdown the scheduler stops before its next batch of fires; a batch
//! being committed finishes (at most `MAX_FIRES_PER_BATCH` fires).
//!
//! * [`cron`]: expression parsing and fire-time computation in a time zone.

pub mod cron;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::watch;

use crate::engine::{Counters, Engine, FireOutcome};
use crate::error::{Error, ErrorCode, Result};
use crate::job::JobDef;
use crate::model::CatchUp;

/// Most fires created in one transaction.
const MAX_FIRES_PER_BATCH: usize = 20_000;

/// With the store unreachable, how soon fires are tried again.
const STORE_DOWN_RETRY_MS: i64 = 1000;

/// The longest wait before a failed fire is tried again.
const MAX_FIRE_BACKOFF_MS: i64 = 5 * 60 * 1000;

/// The wait before trying a fire again after `failures` failed tries: 1 s,
/// doubling, at most `MAX_FIRE_BACKOFF_MS`.
pub fn fire_backoff_ms(failures: u32) -> i64 {
    (1000i64 << failures.saturating_sub(1).min(20)).min(MAX_FIRE_BACKOFF_MS)
}

/// A job whose current fire failed.
#[derive(Debug, Clone)]
struct Failing {
    /// The nominal instant being retried.
    fire_at: i64,
    /// Failed tries in a row.
    failures: u32,
    /// The last error.
    error: String,
}

/// The scheduler's plan: the next thing to do per job, and the jobs whose
/// current fire failed.
struct Scheduler {
    engine: Arc<Engine>,
    /// (when, job): the next fire of each job, or the retry of a failed one.
    pending: BTreeSet<(i64, String)>,
    /// Jobs whose current fire failed, by name.
    failing: HashMap<String, Failing>,
    /// Jobs the store still shows failing (from before a restart, or from
    /// before they were paused or changed): cleared on their next good fire.
    shown_failing: BTreeSet<String>,
}

/// Runs the scheduler until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut scheduler = Scheduler {
        engine,
        pending: BTreeSet::new(),
        failing: HashMap::new(),
        shown_failing: BTreeSet::new(),
    };
    // Without the cursors nothing can be caught up: wait for the store.
    loop {
        match scheduler.start(&shutdown).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %e, "schedule catch-up failed; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
    scheduler.replan();
    loop {
        // A stopped engine refuses every fire: leave (the controller exits).
        if *shutdown.borrow() || scheduler.engine.failure().is_some() {
            return;
        }
        let now = scheduler.engine.now();
        let wait = match scheduler.pending.first() {
            Some((at, _)) => Duration::from_millis((at - now).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        if !wait.is_zero() || scheduler.pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = scheduler.engine.schedules_changed() => scheduler.replan(),
                _ = shutdown.changed() => return,
            }
            continue;
        }
        // Everything due now fires together (one transaction for many schedules
        // due at the same instant).
        let mut due = Vec::new();
        while due.len() < MAX_FIRES_PER_BATCH && scheduler.pending.first().is_some_and(|(at, _)| *at <= now) {
            due.extend(scheduler.pending.pop_first());
        }
        if let Err(e) = scheduler.fire_due(due.clone(), now).await {
            // Only reading the pauses can fail as a whole (the store is down):
            // nothing fired; try again in a second.
            tracing::error!(error = %e, fires = due.len(), "schedule fires failed; retrying in 1s");
            // Entries keep their time: a failing job's retry, or the nominal
            // instant of a fire (which is what gets created).
            scheduler.pending.extend(due);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Scheduler {
    /// Fires the `due` entries. Paused schedules only move their cursor; each
    /// failed fire is retried on its own (see the module docs).
    async fn fire_due(&mut self, due: Vec<(i64, String)>, now: i64) -> Result<()> {
        let paused = self.engine.store().paused_schedules().await?;
        let jobs = self.engine.jobs();
        let mut fires = Vec::with_capacity(due.len());
        for (at, name) in due {
            let Some(job) = jobs.get(&name).filter(|j| j.enabled && j.schedule.is_some()) else {
                self.forget_failing(&name);
                continue;
            };
            let mut instant = self.failing.get(&name).map_or(at, |f| f.fire_at);
            if paused.contains(&name) {
                if let Err(e) = self.engine.store().advance_cursor(&name, instant, 0, 0).await {
                    tracing::warn!(job = %name, error = %e, "moving the cursor of a paused schedule failed");
                }
                self.forget_failing(&name);
                self.plan_next(job, instant.max(now));
                continue;
            }
            if let Some(failing) = self.failing.get(&name).cloned() {
                instant = self.supersede(job, &failing, now).await;
            }
            fires.push((job.clone(), instant, jitter_delay(job)));
        }
        let outcomes = self.engine.fire_many(&fires).await;
        let mut created = 0;
        for outcome in outcomes {
            created += usize::from(matches!(outcome.result, Ok(true)));
            self.settle(outcome, now).await;
        }
        tracing::debug!(due = fires.len(), created, "schedules fired");
        Ok(())
    }

    /// A failed fire whose job's next fire is due already is given up as
    /// missed; returns the instant to try now (the newest due one).
    async fn supersede(&mut self, job: &Arc<JobDef>, failing: &Failing, now: i64) -> i64 {
        let (Some(schedule), Some(from), Some(until)) = (
            &job.schedule,
            DateTime::<Utc>::from_timestamp_millis(failing.fire_at),
            DateTime::<Utc>::from_timestamp_millis(now),
        ) else {
            return failing.fire_at;
        };
        // Fires in (failed, now]: the newest is tried now; the failed one and
        // those between are missed, and the cursor moves to the last of them
        // (so a restart before the newest is created does not count them again).
        let (fires, count) = schedule.fires_between(from, until, 2);
        let Some(newest) = fires.last() else {
            return failing.fire_at;
        };
        let last_missed = if fires.len() == 2 {
            fires[0].timestamp_millis()
        } else {
            failing.fire_at
        };
        let reason = format!(
            "the fire could not be created ({}); the next fire came due",
            failing.error
        );
        if let Err(e) = self
            .engine
            .store()
            .advance_cursor(&job.name, last_missed, count, 0)
            .await
        {
            tracing::warn!(job = %job.name, error = %e, "recording missed fires failed");
        }
        self.engine.report_missed_fires(job, count, last_missed, reason);
        self.engine.metrics().fires_missed(&job.name, count);
        newest.timestamp_millis()
    }

    /// Acts on one fire's outcome: plans the job's next fire, or its retry.
    async fn settle(&mut self, outcome: FireOutcome, now: i64) {
        let FireOutcome { job, instant, result } = outcome;
        match result {
            Ok(created) => {
                if created {
                    // Measured when the run exists (the fire's jitter, if
                    // any, comes after: it is the job's choice, not lateness).
                    self.engine
                        .metrics()
                        .fire_created(&job.name, self.engine.now() - instant);
                }
                if self.failing.remove(&job.name).is_some() {
                    tracing::info!(job = %job.name, "schedule fires again");
                    self.shown_failing.insert(job.name.clone());
                }
                if self.shown_failing.remove(&job.name)
                    && let Err(e) = self.engine.store().clear_fire_failure(&job.name).await
                {
                    tracing::warn!(job = %job.name, error = %e, "recording a recovered schedule failed");
                    self.shown_failing.insert(job.name.clone());
                }
                self.plan_next(&job, instant);
            }
            // The store (or the engine) is down: not this job's fault. Tried
            // again in a second, not counted as the job's failure.
            Err(error) if error.code == ErrorCode::Unavailable => {
                tracing::warn!(job = %job.name, error = %error, "schedule fire could not be created; retrying in 1s");
                self.failing.entry(job.name.clone()).or_insert(Failing {
                    fire_at: instant,
                    failures: 0,
                    error: error.message.clone(),
                });
                self.pending.insert((now + STORE_DOWN_RETRY_MS, job.name.clone()));
            }
            Err(error) => self.failed(&job, instant, &error, now).await,
        }
    }

    /// Records a failed fire and plans its retry.
    async fn failed(&mut self, job: &Arc<JobDef>, instant: i64, error: &Error, now: i64) {
        let failures = self.failing.get(&job.name).map_or(0, |f| f.failures) + 1;
        let retry_at = now + fire_backoff_ms(failures);
        Counters::add(&self.engine.counters().failed_fires);
        tracing::warn!(
            job = %job.name,
            fire_at = %crate::time::rfc3339(instant),
            failures,
            retry_in_ms = retry_at - now,
            error = %error,
            "schedule fire could not be created; other schedules go on"
        );
        if let Err(e) = self
            .engine
            .store()
            .record_fire_failure(&job.name, instant, &error.message, now)
            .await
        {
            tracing::warn!(job = %job.name, error = %e, "recording a failed fire failed");
        }
        self.engine
            .report_failed_fire(job, instant, failures, &error.message, Some(retry_at));
        self.failing.insert(
            job.name.clone(),
            Failing {
                fire_at: instant,
                failures,
                error: error.message.clone(),
            },
        );
        self.pending.insert((retry_at, job.name.clone()));
    }

    /// Plans the fire of `job` after `instant`.
    fn plan_next(&mut self, job: &JobDef, instant: i64) {
        if let Some(next) = next_fire(job, instant) {
            self.pending.insert((next, job.name.clone()));
        }
    }

    /// Stops retrying `job`'s failed fire (paused, disabled, deleted): the
    /// store shows it failing until it fires well again.
    fn forget_failing(&mut self, job: &str) {
        if self.failing.remove(job).is_some() {
            self.shown_failing.insert(job.to_string());
        }
    }

    /// Reads which jobs the store shows failing, then catches up.
    async fn start(&mut self, shutdown: &watch::Receiver<bool>) -> Result<()> {
        self.shown_failing = self
            .engine
            .store()
            .fire_failures()
            .await?
            .into_iter()
            .filter(|f| f.failing > 0)
            .map(|f| f.job)
            .collect();
        self.catch_up(shutdown).await
    }

    /// Plans every enabled schedule from now on; a job whose fire is failing
    /// tries it again at once.
    fn replan(&mut self) {
        let now = self.engine.now();
        let jobs = self.engine.jobs();
        // A failing fire is tried again at once: the change may be its fix.
        let retries: HashMap<String, i64> = self.failing.keys().map(|job| (job.clone(), now)).collect();
        let gone: Vec<String> = self
            .failing
            .keys()
            .filter(|name| !jobs.get(name).is_some_and(|j| j.enabled && j.schedule.is_some()))
            .cloned()
            .collect();
        for name in gone {
            self.forget_failing(&name);
        }
        self.pending = jobs
            .iter()
            .filter(|j| j.enabled)
            .filter_map(|job| match retries.get(&job.name) {
                Some(at) if self.failing.contains_key(&job.name) => Some((*at, job.name.clone())),
                _ => Some((next_fire(job, now)?, job.name.clone())),
            })
            .collect();
    }

    /// Applies each schedule's catch-up policy. A job whose catch-up fails
    /// (its fires or its cursor) is handled alone: its newest eligible fire is
    /// retried like any failed fire.
    async fn catch_up(&mut self, shutdown: &watch::Receiver<bool>) -> Result<()> {
        let engine = self.engine.clone();
        let cursors = engine.store().cursors().await?;
        let paused = engine.store().paused_schedules().await?;
        let now = Utc::now();
        for job in engine.jobs().iter().filter(|j| j.enabled) {
            if *shutdown.borrow() {
                return Ok(());
            }
            let Some(schedule) = &job.schedule else { continue };
            let Some(cursor) = cursors.iter().find(|c| c.job == job.name) else {
                continue;
            };
            let Some(last) = DateTime::<Utc>::from_timestamp_millis(cursor.last_fired) else {
                continue;
            };
            let limit = match job.catch_up {
                CatchUp::Skip => 0,
                CatchUp::Latest => 1,
                CatchUp::All => job.max_catch_up as usize,
            };
            let (fires, count) = schedule.fires_between(last, now, limit.max(1));
            let Some(newest) = fires.last().copied() else { continue };
            if paused.contains(&job.name) {
                if let Err(e) = engine
                    .store()
                    .advance_cursor(&job.name, newest.timestamp_millis(), 0, 0)
                    .await
                {
                    tracing::warn!(job = %job.name, error = %e, "moving the cursor of a paused schedule failed");
                }
                continue;
            }
            let oldest_allowed = job
                .catch_up_window
                .map(|w| now - chrono::Duration::milliseconds(w.as_millis() as i64));
            let eligible: Vec<DateTime<Utc>> = fires[fires.len() - limit.min(fires.len())..]
                .iter()
                .copied()
                .filter(|f| oldest_allowed.is_none_or(|o| *f >= o))
                .collect();
            let fires: Vec<_> = eligible
                .iter()
                .map(|i| (job.clone(), i.timestamp_millis(), jitter_delay(job)))
                .collect();
            let mut outcomes = engine.fire_many(&fires).await;
            let missed = count - eligible.len() as u64;
            if let Err(e) = engine
                .store()
                .advance_cursor(&job.name, newest.timestamp_millis(), missed, 0)
                .await
            {
                tracing::warn!(job = %job.name, error = %e, "recording missed fires failed");
            }
            tracing::info!(job = %job.name, missed, caught_up = eligible.len(), policy = %job.catch_up, "fires missed while the controller was down");
            engine.metrics().fires_missed(&job.name, missed);
            engine.report_missed_fires(
                job,
                missed,
                newest.timestamp_millis(),
                format!(
                    "{missed} fire(s) missed while the controller was down (catch_up: {}, {} caught up)",
                    job.catch_up,
                    eligible.len()
                ),
            );
            // The newest catch-up fire, if it failed, is retried like any other;
            // older failed ones are missed (so is a failed one older than a
            // created one).
            let newest_failed = outcomes.pop_if(|o| o.result.is_err());
            let lost = outcomes.iter().filter(|o| o.result.is_err()).count();
            if lost > 0 {
                let reason = format!("{lost} catch-up fire(s) could not be created");
                if let Err(e) = engine.store().advance_cursor(&job.name, 0, lost as u64, 0).await {
                    tracing::warn!(job = %job.name, error = %e, "recording missed fires failed");
                }
                engine.report_missed_fires(job, lost as u64, newest.timestamp_millis(), reason);
                engine.metrics().fires_missed(&job.name, lost as u64);
            }
            if let Some(failed) = newest_failed {
                self.settle(failed, engine.now()).await;
            }
        }
        Ok(())
    }
}

fn next_fire(job: &JobDef, after_ms: i64) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    job.schedule.as_ref()?.next_after(after).map(|t| t.timestamp_millis())
}

/// A random delay up to the job's `jitter`, in ms.
fn jitter_delay(job: &JobDef) -> i64 {
    let jitter = job.jitter.as_millis() as i64;
    if jitter > 0 {
        rand::rng().random_range(0..=jitter)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::fire_backoff_ms;

    #[test]
    fn fire_retries_back_off_from_a_second_to_five_minutes() {
        assert_eq!(fire_backoff_ms(1), 1_000);
        assert_eq!(fire_backoff_ms(2), 2_000);
        assert_eq!(fire_backoff_ms(4), 8_000);
        assert_eq!(fire_backoff_ms(9), 256_000);
        assert_eq!(fire_backoff_ms(10), 300_000);
        assert_eq!(fire_backoff_ms(1000), 300_000);
    }
}
