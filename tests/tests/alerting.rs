//! Alerting end to end: real controller and agent processes, real failing,
//! slow and stuck jobs, a killed agent, a backlog and skipped schedule fires,
//! delivered to a real HTTP receiver on loopback that checks the Slack and
//! Discord formats and verifies the HMAC signature of generic webhooks.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use worker_proto::v1 as pb;
use worker_tests::receiver::{Received, Receiver};
use worker_tests::smtp::{SMTP_PASSWORD, SMTP_USER, SmtpServer};
use worker_tests::{TestEnv, Value};

const SECRET: &str = "hook-secret-4711";
const WEB: &str = "http://ui.example:7080";

/// Checks a signed webhook request and returns its JSON body.
fn verified(r: &Received) -> &Value {
    let ts = r.header("x-worker-timestamp").expect("timestamp header");
    let sig = r.header("x-worker-signature").expect("signature header");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", r.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "bad signature on {}", r.body);
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().expect("numeric timestamp");
    assert!((-5..120).contains(&age), "timestamp {ts} is {age}s old");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-worker-delivery"),
        r.json["id"].as_str(),
        "delivery id is the alert id"
    );
    &r.json
}

/// Checks a Slack incoming-webhook message and returns its text and blocks as one string.
fn slack_text(r: &Received) -> String {
    let text = r.json["text"].as_str().expect("slack: `text` is a string");
    assert!(!text.is_empty(), "slack: empty text");
    let blocks = r.json["blocks"].as_array().expect("slack: `blocks` is an array");
    assert!(
        !blocks.is_empty() && blocks.len() <= 50,
        "slack: {} blocks",
        blocks.len()
    );
    for b in blocks {
        let kind = b["type"].as_str().expect("slack: block type");
        assert!(
            ["header", "section", "context", "divider"].contains(&kind),
            "slack block {b}"
        );
        if kind == "header" {
            assert_eq!(b["text"]["type"], "plain_text");
            assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 150);
        }
        if let Some(fields) = b["fields"].as_array() {
            assert!(fields.len() <= 10, "slack: {} fields in a section", fields.len());
        }
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000, "slack: section text over 3000");
        }
    }
    r.body.clone()
}

