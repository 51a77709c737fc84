//! Presence: which server holds a user, as one Redis key per user.
//!
//! `{prefix}presence:{user}` holds the id of the server the user is logged
//! in on, with a TTL. Redis makes every step atomic across servers without
//! locks of ours:
//!
//! - a claim is `SET key server NX PX ttl`: of two servers that race for the
//!   same user, Redis lets exactly one write the key;
//! - a release and a renewal are Lua scripts that read the key and act
//!   only if it names this server, so a server never removes or extends
//!   another server's user, even one that logged in there a moment ago;
//! - `online` and the lookup before a publish are one `MGET`.
//!
//! The TTL is what makes a killed server's users go offline by themselves;
//! a live server keeps its users by renewing every third of the TTL, in
//! batches (one script call per thousand users, all batches pipelined).
//! Renewal also writes keys that are missing, so a Redis that restarted
//! empty learns again who is where within a third of the TTL.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use chat_proto::UserId;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions};
use futures::future::join_all;
use tokio::sync::RwLock;

use crate::config::RedisBusConfig;
use crate::error::RedisBusError;

/// Users per script call: large enough that renewing many users takes few
/// round trips, small enough that one call keeps Redis busy for about a
/// millisecond, not long enough to delay other servers' commands.
const BATCH: usize = 1000;

/// Deletes each key (`KEYS`) that names this server (`ARGV[1]`); returns
/// how many it deleted.
const RELEASE_SCRIPT: &str = r"
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    released = released + redis.call('DEL', key)
  end
end
return released
";

/// Gives each key (`KEYS`) that names this server (`ARGV[1]`) or nobody a
/// fresh TTL of `ARGV[2]` ms. Returns `i` for the i-th key (from 1) if it
/// was missing and now names this server again, `-i` if another server
/// holds it; keys that were simply renewed are not listed.
const RENEW_SCRIPT: &str = r"
local changed = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    changed[#changed + 1] = i
  else
    changed[#changed + 1] = -i
  end
end
return changed
";

/// What one renewal found besides keys that were simply extended.
#[derive(Debug, Default)]
pub(crate) struct Renewal {
    /// Users whose key had vanished (Redis restarted or was flushed) and
    /// names this server again.
    pub(crate) restored: Vec<UserId>,
    /// Users whose key names another server: logged in twice, after Redis
    /// lost this server's claim.
    pub(crate) taken: Vec<UserId>,
    /// Batches that failed, and the last error, while Redis is away.
    pub(crate) failed: usize,
    pub(crate) last_error: Option<RedisBusError>,
}

/// This server's side of presence: the users it holds, and the commands
/// that keep Redis in step with them.
pub(crate) struct Presence {
    config: RedisBusConfig,
    held: Mutex<HashSet<UserId>>,
    /// Releases hold it shared, a renewal exclusively: otherwise a renewal
    /// that read the held users just before a release could write the
    /// released key again after the release deleted it, and the user would
    /// look online (and be unable to log in elsewhere) for a whole TTL.
    gate: RwLock<()>,
}

impl Presence {
    pub(crate) fn new(config: RedisBusConfig) -> Presence {
        Presence {
            config,
            held: Mutex::new(HashSet::new()),
            gate: RwLock::new(()),
        }
    }

    /// Claims `user` for this server unless some server holds it.
    pub(crate) async fn claim(&self, client: &Client, user: UserId) -> Result<bool, RedisBusError> {
        let written: Option<String> = client
            .set(
                self.config.presence_key(user),
                self.config.server_id.as_str(),
                Some(Expiration::PX(self.config.ttl_millis())),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if written.is_some() {
            self.held().insert(user);
        }
        Ok(written.is_some())
    }

    /// Stops renewing `user` and deletes its key if it names this server.
    ///
    /// The user is forgotten even if Redis fails, so that its key then
    /// expires by itself instead of being renewed for a user who left.
    pub(crate) async fn release(&self, client: &Client, user: UserId) -> Result<(), RedisBusError> {
        let _gate = self.gate.read().await;
        self.held().remove(&user);
        let _released: i64 = client
            .eval(
                RELEASE_SCRIPT,
                vec![self.config.presence_key(user)],
                vec![self.config.server_id.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Releases every user this server holds; how many keys it deleted.
    pub(crate) async fn release_all(&self, client: &Client) -> Result<usize, RedisBusError> {
        let _gate = self.gate.write().await;
        let users: Vec<UserId> = self.held().drain().collect();
        let calls = users.chunks(BATCH).map(|batch| {
            client.eval::<i64, _, _, _>(
                RELEASE_SCRIPT,
                self.keys(batch),
                vec![self.config.server_id.as_str()],
            )
        });
        let mut released = 0;
        for result in join_all(calls).await {
            released += usize::try_from(result?).unwrap_or(0);
        }
        Ok(released)
    }

    /// The server that holds each user, if any, in the order asked.
    pub(crate) async fn holders(
        &self,
        client: &Client,
        users: &[UserId],
    ) -> Result<Vec<Option<String>>, RedisBusError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let holders: Vec<Option<String>> = client.mget(self.keys(users)).await?;
        if holders.len() != users.len() {
            // A reply of the wrong length would pair users with the wrong
            // servers: refuse it rather than misroute.
            return Err(RedisBusError::Reply(format!(
                "MGET of {} keys answered {} values",
                users.len(),
                holders.len()
            )));
        }
        Ok(holders)
    }

    /// Renews every user this server holds.
    pub(crate) async fn renew(&self, client: &Client) -> Renewal {
        let _gate = self.gate.write().await;
        let users: Vec<UserId> = self.held().iter().copied().collect();
        let ttl = self.config.ttl_millis().to_string();
        let calls = users.chunks(BATCH).map(|batch| {
            let args = vec![self.config.server_id.clone(), ttl.clone()];
            client.eval::<Vec<i64>, _, _, _>(RENEW_SCRIPT, self.keys(batch), args)
        });
        let results = join_all(calls).await;

        let mut renewal = Renewal::default();
        for (batch, result) in users.chunks(BATCH).zip(results) {
            match result {
                Ok(changed) => sort_changes(batch, &changed, &mut renewal),
                Err(e) => {
                    renewal.failed += 1;
                    renewal.last_error = Some(e.into());
                }
            }
        }
        renewal
    }

    /// The users this server holds now.
    pub(crate) fn users(&self) -> Vec<UserId> {
        self.held().iter().copied().collect()
    }

    fn keys(&self, users: &[UserId]) -> Vec<String> {
        users.iter().map(|u| self.config.presence_key(*u)).collect()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        // Every change is one insert, remove or drain: a panic elsewhere
        // cannot leave the set half-changed.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Turns the renewal script's signed positions into users.
fn sort_changes(batch: &[UserId], changed: &[i64], renewal: &mut Renewal) {
    for &code in changed {
        let position = usize::try_from(code.unsigned_abs()).ok();
        let Some(&user) = position
            .and_then(|p| p.checked_sub(1))
            .and_then(|i| batch.get(i))
        else {
            continue;
        };
        if code > 0 {
            renewal.restored.push(user);
        } else {
            renewal.taken.push(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_codes_name_the_users_of_their_batch() {
        let mut renewal = Renewal::default();
        sort_changes(&[10, 20, 30], &[1, -3, 0, 4, -4], &mut renewal);
        assert_eq!(renewal.restored, vec![10]);
        assert_eq!(renewal.taken, vec![30]);
    }
}
