//! Typed gRPC calls built from a case's JSON description: an explicit mapping
//! of the handful of methods the corpus uses (no reflection), each naming the
//! fields it reads so that a misspelt field in a case is an error, not a
//! silently empty one.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};
use tonic::transport::Channel;
use worker_proto::v1 as pb;
use worker_proto::v1::agent_service_client::AgentServiceClient;
use worker_proto::v1::controller_service_client::ControllerServiceClient;

/// A reply: the status code's name (`Ok` on success) and the message.
pub struct Reply {
    /// `Ok`, `InvalidArgument`, ...
    pub code: String,
    /// The status message (empty on success).
    pub message: String,
}

impl Reply {
    fn of<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Reply {
        match r {
            Ok(_) => Reply {
                code: "Ok".into(),
                message: String::new(),
            },
            Err(status) => Reply::status(&status),
        }
    }

    /// The reply of a failed call.
    pub fn status(status: &tonic::Status) -> Reply {
        Reply {
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        }
    }
}

/// The fields of a request object, each read at most once; the ones never
/// read are reported by [`Fields::finish`].
struct Fields<'a> {
    map: &'a Map<String, Value>,
    read: BTreeSet<&'a str>,
    errors: Vec<String>,
}

impl<'a> Fields<'a> {
    fn new(v: &'a Value) -> Result<Fields<'a>, String> {
        let map = v.as_object().ok_or("the request must be a mapping")?;
        Ok(Fields {
            map,
            read: BTreeSet::new(),
            errors: Vec::new(),
        })
    }

    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.insert(key);
        self.map.get(key)
    }

