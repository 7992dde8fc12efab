//! `bench schedules`: S cron schedules due at the same UTC second T; lateness
//! of each fire from T to the commit of its run's first transition.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use tokio::sync::watch;
use worker_proto::v1 as pb;

use super::stats::{Latency, histogram, latency_table, record};
use super::{Printer, Report, SchedulesArgs, Target, apply_jobs, base_config, delete_job, progress, secs, server_info};
use crate::output::key_values;

/// Prefix of the scenario's job names.
pub const PREFIX: &str = "bench.sched.";

/// Largest ApplyJobs document sent at once (the controller takes 4 MiB).
const MAX_DOCUMENT: usize = 3 * 1024 * 1024;

/// Deletions in flight at once.
const DELETE_CONCURRENCY: u64 = 8;

/// What `schedules` measured.
#[derive(Debug, Serialize)]
struct Results {
    fired: u64,
    missing: u64,
    completed: u64,
    lateness: Latency,
    apply_seconds: f64,
    apply_documents: u64,
    deleted: u64,
    not_deleted: u64,
}

/// The default lead: max(5 s, S / 5000 s), in ms.
pub fn default_lead_ms(count: u64) -> u64 {
    (count / 5).max(5000)
}

/// The default grace after T: max(10 s, S / 1000 s), in ms.
pub fn default_grace_ms(count: u64) -> u64 {
    count.max(10_000)
}

/// A six-field cron expression firing at `t` (to the second) once a year.
pub fn cron_at(t: DateTime<Utc>) -> String {
    format!("{} {} {} {} {} *", t.second(), t.minute(), t.hour(), t.day(), t.month())
}

/// The `jobs:` entries of `count` schedules, split into documents of at most
/// `max` bytes; the first job of each document holds the definition, the others
/// refer to it by a YAML alias.
pub fn documents(count: u64, cron: &str, max: usize) -> Vec<String> {
    let mut docs = Vec::new();
    let mut doc = String::new();
    for i in 0..count {
        if doc.is_empty() {
            doc = format!(
                "  {PREFIX}{i}: &sched {{ description: workerctl bench, schedule: \"{cron}\", timezone: UTC, \
                 builtin: noop, retry: {{ max_attempts: 1 }} }}\n"
            );
        } else {
            doc.push_str(&format!("  {PREFIX}{i}: *sched\n"));
        }
        if doc.len() >= max {
            docs.push(std::mem::take(&mut doc));
        }
    }
    if !doc.is_empty() {
        docs.push(doc);
    }
    docs
}

#[derive(Debug, Default)]
struct Seen {
    /// First event instant of each run.
    first: HashMap<String, i64>,
    /// Runs ended.
    ended: HashSet<String>,
}

