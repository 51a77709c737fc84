//! One connection: a writer task, a reader task, and the pairing of replies
//! with the requests they answer.
//!
//! The server answers every request with exactly one reply, in order, and
//! slips deliveries (ONE_CHAT, GROUP_CHAT, FRIEND_ADDED) in between at any
//! time. The protocol has no request ids, so pairing is by position: the
//! writer records, in the order it writes, where each request's reply is to
//! go (a waiting caller, the event stream, or nowhere for a heartbeat), and
//! the reader hands each reply to the oldest record and everything else to
//! the event stream. Both tasks share that queue and the connection's fate
//! under one lock, so a caller can never wait on a connection that has
//! already ended.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use chat_proto::{
    encode_frame, Codec, DecodeError, ErrorCode, Failure, FrameDecoder, Framing, MsgId, Request,
    ServerMsg,
};
use futures::Stream;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, warn};

use crate::{ClientConfig, ClientError, CloseReason};

/// Requests queued for the writer before [`Client::send`] waits: room for a
/// load generator's bursts, small enough to push back on a stalled server.
const QUEUE: usize = 256;

/// Requests written with one system call when many are queued.
const BATCH: usize = 64;

/// One connection to a chat server.
///
/// Every method takes `&self`, so a `Client` can be shared (in an `Arc`)
/// between a task that sends and one that reads events. Dropping it sends
/// what is already queued, then closes the connection.
#[derive(Debug)]
pub struct Client {
    requests: mpsc::Sender<Outgoing>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerMsg>>,
    shared: Arc<Shared>,
    writer: JoinHandle<()>,
    peer: SocketAddr,
}

impl Client {
    /// Connects to `config.addr` and starts the connection's reader and
    /// writer tasks on the current tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let addr = config.addr.clone();
        let stream = match timeout(config.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(ClientError::Connect { addr, source }),
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    addr,
                    after: config.connect_timeout,
                })
            }
        };
        let peer = stream
            .peer_addr()
            .map_err(|source| ClientError::Connect { addr, source })?;
        // Chat frames are small and interactive; Nagle's algorithm would hold
        // one back until the previous one is acknowledged.
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "cannot disable Nagle's algorithm");
        }
        debug!(%peer, framing = ?config.framing, "connected");
        Ok(Client::start(stream, peer, &config))
    }

    fn start(stream: TcpStream, peer: SocketAddr, config: &ClientConfig) -> Client {
        let (read_half, write_half) = stream.into_split();
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed,
        });
        let (requests, queue) = mpsc::channel(QUEUE);
        let (events_tx, events) = mpsc::unbounded_channel();

        let writer = Writer {
            socket: write_half,
            queue,
            shared: Arc::clone(&shared),
            framing: config.framing,
            codec: Arc::clone(&config.codec),
            heartbeat: config.heartbeat,
        };
        let reader = Reader {
            socket: read_half,
            events: events_tx,
            shared: Arc::clone(&shared),
            decoder: FrameDecoder::with_framing(config.max_frame, config.framing),
            codec: Arc::clone(&config.codec),
        };
        let writer = tokio::spawn(writer.run());
        tokio::spawn(reader.run());

        Client {
            requests,
            events: tokio::sync::Mutex::new(events),
            shared,
            writer,
            peer,
        }
    }

    /// Sends a request without waiting; its reply comes out of
    /// [`recv`](Client::recv) in its place among the deliveries.
    ///
    /// Waits only when the outgoing queue is full.
    pub async fn send(&self, request: Request) -> Result<(), ClientError> {
        self.submit(request, Route::Events).await
    }

    /// Sends a request and waits for its reply. Deliveries that arrive
    /// meanwhile go to [`recv`](Client::recv) as usual.
    ///
    /// If the caller stops waiting (the future is dropped, say by a
    /// timeout), the reply is not lost: it goes to `recv` when it comes.
    pub async fn request(&self, request: Request) -> Result<ServerMsg, ClientError> {
        let (reply_tx, reply) = oneshot::channel();
        self.submit(request, Route::Caller(reply_tx)).await?;
        reply
            .await
            .map_err(|_| ClientError::Closed(self.shared.reason()))
    }

    /// The next message nobody waits for, in arrival order: deliveries,
    /// replies to [`send`](Client::send), and replies that came after their
    /// caller stopped waiting. Answers to the client's own heartbeats never
    /// show.
    ///
    /// `None` once the connection has ended and every message that arrived
    /// before has been returned; [`close_reason`](Client::close_reason) then
    /// says why.
    ///
    /// Messages are buffered without bound until read, so a program that
    /// uses only [`request`](Client::request) should still drain them.
    pub async fn recv(&self) -> Option<ServerMsg> {
        self.events.lock().await.recv().await
    }

    /// The messages of [`recv`](Client::recv) as a stream.
    pub fn events(&self) -> impl Stream<Item = ServerMsg> + '_ {
        futures::stream::unfold(self, |client| async move {
            client.recv().await.map(|msg| (msg, client))
        })
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.lock().closed.clone()
    }

    /// The address this connection reached (a load balancer's, if there is
    /// one in between).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sends what is queued, then closes the connection and waits until the
    /// writer is done.
    pub async fn close(self) {
        let Client {
            requests, writer, ..
        } = self;
        drop(requests);
        if let Err(error) = writer.await {
            debug!(%error, "writer task ended abnormally");
        }
    }

    async fn submit(&self, request: Request, route: Route) -> Result<(), ClientError> {
        if let Some(reason) = self.close_reason() {
            return Err(ClientError::Closed(reason));
        }
        self.requests
            .send(Outgoing { request, route })
            .await
            .map_err(|_| ClientError::Closed(self.shared.reason()))
    }
}