/// Checks a Discord webhook message and returns its first embed.
fn discord_embed(r: &Received) -> &Value {
    let embeds = r.json["embeds"].as_array().expect("discord: `embeds` is an array");
    assert!(!embeds.is_empty() && embeds.len() <= 10);
    let e = &embeds[0];
    let title = e["title"].as_str().expect("discord: title");
    assert!(title.chars().count() <= 256);
    assert!(e["description"].as_str().unwrap_or("").chars().count() <= 4096);
    assert!(e["color"].is_u64(), "discord: color is an integer: {e}");
    let fields = e["fields"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert!(fields.len() <= 25);
    for f in fields {
        assert!(f["name"].as_str().unwrap().chars().count() <= 256);
        assert!(f["value"].as_str().unwrap().chars().count() <= 1024);
    }
    e
}

/// `alerts.yaml` with the signed channel `hook` (the receiver's `/hook`, secret
/// `${HOOK_SECRET}`) and `rules` (lines of the `rules:` list).
fn hook_alerts(recv: &Receiver, rules: &str) -> String {
    format!(
        "channels:\n  hook: {{ type: webhook, url: \"{}\", secret: \"${{HOOK_SECRET}}\" }}\nrules:\n{rules}",
        recv.url("/hook")
    )
}

/// Bodies of signed webhook requests of one kind (`alert`, `summary`, `test`).
fn of_kind(got: &[Received], kind: &str) -> Vec<Value> {
    got.iter()
        .map(verified)
        .filter(|v| v["kind"] == kind)
        .cloned()
        .collect()
}

fn count(got: &[Received], kind: &str) -> usize {
    of_kind(got, kind).len()
}

/// Bodies of the signed alerts about `event`.
fn of_event(got: &[Received], event: &str) -> Vec<Value> {
    of_kind(got, "alert")
        .into_iter()
        .filter(|a| a["event"] == event)
        .collect()
}

/// Waits until `/hook` received an alert about `event`; returns those alerts
/// and everything `/hook` received.
async fn wait_event(recv: &Receiver, event: &str) -> (Vec<Value>, Vec<Received>) {
    let got = recv
        .wait("/hook", event, Duration::from_secs(15), |g| {
            !of_event(g, event).is_empty()
        })
        .await;
    (of_event(&got, event), got)
}

async fn enqueue(
    client: &mut pb::controller_service_client::ControllerServiceClient<tonic::transport::Channel>,
    job: &str,
) -> String {
    client
        .enqueue(pb::EnqueueRequest {
            job: job.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("enqueue {job}: {e}"))
        .into_inner()
        .run
        .expect("run")
        .id
}

/// Ten failures in a throttle window: one alert and one summary of nine; the
/// next failure after the window alerts again; a success sends `recovered`.
/// Dead runs go to Slack, recoveries to Discord and the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_throttled_summarised_and_recovered() {
    let env = TestEnv::new();
    let flag = env.path().join("healthy");
    env.write_config(&format!(
        r#"
jobs:
  flaky:
    shell:
      command: |
        echo "checking the disk"
        if [ -e "$FLAG" ]; then echo fine; exit 0; fi
        echo "disk full" >&2
        exit 3
      env: {{ FLAG: "{}" }}
    retry: {{ max_attempts: 1 }}
"#,
        flag.display()
    ));
    let recv = Receiver::start().await;
    let smtp = SmtpServer::start().await;
    env.write_alerts(&format!(
        r#"
channels:
  hook: {{ type: webhook, url: "{hook}", secret: "${{HOOK_SECRET}}" }}
  slack: {{ type: slack, webhook_url: "{slack}" }}
  discord: {{ type: discord, webhook_url: "{discord}" }}
  mail:
    type: email
    smtp: {{ host: 127.0.0.1, port: {smtp_port}, tls: none, username: {smtp_user}, password: "${{SMTP_PASSWORD}}" }}
    from: "Worker <worker@example.com>"
    to: [ops@example.com, "On Call <oncall@example.org>"]
rules:
  - {{ name: failures, event: run_failed, jobs: flaky, channels: [hook], throttle: 6s }}
  - {{ name: dead, event: run_dead, jobs: "fl*", channels: [slack], throttle: 1h }}
  - {{ name: back, event: recovered, channels: [discord, hook, mail] }}
"#,
        hook = recv.url("/hook"),
        slack = recv.url("/slack"),
        discord = recv.url("/discord"),
        smtp_port = smtp.port,
        smtp_user = SMTP_USER,
    ));
    let ctl = env
        .start_controller_with_env(
            &[
                ("HOOK_SECRET", SECRET),
                ("SMTP_PASSWORD", SMTP_PASSWORD),
                ("WORKER_ALLOW_ENV", "HOOK_SECRET,SMTP_PASSWORD"),
            ],
            &["--web-url", WEB],
        )
        .await;
    let _agent = env.start_agent(&ctl, "alerter-agent", 4).await;
    let mut client = ctl.client().await;

    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(enqueue(&mut client, "flaky").await);
    }
    for id in &ids {
        assert_eq!(ctl.wait_run(id, Duration::from_secs(30)).await.state, "dead");
    }
    let got = recv
        .wait("/hook", "summary of the first window", Duration::from_secs(20), |got| {
            count(got, "summary") == 1
        })
        .await;
    let alerts = of_kind(&got, "alert");
    assert_eq!(alerts.len(), 1, "one alert in the window: {alerts:#?}");
    let first = &alerts[0];
    assert_eq!(first["event"], "run_failed");
    assert_eq!(first["rule"], "failures");
    assert_eq!(first["job"], "flaky");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["agent"], "alerter-agent");
    let run_id = first["run_id"].as_str().expect("run id");
    assert!(ids.iter().any(|id| id == run_id));
    assert_eq!(first["link"], format!("{WEB}/runs/{run_id}"));
    assert!(
        first["error"].as_str().unwrap().contains("3"),
        "exit code in the error: {first}"
    );
    assert!(first["output_tail"].as_str().unwrap().contains("disk full"), "{first}");
    let summary = &of_kind(&got, "summary")[0];
    assert_eq!(summary["suppressed"], 9, "{summary:#}");
    assert_eq!(summary["rule"], "failures");
    assert_eq!(summary["job"], "flaky");

    // Dead runs: one Slack message (the rule throttles to one per hour), in Slack's format.
    let slack = recv
        .wait("/slack", "dead-run alert", Duration::from_secs(10), |g| !g.is_empty())
        .await;
    let text = slack_text(&slack[0]);
    assert!(text.contains("run_dead") && text.contains("flaky"), "{text}");
    assert!(
        text.contains("disk full") && text.contains("checking the disk"),
        "error and output: {text}"
    );
    assert!(text.contains(&format!("{WEB}/runs/")), "link: {text}");

    // The history says the same: 1 sent + 9 suppressed for `failures`, the summary sent
    // (recorded once the receiver has answered: waited for).
    let history = worker_tests::wait_for("the history of the window", Duration::from_secs(10), || {
        let ctl = &ctl;
        async move {
            let history = ctl
                .cli_json(&["alerts", "history", "--rule", "failures", "--limit", "100"])
                .await;
            let rows = history.as_array().unwrap();
            let with = |kind: &str, status: &str| {
                rows.iter()
                    .filter(|r| r["kind"] == kind && r["status"] == status)
                    .count()
            };
            let counts = (
                with("alert", "sent"),
                with("alert", "suppressed"),
                with("summary", "sent"),
            );
            if counts == (1, 9, 1) && rows.len() == 11 {
                Ok(history)
            } else {
                Err(format!("{counts:?}: {history:#}"))
            }
        }
    })
    .await;
    assert!(history.as_array().unwrap().iter().all(|r| r["channel"] == "hook"));

    // The window has closed: the next failure alerts again.
    let again = enqueue(&mut client, "flaky").await;
    ctl.wait_run(&again, Duration::from_secs(20)).await;
    let got = recv
        .wait(
            "/hook",
            "a second alert after the window",
            Duration::from_secs(10),
            |g| count(g, "alert") == 2,
        )
        .await;
    assert_eq!(of_kind(&got, "alert")[1]["run_id"], again.as_str());

    // A success after alerting failures: `recovered` on Discord and the webhook.
    std::fs::write(&flag, "").unwrap();
    let ok = enqueue(&mut client, "flaky").await;
    assert_eq!(ctl.wait_run(&ok, Duration::from_secs(20)).await.state, "succeeded");
    let discord = recv
        .wait("/discord", "recovered", Duration::from_secs(10), |g| !g.is_empty())
        .await;
    let embed = discord_embed(&discord[0]);
    assert!(embed["title"].as_str().unwrap().contains("recovered"), "{embed}");
    assert_eq!(embed["url"], format!("{WEB}/runs/{ok}"));
    let (recovered, _) = wait_event(&recv, "recovered").await;
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["run_id"], ok.as_str());

    // And by mail: both recipients, a text and an HTML body with the run and its link.
    let mails = worker_tests::wait_for("the recovered mail", Duration::from_secs(10), || {
        let mails = smtp.delivered();
        async move {
            if mails.is_empty() {
                Err("no mail yet".to_string())
            } else {
                Ok(mails)
            }
        }
    })
    .await;
    assert_eq!(mails.len(), 1, "only `back` sends mail");
    let mail = mailparse::parse_mail(&mails[0]).expect("a parsable mail");
    let header =
        |name: &str| mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name).unwrap_or_default();
    assert!(header("Subject").contains("recovered: flaky"), "{}", header("Subject"));
    assert!(header("From").contains("worker@example.com"));
    let to = header("To");
    assert!(
        to.contains("ops@example.com") && to.contains("oncall@example.org"),
        "{to}"
    );
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    let body = |mime: &str| {
        let part = mail
            .subparts
            .iter()
            .find(|p| p.ctype.mimetype == mime)
            .unwrap_or_else(|| panic!("no {mime} part"));
        part.get_body().expect("decodable body")
    };
    for mime in ["text/plain", "text/html"] {
        let text = body(mime);
        assert!(text.contains(ok.as_str()), "{mime} names the run: {text}");
        assert!(
            text.contains(&format!("{WEB}/runs/{ok}")),
            "{mime} links the run: {text}"
        );
    }
}

