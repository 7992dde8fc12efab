//! What a handler gets besides its payload: [`HandlerContext`].
//!
//! One context per attempt, shared (an `Arc`) by every clone the handler
//! makes, so a handler may hand it to tasks it spawns. It holds:
//!
//! * the attempt's identity (run id, attempt number, job name);
//! * the stop signal, a `watch` channel the executor (`executor/handler.rs`)
//!   sets once, when the attempt is cancelled (by the controller or a drain)
//!   or its timeout elapses — [`HandlerContext::cancelled`] waits on it;
//! * what the handler reports: its output (the capped tail sent with the
//!   result, and the live stream `workerctl runs logs --follow` shows) and
//!   its metrics and spans ([`crate::measure::Measures`]).
//!
//! Reports made after the attempt ended (by a task that outlived the handler)
//! are ignored: the result has been sent.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::executor::{Context, Stop};
use crate::live::LiveOutput;
use crate::measure::Measures;
use crate::output::TailBuffer;

/// Why an attempt must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The run was cancelled (`workerctl runs cancel`), or the agent is
    /// draining and its grace is over. The attempt ends `cancelled`.
    Cancelled,
    /// The job's `timeout` (the contained duration) elapsed. The attempt ends
    /// `timed_out`.
    TimedOut(Duration),
}

impl From<Stop> for StopReason {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Cancelled => StopReason::Cancelled,
            Stop::TimedOut(after) => StopReason::TimedOut(after),
        }
    }
}

impl fmt::Display for StopReason {
    /// `cancel requested` or `timed out after 1s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Cancelled => f.write_str("cancel requested"),
            StopReason::TimedOut(after) => write!(f, "timed out after {}", worker_duration::format(*after)),
        }
    }
}

/// The attempt a handler runs (see the module docs). Cheap to clone; `Send +
/// Sync`.
#[derive(Clone)]
pub struct HandlerContext {
    inner: Arc<Inner>,
}

struct Inner {
    run_id: String,
    attempt: u32,
    job: String,
    stop: watch::Receiver<Option<StopReason>>,
    live: Option<LiveOutput>,
    record: Mutex<Record>,
}

/// What the handler reported so far.
struct Record {
    output: TailBuffer,
    measures: Measures,
    /// The attempt's result was taken: later reports are ignored.
    ended: bool,
}

impl fmt::Debug for HandlerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerContext")
            .field("run_id", &self.inner.run_id)
            .field("attempt", &self.inner.attempt)
            .field("job", &self.inner.job)
            .field("stop", &*self.inner.stop.borrow())
            .finish_non_exhaustive()
    }
}

/// The executor's side of a context: fires its stop signal.
#[derive(Debug)]
pub(crate) struct Stopper(watch::Sender<Option<StopReason>>);

