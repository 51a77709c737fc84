//! The mio transport: one event loop per thread, in the style of the muduo
//! network library.
//!
//! An acceptor thread takes new connections and hands each, round robin, to
//! one of N I/O threads. Each I/O thread runs its own `mio::Poll` over the
//! connections it owns: it reads into a per-thread scratch buffer, keeps
//! only a partial frame per connection, cuts frames with the same
//! [`chat_proto::ServerWire`] as the tokio transport, and writes replies
//! straight out when the socket takes them, registering interest in
//! writability only while output is pending.
//!
//! The chat service is async (its store and bus are), so each connection
//! also has a small task on the tokio runtime that takes its decoded
//! requests in order and calls the service. What the service sends goes
//! into the connection's bounded queue, and the owning I/O thread is woken
//! through its `mio::Waker` to write it.
//!
//! Limits are those of the tokio transport: frame size, bounded output (a
//! client that stops reading is disconnected), idle timeout, clean shutdown.
//! A client that pipelines more than [`MAX_IN_FLIGHT`] requests is not read
//! from until the service has caught up, which pushes back through TCP.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chat_proto::{
    DeliveryCache, Format, Incoming, Request, ServerMsg, ServerWire, LINGER_AFTER_UNREADABLE,
};
use chat_service::{ChatService, Outbound};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Requests decoded but not yet handled, per connection, before the
/// transport stops reading from it.
pub const MAX_IN_FLIGHT: usize = 1024;

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const SCRATCH_BYTES: usize = 64 * 1024;
/// Output gathered from the queue before a write is attempted.
const WRITE_BATCH: usize = 64 * 1024;

/// Limits and threads of the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Longest frame accepted, in bytes.
    pub max_frame: usize,
    /// Messages that may wait for a slow client before it is disconnected.
    pub outbound_queue: usize,
    /// How long a client may stay silent (no request, no ping).
    pub idle_timeout: Duration,
    /// Number of I/O threads, each with its own event loop.
    pub threads: usize,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            max_frame: 64 * 1024,
            outbound_queue: 1024,
            idle_timeout: Duration::from_secs(90),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// A running mio transport.
pub struct MioServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    sessions: Arc<AtomicUsize>,
}

impl MioServer {
    /// Starts listening on `listener` and serving connections with
    /// `service`, whose async work runs on `runtime`.
    pub fn start(
        listener: std::net::TcpListener,
        service: ChatService,
        config: TransportConfig,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<MioServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let sessions = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(config);

        let mut loops = Vec::new();
        let mut wakers = Vec::new();
        let mut threads = Vec::new();
        for index in 0..config.threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (commands, inbox) = std_mpsc::channel();
            let handle = LoopHandle {
                commands,
                waker: waker.clone(),
            };
            let io_loop = IoLoop {
                poll,
                inbox,
                handle: handle.clone(),
                connections: HashMap::new(),
                next_token: 2,
                config: config.clone(),
                service: service.clone(),
                runtime: runtime.clone(),
                stopping: stopping.clone(),
                sessions: sessions.clone(),
                scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
                deliveries: DeliveryCache::default(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("chat-io-{index}"))
                    .spawn(move || io_loop.run())?,
            );
            loops.push(handle);
            wakers.push(waker);
        }

        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        wakers.push(waker);
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let acceptor = Acceptor {
            poll,
            listener,
            loops,
            next: 0,
            stopping: stopping.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("chat-accept".into())
                .spawn(move || acceptor.run())?,
        );