/// A slow job, a job that times out, and a job failing three times in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_timed_out_and_consecutive_failures() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  slowpoke:
    builtin: { name: sleep, duration: 3s }
  stuck:
    shell: { command: "echo started; sleep 30" }
    timeout: 500ms
    retry: { max_attempts: 1 }
  broken:
    shell: { command: "echo nope >&2; exit 1" }
    retry: { max_attempts: 1 }
"#,
    );
    let recv = Receiver::start().await;
    env.write_alerts(&hook_alerts(
        &recv,
        r#"  - { name: slow, event: run_slow, jobs: slowpoke, threshold: 500ms, channels: [hook] }
  - { name: timeouts, event: run_timed_out, channels: [hook] }
  - { name: streak, event: consecutive_failures, jobs: broken, count: 3, channels: [hook] }
"#,
    ));
    let ctl = env
        .start_controller_with_env(
            &[("HOOK_SECRET", SECRET), ("WORKER_ALLOW_ENV", "HOOK_SECRET")],
            &["--web-url", WEB],
        )
        .await;
    let _agent = env.start_agent(&ctl, "worker-1", 4).await;
    let mut client = ctl.client().await;

    // Slow: alerted while it still runs.
    let slow = enqueue(&mut client, "slowpoke").await;
    let (slow_alerts, _) = wait_event(&recv, "run_slow").await;
    assert_eq!(ctl.get_run(&slow).await.state, "running", "alerted before it finished");
    let alert = &slow_alerts[0];
    assert_eq!(alert["run_id"], slow.as_str());
    assert_eq!(alert["agent"], "worker-1");
    assert!(alert["title"].as_str().unwrap().contains("running for"), "{alert}");
    assert_eq!(ctl.wait_run(&slow, Duration::from_secs(10)).await.state, "succeeded");

    // Timed out.
    let stuck = enqueue(&mut client, "stuck").await;
    assert_eq!(ctl.wait_run(&stuck, Duration::from_secs(20)).await.state, "dead");
    let (timeouts, _) = wait_event(&recv, "run_timed_out").await;
    let alert = &timeouts[0];
    assert_eq!(alert["run_id"], stuck.as_str());
    assert!(
        alert["output_tail"].as_str().unwrap_or("").contains("started"),
        "{alert}"
    );

    // Three failures in a row: one alert, at the third.
    let mut broken = Vec::new();
    for _ in 0..4 {
        let id = enqueue(&mut client, "broken").await;
        assert_eq!(ctl.wait_run(&id, Duration::from_secs(20)).await.state, "dead");
        broken.push(id);
    }
    let (streaks, got) = wait_event(&recv, "consecutive_failures").await;
    assert_eq!(streaks.len(), 1, "{streaks:#?}");
    assert_eq!(streaks[0]["run_id"], broken[2].as_str(), "raised by the third failure");
    assert!(
        streaks[0]["output_tail"].as_str().unwrap_or("").contains("nope"),
        "{}",
        streaks[0]
    );
    assert_eq!(
        of_event(&got, "run_slow").len(),
        1,
        "a slow attempt alerts once, not again when it ends"
    );
}

