//! The chat rules, independent of sockets, codecs, databases and brokers.
//!
//! [`ChatService`] holds sessions and applies every rule of the chat:
//! registration, login and presence, friends, groups, one-to-one and group
//! messages, offline delivery. It talks to the world only through traits:
//!
//! - [`Store`] keeps users, friendships, groups and offline messages;
//! - [`Bus`] holds presence across the cluster and carries [`Notice`]s to
//!   the servers that hold their recipients;
//! - [`Outbound`] queues messages for one client connection.
//!
//! A transport decodes a client's frames into [`Request`](chat_proto::Request)s
//! and calls [`Connection::handle`]; everything the client should see comes
//! back through its [`Outbound`].

pub mod bus;
mod memory;
pub mod outbound;
mod password;
mod service;
pub mod store;
// The crate's own tests run the suite against `MemoryStore`, with or
// without the feature.
#[cfg(any(test, feature = "store-suite"))]
pub mod store_suite;

pub use bus::{Bus, BusError, Inbound, Notice};
pub use memory::MemoryStore;
pub use outbound::Outbound;
pub use password::PasswordCost;
pub use service::{
    ChatService, Connection, ServiceConfig, MAX_DESC_CHARS, MAX_NAME_CHARS, MAX_PASSWORD_BYTES,
};
pub use store::{
    GroupRecord, GroupWithMembers, MemberRecord, OfflineRecord, Store, StoreError, UserRecord,
};
