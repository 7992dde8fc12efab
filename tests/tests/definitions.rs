//! Job definitions at run time: `apply`, `export`, restarts with and without a
//! changed config file, rejected documents; schedule pause / resume / preview;
//! dependency errors in the config file.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use worker_proto::v1 as pb;
use worker_tests::flow::{runs_of, schedule_json, ts};
use worker_tests::json::{self, opt_str, str_field};
use worker_tests::{Controller, TestEnv, Value, wait_for};

const CONFIG_V1: &str = r#"
jobs:
  keep:
    builtin: noop
  moving:
    schedule: "0 0 5 * * *"
    builtin: noop
"#;

/// name → (schedule, source) from `jobs list -o json`.
async fn jobs(ctl: &Controller) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let list = ctl.cli_json(&["jobs", "list"]).await;
    json::as_array(&list)
        .iter()
        .map(|j| {
            (
                str_field(j, "name").to_string(),
                (
                    opt_str(j, "schedule").map(String::from),
                    opt_str(j, "source").map(String::from),
                ),
            )
        })
        .collect()
}

fn entry(schedule: Option<&str>, source: &str) -> (Option<String>, Option<String>) {
    (schedule.map(String::from), Some(source.to_string()))
}

fn names(v: &Value, key: &str) -> Vec<String> {
    let mut n: Vec<String> = json::arr(v, key)
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// `export` must succeed and print YAML on stdout.
async fn export(ctl: &Controller) -> String {
    let out = ctl.cli(&["export"]).await.expect_code(0);
    assert!(out.stdout.contains("jobs:"), "export: {}", out.stdout);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_survives_restart_until_the_config_file_changes() {
    let env = TestEnv::new();
    env.write_config(CONFIG_V1);
    let mut ctl = env.start_controller().await;
    assert_eq!(
        jobs(&ctl).await,
        BTreeMap::from([
            ("keep".into(), entry(None, "config")),
            ("moving".into(), entry(Some("0 0 5 * * *"), "config")),
        ])
    );

    // apply: one job added, another's schedule changed.
    let doc = env.path().join("new.yaml");
    std::fs::write(
        &doc,
        "jobs:\n  added:\n    builtin: noop\n  moving:\n    schedule: \"0 30 6 * * *\"\n    builtin: noop\n",
    )
    .unwrap();
    let doc = doc.display().to_string();
    let applied = ctl.cli_json(&["apply", "-f", &doc]).await;
    assert_eq!(names(&applied, "created"), ["added"], "{applied:#}");
    assert_eq!(names(&applied, "updated"), ["moving"], "{applied:#}");
    assert_eq!(names(&applied, "unchanged"), Vec::<String>::new(), "{applied:#}");
    let after_apply = jobs(&ctl).await;
    assert_eq!(after_apply["added"], entry(None, "api"));
    assert_eq!(after_apply["moving"].0.as_deref(), Some("0 30 6 * * *"));
    assert_eq!(after_apply["keep"], entry(None, "config"));
    let sched = schedule_json(&ctl, "moving").await;
    assert_eq!(str_field(&sched, "cron"), "0 30 6 * * *", "{sched:#}");
    let next = ts("next_fire", str_field(&sched, "next_fire"));
    assert_eq!(next.format("%H:%M:%S").to_string(), "06:30:00", "{sched:#}");
    let exported = export(&ctl).await;
    assert!(
        exported.contains("0 30 6 * * *") && exported.contains("added"),
        "{exported}"
    );

    // Restart with the same config file: the API's definitions stay.
    ctl.proc.terminate(Duration::from_secs(15));
    drop(ctl);
    let mut ctl = env.start_controller().await;
    assert_eq!(
        jobs(&ctl).await,
        after_apply,
        "definitions after a restart with an unchanged file"
    );
    assert_eq!(export(&ctl).await, exported, "export after the restart");
    // The added job can be run.
    let _agent = env.start_agent(&ctl, "wide", 2).await;
    let id = ctl.cli_enqueue("added", &[]).await;
    assert_eq!(ctl.wait_run(&id, Duration::from_secs(15)).await.state, "succeeded");

    // Change the file: it is applied again. Its jobs follow it (keep is
    // removed, moving gets the file's schedule, fresh appears); the job
    // created through the API stays.
    env.write_config(
        r#"
jobs:
  moving:
    schedule: "0 15 7 * * *"
    builtin: noop
  fresh:
    builtin: noop
"#,
    );
    ctl.proc.terminate(Duration::from_secs(15));
    drop(ctl);
    let ctl = env.start_controller().await;
    let now = jobs(&ctl).await;
    assert_eq!(
        now,
        BTreeMap::from([
            ("added".into(), entry(None, "api")),
            ("fresh".into(), entry(None, "config")),
            ("moving".into(), entry(Some("0 15 7 * * *"), "config")),
        ]),
        "definitions after the config file changed"
    );
    // The run history of the API job is kept.
    assert_eq!(runs_of(&ctl, "added").await.len(), 1);

    // Round trip: the export is accepted by apply; applying it twice changes nothing.
    let exported = export(&ctl).await;
    let path = env.path().join("export.yaml");
    std::fs::write(&path, &exported).unwrap();
    let path = path.display().to_string();
    let first = ctl.cli_json(&["apply", "-f", &path]).await;
    assert_eq!(names(&first, "created"), Vec::<String>::new(), "{first:#}");
    let second = ctl.cli_json(&["apply", "-f", &path]).await;
    assert_eq!(names(&second, "unchanged"), ["added", "fresh", "moving"], "{second:#}");
    assert_eq!(export(&ctl).await, exported, "export after applying the export");
    let schedules: Vec<_> = jobs(&ctl).await.into_iter().map(|(n, (s, _))| (n, s)).collect();
    assert_eq!(
        schedules,
        vec![
            ("added".to_string(), None),
            ("fresh".to_string(), None),
            ("moving".to_string(), Some("0 15 7 * * *".to_string()))
        ]
    );
}

/// Applying the document `export` printed reports every job `unchanged`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_export_reports_all_unchanged() {
    let env = TestEnv::new();
    env.write_config(CONFIG_V1);
    let ctl = env.start_controller().await;
    let doc = env.path().join("new.yaml");
    std::fs::write(&doc, "jobs:\n  added:\n    builtin: noop\n").unwrap();
    ctl.cli_json(&["apply", "-f", &doc.display().to_string()]).await;

    let exported = export(&ctl).await;
    let path = env.path().join("export.yaml");
    std::fs::write(&path, &exported).unwrap();
    let out = ctl.cli_json(&["apply", "-f", &path.display().to_string()]).await;
    assert_eq!(names(&out, "created"), Vec::<String>::new(), "{out:#}");
    assert_eq!(
        names(&out, "unchanged"),
        ["added", "keep", "moving"],
        "applying the export should change nothing: {out:#}\njobs: {:?}",
        jobs(&ctl).await
    );
}

/// A rejected document exits 2 with each error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rejects_bad_documents_whole() {
    let env = TestEnv::new();
    env.write_config(CONFIG_V1);
    let ctl = env.start_controller().await;
    let before = export(&ctl).await;
    let jobs_before = jobs(&ctl).await;

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "bad-cron",
            "jobs:\n  added:\n    builtin: noop\n  keep:\n    schedule: \"61 * * * *\"\n    builtin: noop\n",
            &["jobs.keep.schedule", "61 * * * *"],
        ),
        (
            "bad-zone",
            "jobs:\n  added:\n    builtin: noop\n  moving:\n    schedule: \"0 1 * * *\"\n    timezone: Mars/Olympus_Mons\n    builtin: noop\n",
            &["jobs.moving.timezone", "Mars/Olympus_Mons"],
        ),
        (
            "unknown-dependency",
            "jobs:\n  added:\n    builtin: noop\n    depends_on: [ghost]\n",
            &["jobs.added.depends_on", "ghost"],
        ),
        (
            "cycle",
            "jobs:\n  p:\n    builtin: noop\n    depends_on: [q]\n  q:\n    builtin: noop\n    depends_on: [p]\n  keep:\n    builtin: noop\n    description: changed\n",
            &["depends_on", "cycle"],
        ),
        (
            "cycle-with-existing",
            "jobs:\n  keep:\n    builtin: noop\n    depends_on: [r]\n  r:\n    builtin: noop\n    depends_on: [keep]\n",
            &["depends_on", "cycle"],
        ),
        (
            "two-errors",
            "jobs:\n  added:\n    builtin: noop\n  moving:\n    schedule: \"0 1 * * * * * *\"\n    builtin: noop\n  keep:\n    schedule: \"0 1 * * *\"\n    timezone: Europe/Atlantis\n    builtin: noop\n",
            &["jobs.moving.schedule", "jobs.keep.timezone", "Europe/Atlantis"],
        ),
    ];
    for (name, yaml, fragments) in cases {
        let path = env.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = ctl.cli(&["apply", "-f", &path.display().to_string()]).await;
        assert_eq!(out.code, 2, "{name}: {out:?}");
        for f in fragments.iter() {
            assert!(out.stderr.contains(f), "{name}: stderr lacks {f:?}:\n{}", out.stderr);
        }
        assert_eq!(export(&ctl).await, before, "{name} changed the definitions");
        assert_eq!(jobs(&ctl).await, jobs_before, "{name} changed the jobs");
    }
}

