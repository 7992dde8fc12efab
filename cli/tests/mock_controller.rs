//! Runs the `workerctl` binary against an in-process mock `ControllerService`:
//! checks the token header, the trigger, the payload pass-through, JSON output,
//! and the exit codes and `error:` messages; then the commands of the workflow
//! and schedule RPCs (batch enqueue, idempotency keys, apply/export, previews).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tonic::codegen::tokio_stream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};

/// Records the enqueue requests it receives; knows one run `r1`.
#[derive(Default, Clone)]
struct Mock {
    enqueued: Arc<Mutex<Vec<pb::EnqueueRequest>>>,
    batches: Arc<Mutex<Vec<pb::EnqueueBatchRequest>>>,
    applied: Arc<Mutex<Vec<pb::ApplyJobsRequest>>>,
    previews: Arc<Mutex<Vec<pb::PreviewScheduleRequest>>>,
}

/// The errors the mock's ApplyJobs answers for a document containing `bad`.
const APPLY_ERRORS: &str = "jobs.yaml:3: jobs.a.schedule: invalid cron `* *`: expected 5 or 6 fields\n\
                            jobs.yaml:9: jobs.b: unknown field `shel`";

fn schedule(job: &str, paused: bool) -> pb::Schedule {
    pb::Schedule {
        job: job.into(),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Paris".into(),
        enabled: true,
        paused,
        dst_gap: "shift".into(),
        ..Default::default()
    }
}

