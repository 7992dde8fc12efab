//! Cron schedules with seconds, in a time zone with a half-hour offset, and
//! the per-fire `jitter`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Timelike, Utc};
use worker_proto::v1 as pb;
use worker_tests::{Controller, TestEnv, parse_ts, wait_for};

/// Runs of `job` created by its schedule.
async fn scheduled_runs(ctl: &Controller, job: &str) -> Result<Vec<pb::Run>, String> {
    let runs = ctl
        .client()
        .await
        .list_runs(pb::ListRunsRequest {
            job: job.into(),
            state: String::new(),
            limit: 100,
        })
        .await
        .map_err(|e| format!("ListRuns: {e}"))?
        .into_inner()
        .runs;
    for r in &runs {
        assert_eq!(r.job, job, "ListRuns filtered by job returned {r:?}");
    }
    Ok(runs.into_iter().filter(|r| r.trigger == "schedule").collect())
}

/// The schedule of `job` as `ListSchedules` reports it.
async fn schedule_of(ctl: &Controller, job: &str) -> pb::Schedule {
    let schedules = ctl
        .client()
        .await
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .expect("ListSchedules")
        .into_inner()
        .schedules;
    schedules
        .iter()
        .find(|s| s.job == job)
        .unwrap_or_else(|| panic!("schedule missing: {schedules:?}"))
        .clone()
}

/// `S M H * * *` in Asia/Kolkata (UTC+05:30) fires at that local instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_with_seconds_in_kolkata_fires_at_the_local_instant() {
    let env = TestEnv::new();
    let tz = chrono_tz::Asia::Kolkata;
    let target: DateTime<Utc> = (Utc::now() + chrono::Duration::seconds(6)).trunc_subsecs(0);
    let local = target.with_timezone(&tz);
    let cron = format!("{} {} {} * * *", local.second(), local.minute(), local.hour());
    // The default zone differs, so a scheduler ignoring the job's zone misses.
    env.write_config(&format!(
        r#"
defaults:
  timezone: Europe/Berlin
jobs:
  kolkata.daily:
    schedule: "{cron}"
    timezone: Asia/Kolkata
    builtin: noop
"#
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "clock", 1).await;

    if Utc::now() + chrono::Duration::milliseconds(300) < target {
        let s = schedule_of(&ctl, "kolkata.daily").await;
        assert_eq!(s.timezone, "Asia/Kolkata", "{s:?}");
        assert_eq!(parse_ts("next_fire", &s.next_fire), target, "{s:?}");
        assert!(s.next_fire_local.ends_with("+05:30"), "next_fire_local {s:?}");
        assert_eq!(parse_ts("next_fire_local", &s.next_fire_local), target, "{s:?}");
    } else {
        panic!("controller and agent took more than 5.7s to start; the fire at {target} cannot be tested");
    }

    let left = (target - Utc::now()).to_std().unwrap_or_default();
    let runs = wait_for(
        &format!("a scheduled run of kolkata.daily ({cron} Asia/Kolkata = {target})"),
        left + Duration::from_secs(6),
        || async {
            scheduled_runs(&ctl, "kolkata.daily")
                .await
                .and_then(|r| if r.is_empty() { Err("none".into()) } else { Ok(r) })
        },
    )
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(parse_ts("scheduled_for", &run.scheduled_for), target, "{run:?}");
    let created = parse_ts("created_at", &run.created_at);
    let late = created - target;
    assert!(
        late >= chrono::Duration::zero() && late <= chrono::Duration::milliseconds(1500),
        "run created {}ms after its fire instant {target}: {run:?}",
        late.num_milliseconds()
    );
    let done = ctl.wait_run(&run.id, Duration::from_secs(10)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");

    // The CLI shows the same instant in UTC.
    let json = ctl.cli_run(&run.id).await;
    let sf = worker_tests::json::str_field(&json, "scheduled_for");
    assert!(
        sf.ends_with('Z') || sf.ends_with("+00:00"),
        "scheduled_for not UTC: {sf}"
    );
    assert_eq!(parse_ts("scheduled_for", sf), target);
    assert_eq!(worker_tests::json::str_field(&json, "trigger"), "schedule");

    // Daily: the next fire is the same local time tomorrow, and only one run exists.
    let s = schedule_of(&ctl, "kolkata.daily").await;
    assert_eq!(
        parse_ts("next_fire", &s.next_fire),
        target + chrono::Duration::days(1),
        "{s:?}"
    );
    assert_eq!(parse_ts("last_fired", &s.last_fired), target, "{s:?}");
    assert_eq!(scheduled_runs(&ctl, "kolkata.daily").await.unwrap().len(), 1);
}

/// `*/2 * * * * *` fires on even seconds, once per instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_fires_on_even_seconds_without_duplicates() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  tick:
    schedule: "*/2 * * * * *"
    builtin: noop
    retry: { max_attempts: 1 }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "ticker", 2).await;

    let runs = wait_for("three scheduled runs of tick", Duration::from_secs(12), || async {
        let runs = scheduled_runs(&ctl, "tick").await?;
        if runs.len() >= 3 {
            Ok(runs)
        } else {
            Err(format!("{} runs: {runs:?}", runs.len()))
        }
    })
    .await;
    let mut instants = Vec::new();
    for r in &runs {
        let at = parse_ts("scheduled_for", &r.scheduled_for);
        assert_eq!(at.nanosecond(), 0, "fire instant with a fraction: {r:?}");
        assert_eq!(at.second() % 2, 0, "fire on an odd second: {r:?}");
        let late = parse_ts("created_at", &r.created_at) - at;
        assert!(
            late >= chrono::Duration::zero() && late <= chrono::Duration::milliseconds(1500),
            "run created {}ms after its instant: {r:?}",
            late.num_milliseconds()
        );
        instants.push(at);
    }
    let distinct: BTreeSet<_> = instants.iter().collect();
    assert_eq!(distinct.len(), instants.len(), "duplicate fires: {instants:?}");
    let sorted: Vec<_> = distinct.into_iter().collect();
    for w in sorted.windows(2) {
        assert_eq!(*w[1] - *w[0], chrono::Duration::seconds(2), "missed a fire: {sorted:?}");
    }
    for r in &runs[..2] {
        let done = ctl.wait_run(&r.id, Duration::from_secs(10)).await;
        assert_eq!(done.state, "succeeded", "{done:?}");
    }
}

