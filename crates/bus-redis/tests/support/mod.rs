//! What the Redis bus tests share: a Redis to talk to, a key prefix of
//! their own, and an `Inbound` that records what it is handed.
//!
//! The tests need a real Redis: `CHAT_TEST_REDIS_URL`, or
//! `redis://127.0.0.1:6379` if unset. Without one they fail and say how to
//! get one; a test that passed without running would prove nothing.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_bus_redis::{RedisBus, RedisBusConfig};
use chat_proto::{ChatMessage, Delivery, UserId};
use chat_service::{Inbound, Notice};
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use tokio::sync::Notify;

/// How long a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis connection for setting up and inspecting a test, and the key
/// prefix that keeps the test apart from every other.
pub struct Scope {
    pub prefix: String,
    pub url: String,
    pub raw: Client,
}

impl Scope {
    /// Connects to the test Redis, or fails the test saying how to get one.
    pub async fn new(test: &str) -> Scope {
        Scope::at(redis_url(), test).await
    }

    pub async fn at(url: String, test: &str) -> Scope {
        log_to_test_output();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "test:bus-redis:{test}:{}:{nanos}:{}:",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let raw = raw_client(&url).await;
        Scope { prefix, url, raw }
    }

    /// A bus for a server of this test, with timeouts short enough for
    /// tests and the given presence TTL.
    pub async fn bus(&self, server_id: &str, ttl: Duration) -> RedisBus {
        RedisBus::connect(self.config(server_id, ttl))
            .await
            .unwrap_or_else(|e| panic!("cannot connect a bus to {}: {e}", self.url))
    }

    pub fn config(&self, server_id: &str, ttl: Duration) -> RedisBusConfig {
        let mut config = RedisBusConfig::new(self.url.clone(), server_id);
        config.prefix = self.prefix.clone();
        config.presence_ttl = ttl;
        config.command_timeout = Duration::from_millis(1500);
        config
    }

    pub fn presence_key(&self, user: UserId) -> String {
        format!("{}presence:{user}", self.prefix)
    }

    pub fn channel(&self, server_id: &str) -> String {
        format!("{}server:{server_id}", self.prefix)
    }

    /// Which server Redis says holds `user`.
    pub async fn holder(&self, user: UserId) -> Option<String> {
        self.raw
            .get(self.presence_key(user))
            .await
            .expect("GET of a presence key")
    }

    /// How many connections are subscribed to a server's channel.
    pub async fn subscribers(&self, server_id: &str) -> i64 {
        let reply: Vec<Value> = self
            .raw
            .custom(
                command("PUBSUB"),
                vec!["NUMSUB".to_owned(), self.channel(server_id)],
            )
            .await
            .expect("PUBSUB NUMSUB");
        reply.get(1).and_then(Value::as_i64).unwrap_or(0)
    }

    /// Waits until a server's channel has `count` subscribers.
    pub async fn wait_for_subscribers(&self, server_id: &str, count: i64) {
        let deadline = Instant::now() + PATIENCE;
        while self.subscribers(server_id).await != count {
            assert!(
                Instant::now() < deadline,
                "channel of {server_id} never had {count} subscribers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deletes every key of this test.
    pub async fn cleanup(&self) {
        let keys: Vec<String> = self
            .raw
            .custom(command("KEYS"), vec![format!("{}*", self.prefix)])
            .await
            .expect("KEYS of the test prefix");
        if !keys.is_empty() {
            let _: i64 = self.raw.del(keys).await.expect("DEL of the test keys");
        }
        let _ = self.raw.quit().await;
    }
}

/// Shows the bus's logs in a failing test's output (`RUST_LOG` to choose;
/// `info` by default, which includes reconnects and resubscriptions).
fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

async fn raw_client(url: &str) -> Client {
    let config = Config::from_url(url).unwrap_or_else(|e| panic!("bad Redis URL {url}: {e}"));
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        // Tests that restart Redis go on with the same connection.
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("a Redis client");
    if let Err(e) = client.init().await {
        panic!(
            "no Redis at {url} ({e}). These tests need a real Redis: install and start \
             redis-server (`apt-get install redis-server && redis-server --daemonize yes`), \
             or point CHAT_TEST_REDIS_URL at one."
        );
    }
    client
}

/// An `Inbound` that keeps what it is handed, in order.
#[derive(Default)]
pub struct Recorder {
    notices: Mutex<Vec<(Vec<UserId>, Notice)>>,
    arrived: Notify,
}

#[async_trait]
impl Inbound for Recorder {
    async fn notice(&self, users: Vec<UserId>, notice: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((users, notice));
        self.arrived.notify_waiters();
    }
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// Everything handed so far.
    pub fn all(&self) -> Vec<(Vec<UserId>, Notice)> {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What was handed so far, leaving out wakes (a bus sends them by
    /// itself after a reconnect).
    pub fn chats(&self) -> Vec<(Vec<UserId>, Notice)> {
        self.all()
            .into_iter()
            .filter(|(_, n)| !matches!(n, Notice::Wake))
            .collect()
    }

    /// Waits until `count` notices other than wakes have arrived.
    pub async fn wait_for_chats(&self, count: usize) -> Vec<(Vec<UserId>, Notice)> {
        self.wait_until(|r| r.chats().len() >= count).await;
        self.chats()
    }

    /// Waits until `done` holds, failing the test after a while.
    pub async fn wait_until(&self, done: impl Fn(&Recorder) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "gave up waiting; got so far: {:?}",
                self.all()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), arrived).await;
        }
    }
}

/// A chat message from user 1 to `to`, told apart by its text.
pub fn chat(to: UserId, text: impl Into<String>) -> Notice {
    Notice::Chat(Arc::new(Delivery::One(ChatMessage {
        from: 1,
        from_name: "sender".to_owned(),
        to,
        text: text.into(),
        time: "2024-01-01 00:00:00".to_owned(),
    })))
}

/// The text of a chat notice.
pub fn text(notice: &Notice) -> Option<&str> {
    match notice {
        Notice::Chat(delivery) => match delivery.as_ref() {
            Delivery::One(m) => Some(&m.text),
            Delivery::Group(m) => Some(&m.text),
        },
        _ => None,
    }
}
