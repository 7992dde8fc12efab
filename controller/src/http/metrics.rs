//! The controller's Prometheus metrics: the instruments, where the engine
//! records into them, and the text `/metrics` answers with.
//!
//! Two kinds of values (every name, type and label is listed in
//! `docs/operations.md`):
//!
//! * **recorded where the event happens**: runs and attempts finished,
//!   enqueue→start and run durations, schedule lateness, missed and skipped
//!   fires, alerts, store commits. Each costs an atomic increment or a
//!   histogram observe (a short mutex, never held across an await) and, for
//!   the per-job ones, a look-up of the job's instruments under a read lock;
//!   no allocation.
//! * **read at scrape time** ([`Metrics::encode`]): queue depths, live runs
//!   by state, agents by state, from one short look at the engine's indexes;
//!   lost attempts and stale results, mirrored from the engine's counters;
//!   leadership ([`LeadershipGauges`]: whether this controller leads, its
//!   epoch, the terms this process began), from `/readyz`'s state and
//!   [`crate::ha::terms_begun`]. A standby has no engine: its `/metrics`
//!   holds only the leadership series ([`encode_leadership`]).
//!
//! Label cardinality is bounded: the `job` label takes the name of a job
//! that is defined now ([`Metrics::define_jobs`], called whenever the
//! definitions change), anything else counts under [`OTHER_JOB`]; the series
//! of a job that is deleted are dropped. Alert channels are bounded the same
//! way by [`MAX_CHANNELS`]. What jobs report (`worker_job_metric_total`,
//! `worker_job_span_seconds`) is exported for defined jobs only, at most
//! [`MAX_REPORTED_NAMES_PER_JOB`] metric and span names per job and
//! [`MAX_REPORTED_SERIES`] in all. Nothing is labelled by run or agent id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::JobSet;
use crate::model::{Outcome, Priority, RunState};
use crate::store::{MetricRecord, SpanRecord};

/// The `job` label of everything recorded for a job that is not defined
/// (deleted meanwhile, or never defined).
pub const OTHER_JOB: &str = "_other";

/// The `channel` label of alerts once this many channels have series; more
/// channels count under [`OTHER_JOB`]'s value `_other`.
pub const MAX_CHANNELS: usize = 256;

/// The `Content-Type` of the answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Terminal run states, the `outcome` label of `worker_runs_finished_total`.
const FINISHED: [RunState; 3] = [RunState::Succeeded, RunState::Dead, RunState::Cancelled];

/// `{job}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: Arc<str>,
}

/// `{job, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobOutcomeLabels {
    job: Arc<str>,
    outcome: &'static str,
}

/// `{job, metric}` of a job-reported value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobMetricLabels {
    job: Arc<str>,
    metric: String,
}

/// `{job, span}` of a job-reported span.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobSpanLabels {
    job: Arc<str>,
    span: String,
}

/// Most metric names (and, separately, span names) of one job that get
/// series on `/metrics`; further names are counted in
/// `worker_job_reported_names_dropped`.
pub const MAX_REPORTED_NAMES_PER_JOB: usize = 32;

/// Most job-reported series (metric and span names over all jobs).
pub const MAX_REPORTED_SERIES: usize = 2048;

/// The metric and span names of one job that have series.
#[derive(Debug, Default)]
struct ReportedNames {
    metrics: std::collections::HashSet<String>,
    spans: std::collections::HashSet<String>,
}

/// `{priority}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: &'static str,
}

/// `{state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// `{channel, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    channel: String,
    result: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// One job's instruments, taken out of the families once per definition
/// change so that recording is a map look-up and an atomic operation.
struct JobInstruments {
    /// By [`FINISHED`] index.
    finished: [Counter; 3],
    /// By `Outcome as usize`.
    attempts: [Counter; 5],
    start_delay: Histogram,
    duration: Histogram,
    lateness: Histogram,
    missed: Counter,
    skipped: Counter,
}

/// Leadership at scrape time (PostgreSQL high availability, `crate::ha`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeadershipGauges {
    /// Whether this controller leads (a single controller always does).
    pub leading: bool,
    /// The epoch it leads in; 0 when it does not lead, and for a single
    /// controller (no election).
    pub epoch: i64,
    /// Terms of leadership this process has begun (taken the lease).
    pub terms_begun: u64,
}

