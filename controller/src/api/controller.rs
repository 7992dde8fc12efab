//! `ControllerService`: what `workerctl`, the web UI and applications call.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;

use super::convert::{agent_to_proto, job_to_proto, run_to_proto, stats_to_proto};
use super::limits::{check_id, check_yaml, off_thread, page, within_budget};
use super::{alerts, tokens};
use crate::alerting::AlertService;
use crate::config::{ConfigErrors, Source, parse_document_partial};
use crate::engine::{Engine, EnqueueOutcome, EnqueueRequest};
use crate::error::Error;
use crate::job::JobDef;
use crate::model::RunState;
use crate::scheduler::cron::{CronSchedule, DstPolicy, parse_tz};
use crate::store::{FireFailureRecord, ScheduleCursor};
use crate::time::{rfc3339, rfc3339_opt};

/// Days of reported metrics and spans `GetJob` answers with (today and the
/// six before it, UTC).
pub const JOB_DAYS: i64 = 7;

/// The client-facing gRPC service.
#[derive(Clone)]
pub struct ControllerApi {
    engine: Arc<Engine>,
    alerts: AlertService,
    shutdown: tokio::sync::watch::Receiver<bool>,
    started_at: i64,
    store_kind: &'static str,
    /// Tokens (`None`: the token calls are unimplemented).
    tokens: Option<Arc<crate::auth::Tokens>>,
    /// Live output of running attempts (shared with the agent service).
    live: Arc<crate::logs::LiveOutput>,
    /// Which token each agent id connected with (shared with the agent service).
    agent_owners: super::agent::AgentOwners,
    /// The store's URL (`SnapshotStore` snapshots it).
    db_url: Arc<str>,
    /// Who leads, for `ServerInfo` (fixed for a term).
    leadership: pb::Leadership,
}

impl ControllerApi {
    /// A service over `engine`; streams end when `shutdown` turns true.
    /// `db_url` tells which store is in use.
    pub fn new(
        engine: Arc<Engine>,
        alerts: AlertService,
        shutdown: tokio::sync::watch::Receiver<bool>,
        db_url: &str,
    ) -> Self {
        let store_kind = if db_url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        ControllerApi {
            live: crate::logs::LiveOutput::new(engine.clone()),
            engine,
            alerts,
            shutdown,
            started_at: crate::time::now_ms(),
            store_kind,
            tokens: None,
            agent_owners: Default::default(),
            db_url: Arc::from(db_url),
            leadership: pb::Leadership {
                role: "single".into(),
                ..Default::default()
            },
        }
    }

