//! `runs logs ID [--follow]` and `jobs run NAME --follow`: a run's output.
//!
//! With `--follow` the output comes from `FollowRunOutput` as the agent sends
//! it; without, from `GetRun` (the stored tail of each attempt). Both print
//! the same events: an attempt's start, its output, its end, and the run's
//! end. For people (`-o table`) the output is printed as it arrives with
//! terminal control characters escaped, attempts framed by `--- ... ---`
//! lines; for scripts (`-o json`) one JSON object per event and line
//! (docs/cli-json.md, "Output events"); `-o yaml` prints one YAML document per event.
//!
//! Exit codes with `--follow` are those of `--wait`: 0 when the run
//! succeeded, 1 when it ended dead or cancelled (or the stream ended early),
//! 3 when the run does not exist.

use std::io::Write as _;

use serde::Serialize;
use worker_proto::v1 as pb;
use worker_proto::v1::output_event::Event;

use super::Ctx;
use crate::error::CliError;
use crate::output::{Format, escape_controls};

/// One printed event (`-o json`: one object per line, `event` names it).
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OutputLine {
    /// An attempt's output begins.
    AttemptStart {
        /// The attempt number.
        attempt: u32,
        /// The agent's name (`null` when unknown).
        agent: Option<String>,
        /// `true`: live; `false`: the stored tail of an ended attempt.
        live: bool,
    },
    /// Output bytes (as text; invalid UTF-8 replaced).
    Chunk {
        /// The attempt number.
        attempt: u32,
        /// The text.
        data: String,
        /// Bytes missed just before `data` (0 when none).
        skipped: u64,
    },
    /// An attempt ended.
    AttemptEnd {
        /// The attempt number.
        attempt: u32,
        /// succeeded | failed | timed_out | cancelled | lost (`null` when not recorded).
        outcome: Option<String>,
        /// The exit code, when the process exited.
        exit_code: Option<i32>,
        /// Why it failed (`null` when it did not).
        error: Option<String>,
    },
    /// The run is terminal.
    End {
        /// The run.
        run_id: String,
        /// succeeded | dead | cancelled.
        state: String,
        /// Why it is in that state (`null` when no reason was recorded).
        reason: Option<String>,
        /// The last attempt.
        attempt: u32,
        /// The last attempt's exit code.
        exit_code: Option<i32>,
        /// The last attempt's error.
        error: Option<String>,
    },
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// Prints events as they come, keeping the part of a UTF-8 character split
/// between chunks for the next one.
struct Printer {
    format: Format,
    run_id: String,
    /// Bytes of an incomplete character at the end of the last chunk.
    carry: Vec<u8>,
    /// Whether the text printed last ended a line.
    at_line_start: bool,
    /// The run's end, once seen.
    end: Option<(String, Option<String>)>,
}

impl Printer {
    fn new(format: Format, run_id: String) -> Self {
        Printer {
            format,
            run_id,
            carry: Vec::new(),
            at_line_start: true,
            end: None,
        }
    }

    /// The text of `data` after what was carried, up to the last complete character.
    fn decode(&mut self, data: &[u8]) -> String {
        self.carry.extend_from_slice(data);
        let bytes = std::mem::take(&mut self.carry);
        let complete = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            // An incomplete character at the end (at most 3 bytes) waits.
            Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        self.carry = bytes[complete..].to_vec();
        String::from_utf8_lossy(&bytes[..complete]).into_owned()
    }

    /// What is still carried, as text (at the end of an attempt).
    fn flush_carry(&mut self) -> String {
        let rest = std::mem::take(&mut self.carry);
        String::from_utf8_lossy(&rest).into_owned()
    }

    fn event(&mut self, event: Event) -> anyhow::Result<()> {
        let line = match event {
            Event::AttemptStart(s) => OutputLine::AttemptStart {
                attempt: s.attempt,
                agent: non_empty(s.agent),
                live: s.live,
            },
            Event::Chunk(c) => OutputLine::Chunk {
                attempt: c.attempt,
                data: self.decode(&c.data),
                skipped: c.skipped,
            },
            Event::AttemptEnd(e) => {
                let rest = self.flush_carry();
                if !rest.is_empty() {
                    self.print(&OutputLine::Chunk {
                        attempt: e.attempt,
                        data: rest,
                        skipped: 0,
                    })?;
                }
                OutputLine::AttemptEnd {
                    attempt: e.attempt,
                    outcome: non_empty(e.outcome),
                    exit_code: e.exit_code,
                    error: non_empty(e.error),
                }
            }
            Event::End(e) => {
                self.end = Some((e.state.clone(), non_empty(e.reason.clone())));
                OutputLine::End {
                    run_id: self.run_id.clone(),
                    state: e.state,
                    reason: non_empty(e.reason),
                    attempt: e.attempt,
                    exit_code: e.exit_code,
                    error: non_empty(e.error),
                }
            }
        };
        self.print(&line)
    }

    fn print(&mut self, line: &OutputLine) -> anyhow::Result<()> {
        let text = match self.format {
            Format::Json => format!("{}\n", serde_json::to_string(line)?),
            Format::Yaml => format!("---\n{}", serde_yaml_ng::to_string(line)?),
            Format::Table => self.text(line),
        };
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::failed("stdout closed").into()),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }

    /// The people's rendering of `line`.
    fn text(&mut self, line: &OutputLine) -> String {
        let mut out = String::new();
        let frame = |out: &mut String, at_line_start: bool, text: String| {
            if !at_line_start {
                out.push('\n');
            }
            out.push_str(&escape_controls(&text));
            out.push('\n');
        };
        match line {
            OutputLine::AttemptStart { attempt, agent, live } => {
                let agent = agent.as_deref().map(|a| format!(" on {a}")).unwrap_or_default();
                let when = if *live { "" } else { " (stored tail)" };
                frame(
                    &mut out,
                    self.at_line_start,
                    format!("--- attempt {attempt}{agent}{when} ---"),
                );
            }
            OutputLine::Chunk { data, skipped, .. } => {
                if *skipped > 0 {
                    frame(
                        &mut out,
                        self.at_line_start,
                        format!("[... {skipped} bytes skipped ...]"),
                    );
                    self.at_line_start = true;
                }
                out.push_str(&escape_controls(data));
                if !data.is_empty() {
                    self.at_line_start = data.ends_with('\n');
                }
                return out;
            }
            OutputLine::AttemptEnd {
                attempt,
                outcome,
                exit_code,
                error,
            } => {
                let mut text = format!("--- attempt {attempt} {}", outcome.as_deref().unwrap_or("ended"));
                if let Some(code) = exit_code {
                    text.push_str(&format!(", exit code {code}"));
                }
                if let Some(error) = error.as_deref().filter(|e| !e.starts_with("exit code")) {
                    text.push_str(&format!(": {error}"));
                }
                text.push_str(" ---");
                frame(&mut out, self.at_line_start, text);
            }
            OutputLine::End {
                run_id, state, reason, ..
            } => {
                let reason = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                frame(&mut out, self.at_line_start, format!("run {run_id} {state}{reason}"));
            }
        }
        self.at_line_start = true;
        out
    }

    /// Exit 0 when the run succeeded, 1 otherwise (see the module docs).
    fn outcome(&self) -> anyhow::Result<()> {
        match &self.end {
            Some((state, _)) if state == "succeeded" => Ok(()),
            Some((state, reason)) => {
                let reason = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                Err(CliError::failed(format!("run {} ended {state}{reason}", self.run_id)).into())
            }
            None => Err(CliError::failed(format!(
                "the controller ended the output stream of run {} before the run ended",
                self.run_id
            ))
            .into()),
        }
    }
}