impl LeadershipGauges {
    /// The gauges of `leadership`, with `terms_begun` terms begun.
    pub fn of(leadership: &crate::http::Leadership, terms_begun: u64) -> LeadershipGauges {
        use crate::http::Leadership;
        let (leading, epoch) = match leadership {
            Leadership::Single => (true, 0),
            Leadership::Leader { epoch, .. } => (true, *epoch),
            Leadership::Unknown | Leadership::Follower { .. } => (false, 0),
        };
        LeadershipGauges {
            leading,
            epoch,
            terms_begun,
        }
    }
}

/// The instruments of [`LeadershipGauges`].
struct LeadershipInstruments {
    leader: Gauge,
    epoch: Gauge,
    changes: Counter,
}

impl LeadershipInstruments {
    /// The instruments, registered in `registry`.
    fn register(registry: &mut Registry) -> LeadershipInstruments {
        let instruments = LeadershipInstruments {
            leader: Gauge::default(),
            epoch: Gauge::default(),
            changes: Counter::default(),
        };
        registry.register(
            "leader",
            "1 while this controller leads (a single controller always does), 0 otherwise",
            instruments.leader.clone(),
        );
        registry.register(
            "leader_epoch",
            "The lease epoch this controller leads in (0 when it does not lead, and for a single controller)",
            instruments.epoch.clone(),
        );
        registry.register(
            "leadership_changes",
            "Terms of leadership this process has begun (times it took the leadership lease)",
            instruments.changes.clone(),
        );
        instruments
    }

    /// Sets the values of `gauges`.
    fn set(&self, gauges: &LeadershipGauges) {
        self.leader.set(i64::from(gauges.leading));
        self.epoch.set(gauges.epoch);
        mirror(&self.changes, gauges.terms_begun);
    }
}

/// The text of `/metrics` on a controller without an engine (a standby):
/// the leadership series only.
pub fn encode_leadership(gauges: &LeadershipGauges) -> String {
    let mut registry = Registry::with_prefix("worker");
    LeadershipInstruments::register(&mut registry).set(gauges);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// What the engine holds in memory at scrape time (see
/// [`crate::engine::Engine::gauges`]).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// (priority, queued runs, oldest wait in ms).
    pub queued: Vec<(Priority, u64, u64)>,
    /// Unfinished runs by state (scheduled, blocked, queued, running).
    pub live: Vec<(RunState, u64)>,
    /// Agents connected now.
    pub agents_connected: u64,
    /// Agents disconnected that still hold runs (within their lease).
    pub agents_disconnected: u64,
    /// Attempts lost since start (engine counter).
    pub lost_attempts: u64,
    /// Results refused as stale since start (engine counter).
    pub stale_results: u64,
    /// Leadership (set by the scrape from `/readyz`'s state; the engine
    /// leaves it at its default).
    pub leadership: LeadershipGauges,
}

