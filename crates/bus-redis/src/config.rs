//! What a server must say about itself and its Redis to join the cluster.
//!
//! Every field has a default fit for one development machine, except
//! `server_id`: two servers that share an id would share a channel and
//! each other's users, so the id is always chosen by whoever runs the
//! server.

use std::time::Duration;

/// How a [`RedisBus`](crate::RedisBus) reaches Redis and names its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBusConfig {
    /// Where Redis listens, as `redis://host:port` (optionally with a
    /// password and database: `redis://:secret@host:port/2`).
    pub url: String,
    /// This server's name in the cluster: unique per running server. It is
    /// the value of the presence keys of the users this server holds and
    /// the last part of its channel's name.
    pub server_id: String,
    /// Put before every key and channel name, so that several clusters (or
    /// tests) share one Redis without seeing each other.
    pub prefix: String,
    /// How long a user stays online after their server stops renewing the
    /// claim, e.g. because it was killed. The claim is renewed every third
    /// of this time.
    pub presence_ttl: Duration,
    /// How long any Redis command may take before the bus gives up and
    /// reports an error. Short, so that logins and messages fail fast while
    /// Redis is down instead of hanging the clients that wait for them.
    pub command_timeout: Duration,
    /// How many notices received from Redis may wait for the chat service
    /// before newer ones are lost. The queue grows only as it fills, so a
    /// generous bound costs nothing while the service keeps up.
    pub inbound_queue: usize,
}

/// The prefix that production servers use.
pub const DEFAULT_PREFIX: &str = "chat:";
/// How long a killed server's users stay online.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How long a Redis command may take.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How many received notices may wait for the chat service.
pub const DEFAULT_INBOUND_QUEUE: usize = 65_536;

impl RedisBusConfig {
    /// A configuration with every default but the two things that cannot
    /// have one in a cluster: where Redis is and who this server is.
    pub fn new(url: impl Into<String>, server_id: impl Into<String>) -> RedisBusConfig {
        RedisBusConfig {
            url: url.into(),
            server_id: server_id.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            presence_ttl: DEFAULT_PRESENCE_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            inbound_queue: DEFAULT_INBOUND_QUEUE,
        }
    }

    /// Checks what Redis cannot check for us; the message says what to fix.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.server_id.is_empty() {
            return Err("the server id of the Redis bus is empty".to_owned());
        }
        if self.presence_ttl < Duration::from_millis(30) {
            return Err(format!(
                "the presence TTL {:?} is too short: it must allow a renewal every third of it",
                self.presence_ttl
            ));
        }
        if self.command_timeout.is_zero() {
            return Err("the Redis command timeout is zero".to_owned());
        }
        if self.inbound_queue == 0 {
            return Err("the inbound queue of the Redis bus has no room".to_owned());
        }
        Ok(())
    }

    /// Milliseconds of the presence TTL, as `SET … PX` takes them.
    pub(crate) fn ttl_millis(&self) -> i64 {
        i64::try_from(self.presence_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn presence_key(&self, user: chat_proto::UserId) -> String {
        format!("{}presence:{user}", self.prefix)
    }

    pub(crate) fn server_channel(&self, server_id: &str) -> String {
        format!("{}server:{server_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keys_and_channels_under_the_prefix() {
        let config = RedisBusConfig::new("redis://127.0.0.1:6379", "a");
        assert_eq!(config.presence_key(42), "chat:presence:42");
        assert_eq!(config.server_channel("b"), "chat:server:b");
        assert_eq!(config.ttl_millis(), 30_000);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn refuses_what_cannot_work() {
        let mut config = RedisBusConfig::new("redis://127.0.0.1:6379", "");
        assert!(config.validate().is_err());
        config.server_id = "a".to_owned();
        config.presence_ttl = Duration::from_millis(1);
        assert!(config.validate().is_err());
        config.presence_ttl = DEFAULT_PRESENCE_TTL;
        config.command_timeout = Duration::ZERO;
        assert!(config.validate().is_err());
    }
}
