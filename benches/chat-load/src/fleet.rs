//! Setting up the load: users registered, connections opened and logged in.
//!
//! Every scenario needs many logged-in users before it measures anything.
//! Setup is not what is measured, but on a 2-core machine it must still be
//! quick: registrations are pipelined on a few connections, and logins run
//! many at a time, bounded so that the server's listen backlog never
//! overflows (a dropped SYN costs a one-second retransmit and would make
//! setup look like a server stall).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chat_client::{Client, ClientConfig};
use chat_proto::{Framing, GroupId, ProtobufCodec, Request, ServerMsg, UserId};
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt};

/// Password of every user the load generator registers.
pub const PASSWORD: &str = "load";

/// Requests in flight per connection while setting up.
const PIPELINE: usize = 32;

/// Connections opened (and logged in) at the same time while setting up.
const OPEN_AT_ONCE: usize = 64;

/// How long any one setup step may take before the run gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The payload codec the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodecChoice {
    Json,
    Protobuf,
}

/// The framing the load speaks; protobuf always goes length-prefixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FramingChoice {
    Stream,
    Length,
}

/// How to reach the servers and speak to them.
#[derive(Debug, Clone)]
pub struct Wire {
    /// Server (or load balancer) addresses; connection `i` goes to
    /// `addrs[i % len]` unless a scenario places it otherwise.
    pub addrs: Vec<String>,
    pub codec: CodecChoice,
    pub framing: FramingChoice,
}

impl Wire {
    /// A client configuration for `addr` with this wire's codec and
    /// framing, and heartbeats at the library's default period.
    pub fn config(&self, addr: &str) -> ClientConfig {
        let base = ClientConfig::new(addr);
        match (self.codec, self.framing) {
            (CodecChoice::Json, FramingChoice::Stream) => base,
            (CodecChoice::Json, FramingChoice::Length) => ClientConfig {
                framing: Framing::Length,
                ..base
            },
            // The protobuf codec has no stream framing.
            (CodecChoice::Protobuf, _) => ClientConfig {
                framing: Framing::Length,
                codec: Arc::new(ProtobufCodec),
                ..base
            },
        }
    }

    /// The codec and framing as a short label, e.g. `json/stream`.
    pub fn label(&self) -> String {
        let codec = match self.codec {
            CodecChoice::Json => "json",
            CodecChoice::Protobuf => "protobuf",
        };
        let framing = match (self.codec, self.framing) {
            (CodecChoice::Protobuf, _) | (_, FramingChoice::Length) => "length",
            _ => "stream",
        };
        format!("{codec}/{framing}")
    }

    /// Connects to `addrs[server % len]`.
    pub async fn connect(&self, server: usize) -> Result<Client> {
        let addr = &self.addrs[server % self.addrs.len()];
        Client::connect(self.config(addr))
            .await
            .with_context(|| format!("cannot connect to {addr}"))
    }
}

/// A logged-in connection of the load.
#[derive(Debug, Clone)]
pub struct Peer {
    pub client: Arc<Client>,
    pub user: UserId,
}

/// A tag unique to this run, so that names never collide with those of an
/// earlier run against the same database.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}",
        (nanos as u64 ^ u64::from(std::process::id())) & 0xff_ffff_ffff
    )
}

/// Registers `count` users named `{prefix}{i}` through server `0` and
/// returns their ids in order.
pub async fn register(wire: &Wire, prefix: &str, count: usize) -> Result<Vec<UserId>> {
    let connections = count.div_ceil(256).clamp(1, 8);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(wire.connect(0).await?);
    }
    let clients = &clients;
    let work = futures::stream::iter(0..count)
        .map(|i| async move {
            let name = format!("{prefix}{i}");
            let client = &clients[i % clients.len()];
            let request = Request::Register {
                name: name.clone(),
                password: PASSWORD.into(),
            };
            match client.request(request).await? {
                ServerMsg::RegAck(Ok(id)) => Ok(id),
                ServerMsg::RegAck(Err(failure)) => bail!("cannot register {name}: {failure}"),
                other => bail!("unexpected answer to REG: {other:?}"),
            }
        })
        .buffered(PIPELINE * connections)
        .try_collect();
    tokio::time::timeout(SETUP_TIMEOUT * 5, work)
        .await
        .context("registering users took too long")?
}

/// Opens one connection per user, each to `server_of(i)`, logs it in, and
/// returns them in the order of `users`.
pub async fn login_all(
    wire: &Wire,
    users: &[UserId],
    server_of: impl Fn(usize) -> usize,
) -> Result<Vec<Peer>> {
    let work = futures::stream::iter(users.iter().enumerate())
        .map(|(i, &user)| {
            let server = server_of(i);
            async move {
                let client = wire.connect(server).await?;
                login(&client, user).await?;
                Ok::<Peer, anyhow::Error>(Peer {
                    client: Arc::new(client),
                    user,
                })
            }
        })
        .buffered(OPEN_AT_ONCE)
        .try_collect();
    tokio::time::timeout(SETUP_TIMEOUT * 5, work)
        .await
        .context("logging users in took too long")?
}

/// Logs `client` in as `user`; the LOGIN_ACK's offline messages are
/// returned with the number that follow it.
pub async fn login(client: &Client, user: UserId) -> Result<chat_proto::LoginOk> {
    let request = Request::Login {
        id: user,
        password: PASSWORD.into(),
        version: 2,
    };
    let reply = tokio::time::timeout(SETUP_TIMEOUT, client.request(request))
        .await
        .with_context(|| format!("no LOGIN_ACK for user {user}"))??;
    match reply {
        ServerMsg::LoginAck(Ok(ok)) => Ok(*ok),
        ServerMsg::LoginAck(Err(failure)) => bail!("user {user} cannot log in: {failure}"),
        other => bail!("unexpected answer to LOGIN: {other:?}"),
    }
}

/// Creates a group as `creator` and has every other peer join it; returns
/// the group's id.
pub async fn group(name: &str, creator: &Peer, members: &[Peer]) -> Result<GroupId> {
    let request = Request::CreateGroup {
        name: name.into(),
        desc: "load".into(),
    };
    let id = match creator.client.request(request).await? {
        ServerMsg::CreateGroupAck { id, .. } => id,
        other => bail!("cannot create group {name}: {other:?}"),
    };
    let joins = futures::stream::iter(members.iter().filter(|p| p.user != creator.user))
        .map(|peer| async move {
            match peer.client.request(Request::AddGroup { group: id }).await? {
                ServerMsg::AddGroupAck(_) => Ok(()),
                other => bail!("user {} cannot join group {id}: {other:?}", peer.user),
            }
        })
        .buffer_unordered(OPEN_AT_ONCE)
        .try_collect::<Vec<()>>();
    tokio::time::timeout(SETUP_TIMEOUT, joins)
        .await
        .context("joining the group took too long")??;
    Ok(id)
}