/// A killed agent, a queue nobody serves, and schedule fires skipped because
/// the previous run is still going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_backlog_and_missed_schedule() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  orphan:
    builtin: { name: noop }
    selector: { pool: nobody }
    priority: high
  ticker:
    schedule: "* * * * * *"
    overlap: forbid
    builtin: { name: sleep, duration: 4s }
    selector: { pool: steady }
"#,
    );
    let recv = Receiver::start().await;
    env.write_alerts(&hook_alerts(
        &recv,
        r#"  - { name: agents, event: agent_lost, channels: [hook] }
  - { name: backlog, event: queue_backlog, max_depth: 2, channels: [hook] }
  - { name: missed, event: schedule_missed, jobs: ticker, channels: [hook], throttle: 1h }
"#,
    ));
    let ctl = env
        .start_controller_with_env(
            &[("HOOK_SECRET", SECRET), ("WORKER_ALLOW_ENV", "HOOK_SECRET")],
            &["--web-url", WEB],
        )
        .await;
    let doomed = env.start_agent(&ctl, "doomed", 1).await;
    let _steady = env
        .start_agent_with(&ctl, "steady", 2, &["--labels", "pool=steady"])
        .await;

    doomed.proc.signal(libc::SIGKILL);
    let mut client = ctl.client().await;
    for _ in 0..3 {
        enqueue(&mut client, "orphan").await;
    }

    let got = recv
        .wait(
            "/hook",
            "agent_lost, queue_backlog, schedule_missed",
            Duration::from_secs(30),
            |g| {
                ["agent_lost", "queue_backlog", "schedule_missed"]
                    .iter()
                    .all(|e| !of_event(g, e).is_empty())
            },
        )
        .await;
    let lost = of_event(&got, "agent_lost");
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert_eq!(lost[0]["agent"], "doomed");
    assert_eq!(lost[0]["link"], format!("{WEB}/agents"));
    let backlog = of_event(&got, "queue_backlog");
    assert_eq!(backlog.len(), 1, "alerted once while over: {backlog:#?}");
    assert_eq!(backlog[0]["priority"], "high");
    assert!(
        backlog[0]["title"].as_str().unwrap().contains("3 runs waiting"),
        "{}",
        backlog[0]
    );
    let missed = of_event(&got, "schedule_missed");
    assert_eq!(missed[0]["job"], "ticker");
    assert!(
        missed[0]["text"].as_str().unwrap().contains("overlap: forbid"),
        "{}",
        missed[0]
    );
}

