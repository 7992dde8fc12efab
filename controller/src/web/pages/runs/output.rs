//! `GET /runs/{id}/output`: a run's output as server-sent events, from
//! `FollowRunOutput` called in process with the caller's principal (so the
//! call counts against its token's stream limit and ends with its
//! revocation, and at the controller's shutdown).
//!
//! Events (what `app.js` `setupFollow` consumes):
//! * `attempt`: a heading line, "— attempt 2 on agent build-1 —";
//! * `chunk`: output text as a JSON string (bytes decoded as UTF-8, a
//!   character split between chunks kept whole, invalid bytes as U+FFFD),
//!   starting with "[... N bytes skipped ...]" when the follower missed some;
//! * `attempt_end`: the attempt's outcome, exit code and error;
//! * `end`: the run's final state; the stream ends after it;
//! * `failure`: why following stopped (unknown run, token no longer valid,
//!   shutdown); the stream ends after it.
//!
//! The caller's token is checked again every [`RECHECK`] as well.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use worker_proto::v1 as pb;
use worker_proto::v1::controller_service_server::ControllerService;
use worker_proto::v1::output_event::Event as Out;

use crate::api::logs::OutputStream;
use crate::http::HttpState;
use crate::web::{Caller, WebError};

/// How often the caller's token is checked while nothing else happens.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The heading line of an attempt.
pub fn attempt_heading(attempt: u32, agent: &str) -> String {
    if agent.is_empty() {
        format!("— attempt {attempt} —")
    } else {
        format!("— attempt {attempt} on agent {agent} —")
    }
}

/// The closing line of an attempt.
pub fn attempt_end_line(attempt: u32, outcome: &str, exit_code: Option<i32>, error: &str) -> String {
    let outcome = if outcome.is_empty() { "ended" } else { outcome };
    let mut line = format!("— attempt {attempt} {}", outcome.replace('_', " "));
    if let Some(code) = exit_code {
        line.push_str(&format!(", exit code {code}"));
    }
    if !error.is_empty() {
        line.push_str(&format!(": {error}"));
    }
    line.push_str(" —");
    line
}

/// The line of the run's end.
pub fn end_line(end: &pb::OutputEnd) -> String {
    let mut line = format!("run {}", end.state);
    if end.attempt > 0 {
        line.push_str(&format!(" after attempt {}", end.attempt));
    }
    if let Some(code) = end.exit_code {
        line.push_str(&format!(" (exit code {code})"));
    }
    let why = if end.reason.is_empty() { &end.error } else { &end.reason };
    if !why.is_empty() {
        line.push_str(&format!(": {why}"));
    }
    line
}

/// Decodes an attempt's output bytes as they come, keeping a character
/// split between chunks for the next one.
#[derive(Debug, Default)]
pub struct Decoder {
    attempt: u32,
    pending: Vec<u8>,
}

impl Decoder {
    /// The text of `data` (of `attempt`), after what was kept back.
    pub fn decode(&mut self, attempt: u32, data: &[u8], skipped: u64) -> String {
        if attempt != self.attempt || skipped > 0 {
            self.pending.clear();
            self.attempt = attempt;
        }
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        // An incomplete character at the end waits for the next chunk.
        let mut cut = bytes.len();
        for back in 1..=bytes.len().min(3) {
            let i = bytes.len() - back;
            let b = bytes[i];
            if b & 0xC0 != 0x80 {
                let need = match b {
                    0xF0..=0xF7 => 4,
                    0xE0..=0xEF => 3,
                    0xC0..=0xDF => 2,
                    _ => 1,
                };
                if need > back {
                    cut = i;
                }
                break;
            }
        }
        self.pending = bytes.split_off(cut);
        let text = String::from_utf8_lossy(&bytes);
        if skipped > 0 {
            format!("[... {skipped} bytes skipped ...]\n{text}")
        } else {
            text.into_owned()
        }
    }