/// The controller's metrics: the registry and its instruments.
pub struct Metrics {
    registry: Registry,
    /// Instruments of the defined jobs, by name.
    jobs: std::sync::RwLock<HashMap<Arc<str>, Arc<JobInstruments>>>,
    /// Instruments of [`OTHER_JOB`].
    other: Arc<JobInstruments>,
    finished: Family<JobOutcomeLabels, Counter>,
    attempts: Family<JobOutcomeLabels, Counter>,
    start_delay: HistogramFamily<JobLabels>,
    duration: HistogramFamily<JobLabels>,
    lateness: HistogramFamily<JobLabels>,
    missed: Family<JobLabels, Counter>,
    skipped: Family<JobLabels, Counter>,
    queue_depth: Family<PriorityLabels, Gauge>,
    queue_oldest: Family<PriorityLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    runs: Family<StateLabels, Gauge>,
    agents: Family<StateLabels, Gauge>,
    lost_attempts: Counter,
    stale_results: Counter,
    alerts: Family<AlertLabels, Counter>,
    /// Channels that have alert series (at most [`MAX_CHANNELS`]).
    channels: std::sync::Mutex<std::collections::HashSet<String>>,
    commit_seconds: Histogram,
    commit_round_size: Histogram,
    job_metric: Family<JobMetricLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    job_span: HistogramFamily<JobSpanLabels>,
    reported_dropped: Counter,
    leadership: LeadershipInstruments,
    /// Names with series, per defined job (bounded, see [`MAX_REPORTED_NAMES_PER_JOB`]).
    reported: std::sync::Mutex<HashMap<Arc<str>, ReportedNames>>,
    /// Serializes scrapes (the mirrored counters are brought up to date
    /// before encoding).
    scrape: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn seconds_short() -> Histogram {
    // 1 ms … ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn seconds_long() -> Histogram {
    // 10 ms … ~1.5 h.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

impl Metrics {
    /// The instruments, registered, with no job defined yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("worker");
        let finished = Family::<JobOutcomeLabels, Counter>::default();
        let attempts = Family::<JobOutcomeLabels, Counter>::default();
        let start_delay = HistogramFamily::<JobLabels>::new_with_constructor(seconds_short as fn() -> Histogram);
        let duration = HistogramFamily::<JobLabels>::new_with_constructor(seconds_long as fn() -> Histogram);
        let lateness = HistogramFamily::<JobLabels>::new_with_constructor(seconds_short as fn() -> Histogram);
        let missed = Family::<JobLabels, Counter>::default();
        let skipped = Family::<JobLabels, Counter>::default();
        let queue_depth = Family::<PriorityLabels, Gauge>::default();
        let queue_oldest = Family::<PriorityLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let runs = Family::<StateLabels, Gauge>::default();
        let agents = Family::<StateLabels, Gauge>::default();
        let lost_attempts = Counter::default();
        let stale_results = Counter::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        // 0.1 ms … ~3 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        // 1 … 4096 writes.
        let commit_round_size = Histogram::new(exponential_buckets(1.0, 2.0, 13));

        let job_metric = Family::<JobMetricLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let job_span = HistogramFamily::<JobSpanLabels>::new_with_constructor(seconds_long as fn() -> Histogram);
        let reported_dropped = Counter::default();

        let r = &mut registry;
        r.register(
            "job_metric",
            "Sum of the non-negative values jobs reported (ctx.metric, ::worker metric), by job and metric name",
            job_metric.clone(),
        );
        r.register(
            "job_span_seconds",
            "Time an attempt spent in a reported operation (its total per attempt), by job and span name",
            job_span.clone(),
        );
        r.register(
            "job_reported_names_dropped",
            "Reported values not exported because their job had too many names or the controller too many series",
            reported_dropped.clone(),
        );
        r.register(
            "queue_depth",
            "Queued runs (ready to be dispatched), by priority",
            queue_depth.clone(),
        );
        r.register(
            "queue_oldest_wait_seconds",
            "How long the oldest queued run of each priority has waited",
            queue_oldest.clone(),
        );
        r.register(
            "runs",
            "Unfinished runs by state (scheduled, blocked, queued, running)",
            runs.clone(),
        );
        r.register(
            "runs_finished",
            "Runs that reached a final state, by job and outcome (succeeded, dead, cancelled)",
            finished.clone(),
        );
        r.register(
            "attempts_finished",
            "Attempts settled, by job and outcome (succeeded, failed, timed_out, lost, cancelled)",
            attempts.clone(),
        );
        r.register(
            "run_start_delay_seconds",
            "Time from a run becoming ready (enqueued, or released for a retry) to its dispatch, by job",
            start_delay.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Duration of settled attempts (start to result), by job",
            duration.clone(),
        );
        r.register(
            "schedule_lateness_seconds",
            "Time from a schedule fire's nominal instant to the creation of its run, by job",
            lateness.clone(),
        );
        r.register(
            "schedule_missed_fires",
            "Schedule fires that did not run (controller down, failed fires given up), by job",
            missed.clone(),
        );
        r.register(
            "schedule_skipped_fires",
            "Schedule fires skipped because a run of the job was unfinished (overlap: forbid), by job",
            skipped.clone(),
        );
        r.register(
            "agents",
            "Known agents by state (connected; disconnected but still holding runs)",
            agents.clone(),
        );
        r.register(
            "lost_attempts",
            "Attempts whose agent went silent past the lease",
            lost_attempts.clone(),
        );
        r.register(
            "stale_results",
            "Results refused because their attempt was no longer current",
            stale_results.clone(),
        );
        r.register(
            "alerts",
            "Alerts recorded, by channel and result (sent, failed, suppressed)",
            alerts.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Duration of the engine's round commits to the store",
            commit_seconds.clone(),
        );
        r.register(
            "store_commit_round_size",
            "Writes (new runs, assignments, results) in one round commit",
            commit_round_size.clone(),
        );

        let leadership = LeadershipInstruments::register(&mut registry);

        let mut metrics = Metrics {
            registry,
            jobs: Default::default(),
            other: Arc::new(JobInstruments {
                finished: Default::default(),
                attempts: Default::default(),
                start_delay: seconds_short(),
                duration: seconds_long(),
                lateness: seconds_short(),
                missed: Counter::default(),
                skipped: Counter::default(),
            }),
            finished,
            attempts,
            start_delay,
            duration,
            lateness,
            missed,
            skipped,
            queue_depth,
            queue_oldest,
            runs,
            agents,
            lost_attempts,
            stale_results,
            alerts,
            channels: Default::default(),
            commit_seconds,
            commit_round_size,
            job_metric,
            job_span,
            reported_dropped,
            leadership,
            reported: Default::default(),
            scrape: Default::default(),
        };
        metrics.other = Arc::new(metrics.instruments(OTHER_JOB.into()));
        metrics
    }

    /// The instruments of `job` (its series are created, at zero).
    fn instruments(&self, job: Arc<str>) -> JobInstruments {
        let with = |outcome: &'static str| JobOutcomeLabels {
            job: job.clone(),
            outcome,
        };
        let labels = JobLabels { job: job.clone() };
        JobInstruments {
            finished: FINISHED.map(|s| self.finished.get_or_create_owned(&with(s.as_str()))),
            attempts: [
                Outcome::Succeeded,
                Outcome::Failed,
                Outcome::TimedOut,
                Outcome::Lost,
                Outcome::Cancelled,
            ]
            .map(|o| self.attempts.get_or_create_owned(&with(o.as_str()))),
            start_delay: self.start_delay.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
            lateness: self.lateness.get_or_create_owned(&labels),
            missed: self.missed.get_or_create_owned(&labels),
            skipped: self.skipped.get_or_create_owned(&labels),
        }
    }

