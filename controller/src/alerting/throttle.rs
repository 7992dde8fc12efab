//! Throttling of alerts per (rule, job), as a pure state machine over explicit
//! timestamps (Unix milliseconds, as in [`crate::time`]), so that it is tested
//! without clocks and the caller decides when "now" is.
//!
//! The first alert of a (rule, job) opens a window of the rule's `throttle` and
//! is sent; later ones inside the window are suppressed and counted. Once the
//! window has closed, [`Throttle::due_summaries`] reports it exactly once if it
//! counted anything ("N more suppressed"), and the next alert opens a new window
//! and is sent again. A window is `[start, start + throttle)`: an alert exactly
//! at its end opens the next one. A rule without throttle (zero) keeps no state.

use std::collections::BTreeMap;
use std::time::Duration;

use super::rules::Rule;

/// What to do with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it (the first of its window, or the rule does not throttle).
    Send,
    /// Count it into its window's summary instead.
    Suppress,
}

/// The alerts suppressed during one closed window of a (rule, job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The rule's name.
    pub rule: String,
    /// The job, `None` for events not about a job.
    pub job: Option<String>,
    /// How many alerts were suppressed (at least 1).
    pub suppressed: u64,
    /// When the window opened (the sent alert), Unix ms.
    pub window_start: i64,
    /// When it closed, Unix ms.
    pub window_end: i64,
}

/// One open (or closed but not yet summarised) window.
#[derive(Debug, Clone)]
struct Window {
    start: i64,
    end: i64,
    suppressed: u64,
}

/// The throttle windows of every (rule, job) with recent alerts.
#[derive(Debug, Default)]
pub struct Throttle {
    windows: BTreeMap<(String, Option<String>), Window>,
    /// Windows that were replaced by a new one before being summarised.
    closed: Vec<Summary>,
}

impl Throttle {
    /// No windows.
    pub fn new() -> Self {
        Throttle::default()
    }

    /// Decides on an alert of `rule` about `job` (`None` for events not about a
    /// job) at `now`, using the rule's `throttle` window.
    pub fn offer(&mut self, rule: &Rule, job: Option<&str>, now: i64) -> Decision {
        self.offer_window(&rule.name, rule.throttle, job, now)
    }

    /// [`Throttle::offer`] with the rule given by name and window.
    pub fn offer_window(&mut self, rule: &str, window: Duration, job: Option<&str>, now: i64) -> Decision {
        if window.is_zero() {
            return Decision::Send;
        }
        let key = (rule.to_string(), job.map(str::to_string));
        if let Some(open) = self.windows.get_mut(&key)
            && now < open.end
        {
            open.suppressed += 1;
            return Decision::Suppress;
        }
        let end = now.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        let next = Window {
            start: now,
            end,
            suppressed: 0,
        };
        if let Some(old) = self.windows.insert(key.clone(), next)
            && old.suppressed > 0
        {
            self.closed.push(summary(&key, &old));
        }
        Decision::Send
    }

    /// The summaries of the windows closed at `now` (end ≤ now) that suppressed
    /// anything, each returned once, by window end. Closed windows are forgotten,
    /// so calling this regularly (see [`Throttle::next_due`]) also bounds memory.
    pub fn due_summaries(&mut self, now: i64) -> Vec<Summary> {
        let mut due = std::mem::take(&mut self.closed);
        self.windows.retain(|key, window| {
            if window.end > now {
                return true;
            }
            if window.suppressed > 0 {
                due.push(summary(key, window));
            }
            false
        });
        due.sort_by(|a, b| (a.window_end, &a.rule, &a.job).cmp(&(b.window_end, &b.rule, &b.job)));
        due
    }

    /// When the next summary is due: the earliest end of a window that
    /// suppressed something (now, for one already replaced). `None` when no
    /// summary is pending.
    pub fn next_due(&self) -> Option<i64> {
        let replaced = self.closed.iter().map(|s| s.window_end);
        let open = self.windows.values().filter(|w| w.suppressed > 0).map(|w| w.end);
        replaced.chain(open).min()
    }

