//! The web UI's Jobs area over HTTP, against a real controller:
//!
//! * the editor creates a job with every field (checked through the gRPC
//!   client and `workerctl export`), refuses a name that exists, shows an
//!   invalid cron's error next to the cron field (creating nothing) and an
//!   unknown key of the YAML textarea next to it, and edits a job;
//! * the cron preview fragment lists five fires and warns about the DST
//!   change of a 02:30 Berlin schedule;
//! * run now (payload and priority, then the run's page), a bad payload's
//!   error next to the payload field, enable/disable, pause/resume and
//!   delete, each checked through the client;
//! * search and tag filter; a `<script>` description is escaped on the list
//!   and the job page; a config job says so and shows what export writes;
//! * a viewer sees no edit controls, and its forged delete (with its own
//!   valid CSRF token) is refused 403 with the role message.

use worker_proto::v1 as pb;
use worker_tests::TestEnv;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::web::WebSession;

const CONFIG: &str = r#"
jobs:
  from-config:
    description: defined in the file
    shell: "echo hi"
    tags: [cfg]
  ticking:
    schedule: "*/5 * * * *"
    shell: "echo tick"
  manual-only:
    builtin: noop
"#;

/// Every input of the editor, for a job with every common field set.
fn full_form<'a>(name: &'a str, description: &'a str, cron: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("description", description),
        ("cron", cron),
        ("timezone", "Europe/Berlin"),
        ("dst_gap", "skip"),
        ("dst_repeat", "both"),
        ("executor", "shell"),
        ("command", "echo hello"),
        ("cwd", "/tmp"),
        ("env", "GREETING=hi"),
        ("priority", "high"),
        ("tags", "web, nightly"),
        ("enabled", "true"),
        ("timeout", "10m"),
        ("max_attempts", "5"),
        ("backoff", "fixed"),
        ("initial_delay", "5s"),
        ("max_delay", "1m"),
        ("retry_jitter", "0.1"),
        ("non_retryable", "2, 64"),
        ("overlap", "forbid"),
        ("max_concurrency", "2"),
        ("catch_up", "latest"),
        ("max_catch_up", "7"),
        ("catch_up_window", "6h"),
        ("jitter", "30s"),
        ("depends_on", "from-config"),
        ("selector", "region=eu"),
        ("retention_max_runs", "100"),
        ("extra_yaml", ""),
    ]
}

async fn job_names(ctl: &worker_tests::Controller) -> Vec<String> {
    ctl.client()
        .await
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.name)
        .collect()
}