/// Whether a server message is a delivery (ONE_CHAT, GROUP_CHAT,
/// FRIEND_ADDED) rather than the reply to a request.
///
/// For programs that pair replies themselves from [`Client::recv`].
pub fn is_delivery(msg: &ServerMsg) -> bool {
    matches!(msg, ServerMsg::Deliver(_) | ServerMsg::FriendAdded(_))
}

fn is_delivery_id(msgid: i64) -> bool {
    matches!(
        MsgId::from_code(msgid),
        Some(MsgId::OneChat | MsgId::GroupChat | MsgId::FriendAdded)
    )
}

/// A request on its way to the writer, with where its reply is to go.
#[derive(Debug)]
struct Outgoing {
    request: Request,
    route: Route,
}

/// Where a reply goes.
#[derive(Debug)]
enum Route {
    /// To a caller of [`Client::request`].
    Caller(oneshot::Sender<ServerMsg>),
    /// To the event stream.
    Events,
    /// Nowhere: it answers the client's own heartbeat.
    Heartbeat,
}

/// What the two tasks and the handle share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Becomes `true` when the connection ends, to stop the other task.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// Where the replies still expected are to go, oldest first.
    routes: VecDeque<Route>,
    heartbeats_unanswered: u32,
    closed: Option<CloseReason>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code holding the lock can panic halfway through a change that
        // matters, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection for everybody; the first reason given wins.
    fn close(&self, reason: CloseReason) {
        let orphans = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            debug!(%reason, "connection closed");
            state.closed = Some(reason);
            std::mem::take(&mut state.routes)
        };
        // Dropping the routes wakes each waiting caller with an error, after
        // the reason is in place for it to read.
        drop(orphans);
        self.closed.send_replace(true);
    }

    fn reason(&self) -> CloseReason {
        self.lock()
            .closed
            .clone()
            .unwrap_or(CloseReason::ClientClosed)
    }
}

/// The task that writes requests and heartbeats.
struct Writer {
    socket: OwnedWriteHalf,
    queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    framing: Framing,
    codec: Arc<dyn Codec>,
    heartbeat: Duration,
}

