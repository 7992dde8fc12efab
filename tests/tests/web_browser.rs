//! The web UI in a real headless Chromium (Debian's `chromium` through
//! `chromedriver`, see `worker_tests::browser`), against a real controller
//! and agent: the operator's journey from sign-in to the dead-letter queue,
//! what a viewer sees and may not do, and screenshots of every page at
//! desktop and phone widths (written to `target/web-screenshots/`; a few are
//! committed under `docs/screenshots/`).
//!
//! Skipped with a notice where chromium or chromedriver is missing (fails
//! under `CI`, where `.ci/run` installs them).

use std::time::Duration;

use serde_json::Value;
use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::browser::{Browser, DESKTOP, PHONE};
use worker_tests::receiver::Receiver;
use worker_tests::{Controller, TestEnv, wait_for};

const CONFIG: &str = r#"
jobs:
  always.fails:
    description: Fails at once, for the dead-letter queue
    retry: { max_attempts: 1 }
    shell: 'echo "no luck" >&2; exit 3'
"#;

const WAIT: Duration = Duration::from_secs(30);

fn alerts(recv: &Receiver) -> String {
    format!(
        "channels:\n  hook: {{ type: webhook, url: \"{}\", secret: browser-test-secret-0123456789 }}\nrules:\n  - {{ name: slow, event: run_slow, jobs: \"*\", threshold: 10s, channels: [hook] }}\n",
        recv.url("/hook")
    )
}

async fn start(env: &TestEnv) -> (Controller, worker_tests::Agent) {
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let agent_token = ctl.create_token(BOOTSTRAP_SECRET, "browser-agent", "agent", &[]).await;
    let agent = env
        .start_agent_with_token(
            &ctl,
            "browser-agent",
            &agent_token,
            BOOTSTRAP_SECRET,
            &["--labels", "zone=lab"],
        )
        .await;
    (ctl, agent)
}

async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/")).await;
    browser.fill("#token", token).await;
    browser.click("form.login button[type=submit]").await;
    browser.wait_text("main h1", "Dashboard", WAIT).await;
}

/// Enqueues `job` as the bootstrap admin and waits until its run is dead.
async fn dead_run(ctl: &Controller, job: &str) -> String {
    let out = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["enqueue", job])
        .await
        .expect_code(0)
        .json();
    let id = out["id"].as_str().expect("run id").to_string();
    let client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    wait_for("the run to go dead", WAIT, || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let run = client
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if run.state == "dead" { Ok(()) } else { Err(run.state) }
        }
    })
    .await;
    id
}

