//! Offline delivery: many messages queued for users who are away, then
//! handed over when they log in.
//!
//! Two figures come out of it. Queueing (`store`): every message to an
//! offline user is a write to the store, so this is bounded by how fast
//! the store commits, which on MariaDB is the disk's flush rate. Handing
//! over (`drain`): all recipients log in at once and the report times each
//! from its LOGIN to the last of its queued messages, which the server
//! sends partly inside the LOGIN_ACK and the rest as ordinary deliveries.
//! Order and completeness are checked per recipient as for live messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chat_client::Client;
use chat_proto::{Delivery, Request, ServerMsg, UserId};
use clap::Args;
use futures::future::try_join_all;

use super::{Common, Ctx};
use crate::fleet;
use crate::report::Record;
use crate::track::{now_ns, Latency, Stamp, Tally, Window};

/// Flags of `offline`.
#[derive(Debug, Clone, Args)]
pub struct OfflineArgs {
    #[command(flatten)]
    pub common: Common,

    /// Users who are away while messages are queued for them.
    #[arg(long, default_value_t = 20)]
    pub recipients: usize,

    /// Messages queued for each of them.
    #[arg(long, default_value_t = 500)]
    pub messages: u64,

    /// Messages in flight while queueing (at most one per recipient).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
}

/// Queues, then hands over.
pub async fn run(ctx: &mut Ctx, args: &OfflineArgs) -> Result<Vec<Record>> {
    let count = args.recipients.max(1);
    let users = fleet::register(&ctx.wire, &format!("o{}_", ctx.tag), count + 1).await?;
    let (sender, recipients) = (users[0], Arc::new(users[1..].to_vec()));
    ctx.watcher.rebase();
    let client = Arc::new(ctx.wire.connect(0).await?);
    fleet::login(&client, sender).await?;

    let store = queue(ctx, args, &client, &recipients).await?;
    let drain = hand_over(ctx, args, sender, &recipients).await?;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    Ok(vec![store, drain])
}

/// Sends `messages` to every recipient while they are away, each worker
/// owning some recipients so that each stream is sent in order.
async fn queue(
    ctx: &Ctx,
    args: &OfflineArgs,
    client: &Arc<Client>,
    recipients: &Arc<Vec<UserId>>,
) -> Result<Record> {
    let workers = args.in_flight.clamp(1, recipients.len());
    let before = ctx.watcher.sample();
    let started = Instant::now();
    let tasks = (0..workers).map(|worker| {
        let (client, recipients) = (Arc::clone(client), Arc::clone(recipients));
        let (messages, payload) = (args.messages, ctx.common.payload);
        async move {
            let mut latency = Latency::default();
            let mut errors = 0u64;
            for seq in 0..messages {
                for &to in recipients.iter().skip(worker).step_by(workers) {
                    let sent_ns = now_ns();
                    let text = Stamp { seq, sent_ns }.text(payload);
                    match client.request(Request::OneChat { to, text }).await? {
                        ServerMsg::ChatAck { .. } => latency.record_ns(sent_ns, now_ns()),
                        _ => errors += 1,
                    }
                }
            }
            Ok::<_, anyhow::Error>((latency, errors))
        }
    });
    let results = tokio::time::timeout(Duration::from_secs(600), try_join_all(tasks)).await??;
    let secs = started.elapsed().as_secs_f64();
    let after = ctx.watcher.sample();

    let mut latency = Latency::default();
    let mut errors = 0;
    for (part, failed) in &results {
        latency.merge(part);
        errors += failed;
    }
    let total = args.messages * recipients.len() as u64;
    let mut record = ctx.record("offline", "store", "closed");
    record.in_flight = Some(workers as u32);
    record.connections = 1;
    record.seconds = secs;
    record.msgs_per_s = (total - errors) as f64 / secs;
    record.set_latency(&latency);
    record.sent = total;
    record.delivered = total - errors;
    record.errors = errors;
    record.watch = ctx.watcher.spent(&before, &after, secs, total, 1);
    record.extra("recipients", recipients.len() as u64);
    record.note = "latency is the CHAT_ACK of a message kept for an offline user".into();
    Ok(record)
}