/// A channel that is down: retried with backoff, then recorded as failed,
/// while the controller keeps dispatching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_channel_is_retried_and_never_slows_dispatch() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  bad:
    shell: { command: "exit 7" }
    retry: { max_attempts: 1 }
  quick:
    builtin: { name: noop }
"#,
    );
    let recv = Receiver::start().await;
    recv.always("/down", 503);
    env.write_alerts(&format!(
        r#"
channels:
  down: {{ type: webhook, url: "{down}", secret: "${{HOOK_SECRET}}" }}
rules:
  - {{ name: failures, event: run_failed, jobs: bad, channels: [down] }}
"#,
        down = recv.url("/down"),
    ));
    let ctl = env
        .start_controller_with_env(
            &[("HOOK_SECRET", SECRET), ("WORKER_ALLOW_ENV", "HOOK_SECRET")],
            &["--alert-attempts", "3", "--alert-backoff", "5s"],
        )
        .await;
    let _agent = env.start_agent(&ctl, "busy", 8).await;
    let mut client = ctl.client().await;

    let t0 = std::time::Instant::now();
    let bad = enqueue(&mut client, "bad").await;
    ctl.wait_run(&bad, Duration::from_secs(20)).await;
    recv.wait("/down", "the first delivery attempt", Duration::from_secs(10), |g| {
        !g.is_empty()
    })
    .await;
    // While the channel is being retried, 1,000 runs go through.
    let batch = pb::EnqueueBatchRequest {
        runs: (0..1000)
            .map(|_| pb::EnqueueRequest {
                job: "quick".into(),
                ..Default::default()
            })
            .collect(),
    };
    let ids: Vec<String> = client
        .enqueue_batch(batch)
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.run.expect("run").id)
        .collect();
    // One connection for the thousand waits (a new one per run would take longer than the backoff).
    for id in &ids {
        let run = client
            .wait_run(pb::WaitRunRequest {
                id: id.clone(),
                timeout_ms: 60_000,
            })
            .await
            .expect("wait run")
            .into_inner();
        assert_eq!(run.state, "succeeded", "{run:?}");
    }
    eprintln!("[timing] 1000 runs done at {:?}", t0.elapsed());
    let during = ctl.cli_json(&["alerts", "history", "--rule", "failures"]).await;
    assert!(
        during.as_array().unwrap().is_empty(),
        "the 1,000 runs finished while the alert was still being retried (nothing recorded yet): {during:#}"
    );

    let history = worker_tests::wait_for("the failed delivery in the history", Duration::from_secs(30), || {
        let ctl = &ctl;
        async move {
            let h = ctl.cli_json(&["alerts", "history", "--rule", "failures"]).await;
            if h.as_array().unwrap().is_empty() {
                Err(h.to_string())
            } else {
                Ok(h)
            }
        }
    })
    .await;
    eprintln!("[timing] history at {:?}", t0.elapsed());
    let row = &history[0];
    assert_eq!(row["status"], "failed", "{row:#}");
    assert_eq!(row["attempts"], 3, "{row:#}");
    assert!(row["answer"].as_str().unwrap().contains("503"), "{row:#}");
    assert_eq!(recv.received("/down").len(), 3, "three attempts reached the channel");
}