    /// Drops every series of `job`.
    fn forget(&self, job: &Arc<str>) {
        let labels = JobLabels { job: job.clone() };
        for outcome in FINISHED.map(RunState::as_str) {
            self.finished.remove(&JobOutcomeLabels {
                job: job.clone(),
                outcome,
            });
        }
        for outcome in Outcome::ALL.iter().map(|o| o.as_str()) {
            self.attempts.remove(&JobOutcomeLabels {
                job: job.clone(),
                outcome,
            });
        }
        self.start_delay.remove(&labels);
        self.duration.remove(&labels);
        self.lateness.remove(&labels);
        self.missed.remove(&labels);
        self.skipped.remove(&labels);
        let names = self.reported.lock().unwrap_or_else(|e| e.into_inner()).remove(job);
        for metric in names.iter().flat_map(|n| n.metrics.iter()) {
            self.job_metric.remove(&JobMetricLabels {
                job: job.clone(),
                metric: metric.clone(),
            });
        }
        for span in names.iter().flat_map(|n| n.spans.iter()) {
            self.job_span.remove(&JobSpanLabels {
                job: job.clone(),
                span: span.clone(),
            });
        }
    }

    /// The defined jobs are now `jobs`: new ones get series (at zero), the
    /// series of deleted ones are dropped, and from now on anything recorded
    /// for a job not in `jobs` counts under [`OTHER_JOB`].
    pub fn define_jobs(&self, jobs: &JobSet) {
        let mut table = self.jobs.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<Arc<str>> = table.keys().filter(|j| jobs.get(j).is_none()).cloned().collect();
        for job in gone {
            table.remove(&job);
            self.forget(&job);
        }
        for def in jobs.iter() {
            if !table.contains_key(def.name.as_str()) {
                let name: Arc<str> = def.name.as_str().into();
                table.insert(name.clone(), Arc::new(self.instruments(name)));
            }
        }
    }

    /// Runs `f` on the instruments of `job` (or of [`OTHER_JOB`]).
    fn with_job(&self, job: &str, f: impl FnOnce(&JobInstruments)) {
        let table = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        f(table.get(job).unwrap_or(&self.other))
    }

    /// A run of `job` reached `state` (counted when it is terminal).
    pub fn run_state(&self, job: &str, state: RunState) {
        if let Some(i) = FINISHED.iter().position(|s| *s == state) {
            self.with_job(job, |m| {
                m.finished[i].inc();
            });
        }
    }