    /// What was kept back, at the end of the attempt ("" usually).
    pub fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// The events of one `FollowRunOutput` event.
pub fn events(decoder: &mut Decoder, event: pb::OutputEvent) -> Vec<Event> {
    let json = |text: String| serde_json::Value::String(text).to_string();
    match event.event {
        Some(Out::AttemptStart(s)) => {
            vec![
                Event::default()
                    .event("attempt")
                    .data(attempt_heading(s.attempt, &s.agent)),
            ]
        }
        Some(Out::Chunk(c)) => {
            let text = decoder.decode(c.attempt, &c.data, c.skipped);
            if text.is_empty() {
                Vec::new()
            } else {
                vec![Event::default().event("chunk").data(json(text))]
            }
        }
        Some(Out::AttemptEnd(e)) => {
            let mut out = Vec::new();
            let rest = decoder.flush();
            if !rest.is_empty() {
                out.push(Event::default().event("chunk").data(json(rest)));
            }
            let line = attempt_end_line(e.attempt, &e.outcome, e.exit_code, &e.error);
            out.push(Event::default().event("attempt_end").data(line));
            out
        }
        Some(Out::End(end)) => vec![Event::default().event("end").data(end_line(&end))],
        None => Vec::new(),
    }
}

fn failure(message: &str) -> Event {
    Event::default().event("failure").data(message)
}

/// `GET /runs/{id}/output`.
pub async fn follow(State(state): State<HttpState>, caller: Caller, Path(id): Path<String>) -> Response {
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        match open(&state, &caller, &id).await {
            Ok(stream) => Box::pin(relay(stream, caller)),
            Err(e) => Box::pin(futures::stream::iter([Ok(failure(&e.message))])),
        };
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

async fn open(state: &HttpState, caller: &Caller, id: &str) -> Result<OutputStream, WebError> {
    let request = pb::FollowRunOutputRequest { run_id: id.to_string() };
    Ok(state
        .web
        .api()?
        .follow_run_output(caller.request("ControllerService/FollowRunOutput", request)?)
        .await?
        .into_inner())
}

struct Relay {
    inner: OutputStream,
    caller: Caller,
    decoder: Decoder,
    tick: tokio::time::Interval,
    done: bool,
}

/// The events of `inner`, until it ends, fails, or the caller's token is no
/// longer valid.
fn relay(inner: OutputStream, caller: Caller) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let relay = Relay {
        inner,
        caller,
        decoder: Decoder::default(),
        tick,
        done: false,
    };
    futures::stream::unfold(relay, |mut r| async move {
        if r.done {
            return None;
        }
        let batch = loop {
            tokio::select! {
                item = r.inner.next() => match item {
                    Some(Ok(event)) => {
                        let end = matches!(event.event, Some(Out::End(_)));
                        let batch = events(&mut r.decoder, event);
                        r.done = end;
                        if !batch.is_empty() || end {
                            break batch;
                        }
                    }
                    Some(Err(status)) => {
                        r.done = true;
                        break vec![failure(status.message())];
                    }
                    None => return None,
                },
                _ = r.tick.tick() => {
                    if let Err(why) = r.caller.principal().still_valid(crate::time::now_ms()) {
                        r.done = true;
                        break vec![failure(&format!("stopped following: {why}"))];
                    }
                }
            }
        };
        Some((futures::stream::iter(batch.into_iter().map(Ok)), r))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_are_kept_whole() {
        let mut d = Decoder::default();
        let text = "héllo €";
        let bytes = text.as_bytes();
        let (a, b) = bytes.split_at(bytes.len() - 2);
        assert_eq!(d.decode(1, a, 0), "héllo ");
        assert_eq!(d.decode(1, b, 0), "€");
        assert_eq!(d.decode(1, b"\xff ok", 0), "\u{fffd} ok");
        assert_eq!(d.decode(1, b"x\xe2", 0), "x");
        assert_eq!(d.flush(), "\u{fffd}");
        assert_eq!(d.decode(2, b"abc", 5), "[... 5 bytes skipped ...]\nabc");
    }

    #[test]
    fn lines_read_well() {
        assert_eq!(attempt_heading(2, "build-1"), "— attempt 2 on agent build-1 —");
        assert_eq!(attempt_heading(1, ""), "— attempt 1 —");
        assert_eq!(
            attempt_end_line(2, "timed_out", Some(137), "killed"),
            "— attempt 2 timed out, exit code 137: killed —"
        );
        let end = pb::OutputEnd {
            state: "succeeded".into(),
            attempt: 1,
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(end_line(&end), "run succeeded after attempt 1 (exit code 0)");
    }
}