/// Bad alerts.yaml: every problem reported with its line, nothing started.
/// API changes are validated whole and nothing is half-applied; changes
/// survive a restart; secrets are never printed back; test messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_api_changes_and_test_messages() {
    let env = TestEnv::new();
    env.write_config("jobs: {}\n");
    env.write_alerts(
        r#"channels:
  hook: { type: webhook, url: "http://127.0.0.1:9/h", secret: "${NOT_SET_ANYWHERE_4711}" }
  mail:
    type: email
    smtp: { host: 127.0.0.1, port: 2525, tls: none }
    from: worker@example.com
    to: [ops@example.com, "not an address"]
rules:
  - { name: r1, event: run_dead, channels: [hook, pager] }
  - { name: r2, event: run_failed, jobs: "Backup.*", channels: [mail] }
"#,
    );
    let exited = env
        .run_controller_to_exit(&["--allow-env", "NOT_SET_ANYWHERE_*"], Duration::from_secs(20))
        .await;
    assert_eq!(exited.code, Some(2), "{exited:?}");
    let err = &exited.stderr;
    for expected in [
        "alerts.yaml:2: channels.hook",
        "NOT_SET_ANYWHERE_4711 is not set",
        "alerts.yaml:7: channels.mail.to[1]",
        "alerts.yaml:9: rules[0].channels",
        "pager",
        "alerts.yaml:10: rules[1].jobs",
        "lower case",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let recv = Receiver::start().await;
    env.write_alerts(&hook_alerts(
        &recv,
        r#"  - { name: dead, event: run_dead, channels: [hook] }
"#,
    ));
    let start = || {
        env.start_controller_with_env(
            &[
                ("HOOK_SECRET", SECRET),
                ("CANARY_NOT_ALLOWED", "canary-v4lue"),
                ("WORKER_ALLOW_ENV", "HOOK_SECRET,NOT_SET_ANYWHERE_4711"),
            ],
            &[],
        )
    };
    let ctl = start().await;
    let mut client = ctl.client().await;

    // A rule naming an unknown channel: refused, nothing applied.
    let err = client
        .put_alert_rule(pb::PutAlertRuleRequest {
            spec_yaml: "{ name: extra, event: run_failed, channels: [hook, nowhere] }".into(),
        })
        .await
        .expect_err("unknown channel");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("nowhere"), "{}", err.message());
    let rules = ctl.cli_json(&["alerts", "rules"]).await;
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules:#}");
    // A channel whose secret variable is unset, and deleting a channel in use.
    let err = client
        .put_alert_channel(pb::PutAlertChannelRequest {
            name: "pager".into(),
            spec_yaml: "{ type: webhook, url: \"https://pager.example.com\", secret: \"${NOT_SET_ANYWHERE_4711}\" }"
                .into(),
        })
        .await
        .expect_err("unset secret");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("NOT_SET_ANYWHERE_4711"), "{}", err.message());
    // A variable of the controller's environment that --allow-env does not
    // name cannot be sent anywhere: refused, and its value never echoed.
    for spec in [
        r#"{ type: webhook, url: "http://127.0.0.1:9/${CANARY_NOT_ALLOWED}", secret: s3cret-literal }"#,
        r#"{ type: webhook, url: "http://127.0.0.1:9/h", secret: "${CANARY_NOT_ALLOWED}" }"#,
    ] {
        let err = client
            .put_alert_channel(pb::PutAlertChannelRequest {
                name: "exfil".into(),
                spec_yaml: spec.into(),
            })
            .await
            .expect_err("variable not on the allow-list");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let message = err.message();
        assert!(
            message.contains("CANARY_NOT_ALLOWED") && message.contains("--allow-env"),
            "{message}"
        );
        assert!(!message.contains("canary-v4lue"), "{message}");
    }
    let err = client
        .delete_alert_channel(pb::DeleteAlertChannelRequest { name: "hook".into() })
        .await
        .expect_err("channel in use");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert_eq!(ctl.cli_json(&["alerts", "channels"]).await.as_array().unwrap().len(), 1);

    // Valid changes through the CLI; a literal secret is never printed back.
    let spec = env.path().join("slack.yaml");
    std::fs::write(
        &spec,
        format!(
            "type: slack\nwebhook_url: \"{}\"\n",
            recv.url("/slack-literal-token-xyz")
        ),
    )
    .unwrap();
    ctl.cli_json(&["alerts", "set-channel", "team", "-f", spec.to_str().unwrap()])
        .await;
    let rule = env.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "name: team-dead\nevent: run_dead\nchannels: [team]\nthrottle: 10m\n",
    )
    .unwrap();
    ctl.cli_json(&["alerts", "set-rule", "-f", rule.to_str().unwrap()])
        .await;
    let channels = ctl.cli(&["alerts", "channels"]).await.expect_code(0);
    assert!(
        !channels.stdout.contains("literal-token-xyz"),
        "secret printed: {}",
        channels.stdout
    );
    assert!(
        channels.stdout.contains("<redacted>") && channels.stdout.contains("${HOOK_SECRET}"),
        "{}",
        channels.stdout
    );
    let table = worker_tests::run_cli(&["--controller", &ctl.url, "alerts", "channels"]).await;
    assert!(!table.stdout.contains("literal-token-xyz"), "{}", table.stdout);

    // Test messages: delivered and recorded; an unknown channel is not found (exit 3).
    let sent = ctl.cli_json(&["alerts", "test", "team"]).await;
    assert_eq!(sent["status"], "sent", "{sent:#}");
    let slack = recv
        .wait(
            "/slack-literal-token-xyz",
            "test message",
            Duration::from_secs(10),
            |g| !g.is_empty(),
        )
        .await;
    assert!(slack_text(&slack[0]).contains("test"));
    ctl.cli(&["alerts", "test", "nope"]).await.expect_code(3);
    let history = ctl.cli_json(&["alerts", "history"]).await;
    assert_eq!(history[0]["kind"], "test");
    assert_eq!(history[0]["channel"], "team");

    // Restart with the same file: the API's changes are kept.
    drop(client);
    drop(ctl);
    let ctl = start().await;
    let rules = ctl.cli_json(&["alerts", "rules"]).await;
    let names = worker_tests::json::names(&rules);
    assert_eq!(names, ["dead", "team-dead"]);
    let rule = &rules[1];
    assert_eq!(rule["throttle"], "10m");

    // Restart with a changed file: the file replaces what is stored.
    drop(ctl);
    env.write_alerts(&hook_alerts(
        &recv,
        "  - { name: failed, event: run_failed, channels: [hook] }\n",
    ));
    let ctl = start().await;
    let rules = ctl.cli_json(&["alerts", "rules"]).await;
    let names = worker_tests::json::names(&rules);
    assert_eq!(names, ["failed"]);
    assert_eq!(ctl.cli_json(&["alerts", "channels"]).await.as_array().unwrap().len(), 1);
}