/// `jitter` of the job below, in ms.
const JITTER_MS: i64 = 800;

/// Slack for the timer loop to release a run once its `not_before` has come.
const RELEASE_SLACK_MS: i64 = 300;

/// When the run moved to `to` (its first such transition).
fn moved_at(run: &pb::Run, to: &str) -> Option<DateTime<Utc>> {
    run.transitions
        .iter()
        .find(|t| t.to_state == to)
        .map(|t| parse_ts("transition at", &t.at))
}

/// A per-second schedule with `jitter: 800ms`: each fire's run is created on
/// time, waits `scheduled` for a random delay of at most the jitter
/// (`not_before` minus `created_at`, read while it waits; after that the
/// moment it was queued), starts no earlier, and the delays are not all zero;
/// the same schedule without jitter is queued at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_delays_each_fire_by_at_most_the_jitter() {
    const FIRES: usize = 8;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
defaults:
  retry: {{ max_attempts: 1 }}
jobs:
  jittery:
    schedule: "* * * * * *"
    jitter: {JITTER_MS}ms
    builtin: noop
  steady:
    schedule: "* * * * * *"
    builtin: noop
"#
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    // `not_before` is cleared when the run is released: note it for every
    // run seen while it waits (most of them: the delays are mostly longer
    // than the 50 ms between two looks).
    let seen_waiting: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>> = Default::default();
    let finished = |job: &'static str| {
        let (ctl, seen_waiting) = (&ctl, &seen_waiting);
        async move {
            wait_for(
                &format!("{FIRES} finished fires of {job}"),
                Duration::from_secs(30),
                || async {
                    let runs = scheduled_runs(ctl, job).await?;
                    for r in runs
                        .iter()
                        .filter(|r| r.state == "scheduled" && !r.not_before.is_empty())
                    {
                        let nb = parse_ts("not_before", &r.not_before);
                        seen_waiting.lock().unwrap().insert(r.id.clone(), nb);
                    }
                    let done: Vec<pb::Run> = runs
                        .into_iter()
                        .filter(|r| worker_tests::is_terminal(&r.state))
                        .collect();
                    if done.len() >= FIRES {
                        Ok(done)
                    } else {
                        Err(format!("{} finished: {done:?}", done.len()))
                    }
                },
            )
            .await
        }
    };

    let mut delays = Vec::new();
    let mut exact = 0;
    for listed in finished("jittery").await {
        // ListRuns leaves out the transitions.
        let run = ctl.get_run(&listed.id).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        let at = parse_ts("scheduled_for", &run.scheduled_for);
        let created = parse_ts("created_at", &run.created_at);
        let fired_late = (created - at).num_milliseconds();
        assert!(
            (0..2000).contains(&fired_late),
            "fire created {fired_late} ms after its instant: {run:?}"
        );
        let queued = moved_at(&run, "queued").unwrap_or_else(|| panic!("never queued: {run:?}"));
        let started = parse_ts("started_at", &run.attempts.first().expect("an attempt").started_at);
        assert!(started >= queued, "started before it was queued: {run:?}");
        // Waited (scheduled) from its creation until it was queued.
        let waited = (queued - created).num_milliseconds();
        assert!(
            (0..=JITTER_MS + RELEASE_SLACK_MS).contains(&waited),
            "queued {waited} ms after its creation (jitter {JITTER_MS} ms): {run:?}"
        );
        if waited > 0 {
            assert_eq!(
                run.transitions.first().map(|t| t.to_state.as_str()),
                Some("scheduled"),
                "a delayed fire waits in `scheduled`: {run:?}"
            );
        }
        let noted = seen_waiting.lock().unwrap().get(&run.id).copied();
        if let Some(nb) = noted {
            exact += 1;
            let delay = (nb - created).num_milliseconds();
            assert!(
                (1..=JITTER_MS).contains(&delay),
                "not_before {delay} ms after the creation, outside (0, {JITTER_MS}] ms: {run:?}"
            );
            assert!(queued >= nb, "queued at {queued}, before its not_before {nb}: {run:?}");
            delays.push(delay);
        } else {
            delays.push(waited);
        }
    }
    delays.sort();
    eprintln!("[jitter] delays (ms): {delays:?}; {exact} read from not_before");
    assert!(exact >= 2, "only {exact} runs seen waiting with their not_before");
    // Uniform over [0, 800] ms: eight draws all under 100 ms, or all within
    // 50 ms of each other, would be a one-in-a-million event.
    assert!(
        *delays.last().unwrap() >= 100,
        "no fire was delayed noticeably: {delays:?}"
    );
    assert!(
        delays.last().unwrap() - delays.first().unwrap() >= 50,
        "the delays do not vary: {delays:?}"
    );

    // The same schedule without jitter: every fire is queued at once.
    for listed in finished("steady").await {
        let run = ctl.get_run(&listed.id).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        assert_eq!(
            run.transitions.first().map(|t| t.to_state.as_str()),
            Some("queued"),
            "a fire without jitter was delayed: {run:?}"
        );
    }
}