/// Runs the scenario.
pub async fn run(target: &Target, printer: &Printer, args: SchedulesArgs) -> anyhow::Result<(Report, String)> {
    let count = args.count;
    let lead = args.lead.unwrap_or_else(|| default_lead_ms(count));
    let grace = args.grace.unwrap_or_else(|| default_grace_ms(count));
    let mut client = target.client()?;
    let server = server_info(&mut client).await?;
    let now_us = Utc::now().timestamp_micros();
    let nominal_s = (now_us + lead as i64 * 1000).div_euclid(1_000_000) + 1;
    let nominal = DateTime::<Utc>::from_timestamp(nominal_s, 0).expect("a valid instant");
    let nominal_us = nominal_s * 1_000_000;
    let cron = cron_at(nominal);
    let mut config = base_config(target);
    config.insert("count".into(), count.into());
    config.insert("lead_s".into(), (lead as f64 / 1000.0).into());
    config.insert("grace_s".into(), (grace as f64 / 1000.0).into());
    config.insert("keep".into(), args.keep.into());
    config.insert(
        "nominal".into(),
        nominal.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
    );
    config.insert("cron".into(), cron.clone().into());
    printer.config(
        "schedules",
        &[
            ("controller", target.url.clone()),
            (
                "schedules",
                format!("{count} jobs {PREFIX}<i>, builtin noop, max_attempts 1"),
            ),
            ("cron", format!("\"{cron}\" timezone UTC")),
            ("nominal", nominal.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ("lead", crate::output::fmt_ms(lead)),
            (
                "grace",
                format!("{} after the nominal instant", crate::output::fmt_ms(grace)),
            ),
            (
                "lateness",
                "first transition (queued or running) of each run, committed, minus the nominal instant".into(),
            ),
        ],
        &server,
    );

    // Subscribe before the jobs exist.
    let mut watch_client = target.client()?;
    let mut events = watch_client
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (progress_tx, mut progress_rx) = watch::channel((0u64, 0u64));
    let mut reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                match events.message().await {
                    Ok(Some(e)) if e.job.starts_with(PREFIX) => {
                        let mut seen = seen.lock().unwrap();
                        if matches!(e.state.as_str(), "queued" | "running") {
                            seen.first.entry(e.run_id.clone()).or_insert(e.at_unix_micros);
                        }
                        if matches!(e.state.as_str(), "succeeded" | "dead" | "cancelled") {
                            seen.ended.insert(e.run_id);
                        }
                        progress_tx.send_replace((seen.first.len() as u64, seen.ended.len() as u64));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return "the controller closed the event stream (it drops a subscriber that falls behind: \
                                events were lost)"
                            .to_string();
                    }
                    Err(s) => return format!("the event stream failed: {}", s.message()),
                }
            }
        }
    });

    let docs = documents(count, &cron, MAX_DOCUMENT);
    progress(format!("applying {count} schedules ({} document(s))", docs.len()));
    let apply_started = Instant::now();
    for doc in &docs {
        apply_jobs(&mut client, doc).await?;
    }
    let apply_time = apply_started.elapsed();
    let mut problems = Vec::new();
    if Utc::now().timestamp_micros() >= nominal_us {
        problems.push(format!(
            "applying took {:.3}s, past the nominal instant: raise --lead",
            apply_time.as_secs_f64()
        ));
    } else {
        progress(format!(
            "applied in {:.3}s; waiting for {}",
            apply_time.as_secs_f64(),
            nominal.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        let wait_until = nominal_us + grace as i64 * 1000 - Utc::now().timestamp_micros();
        let deadline = tokio::time::Instant::now() + Duration::from_micros(wait_until.max(0) as u64);
        let wait = progress_rx.wait_for(|(fired, ended)| *fired >= count && *ended >= count);
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, wait) => {}
            e = &mut reader => problems.push(e.unwrap_or_else(|e| e.to_string())),
        }
    }
    reader.abort();

    let mut lateness = histogram();
    let (fired, completed) = {
        let seen = seen.lock().unwrap();
        for at in seen.first.values() {
            record(&mut lateness, at - nominal_us);
        }
        (seen.first.len() as u64, seen.ended.len() as u64)
    };
    let missing = count.saturating_sub(fired);
    if missing > 0 && problems.is_empty() {
        problems.push(format!(
            "{missing} of {count} schedules did not fire within {} of the nominal instant",
            crate::output::fmt_ms(grace)
        ));
    }

    // Clean up: the jobs exist only for this scenario.
    let (deleted, not_deleted) = if args.keep {
        progress(format!(
            "--keep: the {count} {PREFIX}* jobs stay defined and go on firing"
        ));
        (0, count)
    } else {
        delete_all(target, count).await?
    };
    if not_deleted > 0 && !args.keep {
        progress(format!(
            "{not_deleted} {PREFIX}* jobs could not be deleted (unfinished runs?): `workerctl jobs delete` them later"
        ));
    }

    let results = Results {
        fired,
        missing,
        completed,
        lateness: Latency::of(&lateness),
        apply_seconds: secs(apply_time),
        apply_documents: docs.len() as u64,
        deleted,
        not_deleted,
    };
    let mut table = key_values(&[
        (
            "fired",
            format!("{fired} of {count} ({missing} missing), {completed} completed"),
        ),
        (
            "apply",
            format!(
                "{:.3}s ({} document(s))",
                results.apply_seconds, results.apply_documents
            ),
        ),
        (
            "cleanup",
            if args.keep {
                format!("none (--keep): {not_deleted} jobs left defined")
            } else {
                format!("{deleted} jobs deleted, {not_deleted} left")
            },
        ),
    ]);
    table.push('\n');
    table.push_str(&latency_table(&[("lateness", results.lateness)]));
    let report = Report::new("schedules", config, server, &results, problems)?;
    Ok((report, table))
}

/// Deletes `bench.sched.0 .. count-1`, printing progress; returns (deleted, left).
async fn delete_all(target: &Target, count: u64) -> anyhow::Result<(u64, u64)> {
    progress(format!("deleting {count} {PREFIX}* jobs"));
    let next = Arc::new(AtomicU64::new(0));
    let deleted = Arc::new(AtomicU64::new(0));
    let left = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in target.clients(DELETE_CONCURRENCY.min(count))? {
        let (next, deleted, left) = (next.clone(), deleted.clone(), left.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), tonic::Status>(());
                }
                if delete_job(&mut client, &format!("{PREFIX}{i}")).await? {
                    deleted.fetch_add(1, Ordering::Relaxed);
                } else {
                    left.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(r) => r??,
                None => break,
            },
            _ = tick.tick() => {
                let d = deleted.load(Ordering::Relaxed) + left.load(Ordering::Relaxed);
                progress(format!("deleted {d} of {count}"));
            }
        }
    }
    Ok((deleted.load(Ordering::Relaxed), left.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fires_at_one_second() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(cron_at(t), "7 6 5 4 3 *");
    }

    #[test]
    fn defaults_scale_with_count() {
        assert_eq!(default_lead_ms(100), 5000);
        assert_eq!(default_lead_ms(100_000), 20_000);
        assert_eq!(default_grace_ms(100), 10_000);
        assert_eq!(default_grace_ms(100_000), 100_000);
    }

    #[test]
    fn documents_use_aliases_and_split() {
        let docs = documents(3, "0 0 0 1 1 *", 1 << 20);
        assert_eq!(docs.len(), 1);
        let lines: Vec<&str> = docs[0].lines().collect();
        assert!(
            lines[0].starts_with("  bench.sched.0: &sched { description: workerctl bench, schedule: \"0 0 0 1 1 *\"")
        );
        assert_eq!(lines[1..], ["  bench.sched.1: *sched", "  bench.sched.2: *sched"]);
        let docs = documents(1000, "0 0 0 1 1 *", 4000);
        assert!(docs.len() > 1);
        assert!(docs.iter().all(|d| d.len() < 4000 + 200 && d.contains("&sched")));
        let total: usize = docs.iter().map(|d| d.lines().count()).sum();
        assert_eq!(total, 1000);
    }
}
