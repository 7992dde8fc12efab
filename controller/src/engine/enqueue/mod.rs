//! Creating runs: single and batch enqueues, schedule fires, idempotency keys,
//! delayed runs, run-level dependencies and job-level chains (workflows).
//!
//! Every request is turned into an [`InsertPlan`] (all runs it creates, their
//! dependency edges and keys) that is validated whole and committed in one
//! transaction: a bad entry anywhere rejects everything. This file submits
//! requests and commits them; [`validate`] checks them and builds their runs.

mod validate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Engine;
use super::state::LiveRun;
use crate::config::JobSet;
use crate::error::{Error, Result};
use crate::job::JobDef;
use crate::model::{Overlap, RunState, Trigger};
use crate::store::{InsertPlan, NewRun, RunRecord};
pub use validate::validate_payload;
use validate::{DepTarget, Item, find_cycle, new_id, undefined, upstream_chain, validate_request};
pub(super) use validate::{new_run, record_of_new};

/// Most plain enqueues committed in one round (the commit loop's batch; the
/// size of a client's batch enqueue is the `batch_runs` limit).
pub const MAX_BATCH: usize = 1000;

/// A request to create one run of a defined job.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// Job name.
    pub job: String,
    /// Payload, JSON text ("" = null).
    pub payload: String,
    /// Priority name ("" = the job's).
    pub priority: String,
    /// Trigger name: "manual" or "api" ("" = api).
    pub trigger: String,
    /// Run ids, or refs of other items of the same batch, that must succeed first.
    pub depends_on: Vec<String>,
    /// Idempotency key ("" = none).
    pub idempotency_key: String,
    /// Delay before the run may start, in ms.
    pub delay_ms: u64,
    /// RFC 3339 instant before which the run may not start ("" = none).
    pub not_before: String,
    /// Name of this item inside a batch ("" = none).
    pub reference: String,
}

/// What became of one schedule fire (see [`Engine::fire_many`]).
#[derive(Debug)]
pub struct FireOutcome {
    /// The job.
    pub job: Arc<JobDef>,
    /// The fire's nominal instant (Unix ms).
    pub instant: i64,
    /// `Ok(true)`: its run was created; `Ok(false)`: skipped (overlap) or
    /// created before; `Err`: it could not be created (nothing was written).
    pub result: Result<bool>,
}

/// What an enqueue created (or found).
#[derive(Debug, Clone)]
pub struct EnqueueOutcome {
    /// The run asked for.
    pub run: RunRecord,
    /// The run already existed for the idempotency key.
    pub duplicate: bool,
    /// Upstream runs created for the job's chain, upstream first.
    pub upstream: Vec<RunRecord>,
    /// For runs this call created: the (run, upstream run) dependencies of
    /// `run` and `upstream`, as written. Such runs have no attempts yet, so
    /// answering needs no store read (see [`super::Engine::fresh_views`]);
    /// `None` for a duplicate, whose history must be read.
    pub created_dependencies: Option<Vec<(String, String)>>,
}

/// A plain enqueue (no key, no dependencies, no upstream jobs) waiting for the
/// next commit round (see `Engine::commit_loop`).
pub struct PendingEnqueue {
    item: Item,
    reply: tokio::sync::oneshot::Sender<Result<EnqueueOutcome>>,
}

impl PendingEnqueue {
    /// Its run, created at `now`.
    pub(super) fn new_run(&self, now: i64) -> NewRun {
        self.item.new_run(&new_id(), now, None, None)
    }