async fn job_of(ctl: &Controller, name: &str) -> Value {
    let out = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["jobs", "get", name])
        .await
        .expect_code(0);
    out.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_runs_watches_disables_alerts_and_retries_in_a_real_browser() {
    let Some(browser) = Browser::start().await else { return };
    let recv = Receiver::start().await;
    let env = TestEnv::new();
    env.write_config(CONFIG);
    env.write_alerts(&alerts(&recv));
    let (ctl, _agent) = start(&env).await;
    let base = format!("http://{}", ctl.http_addr.expect("HTTP"));
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;

    // Sign in.
    sign_in(&browser, &base, BOOTSTRAP_SECRET).await;

    // Create a job: an invalid cron is refused as it is typed...
    browser.goto(&format!("{base}/jobs/new")).await;
    browser.fill("#name", "browser.hello").await;
    browser.fill("#command", "echo line-one; sleep 1; echo line-two").await;
    browser.fill("#cron", "61 * * * *").await;
    browser.find("#schedule-preview [data-invalid]").await;
    let error = browser.text("#schedule-preview").await;
    assert!(error.contains("61"), "the error names the bad field: {error}");
    assert_eq!(
        browser
            .find("#cron")
            .await
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    browser.screenshot("job-editor-invalid-cron").await;
    // ...and once fixed, the next fires show in the job's zone and in UTC.
    browser.fill("#timezone", "Europe/Berlin").await;
    browser.fill("#cron", "30 2 * * *").await;
    browser.find("#next-fires li").await;
    let fires = browser.text("#next-fires").await;
    assert!(fires.contains("02:30"), "local fire times: {fires}");
    assert!(fires.contains("UTC") || fires.contains('Z'), "UTC fire times: {fires}");
    browser.screenshot("job-editor-preview").await;
    browser.click("#save-job").await;
    browser.wait_text("main h1", "browser.hello", WAIT).await;
    let job = job_of(&ctl, "browser.hello").await;
    assert_eq!(job["schedule"], "30 2 * * *", "{job}");
    assert_eq!(job["timezone"], "Europe/Berlin", "{job}");

    // Run it now and watch its output arrive live, then the run succeed.
    browser.fill("#payload", r#"{"from":"browser"}"#).await;
    browser.click("#run-now-submit").await;
    browser.wait_text("#output", "line-one", WAIT).await;
    let run_path = browser.path().await;
    assert!(run_path.starts_with("/runs/"), "run now opens the run: {run_path}");
    let run_id = run_path.trim_start_matches("/runs/").to_string();
    browser.wait_text("#run-state", "succeeded", WAIT).await;
    browser.wait_text("#output", "line-two", WAIT).await;
    browser.screenshot("run-succeeded").await;
    let run = client
        .get_run(pb::GetRunRequest { id: run_id.clone() })
        .await
        .expect("GetRun")
        .into_inner();
    assert_eq!(run.state, "succeeded");
    assert!(run.payload.contains("browser"), "the payload was sent: {}", run.payload);

    // A job firing every second: disabled in the UI, it fires no more.
    browser.goto(&format!("{base}/jobs/new")).await;
    browser.fill("#name", "browser.tick").await;
    browser.fill("#command", "true").await;
    browser.fill("#cron", "* * * * * *").await;
    browser.find("#next-fires li").await;
    browser.click("#save-job").await;
    browser.wait_text("main h1", "browser.tick", WAIT).await;
    let runs_of = |client: &mut worker_tests::auth::AuthedClient| {
        let mut client = client.clone();
        async move {
            client
                .list_runs(pb::ListRunsRequest {
                    job: "browser.tick".into(),
                    state: String::new(),
                    limit: 1000,
                })
                .await
                .map(|r| r.into_inner().runs)
                .unwrap_or_default()
        }
    };
    wait_for("browser.tick to fire", WAIT, || {
        let f = runs_of(&mut client);
        async move {
            let n = f.await.len();
            if n >= 1 { Ok(n) } else { Err(format!("{n} runs")) }
        }
    })
    .await;
    browser.click("#toggle-enabled").await;
    browser.wait_text("main", "disabled", WAIT).await;
    assert_eq!(job_of(&ctl, "browser.tick").await["enabled"], false);
    let disabled_at = chrono::Utc::now();
    // Absence takes time to show: two seconds would have brought two fires.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let late: Vec<pb::Run> = runs_of(&mut client)
        .await
        .into_iter()
        .filter(|r| worker_tests::parse_ts("created_at", &r.created_at) > disabled_at)
        .collect();
    assert!(late.is_empty(), "a disabled job fired: {late:?}");

    // Raise an alert rule's threshold, and send a test to the channel.
    browser.goto(&format!("{base}/alerts")).await;
    browser.click("#edit-rule-slow").await;
    browser.fill("#param-threshold", "45s").await;
    browser.click("#save-rule").await;
    browser.find("#rules-table").await;
    let rules = client
        .list_alert_rules(pb::ListAlertRulesRequest {})
        .await
        .expect("ListAlertRules")
        .into_inner()
        .rules;
    let slow = rules.iter().find(|r| r.name == "slow").expect("rule slow");
    assert_eq!(
        slow.params.get("threshold").map(String::as_str),
        Some("45s"),
        "{slow:?}"
    );
    browser.click("#test-hook").await;
    browser.wait_text("#test-result", "sent", WAIT).await;
    recv.wait("/hook", "the test alert", WAIT, |got| !got.is_empty()).await;
    browser.screenshot("alerts-test-sent").await;

    // A dead run is retried from the dead-letter queue.
    let dead = dead_run(&ctl, "always.fails").await;
    browser.goto(&format!("{base}/dlq")).await;
    browser.click(&format!("#retry-dlq-{dead}")).await;
    wait_for("the retried run to leave the DLQ", WAIT, || {
        let mut client = client.clone();
        let id = dead.clone();
        async move {
            let run = client
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let tries = run.attempts.len();
            if tries >= 2 {
                Ok(())
            } else {
                Err(format!("{} with {tries} attempts", run.state))
            }
        }
    })
    .await;

    // Every page, at desktop and phone widths.
    let pages = [
        ("dashboard", "/".to_string()),
        ("jobs", "/jobs".to_string()),
        ("job", "/jobs/browser.hello".to_string()),
        ("job-edit", "/jobs/browser.hello/edit".to_string()),
        ("runs", "/runs".to_string()),
        ("run", format!("/runs/{run_id}")),
        ("queue", "/queue".to_string()),
        ("dlq", "/dlq".to_string()),
        ("agents", "/agents".to_string()),
        ("alerts", "/alerts".to_string()),
        ("alert-history", "/alerts/history".to_string()),
    ];
    for (size, suffix) in [(DESKTOP, "desktop"), (PHONE, "phone")] {
        browser.size(size).await;
        for (name, path) in &pages {
            browser.goto(&format!("{base}{path}")).await;
            browser.find("main h1").await;
            browser.screenshot(&format!("{name}-{suffix}")).await;
            // How far the page sticks out of the window, and its widest element.
            let overflow: Value = browser
                .client
                .execute(
                    "const over = document.documentElement.scrollWidth - window.innerWidth;
                     let widest = '';
                     let right = window.innerWidth;
                     for (const el of document.querySelectorAll('main *')) {
                       const r = el.getBoundingClientRect().right;
                       if (r > right && !el.closest('.table-wrap')) { right = r; widest = el.tagName + '#' + el.id + '.' + el.className; }
                     }
                     return [over, widest];",
                    vec![],
                )
                .await
                .expect("measure the page width");
            assert!(
                overflow[0].as_i64().unwrap_or(0) <= 1,
                "{path} is wider than the {suffix} window by {} px (widest: {})",
                overflow[0],
                overflow[1]
            );
        }
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_edit_controls_and_a_forged_post_is_refused() {
    let Some(browser) = Browser::start().await else { return };
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let (ctl, _agent) = start(&env).await;
    let base = format!("http://{}", ctl.http_addr.expect("HTTP"));
    let viewer = ctl.create_token(BOOTSTRAP_SECRET, "vera", "viewer", &[]).await;
    dead_run(&ctl, "always.fails").await;

    sign_in(&browser, &base, &viewer).await;
    assert!(browser.text("header .who").await.contains("vera"));
    for (path, controls) in [
        ("/jobs", &["#new-job"][..]),
        (
            "/jobs/always.fails",
            &["#run-now", "#edit-job", "#delete-job", "#toggle-enabled"][..],
        ),
        ("/dlq", &["#dlq-retry-all", "#dlq-purge-all"][..]),
        ("/alerts", &["#new-rule", "#new-channel", "#test-hook"][..]),
        ("/agents", &["button[id^=drain-]"][..]),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        browser.find("main h1").await;
        for control in controls {
            assert!(!browser.has(control).await, "a viewer is offered {control} on {path}");
        }
    }
    // The viewer's own session and CSRF token, used to forge a deletion.
    let status: Value = browser
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector('meta[name=csrf-token]').content;
               fetch('/jobs/always.fails/delete', {method: 'POST', credentials: 'same-origin',
                     headers: {'Content-Type': 'application/x-www-form-urlencoded'},
                     body: 'csrf=' + encodeURIComponent(csrf)})
                 .then(r => r.text().then(t => done([r.status, t])));"#,
            vec![],
        )
        .await
        .expect("the forged request");
    assert_eq!(status[0], 403, "{status}");
    assert!(
        status[1].as_str().unwrap_or("").contains("viewer"),
        "the role is named: {status}"
    );
    assert_eq!(job_of(&ctl, "always.fails").await["name"], "always.fails");
    browser.close().await;
}
