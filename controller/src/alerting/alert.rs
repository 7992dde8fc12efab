//! One alert on its way to channels, and the words the alert history uses.
//!
//! An [`Alert`] is built by the alerting service from something that happened
//! (a failed attempt, a lost agent, a closed throttle window, `alerts test`) and
//! rendered per channel by [`super::message`]; each channel's delivery ends as an
//! [`AlertStatus`] recorded in the store with the channel's answer.

use serde::Serialize;

use super::rules::Event;
use crate::model::{Priority, named_enum};

named_enum!(
    /// What an alert is.
    AlertKind, "alert kind" {
        /// An event routed by a rule.
        Alert => "alert",
        /// The count of alerts a throttle window suppressed, sent when it closes.
        Summary => "summary",
        /// `workerctl alerts test CHANNEL`.
        Test => "test",
    }
);

named_enum!(
    /// How one alert ended for one channel.
    AlertStatus, "alert status" {
        /// The channel accepted it.
        Sent => "sent",
        /// Every delivery attempt failed (or the channel refused it for good).
        Failed => "failed",
        /// Counted into its throttle window's summary instead of being sent.
        Suppressed => "suppressed",
    }
);

/// One alert: what happened and where to look. Every optional field is shown
/// only when set; secrets never appear here.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Unique id (a ULID), shared by the history rows of its channels and sent
    /// as the webhook delivery id.
    pub id: String,
    /// Alert, summary or test.
    pub kind: AlertKind,
    /// The event (`None` for a test).
    pub event: Option<Event>,
    /// The rule that routed it (`None` for a test).
    pub rule: Option<String>,
    /// The job it is about.
    pub job: Option<String>,
    /// The job's (or the queue's) priority.
    pub priority: Option<Priority>,
    /// The run it is about.
    pub run_id: Option<String>,
    /// The attempt it is about (1-based).
    pub attempt: Option<u32>,
    /// The run's maximum number of attempts.
    pub max_attempts: Option<u32>,
    /// The agent's name.
    pub agent: Option<String>,
    /// One line: what happened (`run_failed: backup.nightly attempt 2/3 failed`).
    pub title: String,
    /// A sentence or two of explanation.
    pub text: String,
    /// The attempt's error.
    pub error: Option<String>,
    /// The end of the attempt's output.
    pub output_tail: Option<String>,
    /// The run's (or the queue's) page in the web UI.
    pub link: Option<String>,
    /// Further facts as (label, value): duration, threshold, depth, count…
    pub details: Vec<(String, String)>,
    /// For a summary: how many alerts its window suppressed.
    pub suppressed: Option<u64>,
    /// For a summary: when the window opened (Unix ms).
    pub window_start: Option<i64>,
    /// For a summary: when the window closed (Unix ms).
    pub window_end: Option<i64>,
    /// For `leader_changed`: who leads now and who led before.
    pub leader: Option<super::facts::LeaderChange>,
    /// When it happened (Unix ms).
    pub at: i64,
}

impl Alert {
    /// An alert of `kind` with a fresh id, `title` and `text`, happening `at`;
    /// every other field unset.
    pub fn new(kind: AlertKind, title: impl Into<String>, text: impl Into<String>, at: i64) -> Alert {
        Alert {
            id: ulid::Ulid::new().to_string(),
            kind,
            event: None,
            rule: None,
            job: None,
            priority: None,
            run_id: None,
            attempt: None,
            max_attempts: None,
            agent: None,
            title: title.into(),
            text: text.into(),
            error: None,
            output_tail: None,
            link: None,
            details: Vec::new(),
            suppressed: None,
            window_start: None,
            window_end: None,
            leader: None,
            at,
        }
    }
}
