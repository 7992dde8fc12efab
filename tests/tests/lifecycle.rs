//! A job's life cycle: a disabled job neither fires nor accepts enqueues (and
//! does both again once enabled); `jobs delete` is refused while other jobs
//! depend on the job or while it has unfinished runs, and accepted after.

use std::time::Duration;

use chrono::{DateTime, Utc};
use worker_tests::flow::{runs_of, ts};
use worker_tests::json::{self, str_field};
use worker_tests::{Controller, TestEnv, Value, wait_for};

/// Runs of `job` whose nominal fire instant is after `after`.
async fn fired_after(ctl: &Controller, job: &str, after: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    runs_of(ctl, job)
        .await
        .iter()
        .filter(|r| r.trigger == "schedule")
        .map(|r| ts("scheduled_for", &r.scheduled_for))
        .filter(|at| *at > after)
        .collect()
}

/// Waits until the every-second `witness` schedule has fired `n` times after
/// `after`: the scheduler was firing during that time, so a job that has no
/// fire in the same period was not fired because of its own state.
async fn witness_fires(ctl: &Controller, n: usize, after: DateTime<Utc>) -> DateTime<Utc> {
    wait_for(
        &format!("{n} fires of the witness schedule after {after}"),
        Duration::from_secs(20),
        || async {
            let fires = fired_after(ctl, "witness", after).await;
            if fires.len() >= n {
                Ok(fires.iter().copied().max().unwrap())
            } else {
                Err(format!("{} fires: {fires:?}", fires.len()))
            }
        },
    )
    .await
}