/// Logs every recipient in at once and times each until the last of its
/// messages arrived.
async fn hand_over(
    ctx: &Ctx,
    args: &OfflineArgs,
    sender: UserId,
    recipients: &[UserId],
) -> Result<Record> {
    let mut clients = Vec::with_capacity(recipients.len());
    for _ in recipients {
        clients.push(ctx.wire.connect(0).await?);
    }
    let wait = Duration::from_secs_f64(ctx.common.drain.max(30.0));
    let before = ctx.watcher.sample();
    let tasks = clients.into_iter().zip(recipients).map(|(client, &user)| {
        let expected = args.messages;
        async move {
            let outcome = receive_backlog(&client, user, expected, wait).await;
            client.close().await;
            outcome
        }
    });
    let results = try_join_all(tasks).await?;
    let after = ctx.watcher.sample();

    let mut tally = Tally::new(everything());
    let mut latency = Latency::default();
    let (mut first, mut last, mut in_ack) = (u64::MAX, 0, 0);
    for backlog in &results {
        tally.merge(&backlog.tally);
        latency.record_ns(backlog.login_ns, backlog.last_ns);
        first = first.min(backlog.login_ns);
        last = last.max(backlog.last_ns);
        in_ack += backlog.in_ack;
    }
    let sent: HashMap<(UserId, UserId), u64> = recipients
        .iter()
        .map(|&to| ((sender, to), args.messages))
        .collect();
    let counts = tally.counts(&sent);
    let secs = last.saturating_sub(first) as f64 / 1e9;

    let mut record = ctx.record("offline", "drain", "backlog");
    record.connections = recipients.len() as u64;
    record.seconds = secs;
    record.msgs_per_s = counts.delivered as f64 / secs.max(1e-9);
    record.deliveries_per_s = record.msgs_per_s;
    record.set_latency(&latency);
    record.set_counts(&counts);
    record.errors = tally.unreadable;
    record.watch = ctx
        .watcher
        .spent(&before, &after, secs, counts.delivered, 0);
    record.extra("messages_per_recipient", args.messages);
    record.extra("in_login_ack", in_ack);
    record.note = "latency is from a recipient's LOGIN to the last of its queued messages".into();
    Ok(record)
}

/// What one recipient got at login.
struct Backlog {
    tally: Tally,
    login_ns: u64,
    last_ns: u64,
    in_ack: u64,
}

async fn receive_backlog(
    client: &Client,
    user: UserId,
    expected: u64,
    wait: Duration,
) -> Result<Backlog> {
    let mut tally = Tally::new(everything());
    let login_ns = now_ns();
    let ok = fleet::login(client, user).await?;
    let mut last_ns = now_ns();
    let mut got = 0;
    for delivery in &ok.offline {
        if record(&mut tally, user, delivery, last_ns) {
            got += 1;
        }
    }
    let in_ack = got;
    let deadline = tokio::time::Instant::now() + wait;
    while got < expected {
        let msg = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(Some(msg)) => msg,
            // Whatever did not come counts as lost.
            Ok(None) | Err(_) => break,
        };
        if let ServerMsg::Deliver(delivery) = msg {
            let now = now_ns();
            if record(&mut tally, user, &delivery, now) {
                got += 1;
                last_ns = now;
            }
        }
    }
    if got == 0 && expected > 0 {
        bail!("user {user} got none of its {expected} offline messages");
    }
    Ok(Backlog {
        tally,
        login_ns,
        last_ns,
        in_ack,
    })
}

/// Records a delivery; `true` for a first arrival.
fn record(tally: &mut Tally, user: UserId, delivery: &Delivery, now: u64) -> bool {
    let (from, text) = match delivery {
        Delivery::One(m) => (m.from, &m.text),
        Delivery::Group(m) => (m.from, &m.text),
    };
    tally
        .record(from, user, text, now)
        .is_some_and(|(_, arrival)| arrival.is_first())
}

/// A window that holds every send: all queued messages count.
fn everything() -> Window {
    Window {
        start_ns: 0,
        end_ns: u64::MAX,
    }
}
