//! A test harness around the real `chat-server` binary.
//!
//! Every test starts its own server on port 0 with a fresh data directory,
//! so tests never see each other's data, and talks to it over TCP with raw
//! bytes, the way any client would.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_proto::{
    encode_frame, Codec, FrameDecoder, Framing, JsonCodec, LoginOk, ProtobufCodec, Request,
    ServerMsg, UserId,
};

/// How long a test waits for any one reply before it fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `chat-server`, stopped when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A single node on the embedded store, in a fresh directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A single node with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Server::start_in(dir, extra)
    }

    /// A single node on the SQLite data in `dir` (to restart on the same data).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let store = format!("sqlite:{}", dir.path().join("chat.db").display());
        let mut args: Vec<String> = vec!["--store".into(), store];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(&args, dir)
    }

    /// A server with exactly these flags (besides port 0 and fast hashes);
    /// `dir` lives as long as the server.
    pub fn spawn(args: &[String], dir: tempfile::TempDir) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-server"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--password-cost",
                "fast",
                "--log",
                "info",
            ])
            .args(args)
            .env_remove("CHAT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("chat-server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(addr) = field(&line, "addr=") {
                        let _ = addr_tx.send(addr);
                    }
                }
                log_writer.lock().expect("log lock").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("listening address parses"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "chat-server did not start: {:#?}",
                    log.lock().expect("log lock")
                );
            }
        };
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// A new client connection.
    pub fn connect(&self) -> Peer {
        Peer::connect(self.addr, Framing::Stream)
    }

    /// A new client connection speaking length-prefixed frames.
    pub fn connect_length(&self) -> Peer {
        Peer::connect(self.addr, Framing::Length)
    }

    /// The server's log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Sends SIGTERM and waits for the exit; the exit status and how long
    /// it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration, tempfile::TempDir) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
                return (status, started.elapsed(), dir);
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server cleanly and returns its whole log.
    pub fn stop(self) -> Vec<String> {
        let log = self.log.clone();
        let (status, _, _) = self.terminate();
        assert!(status.success(), "exit status {status:?}");
        // The log reader thread finishes once stderr closes.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && Arc::strong_count(&log) > 1 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = log.lock().expect("log lock").clone();
        lines
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait works").is_none()
    }

    /// Registers a user with password `pw` and returns their id.
    pub fn register(&self, name: &str) -> UserId {
        let mut peer = self.connect();
        peer.register(name, "pw")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A clean stop releases the server's presence keys in Redis, so a
        // test leaves nothing behind; a kill is the fallback.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Stops the server at once, as a crash would: no clean shutdown.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    Some(line[start..].split_whitespace().next()?.to_owned())
}

/// What a test client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    JsonStream,
    JsonLength,
    Protobuf,
}

impl Wire {
    pub fn json(framing: Framing) -> Wire {
        match framing {
            Framing::Stream => Wire::JsonStream,
            Framing::Length => Wire::JsonLength,
        }
    }
}

/// One client connection, read with a timeout.
pub struct Peer {
    pub stream: TcpStream,
    framing: Framing,
    codec: &'static dyn Codec,
    decoder: FrameDecoder,
    buf: BytesMut,
    pending: Option<Vec<u8>>,
}

impl Peer {
    /// A JSON client with the given framing.
    pub fn connect(addr: SocketAddr, framing: Framing) -> Peer {
        Peer::connect_wire(addr, Wire::json(framing))
    }

    /// A client speaking `wire`.
    pub fn connect_wire(addr: SocketAddr, wire: Wire) -> Peer {
        let (framing, codec): (Framing, &'static dyn Codec) = match wire {
            Wire::JsonStream => (Framing::Stream, &JsonCodec),
            Wire::JsonLength => (Framing::Length, &JsonCodec),
            Wire::Protobuf => (Framing::Length, &ProtobufCodec),
        };
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        Peer {
            stream,
            framing,
            codec,
            decoder: FrameDecoder::with_framing(16 * 1024 * 1024, framing),
            buf: BytesMut::new(),
            pending: None,
        }
    }

    /// Bytes that `request` is sent as, framed.
    pub fn frame(&self, request: &Request) -> Vec<u8> {
        let mut payload = Vec::new();
        self.codec.encode_request(request, &mut payload);
        let mut out = BytesMut::new();
        encode_frame(self.framing, &payload, &mut out);
        out.to_vec()
    }

