//! The role matrix end to end: one controller started with a bootstrap token;
//! tokens of every role created through `workerctl`, plus a revoked one, an
//! expired one, an unknown secret and no token at all; EVERY RPC of
//! `ControllerService`, `AgentService` and `CatalogService` called with each, over gRPC.
//!
//! The expected answers come from the role matrix as `docs/security.md` shows
//! it (a unit test in `controller/src/auth/roles.rs` checks that this table is
//! the one the server enforces, and that every RPC of the proto files is in
//! it): a role the table allows gets past authentication and authorization
//! (the call may then fail for other reasons: NotFound for a missing run,
//! InvalidArgument for an empty name); any other role gets `PermissionDenied`;
//! revoked, expired, unknown and missing tokens get `Unauthenticated`. The
//! calls are made so that none changes anything (missing names, invalid
//! documents).

use std::time::Duration;

use tonic::{Code, Status};
use worker_proto::v1::{self as pb};
use worker_tests::auth::{AuthedAgentClient, AuthedClient, BOOTSTRAP_SECRET};
use worker_tests::{Controller, TestEnv, wait_for};

const CONFIG: &str = r#"
jobs:
  hello:
    shell: "echo hello"
"#;

/// (RPC as `Service/Method`, roles that may call it), read from the
/// document's role matrix.
fn documented_matrix() -> Vec<(String, Vec<String>)> {
    let doc =
        std::fs::read_to_string(worker_tests::workspace_root().join("docs/security.md")).expect("docs/security.md");
    let header = "| RPC | admin | operator | viewer | enqueuer | agent |";
    let roles: Vec<&str> = header.trim_matches('|').split('|').skip(1).map(str::trim).collect();
    let rows: Vec<(String, Vec<String>)> = doc
        .lines()
        .skip_while(|l| *l != header)
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let method = cells[0].trim_matches('`').to_string();
            let allowed = roles
                .iter()
                .zip(&cells[1..])
                .filter(|(_, cell)| **cell == "yes")
                .map(|(role, _)| role.to_string())
                .collect();
            (method, allowed)
        })
        .collect();
    assert!(
        rows.len() > 30,
        "the role matrix in docs/security.md has {} rows",
        rows.len()
    );
    rows
}