    /// Fails it (the round's commit failed; nothing of it was kept).
    pub(super) fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// The answer to an enqueue handed to a commit round.
pub type EnqueueAnswer = tokio::sync::oneshot::Receiver<Result<EnqueueOutcome>>;

/// Where a validated enqueue goes.
enum Submitted {
    /// To the next commit round; the answer comes on this channel.
    Queued(EnqueueAnswer),
    /// Committed by the caller under the core lock (keys, dependencies, chains).
    Direct(Box<Item>),
}

/// The error of an enqueue that arrives while the controller stops.
fn shutting_down() -> Error {
    Error {
        code: crate::error::ErrorCode::Unavailable,
        message: "the controller is shutting down".into(),
    }
}

/// Where an item's run comes from.
enum Resolved {
    /// An existing run (idempotency key hit).
    Existing(Box<RunRecord>),
    /// A new run with this id.
    New(String),
}

impl Engine {
    /// Validates and commits one run (and its job's upstream chain).
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<EnqueueOutcome> {
        match self.submit_enqueue(request)? {
            Submitted::Queued(answer) => answer.await.unwrap_or_else(|_| Err(shutting_down())),
            Submitted::Direct(item) => {
                let mut core = self.lock_core().await;
                let outcomes = self.commit_items(&mut core, vec![*item], false).await?;
                Ok(outcomes.expect("only schedule fires can collide").remove(0))
            }
        }
    }

    /// Validates a plain enqueue (no key, no dependencies, no upstream jobs)
    /// and hands it to the next commit round (see [`super::round`]) without
    /// waiting: the answer arrives once that round committed (or failed).
    /// Step-by-step tests submit enqueues this way, then run the round.
    pub fn enqueue_in_round(&self, request: EnqueueRequest) -> Result<EnqueueAnswer> {
        match self.submit_enqueue(request)? {
            Submitted::Queued(answer) => Ok(answer),
            Submitted::Direct(_) => Err(Error::invalid(
                "request",
                "only plain enqueues (no key, no dependencies, no upstream jobs) go through a round",
            )),
        }
    }

    fn submit_enqueue(&self, request: EnqueueRequest) -> Result<Submitted> {
        let jobs = self.jobs();
        let item = validate_request(&jobs, request, self.now(), &|name| name.to_string())?;
        let simple = item.depends_on.is_empty() && item.key.is_none() && item.job.depends_on.is_empty();
        match self.enqueue_queue.get() {
            Some(queue) if simple => {
                // Group commit: independent runs enqueued at about the same time share
                // one transaction with dispatches and results (see `commit_loop`).
                let (reply, answer) = tokio::sync::oneshot::channel();
                queue
                    .send(PendingEnqueue { item, reply })
                    .map_err(|_| shutting_down())?;
                Ok(Submitted::Queued(answer))
            }
            _ => Ok(Submitted::Direct(Box::new(item))),
        }
    }

    /// Indexes a new run in memory: live, and in the ready queue, the timers, or
    /// (blocked) behind the `upstreams` it waits for. Runs of a commit round are
    /// indexed before their commit so the same round may dispatch them;
    /// [`Engine::unindex_plain`] takes such a run back if the commit fails.
    pub(super) fn index_new_run(core: &mut super::state::Core, run: &NewRun, upstreams: BTreeSet<String>) {
        for upstream in &upstreams {
            core.dependents
                .entry(upstream.clone())
                .or_default()
                .push(run.id.clone());
        }
        let job = core.job_name(&run.job);
        let mut live = LiveRun::new(
            run.id.as_str().into(),
            job,
            run.state,
            run.priority,
            0,
            run.max_attempts,
            core.payload_to_keep(&run.payload),
            run.not_before.unwrap_or(run.created_at),
        );
        if !upstreams.is_empty() {
            live.extra_mut().waiting_on = upstreams;
        }
        core.insert_live(live);
        match run.state {
            RunState::Queued => core.push_ready(&run.id, run.created_at),
            RunState::Scheduled => {
                core.timers
                    .insert((run.not_before.unwrap_or(run.created_at), run.id.clone()));
            }
            _ => {}
        }
    }

    /// The plain enqueues whose job is still defined in `jobs`; the others
    /// (deleted since they were accepted) are refused. Called with the core
    /// lock held (see [`Engine::delete_job`]).
    pub(super) fn drop_undefined(pending: Vec<PendingEnqueue>, jobs: &JobSet) -> Vec<PendingEnqueue> {
        let (defined, deleted): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| jobs.get(&p.item.job.name).is_some());
        for p in deleted {
            let error = undefined(&p.item.job.name);
            p.fail(error);
        }
        defined
    }