    /// Number of windows kept (open, or closed and not yet collected).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// No windows kept.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

fn summary(key: &(String, Option<String>), window: &Window) -> Summary {
    Summary {
        rule: key.0.clone(),
        job: key.1.clone(),
        suppressed: window.suppressed,
        window_start: window.start,
        window_end: window.end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const WINDOW: Duration = Duration::from_secs(15 * 60);

    #[test]
    fn first_alert_is_sent_the_rest_counted_and_summarised_once() {
        let mut t = Throttle::new();
        let decisions: Vec<Decision> = (0..10)
            .map(|i| t.offer_window("dead-runs", WINDOW, Some("backup"), 1_000 + i * MIN))
            .collect();
        assert_eq!(decisions[0], Decision::Send);
        assert!(decisions[1..].iter().all(|d| *d == Decision::Suppress));
        assert_eq!(t.next_due(), Some(1_000 + 15 * MIN));

        assert!(t.due_summaries(1_000 + 15 * MIN - 1).is_empty(), "window still open");
        let summaries = t.due_summaries(1_000 + 15 * MIN);
        assert_eq!(
            summaries,
            vec![Summary {
                rule: "dead-runs".into(),
                job: Some("backup".into()),
                suppressed: 9,
                window_start: 1_000,
                window_end: 1_000 + 15 * MIN,
            }]
        );
        assert!(t.due_summaries(1_000 + 16 * MIN).is_empty(), "exactly once");
        assert_eq!(t.next_due(), None);

        assert_eq!(
            t.offer_window("dead-runs", WINDOW, Some("backup"), 1_000 + 20 * MIN),
            Decision::Send,
            "the next alert after the window is sent"
        );
        assert_eq!(
            t.offer_window("dead-runs", WINDOW, Some("backup"), 1_000 + 21 * MIN),
            Decision::Suppress
        );
    }

    #[test]
    fn no_summary_when_nothing_was_suppressed() {
        let mut t = Throttle::new();
        assert_eq!(t.offer_window("r", WINDOW, Some("a"), 0), Decision::Send);
        assert_eq!(t.next_due(), None);
        assert!(t.due_summaries(20 * MIN).is_empty());
        assert!(t.is_empty(), "closed windows are forgotten");
    }

    #[test]
    fn an_alert_after_the_window_sends_and_the_old_window_is_still_summarised() {
        let mut t = Throttle::new();
        t.offer_window("r", WINDOW, Some("a"), 0);
        t.offer_window("r", WINDOW, Some("a"), MIN);
        t.offer_window("r", WINDOW, Some("a"), 2 * MIN);
        // No due_summaries call between the window's end and the next alert.
        assert_eq!(t.offer_window("r", WINDOW, Some("a"), 15 * MIN), Decision::Send);
        assert_eq!(t.next_due(), Some(15 * MIN));
        let summaries = t.due_summaries(15 * MIN);
        assert_eq!(summaries.len(), 1);
        assert_eq!((summaries[0].suppressed, summaries[0].window_end), (2, 15 * MIN));
        assert_eq!(t.len(), 1, "the new window stays open");
        assert!(t.due_summaries(40 * MIN).is_empty());
    }

    #[test]
    fn windows_are_per_rule_and_job() {
        let mut t = Throttle::new();
        assert_eq!(t.offer_window("r", WINDOW, Some("a"), 0), Decision::Send);
        assert_eq!(t.offer_window("r", WINDOW, Some("b"), 0), Decision::Send);
        assert_eq!(t.offer_window("other", WINDOW, Some("a"), 0), Decision::Send);
        assert_eq!(t.offer_window("r", WINDOW, None, 0), Decision::Send);
        assert_eq!(t.offer_window("r", WINDOW, None, 1), Decision::Suppress);
        assert_eq!(t.offer_window("r", WINDOW, Some("b"), 1), Decision::Suppress);
        let summaries = t.due_summaries(15 * MIN);
        let keys: Vec<(&str, Option<&str>)> = summaries.iter().map(|s| (s.rule.as_str(), s.job.as_deref())).collect();
        assert_eq!(keys, vec![("r", None), ("r", Some("b"))]);
    }

    #[test]
    fn zero_throttle_sends_everything_and_keeps_nothing() {
        let mut t = Throttle::new();
        for i in 0..5 {
            assert_eq!(t.offer_window("r", Duration::ZERO, Some("a"), i), Decision::Send);
        }
        assert!(t.is_empty());
        assert!(t.due_summaries(i64::MAX).is_empty());
    }

    #[test]
    fn offer_uses_the_rules_name_and_throttle() {
        let rule = Rule {
            name: "dead-runs".into(),
            event: super::super::rules::Event::RunDead,
            jobs: Default::default(),
            min_priority: crate::model::Priority::Low,
            channels: vec!["c".into()],
            throttle: WINDOW,
            params: super::super::rules::EventParams::None,
            enabled: true,
            spec: Default::default(),
        };
        let mut t = Throttle::new();
        assert_eq!(t.offer(&rule, Some("j"), 0), Decision::Send);
        assert_eq!(t.offer(&rule, Some("j"), 14 * MIN), Decision::Suppress);
        assert_eq!(t.offer(&rule, Some("j"), 15 * MIN), Decision::Send);
    }
}
