//! Taking notices from this server's channel and handing them to the
//! service, one at a time, in the order Redis delivered them.
//!
//! Two tasks share the work. The client that fred gives us announces each
//! message on a broadcast channel that drops the oldest messages when a
//! receiver falls behind, and the service may be slow on a notice (storing
//! a message offline waits for the database). So a *forwarder* does
//! nothing but move messages from the broadcast channel into a bounded
//! queue that grows only as it fills, and a *dispatcher* reads that queue
//! and awaits the service on each notice before the next: one sender's
//! messages to one user stay in order, and a burst waits in the queue
//! instead of being dropped. Only when the queue is full does the
//! broadcast channel overflow; those notices are lost, counted and logged.
//!
//! A third task watches the subscriber connection: after a reconnect it
//! subscribes again (fred's client remembers the channel), and then wakes
//! every user this server holds, because while the subscription was down
//! other servers saw no receiver and stored their messages offline. It
//! does what fred's `manage_subscriptions` does, plus what that cannot:
//! log the resubscription, try again when it fails on a live connection,
//! and send the wake.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::UserId;
use chat_service::{Inbound, Notice};
use fred::interfaces::EventInterface;
use fred::types::Message;
use futures::FutureExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::envelope;
use crate::Shared;

/// What the dispatcher hands to the service.
pub(crate) enum Inbox {
    /// A payload from the channel, still undecoded: decoding belongs to the
    /// dispatcher, so that the forwarder keeps up with Redis.
    Message(Message),
    /// Users that may have messages stored offline without a wake, after
    /// this server was unreachable through Redis for a while.
    Wake(Vec<UserId>),
}

/// How long to wait before subscribing again after a failed attempt on a
/// connection that is up.
const RESUBSCRIBE_RETRY: Duration = Duration::from_secs(1);

/// Moves messages from fred's broadcast channel into the queue.
pub(crate) async fn forward(
    shared: Arc<Shared>,
    mut messages: tokio::sync::broadcast::Receiver<Message>,
    queue: mpsc::Sender<Inbox>,
) {
    loop {
        match messages.recv().await {
            Ok(message) => {
                if queue.send(Inbox::Message(message)).await.is_err() {
                    break;
                }
            }
            Err(RecvError::Lagged(lost)) => {
                shared.counters.lost.fetch_add(lost, Ordering::Relaxed);
                error!(
                    lost,
                    "lost notices from other servers: the inbound queue was full"
                );
            }
            Err(RecvError::Closed) => break,
        }
    }
    debug!("stopped taking messages from Redis");
}

/// Hands queued notices to the service, one at a time.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Inbox>,
    inbound: Arc<dyn Inbound>,
) {
    while let Some(item) = queue.recv().await {
        let notices = match item {
            Inbox::Message(message) => match decode(&shared, &message) {
                Some(envelopes) => envelopes.into_iter().map(|e| (e.users, e.notice)).collect(),
                None => continue,
            },
            Inbox::Wake(users) => vec![(users, Notice::Wake)],
        };
        for (users, notice) in notices {
            // A panic in the service must not end delivery for every later
            // notice: this one is lost, and that is logged.
            let handed = AssertUnwindSafe(inbound.notice(users, notice))
                .catch_unwind()
                .await;
            if handed.is_err() {
                error!("the chat service panicked while taking a notice; that notice is lost");
            }
        }
    }
    debug!("stopped handing notices to the chat service");
}

fn decode(shared: &Shared, message: &Message) -> Option<Vec<envelope::Envelope>> {
    let decoded = message
        .value
        .as_bytes()
        .ok_or_else(|| "not a string".to_owned())
        .and_then(|payload| envelope::decode(payload).map_err(|e| e.to_string()));
    match decoded {
        Ok(envelopes) => {
            shared
                .counters
                .received
                .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
            debug!(
                notices = envelopes.len(),
                "notices received from another server"
            );
            Some(envelopes)
        }
        Err(reason) => {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            error!(
                channel = %message.channel,
                error = %reason,
                "skipped a message that is not a notice: is a server of another version running?"
            );
            None
        }
    }
}

/// Logs the subscriber connection's faults and subscribes again after
/// every reconnect.
pub(crate) async fn watch_subscriber(shared: Arc<Shared>) {
    let mut reconnects = shared.subscriber.reconnect_rx();
    let mut errors = shared.subscriber.error_rx();
    // Reconnect attempts fail as often as the backoff allows while Redis
    // is away: warn once per outage, not at every attempt.
    let mut down = false;
    loop {
        tokio::select! {
            event = reconnects.recv() => match event {
                // A missed event is still a reconnect to act on.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    down = false;
                    info!(connection = "subscriber", "reconnected to Redis");
                    resubscribe(&shared).await;
                }
                Err(RecvError::Closed) => break,
            },
            event = errors.recv() => match event {
                Ok((e, _)) => {
                    if down {
                        debug!(connection = "subscriber", error = %e, "still no Redis");
                    } else {
                        warn!(connection = "subscriber", error = %e, "Redis connection failed; reconnecting");
                    }
                    down = true;
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Subscribes to the channel again, until it works; then wakes every user
/// this server holds.
async fn resubscribe(shared: &Shared) {
    loop {
        // Before `start` there is nothing to subscribe to.
        if shared.subscriber.tracked_channels().is_empty() {
            return;
        }
        match shared.subscriber.resubscribe_all().await {
            Ok(()) => {
                info!(channel = %shared.channel, "resubscribed");
                shared.wake(shared.presence.users());
                return;
            }
            Err(e) => {
                error!(channel = %shared.channel, error = %e, "could not resubscribe; trying again");
                tokio::time::sleep(RESUBSCRIBE_RETRY).await;
            }
        }
    }
}
