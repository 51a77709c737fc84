//! A client of the chat cluster, for programs.
//!
//! The terminal chat, the load generator and the integration tests all need
//! the same few things from a connection: send requests, pair each with its
//! reply, see deliveries that arrive in between, and keep an idle connection
//! alive through a load balancer. This crate does exactly that on tokio and
//! nothing interactive, so each of those programs stays a thin layer on top.
//!
//! - [`ClientConfig`]: where the server is and how to speak to it (framing,
//!   codec, heartbeat);
//! - [`Client`]: one connection, with [`Client::request`] for a request and
//!   its reply, [`Client::send`] to fire and forget, and [`Client::recv`] /
//!   [`Client::events`] for whatever arrives that nobody waits for;
//! - [`ClientError`] and [`CloseReason`]: what went wrong and why a
//!   connection ended.
//!
//! A connection is not re-established by this crate: when it ends,
//! [`Client::recv`] returns `None` and the caller decides whether and when
//! to connect again (the terminal client does, with backoff).
//!
//! ```no_run
//! use chat_client::{Client, ClientConfig};
//! use chat_proto::{Request, ServerMsg};
//!
//! # async fn demo() -> Result<(), chat_client::ClientError> {
//! let client = Client::connect(ClientConfig::new("127.0.0.1:6000")).await?;
//! let reply = client
//!     .request(Request::Register { name: "alice".into(), password: "pw".into() })
//!     .await?;
//! if let ServerMsg::RegAck(Ok(id)) = reply {
//!     println!("registered as {id}");
//! }
//! while let Some(msg) = client.recv().await {
//!     println!("{msg:?}");
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod connection;
mod error;

pub use config::{ClientConfig, DEFAULT_ADDR, DEFAULT_HEARTBEAT};
pub use connection::{is_delivery, Client};
pub use error::{ClientError, CloseReason};

/// The protocol crate, so callers name the same types without a second
/// dependency line.
pub use chat_proto as proto;
