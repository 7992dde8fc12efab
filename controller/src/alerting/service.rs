//! The alerting service: the task that turns facts into deliveries.
//!
//! ```text
//! engine / scheduler ──Fact──▶ [alert loop] ──▶ detect ──▶ rules ──▶ throttle ──▶ delivery tasks
//!                                   │  ▲ every 250 ms: running attempts (run_slow),        │
//!                                   │  │ the queue's backlog, closed throttle windows       │
//!                                   ▼                                                       ▼
//!                          suppressed rows ─────────────▶ [history writer] ◀──── sent / failed rows
//! ```
//!
//! * The engine only pushes facts onto an unbounded channel ([`AlertSink`]);
//!   nothing here ever holds the engine lock while talking to a channel, so a
//!   slow or dead channel cannot delay scheduling or dispatch.
//! * Each (alert, channel) is delivered by its own task with retries and
//!   backoff ([`Deliverer::deliver_gated`]); at most
//!   [`MAX_ATTEMPTS_IN_PROGRESS_PER_CHANNEL`] attempts talk to one channel at
//!   once (a task waiting between attempts holds no slot), so a slow or
//!   rate-limited channel only delays its own alerts. A channel with
//!   [`MAX_PENDING_PER_CHANNEL`] deliveries waiting records further alerts as
//!   failed at once instead of queueing without bound. Each outcome, with the
//!   channel's answer, goes to the history writer, which records rows in batches.
//! * Throttled alerts are recorded `suppressed` per channel; when a window that
//!   suppressed something closes, one summary goes to the rule's channels.
//! * On shutdown, deliveries get [`SHUTDOWN_GRACE`] to finish; those still
//!   retrying are recorded `failed` ("controller stopped") rather than lost
//!   silently, and the history is flushed before the store closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::alert::{Alert, AlertKind, AlertStatus};
use super::config::{AlertsConfig, Channel};
use super::deliver::{Deliverer, DeliveryPolicy};
use super::detect::{Detector, Links};
use super::facts::{AlertSink, Fact, interest_mask};
use super::rules::{Event, Rule};
use super::throttle::{Decision, Summary, Throttle};
use crate::engine::Engine;
use crate::store::{AlertQuery, AlertRecord, Store};
use crate::time::{now_ms, rfc3339};

/// Attempts talking to one channel at the same time (the others wait their turn).
pub const MAX_ATTEMPTS_IN_PROGRESS_PER_CHANNEL: usize = 4;
/// Deliveries one channel may have waiting or retrying; beyond it, alerts for
/// the channel are recorded `failed` at once (memory stays bounded in a storm).
pub const MAX_PENDING_PER_CHANNEL: usize = 1_000;
/// How long shutdown waits for deliveries in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often running attempts, the backlog and throttle windows are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Facts routed in one go before the alert loop yields to its other work.
const FACTS_PER_TURN: usize = 10_000;
/// History rows written in one transaction at most.
const HISTORY_BATCH: usize = 2_000;

/// How alerting behaves (from the controller's flags).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Attempts, backoff and timeout of each delivery.
    pub delivery: DeliveryPolicy,
    /// Base URL of the web UI for links in alerts (`--web-url`).
    pub web_url: Option<String>,
    /// Alert history older than this is deleted (checked hourly); zero keeps all.
    pub history_retention: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            delivery: DeliveryPolicy::default(),
            web_url: None,
            history_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Handle to the running alerting service: its configuration, history and
/// test deliveries (for the API). Cheap to clone.
#[derive(Clone)]
pub struct AlertService {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) deliverer: Deliverer,
    config: std::sync::RwLock<Arc<AlertsConfig>>,
    interest: Arc<AtomicU32>,
    records: mpsc::UnboundedSender<AlertRecord>,
    /// Serializes changes of channels and rules.
    pub(super) edit_lock: tokio::sync::Mutex<()>,
    /// Base URL of the web UI (`--web-url`), for links in digests.
    web_url: Option<String>,
}