/// Prints the run's output live until it ends; exit status as `--wait`.
pub async fn follow(ctx: &mut Ctx, run_id: String) -> anyhow::Result<()> {
    let mut stream = ctx
        .client
        .follow_run_output(pb::FollowRunOutputRequest { run_id: run_id.clone() })
        .await?
        .into_inner();
    let mut printer = Printer::new(ctx.format, run_id);
    while let Some(event) = stream.message().await? {
        if let Some(event) = event.event {
            printer.event(event)?;
        }
    }
    printer.outcome()
}

/// Prints the stored output of each attempt (`runs logs ID` without `--follow`).
pub async fn stored(ctx: &mut Ctx, run_id: String) -> anyhow::Result<()> {
    let run = ctx
        .client
        .get_run(pb::GetRunRequest { id: run_id.clone() })
        .await?
        .into_inner();
    let mut printer = Printer::new(ctx.format, run_id);
    for event in stored_events(&run) {
        printer.event(event)?;
    }
    if ctx.format == Format::Table && printer.end.is_none() {
        eprintln!(
            "note: run {} is {}; `runs logs {} --follow` shows its output as it comes",
            run.id, run.state, run.id
        );
    }
    Ok(())
}

/// The events `runs logs` prints for a run read with `GetRun`: each attempt
/// with its stored tail (a running attempt has none yet), and the end when
/// the run is terminal.
pub fn stored_events(run: &pb::Run) -> Vec<Event> {
    let mut events = Vec::new();
    for a in &run.attempts {
        events.push(Event::AttemptStart(pb::OutputAttemptStart {
            attempt: a.attempt,
            agent: a.agent.clone(),
            live: false,
        }));
        if !a.output.is_empty() {
            events.push(Event::Chunk(pb::OutputChunk {
                attempt: a.attempt,
                data: a.output.clone().into_bytes(),
                skipped: 0,
            }));
        }
        if !a.outcome.is_empty() {
            events.push(Event::AttemptEnd(pb::OutputAttemptEnd {
                attempt: a.attempt,
                outcome: a.outcome.clone(),
                exit_code: a.exit_code,
                error: a.error.clone(),
            }));
        }
    }
    if super::enqueue::TERMINAL_STATES.contains(&run.state.as_str()) {
        let last = run.attempts.iter().max_by_key(|a| a.attempt);
        events.push(Event::End(pb::OutputEnd {
            state: run.state.clone(),
            reason: run.reason.clone(),
            attempt: last.map_or(0, |a| a.attempt),
            exit_code: last.and_then(|a| a.exit_code),
            error: last.map(|a| a.error.clone()).unwrap_or_default(),
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_between_chunks_are_kept_whole() {
        let mut printer = Printer::new(Format::Table, "r".into());
        let bytes = "é!".as_bytes();
        assert_eq!(printer.decode(&bytes[..1]), "");
        assert_eq!(printer.decode(&bytes[1..]), "é!");
        assert_eq!(printer.decode(&[0xFF, b'a']), "\u{FFFD}a");
    }

    #[test]
    fn the_table_rendering_frames_attempts_and_escapes_controls() {
        let mut printer = Printer::new(Format::Table, "r1".into());
        let start = printer.text(&OutputLine::AttemptStart {
            attempt: 1,
            agent: Some("a1".into()),
            live: true,
        });
        assert_eq!(start, "--- attempt 1 on a1 ---\n");
        let chunk = printer.text(&OutputLine::Chunk {
            attempt: 1,
            data: "red \u{1b}[31m\nno newline".into(),
            skipped: 0,
        });
        assert_eq!(chunk, "red \\x1b[31m\nno newline");
        let end = printer.text(&OutputLine::AttemptEnd {
            attempt: 1,
            outcome: Some("failed".into()),
            exit_code: Some(3),
            error: Some("exit code 3".into()),
        });
        assert_eq!(end, "\n--- attempt 1 failed, exit code 3 ---\n");
        let skipped = printer.text(&OutputLine::Chunk {
            attempt: 2,
            data: "x\n".into(),
            skipped: 10,
        });
        assert_eq!(skipped, "[... 10 bytes skipped ...]\nx\n");
    }

    #[test]
    fn json_lines_name_the_event() {
        let line = OutputLine::End {
            run_id: "r1".into(),
            state: "dead".into(),
            reason: None,
            attempt: 2,
            exit_code: Some(1),
            error: Some("exit code 1".into()),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"event":"end","run_id":"r1","state":"dead","reason":null,"attempt":2,"exit_code":1,"error":"exit code 1"}"#
        );
    }

    #[test]
    fn stored_events_end_only_terminal_runs() {
        let mut run = pb::Run {
            id: "r1".into(),
            state: "running".into(),
            attempts: vec![pb::Attempt {
                attempt: 1,
                outcome: "failed".into(),
                output: "boom\n".into(),
                exit_code: Some(2),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(stored_events(&run).len(), 3);
        run.state = "dead".into();
        assert!(matches!(stored_events(&run).last(), Some(Event::End(e)) if e.exit_code == Some(2)));
    }
}