/// An enqueue of a disabled job: refused as a failed precondition (exit 2),
/// the message naming the job and saying it is disabled, nothing on stdout.
async fn assert_enqueue_refused(ctl: &Controller, args: &[&str], job: &str) {
    let out = ctl.cli(args).await.expect_code(2);
    assert!(
        out.stderr.contains("disabled") && out.stderr.contains(job),
        "workerctl {args:?}: the error does not say {job} is disabled: {}",
        out.stderr
    );
    assert!(
        out.stdout.trim().is_empty(),
        "workerctl {args:?} printed: {}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_job_neither_fires_nor_accepts_enqueues() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  witness:
    schedule: "* * * * * *"
    builtin: noop
  off:
    schedule: "* * * * * *"
    builtin: noop
    enabled: false
  later:
    schedule: "* * * * * *"
    builtin: noop
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "steady", 4).await;
    let started = Utc::now();

    // Disabled in the config file: listed as disabled, without a next fire.
    let off = ctl.cli_json(&["jobs", "get", "off"]).await;
    assert_eq!(off["enabled"], Value::Bool(false), "{off:#}");
    assert_eq!(
        off["next_fire"],
        Value::Null,
        "a disabled job has no next fire: {off:#}"
    );
    assert_enqueue_refused(&ctl, &["enqueue", "off"], "off").await;
    assert_enqueue_refused(&ctl, &["jobs", "run", "off"], "off").await;
    assert_enqueue_refused(&ctl, &["enqueue", "off", "--key", "k1"], "off").await;

    // Three fires of the witness: `off` was due as often, and never fired.
    witness_fires(&ctl, 3, started).await;
    let runs = runs_of(&ctl, "off").await;
    assert!(runs.is_empty(), "the disabled job has runs: {runs:?}");

    // Disabled at run time: `later` has fired; after the disable it does not.
    wait_for("a fire of later", Duration::from_secs(10), || async {
        let fires = fired_after(&ctl, "later", started).await;
        if fires.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let disabled = ctl.cli_json(&["jobs", "disable", "later"]).await;
    assert_eq!(disabled["enabled"], Value::Bool(false), "{disabled:#}");
    assert_eq!(disabled["next_fire"], Value::Null, "{disabled:#}");
    let disabled_at = Utc::now();
    assert_enqueue_refused(&ctl, &["enqueue", "later"], "later").await;
    let witnessed = witness_fires(&ctl, 3, disabled_at).await;
    let late = fired_after(&ctl, "later", disabled_at).await;
    assert!(
        late.is_empty(),
        "later fired at {late:?} after it was disabled at {disabled_at} (the witness fired until {witnessed})"
    );
    let listed = ctl.cli_json(&["jobs", "list"]).await;
    let entry = json::as_array(&listed)
        .iter()
        .find(|j| str_field(j, "name") == "later")
        .cloned()
        .unwrap_or_else(|| panic!("later not listed: {listed:#}"));
    assert_eq!(entry["enabled"], Value::Bool(false), "{entry:#}");

    // Enabled again: it fires and accepts enqueues again.
    let enabled = ctl.cli_json(&["jobs", "enable", "later"]).await;
    assert_eq!(enabled["enabled"], Value::Bool(true), "{enabled:#}");
    let enabled_at = Utc::now();
    wait_for(
        "a fire of later after it was enabled",
        Duration::from_secs(10),
        || async {
            let fires = fired_after(&ctl, "later", enabled_at).await;
            if fires.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    let id = ctl.cli_enqueue("later", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(15)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    ctl.cli_json(&["jobs", "enable", "off"]).await;
    let id = ctl.cli_enqueue("off", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(15)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");

    // An unknown job is not found, not disabled.
    ctl.cli(&["jobs", "disable", "nosuchjob"]).await.expect_code(3);
}

/// The names of the defined jobs.
async fn job_names(ctl: &Controller) -> Vec<String> {
    json::names(&ctl.cli_json(&["jobs", "list"]).await)
}

/// `jobs delete NAME` refused with exit 2 and a message containing every
/// one of `fragments`; the job is still defined afterwards.
async fn assert_delete_refused(ctl: &Controller, job: &str, fragments: &[&str]) {
    let out = ctl.cli(&["jobs", "delete", job]).await.expect_code(2);
    for f in fragments {
        assert!(
            out.stderr.contains(f),
            "jobs delete {job}: the error lacks {f:?}: {}",
            out.stderr
        );
    }
    assert!(
        out.stdout.trim().is_empty(),
        "jobs delete {job} printed: {}",
        out.stdout
    );
    assert!(
        job_names(ctl).await.iter().any(|n| n == job),
        "{job} was deleted although the delete was refused"
    );
}

/// `jobs delete NAME` accepted: prints `{"deleted": NAME}`, and the job is gone.
async fn assert_deleted(ctl: &Controller, job: &str) {
    let out = ctl.cli_json(&["jobs", "delete", job]).await;
    assert_eq!(out["deleted"], Value::from(job), "{out:#}");
    assert!(
        !job_names(ctl).await.iter().any(|n| n == job),
        "{job} still listed after its delete"
    );
    ctl.cli(&["jobs", "get", job]).await.expect_code(3);
    ctl.cli(&["enqueue", job]).await.expect_code(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_refused_while_jobs_depend_on_it_or_runs_are_unfinished() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  base:
    builtin: noop
  top:
    builtin: noop
    depends_on: [base]
  busy:
    builtin: { name: sleep, duration: 60s }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "solo", 1).await;

    // A job other jobs depend on.
    assert_delete_refused(&ctl, "base", &["base", "dependency", "top"]).await;
    assert_deleted(&ctl, "top").await;
    assert_deleted(&ctl, "base").await;

    // Unfinished runs: one running, one queued behind it, one delayed.
    let running = ctl.cli_enqueue("busy", &[]).await;
    ctl.wait_state(&running, "running", Duration::from_secs(10)).await;
    let queued = ctl.cli_enqueue("busy", &[]).await;
    let delayed = ctl.cli_enqueue("busy", &["--delay", "1h"]).await;
    assert_eq!(ctl.get_run(&queued).await.state, "queued");
    assert_eq!(ctl.get_run(&delayed).await.state, "scheduled");
    assert_delete_refused(&ctl, "busy", &["busy", "3 unfinished run"]).await;

    ctl.cli(&["runs", "cancel", &queued]).await.expect_code(0);
    ctl.cli(&["runs", "cancel", &delayed]).await.expect_code(0);
    assert_delete_refused(&ctl, "busy", &["busy", "1 unfinished run"]).await;

    ctl.cli(&["runs", "cancel", &running]).await.expect_code(0);
    let run = ctl.wait_run(&running, Duration::from_secs(15)).await;
    assert_eq!(run.state, "cancelled", "{run:?}");
    assert_deleted(&ctl, "busy").await;
    assert!(job_names(&ctl).await.is_empty());

    // Deleting it again: not found.
    ctl.cli(&["jobs", "delete", "busy"]).await.expect_code(3);
}