impl AlertService {
    /// Starts alerting with `config`: connects `engine` to it and spawns the
    /// alert loop and the history writer onto `tasks`; both stop when
    /// `shutdown` turns true (after finishing what they hold).
    /// `day_sums` are the metric sums of the current UTC day so far (see
    /// [`Store::metric_sums_since`]), for `metric_high` rules `per: day`.
    pub fn start(
        store: Store,
        engine: Arc<Engine>,
        config: AlertsConfig,
        settings: AlertSettings,
        day_sums: Vec<(String, String, f64)>,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Result<AlertService, String> {
        let deliverer = Deliverer::new(settings.delivery.clone())?;
        let (facts_tx, facts_rx) = mpsc::unbounded_channel();
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let interest = Arc::new(AtomicU32::new(0));
        let inner = Arc::new(Inner {
            store: store.clone(),
            deliverer,
            config: std::sync::RwLock::new(Arc::new(AlertsConfig::default())),
            interest: interest.clone(),
            records: records_tx,
            edit_lock: tokio::sync::Mutex::new(()),
            web_url: settings.web_url.clone(),
        });
        let service = AlertService { inner };
        service.set_config(config);
        engine.set_alert_sink(AlertSink::new(facts_tx, interest));
        let (flushed_tx, flushed_rx) = oneshot::channel();
        tasks.spawn(history_writer(
            store,
            records_rx,
            flushed_rx,
            settings.history_retention,
            engine.metrics().clone(),
        ));
        let mut detector = Detector::new();
        detector.seed_day_sums(engine.now().div_euclid(86_400_000), day_sums);
        let alert_loop = AlertLoop {
            service: service.clone(),
            engine,
            links: Links::new(settings.web_url),
            detector,
            throttle: Throttle::new(),
            deliveries: JoinSet::new(),
            in_flight: HashMap::new(),
            gates: HashMap::new(),
            pending: HashMap::new(),
        };
        tasks.spawn(alert_loop.run(facts_rx, shutdown, flushed_tx));
        Ok(service)
    }

    /// The channels and rules in force.
    pub fn config(&self) -> Arc<AlertsConfig> {
        self.inner.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The deliverer (its SMTP transport and policy), for the `digest` builtin.
    pub fn deliverer(&self) -> &Deliverer {
        &self.inner.deliverer
    }

    /// Base URL of the web UI (`--web-url`), when set.
    pub fn web_url(&self) -> Option<&str> {
        self.inner.web_url.as_deref()
    }

    /// Puts `config` in force (the events its rules are about are reported by
    /// the engine from now on).
    pub(super) fn set_config(&self, config: AlertsConfig) {
        let mask = interest_mask(config.rules.iter().filter(|r| r.enabled).map(|r| r.event));
        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        self.inner.interest.store(mask, Ordering::Relaxed);
    }

    /// Recorded alerts, newest first.
    pub async fn history(&self, query: &AlertQuery) -> crate::error::Result<Vec<AlertRecord>> {
        self.inner.store.alert_history(query).await
    }

    /// Sends a test message to channel `name` (one attempt, no retries: the
    /// answer is what an operator wants to see) and records it. A disabled
    /// channel is tested too: that is how an operator checks it before
    /// enabling it.
    pub async fn test_channel(&self, name: &str) -> crate::error::Result<AlertRecord> {
        let config = self.config();
        let channel = config.channels.get(name).ok_or_else(|| {
            crate::error::Error::not_found(format!(
                "alert channel \"{}\" is not defined (defined: {})",
                crate::limits::echo(name),
                names(config.channels.keys())
            ))
        })?;
        let at = now_ms();
        let mut alert = Alert::new(
            AlertKind::Test,
            format!("test: alert channel {name} works"),
            format!(
                "This is a test message from Worker, sent with `workerctl alerts test {name}` at {}.",
                rfc3339(at)
            ),
            at,
        );
        alert.details.push(("Channel".into(), channel.to_string()));
        if !channel.enabled {
            alert.details.push((
                "State".into(),
                "disabled: rules send it nothing until it is enabled".into(),
            ));
        }
        let (status, answer) = match self.inner.deliverer.attempt(channel, &alert).await {
            Ok(answer) => (AlertStatus::Sent, answer),
            Err(e) => (AlertStatus::Failed, e.message),
        };
        let record = record_of(&alert, name, status, 1, answer);
        self.inner.store.record_alerts(std::slice::from_ref(&record)).await?;
        Ok(record)
    }
}

/// `a, b, c` (or `none`).
pub(super) fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The history row of `alert` for `channel`.
fn record_of(alert: &Alert, channel: &str, status: AlertStatus, attempts: u32, answer: String) -> AlertRecord {
    AlertRecord {
        id: ulid::Ulid::new().to_string(),
        alert_id: alert.id.clone(),
        at: now_ms(),
        kind: alert.kind,
        event: alert.event,
        rule: alert.rule.clone(),
        channel: channel.to_string(),
        job: alert.job.clone(),
        run_id: alert.run_id.clone(),
        status,
        attempts,
        answer,
        title: alert.title.clone(),
    }
}

/// The state of the alert loop task.
struct AlertLoop {
    service: AlertService,
    engine: Arc<Engine>,
    links: Links,
    detector: Detector,
    throttle: Throttle,
    deliveries: JoinSet<()>,
    /// What each delivery task is delivering, for the record if it is cut short.
    in_flight: HashMap<tokio::task::Id, (Alert, String)>,
    /// Per channel: the slots of attempts in progress.
    gates: HashMap<String, Arc<Semaphore>>,
    /// Per channel: deliveries waiting or retrying.
    pending: HashMap<String, usize>,
}

impl AlertLoop {
    async fn run(
        mut self,
        mut facts: mpsc::UnboundedReceiver<Fact>,
        mut shutdown: watch::Receiver<bool>,
        flushed: oneshot::Sender<()>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                fact = facts.recv() => {
                    let Some(fact) = fact else { break };
                    let config = self.service.config();
                    let alerts = self.detector.on_fact(&config, &self.links, &fact);
                    self.route(&config, alerts);
                    self.take_waiting_facts(&mut facts);
                }
                _ = tick.tick() => self.on_tick(&mut facts).await,
                Some(done) = self.deliveries.join_next_with_id() => self.finished(done),
                _ = shutdown.changed() => break,
            }
        }
        // Facts reported before the engine stopped are still routed.
        while !facts.is_empty() {
            self.take_waiting_facts(&mut facts);
        }
        self.stop().await;
        let _ = flushed.send(());
    }

