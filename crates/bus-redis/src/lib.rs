//! The message bus of a cluster of chat servers, over Redis.
//!
//! Servers never connect to each other. Each one connects to the same Redis
//! with a [`RedisBus`], which does the two jobs of a [`Bus`]: it holds
//! **presence** (which server a logged-in user is on) and carries
//! **notices** to the servers that hold their recipients.
//!
//! ```no_run
//! use chat_bus_redis::{RedisBus, RedisBusConfig};
//! use chat_service::Bus;
//!
//! # async fn run() -> Result<(), chat_service::BusError> {
//! let bus = RedisBus::connect(RedisBusConfig::new("redis://127.0.0.1:6379", "server-a")).await?;
//! assert!(bus.claim(42).await?);
//! bus.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Presence
//!
//! A user's presence is the key `{prefix}presence:{user}`, holding the id of
//! the server the user is logged in on, with a TTL (30 s by default) that
//! the server renews every third of it. A claim is one `SET … NX`, so of two
//! logins racing on two servers Redis lets exactly one win; a release
//! deletes the key only if it names this server. A server that stops
//! cleanly releases its users at once; one that is killed leaves them
//! online for at most the TTL. The `presence` module says more.
//!
//! # One channel per server
//!
//! Each server subscribes to one channel, `{prefix}server:{server_id}`, and
//! to nothing else. To publish, a server reads the presence of all the
//! recipients with one `MGET`, groups them by the server that holds them,
//! and sends one PUBLISH per server, `[{"users":[…],"notice":…}]`, all of
//! them pipelined on one multiplexed connection. The receiving server hands
//! the notice to its sessions. Notices published while the previous ones
//! are on their way wait, and then go out together: one `MGET` for all
//! their recipients and one PUBLISH per server carrying all of them (the
//! `publish` module says more). The other design, a channel per user (and per
//! group), was rejected for what it costs:
//!
//! - a message to N recipients on M servers is at most M PUBLISHes, never N:
//!   a group of a thousand members spread over three servers costs three;
//! - subscriptions do not churn: a login or logout changes one key, not the
//!   subscriptions of a connection that carries every other user's traffic,
//!   and a server subscribes once, at start-up, and again only after a
//!   reconnect;
//! - Redis keeps M channels with one subscriber each, not one per user.
//!
//! The price is the `MGET` before each batch, one round trip that also
//! tells the sender which recipients are offline without asking anyone.
//!
//! # No notice vanishes silently
//!
//! [`Bus::publish`] returns the users that no live server took, and the
//! service stores chat messages for them offline:
//!
//! - users with no presence key;
//! - users whose key names a server that is gone: PUBLISH answers how many
//!   subscribers received the message, and zero means nobody will deliver
//!   it (a killed server's keys outlive it by up to the TTL);
//! - users of a server whose PUBLISH failed. If Redis ran it before the
//!   failure was seen, the user gets the message twice (live and from the
//!   offline store) rather than never.
//!
//! # Receiving
//!
//! Notices from this server's channel reach [`Inbound::notice`] strictly one
//! at a time, in the order Redis delivered them, which keeps one sender's
//! messages to one user in order. They wait for the service in a bounded
//! queue ([`RedisBusConfig::inbound_queue`], 65,536 by default, allocated
//! only as it fills); a payload that is not a notice is logged and skipped.
//! After a reconnect the subscriber subscribes again by itself, then wakes
//! every user it holds, since other servers stored messages offline while
//! they found no subscriber. The `receive` module says more.
//!
//! # While Redis is down
//!
//! Every command gives up after [`RedisBusConfig::command_timeout`] (3 s by
//! default): claims fail, so the service refuses logins as unavailable;
//! publishes fail, so it stores messages for other servers offline. The
//! clients reconnect by themselves (backing off up to 2 s between attempts)
//! and the bus carries on when Redis is back, with no restart: presence is
//! renewed at once, and written again if Redis lost it.
//!
//! # Known limits
//!
//! - When the service falls behind by more than the inbound queue, the
//!   notices that do not fit are **lost**: counted in
//!   [`BusStats::notices_lost`] and logged as errors. Redis pub/sub cannot
//!   ask a sender to slow down, so the queue is sized generously instead.
//! - Messages stored offline while this server could not be reached through
//!   Redis are handed over by the wake that follows the reconnect, so they
//!   can arrive after newer messages that went live.
//! - If Redis loses its data while users are online, another server may
//!   accept a second login of one of them before this server writes the
//!   presence again; renewal then logs a warning for each such user.
//! - A claim whose reply is lost to the command timeout may still have been
//!   written: that user then cannot log in for up to one TTL.
//! - A single Redis (or one with replicas behind a single address) only:
//!   the `MGET` and scripts over many keys are not split by Redis Cluster
//!   hash slot.
//! - A subscriber connection that dies without the TCP connection closing
//!   (a network cut, not a Redis restart) is only noticed when the
//!   operating system gives up on it.

