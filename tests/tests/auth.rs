//! Tokens end to end (docs/security.md): revocation closes open streams at
//! once, agent identities are bound to their tokens, `workerctl` exits 4 with
//! a message saying why, `tokens create/list/revoke` print the documented
//! JSON and the secret never shows up where it must not, and a controller
//! with a bootstrap token may listen on a non-loopback address.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use worker_proto::v1::{self as pb};
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::{TestEnv, local_non_loopback_ipv4, wait_for};

const CONFIG: &str = r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  hello:
    shell: "echo hello"
  slow:
    shell: "sleep 2; echo done by the real agent"
"#;

const ADMIN: &str = BOOTSTRAP_SECRET;

fn hello(id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_id: id.into(),
            name: id.into(),
            host: "test".into(),
            executors: vec!["shell".into()],
            capacity: 1,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_event_watches_and_agent_connections_at_once() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let watcher = ctl.create_token(ADMIN, "watcher", "viewer", &[]).await;
    let agent_token = ctl.create_token(ADMIN, "agent-1", "agent", &[]).await;
    let _agent = env.start_agent_with_token(&ctl, "a1", &agent_token, ADMIN, &[]).await;

    let mut events = ctl
        .client_with_token(Some(&watcher))
        .await
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("WatchEvents as a viewer")
        .into_inner();
    ctl.cli_with_token(ADMIN, &["tokens", "revoke", "watcher"])
        .await
        .expect_code(0);
    // The stream ends with Unauthenticated (events of other runs may come first).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch did not end within 5 s of the revocation");
    let status = ended.expect_err("the watch ended without an error");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("\"watcher\" was revoked"), "{status:?}");

    ctl.cli_with_token(ADMIN, &["tokens", "revoke", "agent-1"])
        .await
        .expect_code(0);
    let mut admin = ctl.client_with_token(Some(ADMIN)).await;
    wait_for("the revoked agent to be disconnected", Duration::from_secs(5), || {
        let mut admin = admin.clone();
        async move {
            let agents = admin
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            match agents.agents.iter().find(|a| a.name == "a1") {
                Some(a) if a.state == "connected" => Err(format!("{a:?}")),
                _ => Ok(()),
            }
        }
    })
    .await;
    // And it cannot come back with that token.
    let refused = ctl
        .agent_client_with_token(Some(&agent_token))
        .await
        .connect(tokio_stream::iter(vec![hello("again")]))
        .await
        .expect_err("a revoked agent token connected");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let _ = admin
        .list_jobs(pb::ListJobsRequest {})
        .await
        .expect("the admin token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_impersonate_another_or_report_its_attempts() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let real_token = ctl.create_token(ADMIN, "real", "agent", &[]).await;
    let other_token = ctl.create_token(ADMIN, "other", "agent", &[]).await;
    let _real = env.start_agent_with_token(&ctl, "real", &real_token, ADMIN, &[]).await;
    let mut admin = ctl.client_with_token(Some(ADMIN)).await;
    let agents = admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let real_id = agents
        .iter()
        .find(|a| a.name == "real")
        .expect("real agent listed")
        .id
        .clone();

    // Hello with the live agent's id under another token: refused.
    let refused = ctl
        .agent_client_with_token(Some(&other_token))
        .await
        .connect(tokio_stream::iter(vec![hello(&real_id)]))
        .await
        .expect_err("a Hello with another token's agent id was accepted");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains(&real_id), "{refused:?}");

    // A run goes to the real agent; an impostor with its own id reports it.
    let id = ctl
        .cli_with_token(ADMIN, &["enqueue", "slow"])
        .await
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = wait_for("the run to be running", Duration::from_secs(10), || {
        let mut admin = admin.clone();
        let id = id.clone();
        async move {
            let run = admin
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if run.state == "running" {
                Ok(run)
            } else {
                Err(run.state)
            }
        }
    })
    .await;
    assert_eq!(run.attempts[0].agent, "real");
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("impostor")).await.unwrap();
    let mut inbound = ctl
        .agent_client_with_token(Some(&other_token))
        .await
        .connect(ReceiverStream::new(rx))
        .await
        .expect("the impostor connects under its own id")
        .into_inner();
    assert!(matches!(
        inbound.message().await.unwrap().and_then(|m| m.msg),
        Some(pb::controller_message::Msg::Welcome(_))
    ));
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Finished(pb::Finished {
            run_id: id.clone(),
            attempt: 1,
            outcome: "succeeded".into(),
            output_tail: "forged".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match inbound.message().await.expect("impostor stream").and_then(|m| m.msg) {
                Some(pb::controller_message::Msg::Ack(ack)) => break ack,
                Some(_) => continue,
                None => panic!("the impostor's stream ended without an Ack"),
            }
        }
    })
    .await
    .expect("timed out after 20 s waiting for the Ack of the impostor's Finished");
    assert!(!ack.accepted, "a forged result was accepted: {ack:?}");

    // The real agent keeps working: its run finishes with its own output.
    let done = wait_for("the run to finish", Duration::from_secs(20), || {
        let mut admin = admin.clone();
        let id = id.clone();
        async move {
            let run = admin
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if worker_tests::is_terminal(&run.state) {
                Ok(run)
            } else {
                Err(run.state)
            }
        }
    })
    .await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(done.attempts.len(), 1);
    assert!(done.attempts[0].output.contains("done by the real agent"), "{done:?}");
    let agents = admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert!(
        agents.iter().any(|a| a.id == real_id && a.state == "connected"),
        "{agents:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workerctl_tokens_and_exit_code_4() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;

    // create: {name, role, token, expires_at}, the secret once.
    let created = ctl
        .cli_with_token(
            ADMIN,
            &["tokens", "create", "ci", "--role", "enqueuer", "--expires", "30d"],
        )
        .await
        .expect_code(0)
        .json();
    let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["expires_at", "name", "role", "token"], "{created}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["role"], "enqueuer");
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("wkr_") && secret.len() >= 68, "{secret}");
    worker_tests::parse_ts("expires_at", created["expires_at"].as_str().unwrap());

    // The enqueuer enqueues; it may not list jobs (exit 4, permission denied).
    ctl.cli_with_token(&secret, &["enqueue", "hello"]).await.expect_code(0);
    let denied = ctl.cli_with_token(&secret, &["jobs", "list"]).await.expect_code(4);
    assert!(
        denied
            .stderr
            .contains("permission denied: token \"ci\" (role enqueuer) may not call ListJobs"),
        "{denied:?}"
    );
    // No token: the controller requires one. A wrong one: refused.
    let none = ctl.cli(&["jobs", "list"]).await.expect_code(4);
    assert!(none.stderr.contains("this controller requires a token"), "{none:?}");
    let wrong = ctl.cli_with_token("wkr_wrong", &["jobs", "list"]).await.expect_code(4);
    assert!(wrong.stderr.contains("token refused: unknown token"), "{wrong:?}");
    // A name taken, a bad role: exit 2.
    ctl.cli_with_token(ADMIN, &["tokens", "create", "ci", "--role", "viewer"])
        .await
        .expect_code(2);
    let bad = ctl
        .cli_with_token(ADMIN, &["tokens", "create", "x", "--role", "root"])
        .await
        .expect_code(2);
    assert!(bad.stderr.contains("role: unknown role \"root\""), "{bad:?}");

    // list: no secret; revoke: revoked_at set, and the token is refused.
    let list = ctl.cli_with_token(ADMIN, &["tokens", "list"]).await.expect_code(0);
    assert!(
        !list.stdout.contains(&secret) && !list.stdout.contains(ADMIN),
        "{list:?}"
    );
    let tokens = list.json();
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["role"], "enqueuer");
    assert!(ci["revoked_at"].is_null(), "{ci}");
    let revoked = ctl
        .cli_with_token(ADMIN, &["tokens", "revoke", "ci"])
        .await
        .expect_code(0)
        .json();
    worker_tests::parse_ts("revoked_at", revoked["revoked_at"].as_str().unwrap());
    let refused = ctl.cli_with_token(&secret, &["enqueue", "hello"]).await.expect_code(4);
    assert!(
        refused.stderr.contains("token refused: token \"ci\" was revoked at"),
        "{refused:?}"
    );
    ctl.cli_with_token(ADMIN, &["tokens", "revoke", "nope"])
        .await
        .expect_code(3);

    // The controller's log never shows a secret.
    let log = ctl.proc.stderr_all();
    assert!(
        log.contains("token created"),
        "the log does not mention the creation:\n{log}"
    );
    assert!(
        !log.contains(&secret) && !log.contains(ADMIN),
        "a secret is in the controller's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_token_turns_authentication_on_and_revoking_it_keeps_it_on() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    ctl.cli(&["jobs", "list"]).await.expect_code(0);
    let first = ctl
        .cli(&["tokens", "create", "root", "--role", "admin"])
        .await
        .expect_code(0);
    assert!(first.stderr.contains("authentication is now on"), "{first:?}");
    let secret = first.json()["token"].as_str().unwrap().to_string();
    ctl.cli(&["jobs", "list"]).await.expect_code(4);
    ctl.cli_with_token(&secret, &["jobs", "list"]).await.expect_code(0);
    ctl.cli_with_token(&secret, &["tokens", "revoke", "root"])
        .await
        .expect_code(0);
    // Revoking the last token does not reopen the controller.
    let closed = ctl.cli(&["jobs", "list"]).await.expect_code(4);
    assert!(closed.stderr.contains("this controller requires a token"), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_token_allows_a_non_loopback_address() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("0.0.0.0:0", &[]).await;
    assert!(ctl.addr.ip().is_unspecified(), "{}", ctl.addr);
    let port = ctl.addr.port();
    let mut ctl = ctl;
    let url = match local_non_loopback_ipv4().first() {
        Some(ip) => format!("http://{ip}:{port}"),
        None => {
            worker_tests::skip::skip_or_fail(
                "no non-loopback IPv4 address on this machine: the wildcard address was checked through loopback only",
            );
            format!("http://127.0.0.1:{port}")
        }
    };
    ctl.url = url;
    let agent_token = ctl.create_token(ADMIN, "remote", "agent", &[]).await;
    let _agent = env
        .start_agent_with_token(&ctl, "remote", &agent_token, ADMIN, &[])
        .await;
    let run = ctl
        .cli_with_token(ADMIN, &["enqueue", "hello", "--wait"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(run["state"], "succeeded", "{run}");
    ctl.cli(&["jobs", "list"]).await.expect_code(4);

    // A bootstrap secret too short: exit 2 naming the flag, nothing bound.
    let short = env.path().join("short.token");
    std::fs::write(&short, "tooshort\n").unwrap();
    let exited = env
        .run_controller_to_exit(
            &["--bootstrap-token-file", short.to_str().unwrap()],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("--bootstrap-token-file") && exited.stderr.contains("at least 16"),
        "{exited:?}"
    );
}

/// `--limit streams_per_token=N` and `--max-streams-per-token N` set the same
/// limit (docs/configuration.md), the flag winning when both are given: the
/// stream one past the limit in force is refused with `ResourceExhausted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_spellings_of_the_stream_limit_act() {
    for (flags, limit) in [
        (&["--limit", "streams_per_token=1"][..], 1),
        (
            &["--limit", "streams_per_token=1", "--max-streams-per-token", "2"][..],
            2,
        ),
    ] {
        let env = TestEnv::new();
        env.write_config(CONFIG);
        let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", flags).await;
        let watcher = ctl.create_token(ADMIN, "watcher", "viewer", &[]).await;
        let mut open = Vec::new();
        for _ in 0..limit {
            let stream = ctl
                .client_with_token(Some(&watcher))
                .await
                .watch_events(pb::WatchEventsRequest::default())
                .await
                .unwrap_or_else(|e| panic!("{flags:?}: a watch within the limit of {limit} was refused: {e:?}"));
            open.push(stream.into_inner());
        }
        let refused = ctl
            .client_with_token(Some(&watcher))
            .await
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .expect_err("a watch past the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{flags:?}: {refused:?}");
        assert!(
            refused.message().contains(&format!("the limit is {limit}")),
            "{flags:?}: {refused:?}"
        );
    }
}
