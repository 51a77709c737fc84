//! A server connection's wire, shared by every transport.
//!
//! [`ServerWire`] turns a connection's incoming bytes into requests, or into
//! the error replies that malformed input earns, and remembers the
//! connection's [`Format`] (framing and codec) so that replies go back the
//! way requests came. Transports own sockets and nothing of the protocol,
//! so the tokio and mio transports behave alike byte for byte.

use bytes::BytesMut;

use crate::codec::{Codec, JsonCodec};
use crate::frame::{encode_frame, FrameDecoder, FrameError, Framing};
use crate::message::{ErrorCode, Failure, Request, ServerMsg};
use crate::protobuf::ProtobufCodec;

/// The codec of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    /// JSON with the reference project's field names.
    Json,
    /// Protocol Buffers: `chat.ClientMessage` in, `chat.ServerMessage` out
    /// (see [`ProtobufCodec`]).
    Protobuf,
}

impl CodecKind {
    /// The codec of a payload: JSON if it starts with `{`, else protobuf.
    ///
    /// The schema is laid out so that no encoded `ClientMessage` starts
    /// with `{` (0x7B); `proto/chat.proto` says how.
    pub fn of_payload(payload: &[u8]) -> CodecKind {
        if payload.first() == Some(&b'{') {
            CodecKind::Json
        } else {
            CodecKind::Protobuf
        }
    }
}

/// How a connection's frames are cut and spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub framing: Framing,
    pub codec: CodecKind,
}

impl Default for Format {
    /// What a connection gets replies in before it sent a frame: JSON
    /// lines, readable by a person at `nc`.
    fn default() -> Format {
        Format {
            framing: Framing::Stream,
            codec: CodecKind::Json,
        }
    }
}

impl Format {
    /// Appends `msg`, framed, to `out`.
    pub fn encode(&self, msg: &ServerMsg, out: &mut BytesMut) {
        let mut payload = Vec::with_capacity(128);
        match self.codec {
            CodecKind::Json => JsonCodec.encode_reply(msg, &mut payload),
            CodecKind::Protobuf => ProtobufCodec.encode_reply(msg, &mut payload),
        }
        encode_frame(self.framing, &payload, out);
    }
}

/// What a connection's bytes amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A well-formed request, for the service.
    Request(Request),
    /// An error reply for a malformed frame; the connection goes on.
    Refused(ServerMsg),
    /// An error reply after which the connection must be closed.
    Fatal(ServerMsg),
}

/// The protocol side of one server connection.
#[derive(Debug)]
pub struct ServerWire {
    decoder: FrameDecoder,
    format: Option<Format>,
}

