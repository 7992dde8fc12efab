//! The output of an `http` attempt: the status line (`HTTP/1.1 200 OK`), then
//! the tail of the response body, redacted of secrets, kept for the report
//! and streamed live as it arrives.

use crate::live::LiveOutput;
use crate::output::TailBuffer;

use super::secrets::Redactor;

/// Gathers one attempt's output (see the module docs).
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    status_line: Option<String>,
    body: TailBuffer,
    redactor: Redactor,
    live: Option<LiveOutput>,
}

impl Capture {
    /// Keeps at most about `cap` bytes, redacts with `redactor`, and copies
    /// to `live` when given.
    pub fn new(cap: usize, redactor: Redactor, live: Option<LiveOutput>) -> Self {
        Self {
            cap,
            status_line: None,
            body: TailBuffer::new(cap),
            redactor,
            live,
        }
    }

    /// The response's head arrived: `line` is its status line.
    pub fn status(&mut self, line: String) {
        let line = format!("{line}\n");
        if let Some(live) = &self.live {
            live.push(line.as_bytes());
        }
        // The body gets what the line leaves of the cap.
        self.body = TailBuffer::new(self.cap.saturating_sub(line.len()));
        self.status_line = Some(line);
    }

    /// The next piece of the body.
    pub fn body(&mut self, chunk: &[u8]) {
        let clean = self.redactor.push(chunk);
        self.emit(&clean);
    }

    /// The body ended (or was cut off): flushes what the redactor held back.
    pub fn finish(&mut self) {
        let rest = self.redactor.finish();
        self.emit(&rest);
    }

    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.body.push(bytes);
        if let Some(live) = &self.live {
            live.push(bytes);
        }
    }

    /// The output so far: the status line and the body's tail (lossy UTF-8).
    pub fn render(&mut self) -> String {
        self.finish();
        let mut out = self.status_line.clone().unwrap_or_default();
        out.push_str(&self.body.render());
        out
    }

    /// `text` with the secrets replaced (for the error).
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_survives_a_long_body() {
        let mut c = Capture::new(20, Redactor::default(), None);
        c.status("HTTP/1.1 200 OK".into());
        c.body(b"0123456789abcdefghij");
        assert_eq!(c.render(), "HTTP/1.1 200 OK\n[... 16 bytes truncated]\nghij");
    }

    #[test]
    fn secrets_are_masked_in_kept_and_live_output() {
        let live = LiveOutput::new();
        let mut c = Capture::new(1024, Redactor::new(["hunter2".to_string()]), Some(live.clone()));
        c.status("HTTP/1.1 200 OK".into());
        c.body(b"token hun");
        c.body(b"ter2 end");
        assert_eq!(c.render(), "HTTP/1.1 200 OK\ntoken *** end");
        assert_eq!(c.redact("bad hunter2"), "bad ***");
    }
}