mod config;
mod envelope;
mod error;
mod presence;
mod publish;
mod receive;
mod upkeep;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::UserId;
use chat_service::{Bus, BusError, Inbound, Notice};
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::Builder;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use config::{
    RedisBusConfig, DEFAULT_COMMAND_TIMEOUT, DEFAULT_INBOUND_QUEUE, DEFAULT_PREFIX,
    DEFAULT_PRESENCE_TTL,
};
pub use error::RedisBusError;

use envelope::EncodedNotice;
use presence::Presence;
use receive::Inbox;

/// Capacity of each of the subscriber's event channels (messages,
/// reconnects, errors, …), allocated whole at start-up: about 170 bytes a
/// message, under 4 MB in all. The forwarder empties the message channel as
/// fast as Redis fills it, so this only has to absorb the moments it is not
/// scheduled; the real buffer is the inbound queue, which grows as it
/// fills. The command client receives no messages and keeps fred's default.
const EVENT_CAPACITY: usize = 4096;

/// Reconnect backoff: first retry after 100 ms, doubling up to 2 s, for
/// ever. A server without Redis is only half a server, so it keeps trying.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;

/// How long shutdown waits for notices already received to reach the
/// service.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Presence and server-to-server delivery over Redis.
///
/// Create it with [`RedisBus::connect`], hand it to the chat service, which
/// calls [`Bus::start`]; stop it with [`Bus::shutdown`]. Dropping it without
/// a shutdown behaves like a killed server: its connections close and its
/// users stay online until their TTL runs out.
pub struct RedisBus {
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
}

/// Counters of a bus since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// PUBLISH commands sent: at most one per server per [`Bus::publish`],
    /// fewer when notices published together share a PUBLISH.
    pub publishes: u64,
    /// Notices received from Redis and handed to the service.
    pub notices_received: u64,
    /// Notices lost because the inbound queue was full.
    pub notices_lost: u64,
    /// Payloads on this server's channel that were not notices.
    pub malformed: u64,
}

/// What the bus and its tasks share.
pub(crate) struct Shared {
    config: RedisBusConfig,
    /// This server's own channel.
    channel: String,
    /// Multiplexed connection for every command but SUBSCRIBE: a
    /// subscribed connection cannot run them.
    commands: Client,
    subscriber: SubscriberClient,
    presence: Presence,
    counters: Counters,
    /// Asks for a renewal now rather than at the next tick.
    renew_now: Notify,
    /// The dispatcher's queue once started, for wakes the bus itself sends.
    inbox: Mutex<Option<mpsc::Sender<Inbox>>>,
    /// The publisher's queue. Unbounded: every entry is a caller awaiting
    /// its reply, so it holds at most one notice per request in progress.
    outbox: mpsc::UnboundedSender<publish::Job>,
}

#[derive(Default)]
struct Counters {
    publishes: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    malformed: AtomicU64,
}

#[derive(Default)]
struct Tasks {
    /// fred's tasks that drive the two connections.
    connections: Vec<JoinHandle<Result<(), fred::error::Error>>>,
    /// Renewal and the connection watchers.
    upkeep: Vec<JoinHandle<()>>,
    forward: Option<JoinHandle<()>>,
    dispatch: Option<JoinHandle<()>>,
    stopped: bool,
}