impl ServerWire {
    /// A wire that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> ServerWire {
        ServerWire {
            decoder: FrameDecoder::new(max_frame),
            format: None,
        }
    }

    /// The connection's format, once its first frame was read.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// The next request or error reply from the front of `buf`; `None`
    /// when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Option<Incoming> {
        let payload = match self.decoder.decode(buf)? {
            Ok(payload) => payload,
            Err(e) => {
                let code = match e {
                    FrameError::TooLarge { .. } => ErrorCode::TooLong,
                    _ => ErrorCode::BadRequest,
                };
                let reply = ServerMsg::Error {
                    request: None,
                    failure: Failure::new(code, e.to_string()),
                };
                return Some(if e.is_fatal() {
                    Incoming::Fatal(reply)
                } else {
                    Incoming::Refused(reply)
                });
            }
        };
        let framing = self.decoder.framing().unwrap_or(Framing::Stream);
        let codec = CodecKind::of_payload(&payload);
        if self.format.is_none() {
            self.format = Some(Format { framing, codec });
        }
        let decoded = match codec {
            CodecKind::Json => JsonCodec.decode_request(&payload),
            CodecKind::Protobuf => ProtobufCodec.decode_request(&payload),
        };
        Some(match decoded {
            Ok(request) => Incoming::Request(request),
            Err(e) => Incoming::Refused(e.into_reply()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MsgId;

    #[test]
    fn requests_and_refusals_in_order() {
        let mut wire = ServerWire::new(1024);
        let mut buf = BytesMut::from(&b"{\"msgid\":15}\n{\"msgid\":99}\nhello\n{\"msgid\":17}"[..]);
        let mut got = Vec::new();
        while let Some(item) = wire.next(&mut buf) {
            got.push(item);
        }
        assert_eq!(got[0], Incoming::Request(Request::Ping));
        assert!(
            matches!(&got[1], Incoming::Refused(ServerMsg::Error { failure, .. }) if failure.code == ErrorCode::UnknownMsgId)
        );
        assert!(matches!(&got[2], Incoming::Refused(_)));
        assert_eq!(got[3], Incoming::Request(Request::List));
        assert_eq!(wire.format(), Some(Format::default()));
    }

    #[test]
    fn replies_follow_the_request_framing() {
        let mut wire = ServerWire::new(1024);
        let mut buf = BytesMut::new();
        encode_frame(Framing::Length, b"{\"msgid\":15}", &mut buf);
        assert_eq!(wire.next(&mut buf), Some(Incoming::Request(Request::Ping)));
        let format = wire.format().expect("known after a frame");
        let mut out = BytesMut::new();
        format.encode(&ServerMsg::Pong, &mut out);
        assert_eq!(&out[..], b"\0\0\0\x0c{\"msgid\":16}");
    }

    fn protobuf_frame(request: &Request, out: &mut BytesMut) {
        let mut payload = Vec::new();
        ProtobufCodec.encode_request(request, &mut payload);
        encode_frame(Framing::Length, &payload, out);
    }

    fn bad_request(item: &Incoming) -> bool {
        matches!(item, Incoming::Refused(ServerMsg::Error { failure, .. }) if failure.code == ErrorCode::BadRequest)
    }

    #[test]
    fn length_framed_requests_and_refusals_in_order() {
        let mut wire = ServerWire::new(1024);
        let mut buf = BytesMut::new();
        protobuf_frame(&Request::Ping, &mut buf);
        encode_frame(Framing::Length, b"\xff\xff\xff", &mut buf);
        encode_frame(Framing::Length, b"{\"msgid\":17}", &mut buf);
        encode_frame(Framing::Length, b"", &mut buf);
        protobuf_frame(&Request::AddGroup { group: 7 }, &mut buf);
        let mut got = Vec::new();
        while let Some(item) = wire.next(&mut buf) {
            got.push(item);
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], Incoming::Request(Request::Ping));
        assert!(bad_request(&got[1]), "{:?}", got[1]);
        assert_eq!(got[2], Incoming::Request(Request::List));
        assert!(bad_request(&got[3]), "{:?}", got[3]);
        assert_eq!(got[4], Incoming::Request(Request::AddGroup { group: 7 }));
        assert_eq!(
            wire.format(),
            Some(Format {
                framing: Framing::Length,
                codec: CodecKind::Protobuf
            })
        );
    }

    #[test]
    fn a_protobuf_connection_gets_protobuf_replies() {
        let mut wire = ServerWire::new(1024);
        let mut buf = BytesMut::new();
        protobuf_frame(&Request::Ping, &mut buf);
        assert_eq!(wire.next(&mut buf), Some(Incoming::Request(Request::Ping)));
        let format = wire.format().expect("known after a frame");

        let replies = [
            ServerMsg::Pong,
            ServerMsg::error(MsgId::OneChat, ErrorCode::NoSuchUser, "no such user"),
        ];
        for reply in replies {
            let mut out = BytesMut::new();
            format.encode(&reply, &mut out);
            let mut decoder = crate::FrameDecoder::with_framing(1024, Framing::Length);
            let payload = decoder
                .decode(&mut out)
                .expect("a whole frame")
                .expect("well framed");
            assert!(out.is_empty());
            assert_ne!(payload.first(), Some(&b'{'), "not JSON");
            assert_eq!(ProtobufCodec.decode_reply(&payload), Ok(reply));
        }
    }
}
