//! Validated job definitions: what the scheduler, the dispatcher and the retry
//! policy work from. They are built by [`crate::config`] from `scheduler.yaml`,
//! from documents applied through the API (`workerctl apply`) and from the
//! specs kept in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{Backoff, CatchUp, Overlap, Priority};
use crate::scheduler::cron::CronSchedule;

/// Longest attempt timeout a job may have: long enough for any batch job, short
/// enough that every deadline computed from it is representable and a lost
/// attempt is noticed within a month at worst.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// Longest chain of upstream jobs below a job (`a` depends on `b` depends on
/// `c`: the chain below `a` is 2 deep). Checked when definitions are applied
/// and again when a chain is triggered, with the same rule.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// A job definition.
#[derive(Debug, Clone)]
pub struct JobDef {
    /// Unique name, `[a-z0-9][a-z0-9._-]{0,127}`.
    pub name: String,
    /// Free text for operators.
    pub description: String,
    /// How agents run it.
    pub executor: ExecutorDef,
    /// Cron schedule in its time zone, if the job is scheduled.
    pub schedule: Option<CronSchedule>,
    /// Default priority of its runs.
    pub priority: Priority,
    /// Bound of one attempt; `None` = no timeout.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// What a fire does while a run of this job is unfinished.
    pub overlap: Overlap,
    /// What happens to fires missed while the controller was down.
    pub catch_up: CatchUp,
    /// Most missed fires run by `catch_up: all`.
    pub max_catch_up: u32,
    /// Random delay, up to this, added to each scheduled fire.
    pub jitter: Duration,
    /// Agent labels that must all match.
    pub selector: BTreeMap<String, String>,
    /// Most runs of this job running at once; `None` = unlimited.
    pub max_concurrency: Option<u32>,
    /// A disabled job keeps its history but is neither scheduled nor enqueueable.
    pub enabled: bool,
    /// Free labels for grouping.
    pub tags: Vec<String>,
    /// Jobs whose runs must succeed first when this job is triggered.
    pub depends_on: Vec<String>,
    /// Only missed fires this recent are caught up; `None` = no window.
    pub catch_up_window: Option<Duration>,
    /// How long its finished runs are kept (`retention:`).
    pub retention: Retention,
}

/// How a job is executed (exactly one kind).
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorDef {
    /// A process on the agent's host.
    Shell(ShellDef),
    /// A task built into the agent.
    Builtin(BuiltinDef),
    /// An HTTP request made by the agent.
    Http(HttpDef),
    /// A handler registered by an agent built on the SDK.
    Handler(HandlerDef),
}

impl ExecutorDef {
    /// The executor kind an agent must accept: `shell`, `http`, `builtin` or `handler`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecutorDef::Shell(_) => "shell",
            ExecutorDef::Builtin(_) => "builtin",
            ExecutorDef::Http(_) => "http",
            ExecutorDef::Handler(_) => "handler",
        }
    }

    /// The handler an agent must have registered to run this job, if any.
    pub fn handler(&self) -> Option<&str> {
        match self {
            ExecutorDef::Handler(h) => Some(&h.name),
            _ => None,
        }
    }
}

/// An HTTP request (`http:`), run by the agent's `http` executor. The URL,
/// header values and body are templates the agent fills in
/// (`{{payload.x}}`, `{{run.id}}`); `${VAR}` in header values is left as
/// written and read from the agent's environment, so secrets never pass
/// through the controller.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpDef {
    /// Upper-case method: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
    pub method: String,
    /// `http://` or `https://` URL template.
    pub url: String,
    /// Header templates.
    pub headers: BTreeMap<String, String>,
    /// Body template, empty = no body.
    pub body: String,
    /// Statuses that mean success (`2xx`, `204`, `200-299`); empty = 2xx.
    pub expect_status: Vec<String>,
    /// Retryable failures (statuses as above and `network`); empty = the
    /// default `408, 429, 5xx, network`.
    pub retry_on: Vec<String>,
    /// Timeout of the request itself; `None` = the job's timeout only.
    pub timeout: Option<Duration>,
    /// Redirects followed at most; `None` = 10.
    pub max_redirects: Option<u32>,
}

/// HTTP methods an `http` job may use.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Most redirects an `http` job may follow.
pub const MAX_HTTP_REDIRECTS: u32 = 20;

/// A handler (`handler: NAME`) registered by an SDK agent; its runs go only
/// to agents that registered the name.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerDef {
    /// The registered name, `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    pub name: String,
}

