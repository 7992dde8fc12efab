//! What the store needs to prune history: a job's [`PruneRule`] (cut-off
//! instants and a count, already resolved from its `retention:` by
//! `engine/retention.rs`) and what a batch deleted ([`PruneCounts`]).
//!
//! Both backends select the runs to prune with the same rules, inside the
//! transaction that deletes them:
//!
//! * finished runs only (`succeeded`, `dead`, `cancelled`), by their finish
//!   time (their creation time where an old row has none);
//! * never a run that an unfinished run depends on (a `run_dependencies` row
//!   whose downstream run is not finished): the engine still reads it when
//!   that run's other upstream runs settle;
//! * `cutoff`: finished before it; dead runs too unless `dead_cutoff` is set,
//!   then dead runs go by `dead_cutoff` alone and are not counted for `keep`;
//! * `keep`: only the newest `keep` counted runs stay.
//!
//! A pruned run is deleted with its attempts, transitions, events and
//! dependency rows (cascades), its idempotency key and the dependency rows
//! that name it as upstream, in one transaction per batch.

/// Which finished runs of one job may be pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRule {
    /// The job.
    pub job: String,
    /// Finished runs that finished before this instant (Unix ms) go.
    pub cutoff: Option<i64>,
    /// Dead runs that finished before this instant go; when set, dead runs
    /// are judged by it alone.
    pub dead_cutoff: Option<i64>,
    /// Only the newest this many (counted) finished runs stay.
    pub keep: Option<u64>,
}

impl PruneRule {
    /// Whether the rule can prune anything.
    pub fn is_empty(&self) -> bool {
        self.cutoff.is_none() && self.dead_cutoff.is_none() && self.keep.is_none()
    }
}

/// Runs one prune (or dry run) deleted (or would delete), by final state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Succeeded runs.
    pub succeeded: u64,
    /// Dead runs.
    pub dead: u64,
    /// Cancelled runs.
    pub cancelled: u64,
}

impl PruneCounts {
    /// All runs.
    pub fn total(&self) -> u64 {
        self.succeeded + self.dead + self.cancelled
    }

    /// Counts one run in `state`.
    pub(in crate::store) fn add(&mut self, state: &str, n: u64) {
        match state {
            "succeeded" => self.succeeded += n,
            "dead" => self.dead += n,
            _ => self.cancelled += n,
        }
    }

    /// Adds another count.
    pub fn merge(&mut self, other: &PruneCounts) {
        self.succeeded += other.succeeded;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
    }
}

/// One batch: the runs deleted and their counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneBatch {
    /// Ids of the deleted runs.
    pub ids: Vec<String>,
    /// By final state.
    pub counts: PruneCounts,
}

/// The finished states, as SQL.
pub(in crate::store) const FINISHED: &str = "('succeeded', 'dead', 'cancelled')";

/// The `WHERE` condition (after `FROM runs r`) selecting the runs `rule`
/// prunes, with `$job`, `$cutoff`, `$dead_cutoff` and `$keep` left for the
/// caller to bind in the order [`condition_binds`] names them.
pub(in crate::store) fn condition(rule: &PruneRule) -> (String, Vec<Bind>) {
    let finished_at = "COALESCE(r.finished_at, r.created_at)";
    let mut binds = vec![Bind::Job];
    let mut any = Vec::new();
    if rule.cutoff.is_some() {
        binds.push(Bind::Cutoff);
        if rule.dead_cutoff.is_some() {
            any.push(format!("(r.state <> 'dead' AND {finished_at} < ?)"));
        } else {
            any.push(format!("{finished_at} < ?"));
        }
    }
    if rule.dead_cutoff.is_some() {
        binds.push(Bind::DeadCutoff);
        any.push(format!("(r.state = 'dead' AND {finished_at} < ?)"));
    }
    if rule.keep.is_some() {
        let counted = if rule.dead_cutoff.is_some() {
            "('succeeded', 'cancelled')"
        } else {
            FINISHED
        };
        binds.push(Bind::Job);
        binds.push(Bind::Keep);
        any.push(format!(
            "(r.state IN {counted} AND r.id NOT IN (SELECT k.id FROM runs k WHERE k.job = ? AND k.state IN {counted}
               ORDER BY COALESCE(k.finished_at, k.created_at) DESC, k.id DESC LIMIT ?))"
        ));
    }
    if any.is_empty() {
        any.push("FALSE".into());
    }
    let sql = format!(
        "r.job = ? AND r.state IN {FINISHED} AND ({})
         AND NOT EXISTS (SELECT 1 FROM run_dependencies d JOIN runs w ON w.id = d.run_id
                         WHERE d.upstream_id = r.id AND w.state NOT IN {FINISHED})",
        any.join(" OR ")
    );
    (sql, binds)
}

/// A value [`condition`] leaves to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Bind {
    /// The job name.
    Job,
    /// `cutoff`.
    Cutoff,
    /// `dead_cutoff`.
    DeadCutoff,
    /// `keep`.
    Keep,
}

impl Bind {
    /// The value to bind for `rule`: the job as text, the rest as integers.
    pub(in crate::store) fn value(self, rule: &PruneRule) -> Result<i64, &str> {
        match self {
            Bind::Job => Err(rule.job.as_str()),
            Bind::Cutoff => Ok(rule.cutoff.unwrap_or(0)),
            Bind::DeadCutoff => Ok(rule.dead_cutoff.unwrap_or(0)),
            Bind::Keep => Ok(i64::try_from(rule.keep.unwrap_or(0)).unwrap_or(i64::MAX)),
        }
    }
}

/// The `DELETE` of [`crate::store::Store::prune_schedule_events`], built for
/// either backend; `None` when `rule` prunes no schedule events (neither a
/// cut-off nor a count).
pub(in crate::store) fn schedule_events_delete<DB: sqlx::Database>(
    rule: &PruneRule,
    limit: u32,
) -> Option<sqlx::QueryBuilder<DB>>
where
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if rule.cutoff.is_none() && rule.keep.is_none() {
        return None;
    }
    let mut q = sqlx::QueryBuilder::<DB>::new(
        "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e WHERE e.run_id IS NULL AND e.job = ",
    );
    q.push_bind(rule.job.clone()).push(" AND (");
    let mut first = true;
    if let Some(cutoff) = rule.cutoff {
        q.push("e.at < ").push_bind(cutoff);
        first = false;
    }
    if let Some(keep) = rule.keep {
        if !first {
            q.push(" OR ");
        }
        q.push("e.seq NOT IN (SELECT k.seq FROM events k WHERE k.run_id IS NULL AND k.job = ")
            .push_bind(rule.job.clone())
            .push(" ORDER BY k.seq DESC LIMIT ")
            .push_bind(i64::try_from(keep).unwrap_or(i64::MAX))
            .push(")");
    }
    q.push(") ORDER BY e.seq LIMIT ").push_bind(i64::from(limit)).push(")");
    Some(q)
}

/// The query of [`crate::store::Store::history_jobs`].
pub(in crate::store) const HISTORY_JOBS: &str = "SELECT job FROM runs UNION SELECT job FROM events ORDER BY 1";
