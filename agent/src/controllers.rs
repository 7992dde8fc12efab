//! The controller addresses an agent (and `workerctl`) is given, and the
//! order one pass over them tries them in.
//!
//! `--controller` takes one address or a comma-separated list of them
//! (`http://a:7070,http://b:7070`); a bare `host:port` gets `http://`. With
//! several controllers on one database only the leader serves; a standby
//! answers `UNAVAILABLE` with a message starting [`STANDBY_PREFIX`] and, when
//! it knows the leader, its URL in the [`worker_proto::LEADER_HEADER`]
//! metadata. A client therefore makes passes over the list: it starts at the
//! address that worked last, goes on in list order, and follows one leader
//! hint (which may name an address outside the list) ahead of the rest
//! ([`Pass`]).

use std::collections::VecDeque;

/// `error: cause: cause ...`, each cause once: tonic's transport errors say
/// little on their own. Used by the agent's connector and `workerctl`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How a standby's status message starts.
pub const STANDBY_PREFIX: &str = "standby:";

/// `127.0.0.1:7070` becomes `http://127.0.0.1:7070`; a URL with a scheme is
/// kept as written (trimmed).
pub fn normalize(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// Parses `--controller`: comma-separated addresses, each normalized with
/// [`normalize`] and checked to be an `http://` or `https://` URL with a host
/// (the error names the bad entry). Empty entries are skipped, duplicates
/// merged; at least one address is required.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let mut urls: Vec<String> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let url = check_url(entry)?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        return Err("no controller address given".into());
    }
    Ok(urls)
}

/// One address, normalized and checked as [`parse_list`] checks each entry.
pub fn check_url(entry: &str) -> Result<String, String> {
    let url = normalize(entry);
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .map_err(|e| format!("invalid controller address `{entry}`: {e}"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => {
            return Err(format!(
                "invalid controller address `{entry}`: must be http:// or https://"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid controller address `{entry}`: no host"));
    }
    Ok(url)
}

/// Whether a status with `code` and `message` comes from a standby.
pub fn is_standby(code: tonic::Code, message: &str) -> bool {
    code == tonic::Code::Unavailable && message.starts_with(STANDBY_PREFIX)
}

/// The leader URL a standby named in `metadata`, normalized; `None` when
/// there is none or it is not text.
pub fn leader_hint(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let value = metadata.get(worker_proto::LEADER_HEADER)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| normalize(value))
}

/// The order of one pass over the addresses, by index: the address that
/// worked last (`start`), then the other addresses of the list in order,
/// wrapping around. Indexes at or past the list's length stand for addresses
/// learned from leader hints; one of them is tried only as `start` or as a
/// hint. At most one hint per pass jumps the queue ([`Pass::hint`]); nothing
/// is tried twice.
#[derive(Debug, Clone)]
pub struct Pass {
    queue: VecDeque<usize>,
    tried: Vec<usize>,
    hinted: bool,
}

impl Pass {
    /// A pass over a list of `len` addresses starting at index `start`.
    pub fn new(len: usize, start: usize) -> Self {
        let first_of_list = if start < len { start } else { 0 };
        let mut queue: VecDeque<usize> = (0..len).map(|i| (first_of_list + i) % len).collect();
        if start >= len {
            queue.push_front(start);
        }
        Self {
            queue,
            tried: Vec::new(),
            hinted: false,
        }
    }

    /// A standby named the leader, at `index`: it is tried next, unless it
    /// was already tried in this pass or a hint was already followed.
    /// Returns whether it will be.
    pub fn hint(&mut self, index: usize) -> bool {
        if self.hinted || self.tried.contains(&index) {
            return false;
        }
        self.hinted = true;
        self.queue.retain(|&i| i != index);
        self.queue.push_front(index);
        true
    }
}

impl Iterator for Pass {
    type Item = usize;

    /// The next index to try, or `None` when the pass is over.
    fn next(&mut self) -> Option<usize> {
        while let Some(index) = self.queue.pop_front() {
            if !self.tried.contains(&index) {
                self.tried.push(index);
                return Some(index);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(pass: Pass) -> Vec<usize> {
        pass.collect()
    }

    #[test]
    fn parses_lists_and_names_bad_entries() {
        assert_eq!(parse_list("127.0.0.1:7070").unwrap(), ["http://127.0.0.1:7070"]);
        assert_eq!(
            parse_list(" http://a:7070, b:7070 ,,https://c:7443,http://a:7070").unwrap(),
            ["http://a:7070", "http://b:7070", "https://c:7443"]
        );
        assert!(parse_list(" , ").unwrap_err().contains("no controller address"));
        let err = parse_list("http://a:7070,http://bad host:1").unwrap_err();
        assert!(err.contains("`http://bad host:1`"), "{err}");
        let err = parse_list("http://a:1,ftp://b:1").unwrap_err();
        assert!(err.contains("`ftp://b:1`") && err.contains("http://"), "{err}");
        let err = parse_list("http://").unwrap_err();
        assert!(err.contains("`http://`"), "{err}");
    }

    #[test]
    fn a_pass_starts_at_the_last_that_worked_and_wraps() {
        assert_eq!(order(Pass::new(1, 0)), [0]);
        assert_eq!(order(Pass::new(3, 0)), [0, 1, 2]);
        assert_eq!(order(Pass::new(3, 2)), [2, 0, 1]);
        // The last that worked was a hinted address outside the list.
        assert_eq!(order(Pass::new(2, 3)), [3, 0, 1]);
    }

    #[test]
    fn one_hint_jumps_the_queue() {
        // a, b, c: a is a standby naming c; c is tried next, then b.
        let mut pass = Pass::new(3, 0);
        assert_eq!(pass.next(), Some(0));
        assert!(pass.hint(2));
        assert_eq!(pass.next(), Some(2));
        // c is a standby too and names b: only one hint a pass, b comes anyway.
        assert!(!pass.hint(1));
        assert_eq!(order(pass), [1]);

        // A hint outside the list (index 2 of a 2-address list).
        let mut pass = Pass::new(2, 0);
        assert_eq!(pass.next(), Some(0));
        assert!(pass.hint(2));
        assert_eq!(order(pass), [2, 1]);

        // A hint naming an address already tried is not followed.
        let mut pass = Pass::new(2, 1);
        assert_eq!(pass.next(), Some(1));
        assert!(!pass.hint(1));
        assert_eq!(order(pass), [0]);
    }

    #[test]
    fn standby_answers_are_recognised() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(leader_hint(&metadata), None);
        metadata.insert(worker_proto::LEADER_HEADER, "10.0.0.5:7070".parse().unwrap());
        assert_eq!(leader_hint(&metadata).as_deref(), Some("http://10.0.0.5:7070"));
        let message = "standby: this controller does not lead; no leader is known yet";
        assert!(is_standby(tonic::Code::Unavailable, message));
        assert!(!is_standby(tonic::Code::Unavailable, "tcp connect error"));
        assert!(!is_standby(tonic::Code::Internal, message));
    }
}
