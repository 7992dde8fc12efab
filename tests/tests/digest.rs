//! The `digest` builtin end to end (docs/digest.md): a real controller whose
//! alert email channel points at a real SMTP server on loopback (the
//! harness's, with AUTH), a real agent, jobs that succeed, fail with an
//! error, run slowly and report a cost, then the digest job: the mail arrives
//! with every section in both its text and its HTML part. With `skip_empty`
//! and nothing in the window nothing is sent and the run says so. And the
//! `SendDigest` call is refused to a token whose agent does not hold the run.

use std::time::Duration;

use tonic::Code;
use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::smtp::{SMTP_PASSWORD, SMTP_USER, SmtpServer};
use worker_tests::{Controller, TestEnv};

const WEB: &str = "http://ui.example:7080";

/// `alerts.yaml` with one email channel `mail` to the SMTP server on `port`.
fn alerts(port: u16) -> String {
    format!(
        r#"channels:
  mail:
    type: email
    smtp: {{ host: 127.0.0.1, port: {port}, tls: none, username: {SMTP_USER}, password: "${{SMTP_PASSWORD}}" }}
    from: "Worker <worker@example.com>"
    to: [ops@example.com]
"#
    )
}

async fn enqueue(ctl: &Controller, job: &str, payload: &str) -> String {
    let mut client = ctl.client().await;
    client
        .enqueue(pb::EnqueueRequest {
            job: job.into(),
            payload: payload.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("enqueue {job}: {e}"))
        .into_inner()
        .run
        .expect("the run")
        .id
}

async fn finished(ctl: &Controller, id: &str, state: &str) -> pb::Run {
    let run = ctl.wait_run(id, Duration::from_secs(30)).await;
    assert_eq!(run.state, state, "{run:#?}");
    run
}

/// The body of the `mime` part of a `multipart/alternative` mail.
fn part(mail: &mailparse::ParsedMail<'_>, mime: &str) -> String {
    mail.subparts
        .iter()
        .find(|p| p.ctype.mimetype == mime)
        .unwrap_or_else(|| panic!("no {mime} part"))
        .get_body()
        .expect("a decodable body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_arrives_with_every_section_in_both_parts() {
    let env = TestEnv::new();
    env.write_config(
        r#"jobs:
  report.good:
    shell: |
      echo "::worker metric cost_usd 0.25"
      echo done
  report.bad:
    shell: "echo 'disk full' >&2; exit 3"
    retry: { max_attempts: 1 }
  report.picky:
    builtin: { name: sleep }
    retry: { max_attempts: 1 }
  report.slow:
    shell: "sleep 0.6"
  daily.digest:
    schedule: "0 8 * * *"
    timezone: Europe/Berlin
    builtin: { name: digest, period: daily, channel: mail, to: [ops@example.com, "On Call <oncall@example.org>"] }
    retry: { max_attempts: 1 }
"#,
    );
    let smtp = SmtpServer::start().await;
    env.write_alerts(&alerts(smtp.port));
    let ctl = env
        .start_controller_with_env(
            &[("SMTP_PASSWORD", SMTP_PASSWORD), ("WORKER_ALLOW_ENV", "SMTP_PASSWORD")],
            &["--web-url", WEB],
        )
        .await;
    let _agent = env.start_agent(&ctl, "digest-agent", 4).await;

    for _ in 0..2 {
        let id = enqueue(&ctl, "report.good", "").await;
        finished(&ctl, &id, "succeeded").await;
    }
    let bad = enqueue(&ctl, "report.bad", "").await;
    finished(&ctl, &bad, "dead").await;
    // A builtin's error with characters HTML must escape.
    let picky = enqueue(&ctl, "report.picky", r#"{"duration_ms": "soon"}"#).await;
    let picky_run = finished(&ctl, &picky, "dead").await;
    let picky_error = picky_run.attempts[0].error.clone();
    assert!(picky_error.contains("got \"soon\""), "{picky_error}");
    let slow = enqueue(&ctl, "report.slow", "").await;
    finished(&ctl, &slow, "succeeded").await;
    assert!(smtp.delivered().is_empty(), "no mail before the digest");

    let digest = enqueue(&ctl, "daily.digest", "").await;
    let run = finished(&ctl, &digest, "succeeded").await;
    let output = &run.attempts[0].output;
    assert!(
        output.contains("daily digest sent through channel mail to ops@example.com, On Call <oncall@example.org>"),
        "{output}"
    );
    assert!(
        output.contains("2 failed, 2 runs went dead; 2 in the dead-letter queue"),
        "{output}"
    );
    assert!(output.contains("SMTP: 250"), "{output}");

    // The mail was accepted before the run finished.
    let mails = smtp.delivered();
    assert_eq!(mails.len(), 1, "one digest");
    let mail = mailparse::parse_mail(&mails[0]).expect("a parsable mail");
    let header =
        |name: &str| mailparse::MailHeaderMap::get_first_value(mail.headers.as_slice(), name).unwrap_or_default();
    let subject = header("Subject");
    assert!(
        subject.contains("[Worker] daily digest: 5 runs finished, 2 failed attempts, 2 in the DLQ"),
        "{subject}"
    );
    let to = header("To");
    assert!(
        to.contains("ops@example.com") && to.contains("oncall@example.org"),
        "{to}"
    );
    assert!(
        header("X-Worker-Digest").contains(&digest),
        "{}",
        header("X-Worker-Digest")
    );
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    let text = part(&mail, "text/plain");
    let html = part(&mail, "text/html");

    // Both parts: every section, with what happened.
    for (name, body) in [("text", &text), ("html", &html)] {
        for heading in [
            "Runs by outcome per job",
            "Failures",
            "Slowest jobs",
            "Dead-letter queue",
            "Reported costs",
        ] {
            assert!(body.contains(heading), "{name}: no {heading}:\n{body}");
        }
        for job in ["report.good", "report.bad", "report.picky", "report.slow"] {
            assert!(body.contains(job), "{name}: no {job}:\n{body}");
        }
        assert!(
            body.contains(&bad) && body.contains(&picky),
            "{name}: failed run ids:\n{body}"
        );
        assert!(body.contains("exit code 3"), "{name}: the shell job's error:\n{body}");
        assert!(
            body.contains(&format!("{WEB}/runs/{bad}")),
            "{name}: link to the failed run:\n{body}"
        );
        assert!(
            body.contains("cost_usd") && body.contains("0.5"),
            "{name}: the cost:\n{body}"
        );
        assert!(
            body.contains("2 runs in the dead-letter queue now"),
            "{name}: the DLQ:\n{body}"
        );
        assert!(
            body.contains("CEST") || body.contains("CET"),
            "{name}: the job's zone:\n{body}"
        );
    }
    // The error text as it is in the text part, escaped in the HTML part.
    assert!(text.contains(&picky_error), "{text}");
    assert!(!html.contains(&picky_error), "unescaped in HTML:\n{html}");
    assert!(html.contains("got &quot;soon&quot;"), "{html}");
    // The per-job counts: 2 good runs succeeded.
    let good_row = text
        .lines()
        .find(|l| l.starts_with("report.good "))
        .unwrap_or_else(|| panic!("no report.good row:\n{text}"));
    let cells: Vec<&str> = good_row.split_whitespace().collect();
    assert_eq!(cells, ["report.good", "2", "0", "0", "0", "0", "0"], "{good_row}");
    let bad_row = text.lines().find(|l| l.starts_with("report.bad ")).unwrap();
    let cells: Vec<&str> = bad_row.split_whitespace().collect();
    assert_eq!(cells, ["report.bad", "0", "1", "0", "0", "0", "1"], "{bad_row}");
    // The slowest job comes first.
    let slowest = text.split("Slowest jobs").nth(1).unwrap();
    let first_row = slowest.lines().nth(3).unwrap_or_default();
    assert!(first_row.starts_with("report.slow"), "{slowest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_skip_empty_an_empty_window_sends_nothing() {
    let env = TestEnv::new();
    env.write_config(
        r#"jobs:
  quiet.digest:
    builtin: { name: digest, period: weekly, skip_empty: true }
    retry: { max_attempts: 1 }
"#,
    );
    let smtp = SmtpServer::start().await;
    env.write_alerts(&alerts(smtp.port));
    let ctl = env
        .start_controller_with_env(
            &[("SMTP_PASSWORD", SMTP_PASSWORD), ("WORKER_ALLOW_ENV", "SMTP_PASSWORD")],
            &[],
        )
        .await;
    let _agent = env.start_agent(&ctl, "digest-agent", 2).await;
    let id = enqueue(&ctl, "quiet.digest", "").await;
    let run = finished(&ctl, &id, "succeeded").await;
    let output = &run.attempts[0].output;
    assert!(
        output.contains("nothing to report: no mail sent (skip_empty)"),
        "{output}"
    );
    assert!(output.contains("weekly digest, channel mail"), "{output}");
    // The send would have happened before the run finished.
    assert!(smtp.delivered().is_empty(), "{} mails", smtp.delivered().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_a_digest_without_its_email_channel() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  noop:\n    builtin: noop\n");
    let smtp = SmtpServer::start().await;
    env.write_alerts(&alerts(smtp.port));
    let ctl = env
        .start_controller_with_env(
            &[("SMTP_PASSWORD", SMTP_PASSWORD), ("WORKER_ALLOW_ENV", "SMTP_PASSWORD")],
            &[],
        )
        .await;
    let mut client = ctl.client().await;
    let err = client
        .apply_jobs(pb::ApplyJobsRequest {
            yaml: "jobs:\n  d:\n    builtin: { name: digest, period: daily, channel: nope }\n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("jobs.d.builtin") && err.message().contains("\"nope\" is not defined"),
        "{}",
        err.message()
    );
    let ok = client
        .apply_jobs(pb::ApplyJobsRequest {
            yaml: "jobs:\n  d:\n    builtin: { name: digest, period: daily }\n".into(),
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_digest_is_refused_to_a_token_that_does_not_hold_the_run() {
    let env = TestEnv::new();
    // An SMTP server that accepts connections and never answers: the digest
    // run stays running while the other tokens try.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    env.write_config(
        r#"jobs:
  held.digest:
    builtin: { name: digest, period: daily }
    retry: { max_attempts: 1 }
  other:
    builtin: { name: sleep, duration: 30s }
"#,
    );
    env.write_alerts(&format!(
        "channels:\n  mail:\n    type: email\n    smtp: {{ host: 127.0.0.1, port: {silent_port}, tls: none }}\n    \
         from: worker@example.com\n    to: [ops@example.com]\n"
    ));
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let admin = BOOTSTRAP_SECRET;
    let agent_a = ctl.create_token(admin, "agent-a", "agent", &[]).await;
    let agent_b = ctl.create_token(admin, "agent-b", "agent", &[]).await;
    let operator = ctl.create_token(admin, "ops", "operator", &[]).await;
    let _a = env.start_agent_with_token(&ctl, "runner-a", &agent_a, admin, &[]).await;

    let mut client = ctl.client_with_token(Some(admin)).await;
    let enqueue = |job: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .enqueue(pb::EnqueueRequest {
                    job: job.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .run
                .unwrap()
                .id
        }
    };
    let digest = enqueue("held.digest").await;
    let other = enqueue("other").await;
    for id in [&digest, &other] {
        worker_tests::wait_for("the run to be running", Duration::from_secs(20), || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let run = client.get_run(pb::GetRunRequest { id }).await.unwrap().into_inner();
                if run.state == "running" { Ok(()) } else { Err(run.state) }
            }
        })
        .await;
    }
    let call = |token: String, run_id: String, attempt: u32| {
        let ctl = &ctl;
        async move {
            ctl.client_with_token(Some(&token))
                .await
                .send_digest(pb::SendDigestRequest { run_id, attempt })
                .await
        }
    };
    // Another agent token: its agents do not hold the run.
    let err = call(agent_b.clone(), digest.clone(), 1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("token \"agent-b\" does not run run"),
        "{}",
        err.message()
    );
    // Not an agent token at all.
    let err = call(operator, digest.clone(), 1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("may not call SendDigest"), "{}", err.message());
    // The right token, but not the attempt that runs.
    let err = call(agent_a.clone(), digest.clone(), 2).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // The right token, a run it holds, but not a digest job.
    let err = call(agent_a.clone(), other.clone(), 1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not the digest builtin"), "{}", err.message());
    // A run that does not exist.
    let err = call(agent_b, "01J0000000000000000000NOPE".into(), 1).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    client.cancel_run(pb::RunRequest { id: other.clone() }).await.unwrap();
    drop(held);
}
