//! Frame boundaries, found incrementally.
//!
//! A server accepts two framings and tells them apart by a connection's
//! first byte, so any client works against any server unconfigured:
//!
//! - **length-prefixed** (first byte `0x00`): a 4-byte big-endian length,
//!   then the payload;
//! - **JSON stream** (first non-blank byte `{`): JSON objects one after
//!   another, separated by nothing, white space or NUL bytes.
//!
//! Bytes arrive in arbitrary pieces: an object split across many reads,
//! several objects in one read, a UTF-8 character cut in two. The
//! [`FrameDecoder`] keeps just enough state to resume where the last read
//! stopped, so every byte is looked at once. For the JSON stream it runs a
//! small lexer that knows strings, nesting and where a value may stand; it
//! does not check numbers and literals to the letter (the codec's parser
//! does), but it notices a broken object early, so a malformed object costs
//! one error reply rather than swallowing the requests that follow it.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// The framing a connection speaks, known from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 4-byte big-endian length, then the payload.
    Length,
    /// JSON objects back to back; replies end with a newline.
    Stream,
}

/// Why bytes could not be cut into a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame is longer than the configured limit. The connection cannot
    /// be trusted to be in step any more and is closed. `size` is exact in
    /// the length framing; the JSON stream decoder stops reading at one
    /// byte past the limit, so there it is a lower bound.
    #[error("frame of at least {size} bytes is longer than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The first byte fits neither framing. The connection is closed.
    #[error("unknown framing: a connection starts with a JSON object or a 0x00 length prefix")]
    UnknownFraming,
    /// The JSON stream holds something that is not an object, or an object
    /// that is not well formed. The decoder skips to the next line (or NUL)
    /// and goes on.
    #[error("malformed JSON at byte {offset} of the object: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    /// Bytes outside any object in the JSON stream. The decoder skips them
    /// up to the next `{`, line end or NUL, so a line of stray text costs
    /// one error however many words it holds.
    #[error("expected a JSON object, found other bytes")]
    NotAnObject,
}

impl FrameError {
    /// Whether the connection must be closed after reporting this error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. } | FrameError::UnknownFraming
        )
    }
}

/// Adds one frame's framing around `payload` to `out`.
pub fn encode_frame(framing: Framing, payload: &[u8], out: &mut BytesMut) {
    match framing {
        Framing::Length => {
            let len = u32::try_from(payload.len()).expect("outgoing frames are far below 4 GiB");
            out.reserve(4 + payload.len());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
        }
        Framing::Stream => {
            out.reserve(payload.len() + 1);
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\n");
        }
    }
}

