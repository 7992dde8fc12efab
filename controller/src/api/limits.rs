//! The API's side of the limits: CPU-heavy parsing off the serving threads,
//! page sizes, reply budgets of list calls and the ids a request may name.
//!
//! Parsing a YAML document (`ApplyJobs`, `PutAlertChannel`, `PutAlertRule`)
//! runs on tokio's blocking pool through [`off_thread`], at most
//! [`PARSE_SLOTS`] at a time, after the linear size and depth pre-scan
//! ([`crate::config::check_document`]) has run: the runtime threads that carry
//! agent streams, heartbeats and the engine's loops never wait behind a parser.

use std::path::Path;

use tokio::sync::Semaphore;

use crate::error::Error;
use crate::limits::{current, echo, exceeds};

/// How many documents are parsed at once; further requests wait their turn.
pub const PARSE_SLOTS: usize = 2;

static PARSERS: Semaphore = Semaphore::const_new(PARSE_SLOTS);

/// Runs `work` on the blocking pool, at most [`PARSE_SLOTS`] at a time.
pub async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    let _permit = PARSERS
        .acquire()
        .await
        .map_err(|_| Error::internal("the parser slots are closed"))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("parsing failed: {e}")))
}

/// Size and nesting of a YAML document sent as `field`, before it is parsed.
pub fn check_yaml(field: &str, source: &str, text: &str) -> Result<(), Error> {
    crate::config::check_document(Path::new(source), text).map_err(|e| Error::invalid(field, e))
}

/// Default page of list calls when the request says 0.
pub const DEFAULT_PAGE: u32 = 50;

/// The page size a list call asked for: 0 means [`DEFAULT_PAGE`] (or the
/// `page_size` limit if that is smaller); above `page_size` is refused.
pub fn page(requested: u32) -> Result<u32, Error> {
    let max = current().page_size;
    match requested {
        0 => Ok(DEFAULT_PAGE.min(max)),
        n if n > max => Err(Error::invalid("limit", exceeds(n, "page_size", max))),
        n => Ok(n),
    }
}

/// Longest id a request may name: run and workflow ids are 26-character
/// ULIDs; a little room is left for other formats.
pub const MAX_ID_BYTES: usize = 64;

/// Checks a run or workflow id named by a request before it is looked up
/// (and echoed in a "not found").
pub fn check_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "\"{}\" ({} bytes) is not a run id: ids are at most {MAX_ID_BYTES} bytes",
                echo(id),
                id.len()
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("\"{}\" is not a run id: control characters", echo(id)),
        ));
    }
    Ok(())
}

/// Keeps the leading items of `items` whose encoded size fits the
/// `list_reply_bytes` budget (at least one, so that a page always moves);
/// `true` when some were left out.
pub fn within_budget<T: prost::Message>(items: &mut Vec<T>) -> bool {
    let budget = current().list_reply_bytes;
    let mut used = 0usize;
    for (i, item) in items.iter().enumerate() {
        used += item.encoded_len() + 8;
        if used > budget && i > 0 {
            items.truncate(i);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_ids() {
        assert_eq!(page(0).unwrap(), DEFAULT_PAGE);
        assert_eq!(page(1000).unwrap(), 1000);
        let err = page(100_000).unwrap_err().message;
        assert_eq!(
            err,
            "limit: 100000 exceeds the limit page_size=1000 (--limit page_size=...)"
        );
        check_id("id", "01hz0000000000000000000000").unwrap();
        let err = check_id("id", &"x".repeat(20_000)).unwrap_err().message;
        assert!(err.starts_with("id: \"xxx") && err.contains("20000 bytes"), "{err}");
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn replies_stop_at_the_budget() {
        let big = worker_proto::v1::Run {
            id: "x".repeat(1024 * 1024),
            ..Default::default()
        };
        let mut runs = vec![big; 40];
        assert!(within_budget(&mut runs));
        assert_eq!(runs.len(), 15);
        let mut small = vec![worker_proto::v1::Run::default(); 10];
        assert!(!within_budget(&mut small));
        assert_eq!(small.len(), 10);
    }
}