impl Writer {
    async fn run(mut self) {
        let mut closed = self.shared.closed.subscribe();
        let mut out = BytesMut::new();
        let mut last_write = Instant::now();

        let reason = loop {
            // A heartbeat too far away to be expressed is no heartbeat.
            let next_beat = match self.heartbeat.is_zero() {
                true => None,
                false => last_write.checked_add(self.heartbeat),
            };
            let routes = tokio::select! {
                _ = closed.wait_for(|closed| *closed) => return,
                first = self.queue.recv() => match first {
                    Some(first) => self.encode_batch(first, &mut out),
                    None => break CloseReason::ClientClosed,
                },
                () = sleep_until(next_beat.unwrap_or(last_write)), if next_beat.is_some() => {
                    if self.shared.lock().heartbeats_unanswered > 0 {
                        break CloseReason::HeartbeatTimeout(self.heartbeat);
                    }
                    self.encode(&Request::Ping, &mut out);
                    vec![Route::Heartbeat]
                }
            };

            if !self.record(routes) {
                return;
            }
            if let Err(error) = self.socket.write_all(&out).await {
                break error.into();
            }
            out.clear();
            last_write = Instant::now();
        };

        if matches!(reason, CloseReason::ClientClosed) {
            // Let the server see a clean end of stream after the last request.
            if let Err(error) = self.socket.shutdown().await {
                debug!(%error, "shutting down the connection failed");
            }
        }
        self.shared.close(reason);
    }

    /// Encodes the first request and whatever else is already queued, up to
    /// a batch, and returns their routes in order.
    fn encode_batch(&mut self, first: Outgoing, out: &mut BytesMut) -> Vec<Route> {
        let mut routes = Vec::new();
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            self.encode(&outgoing.request, out);
            routes.push(outgoing.route);
            if routes.len() < BATCH {
                next = self.queue.try_recv().ok();
            }
        }
        routes
    }

    fn encode(&self, request: &Request, out: &mut BytesMut) {
        let mut payload = Vec::new();
        self.codec.encode_request(request, &mut payload);
        encode_frame(self.framing, &payload, out);
    }

    /// Queues the routes of requests about to be written, before they are
    /// written so that no reply can overtake its route. `false` if the
    /// connection has ended meanwhile; the routes are then dropped, which
    /// fails their callers.
    fn record(&self, routes: Vec<Route>) -> bool {
        let mut state = self.shared.lock();
        if state.closed.is_some() {
            return false;
        }
        for route in routes {
            if matches!(route, Route::Heartbeat) {
                state.heartbeats_unanswered += 1;
            }
            state.routes.push_back(route);
        }
        true
    }
}

/// The task that reads server messages and hands them out.
struct Reader {
    socket: OwnedReadHalf,
    events: mpsc::UnboundedSender<ServerMsg>,
    shared: Arc<Shared>,
    decoder: FrameDecoder,
    codec: Arc<dyn Codec>,
}

impl Reader {
    async fn run(mut self) {
        let mut closed = self.shared.closed.subscribe();
        let mut buf = BytesMut::with_capacity(8 * 1024);

        let reason = loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            tokio::select! {
                _ = closed.wait_for(|closed| *closed) => return,
                read = self.socket.read_buf(&mut buf) => match read {
                    Ok(0) => break CloseReason::ServerClosed,
                    Ok(_) => {}
                    Err(error) => break error.into(),
                },
            }
            if let Err(reason) = self.dispatch(&mut buf) {
                break reason;
            }
        };
        self.shared.close(reason);
    }

    /// Hands out every complete message in `buf`.
    fn dispatch(&mut self, buf: &mut BytesMut) -> Result<(), CloseReason> {
        while let Some(frame) = self.decoder.decode(buf) {
            match frame {
                Ok(payload) => {
                    let (msg, is_reply) = read_message(&*self.codec, &payload);
                    self.hand_out(msg, is_reply);
                }
                Err(error) if error.is_fatal() => return Err(CloseReason::Protocol(error)),
                // Only a broken server writes these; the decoder resumes at
                // the next object, and there is nobody to tell but the log.
                Err(error) => warn!(%error, "skipping unreadable bytes from the server"),
            }
        }
        Ok(())
    }

    fn hand_out(&self, msg: ServerMsg, is_reply: bool) {
        let route = if is_reply {
            let mut state = self.shared.lock();
            let route = state.routes.pop_front();
            if matches!(route, Some(Route::Heartbeat)) {
                state.heartbeats_unanswered = state.heartbeats_unanswered.saturating_sub(1);
            }
            route
        } else {
            None
        };

        let msg = match route {
            Some(Route::Caller(caller)) => match caller.send(msg) {
                Ok(()) => return,
                // The caller gave up waiting; the reply still counts.
                Err(msg) => msg,
            },
            Some(Route::Heartbeat) => {
                if !matches!(msg, ServerMsg::Pong) {
                    debug!(?msg, "heartbeat answered with something other than PONG");
                }
                return;
            }
            Some(Route::Events) => msg,
            None => {
                if is_reply {
                    debug!(?msg, "reply to no request");
                }
                msg
            }
        };
        // The handle may be gone; then nobody wants the message.
        let _ = self.events.send(msg);
    }
}

