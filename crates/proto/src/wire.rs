//! A server connection's wire, shared by every transport.
//!
//! [`ServerWire`] turns a connection's incoming bytes into requests, or into
//! the error replies that malformed input earns, and remembers the
//! connection's [`Format`] (framing and codec) so that replies go back the
//! way requests came. Transports own sockets and nothing of the protocol,
//! so the tokio and mio transports behave alike byte for byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use crate::codec::{Codec, JsonCodec};
use crate::frame::{encode_frame, FrameDecoder, FrameError, Framing};
use crate::message::{Delivery, ErrorCode, Failure, Request, ServerMsg};
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

/// Encodes a group message once per format for all the connections it
/// goes to, instead of once per connection.
///
/// A server hands one delivery (one `Arc`) to every member it holds, and
/// their writers encode it one after the other: the cache keeps the frames
/// of the newest shared delivery, one per format, and copies them. A
/// delivery that nobody else holds (a one-to-one message) is encoded as
/// usual and not kept. A transport keeps one cache per thread.
#[derive(Debug, Default)]
pub struct DeliveryCache {
    /// Frames of one delivery; holding its `Arc` keeps its address from
    /// being reused by another delivery while the entry lives.
    entries: Vec<(Arc<Delivery>, Format, Vec<u8>)>,
}

impl DeliveryCache {
    /// Appends `msg`, framed in `format`, to `out`.
    pub fn encode(&mut self, format: Format, msg: &ServerMsg, out: &mut BytesMut) {
        let ServerMsg::Deliver(delivery) = msg else {
            return format.encode(msg, out);
        };
        if let Some((_, _, frame)) = self
            .entries
            .iter()
            .find(|(d, f, _)| Arc::ptr_eq(d, delivery) && *f == format)
        {
            out.extend_from_slice(frame);
            return;
        }
        let start = out.len();
        format.encode(msg, out);
        if Arc::strong_count(delivery) <= 1 + usize::from(self.holds(delivery)) {
            // Held by this message alone (and perhaps by the cache): no
            // other connection will ask for it.
            return;
        }
        if !self.holds(delivery) {
            self.entries.clear();
        }
        let frame = out[start..].to_vec();
        self.entries.push((delivery.clone(), format, frame));
    }

    fn holds(&self, delivery: &Arc<Delivery>) -> bool {
        self.entries
            .first()
            .is_some_and(|(d, _, _)| Arc::ptr_eq(d, delivery))
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

/// After [`Incoming::Fatal`], how long a transport goes on reading and
/// dropping what the client still sends, once the reply is written and
/// its own side shut down, before it closes. Closing at once over unread
/// input resets the connection, and a client still sending (a file sent
/// to the wrong port, `nc`) fails on the reset before it reads the error.
pub const LINGER_AFTER_UNREADABLE: Duration = Duration::from_secs(2);

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
                // Refused before any payload was read, the codec is not
                // known, but the framing may be: a length-framed client
                // reads a length-framed reply, with a JSON payload.
                // Only when the connection ends here: a refusal it lives
                // through leaves the codec to its first payload.
                if e.is_fatal() && self.format.is_none() {
                    if let Some(framing) = self.decoder.framing() {
                        self.format = Some(Format {
                            framing,
                            codec: CodecKind::Json,
                        });
                    }
                }
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
    use crate::message::{GroupMessage, MsgId};

    fn formats() -> [Format; 2] {
        [
            Format::default(),
            Format {
                framing: Framing::Length,
                codec: CodecKind::Protobuf,
            },
        ]
    }

    fn group_delivery(text: &str) -> Arc<Delivery> {
        Arc::new(Delivery::Group(GroupMessage {
            from: 1,
            from_name: "ann".to_owned(),
            group: 3,
            text: text.to_owned(),
            time: "2024-01-02 03:04:05".to_owned(),
        }))
    }

    fn plain(format: Format, msg: &ServerMsg) -> BytesMut {
        let mut out = BytesMut::new();
        format.encode(msg, &mut out);
        out
    }

    #[test]
    fn an_oversized_first_frame_is_answered_in_the_connections_framing() {
        let mut wire = ServerWire::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 1, 0]);
        let Some(Incoming::Fatal(reply)) = wire.next(&mut buf) else {
            panic!("an oversized frame is fatal");
        };
        let format = wire.format().expect("the framing is known");
        assert_eq!(format.framing, Framing::Length);
        let out = plain(format, &reply);
        let mut decoder = FrameDecoder::with_framing(1 << 20, Framing::Length);
        let payload = decoder
            .decode(&mut out.clone())
            .expect("a whole frame")
            .expect("a valid frame");
        let decoded = JsonCodec.decode_reply(&payload).expect("a JSON reply");
        assert_eq!(decoded, reply);
    }

    #[test]
    fn a_shared_delivery_is_encoded_once_per_format_and_reads_the_same() {
        let mut cache = DeliveryCache::default();
        let delivery = group_delivery("to all");
        // Three members' copies of one group message.
        let msgs: Vec<ServerMsg> = (0..3)
            .map(|_| ServerMsg::Deliver(delivery.clone()))
            .collect();
        for format in formats() {
            for msg in &msgs {
                let mut out = BytesMut::from(&b"before"[..]);
                cache.encode(format, msg, &mut out);
                assert_eq!(&out[..6], b"before");
                assert_eq!(&out[6..], &plain(format, msg)[..]);
            }
        }
        assert_eq!(cache.entries.len(), 2, "one frame per format");

        // The next shared delivery replaces them.
        let next = group_delivery("again");
        let copies = [ServerMsg::Deliver(next.clone()), ServerMsg::Deliver(next)];
        let mut out = BytesMut::new();
        cache.encode(Format::default(), &copies[0], &mut out);
        assert_eq!(&out[..], &plain(Format::default(), &copies[0])[..]);
        assert_eq!(cache.entries.len(), 1);
        assert!(!cache.holds(&delivery));
    }

    #[test]
    fn a_delivery_nobody_else_holds_is_not_kept() {
        let mut cache = DeliveryCache::default();
        let msg = ServerMsg::Deliver(group_delivery("just you"));
        let mut out = BytesMut::new();
        cache.encode(Format::default(), &msg, &mut out);
        assert_eq!(&out[..], &plain(Format::default(), &msg)[..]);
        assert!(cache.entries.is_empty());

        let pong = ServerMsg::Pong;
        let mut out = BytesMut::new();
        cache.encode(Format::default(), &pong, &mut out);
        assert_eq!(&out[..], &plain(Format::default(), &pong)[..]);
        assert!(cache.entries.is_empty());
    }

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
