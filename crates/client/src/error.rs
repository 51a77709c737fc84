//! What can go wrong for a client, in one type.
//!
//! A failed request is not an error here: the server's error replies are
//! messages ([`ServerMsg::Error`](chat_proto::ServerMsg::Error) and the
//! failures inside acknowledgements), and callers handle them as answers.
//! [`ClientError`] is for the connection itself.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::FrameError;
use thiserror::Error;

/// A connection could not be made or can no longer be used.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The address could not be resolved, or nothing accepted the connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The server did not accept the connection in time.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    /// The connection has ended; nothing more can be sent on it, and a
    /// request in flight gets no reply.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
}

/// Why a connection ended.
#[derive(Debug, Clone, Error)]
pub enum CloseReason {
    /// The server closed its end: it stopped, crashed, or a load balancer
    /// in between lost its upstream.
    #[error("the server closed the connection")]
    ServerClosed,
    /// Reading or writing the socket failed.
    #[error("network error: {0}")]
    Io(Arc<io::Error>),
    /// The server sent bytes that cannot be cut into frames any more (a
    /// frame over [`ClientConfig::max_frame`](crate::ClientConfig::max_frame)).
    #[error("unreadable data from the server: {0}")]
    Protocol(FrameError),
    /// A heartbeat went unanswered for a whole period: the server or the
    /// path to it is gone without having closed the connection.
    #[error("the server did not answer a heartbeat within {0:?}")]
    HeartbeatTimeout(Duration),
    /// This side closed the connection: the [`Client`](crate::Client) was
    /// closed or dropped.
    #[error("the client closed the connection")]
    ClientClosed,
}

impl From<io::Error> for CloseReason {
    fn from(error: io::Error) -> CloseReason {
        CloseReason::Io(Arc::new(error))
    }
}
