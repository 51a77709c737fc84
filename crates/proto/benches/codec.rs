//! Microbenchmarks of the wire protocol's hot paths: cutting frames out of
//! a byte stream and turning payloads into messages and back.
//!
//! Every request and every delivery passes through these functions on the
//! server and again on each client, so they set a floor under the cost of a
//! message. The frame decoder is measured on input that arrives whole and
//! on the same input cut into small reads, since the JSON stream decoder
//! must resume in the middle of an object; both codecs are measured on the
//! two messages that dominate chat traffic, ONE_CHAT in and its delivery
//! out. Run with `cargo bench -p chat-proto`; CI only builds them.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use chat_proto::{
    encode_frame, ChatMessage, Codec, Delivery, FrameDecoder, Framing, JsonCodec, ProtobufCodec,
    Request, ServerMsg,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Requests per decoded buffer: a busy connection's read holds many.
const FRAMES: usize = 64;

/// Bytes per read when the input arrives in pieces: smaller than one frame,
/// so every frame is split at least once.
const PIECE: usize = 7;

fn request() -> Request {
    Request::OneChat {
        to: 1042,
        text: "17 1234567890123 hello, this is a chat message of ordinary size..".into(),
    }
}

fn delivery() -> ServerMsg {
    ServerMsg::Deliver(Arc::new(Delivery::One(ChatMessage {
        from: 1041,
        from_name: "alice".into(),
        to: 1042,
        text: "17 1234567890123 hello, this is a chat message of ordinary size..".into(),
        time: "2026-12-03 19:20:01".into(),
    })))
}

/// `FRAMES` ONE_CHAT requests in `framing`, encoded with `codec`.
fn stream_of_requests(framing: Framing, codec: &dyn Codec) -> Vec<u8> {
    let mut payload = Vec::new();
    codec.encode_request(&request(), &mut payload);
    let mut out = BytesMut::new();
    for _ in 0..FRAMES {
        encode_frame(framing, &payload, &mut out);
    }
    out.to_vec()
}

/// Decodes every frame of `input`, fed `piece` bytes at a time.
fn decode_all(input: &[u8], piece: usize) -> usize {
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::with_capacity(input.len());
    let mut frames = 0;
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf) {
            frames += black_box(frame.map(|f| f.len()).unwrap_or(0)).min(1);
        }
    }
    assert_eq!(frames, FRAMES, "every frame decodes");
    frames
}

fn frame_decoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let inputs = [
        ("stream", stream_of_requests(Framing::Stream, &JsonCodec)),
        (
            "length",
            stream_of_requests(Framing::Length, &ProtobufCodec),
        ),
    ];
    for (name, input) in &inputs {
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_with_input(BenchmarkId::new(*name, "whole"), input, |b, input| {
            b.iter(|| decode_all(input, input.len()))
        });
        group.bench_with_input(BenchmarkId::new(*name, "split"), input, |b, input| {
            b.iter(|| decode_all(input, PIECE))
        });
    }
    group.finish();
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    let codecs: [(&str, &dyn Codec); 2] = [("json", &JsonCodec), ("protobuf", &ProtobufCodec)];
    for (name, codec) in codecs {
        let request = request();
        let delivery = delivery();
        let mut request_bytes = Vec::new();
        codec.encode_request(&request, &mut request_bytes);
        let mut delivery_bytes = Vec::new();
        codec.encode_reply(&delivery, &mut delivery_bytes);

        let mut out = Vec::with_capacity(256);
        group.bench_function(BenchmarkId::new("encode_request", name), |b| {
            b.iter(|| {
                out.clear();
                codec.encode_request(black_box(&request), &mut out);
                out.len()
            })
        });
        group.bench_function(BenchmarkId::new("decode_request", name), |b| {
            b.iter(|| codec.decode_request(black_box(&request_bytes)).is_ok())
        });
        group.bench_function(BenchmarkId::new("encode_delivery", name), |b| {
            b.iter(|| {
                out.clear();
                codec.encode_reply(black_box(&delivery), &mut out);
                out.len()
            })
        });
        group.bench_function(BenchmarkId::new("decode_delivery", name), |b| {
            b.iter(|| codec.decode_reply(black_box(&delivery_bytes)).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, frame_decoder, codecs);
criterion_main!(benches);
