//! How a client reaches a server and speaks to it.
//!
//! Kept apart from the connection so that programs can build, print and
//! reuse a configuration for every reconnect without touching sockets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::{Codec, Framing, JsonCodec};

/// Where a server listens unless told otherwise: a single local node.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6000";

/// How long a connection may stay silent before the client sends a PING.
///
/// Well below the idle timeouts load balancers commonly use (nginx's stream
/// `proxy_timeout` defaults to ten minutes), so an idle user is never cut.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Everything [`Client::connect`](crate::Client::connect) needs.
///
/// Fields are public so that a caller changes just what it needs:
///
/// ```
/// use chat_client::ClientConfig;
/// use chat_client::proto::Framing;
///
/// let config = ClientConfig {
///     framing: Framing::Length,
///     ..ClientConfig::new("127.0.0.1:8000")
/// };
/// assert_eq!(config.addr, "127.0.0.1:8000");
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// The server or load balancer as `host:port`. It is resolved at every
    /// connect, so a name whose address changes is followed.
    pub addr: String,
    /// The framing to speak; the server recognises either from the first
    /// byte, so this is the client's choice alone.
    pub framing: Framing,
    /// How the payload of each frame is encoded and decoded.
    pub codec: Arc<dyn Codec>,
    /// Idle time after which a PING is sent; a heartbeat that is still
    /// unanswered one more period later ends the connection as dead.
    /// [`Duration::ZERO`] turns heartbeats off.
    pub heartbeat: Duration,
    /// How long to wait for the TCP connection to be accepted.
    pub connect_timeout: Duration,
    /// The largest server message accepted, in bytes. Larger than the
    /// server's request limit because a LOGIN_ACK carries every offline
    /// message.
    pub max_frame: usize,
}

impl ClientConfig {
    /// A configuration for `addr` with the defaults: JSON in the stream
    /// framing, a heartbeat every [`DEFAULT_HEARTBEAT`].
    pub fn new(addr: impl Into<String>) -> ClientConfig {
        ClientConfig {
            addr: addr.into(),
            framing: Framing::Stream,
            codec: Arc::new(JsonCodec),
            heartbeat: DEFAULT_HEARTBEAT,
            connect_timeout: Duration::from_secs(10),
            max_frame: 16 * 1024 * 1024,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig::new(DEFAULT_ADDR)
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The codec is a trait object without Debug; its presence says enough.
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("framing", &self.framing)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}
