//! The store: the source of truth for runs, attempts, transitions and schedule
//! cursors (a restart rebuilds the engine's memory from it; see
//! `docs/decisions.md`, "Engine invariants"), job definitions, and alerting's
//! channels, rules and history (`docs/alerting.md`).
//!
//! [`Store`] is a thin facade over one backend, chosen by the database URL:
//! `sqlite://…` opens the embedded SQLite backend (`sqlite`), `postgres://…`
//! or `postgresql://…` the PostgreSQL backend (`postgres`). Each backend is a
//! folder that holds all of its SQL, so a reader finds every query of one
//! dialect in one place, and both are split the same way so that they compare
//! file by file: `mod.rs` (connections, migrations, shared helpers), `runs.rs`
//! (runs, attempts, transitions, the dead-letter queue, recovery),
//! `definitions.rs` (jobs, schedule pauses, cursors and fire failures) and
//! `alerts.rs` (alert channels, rules and history). Both pass the same test
//! suite (`tests/store.rs`). Writes that belong together (a state change, its
//! attempt row and its transition record) are committed in one transaction,
//! and the engine acknowledges nothing before that commit returns. Migrations
//! (`migrations/{sqlite,postgres}`) are embedded and applied by [`Store::open`].

pub mod digest;
pub mod events;
mod postgres;
mod records;
pub mod retention;
mod sqlite;
mod write;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

pub use events::{Committed, EventFilter, EventHub, EventKind, EventRecord};
pub use postgres::{RELAY_CHANNEL, RELAY_DONE_CHANNEL};
pub use records::{
    AlertQuery, AlertRecord, AttemptEnd, AttemptRecord, AttemptStart, CatalogFileRecord, CatalogPackRecord,
    CatalogPublish, CatalogRatingRecord, CatalogReviewRecord, FireFailureRecord, HourCount, InsertPlan, JobDayRecord,
    JobListRows, JobStatsRecord, LeaderTermRecord, LeaseRecord, MetricRecord, NewRun, RelayAnswer, RelayState,
    RelayedCall, RunRecord, ScheduleCursor, SpanRecord, StateChange, TokenRecord, TransitionRecord,
};
pub use retention::{PruneBatch, PruneCounts, PruneRule};
pub use write::WriteError;
use write::{InDoubt, Write};

use crate::error::{Error, Result};
use crate::model::{Outcome, RunState};

/// Rows [`Store::alert_history`] returns when [`AlertQuery::limit`] is 0.
pub const ALERT_HISTORY_DEFAULT_LIMIT: u32 = 100;

/// The most rows [`Store::alert_history`] returns at once.
pub const ALERT_HISTORY_MAX_LIMIT: u32 = 10_000;

/// Handle to the database.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    /// Each committed write's events, live (see [`events`]).
    hub: EventHub,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Calls the same method on whichever backend the store uses.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* $(,)? )) => {
        match &*$self.backend {
            Backend::Sqlite(store) => store.$method($($arg),*).await,
            Backend::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

/// One row of `attempt_measures`, as the backends read it.
#[derive(Debug, Clone)]
pub(crate) struct MeasureRow {
    pub run_id: String,
    pub attempt: u32,
    pub kind: String,
    pub name: String,
    pub value: f64,
    pub count: i64,
    pub max_us: i64,
}

/// What a backend reads for [`Store::job_days`], aggregated by the database
/// where it can be: (UTC day, attempts that reported), (day, metric, sum),
/// and the span totals (day, span, total µs) of the newest
/// [`MAX_SPAN_ROWS`] span reports, for the percentiles.
#[derive(Debug, Default)]
pub(crate) struct DayRows {
    pub attempts: Vec<(i64, i64)>,
    pub sums: Vec<(i64, String, f64)>,
    pub spans: Vec<(i64, String, f64)>,
}

/// Most span reports [`Store::job_days`] reads for its percentiles (the
/// newest first); a job reporting more over the week has its older days'
/// percentiles computed from what fits (sums and counts stay exact).
pub const MAX_SPAN_ROWS: i64 = 100_000;

/// Most metric and span names one day of [`Store::job_days`] lists (the
/// first by name, and the slowest spans).
pub const MAX_DAY_NAMES: usize = 100;

/// Folds a job's aggregated reports into days, newest first: metric sums by
/// name, span percentiles (nearest rank) slowest p95 first.
fn days_from_rows(rows: DayRows) -> Vec<JobDayRecord> {
    use std::collections::BTreeMap;
    type Day = (JobDayRecord, BTreeMap<String, Vec<u64>>);
    fn day(days: &mut BTreeMap<i64, Day>, d: i64) -> &mut Day {
        days.entry(d).or_insert_with(|| {
            (
                JobDayRecord {
                    day: d,
                    ..Default::default()
                },
                BTreeMap::new(),
            )
        })
    }
    let mut days: BTreeMap<i64, Day> = BTreeMap::new();
    for (d, n) in rows.attempts {
        day(&mut days, d).0.attempts = n.max(0) as u64;
    }
    for (d, name, sum) in rows.sums {
        day(&mut days, d).0.metric_sums.push((name, sum));
    }
    for (d, name, value) in rows.spans {
        day(&mut days, d).1.entry(name).or_default().push(value.max(0.0) as u64);
    }
    days.into_values()
        .rev()
        .map(|(mut record, spans)| {
            record.metric_sums.sort_by(|a, b| a.0.cmp(&b.0));
            record.metric_sums.truncate(MAX_DAY_NAMES);
            record.spans = spans
                .into_iter()
                .map(|(name, mut values)| {
                    values.sort_unstable();
                    let rank = |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
                    (name, values.len() as u64, rank(0.5), rank(0.95))
                })
                .collect();
            record.spans.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.0.cmp(&b.0)));
            record.spans.truncate(MAX_DAY_NAMES);
            record
        })
        .collect()
}