    /// Routes facts already waiting (a failure storm), at most
    /// [`FACTS_PER_TURN`] before the loop looks at its other work again.
    fn take_waiting_facts(&mut self, facts: &mut mpsc::UnboundedReceiver<Fact>) {
        let config = self.service.config();
        let mut alerts = Vec::new();
        for _ in 0..FACTS_PER_TURN {
            let Ok(fact) = facts.try_recv() else { break };
            alerts.extend(self.detector.on_fact(&config, &self.links, &fact));
        }
        self.route(&config, alerts);
    }

    /// Polls what facts cannot tell (slow running attempts, the backlog) and
    /// sends the summaries of closed throttle windows.
    async fn on_tick(&mut self, facts: &mut mpsc::UnboundedReceiver<Fact>) {
        let config = self.service.config();
        let now = now_ms();
        let wants = |event| config.rules.iter().any(|r: &Rule| r.enabled && r.event == event);
        let mut alerts = Vec::new();
        if wants(Event::RunSlow) {
            let running = self.engine.running_attempts().await;
            // Attempts that ended before the snapshot have their facts queued
            // already: judge those first, or a slow attempt that just ended
            // would be forgotten by the check and alerted again by its fact.
            self.take_waiting_facts(facts);
            alerts.extend(self.detector.check_running(&config, &self.links, &running, now));
        }
        if wants(Event::QueueBacklog) {
            let backlog = self.engine.backlog().await;
            alerts.extend(self.detector.check_backlog(&config, &self.links, &backlog, now));
        }
        self.route(&config, alerts);
        for summary in self.throttle.due_summaries(now) {
            self.summarise(&config, summary);
        }
    }