fn sample_run(id: &str, state: &str) -> pb::Run {
    pb::Run {
        id: id.into(),
        job: "backup".into(),
        state: state.into(),
        priority: "normal".into(),
        payload: r#"{"n":1}"#.into(),
        trigger: "api".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        max_attempts: 1,
        attempts: vec![pb::Attempt {
            attempt: 1,
            agent: "a1".into(),
            outcome: "failed".into(),
            exit_code: Some(0),
            output: "tail of output".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the mock"))
}

#[tonic::async_trait]
impl ControllerService for Mock {
    // Alerting is tested end to end against the real controller (tests/tests/alerting.rs).
    async fn list_alert_channels(
        &self,
        _: Request<pb::ListAlertChannelsRequest>,
    ) -> Result<Response<pb::ListAlertChannelsResponse>, Status> {
        unimplemented()
    }
    async fn put_alert_channel(
        &self,
        _: Request<pb::PutAlertChannelRequest>,
    ) -> Result<Response<pb::AlertChannel>, Status> {
        unimplemented()
    }
    async fn delete_alert_channel(
        &self,
        _: Request<pb::DeleteAlertChannelRequest>,
    ) -> Result<Response<pb::DeleteAlertChannelResponse>, Status> {
        unimplemented()
    }
    async fn set_alert_channel_enabled(
        &self,
        _: Request<pb::SetAlertChannelEnabledRequest>,
    ) -> Result<Response<pb::AlertChannel>, Status> {
        unimplemented()
    }
    async fn list_alert_rules(
        &self,
        _: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        unimplemented()
    }
    async fn put_alert_rule(&self, _: Request<pb::PutAlertRuleRequest>) -> Result<Response<pb::AlertRule>, Status> {
        unimplemented()
    }
    async fn delete_alert_rule(
        &self,
        _: Request<pb::DeleteAlertRuleRequest>,
    ) -> Result<Response<pb::DeleteAlertRuleResponse>, Status> {
        unimplemented()
    }
    async fn list_alert_history(
        &self,
        _: Request<pb::ListAlertHistoryRequest>,
    ) -> Result<Response<pb::ListAlertHistoryResponse>, Status> {
        unimplemented()
    }
    async fn test_alert_channel(
        &self,
        _: Request<pb::TestAlertChannelRequest>,
    ) -> Result<Response<pb::AlertHistoryEntry>, Status> {
        unimplemented()
    }

    async fn create_token(
        &self,
        _: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        unimplemented()
    }

    async fn list_tokens(&self, _: Request<pb::ListTokensRequest>) -> Result<Response<pb::ListTokensResponse>, Status> {
        unimplemented()
    }

    async fn revoke_token(&self, _: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        unimplemented()
    }

    type SnapshotStoreStream = tokio_stream::Empty<Result<pb::SnapshotChunk, Status>>;

    async fn snapshot_store(
        &self,
        _: Request<pb::SnapshotStoreRequest>,
    ) -> Result<Response<Self::SnapshotStoreStream>, Status> {
        unimplemented()
    }

    async fn send_digest(&self, _: Request<pb::SendDigestRequest>) -> Result<Response<pb::SendDigestResponse>, Status> {
        unimplemented()
    }

    type WatchEventsStream = tokio_stream::Empty<Result<pb::RunEvent, Status>>;
    type FollowRunOutputStream = tokio_stream::Empty<Result<pb::OutputEvent, Status>>;

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        match request.metadata().get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer secret") => Ok(Response::new(pb::ListJobsResponse {
                jobs: vec![pb::Job {
                    name: "backup".into(),
                    enabled: true,
                    ..Default::default()
                }],
            })),
            _ => Err(Status::unauthenticated("missing or invalid token")),
        }
    }
    async fn get_job(&self, _: Request<pb::GetJobRequest>) -> Result<Response<pb::JobDetail>, Status> {
        unimplemented()
    }
    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        let request = request.into_inner();
        if request.payload == "bad" {
            return Err(Status::invalid_argument("payload: expected value at line 1 column 1"));
        }
        let duplicate = request.idempotency_key == "dup";
        let mut run = sample_run("r2", "queued");
        let mut upstream = Vec::new();
        if request.job == "chain" {
            run.workflow_id = "w1".into();
            upstream = vec![sample_run("u1", "queued"), sample_run("u2", "blocked")];
        }
        self.enqueued.lock().unwrap().push(request);
        Ok(Response::new(pb::EnqueueResponse {
            run: Some(run),
            duplicate,
            upstream,
        }))
    }
    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = request.into_inner().id;
        if id == "r1" {
            Ok(Response::new(sample_run("r1", "succeeded")))
        } else {
            Err(Status::not_found(format!("run `{id}` not found")))
        }
    }
    async fn wait_run(&self, request: Request<pb::WaitRunRequest>) -> Result<Response<pb::Run>, Status> {
        Ok(Response::new(sample_run(&request.into_inner().id, "dead")))
    }
    async fn list_runs(&self, _: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        Ok(Response::new(pb::ListRunsResponse {
            runs: vec![sample_run("r1", "succeeded")],
            truncated: false,
        }))
    }
    async fn cancel_run(&self, _: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        Err(Status::failed_precondition("run `r1` already ended"))
    }
    async fn retry_run(&self, _: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        unimplemented()
    }
    async fn queue_stats(&self, _: Request<pb::QueueStatsRequest>) -> Result<Response<pb::QueueStatsResponse>, Status> {
        unimplemented()
    }
    async fn list_queue(&self, _: Request<pb::ListQueueRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        unimplemented()
    }
    async fn list_dlq(&self, _: Request<pb::ListDlqRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        unimplemented()
    }
    async fn retry_dlq(&self, request: Request<pb::DlqRequest>) -> Result<Response<pb::DlqResponse>, Status> {
        let request = request.into_inner();
        assert!(request.all && request.id.is_empty());
        Ok(Response::new(pb::DlqResponse {
            run_ids: vec!["d1".into(), "d2".into()],
        }))
    }
    async fn purge_dlq(&self, _: Request<pb::DlqRequest>) -> Result<Response<pb::DlqResponse>, Status> {
        unimplemented()
    }
    async fn prune_runs(&self, _: Request<pb::PruneRunsRequest>) -> Result<Response<pb::PruneRunsResponse>, Status> {
        unimplemented()
    }
    async fn list_agents(&self, _: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        unimplemented()
    }
    async fn drain_agent(&self, _: Request<pb::DrainAgentRequest>) -> Result<Response<pb::Agent>, Status> {
        unimplemented()
    }
    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        unimplemented()
    }
    async fn pause_schedule(&self, request: Request<pb::ScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let job = request.into_inner().job;
        if job != "backup" {
            return Err(Status::not_found(format!("job `{job}` has no schedule")));
        }
        Ok(Response::new(schedule(&job, true)))
    }
    async fn resume_schedule(&self, request: Request<pb::ScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        Ok(Response::new(schedule(&request.into_inner().job, false)))
    }
    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<Response<pb::PreviewScheduleResponse>, Status> {
        let request = request.into_inner();
        if request.cron == "bad" {
            return Err(Status::invalid_argument("cron: expected 5 or 6 fields"));
        }
        let timezone = if request.timezone.is_empty() {
            "Europe/Paris".to_string()
        } else {
            request.timezone.clone()
        };
        self.previews.lock().unwrap().push(request);
        Ok(Response::new(pb::PreviewScheduleResponse {
            fires: vec![
                pb::Fire {
                    utc: "2025-03-30T01:00:00Z".into(),
                    local: "2025-03-30T03:00:00+02:00".into(),
                },
                pb::Fire {
                    utc: "2025-03-31T01:00:00Z".into(),
                    local: "2025-03-31T03:00:00+02:00".into(),
                },
            ],
            timezone,
        }))
    }
    async fn enqueue_batch(
        &self,
        request: Request<pb::EnqueueBatchRequest>,
    ) -> Result<Response<pb::EnqueueBatchResponse>, Status> {
        let request = request.into_inner();
        let results = request
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| pb::EnqueueResponse {
                run: Some(sample_run(&format!("b{i}"), "queued")),
                duplicate: r.idempotency_key == "dup",
                upstream: vec![],
            })
            .collect();
        self.batches.lock().unwrap().push(request);
        Ok(Response::new(pb::EnqueueBatchResponse { results }))
    }
    async fn cancel_workflow(
        &self,
        request: Request<pb::WorkflowRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let id = request.into_inner().id;
        if id != "w1" {
            return Err(Status::not_found(format!("workflow `{id}` not found")));
        }
        Ok(Response::new(pb::ListRunsResponse {
            runs: vec![sample_run("u2", "cancelled"), sample_run("r2", "cancelled")],
            truncated: false,
        }))
    }
    async fn apply_jobs(
        &self,
        request: Request<pb::ApplyJobsRequest>,
    ) -> Result<Response<pb::ApplyJobsResponse>, Status> {
        let request = request.into_inner();
        let bad = request.yaml.contains("bad");
        self.applied.lock().unwrap().push(request);
        if bad {
            return Err(Status::invalid_argument(APPLY_ERRORS));
        }
        Ok(Response::new(pb::ApplyJobsResponse {
            created: vec!["hello".into()],
            updated: vec!["backup".into()],
            unchanged: vec![],
        }))
    }
    async fn export_jobs(&self, _: Request<pb::ExportJobsRequest>) -> Result<Response<pb::ExportJobsResponse>, Status> {
        Ok(Response::new(pb::ExportJobsResponse {
            yaml: "jobs:\n  hello:\n    shell: echo hello\n".into(),
        }))
    }
    async fn set_job_enabled(&self, request: Request<pb::SetJobEnabledRequest>) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        Ok(Response::new(pb::Job {
            name: request.name,
            enabled: request.enabled,
            depends_on: vec!["extract".into()],
            source: "api".into(),
            ..Default::default()
        }))
    }
    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let name = request.into_inner().name;
        if name == "config-job" {
            return Err(Status::failed_precondition(
                "job `config-job` is defined in the config directory",
            ));
        }
        Ok(Response::new(pb::DeleteJobResponse {}))
    }
    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        unimplemented()
    }
    async fn follow_run_output(
        &self,
        _: Request<pb::FollowRunOutputRequest>,
    ) -> Result<Response<Self::FollowRunOutputStream>, Status> {
        unimplemented()
    }
    async fn server_info(&self, _: Request<pb::ServerInfoRequest>) -> Result<Response<pb::ServerInfoResponse>, Status> {
        unimplemented()
    }
}