/// Decodes a server message and tells whether it is a reply.
fn read_message(codec: &dyn Codec, payload: &[u8]) -> (ServerMsg, bool) {
    match codec.decode_reply(payload) {
        Ok(msg) => {
            let is_reply = !is_delivery(&msg);
            (msg, is_reply)
        }
        Err(error) => unreadable(payload, error),
    }
}

/// Stands in for a message the codec cannot read.
///
/// Replies are paired by position, so an unreadable reply must still take
/// its place, or every later reply would go to the wrong caller. It becomes
/// an error reply that keeps the server's `errmsg` where there is one (a
/// newer server's error code is the usual cause). Whether it was a delivery
/// can only be told from JSON; any other payload counts as a reply, the
/// likelier case.
fn unreadable(payload: &[u8], error: DecodeError) -> (ServerMsg, bool) {
    debug!(%error, "unreadable server message");
    let json: Option<Value> = serde_json::from_slice(payload).ok();
    let field = |name: &str| json.as_ref().and_then(|v| v.get(name));
    let is_reply = !field("msgid")
        .and_then(Value::as_i64)
        .is_some_and(is_delivery_id);
    let code = field("errno")
        .and_then(Value::as_i64)
        .and_then(ErrorCode::from_code)
        .unwrap_or(ErrorCode::BadRequest);
    let message = match field("errmsg").and_then(Value::as_str) {
        Some(errmsg) if !errmsg.is_empty() => errmsg.to_owned(),
        _ => format!("unreadable message from the server: {error}"),
    };
    let msg = ServerMsg::Error {
        request: None,
        failure: Failure::new(code, message),
    };
    (msg, is_reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::JsonCodec;

    #[test]
    fn unknown_errno_keeps_the_servers_words() {
        let (msg, is_reply) = read_message(
            &JsonCodec,
            br#"{"msgid":14,"errno":999,"errmsg":"slow down"}"#,
        );
        assert!(is_reply);
        match msg {
            ServerMsg::Error { failure, .. } => assert_eq!(failure.message, "slow down"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn unreadable_delivery_is_not_taken_for_a_reply() {
        let (msg, is_reply) = read_message(&JsonCodec, br#"{"msgid":6,"id":"x"}"#);
        assert!(!is_reply);
        assert!(matches!(msg, ServerMsg::Error { .. }));
        let (_, is_reply) = read_message(&JsonCodec, b"\x08\x01");
        assert!(is_reply);
    }

    #[test]
    fn deliveries_are_told_from_replies() {
        let (msg, is_reply) = read_message(
            &JsonCodec,
            br#"{"msgid":19,"friend":{"id":2,"name":"b","state":"online"}}"#,
        );
        assert!(!is_reply && is_delivery(&msg));
        let (msg, is_reply) = read_message(&JsonCodec, br#"{"msgid":16}"#);
        assert!(is_reply && msg == ServerMsg::Pong);
    }
}
