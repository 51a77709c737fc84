//! The Redis bus against a real Redis, with two or more buses in one
//! process standing for servers of one cluster.

mod support;

use std::time::{Duration, Instant};

use chat_bus_redis::{RedisBus, RedisBusConfig};
use chat_proto::UserId;
use chat_service::{Bus, Notice};
use fred::interfaces::{ClientLike, KeysInterface, PubsubInterface};
use fred::types::{Expiration, SetOptions};
use futures::future::join_all;
use support::{chat, command, text, Recorder, Scope, PATIENCE};

const TTL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_user_is_claimed_once_across_servers() {
    let scope = Scope::new("claim").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;

    assert!(a.claim(1).await.expect("claim"));
    assert!(!a.claim(1).await.expect("claim again on the same server"));
    assert!(!b.claim(1).await.expect("claim on another server"));
    assert_eq!(scope.holder(1).await.as_deref(), Some("a"));
    assert!(b.claim(2).await.expect("claim of another user"));

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn of_racing_claims_exactly_one_wins() {
    let scope = Scope::new("race").await;
    let ids: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    let buses = join_all(ids.iter().map(|id| scope.bus(id, TTL))).await;

    for user in 100..120 {
        let claims = join_all(buses.iter().map(|bus| bus.claim(user))).await;
        let winners: Vec<usize> = claims
            .iter()
            .enumerate()
            .filter(|(_, won)| matches!(won, Ok(true)))
            .map(|(i, _)| i)
            .collect();
        assert!(claims.iter().all(Result::is_ok), "{claims:?}");
        assert_eq!(winners.len(), 1, "user {user}: winners {winners:?}");
        let winner = format!("s{}", winners[0]);
        assert_eq!(scope.holder(user).await, Some(winner));
    }

    for bus in &buses {
        bus.shutdown().await;
    }
    scope.cleanup().await;
}

#[tokio::test]
async fn a_server_releases_its_own_users_only() {
    let scope = Scope::new("release").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;

    assert!(a.claim(1).await.expect("claim"));
    b.release(1).await.expect("release by another server");
    assert_eq!(scope.holder(1).await.as_deref(), Some("a"));

    a.release(1).await.expect("release");
    assert_eq!(scope.holder(1).await, None);
    assert!(b.claim(1).await.expect("claim after the release"));

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn online_answers_in_the_order_asked() {
    let scope = Scope::new("online").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;

    assert!(a.claim(1).await.expect("claim"));
    assert!(b.claim(3).await.expect("claim"));
    assert_eq!(
        a.online(&[3, 2, 1]).await.expect("online"),
        vec![true, false, true]
    );
    assert_eq!(b.online(&[2]).await.expect("online of one"), vec![false]);
    assert!(a.online(&[]).await.expect("online of nobody").is_empty());

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn a_notice_reaches_the_server_that_holds_its_users() {
    let scope = Scope::new("publish").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(10).await.expect("claim"));
    assert!(b.claim(11).await.expect("claim"));

    let notice = chat(10, "hello");
    let unreached = a.publish(&[10, 11], &notice).await.expect("publish");
    assert!(unreached.is_empty(), "unreached: {unreached:?}");

    let got = inbox.wait_for_chats(1).await;
    assert_eq!(got, vec![(vec![10, 11], notice)]);
    assert_eq!(a.stats().publishes, 1);
    assert_eq!(b.stats().notices_received, 1);

    let friend = Notice::FriendAdded {
        from: 7,
        from_name: "zoë".to_owned(),
    };
    assert!(a.publish(&[11], &friend).await.expect("publish").is_empty());
    let got = inbox.wait_for_chats(2).await;
    assert_eq!(got[1], (vec![11], friend));

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn users_without_presence_are_unreached() {
    let scope = Scope::new("absent").await;
    let a = scope.bus("a", TTL).await;

    let unreached = a
        .publish(&[5, 6], &chat(5, "anyone?"))
        .await
        .expect("publish");
    assert_eq!(unreached, vec![5, 6]);
    assert_eq!(a.stats().publishes, 0, "nobody to publish to");
    assert!(a
        .publish(&[], &Notice::Wake)
        .await
        .expect("publish to nobody")
        .is_empty());

    a.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn users_of_a_server_nobody_hears_are_unreached() {
    let scope = Scope::new("stale").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(21).await.expect("claim"));
    // A presence left by a server that is gone: nobody listens on its channel.
    let _: Option<String> = scope
        .raw
        .set(
            scope.presence_key(20),
            "ghost",
            Some(Expiration::PX(10_000)),
            Some(SetOptions::NX),
            false,
        )
        .await
        .expect("SET of a stale presence");

    let unreached = a
        .publish(&[20, 21], &chat(20, "ping"))
        .await
        .expect("publish");
    assert_eq!(unreached, vec![20]);
    assert_eq!(a.stats().publishes, 2, "one PUBLISH to each named server");
    assert_eq!(inbox.wait_for_chats(1).await[0].0, vec![21]);

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn a_hundred_users_on_two_servers_cost_two_publishes() {
    let scope = Scope::new("fanout").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    let sender = scope.bus("c", TTL).await;
    let (inbox_a, inbox_b) = (Recorder::new(), Recorder::new());
    a.start(inbox_a.clone()).await.expect("start a");
    b.start(inbox_b.clone()).await.expect("start b");
    let users: Vec<UserId> = (1000..1100).collect();
    for &user in &users {
        let bus = if user % 2 == 0 { &a } else { &b };
        assert!(bus.claim(user).await.expect("claim"));
    }

    let unreached = sender
        .publish(&users, &chat(0, "to everyone"))
        .await
        .expect("publish");
    assert!(unreached.is_empty(), "unreached: {unreached:?}");
    assert_eq!(sender.stats().publishes, 2);

    let got_a = inbox_a.wait_for_chats(1).await;
    let got_b = inbox_b.wait_for_chats(1).await;
    assert_eq!(got_a.len(), 1, "one notice for all of a's users");
    assert_eq!(got_b.len(), 1, "one notice for all of b's users");
    let evens: Vec<UserId> = users.iter().copied().filter(|u| u % 2 == 0).collect();
    let odds: Vec<UserId> = users.iter().copied().filter(|u| u % 2 == 1).collect();
    assert_eq!(got_a[0].0, evens);
    assert_eq!(got_b[0].0, odds);

    for bus in [&a, &b, &sender] {
        bus.shutdown().await;
    }
    scope.cleanup().await;
}

#[tokio::test]
async fn a_thousand_notices_arrive_in_the_order_sent() {
    let scope = Scope::new("order").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(5).await.expect("claim"));

    for i in 0..1000 {
        let unreached = a
            .publish(&[5], &chat(5, i.to_string()))
            .await
            .expect("publish");
        assert!(unreached.is_empty());
    }

    let got = inbox.wait_for_chats(1000).await;
    let texts: Vec<String> = got
        .iter()
        .filter_map(|(_, n)| text(n).map(str::to_owned))
        .collect();
    let sent: Vec<String> = (0..1000).map(|i: i32| i.to_string()).collect();
    assert_eq!(texts, sent);
    assert_eq!(b.stats().notices_lost, 0);

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

/// Notices published at the same time share MGETs and PUBLISHes, and
/// every caller's notices still arrive in its own order, to the right
/// users, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_notices_share_publishes_and_keep_each_senders_order() {
    const SENDERS: i64 = 40;
    const EACH: i64 = 25;
    let scope = Scope::new("batch").await;
    let a = std::sync::Arc::new(scope.bus("a", TTL).await);
    let b = scope.bus("b", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    for user in 1..=SENDERS {
        assert!(b.claim(user).await.expect("claim"));
    }
    // A user nobody holds, in every notice: reported back each time.
    let absent: UserId = 10_000;

    let senders = (1..=SENDERS).map(|user| {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..EACH {
                let unreached = a
                    .publish(&[user, absent], &chat(user, format!("{user}:{i}")))
                    .await
                    .expect("publish");
                assert_eq!(unreached, vec![absent], "sender {user}, message {i}");
            }
        })
    });
    for sent in join_all(senders).await {
        sent.expect("a sender panicked");
    }

    let total = (SENDERS * EACH) as usize;
    let got = inbox.wait_for_chats(total).await;
    assert_eq!(got.len(), total);
    let mut next = vec![0i64; SENDERS as usize + 1];
    for (users, notice) in &got {
        let body = text(notice).expect("a chat");
        let (user, i) = body.split_once(':').expect("user:index");
        let (user, i): (i64, i64) = (user.parse().expect("user"), i.parse().expect("index"));
        assert_eq!(users, &vec![user], "only the holder's own users are named");
        assert_eq!(
            i, next[user as usize],
            "sender {user}'s notices out of order"
        );
        next[user as usize] += 1;
    }
    let publishes = a.stats().publishes;
    assert!(
        publishes < total as u64,
        "{publishes} PUBLISHes for {total} notices sent together: none were shared"
    );

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn a_payload_that_is_not_a_notice_is_skipped() {
    let scope = Scope::new("malformed").await;
    let b = scope.bus("b", TTL).await;
    let a = scope.bus("a", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(3).await.expect("claim"));

    let _: u64 = scope
        .raw
        .publish(scope.channel("b"), "not json")
        .await
        .expect("PUBLISH of garbage");
    assert!(a
        .publish(&[3], &chat(3, "fine"))
        .await
        .expect("publish")
        .is_empty());

    let got = inbox.wait_for_chats(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(text(&got[0].1), Some("fine"));
    assert_eq!(b.stats().malformed, 1);

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn the_subscriber_comes_back_after_its_connection_is_killed() {
    let scope = Scope::new("resubscribe").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    let inbox = Recorder::new();
    b.start(inbox.clone()).await.expect("start");
    assert!(b.claim(8).await.expect("claim"));
    scope.wait_for_subscribers("b", 1).await;

    let killed = b
        .subscriber_connection_id()
        .expect("a subscriber connection");
    let _: Option<i64> = scope
        .raw
        .custom(
            command("CLIENT"),
            vec!["KILL".to_owned(), "ID".to_owned(), killed.to_string()],
        )
        .await
        .expect("CLIENT KILL ID");

    // Until the subscriber is back, senders see no receiver.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reconnected = b.subscriber_connection_id().is_some_and(|id| id != killed);
        if reconnected && scope.subscribers("b").await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let unreached = a
        .publish(&[8], &chat(8, "still there?"))
        .await
        .expect("publish");
    assert!(unreached.is_empty(), "unreached after resubscribing");
    let got = inbox.wait_for_chats(1).await;
    assert_eq!(text(&got[0].1), Some("still there?"));
    // Messages stored while nobody listened are handed over by a wake.
    inbox
        .wait_until(|r| r.all().contains(&(vec![8], Notice::Wake)))
        .await;

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn a_dropped_server_stops_receiving_and_its_users_expire() {
    let scope = Scope::new("crash").await;
    let ttl = Duration::from_millis(600);
    let a = scope.bus("a", ttl).await;
    let b = scope.bus("b", TTL).await;
    a.start(Recorder::new()).await.expect("start");
    assert!(a.claim(1).await.expect("claim"));

    drop(a);
    scope.wait_for_subscribers("a", 0).await;
    // The presence outlives the server, but PUBLISH tells nobody heard it.
    assert_eq!(b.online(&[1]).await.expect("online"), vec![true]);
    assert_eq!(
        b.publish(&[1], &chat(1, "lost?")).await.expect("publish"),
        vec![1]
    );

    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(b.online(&[1]).await.expect("online"), vec![false]);
    assert!(b.claim(1).await.expect("claim after expiry"));

    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn renewal_keeps_users_online_past_the_ttl() {
    let scope = Scope::new("renewal").await;
    // Long enough that a busy test machine still renews in time.
    let ttl = Duration::from_secs(1);
    let a = scope.bus("a", ttl).await;
    assert!(a.claim(1).await.expect("claim"));

    tokio::time::sleep(ttl * 3 + ttl / 2).await;
    assert_eq!(a.online(&[1]).await.expect("online"), vec![true]);
    let left: i64 = scope.raw.pttl(scope.presence_key(1)).await.expect("PTTL");
    assert!(left > 0 && left <= 1000, "TTL left: {left} ms");

    a.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn renewal_writes_back_presence_that_redis_lost() {
    let scope = Scope::new("restore").await;
    let ttl = Duration::from_millis(300);
    let a = scope.bus("a", ttl).await;
    let inbox = Recorder::new();
    a.start(inbox.clone()).await.expect("start");
    assert!(a.claim(1).await.expect("claim"));

    let _: i64 = scope.raw.del(scope.presence_key(1)).await.expect("DEL");
    inbox
        .wait_until(|r| r.all().contains(&(vec![1], Notice::Wake)))
        .await;
    assert_eq!(scope.holder(1).await.as_deref(), Some("a"));

    a.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn shutdown_releases_this_servers_users_and_nobody_elses() {
    let scope = Scope::new("shutdown").await;
    let a = scope.bus("a", TTL).await;
    let b = scope.bus("b", TTL).await;
    a.start(Recorder::new()).await.expect("start");
    for user in [1, 2, 4] {
        assert!(a.claim(user).await.expect("claim"));
    }
    assert!(b.claim(3).await.expect("claim"));
    // As if Redis had lost a's claim on 4 and b had logged 4 in since.
    let _: Option<String> = scope
        .raw
        .set(scope.presence_key(4), "b", None, None, false)
        .await
        .expect("SET");

    a.shutdown().await;
    assert_eq!(
        b.online(&[1, 2, 3, 4]).await.expect("online"),
        vec![false, false, true, true]
    );
    assert_eq!(scope.holder(4).await.as_deref(), Some("b"));
    assert_eq!(scope.subscribers("a").await, 0);
    a.shutdown().await; // a second shutdown does nothing

    b.shutdown().await;
    scope.cleanup().await;
}

#[tokio::test]
async fn start_works_once() {
    let scope = Scope::new("start").await;
    let a = scope.bus("a", TTL).await;
    a.start(Recorder::new()).await.expect("start");
    assert!(a.start(Recorder::new()).await.is_err());
    a.shutdown().await;
    assert!(a.start(Recorder::new()).await.is_err());
    scope.cleanup().await;
}

#[tokio::test]
async fn a_second_running_server_with_the_same_id_is_refused() {
    let scope = Scope::new("same-id").await;
    let first = scope.bus("a", TTL).await;
    first.start(Recorder::new()).await.expect("start");

    let twin = scope.bus("a", TTL).await;
    let refusal = twin
        .start(Recorder::new())
        .await
        .expect_err("a second server named a is refused");
    let message = anyhow_chain(&refusal);
    assert!(message.contains("already used"), "{message}");
    twin.shutdown().await;
    assert_eq!(scope.subscribers("a").await, 1, "the twin never subscribed");

    // Once the first has stopped, its id is free again: a restart works.
    first.shutdown().await;
    let restarted = scope.bus("a", TTL).await;
    restarted
        .start(Recorder::new())
        .await
        .expect("restart with the same id");
    restarted.shutdown().await;
    scope.cleanup().await;
}

/// An error and its sources, one after another.
fn anyhow_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn connecting_to_no_redis_fails_fast() {
    // Nothing listens on port 1 of the loopback address.
    let mut config = RedisBusConfig::new("redis://127.0.0.1:1", "a");
    config.command_timeout = Duration::from_millis(500);
    let started = Instant::now();
    assert!(RedisBus::connect(config).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));

    let config = RedisBusConfig::new("redis://127.0.0.1:6379", "");
    assert!(RedisBus::connect(config).await.is_err(), "empty server id");
}

#[tokio::test]
async fn notices_to_users_on_this_server_come_back_through_its_channel() {
    let scope = Scope::new("self").await;
    let a = scope.bus("a", TTL).await;
    let inbox = Recorder::new();
    a.start(inbox.clone()).await.expect("start");
    assert!(a.claim(1).await.expect("claim"));

    assert!(a
        .publish(&[1], &Notice::Wake)
        .await
        .expect("publish")
        .is_empty());
    inbox
        .wait_until(|r| r.all().contains(&(vec![1], Notice::Wake)))
        .await;

    a.shutdown().await;
    scope.cleanup().await;
}

/// An `Inbound` that takes nothing until it is opened, then records the
/// text of every chat it is handed.
struct Gated {
    open: tokio::sync::watch::Receiver<bool>,
    texts: std::sync::Mutex<Vec<u32>>,
}

#[async_trait::async_trait]
impl chat_service::Inbound for Gated {
    async fn notice(&self, _users: Vec<UserId>, notice: Notice) {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        if let Some(n) = text(&notice).and_then(|t| t.parse().ok()) {
            self.texts.lock().unwrap_or_else(|e| e.into_inner()).push(n);
        }
    }
}

#[tokio::test]
async fn notices_beyond_the_queue_are_counted_as_lost_and_delivery_goes_on() {
    let scope = Scope::new("lagged").await;
    let a = scope.bus("a", TTL).await;
    let mut config = scope.config("b", TTL);
    config.inbound_queue = 1;
    let b = RedisBus::connect(config).await.expect("connect");
    let (open, gate) = tokio::sync::watch::channel(false);
    let inbound = std::sync::Arc::new(Gated {
        open: gate,
        texts: std::sync::Mutex::new(Vec::new()),
    });
    b.start(inbound.clone()).await.expect("start");
    assert!(b.claim(5).await.expect("claim"));

    // Far more than the subscriber's event channel and the queue hold.
    const SENT: u64 = 6000;
    for i in 0..SENT {
        let unreached = a
            .publish(&[5], &chat(5, i.to_string()))
            .await
            .expect("publish");
        assert!(unreached.is_empty());
    }
    open.send_replace(true);

    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = b.stats();
        if stats.notices_received + stats.notices_lost == SENT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all accounted for: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = b.stats();
    assert!(stats.notices_lost > 0, "{stats:?}");
    let texts = inbound
        .texts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        texts.windows(2).all(|w| w[0] < w[1]),
        "what arrived is still in order"
    );
    assert_eq!(
        texts.last().copied(),
        Some(SENT as u32 - 1),
        "the newest arrive"
    );

    a.shutdown().await;
    b.shutdown().await;
    scope.cleanup().await;
}
