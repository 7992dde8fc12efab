//! Durable lifecycle events: the record, the filter of a reader, and the
//! live hub that publishes each committed write's events.
//!
//! Every run transition and every schedule event (fired, missed, skipped,
//! paused, resumed) is written as an `events` row by the backend, in the same
//! transaction as the change it describes, with a sequence number taken from
//! the one-row `event_counter` table (migration 0006). Taking numbers from a
//! counter row in the committing transaction keeps them in commit order even
//! with concurrent writers (on PostgreSQL the row stays locked until the
//! commit), gapless at commit (a rolled-back write gives its numbers back)
//! and never reused (the counter only grows, whatever retention deletes).
//!
//! After a commit, [`crate::store::Store`] publishes the write's events on the
//! [`EventHub`] (one message per write, so a round of a thousand runs is one
//! slot of the broadcast). Readers (`WatchEvents`) read the store while they
//! are behind and the hub once caught up; a gap in the sequence numbers they
//! see on the hub (a write that failed in doubt but committed, or writers that
//! published out of order) or a lag sends them back to the store.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{RunState, named_enum};
use crate::store::{InsertPlan, StateChange};

named_enum!(
    /// What an event is about.
    EventKind, "event type" {
        /// A run changed state (or was created: no `from`).
        Run => "run",
        /// A schedule fired and created a run.
        ScheduleFired => "schedule_fired",
        /// Fires missed while the controller was down (`count` of them).
        ScheduleMissed => "schedule_missed",
        /// Fires skipped by the overlap policy (`count` of them).
        ScheduleSkipped => "schedule_skipped",
        /// A schedule was paused.
        SchedulePaused => "schedule_paused",
        /// A schedule was resumed.
        ScheduleResumed => "schedule_resumed",
    }
);

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Sequence number: increasing in commit order, never reused.
    pub seq: i64,
    /// What it is about.
    pub kind: EventKind,
    /// The job.
    pub job: String,
    /// The run (run events and fires).
    pub run_id: Option<String>,
    /// State before (`None` at creation and for schedule events).
    pub from: Option<RunState>,
    /// State after (`None` for schedule events).
    pub state: Option<RunState>,
    /// The run's current attempt number after the change (0 before the first).
    pub attempt: u32,
    /// When it happened (Unix ms).
    pub at: i64,
    /// Why (the run's reason, or a schedule event's explanation).
    pub reason: Option<String>,
    /// Fires a missed or skipped event stands for (1 otherwise).
    pub count: u64,
}

/// What a reader wants: every event when both lists are empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only these jobs (all when empty).
    pub jobs: Vec<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &EventRecord) -> bool {
        (self.jobs.is_empty() || self.jobs.contains(&event.job))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

/// An event about to be written: everything but its sequence number, and,
/// for changes of existing runs, the job and attempt, which the backend reads
/// from the run row inside the transaction.
#[derive(Debug, Clone)]
pub(in crate::store) struct PendingEvent {
    /// The event; `seq` is 0 until written, `job` empty until looked up.
    pub event: EventRecord,
    /// The job and attempt must be read from the run row.
    pub lookup: bool,
}

impl PendingEvent {
    fn new(kind: EventKind, job: &str, at: i64) -> PendingEvent {
        PendingEvent {
            event: EventRecord {
                seq: 0,
                kind,
                job: job.to_string(),
                run_id: None,
                from: None,
                state: None,
                attempt: 0,
                at,
                reason: None,
                count: 1,
            },
            lookup: false,
        }
    }
}

/// The events of inserting `plan` and applying `changes`, in the order the
/// transitions are written: each new run's creation (a fire first), then each
/// change that moves a run (a change that keeps the state, such as a cancel
/// request of a running run, records no transition and no event).
pub(in crate::store) fn run_events(plan: &InsertPlan, changes: &[StateChange]) -> Vec<PendingEvent> {
    let mut events = Vec::with_capacity(plan.runs.len() + changes.len());
    for run in &plan.runs {
        if run.scheduled_for.is_some() && run.trigger == crate::model::Trigger::Schedule {
            let mut fired = PendingEvent::new(EventKind::ScheduleFired, &run.job, run.created_at);
            fired.event.run_id = Some(run.id.clone());
            events.push(fired);
        }
        let mut created = PendingEvent::new(EventKind::Run, &run.job, run.created_at);
        created.event.run_id = Some(run.id.clone());
        created.event.state = Some(run.state);
        created.event.reason = run.reason.clone();
        events.push(created);
    }
    for change in changes.iter().filter(|c| c.from != c.to) {
        let mut moved = PendingEvent::new(EventKind::Run, "", change.at);
        moved.event.run_id = Some(change.run_id.clone());
        moved.event.from = Some(change.from);
        moved.event.state = Some(change.to);
        moved.event.reason = change.reason.clone();
        moved.lookup = true;
        events.push(moved);
    }
    events
}

/// The events of moving a schedule cursor with `missed` and `skipped` fires.
pub(in crate::store) fn cursor_events(job: &str, at: i64, missed: u64, skipped: u64) -> Vec<PendingEvent> {
    let mut events = Vec::new();
    for (kind, count, why) in [
        (EventKind::ScheduleMissed, missed, "missed"),
        (EventKind::ScheduleSkipped, skipped, "skipped"),
    ] {
        if count > 0 {
            let mut event = PendingEvent::new(kind, job, at);
            event.event.count = count;
            event.event.reason = Some(format!("{count} fire(s) {why}"));
            events.push(event);
        }
    }
    events
}

/// The event of pausing or resuming a schedule.
pub(in crate::store) fn pause_event(job: &str, paused: bool, at: i64) -> PendingEvent {
    let kind = if paused {
        EventKind::SchedulePaused
    } else {
        EventKind::ScheduleResumed
    };
    PendingEvent::new(kind, job, at)
}

/// Messages of committed writes the hub keeps for slow readers; a reader
/// further behind gets `Lagged` and reads the store instead.
pub const HUB_CAPACITY: usize = 1024;

/// One committed write's events, as the hub publishes them.
#[derive(Debug)]
pub struct Committed {
    /// The events, in sequence order.
    pub events: Vec<EventRecord>,
    /// When the commit returned (microseconds since the Unix epoch).
    pub committed_micros: i64,
    /// Run id → when the agent's executor started the attempt this write
    /// ended ([`StateChange::handler_started_micros`]), for the runs whose
    /// change out of `running` carried it. Live only: never stored, so events
    /// read back from the store have no such time.
    pub handler_started: HashMap<String, i64>,
}

impl Committed {
    /// When the agent's handler started the attempt that `event` ends: set
    /// only for a run's transition out of `running` with the agent's time.
    pub fn handler_started_micros(&self, event: &EventRecord) -> Option<i64> {
        if self.handler_started.is_empty() || event.from != Some(RunState::Running) {
            return None;
        }
        self.handler_started.get(event.run_id.as_deref()?).copied()
    }
}

/// The live side of the events: each committed write's events, in one message.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<Committed>>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(HUB_CAPACITY);
        EventHub { sender }
    }
}