    pub fn send(&mut self, request: &Request) {
        let bytes = self.frame(request);
        self.send_raw(&bytes);
    }

    /// Sends a raw JSON payload in this connection's framing.
    pub fn send_json(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_frame(self.framing, payload, &mut out);
        self.send_raw(&out);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// The next frame's payload, or `None` if the server closed the
    /// connection. Panics after [`REPLY_TIMEOUT`].
    pub fn recv_payload(&mut self) -> Option<Vec<u8>> {
        if let Some(payload) = self.pending.take() {
            return Some(payload);
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf) {
                return Some(frame.expect("server sends well-formed frames").to_vec());
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("reply within timeout");
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no reply within {REPLY_TIMEOUT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next message; panics if the connection closed.
    pub fn recv(&mut self) -> ServerMsg {
        let payload = self.recv_payload().expect("connection is open");
        self.codec.decode_reply(&payload).unwrap_or_else(|e| {
            panic!(
                "undecodable reply {:?}: {e}",
                String::from_utf8_lossy(&payload)
            )
        })
    }

    /// The next message as raw JSON.
    pub fn recv_json(&mut self) -> serde_json::Value {
        let payload = self.recv_payload().expect("connection is open");
        serde_json::from_slice(&payload).expect("reply is JSON")
    }

    /// Whether the server sends nothing more within `wait`.
    pub fn is_quiet(&mut self, wait: Duration) -> bool {
        if self.pending.is_some() {
            return false;
        }
        if let Some(frame) = self.decoder.decode(&mut self.buf) {
            self.pending = Some(frame.expect("server sends well-formed frames").to_vec());
            return false;
        }
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.is_quiet(Duration::from_millis(1))
            }
            Err(_) => true,
        }
    }

    /// Sends `request` and returns the reply.
    pub fn call(&mut self, request: Request) -> ServerMsg {
        self.send(&request);
        self.recv()
    }

    pub fn register(&mut self, name: &str, password: &str) -> UserId {
        let request = Request::Register {
            name: name.into(),
            password: password.into(),
        };
        match self.call(request) {
            ServerMsg::RegAck(Ok(id)) => id,
            other => panic!("registering {name:?} failed: {other:?}"),
        }
    }

    /// Logs in with password `pw`, asking for object lists.
    pub fn login(&mut self, id: UserId) -> LoginOk {
        match self.call(Request::Login {
            id,
            password: "pw".into(),
            version: 2,
        }) {
            ServerMsg::LoginAck(Ok(mut ok)) => {
                // Offline messages beyond what fits the ack follow it.
                for _ in 0..ok.more_offline {
                    match self.recv() {
                        ServerMsg::Deliver(d) => ok.offline.push(d),
                        other => {
                            panic!("expected an offline message after LOGIN_ACK, got {other:?}")
                        }
                    }
                }
                ok.more_offline = 0;
                *ok
            }
            other => panic!("login of {id} failed: {other:?}"),
        }
    }

    pub fn logout(&mut self) {
        assert_eq!(self.call(Request::Logout), ServerMsg::LogoutAck);
    }

    /// Sends a one-to-one message and checks it was accepted.
    pub fn chat(&mut self, to: UserId, text: &str) {
        match self.call(Request::OneChat {
            to,
            text: text.into(),
        }) {
            ServerMsg::ChatAck { .. } => {}
            other => panic!("message to {to} refused: {other:?}"),
        }
    }
}

/// The text of a delivered message, or a panic naming what came instead.
pub fn delivered_text(msg: &ServerMsg) -> &str {
    match msg {
        ServerMsg::Deliver(d) => match &**d {
            chat_proto::Delivery::One(m) => &m.text,
            chat_proto::Delivery::Group(m) => &m.text,
        },
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// The errno of an error reply, or a panic naming what came instead.
pub fn error_code(msg: &ServerMsg) -> chat_proto::ErrorCode {
    match msg {
        ServerMsg::Error { failure, .. } => failure.code,
        ServerMsg::LoginAck(Err(f)) | ServerMsg::RegAck(Err(f)) => f.code,
        other => panic!("expected an error, got {other:?}"),
    }
}
