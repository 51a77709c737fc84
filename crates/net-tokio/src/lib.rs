//! The tokio transport: sockets in, the chat service in the middle.
//!
//! [`serve`] accepts connections and gives each two tasks: a reader that
//! cuts bytes into requests with [`chat_proto::ServerWire`] and hands them
//! to the service in order, and a writer that drains the connection's
//! bounded outbound queue into the socket, all that has piled up in one
//! write.
//!
//! Limits that keep one client from hurting the others:
//!
//! - a frame longer than [`TransportConfig::max_frame`] gets an error reply
//!   and the connection is closed;
//! - a client that stops reading fills its queue of
//!   [`TransportConfig::outbound_queue`] messages and is disconnected (what
//!   could not be queued is kept offline by the service), so memory stays
//!   bounded;
//! - a client silent for [`TransportConfig::idle_timeout`] is disconnected
//!   and logged out;
//! - an idle connection holds no read buffer: bytes are read into a
//!   per-thread scratch buffer and only a partial frame is kept.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use chat_proto::{DeliveryCache, Format, Incoming, ServerMsg, ServerWire, LINGER_AFTER_UNREADABLE};
use chat_service::{ChatService, Connection, Outbound};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

/// Limits of the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Longest frame accepted, in bytes.
    pub max_frame: usize,
    /// Messages that may wait for a slow client before it is disconnected.
    pub outbound_queue: usize,
    /// How long a client may stay silent (no request, no ping).
    pub idle_timeout: Duration,
    /// How long closing connections get to flush at shutdown.
    pub drain_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            max_frame: 64 * 1024,
            outbound_queue: 1024,
            idle_timeout: Duration::from_secs(90),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled, then
/// closes every connection (logging its user out) and returns.
pub async fn serve(
    listener: TcpListener,
    service: ChatService,
    config: TransportConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let config = Arc::new(config);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors is the usual cause:
                    // wait a moment instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = ConnectionTask {
            service: service.clone(),
            config: config.clone(),
            token: shutdown.child_token(),
        };
        tracker.spawn(
            connection
                .run(stream, peer)
                .instrument(info_span!("conn", %peer)),
        );
    }
    drop(listener);
    tracker.close();
    info!(connections = tracker.len(), "closing connections");
    tracker.wait().await;
    Ok(())
}

struct ConnectionTask {
    service: ChatService,
    config: Arc<TransportConfig>,
    token: CancellationToken,
}

/// A connection's outbound queue, shared by the service (which queues)
/// and the connection's writer (which drains it).
///
/// A plain deque behind a lock rather than a channel: a tokio channel
/// allocates its control block (padded to cache lines) and a first block of
/// slots when it is made, most of a kilobyte that every idle connection
/// would hold for its whole life. An empty deque holds nothing, and the
/// writer takes the whole deque each time, so the memory of a burst goes
/// with it. The limit counts what waits in the deque, not what the writer
/// took and is still writing: a client that stops reading holds at most
/// twice the limit in messages before it is disconnected.
struct QueueOutbound {
    state: Mutex<QueueState>,
    /// Wakes the writer; a wake-up given while it is busy is kept for it.
    ready: Notify,
    limit: usize,
    token: CancellationToken,
    peer: SocketAddr,
}

#[derive(Default)]
struct QueueState {
    msgs: VecDeque<ServerMsg>,
    /// The writer is gone: nothing queued now would be written.
    closed: bool,
}

impl QueueOutbound {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Every update under this lock is a push, a take or a flag: a
        // panic elsewhere cannot leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything queued so far.
    fn take(&self) -> VecDeque<ServerMsg> {
        std::mem::take(&mut self.state().msgs)
    }

    /// What is left, and no more from now on.
    fn close(&self) -> VecDeque<ServerMsg> {
        let mut state = self.state();
        state.closed = true;
        std::mem::take(&mut state.msgs)
    }
}

impl Outbound for QueueOutbound {
    fn send(&self, msg: ServerMsg) -> bool {
        let mut state = self.state();
        if state.closed {
            return false;
        }
        if state.msgs.len() >= self.limit {
            // Nothing more is taken: the connection is closing, and the
            // warning is said once.
            state.closed = true;
            drop(state);
            warn!(peer = %self.peer, "client does not read its messages: disconnecting it");
            self.token.cancel();
            return false;
        }
        state.msgs.push_back(msg);
        drop(state);
        self.ready.notify_one();
        true
    }

    fn room(&self) -> usize {
        // A quarter of the queue stays free for replies and live messages.
        let queued = self.state().msgs.len();
        (self.limit - self.limit / 4).saturating_sub(queued)
    }
}

thread_local! {
    /// Where reads land first, so an idle connection holds no buffer.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; 64 * 1024].into_boxed_slice());
    /// A group message goes to many connections, whose writers mostly run
    /// on the same few threads: encoded once per thread and format.
    static DELIVERIES: RefCell<DeliveryCache> = RefCell::new(DeliveryCache::default());
}

