//! The message load: senders that keep K messages in flight (closed loop)
//! or send on a fixed schedule (open loop), and readers that account for
//! every arrival.
//!
//! A closed loop finds the throughput a server sustains, but it hides
//! latency: when the server slows down, the senders slow down with it and
//! the queue never grows. An open loop sends at a fixed rate whatever
//! happens, and stamps each message with the time it was *scheduled*, so a
//! stall shows up as latency of every message that should have gone out
//! during it (no "coordinated omission"). Every scenario that sends chat
//! messages runs both through this module.
//!
//! Each sender is a [`Route`]: a peer sending to one user or one group. A
//! message is complete when every recipient has it; only then does a
//! closed-loop sender get its slot back. Both loops stop by themselves at
//! the end of the window or after a bounded number of messages, and the
//! readers stop once everything sent has arrived or the drain time is up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chat_client::Client;
use chat_proto::{Delivery, GroupId, Request, ServerMsg, UserId};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, sleep_until, timeout_at};

use crate::fleet::Peer;
use crate::track::{instant_at, now_ns, Counts, Latency, Stamp, Tally, Window, MAX_SEQ};
use crate::watch::{Sample, Watcher};

/// Where a route's messages go.
#[derive(Debug, Clone)]
pub enum Target {
    /// One user (ONE_CHAT).
    User(UserId),
    /// A group (GROUP_CHAT), delivered to every member but the sender.
    Group {
        id: GroupId,
        recipients: Arc<Vec<UserId>>,
    },
}

/// One sender: the peer at `sender` in the peer list, sending to `target`.
#[derive(Debug, Clone)]
pub struct Route {
    pub sender: usize,
    pub target: Target,
}

/// How the senders pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Each sender keeps this many messages in flight.
    Closed { in_flight: u32 },
    /// All senders together send this many messages per second.
    Open { rate: f64 },
}

impl Shape {
    /// `closed` or `open`.
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Closed { .. } => "closed",
            Shape::Open { .. } => "open",
        }
    }
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Sending before the measured window: connections and caches warm up.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long to wait after the last send for messages still in flight;
    /// whatever has not arrived by then counts as lost.
    pub drain: Duration,
    /// Most messages any one sender sends.
    pub max_messages: u64,
}

/// A message load to run.
pub struct Plan<'a> {
    pub peers: &'a [Peer],
    pub routes: Vec<Route>,
    pub shape: Shape,
    pub timing: Timing,
    /// Bytes of chat text per message.
    pub payload: usize,
    /// What the progress bar says.
    pub label: String,
}

/// What a message load found.
#[derive(Debug)]
pub struct Outcome {
    pub window: Window,
    /// Every reader's tally, merged.
    pub tally: Tally,
    pub counts: Counts,
    /// Messages sent in the window that reached every recipient.
    pub completed_in_window: u64,
    /// Latency to the last recipient of each message sent in the window.
    pub last: Latency,
    /// Messages sent, not counting recipients.
    pub messages: u64,
    /// CHAT_ACKs received.
    pub acks: u64,
    /// Error replies, failed sends and connections that closed early.
    pub errors: u64,
    /// Readings of the watched processes at the start and end of the window.
    pub before: Vec<Option<Sample>>,
    pub after: Vec<Option<Sample>>,
}