    /// Throttles each alert and delivers it (or records it suppressed) on its
    /// rule's enabled channels ([`AlertsConfig::delivering_channels`]).
    fn route(&mut self, config: &AlertsConfig, alerts: Vec<Alert>) {
        let now = now_ms();
        for alert in alerts {
            let Some(rule) = alert
                .rule
                .as_deref()
                .and_then(|name| config.rules.iter().find(|r| r.name == name))
            else {
                continue;
            };
            // Disabled channels get nothing, not even a `suppressed` row; a
            // rule whose channels are all disabled does not touch its throttle.
            let channels: Vec<&Channel> = config.delivering_channels(rule).collect();
            if channels.is_empty() {
                continue;
            }
            match self.throttle.offer(rule, alert.job.as_deref(), now) {
                Decision::Send => {
                    for channel in channels {
                        self.deliver(channel.clone(), alert.clone());
                    }
                }
                Decision::Suppress => {
                    let answer = format!(
                        "suppressed: rule {} sends one alert per {} for each job",
                        rule.name,
                        worker_duration::format(rule.throttle)
                    );
                    for channel in channels {
                        let record = record_of(&alert, &channel.name, AlertStatus::Suppressed, 0, answer.clone());
                        let _ = self.service.inner.records.send(record);
                    }
                }
            }
        }
    }

    /// Sends the summary of a closed window to its rule's channels.
    fn summarise(&mut self, config: &AlertsConfig, s: Summary) {
        let Some(rule) = config.rules.iter().find(|r| r.name == s.rule) else {
            tracing::info!(rule = %s.rule, suppressed = s.suppressed, "summary of a removed rule dropped");
            return;
        };
        let about = s.job.as_deref().map(|j| format!(" for job {j}")).unwrap_or_default();
        let mut alert = Alert::new(
            AlertKind::Summary,
            format!(
                "summary: {} more {} alert(s){about} were suppressed",
                s.suppressed, rule.event
            ),
            format!(
                "Rule {} sends one alert per {}{about}; {} more alert(s) came between {} and {} and were not sent.",
                rule.name,
                worker_duration::format(rule.throttle),
                s.suppressed,
                rfc3339(s.window_start),
                rfc3339(s.window_end)
            ),
            s.window_end,
        );
        alert.event = Some(rule.event);
        alert.rule = Some(rule.name.clone());
        alert.job = s.job.clone();
        alert.link = s.job.as_deref().and_then(|j| self.links.job(j));
        alert.suppressed = Some(s.suppressed);
        alert.window_start = Some(s.window_start);
        alert.window_end = Some(s.window_end);
        for channel in config.delivering_channels(rule) {
            self.deliver(channel.clone(), alert.clone());
        }
    }