    /// An attempt of `job` was settled with `outcome` after `duration_ms`
    /// (when known).
    pub fn attempt_settled(&self, job: &str, outcome: Outcome, duration_ms: Option<i64>) {
        self.with_job(job, |m| {
            m.attempts[outcome as usize].inc();
            if let Some(ms) = duration_ms {
                m.duration.observe(ms.max(0) as f64 / 1000.0);
            }
        });
    }

    /// An attempt of `job` reported `metrics` and `spans`. Only defined jobs
    /// are exported, at most [`MAX_REPORTED_NAMES_PER_JOB`] names of each
    /// kind per job and [`MAX_REPORTED_SERIES`] in all; the rest is counted
    /// as dropped. Negative metric values are not added (the series is a
    /// counter). Rare next to the hot path: one mutex for the name sets.
    pub fn attempt_reported(&self, job: &str, metrics: &[MetricRecord], spans: &[SpanRecord]) {
        // The definitions stay read-locked until the series exist, so that a
        // job deleted meanwhile (`define_jobs`, which takes the same locks in
        // the same order) cannot get them back.
        let table = self.jobs.read().unwrap_or_else(|e| e.into_inner());
        let Some(job) = table.get_key_value(job).map(|(k, _)| k.clone()) else {
            return;
        };
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let mut series: usize = reported.values().map(|n| n.metrics.len() + n.spans.len()).sum();
        let names = reported.entry(job.clone()).or_default();
        let mut admit = |set: &mut std::collections::HashSet<String>, name: &str| {
            if set.contains(name) {
                return true;
            }
            if set.len() >= MAX_REPORTED_NAMES_PER_JOB || series >= MAX_REPORTED_SERIES {
                self.reported_dropped.inc();
                return false;
            }
            series += 1;
            set.insert(name.to_string());
            true
        };
        for m in metrics {
            if admit(&mut names.metrics, &m.name) && m.value > 0.0 {
                self.job_metric
                    .get_or_create(&JobMetricLabels {
                        job: job.clone(),
                        metric: m.name.clone(),
                    })
                    .inc_by(m.value);
            }
        }
        for sp in spans {
            if admit(&mut names.spans, &sp.name) {
                self.job_span
                    .get_or_create(&JobSpanLabels {
                        job: job.clone(),
                        span: sp.name.clone(),
                    })
                    .observe(sp.total_us as f64 / 1e6);
            }
        }
    }

    /// A run of `job` was dispatched after waiting `waited_ms` in the queue.
    pub fn run_started(&self, job: &str, waited_ms: i64) {
        self.with_job(job, |m| m.start_delay.observe(waited_ms.max(0) as f64 / 1000.0));
    }

    /// A schedule fire of `job` created its run `late_ms` after its nominal instant.
    pub fn fire_created(&self, job: &str, late_ms: i64) {
        self.with_job(job, |m| m.lateness.observe(late_ms.max(0) as f64 / 1000.0));
    }

    /// `fires` fires of `job` were missed.
    pub fn fires_missed(&self, job: &str, fires: u64) {
        self.with_job(job, |m| {
            m.missed.inc_by(fires);
        });
    }

    /// A fire of `job` was skipped (overlap: forbid).
    pub fn fire_skipped(&self, job: &str) {
        self.with_job(job, |m| {
            m.skipped.inc();
        });
    }

    /// A round commit of `writes` writes took `elapsed`.
    pub fn round_committed(&self, elapsed: Duration, writes: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.commit_round_size.observe(writes as f64);
    }

    /// An alert was recorded for `channel` with `result` (sent, failed,
    /// suppressed). Alerts are rare: this one allocates its labels.
    pub fn alert_recorded(&self, channel: &str, result: &str) {
        let channel = {
            let mut seen = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(channel) || seen.len() < MAX_CHANNELS {
                seen.insert(channel.to_string());
                channel
            } else {
                OTHER_JOB
            }
        };
        let labels = AlertLabels {
            channel: channel.to_string(),
            result: result.to_string(),
        };
        self.alerts.get_or_create(&labels).inc();
    }