/// Cuts a connection's incoming bytes into frame payloads.
///
/// Feed it the connection's read buffer after every read; it takes complete
/// frames off the front and leaves a partial one in place.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    framing: Option<Framing>,
    lexer: Lexer,
    /// Bytes of a partial frame already looked at (stream framing).
    scanned: usize,
    /// Discarding input up to the next line end or NUL after a malformed
    /// object, or up to the next `{`, line end or NUL after stray bytes.
    skipping: Option<Skip>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    ToLineEnd,
    ToObject,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit` bytes.
    pub fn new(limit: usize) -> FrameDecoder {
        FrameDecoder {
            limit,
            framing: None,
            lexer: Lexer::default(),
            scanned: 0,
            skipping: None,
        }
    }

    /// A decoder for a connection whose framing is known in advance (a
    /// client reading its server's replies).
    pub fn with_framing(limit: usize, framing: Framing) -> FrameDecoder {
        FrameDecoder {
            framing: Some(framing),
            ..FrameDecoder::new(limit)
        }
    }

    /// The connection's framing, once its first byte has been seen.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// Takes the next frame's payload off the front of `buf`.
    ///
    /// `None` means more bytes are needed. An error is returned once per
    /// fault; after a non-fatal one, call again to go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, FrameError>> {
        let framing = match self.framing {
            Some(framing) => framing,
            None => {
                let framing = if *buf.first()? == 0 {
                    Framing::Length
                } else {
                    match *buf.iter().find(|b| !is_blank(**b))? {
                        b'{' => Framing::Stream,
                        _ => return Some(Err(FrameError::UnknownFraming)),
                    }
                };
                self.framing = Some(framing);
                framing
            }
        };
        match framing {
            Framing::Length => self.decode_length(buf),
            Framing::Stream => self.decode_stream(buf),
        }
    }

    fn decode_length(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, FrameError>> {
        if buf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.limit {
            return Some(Err(FrameError::TooLarge {
                size: len,
                limit: self.limit,
            }));
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return None;
        }
        buf.advance(4);
        Some(Ok(buf.split_to(len).freeze()))
    }

    fn decode_stream(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, FrameError>> {
        if let Some(skip) = self.skipping {
            let stop = buf.iter().position(|&b| match skip {
                Skip::ToLineEnd => b == b'\n' || b == 0,
                Skip::ToObject => b == b'{' || b == b'\n' || b == 0,
            });
            match stop {
                Some(at) => {
                    buf.advance(at);
                    self.skipping = None;
                }
                None => {
                    buf.clear();
                    return None;
                }
            }
        }

        if self.scanned == 0 {
            let Some(start) = buf.iter().position(|b| !is_blank(*b)) else {
                buf.clear();
                return None;
            };
            buf.advance(start);
            if buf[0] != b'{' {
                self.skipping = Some(Skip::ToObject);
                return Some(Err(FrameError::NotAnObject));
            }
        }

        while self.scanned < buf.len() {
            let byte = buf[self.scanned];
            self.scanned += 1;
            match self.lexer.step(byte) {
                Ok(Step::More) => {}
                Ok(Step::Done) => {
                    let frame = buf.split_to(self.scanned).freeze();
                    self.scanned = 0;
                    return Some(Ok(frame));
                }
                Err(reason) => {
                    let offset = self.scanned - 1;
                    buf.advance(self.scanned - 1);
                    self.scanned = 0;
                    self.lexer = Lexer::default();
                    self.skipping = Some(Skip::ToLineEnd);
                    return Some(Err(FrameError::Malformed { offset, reason }));
                }
            }
            if self.scanned > self.limit {
                return Some(Err(FrameError::TooLarge {
                    size: self.scanned,
                    limit: self.limit,
                }));
            }
        }
        None
    }
}

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | 0)
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

enum Step {
    More,
    Done,
}

/// Where the lexer stands inside one top-level JSON object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the object's opening brace.
    #[default]
    Start,
    Value,
    KeyOrEnd,
    Key,
    Colon,
    ValueOrEnd,
    AfterValue,
    String {
        key: bool,
    },
    Escape {
        key: bool,
    },
    Number,
    Literal,
}

/// A JSON lexer that follows nesting and strings one byte at a time.
#[derive(Debug, Default)]
struct Lexer {
    state: State,
    /// Open containers: `true` for an object, `false` for an array.
    stack: Vec<bool>,
}

impl Lexer {
    fn step(&mut self, byte: u8) -> Result<Step, &'static str> {
        match self.state {
            State::String { key } => {
                match byte {
                    b'"' => return Ok(self.end_string(key)),
                    b'\\' => self.state = State::Escape { key },
                    0..=0x1f => return Err("control character inside a string"),
                    _ => {}
                }
                return Ok(Step::More);
            }
            State::Escape { key } => {
                // The codec's parser checks the escape itself.
                self.state = State::String { key };
                return Ok(Step::More);
            }
            State::Number if matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') => {
                return Ok(Step::More);
            }
            State::Literal if byte.is_ascii_lowercase() => return Ok(Step::More),
            State::Number | State::Literal => self.state = State::AfterValue,
            _ => {}
        }
        if is_space(byte) {
            return Ok(Step::More);
        }
        match self.state {
            State::Start => {
                self.stack.push(true);
                self.state = State::KeyOrEnd;
                Ok(Step::More)
            }
            State::Value | State::ValueOrEnd => {
                if self.state == State::ValueOrEnd && byte == b']' {
                    return Ok(self.close());
                }
                self.start_value(byte)
            }
            State::KeyOrEnd | State::Key => match byte {
                b'"' => {
                    self.state = State::String { key: true };
                    Ok(Step::More)
                }
                b'}' if self.state == State::KeyOrEnd => Ok(self.close()),
                _ => Err("expected a quoted key"),
            },
            State::Colon if byte == b':' => {
                self.state = State::Value;
                Ok(Step::More)
            }
            State::Colon => Err("expected ':' after a key"),
            State::AfterValue => {
                let in_object = *self
                    .stack
                    .last()
                    .expect("a value stands inside a container");
                match (byte, in_object) {
                    (b',', true) => self.state = State::Key,
                    (b',', false) => self.state = State::Value,
                    (b'}', true) => return Ok(self.close()),
                    (b']', false) => return Ok(self.close()),
                    _ => return Err("expected ',' or the end of the container"),
                }
                Ok(Step::More)
            }
            State::String { .. } | State::Escape { .. } | State::Number | State::Literal => {
                unreachable!("handled above")
            }
        }
    }

    fn start_value(&mut self, byte: u8) -> Result<Step, &'static str> {
        self.state = match byte {
            b'{' => {
                self.stack.push(true);
                State::KeyOrEnd
            }
            b'[' => {
                self.stack.push(false);
                State::ValueOrEnd
            }
            b'"' => State::String { key: false },
            b'-' | b'0'..=b'9' => State::Number,
            b't' | b'f' | b'n' => State::Literal,
            _ => return Err("expected a value"),
        };
        Ok(Step::More)
    }

    fn end_string(&mut self, key: bool) -> Step {
        self.state = if key { State::Colon } else { State::AfterValue };
        Step::More
    }

    fn close(&mut self) -> Step {
        self.stack.pop();
        if self.stack.is_empty() {
            *self = Lexer {
                state: State::Start,
                stack: std::mem::take(&mut self.stack),
            };
            Step::Done
        } else {
            self.state = State::AfterValue;
            Step::More
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Result<Bytes, FrameError>> {
        let mut out = Vec::new();
        while let Some(frame) = decoder.decode(buf) {
            let fatal = frame.as_ref().is_err_and(FrameError::is_fatal);
            out.push(frame);
            if fatal {
                break;
            }
        }
        out
    }

    fn ok(text: &str) -> Result<Bytes, FrameError> {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn two_objects_in_one_read() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&br#"{"a":1}{"b":[1,{"c":"}"}]}"#[..]);
        assert_eq!(
            frames(&mut d, &mut buf),
            vec![ok(r#"{"a":1}"#), ok(r#"{"b":[1,{"c":"}"}]}"#)]
        );
        assert_eq!(d.framing(), Some(Framing::Stream));
    }

    #[test]
    fn nul_and_newline_separators_are_skipped() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"\n {\"a\":1}\0\0{\"b\":true}\r\n"[..]);
        assert_eq!(
            frames(&mut d, &mut buf),
            vec![ok(r#"{"a":1}"#), ok(r#"{"b":true}"#)]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn object_split_byte_by_byte_including_utf8() {
        let text = r#"{"msg":"你好，世界😀 \"q\" \\","n":-1.5e3,"t":null}"#;
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in text.as_bytes() {
            buf.extend_from_slice(&[*byte]);
            got.extend(frames(&mut d, &mut buf));
        }
        assert_eq!(got, vec![ok(text)]);
    }

    #[test]
    fn malformed_object_skips_to_line_end_and_goes_on() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"{\"msgid\":hello}\n{\"msgid\":15}\n"[..]);
        let got = frames(&mut d, &mut buf);
        assert!(
            matches!(got[0], Err(FrameError::Malformed { .. })),
            "{got:?}"
        );
        assert_eq!(got[1], ok(r#"{"msgid":15}"#));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn stray_bytes_are_reported_once_per_run() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"{\"a\":1}\nhello\n[]\n{\"b\":2}"[..]);
        let got = frames(&mut d, &mut buf);
        assert_eq!(
            got,
            vec![
                ok(r#"{"a":1}"#),
                Err(FrameError::NotAnObject),
                Err(FrameError::NotAnObject),
                ok(r#"{"b":2}"#)
            ]
        );
    }

    #[test]
    fn a_line_of_stray_words_is_one_error() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"{\"a\":1} lorem ipsum dolor\tsit amet {\"b\":2}"[..]);
        let got = frames(&mut d, &mut buf);
        assert_eq!(
            got,
            vec![
                ok(r#"{"a":1}"#),
                Err(FrameError::NotAnObject),
                ok(r#"{"b":2}"#)
            ]
        );
    }

    #[test]
    fn unknown_first_byte_is_fatal() {
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(
            frames(&mut d, &mut buf),
            vec![Err(FrameError::UnknownFraming)]
        );
    }

    #[test]
    fn oversized_stream_object_is_fatal() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&br#"{"msg":"0123456789abcdef"}"#[..]);
        let got = frames(&mut d, &mut buf);
        assert!(
            matches!(got[..], [Err(FrameError::TooLarge { .. })]),
            "{got:?}"
        );
    }

    #[test]
    fn length_prefixed_frames_in_pieces() {
        let mut wire = BytesMut::new();
        encode_frame(Framing::Length, b"{\"a\":1}", &mut wire);
        encode_frame(Framing::Length, b"\x08\x01", &mut wire);
        let mut d = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            got.extend(frames(&mut d, &mut buf));
        }
        assert_eq!(
            got,
            vec![ok("{\"a\":1}"), Ok(Bytes::from_static(b"\x08\x01"))]
        );
        assert_eq!(d.framing(), Some(Framing::Length));
    }

    #[test]
    fn oversized_length_prefix_is_fatal() {
        let mut d = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 1, 0][..]);
        assert_eq!(
            frames(&mut d, &mut buf),
            vec![Err(FrameError::TooLarge {
                size: 256,
                limit: 100
            })]
        );
    }
}
