//! A fake chat server for the tests: it speaks the real wire protocol
//! through `chat-proto` (both framings, both codecs), but answers each request with whatever the test
//! scripts, so the client is tested alone, with faults no real server
//! would produce on demand.

#![allow(dead_code)] // Each test target uses a different part of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use chat_proto::{
    encode_frame, Codec, FrameDecoder, Framing, JsonCodec, ProtobufCodec, Request, ServerMsg,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fake server does about one request.
pub enum Answer {
    /// Writes these messages, in order (deliveries and the reply).
    Send(Vec<ServerMsg>),
    /// Writes these payloads as they are, framed.
    Raw(Vec<&'static str>),
    /// Writes nothing.
    Nothing,
    /// Closes the connection without answering.
    Hangup,
}

/// Decides the answer to a request on the `n`th connection (from 0).
pub type Script = dyn Fn(usize, &Request) -> Answer + Send + Sync;

/// A fake server on a free loopback port, until dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    framings: Mutex<Vec<Framing>>,
    requests: Mutex<Vec<Request>>,
}

impl FakeServer {
    pub async fn start(script: impl Fn(usize, &Request) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let seen = Arc::new(Seen::default());
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let n = seen.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, n, Arc::clone(&script), Arc::clone(&seen)));
                }
            }
        });
        FakeServer { addr, seen, task }
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// The framing of each connection that sent a request, in order.
    pub fn framings(&self) -> Vec<Framing> {
        self.seen.framings.lock().expect("not poisoned").clone()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.requests.lock().expect("not poisoned").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, n: usize, script: Arc<Script>, seen: Arc<Seen>) {
    let mut decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    let mut noted = false;
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Some(frame) = decoder.decode(&mut buf) {
            let Ok(payload) = frame else { return };
            let framing = decoder.framing().expect("known after a frame");
            if !noted {
                seen.framings.lock().expect("not poisoned").push(framing);
                noted = true;
            }
            // As a real server does, the payload's first byte tells the codec.
            let codec: &dyn Codec = match payload.first() {
                Some(b'{') => &JsonCodec,
                _ => &ProtobufCodec,
            };
            let request = codec
                .decode_request(&payload)
                .expect("the client sends well-formed requests");
            seen.requests
                .lock()
                .expect("not poisoned")
                .push(request.clone());

            let mut out = BytesMut::new();
            match script(n, &request) {
                Answer::Send(msgs) => {
                    for msg in msgs {
                        let mut payload = Vec::new();
                        codec.encode_reply(&msg, &mut payload);
                        encode_frame(framing, &payload, &mut out);
                    }
                }
                Answer::Raw(payloads) => {
                    for payload in payloads {
                        encode_frame(framing, payload.as_bytes(), &mut out);
                    }
                }
                Answer::Nothing => {}
                Answer::Hangup => return,
            }
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// The usual answer to a request that only needs to be acknowledged.
pub fn ordinary(request: &Request) -> Answer {
    use chat_proto::{ErrorCode, MsgId};
    Answer::Send(vec![match request {
        Request::Ping => ServerMsg::Pong,
        Request::Logout => ServerMsg::LogoutAck,
        Request::OneChat { .. } => ServerMsg::ChatAck {
            request: MsgId::OneChat,
            time: "2026-12-03 19:20:01".into(),
        },
        Request::GroupChat { .. } => ServerMsg::ChatAck {
            request: MsgId::GroupChat,
            time: "2026-12-03 19:20:01".into(),
        },
        other => ServerMsg::error(other.msg_id(), ErrorCode::Invalid, "not scripted"),
    }])
}