    /// Starts delivering `alert` to `channel` in its own task (or records it
    /// failed when the channel already has too many deliveries waiting).
    fn deliver(&mut self, channel: Channel, alert: Alert) {
        let name = channel.name.clone();
        let pending = self.pending.entry(name.clone()).or_default();
        if *pending >= MAX_PENDING_PER_CHANNEL {
            let answer = format!(
                "dropped: {MAX_PENDING_PER_CHANNEL} alerts are already waiting for channel {name} (it is slow or down)"
            );
            let _ = self
                .service
                .inner
                .records
                .send(record_of(&alert, &name, AlertStatus::Failed, 0, answer));
            return;
        }
        *pending += 1;
        let gate = self
            .gates
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_ATTEMPTS_IN_PROGRESS_PER_CHANNEL)))
            .clone();
        let inner = self.service.inner.clone();
        let task_alert = alert.clone();
        let handle = self.deliveries.spawn(async move {
            let delivery = inner.deliverer.deliver_gated(&channel, &task_alert, Some(&gate)).await;
            if delivery.status == AlertStatus::Failed {
                tracing::warn!(channel = %channel.name, alert = %task_alert.title, answer = %delivery.answer, attempts = delivery.attempts, "alert delivery failed");
            }
            let record = record_of(
                &task_alert,
                &channel.name,
                delivery.status,
                delivery.attempts,
                delivery.answer,
            );
            let _ = inner.records.send(record);
        });
        self.in_flight.insert(handle.id(), (alert, name));
    }

    /// Forgets a finished delivery task (one cancelled by shutdown stays in
    /// `in_flight`, to be recorded as cut short).
    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) if e.is_cancelled() => return,
            Err(e) => e.id(),
        };
        if let Some((_, channel)) = self.in_flight.remove(&id)
            && let Some(n) = self.pending.get_mut(&channel)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Lets deliveries in progress finish for a while, then records the rest as
    /// failed.
    async fn stop(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.deliveries.is_empty() {
            match tokio::time::timeout_at(deadline, self.deliveries.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_) => {
                    self.deliveries.abort_all();
                    // Tasks that finished just before the abort recorded their outcome.
                    while let Some(done) = self.deliveries.join_next_with_id().await {
                        self.finished(done);
                    }
                    break;
                }
            }
        }
        for (_, (alert, channel)) in self.in_flight.drain() {
            let record = record_of(
                &alert,
                &channel,
                AlertStatus::Failed,
                0,
                "controller stopped before the delivery finished".into(),
            );
            let _ = self.service.inner.records.send(record);
        }
        let pending = self.throttle.due_summaries(i64::MAX);
        if !pending.is_empty() {
            tracing::info!(
                windows = pending.len(),
                "throttle windows open at shutdown: their summaries are not sent"
            );
        }
    }
}

/// Writes history rows in batches until told the alert loop has stopped, then
/// writes what is left. Deletes rows older than `retention` at start-up (the
/// interval's first tick completes at once; the end-to-end test of the
/// retention relies on it) and then once an hour.
async fn history_writer(
    store: Store,
    mut records: mpsc::UnboundedReceiver<AlertRecord>,
    mut stopped: oneshot::Receiver<()>,
    retention: Duration,
    metrics: Arc<crate::http::metrics::Metrics>,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            received = records.recv_many(&mut batch, HISTORY_BATCH) => {
                if received == 0 {
                    break;
                }
                for record in &batch {
                    metrics.alert_recorded(&record.channel, record.status.as_str());
                }
                write_history(&store, &mut batch).await;
            }
            _ = prune.tick(), if !retention.is_zero() => {
                let older_than = now_ms() - retention.as_millis() as i64;
                match store.prune_alert_history(older_than).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "old alert history deleted"),
                    Err(e) => tracing::warn!(error = %e, "pruning the alert history failed"),
                }
            }
            _ = &mut stopped => {
                records.close();
                while records.recv_many(&mut batch, HISTORY_BATCH).await > 0 {
                    for record in &batch {
                        metrics.alert_recorded(&record.channel, record.status.as_str());
                    }
                    write_history(&store, &mut batch).await;
                }
                break;
            }
        }
    }
}

/// Records `batch` (emptied), retrying a failed write a few times.
async fn write_history(store: &Store, batch: &mut Vec<AlertRecord>) {
    for attempt in 1..=5 {
        match store.record_alerts(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, rows = batch.len(), attempt, "recording alerts failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => tracing::error!(error = %e, rows = batch.len(), "alert history rows lost"),
        }
    }
    batch.clear();
}