impl RedisBus {
    /// Connects to Redis and starts renewing presence. Fails if Redis
    /// cannot be reached within the command timeout.
    ///
    /// Notices are taken only once [`Bus::start`] is called.
    pub async fn connect(config: RedisBusConfig) -> Result<RedisBus, BusError> {
        config.validate().map_err(RedisBusError::Config)?;
        let (commands, subscriber) = clients(&config).map_err(RedisBusError::from)?;
        let commands_task = commands.init().await.map_err(RedisBusError::from)?;
        let subscriber_task = match subscriber.init().await {
            Ok(task) => task,
            Err(e) => {
                commands_task.abort();
                return Err(RedisBusError::from(e).into());
            }
        };

        let (outbox, jobs) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            channel: config.server_channel(&config.server_id),
            presence: Presence::new(config.clone()),
            config,
            commands,
            subscriber,
            counters: Counters::default(),
            renew_now: Notify::new(),
            inbox: Mutex::new(None),
            outbox,
        });
        let upkeep = vec![
            tokio::spawn(publish::run(shared.clone(), jobs)),
            tokio::spawn(upkeep::renew_presence(shared.clone())),
            tokio::spawn(upkeep::watch_commands(shared.clone())),
            tokio::spawn(receive::watch_subscriber(shared.clone())),
        ];
        info!(
            server_id = %shared.config.server_id,
            prefix = %shared.config.prefix,
            "connected to Redis"
        );
        Ok(RedisBus {
            shared,
            tasks: Mutex::new(Tasks {
                connections: vec![commands_task, subscriber_task],
                upkeep,
                ..Tasks::default()
            }),
        })
    }

    /// The counters of this bus so far.
    pub fn stats(&self) -> BusStats {
        let counters = &self.shared.counters;
        BusStats {
            publishes: counters.publishes.load(Ordering::Relaxed),
            notices_received: counters.received.load(Ordering::Relaxed),
            notices_lost: counters.lost.load(Ordering::Relaxed),
            malformed: counters.malformed.load(Ordering::Relaxed),
        }
    }

    /// This server's id in the cluster.
    pub fn server_id(&self) -> &str {
        &self.shared.config.server_id
    }

    /// Redis's id (`CLIENT ID`) for the connection that receives this
    /// server's notices, to find it in `CLIENT LIST` or end it with
    /// `CLIENT KILL ID`. `None` while it is not connected.
    pub fn subscriber_connection_id(&self) -> Option<i64> {
        self.shared
            .subscriber
            .connection_ids()
            .values()
            .next()
            .copied()
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        lock(&self.tasks)
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("server_id", &self.shared.config.server_id)
            .field("channel", &self.shared.channel)
            .finish_non_exhaustive()
    }
}

