//! The chat rules, as a library that any server can embed.
//!
//! [`ChatService`] holds the sessions of one server and applies every rule
//! of the chat: registration, login and presence, friends, groups,
//! one-to-one and group messages, offline delivery. **It never sees bytes
//! or sockets.** A transport owns the connections, decodes each client's
//! frames into [`Request`](chat_proto::Request)s and hands them, in order,
//! to that client's [`Connection`]; everything the client should see comes
//! back as [`ServerMsg`](chat_proto::ServerMsg)s through the [`Outbound`]
//! the transport gave it. Keeping I/O out is what lets one set of rules run
//! under any transport, codec, database and broker, and be tested without
//! any of them.
//!
//! The rest of the world is reached through three traits, so an embedding
//! server brings its own or picks one of the workspace's:
//!
//! - [`Store`] keeps users, friendships, groups and offline messages.
//!   [`MemoryStore`] keeps them in memory, and nothing across restarts;
//!   `chat-store-sqlite` and `chat-store-mysql` keep them on disk.
//! - [`Bus`] holds presence across a cluster and carries [`Notice`]s to
//!   the servers that hold their recipients; other servers' notices come in
//!   through the service's [`Inbound`]. `chat-bus-local` serves a single
//!   server, `chat-bus-redis` a cluster.
//! - [`Outbound`] queues messages for one client connection;
//!   `chat-net-tokio` and `chat-net-mio` implement it over their sockets.
//!
//! [`ServiceConfig`] holds the service's limits and its [`PasswordCost`];
//! the fixed limits on names, descriptions and passwords are
//! [`MAX_NAME_CHARS`], [`MAX_DESC_CHARS`] and [`MAX_PASSWORD_BYTES`].
//! Errors a store or bus reports are [`StoreError`] and [`BusError`]; the
//! service turns them into replies the client understands and never into
//! panics.
//!
//! # Embedding
//!
//! A server of one node, with the store in memory, a bus written on the
//! spot, and connections that keep what they are sent where a real
//! transport would encode and write it. Implementing the traits takes the
//! `async-trait` crate; the messages are `chat-proto`'s.
//!
//! ```
//! use std::collections::HashSet;
//! use std::sync::{Arc, Mutex};
//!
//! use async_trait::async_trait;
//! use chat_proto::{Delivery, Request, ServerMsg, UserId};
//! use chat_service::{
//!     Bus, BusError, ChatService, Connection, Inbound, MemoryStore, Notice, Outbound,
//!     PasswordCost, ServiceConfig,
//! };
//!
//! /// Presence for a server alone: there is no other server to publish to.
//! #[derive(Default)]
//! struct SingleNode {
//!     online: Mutex<HashSet<UserId>>,
//! }
//!
//! #[async_trait]
//! impl Bus for SingleNode {
//!     async fn start(&self, _inbound: Arc<dyn Inbound>) -> Result<(), BusError> {
//!         Ok(())
//!     }
//!
//!     async fn claim(&self, user: UserId) -> Result<bool, BusError> {
//!         Ok(self.online.lock().expect("never poisoned").insert(user))
//!     }
//!
//!     async fn release(&self, user: UserId) -> Result<(), BusError> {
//!         self.online.lock().expect("never poisoned").remove(&user);
//!         Ok(())
//!     }
//!
//!     async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError> {
//!         let online = self.online.lock().expect("never poisoned");
//!         Ok(users.iter().map(|user| online.contains(user)).collect())
//!     }
//!
//!     async fn publish(&self, users: &[UserId], _notice: &Notice) -> Result<Vec<UserId>, BusError> {
//!         // Nobody elsewhere takes it, so the service keeps chat messages
//!         // for these users offline.
//!         Ok(users.to_vec())
//!     }
//!
//!     async fn shutdown(&self) {
//!         self.online.lock().expect("never poisoned").clear();
//!     }
//! }
//!
//! /// A client connection that keeps what the service sends it.
//! #[derive(Default)]
//! struct Collected(Mutex<Vec<ServerMsg>>);
//!
//! impl Collected {
//!     fn take(&self) -> Vec<ServerMsg> {
//!         std::mem::take(&mut *self.0.lock().expect("never poisoned"))
//!     }
//! }
//!
//! impl Outbound for Collected {
//!     fn send(&self, msg: ServerMsg) -> bool {
//!         self.0.lock().expect("never poisoned").push(msg);
//!         true
//!     }
//!
//!     fn room(&self) -> usize {
//!         usize::MAX
//!     }
//! }
//!
//! /// Registers `name` and logs in on `connection`; the new user's id.
//! async fn sign_up(connection: &mut Connection, sent: &Collected, name: &str) -> UserId {
//!     let password = format!("{name}'s password");
//!     connection
//!         .handle(Request::Register { name: name.into(), password: password.clone() })
//!         .await;
//!     let [ServerMsg::RegAck(Ok(id))] = sent.take()[..] else {
//!         panic!("{name} is not registered");
//!     };
//!     connection
//!         .handle(Request::Login { id, password, version: 2 })
//!         .await;
//!     assert!(matches!(sent.take()[..], [ServerMsg::LoginAck(Ok(_))]));
//!     id
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let config = ServiceConfig {
//!         password_cost: PasswordCost::Fast,
//!         ..ServiceConfig::default()
//!     };
//!     let service = ChatService::new(
//!         Arc::new(MemoryStore::new()),
//!         Arc::new(SingleNode::default()),
//!         config,
//!     );
//!     service.start().await.expect("a single node has nothing to connect to");
//!
//!     let (alice_sent, bob_sent) = (Arc::new(Collected::default()), Arc::new(Collected::default()));
//!     let mut alice = service.connect(alice_sent.clone());
//!     let mut bob = service.connect(bob_sent.clone());
//!     let alice_id = sign_up(&mut alice, &alice_sent, "alice").await;
//!     let bob_id = sign_up(&mut bob, &bob_sent, "bob").await;
//!
//!     alice
//!         .handle(Request::OneChat { to: bob_id, text: "hello, bob".into() })
//!         .await;
//!     assert!(matches!(alice_sent.take()[..], [ServerMsg::ChatAck { .. }]));
//!     let [ServerMsg::Deliver(delivery)] = &bob_sent.take()[..] else {
//!         panic!("bob got no message");
//!     };
//!     let Delivery::One(message) = delivery.as_ref() else {
//!         panic!("bob got a group message");
//!     };
//!     assert_eq!((message.from, message.text.as_str()), (alice_id, "hello, bob"));
//!
//!     alice.close().await;
//!     bob.close().await;
//!     service.shutdown().await;
//! }
//! ```
//!
//! # Features
//!
//! - `store-suite` compiles the module `store_suite`: a conformance suite
//!   that a [`Store`] implementation runs in its tests to show it keeps the
//!   contract the service relies on.

#![warn(missing_docs)]

mod bus;
mod memory;
mod outbound;
mod password;
mod service;
mod store;
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
