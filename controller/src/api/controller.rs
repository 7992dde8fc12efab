//! `ControllerService`: what `workerctl`, the web UI and applications call.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_stream::{Stream, StreamExt, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::convert::{agent_to_proto, job_to_proto, run_to_proto, stats_to_proto};
use crate::engine::{Engine, EnqueueRequest};
use crate::error::Error;
use crate::model::RunState;
use crate::time::{rfc3339, rfc3339_opt};

/// Default and largest page of list calls.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 10_000;

/// The client-facing gRPC service.
#[derive(Clone)]
pub struct ControllerApi {
    engine: Arc<Engine>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ControllerApi {
    /// A service over `engine`; streams end when `shutdown` turns true.
    pub fn new(engine: Arc<Engine>, shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        ControllerApi { engine, shutdown }
    }

    fn next_fire(&self, job: &crate::job::JobDef) -> Option<i64> {
        if !job.enabled {
            return None;
        }
        job.schedule
            .as_ref()?
            .next_after(Utc::now())
            .map(|t| t.timestamp_millis())
    }
}

fn limit(requested: u32) -> u32 {
    if requested == 0 {
        DEFAULT_LIMIT
    } else {
        requested.min(MAX_LIMIT)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerService for ControllerApi {
    async fn list_jobs(&self, _: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .engine
            .jobs()
            .iter()
            .map(|j| job_to_proto(j, self.next_fire(j)))
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::JobDetail>, Status> {
        let name = request.into_inner().name;
        let job = self
            .engine
            .jobs()
            .get(&name)
            .ok_or_else(|| Error::not_found(format!("job \"{name}\" is not defined")))?;
        let next = self.next_fire(job);
        let stats = self.engine.store().job_stats(&name).await?;
        Ok(Response::new(pb::JobDetail {
            job: Some(job_to_proto(job, next)),
            stats: Some(stats_to_proto(stats, next)),
        }))
    }

    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        let r = request.into_inner();
        let run = self
            .engine
            .enqueue(EnqueueRequest {
                job: r.job,
                payload: r.payload,
                priority: r.priority,
                trigger: r.trigger,
            })
            .await?;
        let view = self.engine.with_attempts(vec![run]).await?.remove(0);
        Ok(Response::new(pb::EnqueueResponse {
            run: Some(run_to_proto(view)),
        }))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        Ok(Response::new(run_to_proto(
            self.engine.run_view(&request.into_inner().id).await?,
        )))
    }

    async fn wait_run(&self, request: Request<pb::WaitRunRequest>) -> Result<Response<pb::Run>, Status> {
        let r = request.into_inner();
        let timeout = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        Ok(Response::new(run_to_proto(self.engine.wait_run(&r.id, timeout).await?)))
    }

    async fn list_runs(&self, request: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let r = request.into_inner();
        let state = if r.state.is_empty() {
            None
        } else {
            Some(r.state.parse::<RunState>().map_err(|e| Error::invalid("state", e))?)
        };
        let job = (!r.job.is_empty()).then_some(r.job.as_str());
        Ok(Response::new(self.runs_page(job, state, r.limit).await?))
    }

    async fn cancel_run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = request.into_inner().id;
        self.engine.cancel(&id, "cancelled by operator").await?;
        Ok(Response::new(run_to_proto(self.engine.run_view(&id).await?)))
    }

    async fn retry_run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let run = self.engine.retry(&request.into_inner().id).await?;
        Ok(Response::new(run_to_proto(self.engine.run_view(&run.id).await?)))
    }

    async fn queue_stats(&self, _: Request<pb::QueueStatsRequest>) -> Result<Response<pb::QueueStatsResponse>, Status> {
        let s = self.engine.queue_stats().await?;
        Ok(Response::new(pb::QueueStatsResponse {
            priorities: s
                .priorities
                .into_iter()
                .map(|(p, queued, wait)| pb::PriorityStats {
                    priority: p.to_string(),
                    queued,
                    oldest_wait_ms: wait,
                })
                .collect(),
            queued: s.queued,
            scheduled: s.scheduled,
            blocked: s.blocked,
            running: s.running,
            dead: s.dead,
        }))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = self
            .engine
            .queued_runs(limit(request.into_inner().limit) as usize)
            .await?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs.into_iter().map(run_to_proto).collect(),
        }))
    }

    async fn list_dlq(&self, request: Request<pb::ListDlqRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        Ok(Response::new(
            self.runs_page(None, Some(RunState::Dead), request.into_inner().limit)
                .await?,
        ))
    }

    async fn retry_dlq(&self, request: Request<pb::DlqRequest>) -> Result<Response<pb::DlqResponse>, Status> {
        let ids = self.dlq_selection(request.into_inner()).await?;
        let run_ids = self.engine.requeue_dead(&ids).await?;
        Ok(Response::new(pb::DlqResponse { run_ids }))
    }

    async fn purge_dlq(&self, request: Request<pb::DlqRequest>) -> Result<Response<pb::DlqResponse>, Status> {
        let ids = self.dlq_selection(request.into_inner()).await?;
        let run_ids = self.engine.purge_dead(&ids).await?;
        Ok(Response::new(pb::DlqResponse { run_ids }))
    }

    async fn list_agents(&self, _: Request<pb::ListAgentsRequest>) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let agents = self.engine.agents().await.into_iter().map(agent_to_proto).collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let cursors = self.engine.store().cursors().await?;
        let schedules = self
            .engine
            .jobs()
            .iter()
            .filter_map(|job| {
                let schedule = job.schedule.as_ref()?;
                let cursor = cursors.iter().find(|c| c.job == job.name);
                let next = self.next_fire(job);
                Some(pb::Schedule {
                    job: job.name.clone(),
                    cron: schedule.expr().to_string(),
                    timezone: schedule.tz().name().to_string(),
                    enabled: job.enabled,
                    next_fire: rfc3339_opt(next),
                    next_fire_local: next
                        .and_then(chrono::DateTime::<Utc>::from_timestamp_millis)
                        .map(|t| {
                            t.with_timezone(&schedule.tz())
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                        })
                        .unwrap_or_default(),
                    last_fired: cursor.map(|c| rfc3339(c.last_fired)).unwrap_or_default(),
                    missed: cursor.map(|c| c.missed).unwrap_or(0),
                    skipped: cursor.map(|c| c.skipped).unwrap_or(0),
                })
            })
            .collect();
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let job = request.into_inner().job;
        let mut shutdown = self.shutdown.clone();
        let stream = BroadcastStream::new(self.engine.subscribe())
            .filter_map(move |event| match event {
                Ok(e) if job.is_empty() || e.job == job => Some(Ok(e)),
                Ok(_) => None,
                Err(_) => Some(Err(Status::data_loss("event stream lagged; some events were dropped"))),
            })
            .take_while(|item| item.is_ok());
        let stream = futures::StreamExt::take_until(stream, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

impl ControllerApi {
    /// Runs, newest first, with their attempts.
    async fn runs_page(
        &self,
        job: Option<&str>,
        state: Option<RunState>,
        requested: u32,
    ) -> Result<pb::ListRunsResponse, Status> {
        let runs = self.engine.store().runs(job, state, limit(requested)).await?;
        let runs = self
            .engine
            .with_attempts(runs)
            .await?
            .into_iter()
            .map(run_to_proto)
            .collect();
        Ok(pb::ListRunsResponse { runs })
    }

    async fn dlq_selection(&self, request: pb::DlqRequest) -> Result<Vec<String>, Status> {
        match (request.id.is_empty(), request.all) {
            (false, false) => {
                let run = self
                    .engine
                    .store()
                    .run(&request.id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("run {} does not exist", request.id)))?;
                if run.state != RunState::Dead {
                    return Err(Error::precondition(format!(
                        "run {} is {}, not in the dead-letter queue",
                        run.id, run.state
                    ))
                    .into());
                }
                Ok(vec![run.id])
            }
            (true, true) => Ok(self.engine.store().dead_run_ids().await?),
            (false, true) => Err(Error::invalid("id", "give either a run id or all, not both").into()),
            (true, false) => Err(Error::invalid("id", "give a run id or all").into()),
        }
    }
}
