//! An incremental parser for Server-Sent Events over a byte stream.
//!
//! Follows the WHATWG event-stream rules that matter for OpenAI-style streams: lines end in `\n`,
//! `\r\n` or `\r` (a `\r\n` split across two chunks counts once), lines starting with `:` are
//! comments, several `data:` lines of one event are joined with `\n`, a blank line dispatches the
//! event, unknown fields are ignored, and a leading byte-order mark is dropped. Chunks may be split
//! anywhere, including inside a line ending or a multi-byte character: the parser works on bytes
//! and hands out each event's data as bytes, which the caller deserialises in place.

/// The data payload OpenAI-style streams send last.
pub const DONE: &[u8] = b"[DONE]";

/// One dispatched event; borrows the parser until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, empty when absent (the default "message" type).
    pub event: &'a str,
    /// The joined `data:` lines.
    pub data: &'a [u8],
}

impl SseEvent<'_> {
    /// Whether this is the `[DONE]` sentinel.
    pub fn is_done(&self) -> bool {
        self.data == DONE
    }
}

/// Incremental SSE parser: [`feed`](SseParser::feed) bytes as they arrive, then drain events
/// with [`next_event`](SseParser::next_event).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes received and not yet parsed into lines.
    buf: Vec<u8>,
    /// Start of the unparsed part of `buf`.
    pos: usize,
    /// The data lines of the event being built, joined with `\n`.
    data: Vec<u8>,
    has_data: bool,
    event: String,
    /// The last line ended in `\r`: a `\n` that follows belongs to it.
    skip_lf: bool,
    /// Bytes seen so far decide whether a leading BOM is still possible.
    started: bool,
    /// The previous call dispatched an event whose buffers must be cleared first.
    dispatched: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a complete event (for diagnostics and limits).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.data.len()
    }

    /// The next complete event, if the bytes fed so far contain one.
    pub fn next_event(&mut self) -> Option<SseEvent<'_>> {
        if self.dispatched {
            self.dispatched = false;
            self.data.clear();
            self.has_data = false;
            self.event.clear();
        }
        loop {
            if !self.started {
                // A UTF-8 byte-order mark may open the stream; wait until it can be decided.
                const BOM: &[u8] = b"\xEF\xBB\xBF";
                let rest = &self.buf[self.pos..];
                if rest.len() < BOM.len() && BOM.starts_with(rest) {
                    return None;
                }
                if rest.starts_with(BOM) {
                    self.pos += BOM.len();
                }
                self.started = true;
            }
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.pos..];
            let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let line_start = self.pos;
            let line_end = line_start + end;
            self.skip_lf = rest[end] == b'\r';
            self.pos = line_end + 1;
            if line_end == line_start {
                // Blank line: dispatch.
                if self.has_data {
                    self.dispatched = true;
                    return Some(SseEvent {
                        event: &self.event,
                        data: &self.data,
                    });
                }
                self.event.clear();
                continue;
            }
            self.process_line(line_start, line_end);
        }
    }

    fn process_line(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {} // id, retry and unknown fields do not matter here
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pieces(pieces: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece);
            while let Some(ev) = p.next_event() {
                out.push((
                    ev.event.to_string(),
                    String::from_utf8(ev.data.to_vec()).expect("utf-8"),
                ));
            }
        }
        out
    }

    fn check(stream: &str, expected: &[(&str, &str)]) {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(e, d)| (e.to_string(), d.to_string()))
            .collect();
        let bytes = stream.as_bytes();
        assert_eq!(parse_pieces(&[bytes]), expected, "whole: {stream:?}");
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse_pieces(&[a, b]), expected, "cut at {cut}: {stream:?}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_pieces(&singles), expected, "byte by byte: {stream:?}");
    }

    #[test]
    fn split_at_every_byte_boundary() {
        check(
            "data: {\"a\":1}\n\ndata: [DONE]\n\n",
            &[("", "{\"a\":1}"), ("", "[DONE]")],
        );
        check(
            "data: {\"a\":\"é→\"}\r\n\r\n: keep-alive\r\n\r\ndata:x\r\n\r\n",
            &[("", "{\"a\":\"é→\"}"), ("", "x")],
        );
        check(
            "data: a\rdata: b\r\rdata: c\n\n",
            &[("", "a\nb"), ("", "c")],
        );
    }

    #[test]
    fn multi_line_data_events_and_comments() {
        check(
            ": comment\nevent: error\ndata: line1\ndata:  two spaces\nid: 7\nretry: 10\n\n",
            &[("error", "line1\n two spaces")],
        );
        // The event name does not leak into the next event.
        check("event: x\ndata: 1\n\ndata: 2\n\n", &[("x", "1"), ("", "2")]);
        // A field without a colon and an empty data line.
        check("data\n\ndata:\n\n", &[("", ""), ("", "")]);
        // No data: nothing dispatched.
        check("event: ping\n\n: only a comment\n\n", &[]);
    }

    #[test]
    fn byte_order_mark_is_dropped_once() {
        check("\u{FEFF}data: 1\n\n", &[("", "1")]);
        check("data: \u{FEFF}\n\n", &[("", "\u{FEFF}")]);
    }

    #[test]
    fn incomplete_event_is_held() {
        let mut p = SseParser::new();
        p.feed(b"data: partial");
        assert!(p.next_event().is_none());
        p.feed(b"\n");
        assert!(p.next_event().is_none());
        p.feed(b"\n");
        assert_eq!(
            p.next_event().map(|e| e.data.to_vec()),
            Some(b"partial".to_vec())
        );
        assert!(p.next_event().is_none());
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn done_sentinel() {
        let mut p = SseParser::new();
        p.feed(b"data: [DONE]\n\n");
        assert!(p.next_event().is_some_and(|e| e.is_done()));
    }
}