/// Runs `plan` and accounts for every message.
pub async fn run(plan: Plan<'_>, watcher: &Watcher) -> Result<Outcome> {
    let Plan {
        peers,
        routes,
        shape,
        timing,
        payload,
        label,
    } = plan;
    let start_ns = now_ns();
    let window = Window {
        start_ns: start_ns + nanos(timing.warmup),
        end_ns: start_ns + nanos(timing.warmup + timing.duration),
    };
    let shared = Arc::new(Shared::new(peers, &routes, shape, window)?);
    let (stop, stopped) = watch::channel(false);

    let readers: Vec<_> = peers
        .iter()
        .map(|peer| {
            let own_route = shared.route_of.get(&peer.user).copied();
            tokio::spawn(read(
                peer.clone(),
                Arc::clone(&shared),
                stopped.clone(),
                own_route,
            ))
        })
        .collect();
    let sampler = {
        let watcher = watcher.clone();
        tokio::spawn(async move {
            sleep_until(instant_at(window.start_ns).into()).await;
            let before = watcher.sample();
            sleep_until(instant_at(window.end_ns).into()).await;
            (before, watcher.sample())
        })
    };
    let max = timing.max_messages.min(MAX_SEQ);
    let senders: Vec<_> = routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let sender = Sender {
                client: Arc::clone(&peers[route.sender].client),
                route: i,
                target: route.target.clone(),
                shared: Arc::clone(&shared),
                payload,
                max,
            };
            match shape {
                Shape::Closed { .. } => tokio::spawn(sender.closed()),
                Shape::Open { rate } => {
                    let routes = routes.len() as f64;
                    let interval = nanos(Duration::from_secs_f64(routes / rate.max(1e-3)));
                    let phase = interval * i as u64 / routes as u64;
                    tokio::spawn(sender.open(start_ns + phase, interval))
                }
            }
        })
        .collect();

    let bar = progress(&label, timing.warmup + timing.duration);
    let ticker = {
        let (bar, shared) = (bar.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            loop {
                let elapsed = Duration::from_nanos(now_ns().saturating_sub(start_ns));
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!(
                    "{} delivered",
                    shared.delivered.load(Ordering::Relaxed)
                ));
                sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut sent = Vec::with_capacity(senders.len());
    let mut errors = 0;
    for sender in senders {
        let outcome = sender.await?;
        sent.push(outcome.sent);
        errors += outcome.errors;
    }
    let expected: u64 = sent
        .iter()
        .zip(&shared.fanout)
        .map(|(&n, &fanout)| n * u64::from(fanout))
        .sum();
    let drain_until = Instant::now() + timing.drain;
    bar.set_message("draining");
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    ticker.abort();
    bar.finish_and_clear();

    let mut tally = Tally::new(window);
    let mut acks = 0;
    for reader in readers {
        let outcome = reader.await?;
        tally.merge(&outcome.tally);
        acks += outcome.acks;
        errors += outcome.errors;
    }
    let (before, after) = sampler.await?;
    let counts = tally.counts(&streams(peers, &routes, &sent));
    let completed_in_window = shared.completed_in_window.load(Ordering::Relaxed);
    let last = if shared.fanout.iter().any(|&f| f > 1) {
        lock(&shared.last).clone()
    } else {
        tally.latency.clone()
    };
    Ok(Outcome {
        window,
        tally,
        counts,
        completed_in_window,
        last,
        messages: sent.iter().sum(),
        acks,
        errors,
        before,
        after,
    })
}

/// What the senders and readers of one run share.
struct Shared {
    window: Window,
    /// The route of each sending user.
    route_of: HashMap<UserId, usize>,
    /// Recipients of each route's messages.
    fanout: Vec<u32>,
    /// Free in-flight slots of each route (closed loop).
    slots: Vec<Semaphore>,
    /// Arrivals so far of group messages not yet complete, sharded to keep
    /// readers from queueing on one lock.
    pending: Vec<Mutex<HashMap<(usize, u64), u32>>>,
    /// First arrivals of anything.
    delivered: AtomicU64,
    completed_in_window: AtomicU64,
    last: Mutex<Latency>,
}

/// Shards of the pending table: enough for the readers on two cores.
const PENDING_SHARDS: usize = 64;

impl Shared {
    fn new(peers: &[Peer], routes: &[Route], shape: Shape, window: Window) -> Result<Shared> {
        let mut route_of = HashMap::new();
        let mut fanout = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let Some(peer) = peers.get(route.sender) else {
                bail!("route {i} names peer {} of {}", route.sender, peers.len());
            };
            if route_of.insert(peer.user, i).is_some() {
                bail!(
                    "user {} has two routes; each sender may have one",
                    peer.user
                );
            }
            fanout.push(match &route.target {
                Target::User(_) => 1,
                Target::Group { recipients, .. } => {
                    let others = recipients.iter().filter(|&&r| r != peer.user).count();
                    u32::try_from(others.max(1)).unwrap_or(u32::MAX)
                }
            });
        }
        let in_flight = match shape {
            Shape::Closed { in_flight } => in_flight.max(1) as usize,
            Shape::Open { .. } => 0,
        };
        Ok(Shared {
            window,
            route_of,
            fanout,
            slots: routes.iter().map(|_| Semaphore::new(in_flight)).collect(),
            pending: (0..PENDING_SHARDS).map(|_| Mutex::default()).collect(),
            delivered: AtomicU64::new(0),
            completed_in_window: AtomicU64::new(0),
            last: Mutex::default(),
        })
    }

    /// A message's first arrival at one of its recipients.
    fn arrived(&self, from: UserId, stamp: Stamp, now: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let Some(&route) = self.route_of.get(&from) else {
            return;
        };
        let fanout = self.fanout[route];
        if fanout > 1 && !self.last_arrival(route, stamp.seq, fanout) {
            return;
        }
        if self.window.contains(stamp.sent_ns) {
            self.completed_in_window.fetch_add(1, Ordering::Relaxed);
            if fanout > 1 {
                lock(&self.last).record_ns(stamp.sent_ns, now);
            }
        }
        self.slots[route].add_permits(1);
    }

    /// Counts one arrival of a group message; `true` when it was the last.
    fn last_arrival(&self, route: usize, seq: u64, fanout: u32) -> bool {
        let shard = (seq as usize).wrapping_mul(31).wrapping_add(route) % PENDING_SHARDS;
        let mut pending = lock(&self.pending[shard]);
        let count = pending.entry((route, seq)).or_insert(0);
        *count += 1;
        if *count < fanout {
            return false;
        }
        pending.remove(&(route, seq));
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one is intact.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One route's sending task.
struct Sender {
    client: Arc<Client>,
    route: usize,
    target: Target,
    shared: Arc<Shared>,
    payload: usize,
    max: u64,
}

struct Sent {
    sent: u64,
    errors: u64,
}

impl Sender {
    /// Sends whenever a slot is free, until the window ends.
    async fn closed(self) -> Sent {
        let end = instant_at(self.shared.window.end_ns);
        let slots = &self.shared.slots[self.route];
        let mut seq = 0;
        while seq < self.max {
            match timeout_at(end.into(), slots.acquire()).await {
                Ok(Ok(slot)) => slot.forget(),
                _ => break,
            }
            let now = now_ns();
            if now >= self.shared.window.end_ns {
                break;
            }
            if self.send(seq, now).await.is_err() {
                return Sent {
                    sent: seq,
                    errors: 1,
                };
            }
            seq += 1;
        }
        Sent {
            sent: seq,
            errors: 0,
        }
    }

    /// Sends one message every `interval_ns` from `first_ns`, each stamped
    /// with the time it was due, until the window ends.
    async fn open(self, first_ns: u64, interval_ns: u64) -> Sent {
        let end_ns = self.shared.window.end_ns;
        let mut due = first_ns;
        let mut seq = 0;
        while due < end_ns && seq < self.max {
            sleep_until(instant_at(due).into()).await;
            // Everything due by now goes out at once, stamped with when it
            // was due: a stall of the server or of this process shows as
            // latency, not as fewer messages.
            while due <= now_ns() && due < end_ns && seq < self.max {
                if self.send(seq, due).await.is_err() {
                    return Sent {
                        sent: seq,
                        errors: 1,
                    };
                }
                seq += 1;
                due += interval_ns.max(1);
            }
        }
        Sent {
            sent: seq,
            errors: 0,
        }
    }

    async fn send(&self, seq: u64, sent_ns: u64) -> Result<(), chat_client::ClientError> {
        let text = Stamp { seq, sent_ns }.text(self.payload);
        let request = match &self.target {
            Target::User(to) => Request::OneChat { to: *to, text },
            Target::Group { id, .. } => Request::GroupChat { group: *id, text },
        };
        self.client.send(request).await
    }
}

/// What one reader saw.
struct Read {
    tally: Tally,
    acks: u64,
    errors: u64,
}

/// Reads everything that arrives for `peer` until told to stop.
async fn read(
    peer: Peer,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    own_route: Option<usize>,
) -> Read {
    let mut tally = Tally::new(shared.window);
    let (mut acks, mut errors) = (0, 0);
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            msg = peer.client.recv() => msg,
        };
        let Some(msg) = msg else {
            // The connection ended before the run did.
            errors += 1;
            break;
        };
        match msg {
            ServerMsg::Deliver(delivery) => {
                let (from, text) = match &*delivery {
                    Delivery::One(m) => (m.from, &m.text),
                    Delivery::Group(m) => (m.from, &m.text),
                };
                let now = now_ns();
                if let Some((stamp, arrival)) = tally.record(from, peer.user, text, now) {
                    if arrival.is_first() {
                        shared.arrived(from, stamp, now);
                    }
                }
            }
            ServerMsg::ChatAck { .. } => acks += 1,
            ServerMsg::Error { .. } => {
                errors += 1;
                // The message will never arrive: give its slot back so the
                // sender goes on, and let the loss show in the counts.
                if let Some(route) = own_route {
                    shared.slots[route].add_permits(1);
                }
            }
            _ => {}
        }
    }
    Read {
        tally,
        acks,
        errors,
    }
}

/// How many messages each (sender, recipient) stream was sent.
fn streams(peers: &[Peer], routes: &[Route], sent: &[u64]) -> HashMap<(UserId, UserId), u64> {
    let mut streams = HashMap::new();
    for (route, &count) in routes.iter().zip(sent) {
        let from = peers[route.sender].user;
        match &route.target {
            Target::User(to) => *streams.entry((from, *to)).or_default() += count,
            Target::Group { recipients, .. } => {
                for &to in recipients.iter().filter(|&&to| to != from) {
                    *streams.entry((from, to)).or_default() += count;
                }
            }
        }
    }
    streams
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A progress bar over `total`, drawn only on a terminal.
pub fn progress(label: &str, total: Duration) -> ProgressBar {
    let bar = ProgressBar::new(total.as_millis() as u64);
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>4} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}