/// Calls `method` with harmless arguments.
async fn call(client: &mut AuthedClient, agent: &mut AuthedAgentClient, method: &str, n: usize) -> Result<(), Status> {
    let none = || "no-such-thing".to_string();
    match method {
        "ControllerService/ListJobs" => client.list_jobs(pb::ListJobsRequest {}).await.map(drop),
        "ControllerService/GetJob" => client.get_job(pb::GetJobRequest { name: none() }).await.map(drop),
        "ControllerService/Enqueue" => client
            .enqueue(pb::EnqueueRequest {
                job: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ControllerService/GetRun" => client.get_run(pb::GetRunRequest { id: none() }).await.map(drop),
        "ControllerService/WaitRun" => client
            .wait_run(pb::WaitRunRequest {
                id: none(),
                timeout_ms: 1,
            })
            .await
            .map(drop),
        "ControllerService/ListRuns" => client.list_runs(pb::ListRunsRequest::default()).await.map(drop),
        "ControllerService/CancelRun" => client.cancel_run(pb::RunRequest { id: none() }).await.map(drop),
        "ControllerService/RetryRun" => client.retry_run(pb::RunRequest { id: none() }).await.map(drop),
        "ControllerService/QueueStats" => client.queue_stats(pb::QueueStatsRequest {}).await.map(drop),
        "ControllerService/ListQueue" => client.list_queue(pb::ListQueueRequest { limit: 1 }).await.map(drop),
        "ControllerService/ListDlq" => client.list_dlq(pb::ListDlqRequest { limit: 1 }).await.map(drop),
        "ControllerService/RetryDlq" => client
            .retry_dlq(pb::DlqRequest { id: none(), all: false })
            .await
            .map(drop),
        "ControllerService/PurgeDlq" => client
            .purge_dlq(pb::DlqRequest { id: none(), all: false })
            .await
            .map(drop),
        "ControllerService/PruneRuns" => client
            .prune_runs(pb::PruneRunsRequest {
                job: none(),
                dry_run: true,
            })
            .await
            .map(drop),
        "ControllerService/ListAgents" => client.list_agents(pb::ListAgentsRequest {}).await.map(drop),
        "ControllerService/DrainAgent" => client.drain_agent(pb::DrainAgentRequest { id: none() }).await.map(drop),
        "ControllerService/ListSchedules" => client.list_schedules(pb::ListSchedulesRequest {}).await.map(drop),
        "ControllerService/PauseSchedule" => client
            .pause_schedule(pb::ScheduleRequest { job: none() })
            .await
            .map(drop),
        "ControllerService/ResumeSchedule" => client
            .resume_schedule(pb::ScheduleRequest { job: none() })
            .await
            .map(drop),
        "ControllerService/PreviewSchedule" => client
            .preview_schedule(pb::PreviewScheduleRequest {
                cron: "0 * * * *".into(),
                count: 1,
                ..Default::default()
            })
            .await
            .map(drop),
        "ControllerService/EnqueueBatch" => client
            .enqueue_batch(pb::EnqueueBatchRequest {
                runs: vec![pb::EnqueueRequest {
                    job: none(),
                    ..Default::default()
                }],
            })
            .await
            .map(drop),
        "ControllerService/CancelWorkflow" => client
            .cancel_workflow(pb::WorkflowRequest { id: none() })
            .await
            .map(drop),
        "ControllerService/ApplyJobs" => client
            .apply_jobs(pb::ApplyJobsRequest {
                yaml: "jobs: [not, a, mapping]".into(),
                source_name: "matrix".into(),
            })
            .await
            .map(drop),
        "ControllerService/ExportJobs" => client.export_jobs(pb::ExportJobsRequest {}).await.map(drop),
        "ControllerService/SetJobEnabled" => client
            .set_job_enabled(pb::SetJobEnabledRequest {
                name: none(),
                enabled: true,
            })
            .await
            .map(drop),
        "ControllerService/DeleteJob" => client.delete_job(pb::DeleteJobRequest { name: none() }).await.map(drop),
        "ControllerService/WatchEvents" => client
            .watch_events(pb::WatchEventsRequest {
                job: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ControllerService/FollowRunOutput" => client
            .follow_run_output(pb::FollowRunOutputRequest { run_id: none() })
            .await
            .map(drop),
        "ControllerService/ServerInfo" => client.server_info(pb::ServerInfoRequest {}).await.map(drop),
        "ControllerService/ListAlertChannels" => client
            .list_alert_channels(pb::ListAlertChannelsRequest {})
            .await
            .map(drop),
        "ControllerService/PutAlertChannel" => client
            .put_alert_channel(pb::PutAlertChannelRequest {
                name: none(),
                spec_yaml: "type: no-such-type".into(),
            })
            .await
            .map(drop),
        "ControllerService/SetAlertChannelEnabled" => client
            .set_alert_channel_enabled(pb::SetAlertChannelEnabledRequest {
                name: none(),
                enabled: true,
            })
            .await
            .map(drop),
        "ControllerService/DeleteAlertChannel" => client
            .delete_alert_channel(pb::DeleteAlertChannelRequest { name: none() })
            .await
            .map(drop),
        "ControllerService/ListAlertRules" => client.list_alert_rules(pb::ListAlertRulesRequest {}).await.map(drop),
        "ControllerService/PutAlertRule" => client
            .put_alert_rule(pb::PutAlertRuleRequest {
                spec_yaml: "name: x\nevent: no-such-event".into(),
            })
            .await
            .map(drop),
        "ControllerService/DeleteAlertRule" => client
            .delete_alert_rule(pb::DeleteAlertRuleRequest { name: none() })
            .await
            .map(drop),
        "ControllerService/ListAlertHistory" => client
            .list_alert_history(pb::ListAlertHistoryRequest::default())
            .await
            .map(drop),
        "ControllerService/TestAlertChannel" => client
            .test_alert_channel(pb::TestAlertChannelRequest { name: none() })
            .await
            .map(drop),
        "ControllerService/CreateToken" => client
            .create_token(pb::CreateTokenRequest {
                name: "Not A Valid Name".into(),
                role: "viewer".into(),
                expires_in_ms: 0,
            })
            .await
            .map(drop),
        "ControllerService/ListTokens" => client.list_tokens(pb::ListTokensRequest {}).await.map(drop),
        "ControllerService/RevokeToken" => client
            .revoke_token(pb::RevokeTokenRequest { name: none() })
            .await
            .map(drop),
        "ControllerService/SendDigest" => client
            .send_digest(pb::SendDigestRequest {
                run_id: none(),
                attempt: 1,
            })
            .await
            .map(drop),
        "ControllerService/SnapshotStore" => client.snapshot_store(pb::SnapshotStoreRequest {}).await.map(drop),
        "AgentService/Connect" => {
            let hello = pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                    agent_id: format!("matrix-agent-{n}"),
                    name: format!("matrix-agent-{n}"),
                    host: "matrix".into(),
                    executors: vec!["builtin".into()],
                    capacity: 1,
                    ..Default::default()
                })),
            };
            let mut stream = agent.connect(tokio_stream::iter(vec![hello])).await?.into_inner();
            match stream.message().await? {
                Some(pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Welcome(_)),
                }) => Ok(()),
                other => Err(Status::internal(format!("no Welcome after Hello: {other:?}"))),
            }
        }
        other => panic!("the role matrix lists {other}, which this test does not know how to call: add it"),
    }
}

/// `GET path` on the controller's HTTP listener, its status read as the
/// gRPC status of the same meaning (401 Unauthenticated, 403 PermissionDenied).
async fn http_call(ctl: &Controller, path: &str, token: Option<&str>) -> Result<(), Status> {
    let addr = ctl.http_addr.expect("the controller serves HTTP");
    let answer = worker_tests::http::get(addr, path, token).await;
    match answer.status {
        200 => Ok(()),
        401 => Err(Status::unauthenticated(answer.body)),
        403 => Err(Status::permission_denied(answer.body)),
        other => Err(Status::internal(format!("GET {path}: HTTP {other}: {}", answer.body))),
    }
}

