//! Publishing: notices queued by every `publish` call go out in batches.
//!
//! One task, the *publisher*, takes the notices that callers queue and
//! sends them in turn. While one batch is on its way (an `MGET` for the
//! recipients' presence, then one PUBLISH per server) the next notices
//! wait in the queue, and the next batch takes all of them at once: one
//! `MGET` for all their recipients, and still one PUBLISH per server, whose
//! payload is the list of the batch's notices for that server, in the
//! order they were queued. A lone notice goes out at once, as before; under
//! load, Redis commands per notice fall as the load rises, where they used
//! to be two or more per notice whatever the load. Measured in
//! `docs/benchmarks.md`.
//!
//! Order: batches go out one after another on the one command connection,
//! and a server's payload keeps the order of the queue, so notices from one
//! caller reach a server in the order that caller published them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chat_proto::UserId;
use fred::interfaces::PubsubInterface;
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::envelope::{EncodedNotice, ServerPayload};
use crate::error::RedisBusError;
use crate::Shared;

/// Most notices in one batch: bounds a payload and the time a batch takes.
const MAX_BATCH: usize = 128;

/// A notice waiting to be published, and who waits for the result.
pub(crate) struct Job {
    pub(crate) users: Vec<UserId>,
    pub(crate) notice: EncodedNotice,
    /// The users no live server took, or why the batch failed.
    pub(crate) reply: oneshot::Sender<Result<Vec<UserId>, RedisBusError>>,
}

/// Publishes queued notices, a batch at a time, until every sender is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        publish_batch(&shared, &mut batch).await;
    }
    debug!("publisher stopped");
}

async fn publish_batch(shared: &Shared, batch: &mut Vec<Job>) {
    let mut users: Vec<UserId> = batch.iter().flat_map(|j| j.users.iter().copied()).collect();
    users.sort_unstable();
    users.dedup();
    let holders = match shared.presence.holders(&shared.commands, &users).await {
        Ok(holders) => holders,
        Err(e) => {
            let e = Arc::new(e);
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(RedisBusError::Batch(e.clone())));
            }
            return;
        }
    };
    let holder: HashMap<UserId, Option<String>> = users.into_iter().zip(holders).collect();

    // Each job's users, sorted out by the server that holds them.
    let mut unreached: Vec<Vec<UserId>> = Vec::with_capacity(batch.len());
    let mut servers: HashMap<&str, ServerPayload> = HashMap::new();
    for (index, job) in batch.iter().enumerate() {
        let mut lost = Vec::new();
        let mut by_server: HashMap<&str, Vec<UserId>> = HashMap::new();
        for &user in &job.users {
            match holder.get(&user).and_then(Option::as_deref) {
                Some(server) => by_server.entry(server).or_default().push(user),
                None => lost.push(user),
            }
        }
        for (server, users) in by_server {
            servers
                .entry(server)
                .or_default()
                .push(index, users, &job.notice);
        }
        unreached.push(lost);
    }

    let mut sends = Vec::with_capacity(servers.len());
    let mut parts = Vec::with_capacity(servers.len());
    for (server, payload) in servers {
        let (body, members) = payload.finish();
        let channel = shared.config.server_channel(server);
        sends.push(shared.commands.publish::<u64, _, _>(channel, body));
        parts.push((server, members));
    }
    shared
        .counters
        .publishes
        .fetch_add(sends.len() as u64, Ordering::Relaxed);

    // Issued together, the PUBLISHes share round trips on the one
    // connection instead of waiting for each other.
    for ((server, members), result) in parts.into_iter().zip(join_all(sends).await) {
        let gone = match result {
            Ok(0) => {
                debug!(server, "no subscriber: that server is gone");
                true
            }
            Ok(1) => false,
            Ok(n) => {
                warn!(
                    server,
                    subscribers = n,
                    "several running servers share one server id: their users may get messages twice"
                );
                false
            }
            Err(e) => {
                warn!(server, error = %e, "PUBLISH failed: its users count as unreached");
                true
            }
        };
        if gone {
            for (index, users) in members {
                unreached[index].extend(users);
            }
        }
    }
    for (job, unreached) in batch.drain(..).zip(unreached) {
        // The caller may have given up (its connection closed): nothing
        // to tell it then.
        let _ = job.reply.send(Ok(unreached));
    }
}
