//! Keeping this server's presence alive, and noticing when Redis comes
//! back.
//!
//! Renewal runs every third of the presence TTL, so a key survives two
//! failed renewals in a row before it expires. When the command connection
//! reconnects, renewal runs at once instead: if Redis restarted empty, the
//! users of this server are online again within a round trip rather than a
//! third of the TTL, and the users whose keys had vanished are woken,
//! because senders that found them offline meanwhile stored their messages
//! without anyone to wake.

use std::sync::Arc;

use fred::interfaces::EventInterface;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::Shared;

/// Renews presence every third of the TTL, and whenever asked.
pub(crate) async fn renew_presence(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.config.presence_ttl / 3);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.renew_now.notified() => {}
        }
        renew_once(&shared).await;
    }
}

async fn renew_once(shared: &Shared) {
    let renewal = shared.presence.renew(&shared.commands).await;
    if let Some(e) = &renewal.last_error {
        warn!(
            failed_batches = renewal.failed,
            error = %e,
            "could not renew presence; users go offline if Redis stays away for the TTL"
        );
    }
    if !renewal.taken.is_empty() {
        warn!(
            users = ?renewal.taken,
            "another server holds the presence of users logged in here: logged in twice after Redis lost this server's claim"
        );
    }
    if !renewal.restored.is_empty() {
        info!(
            users = renewal.restored.len(),
            "restored presence that Redis had lost"
        );
        shared.wake(renewal.restored);
    }
    debug!("presence renewed");
}

/// Logs the command connection's faults and renews presence after every
/// reconnect.
pub(crate) async fn watch_commands(shared: Arc<Shared>) {
    let mut reconnects = shared.commands.reconnect_rx();
    let mut errors = shared.commands.error_rx();
    // Reconnect attempts fail as often as the backoff allows while Redis
    // is away: warn once per outage, not at every attempt.
    let mut down = false;
    loop {
        tokio::select! {
            event = reconnects.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    down = false;
                    info!(connection = "commands", "reconnected to Redis");
                    shared.renew_now.notify_one();
                }
                Err(RecvError::Closed) => break,
            },
            event = errors.recv() => match event {
                Ok((e, _)) => {
                    if down {
                        debug!(connection = "commands", error = %e, "still no Redis");
                    } else {
                        warn!(connection = "commands", error = %e, "Redis connection failed; reconnecting");
                    }
                    down = true;
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
    }
}