    fn s(&mut self, key: &'a str) -> String {
        match self.get(key) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.errors.push(format!("{key}: expected a string, got {other}"));
                String::new()
            }
        }
    }

    fn u64(&mut self, key: &'a str) -> u64 {
        match self.get(key) {
            None => 0,
            Some(v) => v.as_u64().unwrap_or_else(|| {
                self.errors
                    .push(format!("{key}: expected an unsigned integer, got {v}"));
                0
            }),
        }
    }

    fn u32(&mut self, key: &'a str) -> u32 {
        let v = self.u64(key);
        u32::try_from(v).unwrap_or_else(|_| {
            self.errors
                .push(format!("{key}: {v} does not fit a uint32 (use a raw case)"));
            0
        })
    }

    fn bool(&mut self, key: &'a str) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn strs(&mut self, key: &'a str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().unwrap_or_default().to_string())
                .collect(),
            Some(other) => {
                self.errors
                    .push(format!("{key}: expected a list of strings, got {other}"));
                Vec::new()
            }
        }
    }

    fn string_map(&mut self, key: &'a str) -> std::collections::HashMap<String, String> {
        match self.get(key) {
            None => Default::default(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            Some(other) => {
                self.errors.push(format!("{key}: expected a mapping, got {other}"));
                Default::default()
            }
        }
    }

    fn list(&mut self, key: &'a str) -> Vec<&'a Value> {
        match self.get(key) {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => Vec::new(),
        }
    }

    fn finish(self) -> Result<(), String> {
        let mut errors = self.errors;
        errors.extend(
            self.map
                .keys()
                .filter(|k| !self.read.contains(k.as_str()))
                .map(|k| format!("unknown field {k:?} for this request")),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

fn enqueue_request(v: &Value) -> Result<pb::EnqueueRequest, String> {
    let mut f = Fields::new(v)?;
    let req = pb::EnqueueRequest {
        job: f.s("job"),
        payload: f.s("payload"),
        priority: f.s("priority"),
        trigger: f.s("trigger"),
        depends_on: f.strs("depends_on"),
        idempotency_key: f.s("idempotency_key"),
        delay_ms: f.u64("delay_ms"),
        not_before: f.s("not_before"),
        r#ref: f.s("ref"),
    };
    f.finish()?;
    Ok(req)
}

/// Calls `rpc` with the request `v` describes.
pub async fn call(channel: Channel, rpc: &str, v: &Value) -> Result<Reply, String> {
    let mut c = ControllerServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    if rpc == "Enqueue" {
        let mut request = tonic::Request::new(enqueue_request(v)?);
        request.set_timeout(Duration::from_secs(60));
        return Ok(Reply::of(c.enqueue(request).await));
    }
    let mut f = Fields::new(v)?;
    macro_rules! send {
        ($method:ident, $req:expr) => {{
            let req = $req;
            f.finish()?;
            let mut request = tonic::Request::new(req);
            request.set_timeout(Duration::from_secs(60));
            Reply::of(c.$method(request).await)
        }};
    }
    Ok(match rpc {
        "EnqueueBatch" => {
            let runs = f
                .list("runs")
                .into_iter()
                .map(enqueue_request)
                .collect::<Result<_, _>>()?;
            send!(enqueue_batch, pb::EnqueueBatchRequest { runs })
        }
        "GetRun" => send!(get_run, pb::GetRunRequest { id: f.s("id") }),
        "CancelRun" => send!(cancel_run, pb::RunRequest { id: f.s("id") }),
        "RetryRun" => send!(retry_run, pb::RunRequest { id: f.s("id") }),
        "WaitRun" => send!(
            wait_run,
            pb::WaitRunRequest {
                id: f.s("id"),
                timeout_ms: f.u64("timeout_ms"),
            }
        ),
        "ListRuns" => send!(
            list_runs,
            pb::ListRunsRequest {
                job: f.s("job"),
                state: f.s("state"),
                limit: f.u32("limit"),
            }
        ),
        "ListQueue" => send!(list_queue, pb::ListQueueRequest { limit: f.u32("limit") }),
        "ListDlq" => send!(list_dlq, pb::ListDlqRequest { limit: f.u32("limit") }),
        "RetryDlq" => send!(
            retry_dlq,
            pb::DlqRequest {
                id: f.s("id"),
                all: f.bool("all"),
            }
        ),
        "PurgeDlq" => send!(
            purge_dlq,
            pb::DlqRequest {
                id: f.s("id"),
                all: f.bool("all"),
            }
        ),
        "ListAlertHistory" => send!(
            list_alert_history,
            pb::ListAlertHistoryRequest {
                limit: f.u32("limit"),
                rule: f.s("rule"),
                channel: f.s("channel"),
                job: f.s("job"),
                status: f.s("status"),
            }
        ),
        "PreviewSchedule" => send!(
            preview_schedule,
            pb::PreviewScheduleRequest {
                job: f.s("job"),
                cron: f.s("cron"),
                timezone: f.s("timezone"),
                from: f.s("from"),
                count: f.u32("count"),
                dst_gap: f.s("dst_gap"),
                dst_repeat: f.s("dst_repeat"),
            }
        ),
        "ApplyJobs" => send!(
            apply_jobs,
            pb::ApplyJobsRequest {
                yaml: f.s("yaml"),
                source_name: f.s("source_name"),
            }
        ),
        "PutAlertChannel" => send!(
            put_alert_channel,
            pb::PutAlertChannelRequest {
                name: f.s("name"),
                spec_yaml: f.s("spec_yaml"),
            }
        ),
        "PutAlertRule" => send!(
            put_alert_rule,
            pb::PutAlertRuleRequest {
                spec_yaml: f.s("spec_yaml")
            }
        ),
        "GetJob" => send!(get_job, pb::GetJobRequest { name: f.s("name") }),
        "SetJobEnabled" => send!(
            set_job_enabled,
            pb::SetJobEnabledRequest {
                name: f.s("name"),
                enabled: f.bool("enabled"),
            }
        ),
        "DeleteJob" => send!(delete_job, pb::DeleteJobRequest { name: f.s("name") }),
        "PauseSchedule" => send!(pause_schedule, pb::ScheduleRequest { job: f.s("job") }),
        "CancelWorkflow" => send!(cancel_workflow, pb::WorkflowRequest { id: f.s("id") }),
        other => return Err(format!("the runner has no mapping for rpc {other:?}")),
    })
}

/// The `Hello` a case describes.
pub fn hello(v: &Value) -> Result<pb::Hello, String> {
    let mut f = Fields::new(v)?;
    let in_flight = f
        .list("in_flight")
        .into_iter()
        .map(|i| pb::InFlight {
            run_id: i.get("run_id").and_then(Value::as_str).unwrap_or_default().to_string(),
            attempt: i.get("attempt").and_then(Value::as_u64).unwrap_or(0) as u32,
        })
        .collect();
    let hello = pb::Hello {
        handlers: Default::default(),
        agent_id: f.s("agent_id"),
        name: f.s("name"),
        host: f.s("host"),
        labels: f.string_map("labels"),
        executors: f.strs("executors"),
        capacity: f.u32("capacity"),
        version: f.s("version"),
        in_flight,
    };
    f.finish()?;
    Ok(hello)
}

/// Opens `AgentService.Connect` with `first` as its first message; the reply
/// is `Ok` when the controller answers `Welcome`, else its status.
pub async fn agent_connect(channel: Channel, first: pb::AgentMessage) -> Reply {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx.send(first).await;
    let mut client = AgentServiceClient::new(channel);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.set_timeout(Duration::from_secs(30));
    let reply = match client.connect(request).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
                Ok(Ok(Some(pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Welcome(_)),
                }))) => Reply {
                    code: "Ok".into(),
                    message: "welcomed".into(),
                },
                Ok(Ok(other)) => Reply {
                    code: "Unknown".into(),
                    message: format!("first answer was not Welcome: {other:?}"),
                },
                Ok(Err(status)) => Reply::status(&status),
                Err(_) => Reply {
                    code: "DeadlineExceeded".into(),
                    message: "no answer within 15 s".into(),
                },
            }
        }
        Err(status) => Reply::status(&status),
    };
    drop(tx); // ends the stream: an accepted agent disconnects
    reply
}
