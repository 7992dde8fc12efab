//! Runs the `workerctl` binary against an in-process mock `ControllerService`:
//! checks the token header, the trigger, the payload pass-through, JSON output,
//! and the exit codes and `error:` messages.

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
    type WatchEventsStream = tokio_stream::Empty<Result<pb::RunEvent, Status>>;

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
        self.enqueued.lock().unwrap().push(request);
        Ok(Response::new(pb::EnqueueResponse {
            run: Some(sample_run("r2", "queued")),
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
    async fn list_agents(&self, _: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        unimplemented()
    }
    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        unimplemented()
    }
    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
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
        serde_json::json!({"id": "r2"})
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
