//! The outbound side of a connection, as the service sees it.
//!
//! The service hands a client typed messages and never bytes: encoding,
//! framing and writing belong to the transport, so that one set of chat
//! rules serves every transport and codec.

use chat_proto::ServerMsg;

/// Queues messages for one client connection.
///
/// A transport implements it over its bounded per-connection queue and
/// gives it to [`ChatService::connect`](crate::ChatService::connect). The
/// service calls it from any task, sometimes while holding its own locks,
/// so neither method may block or wait: a client that does not read fast
/// enough is disconnected rather than allowed to grow the server's memory.
/// Messages must reach the client in the order they were queued.
pub trait Outbound: Send + Sync + 'static {
    /// Queues `msg` for the client. `false` if the connection is closed or
    /// its queue is full; in the latter case the transport closes it,
    /// because the client has missed a message.
    fn send(&self, msg: ServerMsg) -> bool;

    /// How many more messages may be queued now without crowding out the
    /// replies and live messages to come. The service hands over a long
    /// backlog of stored messages in steps of this size, so a user back
    /// from a long absence is not disconnected for it. Zero is a fine
    /// answer: the service tries again a moment later.
    fn room(&self) -> usize;
}
