//! The outbound side of a connection, as the service sees it.

use chat_proto::ServerMsg;

/// Queues messages for one client connection.
///
/// A transport implements it over its bounded per-connection queue. It
/// never blocks: a client that does not read fast enough is disconnected
/// rather than allowed to grow the server's memory.
pub trait Outbound: Send + Sync + 'static {
    /// Queues `msg` for the client. `false` if the connection is closed or
    /// its queue is full; in the latter case the transport closes it.
    fn send(&self, msg: ServerMsg) -> bool;

    /// How many more messages may be queued now without crowding out the
    /// replies and live messages to come. The service hands over a long
    /// backlog of stored messages in steps of this size, so a user back
    /// from a long absence is not disconnected for it.
    fn room(&self) -> usize;
}