    /// Answers `ServerInfo` with `leadership` (a leader's term).
    pub fn with_leadership(mut self, leadership: pb::Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Reads agent ids' owners from `owners`, the map the agent service keeps
    /// (for `SendDigest`).
    pub fn with_agent_owners(mut self, owners: super::agent::AgentOwners) -> Self {
        self.agent_owners = owners;
        self
    }

    /// Serves the token calls from `tokens`.
    pub fn with_tokens(mut self, tokens: Arc<crate::auth::Tokens>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Serves `FollowRunOutput` from `live`, the hub the agent service feeds.
    pub fn with_live_output(mut self, live: Arc<crate::logs::LiveOutput>) -> Self {
        self.live = live;
        self
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

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerService for ControllerApi {
    async fn list_jobs(&self, _: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .engine
            .jobs()
            .entries()
            .map(|e| job_to_proto(e, self.next_fire(&e.def)))
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::JobDetail>, Status> {
        let name = request.into_inner().name;
        let jobs = self.engine.jobs();
        let entry = jobs
            .entry(&name)
            .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(&name))))?;
        let next = self.next_fire(&entry.def);
        let stats = self.engine.store().job_stats(&name).await?;
        let since = crate::api::convert::day_start(self.engine.now()) - (JOB_DAYS - 1) * 86_400_000;
        let days = self.engine.store().job_days(&name, since).await?;
        let cursor = self.engine.store().cursors().await?.into_iter().find(|c| c.job == name);
        let fires = cursor.map(|c| (c.missed, c.skipped)).unwrap_or_default();
        Ok(Response::new(pb::JobDetail {
            job: Some(job_to_proto(entry, next)),
            stats: Some(stats_to_proto(stats, next, fires)),
            days: days.into_iter().map(crate::api::convert::job_day_to_proto).collect(),
        }))
    }

    async fn enqueue(&self, request: Request<pb::EnqueueRequest>) -> Result<Response<pb::EnqueueResponse>, Status> {
        let outcome = self.engine.enqueue(enqueue_request(request.into_inner())).await?;
        Ok(Response::new(self.enqueue_response(outcome).await?))
    }

    async fn enqueue_batch(
        &self,
        request: Request<pb::EnqueueBatchRequest>,
    ) -> Result<Response<pb::EnqueueBatchResponse>, Status> {
        let requests: Vec<EnqueueRequest> = request.into_inner().runs.into_iter().map(enqueue_request).collect();
        let max = crate::limits::current().batch_runs;
        if requests.len() > max {
            return Err(Error::invalid(
                "runs",
                crate::limits::exceeds(format!("{} runs", requests.len()), "batch_runs", max),
            )
            .into());
        }
        let outcomes = self.engine.enqueue_batch(requests).await?;
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            results.push(self.enqueue_response(outcome).await?);
        }
        Ok(Response::new(pb::EnqueueBatchResponse { results }))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::WorkflowRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let id = request.into_inner().id;
        check_id("id", &id)?;
        let runs = self.engine.cancel_workflow(&id).await?;
        let mut runs: Vec<pb::Run> = self
            .engine
            .with_attempts(runs)
            .await?
            .into_iter()
            .map(run_to_proto)
            .collect();
        let truncated = within_budget(&mut runs);
        Ok(Response::new(pb::ListRunsResponse { runs, truncated }))
    }

    async fn pause_schedule(&self, request: Request<pb::ScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let job = request.into_inner().job;
        self.engine.set_schedule_paused(&job, true).await?;
        Ok(Response::new(self.schedule(&job).await?))
    }

    async fn resume_schedule(&self, request: Request<pb::ScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        let job = request.into_inner().job;
        self.engine.set_schedule_paused(&job, false).await?;
        Ok(Response::new(self.schedule(&job).await?))
    }

    async fn preview_schedule(
        &self,
        request: Request<pb::PreviewScheduleRequest>,
    ) -> Result<Response<pb::PreviewScheduleResponse>, Status> {
        Ok(Response::new(preview(&self.engine, request.into_inner())?))
    }

    async fn apply_jobs(
        &self,
        request: Request<pb::ApplyJobsRequest>,
    ) -> Result<Response<pb::ApplyJobsResponse>, Status> {
        let r = request.into_inner();
        let name = if r.source_name.is_empty() {
            "<request>".to_string()
        } else {
            crate::limits::echo(&r.source_name)
        };
        // Size and nesting first (linear); then the parser, off the serving threads.
        check_yaml("yaml", &name, &r.yaml)?;
        let current = self.engine.jobs();
        let entries = off_thread(move || parse_apply(&name, &r.yaml, &current)).await??;
        let digest_problems = crate::digest::check_jobs(entries.iter().map(|e| e.def.as_ref()), &self.alerts.config());
        if let Some((job, problem)) = digest_problems.into_iter().next() {
            return Err(Error::invalid(&format!("jobs.{job}.builtin"), problem).into());
        }
        let summary = self.engine.apply_definitions(entries).await?;
        Ok(Response::new(pb::ApplyJobsResponse {
            created: summary.created,
            updated: summary.updated,
            unchanged: summary.unchanged,
        }))
    }

    async fn export_jobs(&self, _: Request<pb::ExportJobsRequest>) -> Result<Response<pb::ExportJobsResponse>, Status> {
        Ok(Response::new(pb::ExportJobsResponse {
            yaml: self.engine.export_yaml(),
        }))
    }

    async fn set_job_enabled(&self, request: Request<pb::SetJobEnabledRequest>) -> Result<Response<pb::Job>, Status> {
        let r = request.into_inner();
        self.engine.set_job_enabled(&r.name, r.enabled).await?;
        let jobs = self.engine.jobs();
        let entry = jobs
            .entry(&r.name)
            .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(&r.name))))?;
        Ok(Response::new(job_to_proto(entry, self.next_fire(&entry.def))))
    }

    async fn list_alert_channels(
        &self,
        _request: Request<pb::ListAlertChannelsRequest>,
    ) -> Result<Response<pb::ListAlertChannelsResponse>, Status> {
        Ok(Response::new(alerts::list_channels(&self.alerts)))
    }

    async fn put_alert_channel(
        &self,
        request: Request<pb::PutAlertChannelRequest>,
    ) -> Result<Response<pb::AlertChannel>, Status> {
        Ok(Response::new(
            alerts::put_channel(&self.alerts, request.into_inner()).await?,
        ))
    }

    async fn delete_alert_channel(
        &self,
        request: Request<pb::DeleteAlertChannelRequest>,
    ) -> Result<Response<pb::DeleteAlertChannelResponse>, Status> {
        self.alerts.delete_channel(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteAlertChannelResponse {}))
    }

    async fn set_alert_channel_enabled(
        &self,
        request: Request<pb::SetAlertChannelEnabledRequest>,
    ) -> Result<Response<pb::AlertChannel>, Status> {
        Ok(Response::new(
            alerts::set_channel_enabled(&self.alerts, request.into_inner()).await?,
        ))
    }

    async fn list_alert_rules(
        &self,
        _request: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        Ok(Response::new(alerts::list_rules(&self.alerts)))
    }

    async fn put_alert_rule(
        &self,
        request: Request<pb::PutAlertRuleRequest>,
    ) -> Result<Response<pb::AlertRule>, Status> {
        Ok(Response::new(
            alerts::put_rule(&self.alerts, request.into_inner()).await?,
        ))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<pb::DeleteAlertRuleRequest>,
    ) -> Result<Response<pb::DeleteAlertRuleResponse>, Status> {
        self.alerts.delete_rule(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteAlertRuleResponse {}))
    }

    async fn list_alert_history(
        &self,
        request: Request<pb::ListAlertHistoryRequest>,
    ) -> Result<Response<pb::ListAlertHistoryResponse>, Status> {
        Ok(Response::new(
            alerts::history(&self.alerts, request.into_inner()).await?,
        ))
    }

    async fn test_alert_channel(
        &self,
        request: Request<pb::TestAlertChannelRequest>,
    ) -> Result<Response<pb::AlertHistoryEntry>, Status> {
        let record = self.alerts.test_channel(&request.into_inner().name).await?;
        Ok(Response::new(alerts::record_to_proto(record)))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        Ok(Response::new(
            tokens::create(self.tokens.as_ref(), request.into_inner()).await?,
        ))
    }

    async fn list_tokens(
        &self,
        _request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        Ok(Response::new(tokens::list(self.tokens.as_ref())?))
    }

    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        Ok(Response::new(
            tokens::revoke(self.tokens.as_ref(), request.into_inner()).await?,
        ))
    }

    async fn send_digest(
        &self,
        request: Request<pb::SendDigestRequest>,
    ) -> Result<Response<pb::SendDigestResponse>, Status> {
        let principal = crate::auth::Principal::of(&request);
        let reply = super::digest::send_digest(
            &self.engine,
            &self.alerts,
            &self.agent_owners,
            &principal,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(reply))
    }

    type SnapshotStoreStream = super::snapshot::SnapshotStream;

    async fn snapshot_store(
        &self,
        request: Request<pb::SnapshotStoreRequest>,
    ) -> Result<Response<Self::SnapshotStoreStream>, Status> {
        super::snapshot::snapshot_store(self.engine.store(), &self.db_url, request).await
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        self.engine.delete_job(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = request.into_inner().id;
        check_id("id", &id)?;
        Ok(Response::new(run_to_proto(self.engine.run_view(&id).await?)))
    }

    async fn wait_run(&self, request: Request<pb::WaitRunRequest>) -> Result<Response<pb::Run>, Status> {
        let r = request.into_inner();
        check_id("id", &r.id)?;
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
        if let Some(job) = job
            && job.len() > crate::limits::current().job_name_bytes
        {
            // No such job can exist; answer as for any undefined job.
            return Ok(Response::new(pb::ListRunsResponse::default()));
        }
        Ok(Response::new(self.runs_page(job, state, r.limit).await?))
    }

    async fn cancel_run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = request.into_inner().id;
        check_id("id", &id)?;
        self.engine.cancel(&id, "cancelled by operator").await?;
        Ok(Response::new(run_to_proto(self.engine.run_view(&id).await?)))
    }

    async fn retry_run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::Run>, Status> {
        let id = request.into_inner().id;
        check_id("id", &id)?;
        let run = self.engine.retry(&id).await?;
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
            lost_attempts: counter(&self.engine.counters().lost_attempts),
            rescued_runs: counter(&self.engine.counters().rescued_runs),
            stale_results: counter(&self.engine.counters().stale_results),
            duplicate_results: counter(&self.engine.counters().duplicate_results),
            deadline_expired: counter(&self.engine.counters().deadline_expired),
            failed_results: counter(&self.engine.counters().failed_results),
            failed_fires: counter(&self.engine.counters().failed_fires),
            failed_writes: counter(&self.engine.counters().failed_writes),
        }))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = self
            .engine
            .queued_runs(page(request.into_inner().limit)? as usize)
            .await?;
        let mut runs: Vec<pb::Run> = runs.into_iter().map(run_to_proto).collect();
        let truncated = within_budget(&mut runs);
        Ok(Response::new(pb::ListRunsResponse { runs, truncated }))
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

    async fn drain_agent(&self, request: Request<pb::DrainAgentRequest>) -> Result<Response<pb::Agent>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Error::invalid("id", "must not be empty").into());
        }
        let agent = self.engine.drain_agent(&id).await?;
        Ok(Response::new(agent_to_proto(agent)))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let cursors = self.engine.store().cursors().await?;
        let paused = self.engine.store().paused_schedules().await?;
        let failures = self.engine.store().fire_failures().await?;
        let lookup = ScheduleLookup::new(&cursors, &paused, &failures);
        let schedules = self
            .engine
            .jobs()
            .iter()
            .filter_map(|job| self.schedule_of(job, &lookup))
            .collect();
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn server_info(&self, _: Request<pb::ServerInfoRequest>) -> Result<Response<pb::ServerInfoResponse>, Status> {
        let (connected_agents, live_runs) = self.engine.census().await;
        Ok(Response::new(pb::ServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            rss_bytes: resident_set_bytes().unwrap_or(0),
            store: self.store_kind.to_string(),
            started_at: rfc3339(self.started_at),
            connected_agents,
            live_runs,
            live_output_bytes: self.live.buffered_bytes(),
            ignored_output_chunks: self.live.ignored_chunks(),
            leadership: Some(self.leadership.clone()),
        }))
    }

    type FollowRunOutputStream = super::logs::OutputStream;

    async fn follow_run_output(
        &self,
        request: Request<pb::FollowRunOutputRequest>,
    ) -> Result<Response<Self::FollowRunOutputStream>, Status> {
        super::logs::follow_run_output(&self.live, self.shutdown.clone(), request).await
    }

    async fn prune_runs(
        &self,
        request: Request<pb::PruneRunsRequest>,
    ) -> Result<Response<pb::PruneRunsResponse>, Status> {
        let r = request.into_inner();
        let job = (!r.job.is_empty()).then_some(r.job.as_str());
        // On demand: shorter pauses than the background loop's.
        let pause = Duration::from_millis(10);
        let jobs = self.engine.prune(job, r.dry_run, pause).await?;
        Ok(Response::new(pb::PruneRunsResponse {
            dry_run: r.dry_run,
            jobs: jobs
                .into_iter()
                .map(|j| pb::JobPruned {
                    job: j.job,
                    succeeded: j.counts.succeeded,
                    dead: j.counts.dead,
                    cancelled: j.counts.cancelled,
                    total: j.counts.total(),
                })
                .collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let principal = crate::auth::Principal::of(&request);
        let guard = principal.open_stream()?;
        let (filter, start) = super::events::parse_request(request.get_ref())?;
        let mut shutdown = self.shutdown.clone();
        // Resumable: a lagging watcher reads the store (see `api/events.rs`).
        let events = super::events::watch(self.engine.store().clone(), filter, start).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events);
        let stream = futures::StreamExt::take_until(stream, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        // A revoked (or expired) token's watch ends with that status; the
        // guard counts the stream against its token while it is open.
        let ended: Pin<Box<dyn std::future::Future<Output = Status> + Send>> =
            Box::pin(async move { principal.ended().await });
        let state = (Box::pin(stream), ended, guard, false);
        let stream = futures::stream::unfold(state, |(mut events, mut ended, guard, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                item = events.next() => item.map(|item| (item, (events, ended, guard, false))),
                status = &mut ended => Some((Err(status), (events, ended, guard, true))),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The stored schedule state by job name: a listing of 10,000 schedules looks
/// each job up in constant time.
struct ScheduleLookup<'a> {
    cursors: std::collections::HashMap<&'a str, &'a ScheduleCursor>,
    paused: std::collections::HashSet<&'a str>,
    failures: std::collections::HashMap<&'a str, &'a FireFailureRecord>,
}

impl<'a> ScheduleLookup<'a> {
    fn new(cursors: &'a [ScheduleCursor], paused: &'a [String], failures: &'a [FireFailureRecord]) -> Self {
        ScheduleLookup {
            cursors: cursors.iter().map(|c| (c.job.as_str(), c)).collect(),
            paused: paused.iter().map(String::as_str).collect(),
            failures: failures.iter().map(|f| (f.job.as_str(), f)).collect(),
        }
    }
}

impl ControllerApi {
    /// The schedule of one job.
    async fn schedule(&self, job: &str) -> Result<pb::Schedule, Status> {
        let cursors = self.engine.store().cursors().await?;
        let paused = self.engine.store().paused_schedules().await?;
        let failures = self.engine.store().fire_failures().await?;
        let jobs = self.engine.jobs();
        let def = jobs
            .get(job)
            .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(job))))?;
        self.schedule_of(def, &ScheduleLookup::new(&cursors, &paused, &failures))
            .ok_or_else(|| Error::precondition(format!("job \"{job}\" has no schedule")).into())
    }

    fn schedule_of(&self, job: &JobDef, lookup: &ScheduleLookup<'_>) -> Option<pb::Schedule> {
        let schedule = job.schedule.as_ref()?;
        let cursor = lookup.cursors.get(job.name.as_str()).copied();
        let failure = lookup.failures.get(job.name.as_str()).copied();
        let is_paused = lookup.paused.contains(job.name.as_str());
        let next = if is_paused { None } else { self.next_fire(job) };
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
            paused: is_paused,
            dst_gap: schedule.policy().gap.to_string(),
            dst_repeat: schedule.policy().repeat.to_string(),
            failing: failure.map_or(0, |f| f.failing),
            failed: failure.map_or(0, |f| f.failed_total),
            last_error: failure.map(|f| f.last_error.clone()).unwrap_or_default(),
            last_failed_at: failure.map(|f| rfc3339(f.failed_at)).unwrap_or_default(),
        })
    }

    async fn enqueue_response(&self, outcome: EnqueueOutcome) -> Result<pb::EnqueueResponse, Status> {
        let (view, upstream) = match &outcome.created_dependencies {
            Some(dependencies) => (
                Engine::fresh_views(vec![outcome.run], dependencies).remove(0),
                Engine::fresh_views(outcome.upstream, dependencies),
            ),
            None => (
                self.engine.with_attempts(vec![outcome.run]).await?.remove(0),
                self.engine.with_attempts(outcome.upstream).await?,
            ),
        };
        let upstream = upstream.into_iter().map(run_to_proto).collect();
        Ok(pb::EnqueueResponse {
            run: Some(run_to_proto(view)),
            duplicate: outcome.duplicate,
            upstream,
        })
    }

    /// Runs, newest first, with their attempts.
    async fn runs_page(
        &self,
        job: Option<&str>,
        state: Option<RunState>,
        requested: u32,
    ) -> Result<pb::ListRunsResponse, Status> {
        let runs = self.engine.store().runs(job, state, page(requested)?).await?;
        let mut runs: Vec<pb::Run> = self
            .engine
            .with_attempts(runs)
            .await?
            .into_iter()
            .map(run_to_proto)
            .collect();
        let truncated = within_budget(&mut runs);
        Ok(pb::ListRunsResponse { runs, truncated })
    }

    async fn dlq_selection(&self, request: pb::DlqRequest) -> Result<Vec<String>, Status> {
        match (request.id.is_empty(), request.all) {
            (false, false) => {
                check_id("id", &request.id)?;
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

/// Parses and checks an `apply` document against the jobs in force (CPU-heavy:
/// called through `off_thread`).
fn parse_apply(name: &str, yaml: &str, current: &crate::config::JobSet) -> Result<Vec<crate::config::JobEntry>, Error> {
    let lookup = crate::config::env::lookup;
    let path = std::path::Path::new(name);
    let (entries, mut errors) = parse_document_partial(path, yaml, &lookup, Source::Api);
    let max = crate::limits::current().definitions_per_apply;
    if entries.len() > max {
        return Err(Error::invalid(
            "jobs",
            crate::limits::exceeds(
                format!("{} job definitions", entries.len()),
                "definitions_per_apply",
                max,
            ),
        ));
    }
    let merged = current.with_changes(entries.iter().cloned(), &[]);
    let applied: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.def.name.as_str()).collect();
    let rewired = current.rewired(&entries);
    let problems = merged
        .dependency_errors()
        .into_iter()
        .chain(merged.new_limit_errors(current, &rewired));
    for (job, message) in problems {
        if applied.contains(job.as_str()) {
            let line = crate::config::lines::line_of(yaml, &["jobs", &job, "depends_on"]);
            let path = format!("jobs.{job}.depends_on");
            errors.push(crate::config::ConfigError {
                file: name.into(),
                line,
                path,
                message,
            });
        }
    }
    if !errors.is_empty() {
        return Err(Error::invalid("yaml", ConfigErrors(errors).to_string().trim_end()));
    }
    Ok(entries)
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

fn enqueue_request(r: pb::EnqueueRequest) -> EnqueueRequest {
    EnqueueRequest {
        job: r.job,
        payload: r.payload,
        priority: r.priority,
        trigger: r.trigger,
        depends_on: r.depends_on,
        idempotency_key: r.idempotency_key,
        delay_ms: r.delay_ms,
        not_before: r.not_before,
        reference: r.r#ref,
    }
}

/// The next fires of a job's schedule or of a cron expression.
fn preview(engine: &Engine, r: pb::PreviewScheduleRequest) -> Result<pb::PreviewScheduleResponse, Error> {
    let schedule = match (r.job.is_empty(), r.cron.is_empty()) {
        (false, true) => {
            let jobs = engine.jobs();
            let job = jobs
                .get(&r.job)
                .ok_or_else(|| Error::not_found(format!("job \"{}\" is not defined", crate::limits::echo(&r.job))))?;
            job.schedule.clone().ok_or_else(|| {
                Error::precondition(format!("job \"{}\" has no schedule", crate::limits::echo(&r.job)))
            })?
        }
        (true, false) => {
            let tz = if r.timezone.is_empty() {
                chrono_tz::Tz::UTC
            } else {
                parse_tz(&r.timezone).map_err(|e| Error::invalid("timezone", e))?
            };
            let mut policy = DstPolicy::default();
            if !r.dst_gap.is_empty() {
                policy.gap = r.dst_gap.parse().map_err(|e| Error::invalid("dst_gap", e))?;
            }
            if !r.dst_repeat.is_empty() {
                policy.repeat = r.dst_repeat.parse().map_err(|e| Error::invalid("dst_repeat", e))?;
            }
            CronSchedule::with_policy(&r.cron, tz, policy).map_err(|e| Error::invalid("cron", e))?
        }
        _ => return Err(Error::invalid("job", "give either a job name or a cron expression")),
    };
    let from = if r.from.is_empty() {
        Utc::now()
    } else {
        chrono::DateTime::parse_from_rfc3339(&r.from)
            .map_err(|e| {
                Error::invalid(
                    "from",
                    format!("\"{}\" is not an RFC 3339 timestamp: {e}", crate::limits::echo(&r.from)),
                )
            })?
            .with_timezone(&Utc)
    };
    let max = crate::limits::current().preview_fires;
    let count = match r.count {
        0 => 10.min(max),
        n if n > max => {
            return Err(Error::invalid("count", crate::limits::exceeds(n, "preview_fires", max)));
        }
        n => n,
    };
    let mut fires = Vec::new();
    let mut cursor = from;
    while fires.len() < count as usize {
        let Some(next) = schedule.next_after(cursor) else { break };
        fires.push(pb::Fire {
            utc: next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            local: next
                .with_timezone(&schedule.tz())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        });
        cursor = next;
    }
    Ok(pb::PreviewScheduleResponse {
        fires,
        timezone: schedule.tz().name().to_string(),
    })
}

/// Resident set size of this process, from /proc (Linux).
fn resident_set_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