/// Starts the mock on a free loopback port.
fn start(mock: Mock) -> SocketAddr {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControllerServiceServer::new(mock))
            .serve_with_incoming(incoming),
    );
    addr
}

/// Exit code, stdout, stderr of `workerctl --controller <addr> args...`.
async fn workerctl(addr: SocketAddr, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_workerctl"))
        .arg("--controller")
        .arg(format!("http://{addr}"))
        .args(args)
        .env_remove("WORKER_TOKEN")
        .env_remove("WORKER_CONTROLLER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn commands_against_a_mock_controller() {
    let mock = Mock::default();
    let addr = start(mock.clone());

    // JSON run shape.
    let (code, out, _) = workerctl(addr, &["runs", "get", "r1", "-o", "json"], "").await;
    assert_eq!(code, 0);
    let run: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["payload"], serde_json::json!({"n": 1}));
    assert_eq!(run["finished_at"], serde_json::Value::Null);
    assert_eq!(run["attempts"][0]["exit_code"], serde_json::json!(0));

    // Table: fields, attempts, output tail.
    let (code, out, _) = workerctl(addr, &["runs", "get", "r1"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("state:") && out.contains("ATTEMPT") && out.ends_with("tail of output\n"),
        "{out}"
    );

    // Not found: exit 3, the server's message verbatim.
    let (code, _, err) = workerctl(addr, &["runs", "get", "nope"], "").await;
    assert_eq!((code, err.as_str()), (3, "error: run `nope` not found\n"));

    // FailedPrecondition: exit 2.
    let (code, _, err) = workerctl(addr, &["runs", "cancel", "r1"], "").await;
    assert_eq!((code, err.as_str()), (2, "error: run `r1` already ended\n"));

    // The payload is not validated client-side: InvalidArgument, exit 2.
    let (code, _, err) = workerctl(addr, &["enqueue", "backup", "--payload", "bad"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (2, "error: payload: expected value at line 1 column 1\n")
    );

    // Payload from stdin, trigger api, `{"id"}` without --wait.
    let (code, out, _) = workerctl(
        addr,
        &[
            "enqueue",
            "backup",
            "--payload",
            "@-",
            "--priority",
            "high",
            "-o",
            "json",
        ],
        "{\"x\": 1}",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"id": "r2", "duplicate": false, "workflow_id": null, "upstream": []})
    );
    // Table mode prints the bare id.
    let (code, out, _) = workerctl(addr, &["enqueue", "backup"], "").await;
    assert_eq!((code, out.as_str()), (0, "r2\n"));

    // `job NAME --wait`: trigger manual; the run ends dead, so exit 1.
    let (code, out, err) = workerctl(addr, &["job", "backup", "--wait", "-o", "yaml"], "").await;
    assert_eq!(code, 1);
    assert!(out.contains("state: dead"), "{out}");
    assert!(err.starts_with("error: run r2 ended dead"), "{err}");

    {
        let enqueued = mock.enqueued.lock().unwrap();
        assert_eq!(enqueued[0].payload, "{\"x\": 1}");
        assert_eq!(enqueued[0].priority, "high");
        assert_eq!(enqueued[0].trigger, "api");
        assert_eq!(enqueued[2].trigger, "manual");
        assert_eq!(enqueued[2].payload, "");
    }

    // Token: sent as a bearer header; refused without it (exit 4).
    let (code, out, _) = workerctl(addr, &["list", "--token", "secret", "-o", "json"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["name"],
        "backup"
    );
    let (code, _, err) = workerctl(addr, &["jobs", "list"], "").await;
    assert_eq!((code, err.as_str()), (4, "error: missing or invalid token\n"));

    // dlq retry --all.
    let (code, out, _) = workerctl(addr, &["dlq", "retry", "--all", "-o", "json"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"run_ids": ["d1", "d2"]})
    );

    // Other server errors: exit 1.
    let (code, _, err) = workerctl(addr, &["queue", "stats"], "").await;
    assert_eq!((code, err.as_str()), (1, "error: not in the mock\n"));
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn enqueue_options_duplicates_and_batches() {
    let mock = Mock::default();
    let addr = start(mock.clone());

    // Run options reach the request; a duplicate is flagged.
    let (code, out, err) = workerctl(
        addr,
        &[
            "enqueue",
            "backup",
            "--depends-on",
            "r0",
            "--depends-on",
            "r1",
            "--key",
            "dup",
            "--delay",
            "1m30s",
            "-o",
            "json",
        ],
        "",
    )
    .await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        json(&out),
        serde_json::json!({"id": "r2", "duplicate": true, "workflow_id": null, "upstream": []})
    );
    // Table mode: the bare id on stdout, the note on stderr.
    let (code, out, err) = workerctl(addr, &["jobs", "run", "backup", "--key", "dup"], "").await;
    assert_eq!(code, 0);
    assert_eq!(out, "r2\n");
    assert_eq!(err, "duplicate of an existing run (idempotency key)\n");
    // A job with an upstream chain.
    let (code, out, _) = workerctl(
        addr,
        &["job", "chain", "--at", "2026-01-01T00:00:00Z", "-o", "yaml"],
        "",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "id: r2\nduplicate: false\nworkflow_id: w1\nupstream:\n- u1\n- u2\n"
    );
    {
        let enqueued = mock.enqueued.lock().unwrap();
        assert_eq!(enqueued[0].depends_on, ["r0", "r1"]);
        assert_eq!(enqueued[0].idempotency_key, "dup");
        assert_eq!(enqueued[0].delay_ms, 90_000);
        assert_eq!(enqueued[0].not_before, "");
        assert_eq!(enqueued[0].trigger, "api");
        assert_eq!(enqueued[1].trigger, "manual");
        assert_eq!(enqueued[2].not_before, "2026-01-01T00:00:00Z");
        assert_eq!(enqueued[2].delay_ms, 0);
    }
    // --delay and --at exclude each other: a usage error before any call.
    let (code, _, _) = workerctl(addr, &["enqueue", "backup", "--delay", "5s", "--at", "x"], "").await;
    assert_eq!(code, 2);

    // Batch from stdin.
    let batch = r#"[{"ref": "a", "job": "extract", "payload": {"day": 1}},
                    {"job": "load", "depends_on": ["a"], "key": "dup", "delay": "5m", "priority": "high"}]"#;
    let (code, out, err) = workerctl(addr, &["enqueue", "--batch", "-", "-o", "json"], batch).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        json(&out),
        serde_json::json!([
            {"ref": "a", "id": "b0", "duplicate": false},
            {"ref": null, "id": "b1", "duplicate": true}
        ])
    );
    let (code, out, _) = workerctl(addr, &["enqueue", "--batch", "-"], batch).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "REF  ID  DUPLICATE\na    b0  no\n-    b1  yes\n")
    );
    {
        let batches = mock.batches.lock().unwrap();
        let runs = &batches[0].runs;
        assert_eq!((runs[0].r#ref.as_str(), runs[0].job.as_str()), ("a", "extract"));
        assert_eq!(json(&runs[0].payload), serde_json::json!({"day": 1}));
        assert_eq!(runs[1].depends_on, ["a"]);
        assert_eq!(runs[1].delay_ms, 300_000);
        assert_eq!(runs[1].priority, "high");
        assert_eq!(runs[1].trigger, "api");
    }
    // A bad item: exit 2, naming the index and the field; nothing is sent.
    let (code, out, err) = workerctl(
        addr,
        &["enqueue", "--batch", "-"],
        r#"[{"job": "a"}, {"job": "b", "prio": "high"}]"#,
    )
    .await;
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.starts_with("error: <stdin>[1]: unknown field `prio`"), "{err}");
    assert_eq!(mock.batches.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn apply_export_and_job_admin() {
    let mock = Mock::default();
    let addr = start(mock.clone());

    // Apply from a file: the text and the path reach the controller.
    let path = std::env::temp_dir().join(format!("workerctl-apply-{}.yaml", std::process::id()));
    std::fs::write(&path, "jobs:\n  hello:\n    shell: echo hello\n").unwrap();
    let file = path.display().to_string();
    let (code, out, _) = workerctl(addr, &["apply", "-f", &file], "").await;
    assert_eq!((code, out.as_str()), (0, "created hello\nupdated backup\n"));
    let (code, out, _) = workerctl(addr, &["apply", "-f", &file, "-o", "json"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out),
        serde_json::json!({"created": ["hello"], "updated": ["backup"], "unchanged": []})
    );
    std::fs::remove_file(&path).unwrap();
    {
        let applied = mock.applied.lock().unwrap();
        assert_eq!(applied[0].yaml, "jobs:\n  hello:\n    shell: echo hello\n");
        assert_eq!(applied[0].source_name, file);
    }

    // InvalidArgument: every error line verbatim, exit 2, nothing on stdout.
    let (code, out, err) = workerctl(addr, &["apply", "-f", "-", "-o", "json"], "bad: [").await;
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err, format!("error: {APPLY_ERRORS}\n"));
    assert_eq!(mock.applied.lock().unwrap()[2].source_name, "<stdin>");

    // Export: the YAML as is, whatever -o says.
    for format in ["table", "json", "yaml"] {
        let (code, out, _) = workerctl(addr, &["export", "-o", format], "").await;
        assert_eq!((code, out.as_str()), (0, "jobs:\n  hello:\n    shell: echo hello\n"));
    }

    // enable / disable print the job.
    let (code, out, _) = workerctl(addr, &["jobs", "disable", "backup", "-o", "json"], "").await;
    assert_eq!(code, 0);
    let job = json(&out);
    assert_eq!(
        (job["name"].clone(), job["enabled"].clone()),
        ("backup".into(), false.into())
    );
    assert_eq!(job["depends_on"], serde_json::json!(["extract"]));
    assert!(job.get("stats").is_none(), "{job}");
    let (code, out, _) = workerctl(addr, &["jobs", "enable", "backup"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("enabled:") && out.contains("depends on:") && out.contains("extract"),
        "{out}"
    );

    // delete.
    let (code, out, _) = workerctl(addr, &["jobs", "delete", "old", "-o", "json"], "").await;
    assert_eq!((code, json(&out)), (0, serde_json::json!({"deleted": "old"})));
    let (code, out, _) = workerctl(addr, &["jobs", "delete", "old"], "").await;
    assert_eq!((code, out.as_str()), (0, "deleted old\n"));
    let (code, _, err) = workerctl(addr, &["jobs", "delete", "config-job"], "").await;
    assert_eq!(
        (code, err.as_str()),
        (2, "error: job `config-job` is defined in the config directory\n")
    );

    // runs cancel --workflow.
    let (code, out, _) = workerctl(addr, &["runs", "cancel", "--workflow", "w1", "-o", "json"], "").await;
    assert_eq!(code, 0);
    let runs = json(&out);
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["id"], "u2");
    assert_eq!(runs[0]["state"], "cancelled");
    assert_eq!(runs[0]["idempotency_key"], serde_json::Value::Null);
    let (code, out, _) = workerctl(addr, &["runs", "cancel", "--workflow", "w1"], "").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "ID  JOB     STATE\nu2  backup  cancelled\nr2  backup  cancelled\n")
    );
    let (code, _, err) = workerctl(addr, &["runs", "cancel", "--workflow", "w9"], "").await;
    assert_eq!((code, err.as_str()), (3, "error: workflow `w9` not found\n"));
}

