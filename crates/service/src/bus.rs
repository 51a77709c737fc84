//! The path between servers, as a trait.
//!
//! Servers of a cluster never connect to each other; what they must share
//! (who is online where, and messages for users on another server) goes
//! through a [`Bus`], so that a single node, a Redis cluster or anything
//! else is a choice of implementation and not of chat rules.

use std::sync::Arc;

use async_trait::async_trait;
use chat_proto::{Delivery, UserId};
use serde::{Deserialize, Serialize};

/// What travels between servers for a set of recipients.
///
/// Its serde form is what servers of one cluster exchange, so every server
/// of a cluster must run the same version of it. It is externally tagged
/// (`{"chat":{…}}`, `"wake"`): serde reads that form in one pass, where an
/// internally tagged one is first copied whole into a buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A chat message. If it cannot be handed to a session it is stored
    /// offline, by the sender's server or the receiver's.
    Chat(Arc<Delivery>),
    /// `from` made the recipient their friend. Dropped if nobody is online:
    /// the friendship is in the store and the next login lists it.
    FriendAdded {
        /// Who added the recipient as a friend.
        from: UserId,
        /// Their user name, so the recipient's server need not look it up.
        from_name: String,
    },
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
    /// Wraps any backend error as [`BusError::Backend`], for use with
    /// `map_err`.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> BusError {
        BusError::Backend(Box::new(err))
    }
}

/// Where a bus hands the notices that other servers sent to this one.
///
/// The service implements it and gives it to [`Bus::start`]; a bus only
/// calls it.
#[async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// Takes a notice for `users`, the recipients this server held when it
    /// was published. A bus calls it for one notice at a time, in the order
    /// the notices were published, and waits for each call to return: that
    /// is what keeps one sender's messages in order.
    async fn notice(&self, users: Vec<UserId>, notice: Notice);
}

/// Presence across the cluster and delivery between servers.
///
/// A bus does two jobs for servers that never connect to each other. It
/// holds **presence**: which server each logged-in user is on, so that a
/// second login anywhere is refused. And it carries **notices** (chat
/// messages, friend notifications, wake-ups) to the servers that hold their
/// recipients. A single server's bus only holds presence, in memory, and
/// publishes to nobody.
///
/// A bus never stores anything: a notice that no live server takes is
/// reported back as unreached, and the service keeps chat messages for
/// those users in the [`Store`](crate::Store). Errors are
/// [`BusError::Backend`], never panics; the service treats a failed
/// publish as unreached and a failed claim as a failed login.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Starts handing other servers' notices to `inbound`. Called once,
    /// before the server accepts connections.
    async fn start(&self, inbound: Arc<dyn Inbound>) -> Result<(), BusError>;

    /// Claims `user`'s presence for this server, atomically across the
    /// cluster: of two servers claiming the same user at once, exactly one
    /// gets `true`. `false` if the user is already online anywhere,
    /// this server included.
    async fn claim(&self, user: UserId) -> Result<bool, BusError>;

    /// Releases this server's claim on `user`, and never another server's:
    /// a late release must not log out a newer login elsewhere.
    async fn release(&self, user: UserId) -> Result<(), BusError>;

    /// Whether each user is online anywhere, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError>;

    /// Sends `notice` to the other servers that hold `users`, at most one
    /// message per server. Returns exactly the users that no live server
    /// took, in any order: the service stores chat messages for them, so a
    /// user returned here must not also get the notice, and one left out
    /// must.
    async fn publish(&self, users: &[UserId], notice: &Notice) -> Result<Vec<UserId>, BusError>;

    /// Releases every claim of this server and stops handing notices to
    /// the [`Inbound`]. Called once, at shutdown.
    async fn shutdown(&self);

    /// Named counters for logs and metrics (messages published, received,
    /// lost). None by default.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