impl EventHub {
    /// Events committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.sender.subscribe()
    }

    /// Publishes a committed write's events (nothing when there are none or
    /// nobody listens).
    pub(in crate::store) fn publish(&self, events: Vec<EventRecord>) {
        self.publish_changes(events, &[]);
    }

    /// Publishes a committed write's events with the agents' handler start
    /// times its `changes` carry (collected only when somebody listens).
    pub(in crate::store) fn publish_changes(&self, events: Vec<EventRecord>, changes: &[StateChange]) {
        if events.is_empty() || self.sender.receiver_count() == 0 {
            return;
        }
        let handler_started = changes
            .iter()
            .filter(|c| c.from == RunState::Running)
            .filter_map(|c| Some((c.run_id.clone(), c.handler_started_micros?)))
            .collect();
        let _ = self.sender.send(Arc::new(Committed {
            events,
            committed_micros: chrono::Utc::now().timestamp_micros(),
            handler_started,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matches_jobs_and_kinds() {
        let mut pending = PendingEvent::new(EventKind::Run, "a", 1);
        pending.event.seq = 1;
        let event = pending.event;
        assert!(EventFilter::default().matches(&event));
        let jobs = EventFilter {
            jobs: vec!["b".into(), "a".into()],
            kinds: vec![],
        };
        assert!(jobs.matches(&event));
        let other = EventFilter {
            jobs: vec!["b".into()],
            kinds: vec![],
        };
        assert!(!other.matches(&event));
        let kinds = EventFilter {
            jobs: vec![],
            kinds: vec![EventKind::SchedulePaused],
        };
        assert!(!kinds.matches(&event));
    }

    #[test]
    fn handler_start_rides_on_the_end_of_an_attempt_only() {
        let hub = EventHub::default();
        let mut live = hub.subscribe();
        let mut ended = StateChange::new("r1", RunState::Running, RunState::Succeeded, 5, None);
        ended.handler_started_micros = Some(4_000);
        let mut other = StateChange::new("r2", RunState::Queued, RunState::Running, 5, None);
        other.handler_started_micros = Some(9_000); // not an attempt's end: ignored
        let plain = StateChange::new("r3", RunState::Running, RunState::Dead, 5, None);
        let changes = [ended, other, plain];
        let mut events: Vec<EventRecord> = run_events(&InsertPlan::default(), &changes)
            .into_iter()
            .map(|p| p.event)
            .collect();
        for (i, e) in events.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        hub.publish_changes(events, &changes);
        let committed = live.try_recv().unwrap();
        let times: Vec<Option<i64>> = committed
            .events
            .iter()
            .map(|e| committed.handler_started_micros(e))
            .collect();
        assert_eq!(times, [Some(4_000), None, None]);
    }

    #[test]
    fn cursor_events_only_for_counts() {
        assert!(cursor_events("a", 1, 0, 0).is_empty());
        let events = cursor_events("a", 1, 2, 1);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.kind, EventKind::ScheduleMissed);
        assert_eq!(events[0].event.count, 2);
        assert_eq!(events[1].event.kind, EventKind::ScheduleSkipped);
    }
}