/// Whether `name` is a valid handler name (the grammar of [`HandlerDef::name`]).
pub fn valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether `pattern` is a status pattern of `expect_status` / `retry_on`: a
/// code `100..=599`, a class `1xx`..`5xx`, or a range `A-B` of codes with
/// `A <= B`. `network` is accepted by `retry_on` only (checked there).
pub fn valid_status_pattern(pattern: &str) -> bool {
    let code = |s: &str| s.len() == 3 && s.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
    if let Some(class) = pattern.strip_suffix("xx") {
        return matches!(class, "1" | "2" | "3" | "4" | "5");
    }
    match pattern.split_once('-') {
        Some((a, b)) => code(a) && code(b) && a <= b,
        None => code(pattern),
    }
}

/// A shell command: `argv` run directly, or `script` through `sh -c`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShellDef {
    /// Program and arguments; empty when `script` is used.
    pub argv: Vec<String>,
    /// Script for `sh -c`; empty when `argv` is used.
    pub script: String,
    /// Extra environment (values may come from `${ENV}` and are never shown).
    pub env: BTreeMap<String, String>,
    /// Working directory on the agent, empty = the agent's.
    pub cwd: String,
}

/// A builtin task (one of [`BUILTINS`]), its arguments checked by
/// [`crate::config::builtins`].
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinDef {
    /// One of [`BUILTINS`].
    pub name: String,
    /// Arguments, nested fields as dotted keys (`duration` for `sleep`).
    pub args: BTreeMap<String, String>,
}

/// Names of the builtin tasks agents provide.
pub const BUILTINS: &[&str] = &["noop", "sleep", "backup", "digest"];

/// Longest `retention.max_age` / `dead_max_age`: 100 years.
pub const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Most `retention.max_runs`.
pub const MAX_RETENTION_RUNS: u64 = 1_000_000_000;

/// How long a job's finished runs (succeeded, dead, cancelled) are kept
/// before the controller prunes them with their attempts, transitions,
/// dependencies and events (`engine/retention.rs`). Unset fields keep runs
/// (subject to the controller's `--retention-max-age` for `max_age`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs older than this (by their finish) are pruned.
    pub max_age: Option<Duration>,
    /// Only the newest this many finished runs are kept.
    pub max_runs: Option<u64>,
    /// Dead runs' own age limit: with it, dead runs are pruned by it alone
    /// (not by `max_age` nor counted for `max_runs`), so a failure stays
    /// visible longer than the successes around it.
    pub dead_max_age: Option<Duration>,
}

impl Retention {
    /// Whether nothing is ever pruned.
    pub fn keeps_everything(&self) -> bool {
        self.max_age.is_none() && self.max_runs.is_none() && self.dead_max_age.is_none()
    }
}

/// Retry policy of a job: how many attempts a run gets and how long it waits
/// between them (applied by [`crate::engine::transitions::settle`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, at least 1.
    pub max_attempts: u32,
    /// Growth of the delay.
    pub backoff: Backoff,
    /// Delay after the first failed attempt.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Random spread, as a fraction of the delay (0.2 = ±20%).
    pub jitter: f64,
    /// Shell exit codes that go straight to `dead`.
    pub non_retryable_exit_codes: Vec<i32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            initial_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            jitter: 0.2,
            non_retryable_exit_codes: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after failed attempt `attempt` (1-based), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let n = attempt.max(1);
        let delay = match self.backoff {
            Backoff::Fixed => self.initial_delay,
            Backoff::Linear => self.initial_delay.saturating_mul(n),
            Backoff::Exponential => {
                let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
                self.initial_delay.saturating_mul(factor)
            }
        };
        delay.min(self.max_delay)
    }

    /// Delay with jitter applied: `base * (1 + u)`, `u` uniform in `[-jitter, jitter]`,
    /// still bounded by `max_delay`.
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 {
            return base;
        }
        let spread: f64 = rng.random_range(-self.jitter..=self.jitter);
        base.mul_f64((1.0 + spread).max(0.0)).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy {
            backoff,
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn exponential_doubles_up_to_max_delay() {
        let p = policy(Backoff::Exponential);
        let delays: Vec<u64> = (1..=5).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 60, 60]);
        assert_eq!(p.base_delay(200).as_secs(), 60);
    }

    #[test]
    fn fixed_and_linear() {
        assert_eq!(policy(Backoff::Fixed).base_delay(4).as_secs(), 10);
        assert_eq!(policy(Backoff::Linear).base_delay(4).as_secs(), 40);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = RetryPolicy {
            jitter: 0.2,
            ..policy(Backoff::Fixed)
        };
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = p.delay(1, &mut rng).as_secs_f64();
            assert!((8.0..=12.0).contains(&d), "{d}");
        }
    }
}
