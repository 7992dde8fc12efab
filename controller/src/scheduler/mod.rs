//! The scheduler: turns cron schedules into runs (design §6).
//!
//! At start-up it reads each schedule's durable cursor (the nominal instant of the
//! last fire handled) and applies the job's `catch_up` policy to the fires missed
//! while the controller was down: `skip` counts them, `latest` runs the last one,
//! `all` runs up to `max_catch_up` of the latest. Then it sleeps until the next
//! fire of any schedule. Each fire is created with its nominal instant; the store
//! refuses a second run for the same (job, instant), so no fire happens twice,
//! across restarts too.
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
        let Some((at, name)) = pending.first().cloned() else {
            let _ = shutdown.changed().await;
            return;
        };
        let wait = (at - Utc::now().timestamp_millis()).max(0) as u64;
        if wait > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        let Some(job) = engine.jobs().get(&name).cloned() else {
            pending.remove(&(at, name));
            continue;
        };
        if let Err(e) = fire(&engine, &job, at).await {
            tracing::error!(job = %name, error = %e, "schedule fire failed; retrying in 1s");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = shutdown.changed() => return,
            }
        }
        pending.remove(&(at, name.clone()));
        if let Some(next) = next_fire(&job, at) {
            pending.insert((next, name));
        }
    }
}

/// Applies each schedule's catch-up policy and returns the next fire of each.
async fn catch_up(engine: &Engine) -> Result<BTreeSet<(i64, String)>> {
    let cursors = engine.store().cursors().await?;
    let now = Utc::now();
    let mut pending = BTreeSet::new();
    for job in engine.jobs().iter().filter(|j| j.enabled) {
        let Some(schedule) = &job.schedule else { continue };
        if let Some(cursor) = cursors.iter().find(|c| c.job == job.name)
            && let Some(last) = DateTime::<Utc>::from_timestamp_millis(cursor.last_fired)
        {
            let limit = match job.catch_up {
                CatchUp::Skip => 0,
                CatchUp::Latest => 1,
                CatchUp::All => job.max_catch_up as usize,
            };
            let (fires, count) = schedule.fires_between(last, now, limit.max(1));
            let to_run = &fires[fires.len() - limit.min(fires.len())..];
            for instant in to_run {
                fire(engine, job, instant.timestamp_millis()).await?;
            }
            if let Some(newest) = fires.last() {
                let missed = count - to_run.len() as u64;
                engine
                    .store()
                    .advance_cursor(&job.name, newest.timestamp_millis(), missed, 0)
                    .await?;
                tracing::info!(job = %job.name, missed, caught_up = to_run.len(), policy = %job.catch_up, "fires missed while the controller was down");
            }
        }
        if let Some(next) = next_fire(job, now.timestamp_millis()) {
            pending.insert((next, job.name.clone()));
        }
    }
    Ok(pending)
}

fn next_fire(job: &JobDef, after_ms: i64) -> Option<i64> {
    let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
    job.schedule.as_ref()?.next_after(after).map(|t| t.timestamp_millis())
}

async fn fire(engine: &Engine, job: &Arc<JobDef>, instant: i64) -> Result<()> {
    let jitter = job.jitter.as_millis() as i64;
    let delay = if jitter > 0 {
        rand::rng().random_range(0..=jitter)
    } else {
        0
    };
    if let Some(run) = engine.fire(job, instant, delay).await? {
        tracing::info!(job = %job.name, run = %run.id, "schedule fired");
    }
    Ok(())
}