/// What a call's answer says about authentication and authorization.
fn verdict(result: &Result<(), Status>) -> &'static str {
    match result {
        Err(s) if s.code() == Code::Unauthenticated => "unauthenticated",
        Err(s) if s.code() == Code::PermissionDenied => "permission denied",
        _ => "allowed",
    }
}

/// Calls a `CatalogService` method with harmless arguments (a missing pack,
/// an empty publication, a rating of 0, an empty review: nothing changes).
async fn catalog_call(ctl: &Controller, token: Option<&str>, method: &str) -> Result<(), Status> {
    use worker_proto::v1::catalog_service_client::CatalogServiceClient;
    let mut client = CatalogServiceClient::with_interceptor(
        ctl.channel().await,
        worker_tests::auth::Bearer(token.map(String::from)),
    );
    let none = || "no-such-thing".to_string();
    match method {
        "CatalogService/ListPacks" => client.list_packs(pb::ListPacksRequest::default()).await.map(drop),
        "CatalogService/SearchPacks" => client.search_packs(pb::SearchPacksRequest::default()).await.map(drop),
        "CatalogService/ShowPack" => client
            .show_pack(pb::ShowPackRequest {
                name: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CatalogService/PublishPack" => client.publish_pack(pb::PublishPackRequest::default()).await.map(drop),
        "CatalogService/InstallPack" => client
            .install_pack(pb::InstallPackRequest {
                name: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CatalogService/RatePack" => client
            .rate_pack(pb::RatePackRequest {
                name: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CatalogService/ReviewPack" => client
            .review_pack(pb::ReviewPackRequest {
                name: none(),
                ..Default::default()
            })
            .await
            .map(drop),
        other => panic!("the role matrix lists {other}, which this test does not know how to call: add it"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_with_every_role_gets_the_documented_answer() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl: Controller = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let admin = BOOTSTRAP_SECRET;

    // Tokens of every role, through workerctl.
    let mut principals: Vec<(String, Option<String>, &str)> = Vec::new();
    for role in ["admin", "operator", "viewer", "enqueuer", "agent"] {
        let secret = ctl.create_token(admin, &format!("m-{role}"), role, &[]).await;
        principals.push((role.to_string(), Some(secret), "role"));
    }
    let revoked = ctl.create_token(admin, "m-revoked", "admin", &[]).await;
    ctl.cli_with_token(admin, &["tokens", "revoke", "m-revoked"])
        .await
        .expect_code(0);
    let expired = ctl
        .create_token(admin, "m-expired", "admin", &["--expires", "1s"])
        .await;
    let probe = ctl.client_with_token(Some(&expired)).await;
    wait_for("the 1s token to expire", Duration::from_secs(10), || {
        let mut probe = probe.clone();
        async move {
            match probe.server_info(pb::ServerInfoRequest {}).await {
                Err(s) if s.code() == Code::Unauthenticated => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    principals.push(("revoked".into(), Some(revoked), "unauthenticated"));
    principals.push(("expired".into(), Some(expired), "unauthenticated"));
    principals.push((
        "unknown".into(),
        Some("wkr_not-a-token-anyone-has".into()),
        "unauthenticated",
    ));
    principals.push(("none".into(), None, "unauthenticated"));

    let matrix = documented_matrix();
    let mut wrong = Vec::new();
    let mut calls = 0;
    for (who, token, kind) in &principals {
        let mut client = ctl.client_with_token(token.as_deref()).await;
        let mut agent = ctl.agent_client_with_token(token.as_deref()).await;
        for (method, allowed) in &matrix {
            calls += 1;
            let result = match method.strip_prefix("HTTP GET ") {
                Some(path) => http_call(&ctl, path, token.as_deref()).await,
                None if method.starts_with("CatalogService/") => catalog_call(&ctl, token.as_deref(), method).await,
                None => call(&mut client, &mut agent, method, calls).await,
            };
            let expected = match *kind {
                "unauthenticated" => "unauthenticated",
                _ if allowed.contains(who) => "allowed",
                _ => "permission denied",
            };
            let got = verdict(&result);
            if got != expected {
                wrong.push(format!("{method} as {who}: expected {expected}, got {result:?}"));
            }
            if let Err(status) = &result
                && let Some(secret) = token
            {
                assert!(
                    !status.message().contains(secret.as_str()),
                    "{method} as {who}: the secret is echoed"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {calls} calls disagree with docs/security.md:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing was changed by all these calls: only the tokens made above exist.
    let tokens = ctl
        .cli_with_token(admin, &["tokens", "list"])
        .await
        .expect_code(0)
        .json();
    let names: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bootstrap",
            "m-admin",
            "m-agent",
            "m-enqueuer",
            "m-expired",
            "m-operator",
            "m-revoked",
            "m-viewer"
        ]
    );
    let jobs = ctl.cli_with_token(admin, &["jobs", "list"]).await.expect_code(0).json();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
}