    /// The text of `/metrics`: sets the scrape-time values from `gauges`,
    /// then encodes everything.
    pub fn encode(&self, gauges: &Gauges) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for (priority, depth, oldest_ms) in &gauges.queued {
            let labels = PriorityLabels {
                priority: priority.as_str(),
            };
            self.queue_depth.get_or_create(&labels).set(*depth as i64);
            self.queue_oldest.get_or_create(&labels).set(*oldest_ms as f64 / 1000.0);
        }
        for &(state, count) in &gauges.live {
            self.runs
                .get_or_create(&StateLabels { state: state.as_str() })
                .set(count as i64);
        }
        self.agents
            .get_or_create(&StateLabels { state: "connected" })
            .set(gauges.agents_connected as i64);
        self.agents
            .get_or_create(&StateLabels { state: "disconnected" })
            .set(gauges.agents_disconnected as i64);
        // The engine's counters only grow: the mirrors catch up.
        mirror(&self.lost_attempts, gauges.lost_attempts);
        mirror(&self.stale_results, gauges.stale_results);
        self.leadership.set(&gauges.leadership);
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Brings `counter` up to `value` (never down).
fn mirror(counter: &Counter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(names: &[&str]) -> JobSet {
        let yaml: String = std::iter::once("jobs:\n".to_string())
            .chain(names.iter().map(|n| format!("  {n}:\n    builtin: noop\n")))
            .collect();
        crate::config::parse_scheduler_yaml(
            std::path::Path::new("t.yaml"),
            &yaml,
            &crate::config::env::from_pairs(&[]),
        )
        .expect("valid jobs")
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    /// The `job` label only names defined jobs: anything else counts under
    /// `_other`, and a deleted job's series disappear.
    #[test]
    fn undefined_jobs_count_under_other() {
        let metrics = Metrics::new();
        metrics.define_jobs(&jobs(&["build", "deploy"]));
        metrics.run_state("build", RunState::Succeeded);
        metrics.run_state("build", RunState::Succeeded);
        metrics.run_state("build", RunState::Running);
        metrics.run_state("ghost-1", RunState::Dead);
        metrics.run_state("ghost-2", RunState::Dead);
        metrics.attempt_settled("ghost-3", Outcome::Failed, Some(1500));
        let text = metrics.encode(&Gauges::default());
        assert_eq!(
            line(&text, r#"worker_runs_finished_total{job="build",outcome="succeeded"}"#),
            Some(r#"worker_runs_finished_total{job="build",outcome="succeeded"} 2"#),
            "{text}"
        );
        assert_eq!(
            line(&text, r#"worker_runs_finished_total{job="_other",outcome="dead"}"#),
            Some(r#"worker_runs_finished_total{job="_other",outcome="dead"} 2"#),
            "{text}"
        );
        assert_eq!(
            line(&text, r#"worker_run_duration_seconds_count{job="_other"}"#),
            Some(r#"worker_run_duration_seconds_count{job="_other"} 1"#),
            "{text}"
        );
        assert!(!text.contains("ghost"), "{text}");
        // A defined job has its series at zero before anything happened.
        assert!(
            text.contains(r#"worker_runs_finished_total{job="deploy",outcome="dead"} 0"#),
            "{text}"
        );

        // "deploy" is deleted: its series go, and later events are _other's.
        metrics.define_jobs(&jobs(&["build"]));
        metrics.run_state("deploy", RunState::Cancelled);
        let text = metrics.encode(&Gauges::default());
        assert!(!text.contains(r#"job="deploy""#), "{text}");
        assert!(
            text.contains(r#"worker_runs_finished_total{job="_other",outcome="cancelled"} 1"#),
            "{text}"
        );
    }

    /// Job-reported values: summed per (job, metric), spans observed per
    /// attempt, bounded per job, dropped with the job, never for undefined jobs.
    #[test]
    fn job_reported_values_are_exported_bounded() {
        let metrics = Metrics::new();
        metrics.define_jobs(&jobs(&["enrich", "other"]));
        let metric = |name: &str, value| MetricRecord {
            name: name.into(),
            value,
        };
        let span = SpanRecord {
            name: "fetch".into(),
            count: 3,
            total_us: 1_500_000,
            max_us: 900_000,
        };
        metrics.attempt_reported(
            "enrich",
            &[metric("api_cost_usd", 0.25), metric("delta", -1.0)],
            std::slice::from_ref(&span),
        );
        metrics.attempt_reported("enrich", &[metric("api_cost_usd", 0.5)], &[]);
        metrics.attempt_reported("ghost", &[metric("api_cost_usd", 9.0)], &[]);
        let many: Vec<MetricRecord> = (0..MAX_REPORTED_NAMES_PER_JOB + 3)
            .map(|i| metric(&format!("m{i}"), 1.0))
            .collect();
        metrics.attempt_reported("other", &many, &[]);
        let text = metrics.encode(&Gauges::default());
        assert!(
            text.contains(r#"worker_job_metric_total{job="enrich",metric="api_cost_usd"} 0.75"#),
            "{text}"
        );
        assert!(
            text.contains(r#"worker_job_span_seconds_sum{job="enrich",span="fetch"} 1.5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"worker_job_span_seconds_count{job="enrich",span="fetch"} 1"#),
            "{text}"
        );
        assert!(!text.contains("ghost"), "{text}");
        assert!(text.contains("worker_job_reported_names_dropped_total 3"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with(r#"worker_job_metric_total{job="other""#))
                .count(),
            MAX_REPORTED_NAMES_PER_JOB
        );
        metrics.define_jobs(&jobs(&["other"]));
        let text = metrics.encode(&Gauges::default());
        assert!(
            !text.contains(r#"job="enrich""#),
            "a deleted job's reported series go: {text}"
        );
    }

    /// Scrape-time values: gauges are set, mirrored counters follow the
    /// engine's and never go down.
    #[test]
    fn scrape_time_values_are_encoded() {
        let metrics = Metrics::new();
        let mut gauges = Gauges {
            queued: vec![(Priority::High, 3, 2500)],
            live: vec![
                (RunState::Scheduled, 1),
                (RunState::Blocked, 0),
                (RunState::Queued, 3),
                (RunState::Running, 2),
            ],
            agents_connected: 1,
            agents_disconnected: 0,
            lost_attempts: 4,
            stale_results: 0,
            leadership: LeadershipGauges::default(),
        };
        let text = metrics.encode(&gauges);
        for expected in [
            r#"worker_queue_depth{priority="high"} 3"#,
            r#"worker_queue_oldest_wait_seconds{priority="high"} 2.5"#,
            r#"worker_runs{state="running"} 2"#,
            r#"worker_agents{state="connected"} 1"#,
            "worker_lost_attempts_total 4",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} missing:\n{text}");
        }
        gauges.lost_attempts = 6;
        let text = metrics.encode(&gauges);
        assert!(text.lines().any(|l| l == "worker_lost_attempts_total 6"), "{text}");
    }

    /// Leadership: a single controller leads in epoch 0; a leader shows its
    /// epoch and the terms this process began; a standby's text holds only
    /// the leadership series, at 0 but for the terms it led before.
    #[test]
    fn leadership_is_encoded_for_leaders_and_standbys() {
        use crate::http::Leadership;
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        let metrics = Metrics::new();
        let mut gauges = Gauges {
            leadership: LeadershipGauges::of(&Leadership::Single, 0),
            ..Default::default()
        };
        let text = metrics.encode(&gauges);
        for line in [
            "worker_leader 1",
            "worker_leader_epoch 0",
            "worker_leadership_changes_total 0",
        ] {
            assert!(has(&text, line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains("# TYPE worker_leadership_changes_total counter"),
            "{text}"
        );

        gauges.leadership = LeadershipGauges::of(&Leadership::Leader { epoch: 7, since: 0 }, 2);
        let text = metrics.encode(&gauges);
        for line in [
            "worker_leader 1",
            "worker_leader_epoch 7",
            "worker_leadership_changes_total 2",
        ] {
            assert!(has(&text, line), "{line} missing:\n{text}");
        }
        // The lease lost: not leading any more, the count stays.
        gauges.leadership = LeadershipGauges::of(&Leadership::Unknown, 2);
        let text = metrics.encode(&gauges);
        assert!(
            has(&text, "worker_leader 0") && has(&text, "worker_leader_epoch 0"),
            "{text}"
        );
        assert!(has(&text, "worker_leadership_changes_total 2"), "{text}");

        let follower = Leadership::Follower {
            epoch: 8,
            leader: "c2".into(),
            address: "http://10.0.0.2:7070".into(),
            since: 0,
        };
        let text = encode_leadership(&LeadershipGauges::of(&follower, 2));
        for line in [
            "worker_leader 0",
            "worker_leader_epoch 0",
            "worker_leadership_changes_total 2",
        ] {
            assert!(has(&text, line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("worker_queue_depth"), "a standby has no engine: {text}");
        assert!(text.contains("# TYPE worker_leader gauge"), "{text}");
    }
}
