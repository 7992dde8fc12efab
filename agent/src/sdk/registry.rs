//! The handlers an SDK agent registered, by name: [`Handlers`].
//!
//! A handler is typed (`Fn(HandlerContext, T) -> Future` with `T:
//! Deserialize`); the registry stores it type-erased behind [`Call`], which
//! parses the payload into `T` and starts the handler's future. Parsing
//! happens before the handler runs, so a payload that does not fit is a
//! permanent failure naming serde's error, and the handler only ever sees
//! well-typed input.
//!
//! Names follow the controller's rule for `handler:` in job definitions
//! ([`valid_handler_name`]), so that an agent never registers a name the
//! controller would refuse in its `Hello`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{HandlerContext, HandlerError};

/// Longest handler name, in bytes (the controller's limit).
pub const MAX_HANDLER_NAME: usize = 128;
/// Most handlers one agent registers (the controller's limit).
pub const MAX_HANDLERS: usize = 1024;

/// Whether `name` can name a handler: 1 to [`MAX_HANDLER_NAME`] bytes of
/// ASCII letters, digits, `.`, `_`, `:` and `-`, starting with a letter or
/// digit (e.g. `leads.enrich`).
pub fn valid_handler_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HANDLER_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A running handler.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A type-erased handler.
pub(crate) trait Call: Send + Sync {
    /// Parses `payload` (JSON text; empty means `null`) and starts the
    /// handler; a payload that does not fit its type is a permanent failure.
    fn call(&self, ctx: HandlerContext, payload: &str) -> Result<HandlerFuture, HandlerError>;
}

/// A handler function with its payload type.
pub(crate) struct Typed<T, F> {
    f: F,
    payload: PhantomData<fn() -> T>,
}

impl<T, F> Typed<T, F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            payload: PhantomData,
        }
    }
}

impl<T, F, Fut> Call for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(HandlerContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: HandlerContext, payload: &str) -> Result<HandlerFuture, HandlerError> {
        let text = if payload.trim().is_empty() { "null" } else { payload };
        let value: T = serde_json::from_str(text).map_err(|e| {
            HandlerError::permanent(format!(
                "payload does not fit the handler's type {}: {e}",
                std::any::type_name::<T>()
            ))
        })?;
        Ok(Box::pin((self.f)(ctx, value)))
    }
}

/// The handlers of an agent, by name; cheap to clone. Empty on a plain
/// `worker-agent`. Built by [`crate::AgentBuilder::build`].
#[derive(Clone, Default)]
pub struct Handlers(Arc<BTreeMap<String, Arc<dyn Call>>>);

impl Handlers {
    /// A registry of `handlers`; names must be valid and distinct (checked by
    /// the builder).
    pub(crate) fn new(handlers: BTreeMap<String, Arc<dyn Call>>) -> Self {
        Self(Arc::new(handlers))
    }

    /// The handler registered as `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn Call>> {
        self.0.get(name)
    }

    /// The registered names, sorted (what the agent's `Hello` announces).
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Whether a handler is registered as `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// How many handlers are registered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::tests::context;

    #[test]
    fn handler_names_follow_the_controllers_rule() {
        for good in ["leads.enrich", "a", "A:b-c_d.9", &"x".repeat(MAX_HANDLER_NAME)] {
            assert!(valid_handler_name(good), "{good}");
        }
        for bad in [
            "",
            ".leads",
            "-x",
            "has space",
            "ünicode",
            &"x".repeat(MAX_HANDLER_NAME + 1),
        ] {
            assert!(!valid_handler_name(bad), "{bad}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Lead {
        lead_id: String,
    }

    async fn call<T, F, Fut>(f: F, payload: &str) -> Result<(), HandlerError>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(HandlerContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let (ctx, _stop) = HandlerContext::new(&context());
        Typed::new(f).call(ctx, payload)?.await
    }

    #[tokio::test]
    async fn payloads_are_typed() {
        let lead = |_ctx: HandlerContext, lead: Lead| async move {
            if lead.lead_id == "L1" {
                Ok(())
            } else {
                Err(HandlerError::permanent(format!("unknown lead {}", lead.lead_id)))
            }
        };
        assert_eq!(call(lead, r#"{"lead_id":"L1"}"#).await, Ok(()));
        let err = call(lead, r#"{"lead_id":"L2"}"#).await.unwrap_err();
        assert_eq!(err.message(), "unknown lead L2");

        let err = call(lead, r#"{"id":"L1"}"#).await.unwrap_err();
        assert!(err.is_permanent());
        assert!(err.message().contains("missing field `lead_id`"), "{}", err.message());
        assert!(err.message().contains("Lead"), "{}", err.message());
        let err = call(lead, "not json").await.unwrap_err();
        assert!(
            err.is_permanent() && err.message().contains("expected"),
            "{}",
            err.message()
        );
        let err = call(lead, "").await.unwrap_err();
        assert!(err.message().contains("null"), "{}", err.message());
    }

    #[tokio::test]
    async fn an_empty_payload_is_null() {
        assert_eq!(call(|_ctx: HandlerContext, (): ()| async { Ok(()) }, "").await, Ok(()));
        assert_eq!(
            call(|_ctx: HandlerContext, (): ()| async { Ok(()) }, " null ").await,
            Ok(())
        );
        let none = |_ctx: HandlerContext, lead: Option<Lead>| async move {
            match lead {
                None => Ok(()),
                Some(_) => Err(HandlerError::retryable("expected none")),
            }
        };
        assert_eq!(call(none, "").await, Ok(()));
        let any = |_ctx: HandlerContext, v: serde_json::Value| async move {
            if v["n"] == 3 {
                Ok(())
            } else {
                Err(HandlerError::retryable(format!("got {v}")))
            }
        };
        assert_eq!(call(any, r#"{"n":3}"#).await, Ok(()));
    }
}