/// A document with all four kinds of errors: each is reported, nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reports_every_error_of_a_document() {
    let env = TestEnv::new();
    env.write_config(CONFIG_V1);
    let ctl = env.start_controller().await;
    let before = export(&ctl).await;
    let all_four = "jobs:\n  a:\n    builtin: noop\n    depends_on: [ghost]\n  b:\n    builtin: noop\n    depends_on: [c]\n  c:\n    builtin: noop\n    depends_on: [b]\n  d:\n    schedule: \"61 * * * *\"\n    builtin: noop\n  e:\n    schedule: \"0 * * * *\"\n    timezone: Mars/Olympus_Mons\n    builtin: noop\n";
    let path = env.path().join("all-four.yaml");
    std::fs::write(&path, all_four).unwrap();
    let out = ctl.cli(&["apply", "-f", &path.display().to_string()]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        export(&ctl).await,
        before,
        "a rejected document changed the definitions"
    );
    for f in [
        "all-four.yaml:12: jobs.d.schedule",
        "61 * * * *",
        "all-four.yaml:16: jobs.e.timezone",
        "Mars/Olympus_Mons",
        "all-four.yaml:4: jobs.a.depends_on",
        "ghost",
        "cycle",
    ] {
        assert!(out.stderr.contains(f), "stderr lacks {f:?}:\n{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_fires_and_resume_restarts_them() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  tick:
    schedule: "*/1 * * * * *"
    builtin: noop
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;
    wait_for("a first fire", Duration::from_secs(10), || async {
        if runs_of(&ctl, "tick").await.is_empty() {
            Err("no run".to_string())
        } else {
            Ok(())
        }
    })
    .await;

    let paused = ctl.cli_json(&["schedules", "pause", "tick"]).await;
    assert_eq!(paused["paused"], Value::Bool(true), "{paused:#}");
    let paused_at = chrono::Utc::now();
    let mut client = ctl.client().await;
    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            job: "tick".into(),
            ..Default::default()
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let listed = schedule_json(&ctl, "tick").await;
    assert_eq!(listed["paused"], Value::Bool(true), "{listed:#}");
    // A negative check: no new run may appear while paused. Watch the event
    // stream for 2.5 s (two and a half fire periods); a run created by the
    // schedule would show up as an event.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => break,
            Ok(None) => panic!("event stream ended"),
            Ok(Some(Err(e))) => panic!("event stream: {e}"),
            Ok(Some(Ok(ev))) => {
                // Events of runs created before the pause (finishing) are fine.
                let run = ctl.get_run(&ev.run_id).await;
                assert!(
                    ts("created_at", &run.created_at) <= paused_at,
                    "run created while paused: {run:?} (event {ev:?})"
                );
            }
        }
    }
    let created_while_paused: Vec<_> = runs_of(&ctl, "tick")
        .await
        .into_iter()
        .filter(|r| ts("created_at", &r.created_at) > paused_at)
        .collect();
    assert!(created_while_paused.is_empty(), "{created_while_paused:?}");

    let resumed = ctl.cli_json(&["schedules", "resume", "tick"]).await;
    assert_eq!(resumed["paused"], Value::Bool(false), "{resumed:#}");
    let resumed_at = chrono::Utc::now();
    let after: Vec<_> = wait_for("a fire after resume", Duration::from_secs(5), || async {
        let r: Vec<_> = runs_of(&ctl, "tick")
            .await
            .into_iter()
            .filter(|r| ts("created_at", &r.created_at) > paused_at)
            .collect();
        if r.is_empty() { Err("none".to_string()) } else { Ok(r) }
    })
    .await;
    // Paused fires are not caught up: every new run is for an instant after the resume.
    for r in &after {
        assert!(
            ts("scheduled_for", &r.scheduled_for) >= resumed_at - chrono::Duration::seconds(1),
            "fire from the paused period: {r:?}"
        );
    }
    let s = schedule_json(&ctl, "tick").await;
    assert_eq!(s["paused"], Value::Bool(false), "{s:#}");
    assert!(opt_str(&s, "next_fire").is_some(), "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_next_across_a_dst_gap() {
    let env = TestEnv::new();
    env.write_config(
        "jobs:\n  berlin:\n    schedule: \"0 30 2 * * *\"\n    timezone: Europe/Berlin\n    builtin: noop\n",
    );
    let ctl = env.start_controller().await;
    let base = [
        "schedules",
        "next",
        "--cron",
        "0 30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-28T00:00:00Z",
        "--count",
        "3",
    ];
    let utc = |v: &Value| -> Vec<String> {
        json::as_array(v)
            .iter()
            .map(|f| str_field(f, "utc").to_string())
            .collect()
    };
    let norm = |v: Vec<String>| -> Vec<String> {
        v.iter()
            .map(|s| ts("utc", s).format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect()
    };

    // Default (shift): the gap day fires at the first instant after the gap.
    let shift = ctl.cli_json(&base).await;
    assert_eq!(
        norm(utc(&shift)),
        ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        "{shift:#}"
    );
    let locals: Vec<&str> = json::as_array(&shift).iter().map(|f| str_field(f, "local")).collect();
    assert_eq!(
        locals,
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ],
        "{shift:#}"
    );
    let mut explicit = base.to_vec();
    explicit.extend(["--dst-gap", "shift"]);
    assert_eq!(utc(&ctl.cli_json(&explicit).await), utc(&shift));

    // skip: the gap day has no fire.
    let mut skip = base.to_vec();
    skip.extend(["--dst-gap", "skip"]);
    let skipped = ctl.cli_json(&skip).await;
    assert_eq!(
        norm(utc(&skipped)),
        ["2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
        "{skipped:#}"
    );

    // A job's schedule previews the same (its zone, default policy).
    let job = ctl
        .cli_json(&[
            "schedules",
            "next",
            "berlin",
            "--from",
            "2026-03-28T00:00:00Z",
            "--count",
            "3",
        ])
        .await;
    assert_eq!(utc(&job), utc(&shift), "{job:#}");

    // Bad input is a usage error.
    let out = ctl
        .cli(&["schedules", "next", "--cron", "61 * * * *", "--count", "1"])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("61 * * * *"), "{out:?}");
    let out = ctl
        .cli(&["schedules", "next", "--cron", "0 * * * *", "--tz", "Mars/Base"])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("Mars/Base"), "{out:?}");
}