#[tokio::test]
async fn schedules_pause_resume_and_next() {
    let mock = Mock::default();
    let addr = start(mock.clone());

    let (code, out, _) = workerctl(addr, &["schedules", "pause", "backup", "-o", "json"], "").await;
    assert_eq!(code, 0);
    let schedule = json(&out);
    assert_eq!(schedule["job"], "backup");
    assert_eq!(schedule["paused"], true);
    assert_eq!(schedule["dst_gap"], "shift");
    assert_eq!(schedule["dst_repeat"], serde_json::Value::Null);
    let (code, out, _) = workerctl(addr, &["schedules", "resume", "backup"], "").await;
    assert_eq!(code, 0);
    assert!(out.starts_with("JOB") && out.contains("PAUSED"), "{out}");
    let (code, _, err) = workerctl(addr, &["schedules", "pause", "nope"], "").await;
    assert_eq!((code, err.as_str()), (3, "error: job `nope` has no schedule\n"));

    // next NAME: JSON array of {utc, local}.
    let (code, out, _) = workerctl(addr, &["schedules", "next", "backup", "--count", "2", "-o", "json"], "").await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out),
        serde_json::json!([
            {"utc": "2025-03-30T01:00:00Z", "local": "2025-03-30T03:00:00+02:00"},
            {"utc": "2025-03-31T01:00:00Z", "local": "2025-03-31T03:00:00+02:00"}
        ])
    );
    // next --cron: the zone line and two columns.
    let (code, out, _) = workerctl(
        addr,
        &[
            "schedules",
            "next",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Paris",
            "--from",
            "2025-03-29T12:00:00Z",
            "--dst-gap",
            "skip",
            "--dst-repeat",
            "both",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "time zone: Europe/Paris\n\
         UTC                   LOCAL\n\
         2025-03-30 01:00:00Z  2025-03-30 03:00:00+02:00\n\
         2025-03-31 01:00:00Z  2025-03-31 03:00:00+02:00\n"
    );
    {
        let previews = mock.previews.lock().unwrap();
        assert_eq!((previews[0].job.as_str(), previews[0].count), ("backup", 2));
        assert_eq!(previews[0].cron, "");
        let p = &previews[1];
        assert_eq!(
            (p.job.as_str(), p.cron.as_str(), p.timezone.as_str(), p.from.as_str()),
            ("", "0 3 * * *", "Europe/Paris", "2025-03-29T12:00:00Z")
        );
        assert_eq!(
            (p.dst_gap.as_str(), p.dst_repeat.as_str(), p.count),
            ("skip", "both", 0)
        );
    }
    // A bad expression: the controller's message, exit 2. --tz without --cron: usage, exit 2.
    let (code, _, err) = workerctl(addr, &["schedules", "next", "--cron", "bad"], "").await;
    assert_eq!((code, err.as_str()), (2, "error: cron: expected 5 or 6 fields\n"));
    let (code, _, _) = workerctl(addr, &["schedules", "next", "backup", "--tz", "UTC"], "").await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn unreachable_controller_exits_4_naming_the_url() {
    // Bind then drop a listener: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, err) = workerctl(addr, &["runs", "list"], "").await;
    assert_eq!(code, 4);
    assert!(
        err.starts_with(&format!("error: cannot reach the controller at http://{addr}")),
        "{err}"
    );
}