    /// Forgets a run indexed by [`Engine::index_new_run`] whose commit failed.
    pub(super) fn unindex_plain(core: &mut super::state::Core, run_id: &str) {
        core.unindex(run_id);
        core.remove_live(run_id);
    }

    /// A plain run was committed: tells the watchers and answers its enqueue.
    pub(super) fn plain_committed(&self, pending: PendingEnqueue, run: NewRun) {
        self.emit(&run.id, &run.job, run.state, 0, run.created_at, run.reason.as_deref());
        let _ = pending.reply.send(Ok(EnqueueOutcome {
            run: record_of_new(run),
            duplicate: false,
            upstream: Vec::new(),
            created_dependencies: Some(Vec::new()),
        }));
    }

    /// Validates and commits many runs at once; they may depend on each other by
    /// `reference`. Nothing is created if any entry is invalid.
    pub async fn enqueue_batch(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<EnqueueOutcome>> {
        if requests.is_empty() {
            return Err(Error::invalid("runs", "the batch is empty"));
        }
        let max = crate::limits::current().batch_runs;
        if requests.len() > max {
            return Err(Error::invalid(
                "runs",
                crate::limits::exceeds(format!("{} runs", requests.len()), "batch_runs", max),
            ));
        }
        self.enqueue_many(requests, true).await
    }

    /// Creates the run of a schedule fire at nominal instant `instant` (Unix ms),
    /// honouring the overlap policy. Returns `Ok(None)` when the fire was skipped
    /// or already exists: the same (job, instant) never creates two runs.
    pub async fn fire(&self, job: &Arc<JobDef>, instant: i64, delay_ms: i64) -> Result<Option<RunRecord>> {
        // A fire that cannot be created must not cancel anything first
        // (`overlap: replace`): check its job and chain before the overlap.
        let jobs = self.jobs();
        if jobs.get(&job.name).is_none() {
            return Err(undefined(&job.name));
        }
        upstream_chain(&jobs, job)?;
        if !self.allow_overlap(job, instant).await? {
            return Ok(None);
        }
        let now = self.now();
        let item = Item {
            job: job.clone(),
            priority: job.priority,
            payload: "null".into(),
            trigger: Trigger::Schedule,
            depends_on: Vec::new(),
            key: None,
            not_before: (delay_ms > 0).then_some(now + delay_ms),
            reference: String::new(),
            scheduled_for: Some(instant),
            reason: None,
        };
        let mut core = self.lock_core().await;
        Ok(self
            .commit_items(&mut core, vec![item], false)
            .await?
            .map(|mut outcomes| outcomes.remove(0).run))
    }

    /// Enqueues on the controller's own behalf (e.g. `runs retry`), with a trigger
    /// clients cannot request and the reason recorded on the run.
    pub(super) async fn enqueue_as(
        &self,
        request: EnqueueRequest,
        trigger: Trigger,
        reason: String,
    ) -> Result<EnqueueOutcome> {
        let jobs = self.jobs();
        let mut item = validate_request(&jobs, request, self.now(), &|name| name.to_string())?;
        item.trigger = trigger;
        item.reason = Some(reason);
        let mut core = self.lock_core().await;
        let outcomes = self.commit_items(&mut core, vec![item], false).await?;
        Ok(outcomes.expect("only schedule fires can collide").remove(0))
    }

    /// Creates the runs of many schedule fires at once: one transaction for
    /// all fires of jobs with `overlap: allow` when none of them exists yet.
    /// Jobs with another overlap policy go through [`Self::fire`] one by one.
    /// When the shared transaction cannot be committed for its content (a
    /// fire that exists already, a job whose chain cannot be enqueued, a
    /// poisoned row), the fires are split in halves and tried again, down to
    /// single fires: one job whose fire fails, fails alone, at the cost of a
    /// few more transactions. Returns each fire's outcome, in order.
    pub async fn fire_many(&self, fires: &[(Arc<JobDef>, i64, i64)]) -> Vec<FireOutcome> {
        let now = self.now();
        let mut results: Vec<Option<Result<bool>>> = fires.iter().map(|_| None).collect();
        let mut simple = Vec::new();
        for (index, (job, instant, delay)) in fires.iter().enumerate() {
            if job.overlap == Overlap::Allow {
                simple.push(index);
            } else {
                results[index] = Some(self.fire(job, *instant, *delay).await.map(|r| r.is_some()));
            }
        }
        let item = |index: usize| {
            let (job, instant, delay) = &fires[index];
            Item {
                job: job.clone(),
                priority: job.priority,
                payload: "null".into(),
                trigger: Trigger::Schedule,
                depends_on: Vec::new(),
                key: None,
                not_before: (*delay > 0).then_some(now + delay),
                reference: String::new(),
                scheduled_for: Some(*instant),
                reason: None,
            }
        };
        let mut groups = if simple.is_empty() { Vec::new() } else { vec![simple] };
        while let Some(group) = groups.pop() {
            let items: Vec<Item> = group.iter().map(|i| item(*i)).collect();
            let committed = {
                let mut core = self.lock_core().await;
                self.commit_items(&mut core, items, false).await
            };
            let everyone = |results: &mut Vec<Option<Result<bool>>>, result: Result<bool>| {
                for i in &group {
                    results[*i] = Some(result.clone());
                }
            };
            match committed {
                Ok(Some(_)) => everyone(&mut results, Ok(true)),
                // One fire, created before (e.g. just before a restart).
                Ok(None) if group.len() == 1 => everyone(&mut results, Ok(false)),
                Err(e) if group.len() == 1 => everyone(&mut results, Err(e)),
                Err(e) if e.code == crate::error::ErrorCode::Unavailable || self.failure().is_some() => {
                    everyone(&mut results, Err(e))
                }
                // Some fire of the group exists already, or one cannot be
                // created: the others still must happen, each exactly once.
                Ok(None) | Err(_) => {
                    let (left, right) = group.split_at(group.len() / 2);
                    groups.push(right.to_vec());
                    groups.push(left.to_vec());
                }
            }
        }
        fires
            .iter()
            .zip(results)
            .map(|((job, instant, _), result)| FireOutcome {
                job: job.clone(),
                instant: *instant,
                result: result.expect("every fire has an outcome"),
            })
            .collect()
    }

    async fn enqueue_many(&self, requests: Vec<EnqueueRequest>, batch: bool) -> Result<Vec<EnqueueOutcome>> {
        let jobs = self.jobs();
        let now = self.now();
        let mut items = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let field = |name: &str| {
                if batch {
                    format!("runs[{index}].{name}")
                } else {
                    name.to_string()
                }
            };
            items.push(validate_request(&jobs, request, now, &field)?);
        }
        let mut core = self.lock_core().await;
        let outcomes = self.commit_items(&mut core, items, batch).await?;
        Ok(outcomes.expect("only schedule fires can collide"))
    }

