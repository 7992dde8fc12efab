//! The capped output tail of one attempt.
//!
//! A job may print gigabytes; the controller only stores the tail of an
//! attempt's output (the last 64 KiB). [`TailBuffer`] keeps the **last** `cap`
//! bytes of everything written to it — stdout and stderr share one buffer so their
//! interleaving is preserved — and counts what it dropped, so the report can say
//! `[... N bytes truncated]` instead of silently losing the beginning.

use std::collections::VecDeque;

/// Keeps the last `cap` bytes written to it and counts the bytes dropped.
#[derive(Debug)]
pub struct TailBuffer {
    cap: usize,
    buf: VecDeque<u8>,
    dropped: u64,
}

impl TailBuffer {
    /// Creates an empty buffer that keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            dropped: 0,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, data: &[u8]) {
        if data.len() >= self.cap {
            self.dropped += (self.buf.len() + data.len() - self.cap) as u64;
            self.buf.clear();
            self.buf.extend(&data[data.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.buf.drain(..overflow);
            self.dropped += overflow as u64;
        }
        self.buf.extend(data);
    }

    /// Number of bytes dropped from the front so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Renders the tail as text: invalid UTF-8 is replaced (lossy), and when
    /// anything was dropped the text starts with `[... N bytes truncated]\n`.
    ///
    /// When the cut fell inside a multi-byte character, its leftover
    /// continuation bytes are dropped too (and counted) rather than shown as a
    /// replacement character.
    pub fn render(&self) -> String {
        let (front, back) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        let mut dropped = self.dropped;
        let mut start = 0;
        if dropped > 0 {
            while start < bytes.len().min(3) && (bytes[start] & 0xC0) == 0x80 {
                start += 1;
            }
            dropped += start as u64;
        }
        let text = String::from_utf8_lossy(&bytes[start..]);
        if dropped > 0 {
            format!("[... {dropped} bytes truncated]\n{text}")
        } else {
            text.into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut tail = TailBuffer::new(16);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.render(), "hello world");
        assert_eq!(tail.dropped(), 0);
    }

    #[test]
    fn keeps_the_last_bytes() {
        let mut tail = TailBuffer::new(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.dropped(), 2);
        assert_eq!(tail.render(), "[... 2 bytes truncated]\ncdefg");
    }

    #[test]
    fn a_single_large_write_keeps_its_end() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"xy");
        tail.push(b"0123456789");
        assert_eq!(tail.dropped(), 8);
        assert_eq!(tail.render(), "[... 8 bytes truncated]\n6789");
    }

    #[test]
    fn exactly_the_cap_is_not_truncated() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"abcd");
        assert_eq!(tail.render(), "abcd");
    }

    #[test]
    fn zero_cap_keeps_nothing() {
        let mut tail = TailBuffer::new(0);
        tail.push(b"abc");
        assert_eq!(tail.render(), "[... 3 bytes truncated]\n");
    }

    #[test]
    fn cut_multibyte_characters_are_dropped_not_mangled() {
        // "é" is 0xC3 0xA9; cap 3 keeps 0xA9 'a' 'b'.
        let mut tail = TailBuffer::new(3);
        tail.push("éab".as_bytes());
        assert_eq!(tail.render(), "[... 2 bytes truncated]\nab");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut tail = TailBuffer::new(16);
        tail.push(&[b'a', 0xFF, b'b']);
        assert_eq!(tail.render(), "a\u{FFFD}b");
    }
}
