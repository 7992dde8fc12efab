//! The test configuration, written once: the jobs and agents every sequence
//! uses, and the `scheduler.yaml` the engine parses from the same table, so
//! that the reference model and the engine cannot disagree on a definition.

use worker_controller::model::Priority;

/// Start of every sequence's manual clock (2026-01-01T00:00:00Z, Unix ms).
pub const T0: i64 = 1_767_225_600_000;
/// `EngineSettings::lease_timeout`, in ms.
pub const LEASE_MS: i64 = 5_000;
/// `EngineSettings::heartbeat_interval`, in ms.
pub const HEARTBEAT_MS: u64 = 1_000;
/// `EngineSettings::idempotency_window`, in ms.
pub const WINDOW_MS: i64 = 3_600_000;
/// A disconnected agent without runs is forgotten after this long (engine/timers.rs).
pub const FORGET_AGENT_MS: i64 = 600_000;

/// How a job's retry delay grows (`retry.backoff` of a job definition).
#[derive(Debug, Clone, Copy)]
pub enum Backoff {
    /// `initial * 2^(n-1)`.
    Exponential,
    /// `initial` every time.
    Fixed,
    /// `initial * n`.
    Linear,
}

/// One job of the test configuration.
pub struct JobSpec {
    /// Job name.
    pub name: &'static str,
    /// Default priority of its runs.
    pub priority: Priority,
    /// Attempts in total.
    pub max_attempts: u32,
    /// Growth of the retry delay.
    pub backoff: Backoff,
    /// Delay after the first failed attempt, ms.
    pub initial_ms: i64,
    /// Upper bound of any delay, ms.
    pub max_ms: i64,
    /// Runs of the job running at once, at most.
    pub max_concurrency: Option<u32>,
    /// Attempt timeout, ms (`None`: no timeout).
    pub timeout_ms: Option<i64>,
    /// Upstream jobs: triggering the job enqueues a chain.
    pub depends_on: &'static [&'static str],
}

impl JobSpec {
    /// The retry delay after failed attempt `attempt` (jitter is 0).
    pub fn delay_ms(&self, attempt: u32) -> i64 {
        let n = i64::from(attempt.max(1));
        let delay = match self.backoff {
            Backoff::Exponential => self.initial_ms.saturating_mul(1i64 << (n - 1).min(40)),
            Backoff::Fixed => self.initial_ms,
            Backoff::Linear => self.initial_ms.saturating_mul(n),
        };
        delay.min(self.max_ms)
    }

    /// Whether triggering the job creates a chain (it is never a plain enqueue).
    pub fn is_chain(&self) -> bool {
        !self.depends_on.is_empty()
    }

    fn yaml(&self) -> String {
        let backoff = match self.backoff {
            Backoff::Exponential => "exponential",
            Backoff::Fixed => "fixed",
            Backoff::Linear => "linear",
        };
        let mut text = format!(
            "  {}:\n    builtin: noop\n    priority: {}\n    timeout: {}ms\n",
            self.name,
            self.priority,
            self.timeout_ms.unwrap_or(0)
        );
        if let Some(limit) = self.max_concurrency {
            text += &format!("    max_concurrency: {limit}\n");
        }
        if self.is_chain() {
            text += &format!("    depends_on: [{}]\n", self.depends_on.join(", "));
        }
        text += &format!(
            "    retry: {{ max_attempts: {}, backoff: {backoff}, initial_delay: {}ms, max_delay: {}ms, jitter: 0 }}\n",
            self.max_attempts, self.initial_ms, self.max_ms
        );
        text
    }
}

/// The jobs: every priority, a `max_concurrency: 1` and a `2`, a job with a
/// timeout (so deadlines expire), a one-attempt job (straight to the DLQ),
/// and a diamond chain `deploy -> [build, test]`, `test -> [build]`, so
/// that a run waits for two upstream runs.
pub const JOBS: &[JobSpec] = &[
    JobSpec {
        name: "alpha",
        priority: Priority::Normal,
        max_attempts: 3,
        backoff: Backoff::Exponential,
        initial_ms: 1_000,
        max_ms: 10_000,
        max_concurrency: None,
        timeout_ms: None,
        depends_on: &[],
    },
    JobSpec {
        name: "beta",
        priority: Priority::High,
        max_attempts: 2,
        backoff: Backoff::Fixed,
        initial_ms: 2_000,
        max_ms: 10_000,
        max_concurrency: Some(1),
        timeout_ms: None,
        depends_on: &[],
    },
    JobSpec {
        name: "gamma",
        priority: Priority::Low,
        max_attempts: 1,
        backoff: Backoff::Exponential,
        initial_ms: 1_000,
        max_ms: 10_000,
        max_concurrency: None,
        timeout_ms: Some(3_000),
        depends_on: &[],
    },
    JobSpec {
        name: "urgent",
        priority: Priority::Critical,
        max_attempts: 4,
        backoff: Backoff::Linear,
        initial_ms: 500,
        max_ms: 1_500,
        max_concurrency: Some(2),
        timeout_ms: None,
        depends_on: &[],
    },
    JobSpec {
        name: "build",
        priority: Priority::Normal,
        max_attempts: 2,
        backoff: Backoff::Exponential,
        initial_ms: 1_000,
        max_ms: 10_000,
        max_concurrency: None,
        timeout_ms: None,
        depends_on: &[],
    },
    JobSpec {
        name: "test",
        priority: Priority::Normal,
        max_attempts: 2,
        backoff: Backoff::Fixed,
        initial_ms: 1_000,
        max_ms: 10_000,
        max_concurrency: None,
        timeout_ms: None,
        depends_on: &["build"],
    },
    JobSpec {
        name: "deploy",
        priority: Priority::High,
        max_attempts: 3,
        backoff: Backoff::Exponential,
        initial_ms: 1_000,
        max_ms: 4_000,
        max_concurrency: None,
        timeout_ms: Some(4_000),
        depends_on: &["build", "test"],
    },
];

/// The index of job `name` in [`JOBS`].
pub fn job_index(name: &str) -> Option<usize> {
    JOBS.iter().position(|j| j.name == name)
}

/// The `scheduler.yaml` of [`JOBS`].
pub fn scheduler_yaml() -> String {
    let mut text = String::from("jobs:\n");
    for job in JOBS {
        text += &job.yaml();
    }
    text
}

/// The agents: (id, capacity). Every one runs every job (`builtin`).
pub const AGENTS: &[(&str, u32)] = &[("agent-a", 1), ("agent-b", 2), ("agent-c", 3)];