    /// Plans, commits and indexes the runs of validated items. Called with the
    /// core lock held, so idempotency checks and inserts cannot interleave.
    /// `Ok(None)`: a schedule fire that already exists for its instant.
    async fn commit_items(
        &self,
        core: &mut super::state::Core,
        items: Vec<Item>,
        batch: bool,
    ) -> Result<Option<Vec<EnqueueOutcome>>> {
        let field = |index: usize, name: &str| {
            if batch {
                format!("runs[{index}].{name}")
            } else {
                name.to_string()
            }
        };
        let jobs = self.jobs();
        let now = self.now();
        // Under the core lock, as `delete_job` checks for unfinished runs: a
        // job deleted since the request was validated gets no run.
        if let Some(item) = items.iter().find(|item| jobs.get(&item.job.name).is_none()) {
            return Err(undefined(&item.job.name));
        }

        // References inside the batch.
        let mut refs: HashMap<&str, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            if !item.reference.is_empty() && refs.insert(item.reference.as_str(), index).is_some() {
                return Err(Error::invalid(
                    &field(index, "ref"),
                    format!("\"{}\" is used twice in this batch", item.reference),
                ));
            }
        }

        // Idempotency keys: an existing unfinished (or recent) run is returned as is.
        let mut resolved = Vec::with_capacity(items.len());
        let mut keys_seen: HashMap<&str, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let mut existing = None;
            if let Some(key) = &item.key {
                if let Some(first) = keys_seen.get(key.as_str()) {
                    return Err(Error::invalid(
                        &field(index, "idempotency_key"),
                        format!("\"{key}\" is also the key of runs[{first}]"),
                    ));
                }
                keys_seen.insert(key.as_str(), index);
                // The window runs from the end of the run (docs: "for the
                // window after it finished"), not from the key's creation.
                if let Some((run_id, recorded_at)) = self.store.idempotency_key(key).await?
                    && let Some(run) = self.store.run(&run_id).await?
                    && (!run.state.is_terminal()
                        || now - run.finished_at.unwrap_or(recorded_at)
                            < self.settings.idempotency_window.as_millis() as i64)
                {
                    existing = Some(run);
                }
            }
            resolved.push(match existing {
                Some(run) => Resolved::Existing(Box::new(run)),
                None => Resolved::New(new_id()),
            });
        }

        // Dependencies: refs of this batch, or existing runs.
        let mut edges: Vec<(usize, Vec<DepTarget>)> = Vec::new();
        let mut upstream_states: HashMap<String, RunRecord> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            if matches!(resolved[index], Resolved::Existing(_)) {
                continue;
            }
            let mut targets = Vec::new();
            for dep in &item.depends_on {
                if let Some(&target) = refs.get(dep.as_str()) {
                    if target == index {
                        return Err(Error::invalid(
                            &field(index, "depends_on"),
                            "a run cannot depend on itself",
                        ));
                    }
                    targets.push(DepTarget::Item(target));
                } else if let Some(run) = self.store.run(dep).await? {
                    if run.state == RunState::Cancelled {
                        return Err(Error::invalid(
                            &field(index, "depends_on"),
                            format!("run {dep} is cancelled and will never succeed"),
                        ));
                    }
                    upstream_states.insert(dep.clone(), run);
                    targets.push(DepTarget::Run(dep.clone()));
                } else {
                    let what = if batch {
                        "a run id or the ref of another entry of this batch"
                    } else {
                        "a run id"
                    };
                    return Err(Error::invalid(
                        &field(index, "depends_on"),
                        format!("unknown run \"{dep}\" (expected {what})"),
                    ));
                }
            }
            edges.push((index, targets));
        }
        if let Some(cycle) = find_cycle(items.len(), &edges) {
            let names: Vec<String> = cycle
                .iter()
                .map(|i| {
                    if items[*i].reference.is_empty() {
                        format!("runs[{i}]")
                    } else {
                        items[*i].reference.clone()
                    }
                })
                .collect();
            return Err(Error::invalid(
                "runs",
                format!("dependency cycle: {}", names.join(" -> ")),
            ));
        }

        // Build the plan: each new item with its job's upstream chain.
        let mut plan = InsertPlan::default();
        let mut upstream_of_item: Vec<Vec<usize>> = vec![Vec::new(); items.len()]; // indices into plan.runs
        let mut plan_index_of_item: Vec<Option<usize>> = vec![None; items.len()];
        for (index, item) in items.iter().enumerate() {
            let Resolved::New(id) = &resolved[index] else { continue };
            let workflow_id = (!item.job.depends_on.is_empty()).then(new_id);
            let chain = upstream_chain(&jobs, &item.job)?;
            let mut run_of_job: BTreeMap<String, String> = BTreeMap::new();
            for upstream_job in &chain {
                let run_id = new_id();
                run_of_job.insert(upstream_job.name.clone(), run_id.clone());
                for dep_job in &upstream_job.depends_on {
                    plan.dependencies.push((run_id.clone(), run_of_job[dep_job].clone()));
                }
                upstream_of_item[index].push(plan.runs.len());
                plan.runs.push(new_run(
                    &run_id,
                    upstream_job,
                    item.priority,
                    "null".into(),
                    Trigger::Dependency,
                    now,
                    None,
                    None,
                    workflow_id.clone(),
                    None,
                ));
            }
            for dep_job in &item.job.depends_on {
                plan.dependencies.push((id.clone(), run_of_job[dep_job].clone()));
            }
            plan_index_of_item[index] = Some(plan.runs.len());
            plan.runs.push(item.new_run(id, now, workflow_id, item.key.clone()));
        }
        for (index, targets) in &edges {
            let Resolved::New(id) = &resolved[*index] else { continue };
            for target in targets {
                let upstream = match target {
                    DepTarget::Item(t) => match &resolved[*t] {
                        Resolved::Existing(run) => {
                            upstream_states.insert(run.id.clone(), (**run).clone());
                            run.id.clone()
                        }
                        Resolved::New(uid) => uid.clone(),
                    },
                    DepTarget::Run(run_id) => run_id.clone(),
                };
                if !plan.dependencies.iter().any(|(r, u)| r == id && *u == upstream) {
                    plan.dependencies.push((id.clone(), upstream));
                }
            }
        }
        for run in &plan.runs {
            let deps = plan.dependencies.iter().filter(|(r, _)| *r == run.id).count();
            let max = crate::limits::current().dependencies;
            if deps > max {
                return Err(Error::invalid(
                    "depends_on",
                    crate::limits::exceeds(format!("{deps} dependencies"), "dependencies", max),
                ));
            }
        }

        // Initial states: blocked while an upstream has not succeeded.
        let mut waiting: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (run_id, upstream) in &plan.dependencies {
            let done = upstream_states
                .get(upstream)
                .is_some_and(|u| u.state == RunState::Succeeded);
            if !done {
                waiting.entry(run_id.clone()).or_default().insert(upstream.clone());
            }
        }
        for run in &mut plan.runs {
            if let Some(upstreams) = waiting.get(&run.id) {
                run.state = RunState::Blocked;
                run.ready_at = None;
                let dead: Vec<&String> = upstreams
                    .iter()
                    .filter(|u| upstream_states.get(*u).is_some_and(|r| r.state == RunState::Dead))
                    .collect();
                run.reason = Some(match dead.first() {
                    Some(d) => format!("upstream run {d} is dead; waiting for it to be retried and succeed"),
                    None => format!("waiting for {} upstream run(s)", upstreams.len()),
                });
            }
        }

        for run in &plan.runs {
            super::transitions::check_initial(&run.id, run.state)?;
        }
        if !self.write_insert(&plan).await? {
            return Ok(None);
        }

        // Index in memory, then tell the world.
        for run in &plan.runs {
            Engine::index_new_run(core, run, waiting.remove(&run.id).unwrap_or_default());
            self.emit(&run.id, &run.job, run.state, 0, run.created_at, run.reason.as_deref());
        }
        self.wake_dispatch.notify_one();
        self.wake_timers.notify_one();

        let records: Vec<RunRecord> = plan.runs.into_iter().map(record_of_new).collect();
        let mut dependencies_of: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for (run_id, upstream) in &plan.dependencies {
            dependencies_of
                .entry(run_id.as_str())
                .or_default()
                .push((run_id.clone(), upstream.clone()));
        }
        let mut outcomes = Vec::with_capacity(items.len());
        for (index, resolved) in resolved.into_iter().enumerate() {
            outcomes.push(match resolved {
                Resolved::Existing(run) => EnqueueOutcome {
                    run: *run,
                    duplicate: true,
                    upstream: Vec::new(),
                    created_dependencies: None,
                },
                Resolved::New(_) => {
                    let run = records[plan_index_of_item[index].expect("new item has a run")].clone();
                    let upstream: Vec<RunRecord> =
                        upstream_of_item[index].iter().map(|i| records[*i].clone()).collect();
                    let created_dependencies = std::iter::once(&run)
                        .chain(&upstream)
                        .flat_map(|r| dependencies_of.get(r.id.as_str()).into_iter().flatten().cloned())
                        .collect();
                    EnqueueOutcome {
                        run,
                        duplicate: false,
                        upstream,
                        created_dependencies: Some(created_dependencies),
                    }
                }
            });
        }
        Ok(Some(outcomes))
    }
}