        Ok(MioServer {
            addr,
            stopping,
            wakers,
            threads,
            sessions,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection (each session logs out on
    /// the runtime) and waits for the threads and the sessions' tasks.
    pub async fn shutdown(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.sessions.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What other threads ask of an I/O loop.
enum Command {
    /// A new connection to own.
    Adopt(TcpStream, SocketAddr),
    /// The connection has queued output.
    Output(Token),
    /// The connection's task handled requests; read again if paused.
    Resume(Token),
    /// The service asked to close the connection (its queue overflowed).
    Close(Token),
    /// The connection's task is done: close once its output is written.
    Finished(Token),
}

#[derive(Clone)]
struct LoopHandle {
    commands: std_mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl LoopHandle {
    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    loops: Vec<LoopHandle>,
    next: usize,
    stopping: Arc<AtomicBool>,
}

impl Acceptor {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stopping.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(error = %e, "acceptor poll failed");
                }
                continue;
            }
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let target = &self.loops[self.next % self.loops.len()];
                        self.next = self.next.wrapping_add(1);
                        target.send(Command::Adopt(stream, peer));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Usually out of file descriptors: back off a little.
                        warn!(error = %e, "accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }
}

/// What a connection's task does, in the order the client sent it.
enum Work {
    /// Hand a request to the service.
    Request(Request),
    /// Queue an error reply for a malformed frame, after the replies to
    /// the requests before it.
    Reply(ServerMsg),
}

/// The service's handle on one connection's outbound queue.
///
/// Boxed messages, as in the tokio transport: the channel's first block of
/// slots is allocated up front, and pointer-sized slots keep it small for
/// a connection that sits idle.
struct MioOutbound {
    queue: mpsc::Sender<Box<ServerMsg>>,
    token: Token,
    owner: LoopHandle,
    /// An `Output` command is on its way: do not send another.
    signalled: Arc<AtomicBool>,
    /// The queue overflowed and the close is asked for: once is enough,
    /// however many more messages come before it happens.
    overflowed: AtomicBool,
    peer: SocketAddr,
}

impl Outbound for MioOutbound {
    fn send(&self, msg: ServerMsg) -> bool {
        match self.queue.try_send(Box::new(msg)) {
            Ok(()) => {
                if !self.signalled.swap(true, Ordering::AcqRel) {
                    self.owner.send(Command::Output(self.token));
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::AcqRel) {
                    warn!(peer = %self.peer, "client does not read its messages: disconnecting it");
                    self.owner.send(Command::Close(self.token));
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn room(&self) -> usize {
        // A quarter of the queue stays free for replies and live messages.
        self.queue
            .capacity()
            .saturating_sub(self.queue.max_capacity() / 4)
    }
}

/// One connection as its I/O loop sees it.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    wire: ServerWire,
    format: Format,
    input: BytesMut,
    output: BytesMut,
    outgoing: mpsc::Receiver<Box<ServerMsg>>,
    signalled: Arc<AtomicBool>,
    /// Work for the connection's task; dropped to end the session.
    requests: Option<mpsc::UnboundedSender<Work>>,
    in_flight: Arc<AtomicUsize>,
    paused: bool,
    writable_interest: bool,
    last_heard: Instant,
    /// Where the connection is on its way to the close.
    phase: Phase,
}

/// How a connection ends, in order: no more reading once its end is known,
/// the task's last replies written, then (after unreadable input) the
/// client's remaining bytes read and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// The client half-closed or sent something unreadable (`linger`); the
    /// task still answers what came before.
    Ending {
        linger: bool,
    },
    /// The task has sent its last message: close, or linger, once all is
    /// written.
    Flushing {
        linger: bool,
    },
    /// Our side is shut down; the client's input is dropped until it
    /// closes, or until then ([`LINGER_AFTER_UNREADABLE`] says why).
    Lingering {
        until: Instant,
    },
}

struct IoLoop {
    poll: Poll,
    inbox: std_mpsc::Receiver<Command>,
    handle: LoopHandle,
    connections: HashMap<Token, Conn>,
    next_token: usize,
    config: Arc<TransportConfig>,
    service: ChatService,
    runtime: tokio::runtime::Handle,
    stopping: Arc<AtomicBool>,
    sessions: Arc<AtomicUsize>,
    scratch: Box<[u8]>,
    /// A group message goes to many of this loop's connections: encoded once.
    deliveries: DeliveryCache,
}

impl IoLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = Duration::from_secs(1).min(self.config.idle_timeout);
        let mut last_sweep = Instant::now();
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(tick)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(error = %e, "event loop poll failed");
                }
                continue;
            }
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(token);
                }
                if event.is_writable() {
                    self.flush(token);
                }
            }
            self.run_commands();
            if last_sweep.elapsed() >= tick {
                self.close_idle();
                last_sweep = Instant::now();
            }
        }
        let tokens: Vec<Token> = self.connections.keys().copied().collect();
        for token in tokens {
            self.close(token, "server shutting down");
        }
    }