/// Runs the controller on `yaml`, expects exit 2 and returns stderr.
async fn config_errors(yaml: &str) -> (String, String) {
    let env = TestEnv::new();
    env.write_config(yaml);
    let out = env.run_controller_to_exit(&[], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(!out.stdout.contains("ready"), "{out:?}");
    (env.config_file().display().to_string(), out.stderr)
}

/// The error line starting `FILE:LINE: PATH`.
fn error_line<'a>(stderr: &'a str, file: &str, line: usize, path: &str) -> &'a str {
    let prefix = format!("{file}:{line}: {path}");
    stderr
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no error line starting {prefix:?}:\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_unknown_dependency() {
    let (file, stderr) =
        config_errors("jobs:\n  a:\n    builtin: noop\n    depends_on: [ghost]\n  b:\n    builtin: noop\n").await;
    assert!(stderr.contains("invalid configuration: 1 error(s)"), "{stderr}");
    let l = error_line(&stderr, &file, 4, "jobs.a.depends_on");
    assert!(l.contains("ghost"), "{l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dependency_cycle() {
    let (file, stderr) = config_errors(
        "jobs:\n  b:\n    builtin: noop\n    depends_on: [c]\n  c:\n    builtin: noop\n    depends_on: [b]\n  ok:\n    builtin: noop\n    depends_on: [b]\n",
    )
    .await;
    assert!(stderr.contains("invalid configuration: 1 error(s)"), "{stderr}");
    let l = stderr
        .lines()
        .map(str::trim_start)
        .find(|l| {
            l.starts_with(&format!("{file}:4: jobs.b.depends_on"))
                || l.starts_with(&format!("{file}:7: jobs.c.depends_on"))
        })
        .unwrap_or_else(|| panic!("no cycle error at line 4 or 7:\n{stderr}"));
    assert!(
        l.contains("cycle") && (l.contains("b -> c -> b") || l.contains("c -> b -> c")),
        "{l}"
    );
}

/// "It prints every problem": dependency errors are reported together with the
/// other errors of the file, each as `FILE:LINE: PATH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reports_dependency_errors_with_the_others() {
    let yaml = r#"jobs:
  a:
    builtin: noop
    depends_on: [ghost]
  b:
    builtin: noop
    depends_on: [c]
  c:
    builtin: noop
    depends_on: [b]
  d:
    schedule: "61 * * * *"
    builtin: noop
  e:
    schedule: "0 * * * *"
    timezone: Mars/Olympus_Mons
    builtin: noop
"#;
    let (file, stderr) = config_errors(yaml).await;
    let cron = error_line(&stderr, &file, 12, "jobs.d.schedule");
    assert!(cron.contains("61 * * * *"), "{cron}");
    let zone = error_line(&stderr, &file, 16, "jobs.e.timezone");
    assert!(zone.contains("Mars/Olympus_Mons"), "{zone}");
    let ghost = error_line(&stderr, &file, 4, "jobs.a.depends_on");
    assert!(ghost.contains("ghost"), "{ghost}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("cycle") && l.contains(&format!("{file}:"))),
        "no cycle error:\n{stderr}"
    );
    assert!(stderr.contains("invalid configuration: 4 error(s)"), "{stderr}");
}
