//! Failures stay with what failed: a scheduled job whose fires cannot be
//! created does not hold up any other schedule, and `apply` refuses a job it
//! could never trigger.

use std::collections::BTreeSet;
use std::time::Duration;

use worker_tests::flow::runs_of;
use worker_tests::receiver::Receiver;
use worker_tests::{Controller, TestEnv, parse_ts, run_cli, wait_for};

/// Nominal instants (whole seconds) and creation delays of `job`'s scheduled runs.
async fn fires(ctl: &Controller, job: &str) -> Vec<(i64, i64)> {
    let mut fires: Vec<(i64, i64)> = runs_of(ctl, job)
        .await
        .iter()
        .filter(|r| r.trigger == "schedule")
        .map(|r| {
            let nominal = parse_ts("scheduled_for", &r.scheduled_for);
            let created = parse_ts("created_at", &r.created_at);
            (nominal.timestamp(), (created - nominal).num_milliseconds())
        })
        .collect();
    fires.sort();
    fires
}

/// A per-second job whose chain cannot be enqueued (its upstream job is
/// disabled: `apply` accepts that, triggering refuses it) sits beside two
/// healthy per-second jobs. The healthy ones fire every second, each within
/// a second of its instant; the poisoned one is recorded as failing, counted,
/// alerted (`schedule_failed`) and retried with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_schedule_fails_alone_and_the_healthy_ones_fire_on_time() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  upstream.off:
    builtin: noop
    enabled: false
  poisoned:
    schedule: "* * * * * *"
    builtin: noop
    depends_on: [upstream.off]
  healthy.a:
    schedule: "* * * * * *"
    builtin: noop
  healthy.b:
    schedule: "* * * * * *"
    builtin: noop
"#,
    );
    let recv = Receiver::start().await;
    env.write_alerts(&format!(
        "channels:\n  hook: {{ type: webhook, url: \"{}\", secret: s3cret }}\nrules:\n  - {{ name: fires, event: schedule_failed, channels: [hook] }}\n",
        recv.url("/hook")
    ));
    let ctl = env.start_controller().await;

    // Six seconds of fires.
    let healthy = wait_for("six fires of healthy.a", Duration::from_secs(30), || async {
        let fires = fires(&ctl, "healthy.a").await;
        if fires.len() >= 6 {
            Ok(fires)
        } else {
            Err(format!("{} fires so far", fires.len()))
        }
    })
    .await;
    for job in ["healthy.a", "healthy.b"] {
        let fires = if job == "healthy.a" {
            healthy.clone()
        } else {
            fires(&ctl, job).await
        };
        let seconds: BTreeSet<i64> = fires.iter().map(|(s, _)| *s).collect();
        let (first, last) = (*seconds.first().unwrap(), *seconds.last().unwrap());
        assert_eq!(
            seconds.len() as i64,
            last - first + 1,
            "{job} fired every second from its first fire on: {fires:?}"
        );
        for (second, late_ms) in &fires {
            assert!(
                (0..1_000).contains(late_ms),
                "{job}: the fire of {second} was created {late_ms} ms after its instant: {fires:?}"
            );
        }
    }

    // The poisoned job: no run, and it says why.
    assert!(fires(&ctl, "poisoned").await.is_empty());
    let schedules = ctl.cli_json(&["schedules", "list"]).await;
    let poisoned = schedules
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == "poisoned")
        .expect("poisoned schedule listed")
        .clone();
    assert!(poisoned["failing"].as_u64().unwrap() >= 2, "{poisoned}");
    let error = poisoned["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("upstream job \"upstream.off\" of \"poisoned\" is disabled"),
        "{poisoned}"
    );
    let healthy_listed = schedules
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == "healthy.a")
        .unwrap()
        .clone();
    assert_eq!(healthy_listed["failing"], 0, "{healthy_listed}");
    let table = run_cli(&["--controller", &ctl.url, "schedules", "list"])
        .await
        .expect_code(0);
    assert!(
        table.stdout.contains("poisoned: its fire has failed"),
        "{}",
        table.stdout
    );
    let stats = ctl.cli_json(&["queue", "stats"]).await;
    assert!(stats["failed_fires"].as_u64().unwrap() >= 2, "{stats}");

    // Retried with backoff (1 s, 2 s, 4 s...), not every second.
    let failing = poisoned["failing"].as_u64().unwrap();
    assert!(failing <= 5, "{failing} tries in about six seconds: backoff");

    // Alerted.
    let alerts = recv
        .wait("/hook", "a schedule_failed alert", Duration::from_secs(20), |got| {
            got.iter().any(|r| r.json["event"] == "schedule_failed")
        })
        .await;
    let alert = alerts.iter().find(|r| r.json["event"] == "schedule_failed").unwrap();
    assert_eq!(alert.json["job"], "poisoned", "{}", alert.json);
    assert!(
        alert.json["title"]
            .as_str()
            .unwrap_or_default()
            .starts_with("schedule_failed: poisoned could not fire"),
        "{}",
        alert.json
    );

    // Enabling the upstream job heals it: it fires again, once per second.
    ctl.cli(&["jobs", "enable", "upstream.off"]).await.expect_code(0);
    wait_for("the poisoned job to fire again", Duration::from_secs(30), || async {
        if fires(&ctl, "poisoned").await.is_empty() {
            Err("no fire yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
}

/// `apply` refuses what triggering would refuse: more than 100 `depends_on`,
/// and chains deeper than 64. Nothing of the document is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_job_that_could_never_be_triggered() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  existing:\n    builtin: noop\n");
    let ctl = env.start_controller().await;

    let mut wide = String::from("jobs:\n");
    for i in 0..101 {
        wide.push_str(&format!("  up{i}:\n    builtin: noop\n"));
    }
    let all: Vec<String> = (0..101).map(|i| format!("up{i}")).collect();
    wide.push_str(&format!(
        "  wide:\n    schedule: \"* * * * *\"\n    builtin: noop\n    depends_on: [{}]\n",
        all.join(", ")
    ));
    let file = env.path().join("wide.yaml");
    std::fs::write(&file, wide).unwrap();
    let out = ctl.cli(&["apply", "-f", file.to_str().unwrap()]).await.expect_code(2);
    assert!(
        out.stderr
            .contains("jobs.wide.depends_on: 101 jobs exceeds the limit dependencies=100"),
        "{}",
        out.stderr
    );

    let mut deep = String::from("jobs:\n  level0:\n    builtin: noop\n");
    for i in 1..=65 {
        deep.push_str(&format!(
            "  level{i}:\n    builtin: noop\n    depends_on: [level{}]\n",
            i - 1
        ));
    }
    let file = env.path().join("deep.yaml");
    std::fs::write(&file, deep).unwrap();
    let out = ctl.cli(&["apply", "-f", file.to_str().unwrap()]).await.expect_code(2);
    assert!(
        out.stderr
            .contains("jobs.level65.depends_on: its chain of upstream jobs is 65 deep, over the limit of 64"),
        "{}",
        out.stderr
    );
    let jobs = ctl.cli_json(&["jobs", "list"]).await;
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["existing"], "nothing of a refused document is applied");
}