    fn run_commands(&mut self) {
        while let Ok(command) = self.inbox.try_recv() {
            match command {
                Command::Adopt(stream, peer) => self.adopt(stream, peer),
                Command::Output(token) => {
                    if let Some(conn) = self.connections.get(&token) {
                        conn.signalled.store(false, Ordering::Release);
                    }
                    self.flush(token);
                }
                Command::Resume(token) => {
                    let resume = self.connections.get_mut(&token).is_some_and(|c| {
                        let resume =
                            c.paused && c.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT / 2;
                        if resume {
                            c.paused = false;
                        }
                        resume
                    });
                    if resume {
                        self.update_interest(token);
                        self.on_readable(token);
                    }
                }
                Command::Close(token) => self.close(token, "closed by the server"),
                Command::Finished(token) => {
                    if let Some(conn) = self.connections.get_mut(&token) {
                        conn.phase = match conn.phase {
                            Phase::Ending { linger } => Phase::Flushing { linger },
                            Phase::Open => Phase::Flushing { linger: false },
                            later => later,
                        };
                    }
                    self.flush(token);
                }
            }
        }
    }

    fn adopt(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            warn!(%peer, error = %e, "cannot watch a new connection");
            return;
        }
        let (queue, outgoing) = mpsc::channel(self.config.outbound_queue);
        let signalled = Arc::new(AtomicBool::new(false));
        let outbound = Arc::new(MioOutbound {
            queue,
            token,
            owner: self.handle.clone(),
            signalled: signalled.clone(),
            overflowed: AtomicBool::new(false),
            peer,
        });
        let (requests, mut inbox) = mpsc::unbounded_channel::<Work>();
        let in_flight = Arc::new(AtomicUsize::new(0));

        // The connection's task: requests in order, one at a time. When
        // the loop drops its sender (the client left, or sent something
        // unreadable), the task finishes what was sent, logs the user out
        // and asks the loop to close the socket after the last reply.
        let mut connection = self.service.connect(outbound.clone());
        let owner = self.handle.clone();
        let task_in_flight = in_flight.clone();
        let sessions = self.sessions.clone();
        sessions.fetch_add(1, Ordering::SeqCst);
        self.runtime.spawn(async move {
            while let Some(work) = inbox.recv().await {
                match work {
                    Work::Request(request) => connection.handle(request).await,
                    Work::Reply(reply) => {
                        outbound.send(reply);
                    }
                }
                let before = task_in_flight.fetch_sub(1, Ordering::AcqRel);
                if before == MAX_IN_FLIGHT / 2 {
                    owner.send(Command::Resume(token));
                }
            }
            connection.close().await;
            owner.send(Command::Finished(token));
            sessions.fetch_sub(1, Ordering::SeqCst);
        });