/// Jobs summarised per statement by [`Store::job_list_stats`] (well under
/// SQLite's bound-parameter limit).
const JOBS_PER_STATS_STATEMENT: usize = 200;

impl Store {
    /// Opens the database at `url` and applies migrations. `sqlite://PATH`
    /// creates the file if needed; `postgres://` / `postgresql://` connect to an
    /// existing database. Errors name the URL (password hidden) and the cause.
    pub async fn open(url: &str) -> Result<Store> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let backend = match scheme.as_deref() {
            Some("sqlite") => Backend::Sqlite(sqlite::SqliteStore::open(url).await?),
            Some("postgres" | "postgresql") => Backend::Postgres(postgres::PgStore::open(url).await?),
            _ => {
                return Err(Error::invalid(
                    "db",
                    format!(
                        "unsupported database URL \"{}\": expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
                        redact_url(url)
                    ),
                ));
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
            hub: EventHub::default(),
        })
    }

    /// Inserts new runs, their dependencies and idempotency keys, with their first
    /// transitions, in one transaction. For scheduled fires the schedule cursor
    /// moves in the same transaction. Returns `false` (and writes nothing) when a
    /// run for the same (job, fire instant) already exists, also when another
    /// writer inserts it concurrently.
    pub async fn insert_runs(&self, plan: &InsertPlan) -> Result<bool, WriteError> {
        let write = Write {
            plan,
            changes: &[],
            starts: &[],
            ends: &[],
        };
        let in_doubt = write::before(write).await?;
        if in_doubt == Some(InDoubt::Lost) {
            return Err(write::in_doubt_error());
        }
        let inserted = dispatch!(self.insert_runs(plan))?;
        let inserted = match inserted {
            Some(events) => {
                self.hub.publish(events);
                true
            }
            None => false,
        };
        self.after(in_doubt)?;
        Ok(inserted)
    }

    /// The run an idempotency key points at, with the time the key was recorded.
    pub async fn idempotency_key(&self, key: &str) -> Result<Option<(String, i64)>> {
        dispatch!(self.idempotency_key(key))
    }

    /// (run, upstream) pairs of the given runs, by run then insertion order.
    pub async fn dependencies(&self, run_ids: &[String]) -> Result<Vec<(String, String)>> {
        dispatch!(self.dependencies(run_ids))
    }

    /// Runs of a workflow, oldest first.
    pub async fn workflow_runs(&self, workflow_id: &str) -> Result<Vec<RunRecord>> {
        dispatch!(self.workflow_runs(workflow_id))
    }

    /// Stored job definitions: (name, spec YAML, source).
    pub async fn job_specs(&self) -> Result<Vec<(String, String, String)>> {
        dispatch!(self.job_specs())
    }

    /// Writes job definitions (upserts and deletions) in one transaction, and,
    /// when given, records the configuration file text they came from.
    pub async fn save_jobs(
        &self,
        upserts: &[(String, String, String)],
        deletes: &[String],
        applied: Option<(&str, &str)>,
    ) -> Result<()> {
        dispatch!(self.save_jobs(upserts, deletes, applied))
    }

    /// The text of a configuration file as last applied.
    pub async fn applied_config(&self, file: &str) -> Result<Option<String>> {
        dispatch!(self.applied_config(file))
    }

    /// Names of paused schedules.
    pub async fn paused_schedules(&self) -> Result<Vec<String>> {
        dispatch!(self.paused_schedules())
    }

    /// Pauses or resumes a schedule; a change is an event
    /// (`schedule_paused` or `schedule_resumed`), none when it already was so.
    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<()> {
        let events = dispatch!(self.set_paused(job, paused))?;
        self.hub.publish(events);
        Ok(())
    }

    /// Applies state changes, new attempts and finished attempts in one
    /// transaction. Each change applies only where its run is still in the
    /// change's `from` state, and each attempt end only to an attempt that has
    /// not ended: otherwise nothing is written ([`WriteError::Conflict`]).
    pub async fn apply(
        &self,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<(), WriteError> {
        self.commit(&InsertPlan::default(), changes, starts, ends).await
    }

    /// New runs (plain: no fire instants) and changes of existing runs, committed
    /// together in one transaction: the engine's commit round. Changes and
    /// attempt ends are checked as in [`Store::apply`].
    pub async fn commit(
        &self,
        plan: &InsertPlan,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<(), WriteError> {
        let write = Write {
            plan,
            changes,
            starts,
            ends,
        };
        write.check_unique()?;
        let in_doubt = write::before(write).await?;
        if in_doubt == Some(InDoubt::Lost) {
            return Err(write::in_doubt_error());
        }
        let events = dispatch!(self.commit(plan, changes, starts, ends))?;
        self.hub.publish_changes(events, changes);
        self.after(in_doubt)
    }

    /// Deletes the dead runs `ids` (with their attempts and transitions) and
    /// applies `changes` (of the runs blocked behind them) in one transaction.
    /// Every id must name a dead run, else nothing is written
    /// ([`WriteError::Conflict`]).
    pub async fn purge_dead(&self, ids: &[String], changes: &[StateChange]) -> Result<(), WriteError> {
        let plan = InsertPlan::default();
        let write = Write {
            plan: &plan,
            changes,
            starts: &[],
            ends: &[],
        };
        write.check_unique()?;
        let in_doubt = write::before(write).await?;
        if in_doubt == Some(InDoubt::Lost) {
            return Err(write::in_doubt_error());
        }
        let events = dispatch!(self.purge_dead(ids, changes))?;
        self.hub.publish(events);
        self.after(in_doubt)
    }

    /// Whether a write that failed in doubt was committed after all. Reads one
    /// row the write certainly changed: a new run, a started or ended attempt,
    /// or a run it moved (the caller must keep other writers of those rows out
    /// until it knows, as the engine's lock does).
    pub async fn written(
        &self,
        plan: &InsertPlan,
        changes: &[StateChange],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Result<bool> {
        if write::armed("store::in_doubt").as_deref() == Some("unverifiable") {
            return Err(Error {
                code: crate::error::ErrorCode::Unavailable,
                message: "store unavailable: refused by fail point store::in_doubt(unverifiable)".into(),
            });
        }
        let write = Write {
            plan,
            changes,
            starts,
            ends,
        };
        dispatch!(self.written(write))
    }

    /// Whether [`Store::written`] answering "not written" is final. SQLite is
    /// a library in this process: once its COMMIT failed, nothing commits the
    /// transaction later. A PostgreSQL server may still be committing a
    /// transaction whose connection broke during COMMIT, so a read that
    /// does not see it yet proves nothing.
    pub fn not_written_is_final(&self) -> bool {
        matches!(&*self.backend, Backend::Sqlite(_))
    }

    /// Reports a committed write as failed in doubt when the `store::in_doubt`
    /// fail point says so.
    fn after(&self, in_doubt: Option<InDoubt>) -> Result<(), WriteError> {
        match in_doubt {
            Some(_) => Err(write::in_doubt_error()),
            None => Ok(()),
        }
    }

    /// Deletes at most `limit` of the finished runs `rule` prunes (oldest
    /// first) with their attempts, transitions, events, dependency rows and
    /// idempotency keys, in one transaction (`store/retention.rs`). The
    /// caller keeps other writers of runs out meanwhile (the engine's lock).
    pub async fn prune_runs(&self, rule: &PruneRule, limit: u32) -> Result<PruneBatch, WriteError> {
        dispatch!(self.prune_runs(rule, limit))
    }

    /// Deletes up to `limit` of `rule.job`'s events that belong to no run
    /// (schedule fires missed or skipped, pauses, resumes): those before
    /// `rule.cutoff` and those beyond the newest `rule.keep` of them. Returns
    /// how many went. Events of runs go with their runs ([`Store::prune_runs`]).
    pub async fn prune_schedule_events(&self, rule: &PruneRule, limit: u32) -> Result<u64> {
        dispatch!(self.prune_schedule_events(rule, limit))
    }

    /// The jobs that have runs or events in the store, defined or not (a
    /// deleted job's history is pruned by the default rule).
    pub async fn history_jobs(&self) -> Result<Vec<String>> {
        dispatch!(self.history_jobs())
    }

    /// What [`Store::prune_runs`] would delete under `rule`, all batches together.
    pub async fn count_prunable(&self, rule: &PruneRule) -> Result<PruneCounts> {
        dispatch!(self.count_prunable(rule))
    }

    /// Events after `after` up to `up_to` (sequence numbers, both
    /// included/excluded as `after < seq <= up_to`) that pass `filter`,
    /// oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: i64,
        up_to: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        dispatch!(self.events_after(after, up_to, filter, limit))
    }

    /// The last sequence number handed out: every event up to it is committed.
    pub async fn event_head(&self) -> Result<i64> {
        dispatch!(self.event_head())
    }

    /// The live side of the events: each committed write's events.
    pub fn event_hub(&self) -> &EventHub {
        &self.hub
    }

    /// Moves a schedule cursor (never backwards) and adds to its missed/skipped counters.
    pub async fn advance_cursor(&self, job: &str, last_fired: i64, missed: u64, skipped: u64) -> Result<()> {
        let events = dispatch!(self.advance_cursor(job, last_fired, missed, skipped))?;
        self.hub.publish(events);
        Ok(())
    }

    /// Records a failed try of `job`'s fire at `fire_at`: its failures in a
    /// row and ever go up by one, and the error is kept.
    pub async fn record_fire_failure(&self, job: &str, fire_at: i64, error: &str, at: i64) -> Result<()> {
        dispatch!(self.record_fire_failure(job, fire_at, error, at))
    }

    /// `job` fires again: its failures in a row go back to 0 (the last error
    /// and the total are kept).
    pub async fn clear_fire_failure(&self, job: &str) -> Result<()> {
        dispatch!(self.clear_fire_failure(job))
    }

    /// Every job whose fires have ever failed.
    pub async fn fire_failures(&self) -> Result<Vec<FireFailureRecord>> {
        dispatch!(self.fire_failures())
    }

    /// Every API token row, revoked and expired ones included, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        dispatch!(self.tokens())
    }

    /// Inserts a new token; `false` (nothing written) when its name or hash
    /// is taken.
    pub async fn insert_token(&self, token: &TokenRecord) -> Result<bool> {
        dispatch!(self.insert_token(token))
    }

    /// Marks the token `name` revoked at `at`; `false` when there is no such
    /// token or it was revoked already (nothing written).
    pub async fn revoke_token(&self, name: &str, at: i64) -> Result<bool> {
        dispatch!(self.revoke_token(name, at))
    }

    /// Creates the token `token.name`, or gives an existing one the role and
    /// hash of `token` (its creation, expiry and revocation are kept): the
    /// bootstrap token's file is its source of truth.
    pub async fn upsert_token(&self, token: &TokenRecord) -> Result<()> {
        dispatch!(self.upsert_token(token))
    }

    /// Every schedule cursor.
    pub async fn cursors(&self) -> Result<Vec<ScheduleCursor>> {
        dispatch!(self.cursors())
    }

    /// Runs that are not terminal, oldest first.
    pub async fn active_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        self.for_each_active_run(None, &mut |run| {
            runs.push(run);
            Ok(())
        })
        .await?;
        Ok(runs)
    }

    /// Calls `f` with every run that is not terminal, oldest first, as the rows
    /// arrive: rebuilding the in-memory indexes of a million queued runs never
    /// holds them all as records at once. With a `payload_limit`, a payload of
    /// more bytes is not read: its record's `payload` is empty (a stored payload
    /// never is: it is JSON text), and [`Store::payloads`] reads it when needed,
    /// so that a store holding gigabytes of queued payloads is recovered
    /// without reading them.
    pub async fn for_each_active_run(
        &self,
        payload_limit: Option<usize>,
        f: &mut (dyn FnMut(RunRecord) -> Result<()> + Send),
    ) -> Result<()> {
        let limit = payload_limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        dispatch!(self.for_each_active_run(limit, f))
    }

    /// The payloads of the runs `ids` that exist, as (run id, payload), in no
    /// particular order, each once however often its id is given (a few
    /// statements for any number of ids). The engine reads here, once per
    /// dispatch round, the payloads it did not keep in memory (see
    /// `docs/architecture.md`, "Where payloads live").
    pub async fn payloads(&self, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let unique: Vec<String> = ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self.payloads(&unique))
    }

    /// One run.
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        dispatch!(self.run(id))
    }

    /// The runs of `ids` that exist, in no particular order, each once
    /// however often its id is given (a few statements for any number of ids).
    pub async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunRecord>> {
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let unique: Vec<String> = ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect();
        dispatch!(self.runs_by_id(&unique))
    }

    /// Runs, newest first, optionally of one job and/or in one state.
    pub async fn runs(&self, job: Option<&str>, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>> {
        dispatch!(self.runs(job, state, limit))
    }

    /// Attempts of the given runs, by run then attempt number, with what
    /// they reported (metrics by name, spans slowest first).
    pub async fn attempts(&self, run_ids: &[String]) -> Result<Vec<AttemptRecord>> {
        let mut attempts: Vec<AttemptRecord> = dispatch!(self.attempts(run_ids))?;
        if attempts.iter().all(|a| a.outcome.is_none()) {
            return Ok(attempts);
        }
        let finished: Vec<String> = attempts
            .iter()
            .filter(|a| a.outcome.is_some())
            .map(|a| a.run_id.clone())
            .collect();
        let mut measures: HashMap<(String, u32), Vec<MeasureRow>> = HashMap::new();
        for row in dispatch!(self.measures(&finished))? {
            measures.entry((row.run_id.clone(), row.attempt)).or_default().push(row);
        }
        for attempt in &mut attempts {
            let Some(rows) = measures.remove(&(attempt.run_id.clone(), attempt.attempt)) else {
                continue;
            };
            for row in rows {
                match row.kind.as_str() {
                    "metric" => attempt.metrics.push(MetricRecord {
                        name: row.name,
                        value: row.value,
                    }),
                    _ => attempt.spans.push(SpanRecord {
                        name: row.name,
                        count: row.count.max(0) as u64,
                        total_us: row.value.max(0.0) as u64,
                        max_us: row.max_us.max(0) as u64,
                    }),
                }
            }
            attempt.metrics.sort_by(|a, b| a.name.cmp(&b.name));
            attempt
                .spans
                .sort_by(|a, b| b.total_us.cmp(&a.total_us).then_with(|| a.name.cmp(&b.name)));
        }
        Ok(attempts)
    }

    /// The sum of every metric each job's attempts reported since `since`
    /// (Unix ms): (job, metric, sum). Seeds `metric_high`'s day sums at start.
    pub async fn metric_sums_since(&self, since: i64) -> Result<Vec<(String, String, f64)>> {
        dispatch!(self.metric_sums_since(since))
    }

    /// What `job`'s attempts reported per UTC day, for the days since `since`
    /// (Unix ms) that have any, newest first.
    pub async fn job_days(&self, job: &str, since: i64) -> Result<Vec<JobDayRecord>> {
        let rows: DayRows = dispatch!(self.job_day_rows(job, since))?;
        Ok(days_from_rows(rows))
    }

    /// The outcome recorded for (run, attempt), if it has finished.
    pub async fn attempt_outcome(&self, run_id: &str, attempt: u32) -> Result<Option<Outcome>> {
        dispatch!(self.attempt_outcome(run_id, attempt))
    }

    /// Recorded transitions of a run, in order.
    pub async fn transitions(&self, run_id: &str) -> Result<Vec<TransitionRecord>> {
        dispatch!(self.transitions(run_id))
    }

    /// Ids of all runs in the dead-letter queue.
    pub async fn dead_run_ids(&self) -> Result<Vec<String>> {
        dispatch!(self.dead_run_ids())
    }

    /// Runs finished since `since` (Unix ms) by hour and final state, oldest
    /// hour first; hours without any are left out. Only runs created at most
    /// a day before `since` are counted (the scan follows the `created_at`
    /// index), so a run that waited longer than that before finishing is
    /// missing from the chart.
    pub async fn finished_per_hour(&self, since: i64) -> Result<Vec<HourCount>> {
        dispatch!(self.finished_per_hour(since))
    }

    /// How many runs are in the dead-letter queue.
    pub async fn count_dead(&self) -> Result<u64> {
        dispatch!(self.count_dead())
    }

    /// Summaries of `jobs`' histories for a list of jobs, in three statements
    /// per 200 jobs: per job its runs by
    /// state, its newest run and the durations of its latest `recent`
    /// successful attempts (newest first). The attempt outcome counts of
    /// [`Store::job_stats`] are left at zero. In the order of `jobs`.
    pub async fn job_list_stats(&self, jobs: &[String], recent: u32) -> Result<Vec<JobStatsRecord>> {
        let mut out: Vec<JobStatsRecord> = jobs.iter().map(|_| JobStatsRecord::default()).collect();
        let index: std::collections::HashMap<&str, usize> =
            jobs.iter().enumerate().map(|(i, j)| (j.as_str(), i)).collect();
        for chunk in jobs.chunks(JOBS_PER_STATS_STATEMENT) {
            let rows = dispatch!(self.job_list_rows(chunk, recent))?;
            for (job, state, n) in rows.counts {
                let Some(&i) = index.get(job.as_str()) else { continue };
                let n = n as u64;
                let stats = &mut out[i];
                stats.runs_total += n;
                match parse_column::<RunState>(&state)? {
                    RunState::Succeeded => stats.succeeded = n,
                    RunState::Dead => stats.dead = n,
                    RunState::Cancelled => stats.cancelled = n,
                    _ => stats.active += n,
                }
            }
            for run in rows.lasts {
                if let Some(&i) = index.get(run.job.as_str()) {
                    out[i].last_run = Some(run);
                }
            }
            for (job, duration) in rows.durations {
                if let Some(&i) = index.get(job.as_str()) {
                    out[i].recent_durations_ms.push(duration);
                }
            }
        }
        Ok(out)
    }

    /// Statistics of one job's history.
    pub async fn job_stats(&self, job: &str) -> Result<JobStatsRecord> {
        dispatch!(self.job_stats(job))
    }

    /// Alerting's stored definitions: the channels as (name, spec YAML) by
    /// name, and the rules as (name, spec YAML) in their order. Both are read in
    /// one statement, so they come from the same [`Store::save_alert_specs`].
    pub async fn alert_specs(&self) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        dispatch!(self.alert_specs())
    }

    /// Replaces every alert channel and rule with `channels` and `rules` (each
    /// (name, spec YAML); rules keep their order) in one transaction: a channel
    /// or rule missing from them is gone. When given, also records the
    /// configuration file text (`("alerts.yaml", text)`) they came from, as
    /// [`Store::save_jobs`] does. Names must be unique within each list.
    pub async fn save_alert_specs(
        &self,
        channels: &[(String, String)],
        rules: &[(String, String)],
        applied: Option<(&str, &str)>,
    ) -> Result<()> {
        dispatch!(self.save_alert_specs(channels, rules, applied))
    }

    /// Records alert outcomes in one transaction, as multi-row statements (a
    /// failure storm records thousands of suppressed alerts at once). A row
    /// whose id is recorded already is left as it is, so a retried call
    /// records nothing twice.
    pub async fn record_alerts(&self, records: &[AlertRecord]) -> Result<()> {
        dispatch!(self.record_alerts(records))
    }

    /// Alert history rows matching `query`, newest first (by `at`, ties by id
    /// descending), at most [`AlertQuery::limit`] of them (0: 100; at most 10,000).
    pub async fn alert_history(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>> {
        dispatch!(self.alert_history(query, history_limit(query.limit)))
    }

    /// Deletes the alert history rows recorded before `older_than` (Unix ms).
    /// Returns how many were deleted.
    pub async fn prune_alert_history(&self, older_than: i64) -> Result<u64> {
        dispatch!(self.prune_alert_history(older_than))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self.close())
    }

    // -----------------------------------------------------------------------
    // The `digest` builtin (`docs/digest.md`, [`digest`])

    /// The activity of the window `query` names, aggregated by the database
    /// (bounded queries on indexes; see [`digest`]): attempts by outcome and
    /// runs by final state per job, the newest failures with their errors,
    /// the slowest jobs, the reported metric sums, and the dead-letter queue's
    /// size now.
    pub async fn digest_rows(&self, query: &digest::DigestQuery) -> Result<digest::DigestRows> {
        let mut rows = dispatch!(self.digest_rows(query))?;
        rows.dead_letter = self.count_dead().await?;
        Ok(rows)
    }

    // --- The job catalog (docs/catalog.md; queries in `*/catalog.rs`) ---

    /// Stores a published pack and its files in one transaction, unless its
    /// (name, version) is stored already: then nothing is written and the
    /// answer tells whether the stored pack has the same digest.
    pub async fn publish_pack(&self, pack: &CatalogPackRecord, files: &[CatalogFileRecord]) -> Result<CatalogPublish> {
        dispatch!(self.publish_pack(pack, files))
    }

    /// Every published pack (all versions, without files), by name then
    /// publication time.
    pub async fn catalog_packs(&self) -> Result<Vec<CatalogPackRecord>> {
        dispatch!(self.catalog_packs())
    }

    /// The files of the published pack `name` `version`, by path (empty when
    /// there is no such pack).
    pub async fn catalog_pack_files(&self, name: &str, version: &str) -> Result<Vec<CatalogFileRecord>> {
        dispatch!(self.catalog_pack_files(name, version))
    }

    /// Sets the rating (1–5) of `pack` by (`token`, `via`), keeping its review.
    pub async fn put_catalog_rating(&self, pack: &str, token: &str, via: &str, rating: u32, at: i64) -> Result<()> {
        dispatch!(self.put_catalog_rating(pack, token, via, rating, at))
    }

    /// Sets the review of `pack` by (`token`, `via`), keeping its rating.
    pub async fn put_catalog_review(&self, pack: &str, token: &str, via: &str, text: &str, at: i64) -> Result<()> {
        dispatch!(self.put_catalog_review(pack, token, via, text, at))
    }

    /// The average and count of the ratings of every rated pack, by name.
    pub async fn catalog_ratings(&self) -> Result<Vec<CatalogRatingRecord>> {
        dispatch!(self.catalog_ratings())
    }

    /// The ratings and reviews of `pack`, newest first.
    pub async fn catalog_reviews(&self, pack: &str) -> Result<Vec<CatalogReviewRecord>> {
        dispatch!(self.catalog_reviews(pack))
    }

    // --- The `backup` builtin's store snapshot ---

    /// Writes a consistent copy of a SQLite store into the new file `path`
    /// (`VACUUM INTO`, from a reader: writers go on meanwhile) and returns
    /// `true`; returns `false` for a PostgreSQL store, whose snapshot is
    /// `pg_dump`'s (see `api/snapshot.rs`).
    pub async fn vacuum_into(&self, path: &std::path::Path) -> Result<bool> {
        match &*self.backend {
            Backend::Sqlite(store) => store.vacuum_into(path).await.map(|()| true),
            Backend::Postgres(_) => Ok(false),
        }
    }

    // --- High availability (PostgreSQL only; see `crate::ha`) ---

    /// Whether several controllers may share this store (PostgreSQL).
    pub fn supports_leadership(&self) -> bool {
        matches!(&*self.backend, Backend::Postgres(_))
    }

    /// Takes the leadership lease for `ttl_ms` (database clock) if it has
    /// expired or was released, as `holder` reachable at `address`; returns
    /// the new epoch, or `None` while another controller holds it.
    pub async fn acquire_lease(&self, holder: &str, address: &str, ttl_ms: i64) -> Result<Option<i64>> {
        match &*self.backend {
            Backend::Postgres(store) => store.acquire_lease(holder, address, ttl_ms).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Extends the lease of `epoch` by `ttl_ms` from now (database clock);
    /// `false` when another epoch holds it.
    pub async fn renew_lease(&self, epoch: i64, ttl_ms: i64) -> Result<bool> {
        match &*self.backend {
            Backend::Postgres(store) => store.renew_lease(epoch, ttl_ms).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Ends the lease of `epoch` at once (a graceful shutdown), so that a
    /// standby takes over without waiting for it to expire.
    pub async fn release_lease(&self, epoch: i64) -> Result<bool> {
        match &*self.backend {
            Backend::Postgres(store) => store.release_lease(epoch).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// The lease as stored, with the database's clock.
    pub async fn lease(&self) -> Result<LeaseRecord> {
        match &*self.backend {
            Backend::Postgres(store) => store.lease().await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// The recorded term of `epoch` (who led in it, from when), or `None`
    /// when there is none. A SQLite store has no terms: always `None`.
    pub async fn leader_term(&self, epoch: i64) -> Result<Option<LeaderTermRecord>> {
        match &*self.backend {
            Backend::Postgres(store) => store.leader_term(epoch).await,
            Backend::Sqlite(_) => Ok(None),
        }
    }

    /// From now on, every write only the leader may make (new runs, state
    /// changes, schedule cursors, retention) checks in its transaction that
    /// the lease's epoch is still `epoch`, and is refused with
    /// [`WriteError::Fenced`] otherwise. Without a call (or on SQLite), writes
    /// are not fenced.
    pub fn set_fence(&self, epoch: i64) {
        if let Backend::Postgres(store) = &*self.backend {
            store.set_fence(epoch);
        }
    }

    // --- Relayed calls (PostgreSQL high availability; see `crate::ha::relay`) ---

    /// Writes `call` (its id is ignored) as pending, accepted by the standby
    /// `standby`, and notifies the leader; returns its id.
    pub async fn relay_submit(&self, standby: &str, call: &RelayedCall) -> Result<i64> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_submit(standby, call).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Claims up to `limit` pending calls, oldest first, for the fenced
    /// epoch: refused with [`WriteError::Fenced`] when another epoch leads.
    pub async fn relay_claim(&self, limit: i64) -> std::result::Result<Vec<RelayedCall>, WriteError> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_claim(limit).await,
            Backend::Sqlite(_) => Err(WriteError::Refused(leadership_needs_postgres())),
        }
    }

    /// Records the answer to the running call `id` and notifies the
    /// standbys; `false` when it was not running.
    pub async fn relay_finish(&self, id: i64, answer: &RelayAnswer) -> Result<bool> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_finish(id, answer).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Where the call `id` stands.
    pub async fn relay_state(&self, id: i64) -> Result<RelayState> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_state(id).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Withdraws the call `id` if no leader has claimed it; `true` when it
    /// was withdrawn (it will never run).
    pub async fn relay_withdraw(&self, id: i64) -> Result<bool> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_withdraw(id).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// Deletes calls that are no longer pending, written more than
    /// `older_than_ms` ago; returns how many.
    pub async fn relay_prune(&self, older_than_ms: i64) -> Result<u64> {
        match &*self.backend {
            Backend::Postgres(store) => store.relay_prune(older_than_ms).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }

    /// A connection listening on the notification `channel` (PostgreSQL
    /// only): `RELAY_CHANNEL` or `RELAY_DONE_CHANNEL`.
    pub async fn listen(&self, channel: &str) -> Result<sqlx::postgres::PgListener> {
        match &*self.backend {
            Backend::Postgres(store) => store.listen(channel).await,
            Backend::Sqlite(_) => Err(leadership_needs_postgres()),
        }
    }
}

fn leadership_needs_postgres() -> Error {
    Error::invalid(
        "db",
        "high availability needs a PostgreSQL store; a SQLite store has one controller",
    )
}

/// `url` with any password replaced by `***`, for messages and logs: the
/// `user:password@` part of the authority and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut shown = url.to_string();
    if let Some(scheme_end) = shown.find("://") {
        let rest = &shown[scheme_end + 3..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_len].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            shown.replace_range(start..scheme_end + 3 + at, "***");
        }
    }
    if let Some(query_start) = shown.find('?') {
        let (base, query) = shown.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        shown = format!("{base}{}", query.join("&"));
    }
    shown
}

/// An error opening or migrating the database at `shown` (a redacted URL):
/// keeps the cause's code, and names what failed, the URL and the cause.
fn open_error(what: &str, shown: &str, cause: Error) -> Error {
    Error {
        code: cause.code,
        message: format!("{what} {shown}: {}", cause.message),
    }
}

/// The number of alert history rows to return for a requested `limit`.
fn history_limit(limit: u32) -> u32 {
    match limit {
        0 => ALERT_HISTORY_DEFAULT_LIMIT,
        n => n.min(ALERT_HISTORY_MAX_LIMIT),
    }
}

/// (name, spec YAML) pairs.
type Specs = Vec<(String, String)>;

/// Splits (is a channel, name, spec) rows into (channels, rules), keeping
/// their order.
fn split_alert_specs(rows: impl Iterator<Item = (bool, String, String)>) -> (Specs, Specs) {
    let (mut channels, mut rules) = (Vec::new(), Vec::new());
    for (is_channel, name, spec) in rows {
        if is_channel {
            channels.push((name, spec));
        } else {
            rules.push((name, spec));
        }
    }
    (channels, rules)
}

/// Reads the `attempts` column of an alert history row.
fn attempts_column(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::internal(format!("corrupt value in store: {value} delivery attempts")))
}

/// The columns of `alert_history` that [`alert_from_row`] reads, in order.
const ALERT_COLUMNS: &str =
    "id, alert_id, at, kind, event, rule, channel, job, run_id, status, attempts, answer, title";

/// The alert history query of both dialects: rows matching `query`, newest
/// first, at most `limit`. Only the filters that are set become conditions, so
/// that the indexes on (rule, at, id) and (job, at, id) apply (on PostgreSQL to
/// generic plans too); the builder writes each dialect's placeholders.
fn alert_history_query<DB>(query: &AlertQuery, limit: u32) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    DB::Arguments: Default,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::<DB>::new(format!("SELECT {ALERT_COLUMNS} FROM alert_history WHERE TRUE"));
    if let Some(rule) = &query.rule {
        q.push(" AND rule = ").push_bind(rule.as_str());
    }
    if let Some(channel) = &query.channel {
        q.push(" AND channel = ").push_bind(channel.as_str());
    }
    if let Some(job) = &query.job {
        q.push(" AND job = ").push_bind(job.as_str());
    }
    if let Some(status) = query.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(i64::from(limit));
    q
}

/// An `alert_history` row read with [`ALERT_COLUMNS`], in either dialect.
fn alert_from_row<R>(r: &R) -> Result<AlertRecord>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let event: Option<String> = r.try_get(4)?;
    Ok(AlertRecord {
        id: r.try_get(0)?,
        alert_id: r.try_get(1)?,
        at: r.try_get(2)?,
        kind: parse_column(&r.try_get::<String, _>(3)?)?,
        event: event.map(|e| parse_column(&e)).transpose()?,
        rule: r.try_get(5)?,
        channel: r.try_get(6)?,
        job: r.try_get(7)?,
        run_id: r.try_get(8)?,
        status: parse_column(&r.try_get::<String, _>(9)?)?,
        attempts: attempts_column(r.try_get(10)?)?,
        answer: r.try_get(11)?,
        title: r.try_get(12)?,
    })
}

/// Parses a text column into a model enum.
fn parse_column<T: FromStr<Err = String>>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|e| Error::internal(format!("corrupt value in store: {e}")))
}

#[cfg(test)]
mod tests {
    use super::{history_limit, redact_url};

    #[test]
    fn alert_history_limits_default_and_cap() {
        assert_eq!(history_limit(0), 100);
        assert_eq!(history_limit(1), 1);
        assert_eq!(history_limit(10_000), 10_000);
        assert_eq!(history_limit(10_001), 10_000);
        assert_eq!(history_limit(u32::MAX), 10_000);
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://worker:s3cr@t@db:5432/worker"),
            "postgres://worker:***@db:5432/worker"
        );
        assert_eq!(redact_url("postgres://worker@db/worker"), "postgres://worker@db/worker");
        assert_eq!(
            redact_url("postgresql://db/worker?user=w&password=x&sslmode=disable"),
            "postgresql://db/worker?user=w&password=***&sslmode=disable"
        );
        assert_eq!(redact_url("sqlite://worker.db"), "sqlite://worker.db");
        assert_eq!(redact_url("sqlite:///tmp/a:b@c.db"), "sqlite:///tmp/a:b@c.db");
    }
}
