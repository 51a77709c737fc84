//! The path between servers, as a trait.
//!
//! A bus does two jobs for a cluster of servers that never connect to each
//! other: it holds **presence** (which server a logged-in user is on, so a
//! second login anywhere is refused), and it carries **notices** (chat
//! messages and friend notifications) to the servers that hold their
//! recipients. On a single node the in-process bus does both in memory.
//!
//! A bus never stores anything: a notice that no live server takes is
//! reported back to the service, which keeps chat messages offline.

use std::sync::Arc;

use async_trait::async_trait;
use chat_proto::{Delivery, UserId};
use serde::{Deserialize, Serialize};

/// What travels between servers for a set of recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A chat message. If it cannot be handed to a session it is stored
    /// offline, by the sender's server or the receiver's.
    Chat(Arc<Delivery>),
    /// `from` made the recipient their friend. Dropped if nobody is online.
    FriendAdded { from: UserId, from_name: String },
    /// Messages were stored offline for the recipient while they were
    /// logging in: the server that holds them delivers what is stored.
    Wake,
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The backend (Redis) could not be reached or answered an error.
    #[error("message bus failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BusError {
    /// Wraps any backend error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> BusError {
        BusError::Backend(Box::new(err))
    }
}

/// Where a bus hands the notices that other servers sent to this one.
#[async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Hands a notice for users this server held when it was sent.
    async fn notice(&self, users: Vec<UserId>, notice: Notice);
}

/// Presence and server-to-server delivery.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Starts delivering other servers' notices to `inbound`.
    async fn start(&self, inbound: Arc<dyn Inbound>) -> Result<(), BusError>;

    /// Claims `user`'s presence for this server, atomically across the
    /// cluster. `false` if the user is already online anywhere.
    async fn claim(&self, user: UserId) -> Result<bool, BusError>;

    /// Releases this server's claim on `user`; nobody else's.
    async fn release(&self, user: UserId) -> Result<(), BusError>;

    /// Whether each user is online anywhere, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError>;

    /// Sends `notice` to the other servers that hold `users`, at most one
    /// message per server. Returns the users that no live server took.
    async fn publish(&self, users: &[UserId], notice: &Notice) -> Result<Vec<UserId>, BusError>;

    /// Releases every claim of this server and stops.
    async fn shutdown(&self);
}
