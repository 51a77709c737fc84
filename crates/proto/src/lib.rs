//! The chat cluster's wire protocol, free of I/O.
//!
//! Everything a transport and a client need to speak to the chat service
//! lives here, and none of it touches a socket, so the same code serves the
//! tokio transport, the mio transport, the terminal client, the load
//! generator and the tests:
//!
//! - [`message`]: the typed requests ([`Request`]) and server messages
//!   ([`ServerMsg`]) that the service deals in, with the protocol's message
//!   ids ([`MsgId`]) and error codes ([`ErrorCode`]);
//! - [`frame`]: an incremental [`FrameDecoder`] that finds frame boundaries
//!   in the two framings a server accepts (length-prefixed and a bare JSON
//!   stream), and [`encode_frame`] for the way back;
//! - [`wire`]: a server connection's [`ServerWire`], which combines the two
//!   so that every transport treats bytes, and malformed ones, alike;
//! - [`codec`]: the [`Codec`] trait that turns a frame's payload into a
//!   message and back, with the JSON implementation [`JsonCodec`];
//! - [`protobuf`]: [`ProtobufCodec`], the same messages in Protocol
//!   Buffers, for clients that want a compact typed encoding. Its schema is
//!   `proto/chat.proto`, compiled by `protox` at build time, so building
//!   needs cargo alone and no `protoc`.
//!
//! Both codecs map to the same [`Request`] and [`ServerMsg`], so the
//! service never learns which one a connection speaks: [`ServerWire`] picks
//! it per connection from the first payload byte (`{` is JSON, anything
//! else protobuf) and answers in kind.
//!
//! ```
//! use chat_proto::{Codec, FrameDecoder, Framing, JsonCodec, Request};
//! use bytes::BytesMut;
//!
//! let mut decoder = FrameDecoder::new(64 * 1024);
//! let mut input = BytesMut::from(&b"{\"msgid\":15}\0{\"msgid\":15}"[..]);
//! let mut requests = Vec::new();
//! while let Some(frame) = decoder.decode(&mut input) {
//!     let payload = frame.expect("well-formed input");
//!     requests.push(JsonCodec.decode_request(&payload).expect("a ping"));
//! }
//! assert_eq!(requests, vec![Request::Ping, Request::Ping]);
//! assert_eq!(decoder.framing(), Some(Framing::Stream));
//! ```
//!
//! A protobuf client sends the same request length-prefixed:
//!
//! ```
//! use chat_proto::{encode_frame, Codec, Framing, Incoming, ProtobufCodec, Request, ServerWire};
//! use bytes::BytesMut;
//!
//! let mut payload = Vec::new();
//! ProtobufCodec.encode_request(&Request::Ping, &mut payload);
//! let mut input = BytesMut::new();
//! encode_frame(Framing::Length, &payload, &mut input);
//!
//! let mut wire = ServerWire::new(64 * 1024);
//! assert_eq!(wire.next(&mut input), Some(Incoming::Request(Request::Ping)));
//! ```

pub mod codec;
pub mod frame;
pub mod message;
pub mod protobuf;
pub mod wire;

pub use codec::{Codec, DecodeError, JsonCodec};
pub use frame::{encode_frame, FrameDecoder, FrameError, Framing};
pub use message::*;
pub use protobuf::ProtobufCodec;
pub use wire::{CodecKind, DeliveryCache, Format, Incoming, ServerWire, LINGER_AFTER_UNREADABLE};