async fn get_job(ctl: &worker_tests::Controller, name: &str) -> pb::Job {
    ctl.client()
        .await
        .get_job(pb::GetJobRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_editor_creates_validates_and_edits_jobs() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let mut web = WebSession::sign_in(ctl.http_addr.unwrap(), None).await;

    let page = web.get("/jobs/new").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for id in [
        "id=\"job-form\"",
        "id=\"cron\"",
        "id=\"schedule-preview\"",
        "id=\"extra-yaml\"",
        "id=\"save-job\"",
    ] {
        assert!(page.body.contains(id), "{id} missing from the editor");
    }

    // Create with every common field.
    let description = "<script>alert(1)</script> nightly mail";
    let answer = web
        .post("/jobs/new", &full_form("web-job", description, "30 2 * * *"))
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.header("location"), Some("/jobs/web-job"));
    let job = get_job(&ctl, "web-job").await;
    assert_eq!(job.description, description);
    assert_eq!(job.schedule, "30 2 * * *");
    assert_eq!(job.timezone, "Europe/Berlin");
    assert_eq!((job.dst_gap.as_str(), job.dst_repeat.as_str()), ("skip", "both"));
    assert_eq!(job.priority, "high");
    assert_eq!(job.tags, vec!["web", "nightly"]);
    assert!(job.enabled);
    assert_eq!(job.timeout_ms, 600_000);
    let retry = job.retry.clone().unwrap();
    assert_eq!((retry.max_attempts, retry.backoff.as_str()), (5, "fixed"));
    assert_eq!((retry.initial_delay_ms, retry.max_delay_ms), (5_000, 60_000));
    assert!((retry.jitter - 0.1).abs() < 1e-9);
    assert_eq!((job.overlap.as_str(), job.catch_up.as_str()), ("forbid", "latest"));
    assert_eq!((job.max_concurrency, job.max_catch_up), (2, 7));
    assert_eq!((job.catch_up_window_ms, job.jitter_ms), (21_600_000, 30_000));
    assert_eq!(job.depends_on, vec!["from-config"]);
    assert_eq!(job.selector.get("region").map(String::as_str), Some("eu"));
    assert_eq!(job.source, "api");
    match job.executor.unwrap().kind.unwrap() {
        pb::executor_spec::Kind::Shell(s) => {
            assert_eq!(s.script, "echo hello");
            assert_eq!(s.cwd, "/tmp");
            assert_eq!(s.non_retryable_exit_codes, vec![2, 64]);
            assert!(s.env.contains_key("GREETING"));
        }
        other => panic!("not a shell job: {other:?}"),
    }
    let export = ctl.cli(&["export"]).await.expect_code(0);
    assert!(export.stdout.contains("max_runs: 100"), "{}", export.stdout);

    // The same name again is refused next to the name field.
    let again = web.post("/jobs/new", &full_form("web-job", "other", "")).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("id=\"name-error\""), "{}", again.body);
    assert!(again.body.contains("job web-job exists"));
    assert_eq!(get_job(&ctl, "web-job").await.description, description, "not replaced");

    // An invalid cron: its error next to the cron field, what was typed kept, nothing created.
    let bad = web
        .post(
            "/jobs/new",
            &[
                ("name", "bad-cron"),
                ("cron", "61 * * * *"),
                ("executor", "shell"),
                ("command", "echo x"),
                ("enabled", "true"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let at = bad
        .body
        .find("id=\"cron-error\"")
        .expect("an error next to the cron field");
    assert!(bad.body[at..].contains("invalid cron expression"), "{}", bad.body);
    assert!(bad.body.contains("value=\"61 * * * *\""));
    assert!(bad.body.contains("aria-invalid=\"true\""));
    assert!(!job_names(&ctl).await.contains(&"bad-cron".to_string()));

    // A key of the YAML textarea the API does not know: the error next to it.
    let unknown = web
        .post(
            "/jobs/new",
            &[
                ("name", "odd"),
                ("executor", "shell"),
                ("command", "echo x"),
                ("extra_yaml", "bogus_key: 1\n"),
            ],
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let at = unknown
        .body
        .find("id=\"extra-yaml-error\"")
        .expect("an error next to the YAML");
    assert!(unknown.body[at..].contains("bogus_key"));
    assert!(!job_names(&ctl).await.contains(&"odd".to_string()));

    // Edit: the form starts from the stored definition; the name cannot change.
    let edit = web.get("/jobs/web-job/edit").await;
    assert_eq!(edit.status, 200);
    assert!(edit.body.contains("value=\"30 2 * * *\""));
    assert!(edit.body.contains("readonly"));
    assert!(
        edit.body.contains("&lt;script&gt;"),
        "the description is escaped in the form"
    );
    let mut changed = full_form("ignored", "now at five", "0 5 * * *");
    changed.retain(|(k, _)| *k != "name");
    let saved = web.post("/jobs/web-job/edit", &changed).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let job = get_job(&ctl, "web-job").await;
    assert_eq!(
        (job.description.as_str(), job.schedule.as_str()),
        ("now at five", "0 5 * * *")
    );
    assert!(!job_names(&ctl).await.contains(&"ignored".to_string()));
    let page = web.get("/jobs/web-job").await;
    assert!(page.body.contains("Job web-job saved."), "the flash");

    // Back to the script description for the escaping checks.
    let escaped = web
        .post("/jobs/web-job/edit", &full_form("web-job", description, "30 2 * * *"))
        .await;
    assert_eq!(escaped.status, 303);
    for path in ["/jobs", "/jobs/web-job"] {
        let page = web.get(path).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}");
        assert!(
            !page.body.contains("<script>alert(1)"),
            "{path} shows the description unescaped"
        );
    }

    // Search and tag filter.
    let found = web.get("/jobs?q=NIGHTLY").await;
    assert!(found.body.contains("id=\"jobs-table\""));
    assert!(found.body.contains("href=\"/jobs/web-job\""));
    assert!(!found.body.contains("href=\"/jobs/from-config\""));
    let tagged = web.get("/jobs?tag=cfg").await;
    assert!(tagged.body.contains("href=\"/jobs/from-config\""));
    assert!(!tagged.body.contains("href=\"/jobs/web-job\""));
    let all = web.get("/jobs").await;
    for name in ["web-job", "from-config", "ticking", "manual-only"] {
        assert!(all.body.contains(&format!("href=\"/jobs/{name}\"")), "{name} listed");
    }
    assert!(all.body.contains("id=\"new-job\""));

    // A config job says so and shows what export writes for it.
    let cfg = web.get("/jobs/from-config").await;
    assert!(cfg.body.contains("Defined in scheduler.yaml"), "{}", cfg.body);
    let at = cfg.body.find("id=\"job-export\"").expect("the export part");
    assert!(cfg.body[at..].contains("from-config:") && cfg.body[at..].contains("echo hi"));

    // The preview fragment: five fires, in the zone and in UTC, and the DST warning.
    let preview = web
        .get("/jobs/preview?cron=30+2+*+*+*&timezone=Europe%2FBerlin&dst_gap=&dst_repeat=")
        .await;
    assert_eq!(preview.status, 200);
    assert!(!preview.body.contains("<html"), "a fragment, not a page");
    assert!(preview.body.contains("id=\"next-fires\""), "{}", preview.body);
    assert_eq!(preview.body.matches("<li>").count(), 5, "{}", preview.body);
    assert!(preview.body.contains("+01:00") || preview.body.contains("+02:00"));
    assert!(preview.body.contains("Z</span>"), "UTC times: {}", preview.body);
    assert!(preview.body.contains("class=\"warn\""), "{}", preview.body);
    assert!(
        preview.body.contains("the clock jumps from 02:00 to 03:00"),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("02:30 does not exist and fires once at 03:00"));
    let invalid = web.get("/jobs/preview?cron=61+*+*+*+*").await;
    assert!(invalid.body.contains("data-invalid") && invalid.body.contains("invalid cron expression"));
    let empty = web.get("/jobs/preview?cron=").await;
    assert!(empty.body.contains("No schedule"));
    // The editor renders the preview on the server too.
    let edit = web.get("/jobs/web-job/edit").await;
    assert!(edit.body.contains("id=\"next-fires\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn job_actions_go_through_the_api() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let mut web = WebSession::sign_in(ctl.http_addr.unwrap(), None).await;
    let mut client = ctl.client().await;

    let page = web.get("/jobs/ticking").await;
    assert_eq!(page.status, 200);
    for id in [
        "id=\"run-now\"",
        "id=\"payload\"",
        "id=\"priority\"",
        "id=\"run-now-submit\"",
        "id=\"toggle-enabled\"",
        "id=\"toggle-paused\"",
        "id=\"edit-job\"",
        "id=\"delete-job\"",
        "id=\"next-fires\"",
    ] {
        assert!(page.body.contains(id), "{id} missing from the job page");
    }

    // Run now with a payload and a priority: the run's page next.
    let answer = web
        .post(
            "/jobs/ticking/run",
            &[("payload", "{\"x\": 1}"), ("priority", "critical")],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let location = answer.header("location").unwrap().to_string();
    let id = location.strip_prefix("/runs/").expect("to the run's page");
    let run = ctl.get_run(id).await;
    assert_eq!(run.job, "ticking");
    assert_eq!(run.priority, "critical");
    let payload: serde_json::Value = serde_json::from_str(&run.payload).unwrap();
    assert_eq!(payload, serde_json::json!({"x": 1}));
    let recent = web.get("/jobs/ticking").await;
    assert!(
        recent.body.contains(&format!("href=\"/runs/{id}\"")),
        "listed among recent runs"
    );

    // A payload that is not JSON: the error next to the payload field, what was typed kept.
    let bad = web
        .post("/jobs/ticking/run", &[("payload", "{nope"), ("priority", "")])
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let at = bad
        .body
        .find("id=\"payload-error\"")
        .expect("an error next to the payload");
    assert!(bad.body[at..].contains("payload"));
    assert!(bad.body.contains("{nope"));

    // Disable and enable.
    let off = web.post("/jobs/ticking/disable", &[]).await;
    assert_eq!(off.status, 303);
    assert!(!get_job(&ctl, "ticking").await.enabled);
    let page = web.get("/jobs/ticking").await;
    assert!(page.body.contains("action=\"/jobs/ticking/enable\""));
    assert_eq!(web.post("/jobs/ticking/enable", &[]).await.status, 303);
    assert!(get_job(&ctl, "ticking").await.enabled);

    // Pause and resume the schedule.
    let paused = |client: &mut worker_proto::v1::controller_service_client::ControllerServiceClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .list_schedules(pb::ListSchedulesRequest {})
                .await
                .unwrap()
                .into_inner()
                .schedules
                .into_iter()
                .find(|s| s.job == "ticking")
                .unwrap()
                .paused
        }
    };
    assert_eq!(web.post("/jobs/ticking/pause", &[]).await.status, 303);
    assert!(paused(&mut client).await);
    let page = web.get("/jobs/ticking").await;
    assert!(page.body.contains("action=\"/jobs/ticking/resume\""));
    assert_eq!(web.post("/jobs/ticking/resume", &[]).await.status, 303);
    assert!(!paused(&mut client).await);

    // Pausing a job without a schedule is refused with the API's words.
    let refused = web.post("/jobs/manual-only/pause", &[]).await;
    assert_eq!(refused.status, 303);
    let page = web.get("/jobs/manual-only").await;
    assert!(page.body.contains("has no schedule"), "{}", page.body);
    assert!(!page.body.contains("id=\"toggle-paused\""), "no pause for a manual job");

    // Delete.
    let deleted = web.post("/jobs/manual-only/delete", &[]).await;
    assert_eq!(deleted.status, 303);
    assert_eq!(deleted.header("location"), Some("/jobs"));
    assert!(!job_names(&ctl).await.contains(&"manual-only".to_string()));
    assert_eq!(web.get("/jobs/manual-only").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_sees_no_edit_controls_and_cannot_delete() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let viewer = ctl.create_token(BOOTSTRAP_SECRET, "watcher", "viewer", &[]).await;
    let mut web = WebSession::sign_in(ctl.http_addr.unwrap(), Some(&viewer)).await;

    let list = web.get("/jobs").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("id=\"jobs-table\""));
    assert!(!list.body.contains("id=\"new-job\""));
    let page = web.get("/jobs/ticking").await;
    assert_eq!(page.status, 200);
    for id in [
        "id=\"run-now\"",
        "id=\"toggle-enabled\"",
        "id=\"toggle-paused\"",
        "id=\"edit-job\"",
        "id=\"delete-job\"",
    ] {
        assert!(!page.body.contains(id), "a viewer is offered {id}");
    }
    assert!(page.body.contains("id=\"next-fires\""), "but sees the schedule");
    assert_eq!(web.get("/jobs/new").await.status, 403);

    // A forged delete with the viewer's own valid CSRF token.
    let forged = web.post("/jobs/ticking/delete", &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("may not call DeleteJob"), "{}", forged.body);
    let forged = web.post("/jobs/new", &full_form("sneaky", "x", "")).await;
    assert_eq!(forged.status, 403);
    let mut admin = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    let jobs: Vec<String> = admin
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert!(jobs.contains(&"ticking".to_string()), "the job still exists");
    assert!(!jobs.contains(&"sneaky".to_string()));
}
