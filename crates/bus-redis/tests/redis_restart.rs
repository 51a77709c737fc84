//! The Redis bus through a Redis restart: it fails fast while Redis is
//! away and carries on, with nothing restarted, when Redis is back empty.
//!
//! The test runs its own `redis-server` on a free port, so that stopping it
//! disturbs nobody else.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_bus_redis::RedisBus;
use chat_service::{Bus, Notice};
use support::{chat, text, Recorder, Scope, PATIENCE};

#[tokio::test]
async fn the_bus_fails_fast_without_redis_and_recovers_when_it_returns() {
    let mut redis = PrivateRedis::start(free_port());
    let scope = Scope::at(redis.url(), "restart").await;
    let ttl = Duration::from_secs(3);
    let a = bus(&scope, "a", ttl).await;
    let b = bus(&scope, "b", ttl).await;
    let c = bus(&scope, "c", ttl).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(1).await.expect("claim"));
    assert!(a.claim(2).await.expect("claim"));

    redis.stop();
    let started = Instant::now();
    assert!(a.claim(3).await.is_err(), "claim without Redis");
    assert!(a.online(&[1]).await.is_err(), "online without Redis");
    assert!(
        a.publish(&[1], &chat(1, "lost")).await.is_err(),
        "publish without Redis"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "three commands took {:?} to fail",
        started.elapsed()
    );
    let stopping = Instant::now();
    c.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown without Redis took {:?}",
        stopping.elapsed()
    );

    // Back, and empty: presence is written again and the subscriber
    // subscribes again, with no help.
    redis.restart();
    let deadline = Instant::now() + PATIENCE;
    while scope.holder(1).await.as_deref() != Some("b")
        || scope.holder(2).await.as_deref() != Some("a")
        || scope.subscribers("b").await != 1
    {
        assert!(Instant::now() < deadline, "the cluster never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(a
        .publish(&[1], &chat(1, "back"))
        .await
        .expect("publish")
        .is_empty());
    let got = inbox.wait_for_chats(1).await;
    assert_eq!(text(&got[0].1), Some("back"));
    // Messages stored offline meanwhile are handed over by a wake.
    inbox
        .wait_until(|r| r.all().contains(&(vec![1], Notice::Wake)))
        .await;
    assert!(a.claim(3).await.expect("claim after the restart"));

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

async fn bus(scope: &Scope, server_id: &str, ttl: Duration) -> RedisBus {
    let mut config = scope.config(server_id, ttl);
    config.command_timeout = Duration::from_millis(500);
    RedisBus::connect(config).await.expect("connect")
}

/// A `redis-server` of this test's own, without persistence.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (`apt-get install redis-server`); \
                     this test starts and stops a Redis of its own"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
