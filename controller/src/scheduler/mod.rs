//! The scheduler: turns cron schedules into runs (design §6).
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
//! * [`cron`]: expression parsing and fire-time computation in a time zone.

pub mod cron;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::engine::Engine;
use crate::error::Result;
use crate::job::JobDef;
use crate::model::CatchUp;

/// Runs the scheduler until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut pending = loop {
        match catch_up(&engine).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::error!(error = %e, "schedule catch-up failed; retrying in 1s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    loop {
        let wait = match pending.first() {
            Some((at, _)) => Duration::from_millis((at - Utc::now().timestamp_millis()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        if !wait.is_zero() || pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = engine.schedules_changed() => pending = plan(&engine, Utc::now().timestamp_millis()),
                _ = shutdown.changed() => return,
            }
            continue;
        }
        // Everything due now fires together (one transaction for many schedules
        // due at the same instant).
        let now = Utc::now().timestamp_millis();
        let mut due = Vec::new();
        while due.len() < MAX_FIRES_PER_BATCH && pending.first().is_some_and(|(at, _)| *at <= now) {
            due.extend(pending.pop_first());
        }
        if let Err(e) = fire_due(&engine, &due).await {
            tracing::error!(error = %e, fires = due.len(), "schedule fires failed; retrying in 1s");
            pending.extend(due);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let jobs = engine.jobs();
        for (at, name) in due {
            if let Some(next) = jobs.get(&name).and_then(|job| next_fire(job, at)) {
                pending.insert((next, name));
            }
        }
    }
}

/// Most fires created in one transaction.
const MAX_FIRES_PER_BATCH: usize = 20_000;

/// Fires `due` (instant, job) pairs: paused schedules only move their cursor.
async fn fire_due(engine: &Engine, due: &[(i64, String)]) -> Result<()> {
    let paused = engine.store().paused_schedules().await?;
    let jobs = engine.jobs();
    let mut fires = Vec::with_capacity(due.len());
    for (instant, name) in due {
        let Some(job) = jobs.get(name) else { continue };
        if paused.contains(name) {
            engine.store().advance_cursor(name, *instant, 0, 0).await?;
            continue;
        }
        fires.push((job.clone(), *instant, jitter_delay(job)));
    }
    let created = engine.fire_many(&fires).await?;
    tracing::debug!(due = due.len(), created, "schedules fired");
    Ok(())
}

/// The next fire after `after_ms` of every enabled scheduled job.
fn plan(engine: &Engine, after_ms: i64) -> BTreeSet<(i64, String)> {
    engine
        .jobs()
        .iter()
        .filter(|j| j.enabled)
        .filter_map(|job| Some((next_fire(job, after_ms)?, job.name.clone())))
        .collect()
}

/// Applies each schedule's catch-up policy and returns the next fire of each.
async fn catch_up(engine: &Engine) -> Result<BTreeSet<(i64, String)>> {
    let cursors = engine.store().cursors().await?;
    let paused = engine.store().paused_schedules().await?;
    let now = Utc::now();
    for job in engine.jobs().iter().filter(|j| j.enabled) {
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
            engine
                .store()
                .advance_cursor(&job.name, newest.timestamp_millis(), 0, 0)
                .await?;
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
        engine.fire_many(&fires).await?;
        let missed = count - eligible.len() as u64;
        engine
            .store()
            .advance_cursor(&job.name, newest.timestamp_millis(), missed, 0)
            .await?;
        tracing::info!(job = %job.name, missed, caught_up = eligible.len(), policy = %job.catch_up, "fires missed while the controller was down");
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
    }
    Ok(plan(engine, now.timestamp_millis()))
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