        debug!(%peer, "connected");
        self.connections.insert(
            token,
            Conn {
                stream,
                peer,
                wire: ServerWire::new(self.config.max_frame),
                format: Format::default(),
                input: BytesMut::new(),
                output: BytesMut::new(),
                outgoing,
                signalled,
                requests: Some(requests),
                in_flight,
                paused: false,
                writable_interest: false,
                last_heard: Instant::now(),
                phase: Phase::Open,
            },
        );
    }

    fn on_readable(&mut self, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        match conn.phase {
            Phase::Lingering { .. } => return self.drain(token),
            Phase::Open if !conn.paused => {}
            _ => return,
        }
        let mut end = None;
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    // The client may have only shut down its sending side
                    // (`nc -q1`, a script piped in): it still waits for the
                    // replies to what it sent. The task answers those, logs
                    // out and then asks for the close.
                    conn.phase = Phase::Ending { linger: false };
                    conn.input.clear();
                    conn.requests.take();
                    break;
                }
                Ok(n) => {
                    conn.last_heard = Instant::now();
                    conn.input.extend_from_slice(&self.scratch[..n]);
                    if let Some(reason) = decode(conn) {
                        end = Some(reason);
                        break;
                    }
                    if conn.paused || conn.phase != Phase::Open {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    end = Some("read error");
                    break;
                }
            }
        }
        if conn.input.is_empty() && conn.input.capacity() > 0 {
            conn.input = BytesMut::new();
        }
        let stop_reading = conn.paused || conn.phase != Phase::Open;
        match end {
            Some(reason) => self.close(token, reason),
            None if stop_reading => self.update_interest(token),
            None => {}
        }
    }

    /// Moves queued messages into the output buffer and writes what the
    /// socket takes.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        loop {
            while conn.output.len() < WRITE_BATCH {
                match conn.outgoing.try_recv() {
                    Ok(msg) => self.deliveries.encode(conn.format, &msg, &mut conn.output),
                    Err(_) => break,
                }
            }
            if conn.output.is_empty() {
                break;
            }
            match conn.stream.write(&conn.output) {
                Ok(0) => return self.close(token, "write error"),
                Ok(n) => {
                    let _ = conn.output.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(token, "write error"),
            }
        }
        if let (Phase::Flushing { linger }, true) = (conn.phase, conn.output.is_empty()) {
            if !linger {
                return self.close(token, "session ended");
            }
            conn.phase = Phase::Lingering {
                until: Instant::now() + LINGER_AFTER_UNREADABLE,
            };
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            self.update_interest(token);
            return self.drain(token);
        }
        // All written: an idle connection keeps no output buffer.
        if conn.output.is_empty() && conn.output.capacity() > 0 {
            conn.output = BytesMut::new();
        }
        let pending = !conn.output.is_empty();
        if pending != conn.writable_interest {
            self.update_interest(token);
        }
    }

    fn update_interest(&mut self, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let want_write = !conn.output.is_empty();
        let want_read = match conn.phase {
            Phase::Open => !conn.paused,
            Phase::Lingering { .. } => true,
            Phase::Ending { .. } | Phase::Flushing { .. } => false,
        };
        let interest = match (want_read, want_write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        conn.writable_interest = want_write;
        let registry = self.poll.registry();
        let result = match interest {
            Some(interest) => registry
                .reregister(&mut conn.stream, token, interest)
                .or_else(|_| registry.register(&mut conn.stream, token, interest)),
            None => registry.deregister(&mut conn.stream),
        };
        if let Err(e) = result {
            warn!(peer = %conn.peer, error = %e, "cannot change interest");
        }
    }

    /// Reads and drops what a lingering connection's client sends; closes
    /// it when the client has closed its side.
    fn drain(&mut self, token: Token) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.close(token, "unreadable input"),
                // A client that sends as fast as it is read must not keep
                // this loop, and every other connection on it, past the
                // deadline.
                Ok(_) if lingered(conn.phase, Instant::now()) => {
                    return self.close(token, "unreadable input")
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(token, "unreadable input"),
            }
        }
    }

    fn close_idle(&mut self) {
        let limit = self.config.idle_timeout;
        let now = Instant::now();
        let idle: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                lingered(c.phase, now) || (c.last_heard.elapsed() > limit && !c.paused)
            })
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.close(token, "silent past the idle timeout");
        }
    }

    /// Ends a connection: what is already queued gets one last try, then
    /// the socket closes and the session's task logs the user out.
    fn close(&mut self, token: Token, reason: &'static str) {
        let Some(mut conn) = self.connections.remove(&token) else {
            return;
        };
        debug!(peer = %conn.peer, reason, "connection ends");
        while let Ok(msg) = conn.outgoing.try_recv() {
            conn.format.encode(&msg, &mut conn.output);
        }
        if !conn.output.is_empty() {
            let _ = conn.stream.write(&conn.output);
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        conn.requests.take();
    }
}

/// Whether a lingering connection's time is up.
fn lingered(phase: Phase, now: Instant) -> bool {
    matches!(phase, Phase::Lingering { until } if now >= until)
}

/// Hands every complete request in the connection's input to its task.
/// Returns why the connection must close at once, if it must.
fn decode(conn: &mut Conn) -> Option<&'static str> {
    while let Some(incoming) = conn.wire.next(&mut conn.input) {
        if let Some(format) = conn.wire.format() {
            conn.format = format;
        }
        let work = match incoming {
            Incoming::Request(request) => Work::Request(request),
            Incoming::Refused(reply) => {
                // The client is told; a log line per bad frame would let
                // one client fill the disk.
                debug!(peer = %conn.peer, ?reply, "malformed request");
                Work::Reply(reply)
            }
            Incoming::Fatal(reply) => {
                warn!(peer = %conn.peer, ?reply, "unreadable input: closing the connection");
                // The task sends the reply after the earlier ones, then
                // closes the connection: stop reading until it does.
                conn.phase = Phase::Ending { linger: true };
                conn.input.clear();
                if let Some(requests) = conn.requests.take() {
                    conn.in_flight.fetch_add(1, Ordering::AcqRel);
                    let _ = requests.send(Work::Reply(reply));
                }
                return None;
            }
        };
        let Some(requests) = &conn.requests else {
            return Some("session ended");
        };
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        if requests.send(work).is_err() {
            return Some("session ended");
        }
        if conn.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
            conn.paused = true;
            return None;
        }
    }
    None
}