/// Refuses to start when a running server already listens on this server's
/// channel. Two servers with one id would both receive every notice meant
/// for either, and one of them would store it offline and wake the other:
/// each message would arrive twice. A killed server's subscription ends
/// with its connection, so a restart after a crash is not refused. Two
/// servers starting with the same id in the same instant can both pass;
/// `publish` then warns.
async fn refuse_taken_server_id(shared: &Shared) -> Result<(), RedisBusError> {
    let reply: Vec<fred::types::Value> = shared
        .commands
        .pubsub_numsub(shared.channel.as_str())
        .await?;
    let subscribers = reply.get(1).and_then(fred::types::Value::as_u64);
    match subscribers {
        Some(0) => Ok(()),
        Some(_) => Err(RedisBusError::ServerIdInUse(
            shared.config.server_id.clone(),
        )),
        None => Err(RedisBusError::Reply(format!(
            "PUBSUB NUMSUB answered {reply:?}"
        ))),
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn start(&self, inbound: Arc<dyn Inbound>) -> Result<(), BusError> {
        let shared = &self.shared;
        {
            let mut tasks = self.tasks();
            if tasks.stopped || tasks.forward.is_some() {
                return Err(RedisBusError::NotStartable.into());
            }
            let (queue, inbox) = mpsc::channel(shared.config.inbound_queue);
            // Listening before subscribing, so the first notice is not missed.
            let messages = shared.subscriber.message_rx();
            *lock(&shared.inbox) = Some(queue.clone());
            tasks.forward = Some(tokio::spawn(receive::forward(
                shared.clone(),
                messages,
                queue,
            )));
            tasks.dispatch = Some(tokio::spawn(receive::dispatch(
                shared.clone(),
                inbox,
                inbound,
            )));
        }
        refuse_taken_server_id(shared).await?;
        shared
            .subscriber
            .subscribe(shared.channel.as_str())
            .await
            .map_err(RedisBusError::from)?;
        info!(channel = %shared.channel, "subscribed to this server's channel");
        Ok(())
    }

    async fn claim(&self, user: UserId) -> Result<bool, BusError> {
        let shared = &self.shared;
        let claimed = shared.presence.claim(&shared.commands, user).await?;
        debug!(user, claimed, "presence claim");
        Ok(claimed)
    }

    async fn release(&self, user: UserId) -> Result<(), BusError> {
        let shared = &self.shared;
        shared.presence.release(&shared.commands, user).await?;
        debug!(user, "presence released");
        Ok(())
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError> {
        let shared = &self.shared;
        let holders = shared.presence.holders(&shared.commands, users).await?;
        Ok(holders.iter().map(Option::is_some).collect())
    }

    async fn publish(&self, users: &[UserId], notice: &Notice) -> Result<Vec<UserId>, BusError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let notice = EncodedNotice::new(notice).map_err(RedisBusError::from)?;
        let (reply, answer) = oneshot::channel();
        let job = publish::Job {
            users: users.to_vec(),
            notice,
            reply,
        };
        if self.shared.outbox.send(job).is_err() {
            return Err(RedisBusError::Stopped.into());
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RedisBusError::Stopped.into()),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let stats = self.stats();
        vec![
            ("publishes", stats.publishes),
            ("notices_received", stats.notices_received),
            ("notices_lost", stats.notices_lost),
            ("malformed", stats.malformed),
        ]
    }

    async fn shutdown(&self) {
        let tasks = {
            let mut tasks = self.tasks();
            if tasks.stopped {
                return;
            }
            let taken = std::mem::take(&mut *tasks);
            tasks.stopped = true;
            taken
        };
        let shared = &self.shared;
        for task in &tasks.upkeep {
            task.abort();
        }

        // From here on senders find no subscriber and keep messages offline.
        if let Err(e) = shared.subscriber.unsubscribe_all().await {
            warn!(error = %e, "could not unsubscribe; the connection closes anyway");
        }
        match shared.presence.release_all(&shared.commands).await {
            Ok(released) => info!(users = released, "released this server's presence"),
            Err(e) => warn!(error = %e, "could not release presence; it expires by itself"),
        }

        // Notices already received still go to the service, which keeps
        // for offline those it can no longer deliver; closing the
        // subscriber ends the forwarder, and the queue then runs dry.
        lock(&shared.inbox).take();
        quit(&shared.subscriber, shared.config.command_timeout).await;
        for task in [tasks.forward, tasks.dispatch].into_iter().flatten() {
            finish(task, SHUTDOWN_DRAIN).await;
        }
        quit(&shared.commands, shared.config.command_timeout).await;
        for task in tasks.connections {
            finish(task, shared.config.command_timeout).await;
        }
        info!(server_id = %shared.config.server_id, "disconnected from Redis");
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // Without a shutdown this is a crash as far as the cluster can
        // tell: connections close, presence is left to expire.
        let tasks = std::mem::take(&mut *self.tasks());
        let handles = tasks
            .upkeep
            .iter()
            .chain(&tasks.forward)
            .chain(&tasks.dispatch);
        for task in handles {
            task.abort();
        }
        for task in &tasks.connections {
            task.abort();
        }
    }
}

impl Shared {
    /// Queues a wake for `users` behind the notices already received.
    fn wake(&self, users: Vec<UserId>) {
        if users.is_empty() {
            return;
        }
        let Some(queue) = lock(&self.inbox).clone() else {
            return;
        };
        if queue.try_send(Inbox::Wake(users)).is_err() {
            warn!("inbound queue full: stored messages wait for their users' next login");
        }
    }
}

/// The command client and the subscriber, with the same settings.
fn clients(config: &RedisBusConfig) -> Result<(Client, SubscriberClient), fred::error::Error> {
    let mut builder = Builder::from_config(Config::from_url(&config.url)?);
    builder
        .with_performance_config(|perf| perf.default_command_timeout = config.command_timeout)
        .with_connection_config(|connection| {
            connection.connection_timeout = config.command_timeout;
            connection.internal_command_timeout = config.command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    let commands = builder.build()?;
    builder.with_performance_config(|perf| perf.broadcast_channel_capacity = EVENT_CAPACITY);
    Ok((commands, builder.build_subscriber_client()?))
}

/// Closes a client's connection; while Redis is away there is nothing to
/// close politely, and the connection task is ended after this anyway.
async fn quit(client: &impl ClientLike, within: Duration) {
    match tokio::time::timeout(within, client.quit()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "QUIT failed"),
        Err(_) => debug!("QUIT timed out"),
    }
}

/// Waits for a task to end by itself, then ends it.
async fn finish<T>(mut task: JoinHandle<T>, within: Duration) {
    if tokio::time::timeout(within, &mut task).await.is_err() {
        task.abort();
    }
}

// A poisoned lock means a thread panicked while holding it; every update
// under these locks is a single assignment, so the data is still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