impl ConnectionTask {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        debug!("connected");
        let (reader, writer) = stream.into_split();
        let format = Arc::new(OnceLock::new());
        let outbound = Arc::new(QueueOutbound {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            limit: self.config.outbound_queue.max(1),
            token: self.token.clone(),
            peer,
        });
        let writing = tokio::spawn(
            write_loop(
                writer,
                outbound.clone(),
                format.clone(),
                self.token.clone(),
                self.config.drain_timeout,
            )
            .in_current_span(),
        );

        let mut connection = self.service.connect(outbound.clone());
        let end = self
            .read_loop(&reader, &mut connection, &outbound, &format)
            .await;
        debug!(reason = end, "connection ends");
        Box::pin(connection.close()).await;

        // The session is over, so nothing more will be queued: the writer
        // flushes what is there and ends.
        self.token.cancel();
        drop(outbound);
        let _ = writing.await;
        if end == UNREADABLE {
            // Boxed: held inline, its timer and readiness futures would be
            // part of every connection's task, idle or not.
            Box::pin(linger(&reader)).await;
        }
    }

    async fn read_loop(
        &self,
        reader: &OwnedReadHalf,
        connection: &mut Connection,
        outbound: &Arc<QueueOutbound>,
        format: &OnceLock<Format>,
    ) -> &'static str {
        let mut wire = ServerWire::new(self.config.max_frame);
        let mut buf = BytesMut::new();
        loop {
            tokio::select! {
                _ = self.token.cancelled() => return "closed by the server",
                ready = tokio::time::timeout(self.config.idle_timeout, reader.readable()) => match ready {
                    Err(_) => return "silent past the idle timeout",
                    Ok(Err(_)) => return "read error",
                    Ok(Ok(())) => {}
                },
            }
            match read_into(reader, &mut buf) {
                Ok(0) => return "closed by the client",
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return "read error",
            }
            while let Some(incoming) = wire.next(&mut buf) {
                if let Some(f) = wire.format() {
                    format.get_or_init(|| f);
                }
                match incoming {
                    // Boxed: the service's future (store and bus calls
                    // inlined) is large, and held inline it would be part
                    // of every idle connection's task for its whole life.
                    Incoming::Request(request) => Box::pin(connection.handle(request)).await,
                    Incoming::Refused(reply) => {
                        // The client is told; a log line per bad frame
                        // would let one client fill the disk.
                        debug!(?reply, "malformed request");
                        outbound.send(reply);
                    }
                    Incoming::Fatal(reply) => {
                        warn!(?reply, "unreadable input: closing the connection");
                        outbound.send(reply);
                        return UNREADABLE;
                    }
                }
                if self.token.is_cancelled() {
                    return "closed by the server";
                }
            }
            if buf.is_empty() && buf.capacity() > 0 {
                buf = BytesMut::new();
            }
        }
    }
}

/// Why a connection ends when its client sent what cannot be read.
const UNREADABLE: &str = "unreadable input";

/// Reads and drops what the client still sends, until it closes its side
/// or [`LINGER_AFTER_UNREADABLE`] has passed (which says why), after the
/// error reply and our side's close.
async fn linger(reader: &OwnedReadHalf) {
    let drain = async {
        loop {
            if reader.readable().await.is_err() {
                return;
            }
            let read = SCRATCH.with(|scratch| reader.try_read(&mut scratch.borrow_mut()));
            match read {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_AFTER_UNREADABLE, drain).await;
}

/// Reads what the socket has through the scratch buffer, keeping only the
/// bytes read in `buf`.
fn read_into(reader: &OwnedReadHalf, buf: &mut BytesMut) -> io::Result<usize> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let n = reader.try_read(&mut scratch)?;
        buf.extend_from_slice(&scratch[..n]);
        Ok(n)
    })
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    queue: Arc<QueueOutbound>,
    format: Arc<OnceLock<Format>>,
    token: CancellationToken,
    drain_timeout: Duration,
) {
    let mut out = BytesMut::new();
    loop {
        let mut msgs = queue.take();
        if msgs.is_empty() {
            tokio::select! {
                biased;
                _ = queue.ready.notified() => continue,
                _ = token.cancelled() => break,
            }
        }
        let format = format.get().copied().unwrap_or_default();
        while !msgs.is_empty() {
            DELIVERIES.with(|cache| {
                let mut cache = cache.borrow_mut();
                while out.len() < 64 * 1024 {
                    let Some(msg) = msgs.pop_front() else { break };
                    cache.encode(format, &msg, &mut out);
                }
            });
            if writer.write_all(&out).await.is_err() {
                queue.close();
                token.cancel();
                return;
            }
            out.clear();
        }
        // The connection may now stay idle for hours: it keeps no buffer
        // meanwhile (the next burst allocates one again).
        out = BytesMut::new();
    }

    // Closing: what is already queued (an error reply, the last
    // deliveries) still goes out, within a bounded time.
    let format = format.get().copied().unwrap_or_default();
    for msg in &queue.close() {
        format.encode(msg, &mut out);
    }
    let flush = async {
        writer.write_all(&out).await?;
        writer.shutdown().await
    };
    let _ = tokio::time::timeout(drain_timeout, flush).await;
}
