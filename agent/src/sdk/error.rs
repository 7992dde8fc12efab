//! How a handler says it failed: [`HandlerError`].
//!
//! The controller needs two things from a failure: whether retrying can help
//! (a retryable failure follows the job's retry policy, a permanent one goes
//! straight to the dead-letter queue) and a message for the attempt's
//! `error`. `?` on any [`std::error::Error`] gives a retryable failure, since
//! most errors a handler meets (network, database, a busy service) are
//! transient; a handler that knows better says `HandlerError::permanent`.

use std::fmt;
use std::time::Duration;

/// A failed handler run (see the module docs).
///
/// It deliberately does not implement [`std::error::Error`]: that is what lets
/// `From<E: Error>` turn every error into a retryable failure, so `?` works in
/// a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    retry_after: Option<Duration>,
}

impl HandlerError {
    /// A failure that retrying may fix: the run follows the job's retry policy.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }

    /// A failure that retrying cannot fix (bad input, a resource that does not
    /// exist): the run goes to the dead-letter queue at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
            retry_after: None,
        }
    }

    /// Asks that the retry come no sooner than `delay` (e.g. a service's
    /// `Retry-After`); the controller waits for the longer of this and its
    /// backoff. Ignored on a permanent failure.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The message, as it appears in the attempt's `error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the failure must not be retried.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The delay asked for with [`HandlerError::retry_after`], if any (never
    /// on a permanent failure).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after.filter(|_| !self.permanent)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error becomes a **retryable** failure whose message is the error and
/// its chain of sources (`outer: inner: innermost`).
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some errors repeat their source in their own message.
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Self::retryable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("fetching the lead")]
    struct Outer(#[source] std::io::Error);

    fn fails() -> Result<(), HandlerError> {
        Err(Outer(std::io::Error::other("connection reset")))?;
        Ok(())
    }

    #[test]
    fn question_mark_gives_a_retryable_failure_with_the_chain() {
        let err = fails().unwrap_err();
        assert!(!err.is_permanent());
        assert_eq!(err.message(), "fetching the lead: connection reset");
    }

    #[test]
    fn kinds_and_retry_after() {
        let err = HandlerError::permanent("no such lead");
        assert!(err.is_permanent());
        assert_eq!(err.to_string(), "no such lead");
        assert_eq!(err.clone().retry_after(Duration::from_secs(1)).retry_delay(), None);
        let err = HandlerError::retryable("busy").retry_after(Duration::from_secs(3));
        assert!(!err.is_permanent());
        assert_eq!(err.retry_delay(), Some(Duration::from_secs(3)));
    }
}