impl Stopper {
    /// Tells the handler to stop; the first reason given wins.
    pub(crate) fn stop(&self, reason: StopReason) {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

impl HandlerContext {
    /// A context for the attempt `ctx` describes, and the handle that stops it.
    pub(crate) fn new(ctx: &Context) -> (HandlerContext, Stopper) {
        let (tx, rx) = watch::channel(None);
        let inner = Inner {
            run_id: ctx.run_id.clone(),
            attempt: ctx.attempt,
            job: ctx.job.clone(),
            stop: rx,
            live: ctx.live.clone(),
            record: Mutex::new(Record {
                output: TailBuffer::new(ctx.output_cap),
                measures: Measures::default(),
                ended: false,
            }),
        };
        (HandlerContext { inner: Arc::new(inner) }, Stopper(tx))
    }

    /// Ends the attempt's reporting: returns the output tail and the measures;
    /// later reports are ignored.
    pub(crate) fn finish(&self) -> (String, Measures) {
        let mut record = self.record();
        record.ended = true;
        (record.output.render(), std::mem::take(&mut record.measures))
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.inner.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run's id (a ULID), as `workerctl runs get` shows it.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The attempt number, from 1; higher on retries.
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The name of the job this run belongs to (not the handler's name: several
    /// jobs may use one handler).
    pub fn job(&self) -> &str {
        &self.inner.job
    }

    /// Resolves when the attempt must stop — cancelled by the controller or a
    /// drain, or its timeout elapsed — with the reason; at once if it already
    /// must. Select over it and the handler's work to stop promptly:
    ///
    /// ```no_run
    /// # async fn f(ctx: worker_agent::HandlerContext) -> Result<(), worker_agent::HandlerError> {
    /// tokio::select! {
    ///     reason = ctx.cancelled() => {
    ///         ctx.log(format!("cancelled: {reason}"));
    ///         Err(worker_agent::HandlerError::retryable(reason.to_string()))
    ///     }
    ///     () = tokio::time::sleep(std::time::Duration::from_secs(10)) => Ok(()),
    /// }
    /// # }
    /// ```
    ///
    /// After the stop, the handler has the agent's kill grace
    /// ([`crate::AgentConfig::kill_grace`]) to return; then it is aborted.
    /// Either way the attempt ends `cancelled` or `timed_out`.
    pub async fn cancelled(&self) -> StopReason {
        let mut stop = self.inner.stop.clone();
        // The borrow (not `Send`) ends within this statement.
        let reason = stop
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.unwrap_or(StopReason::Cancelled));
        match reason {
            Ok(reason) => reason,
            // The attempt is over without a stop: nothing will fire any more.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether the attempt must stop (cancelled or timed out).
    pub fn is_cancelled(&self) -> bool {
        self.inner.stop.borrow().is_some()
    }

    /// Why the attempt must stop, or `None` while it may go on.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.inner.stop.borrow()
    }

    /// Adds `value` to the metric `name` of this attempt (values of one name
    /// add up), e.g. `ctx.metric("api_cost_usd", 0.02)`, `ctx.metric("items", 1)`.
    ///
    /// Names are 1 to 64 ASCII letters, digits, `_`, `.`, `:`, `-`, starting
    /// with a letter or digit; an attempt reports at most 64 names. Returns
    /// whether the value was kept (`false`: a bad name, a value that is not
    /// finite, a name beyond the limit, or the attempt is over).
    pub fn metric(&self, name: &str, value: impl Into<f64>) -> bool {
        let value = value.into();
        let mut record = self.record();
        let kept = !record.ended && record.measures.metric(name, value);
        if !kept {
            tracing::debug!(run_id = %self.inner.run_id, metric = name, value, "metric dropped");
        }
        kept
    }

    /// Starts timing the operation `name`: the returned guard records the
    /// elapsed time when it is dropped (or [`SpanGuard::finish`]ed). Passes
    /// through one name add up (count, total, longest). Names follow the
    /// rules of [`HandlerContext::metric`].
    ///
    /// ```no_run
    /// # fn f(ctx: worker_agent::HandlerContext) {
    /// let _fetch = ctx.span("fetch");
    /// // ... the request; the span ends at the end of the scope.
    /// # }
    /// ```
    pub fn span(&self, name: impl Into<String>) -> SpanGuard {
        SpanGuard {
            ctx: self.clone(),
            name: name.into(),
            started: Instant::now(),
            done: false,
        }
    }

    /// Runs `work` inside the span `name` (see [`HandlerContext::span`]) and
    /// returns its output. The span ends when `work` completes, or when the
    /// returned future is dropped.
    pub async fn span_async<F: Future>(&self, name: impl Into<String>, work: F) -> F::Output {
        let _span = self.span(name);
        work.await
    }

    /// Appends `text` as a line to the attempt's output: the tail stored with
    /// the attempt (`workerctl runs get`) and the live stream (`workerctl runs
    /// logs --follow`). A newline is added unless `text` ends with one.
    pub fn log(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        if !line.ends_with('\n') {
            line.push('\n');
        }
        let mut record = self.record();
        if record.ended {
            return;
        }
        record.output.push(line.as_bytes());
        // Under the same lock, so the live stream has the tail's order.
        if let Some(live) = &self.inner.live {
            live.push(line.as_bytes());
        }
    }

    fn record_span(&self, name: &str, took: Duration) {
        let mut record = self.record();
        if record.ended || !record.measures.span(name, took) {
            tracing::debug!(run_id = %self.inner.run_id, span = name, "span dropped");
        }
    }
}

/// Times one pass through an operation; records it when dropped. Made by
/// [`HandlerContext::span`].
#[must_use = "a span ends when its guard is dropped; bind it (`let _span = ctx.span(..)`)"]
pub struct SpanGuard {
    ctx: HandlerContext,
    name: String,
    started: Instant,
    done: bool,
}

impl SpanGuard {
    /// The span's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time since the span started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ends the span now and returns how long it took.
    pub fn finish(mut self) -> Duration {
        self.done = true;
        let took = self.started.elapsed();
        self.ctx.record_span(&self.name, took);
        took
    }
}

impl fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanGuard")
            .field("name", &self.name)
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if !self.done {
            self.ctx.record_span(&self.name, self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::tests::context;

    #[test]
    fn context_is_clone_send_sync() {
        fn check<T: Clone + Send + Sync + 'static>() {}
        check::<HandlerContext>();
    }

    #[test]
    fn identity_comes_from_the_attempt() {
        let (ctx, _stop) = HandlerContext::new(&context());
        assert_eq!((ctx.run_id(), ctx.attempt(), ctx.job()), ("run-1", 1, "test.job"));
    }

    #[tokio::test]
    async fn span_guard_records_on_drop_and_finish() {
        let (ctx, _stop) = HandlerContext::new(&context());
        {
            let _fetch = ctx.span("fetch");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let took = ctx.span("fetch").finish();
        assert!(took < Duration::from_millis(30));
        let answer = ctx
            .span_async("transform", async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                42
            })
            .await;
        assert_eq!(answer, 42);
        assert!(ctx.metric("items", 1));
        assert!(ctx.metric("items", 2u32));
        assert!(ctx.metric("api_cost_usd", 0.25));
        assert!(!ctx.metric("bad name", 1));
        assert!(!ctx.metric("nan", f64::NAN));
        let _bad = ctx.span("");

        let (_, measures) = ctx.finish();
        let fetch = measures.spans().iter().find(|s| s.name == "fetch").expect("fetch");
        assert_eq!(fetch.count, 2);
        assert!(fetch.max_us >= 30_000, "{fetch:?}");
        let transform = measures
            .spans()
            .iter()
            .find(|s| s.name == "transform")
            .expect("transform");
        assert!(transform.total_us >= 10_000, "{transform:?}");
        let items = measures.metrics().iter().find(|m| m.name == "items").expect("items");
        assert!((items.value - 3.0).abs() < 1e-9);
        assert_eq!(measures.dropped(), 2);

        // After the attempt, reports are ignored.
        drop(_bad);
        assert!(!ctx.metric("late", 1));
        ctx.log("late");
        assert_eq!(ctx.finish().0, "");
    }

    #[test]
    fn log_appends_lines_to_the_output() {
        let mut attempt = context();
        attempt.live = Some(LiveOutput::new());
        attempt.output_cap = 1024;
        let (ctx, _stop) = HandlerContext::new(&attempt);
        ctx.log("first");
        ctx.log("second\n");
        assert_eq!(ctx.finish().0, "first\nsecond\n");
    }

    #[tokio::test]
    async fn cancelled_resolves_with_the_first_reason() {
        let (ctx, stop) = HandlerContext::new(&context());
        assert!(!ctx.is_cancelled());
        assert_eq!(ctx.stop_reason(), None);
        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        stop.stop(StopReason::TimedOut(Duration::from_secs(1)));
        stop.stop(StopReason::Cancelled);
        let reason = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reason, StopReason::TimedOut(Duration::from_secs(1)));
        assert!(ctx.is_cancelled());
        assert_eq!(ctx.cancelled().await.to_string(), "timed out after 1s");
        assert_eq!(StopReason::Cancelled.to_string(), "cancel requested");
    }
}
