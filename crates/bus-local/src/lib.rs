//! The in-process bus: a single server's presence, kept in memory.
//!
//! A server alone has no one to pass notices to, so [`LocalBus`] only
//! answers who is online and refuses a second login; every notice it is
//! asked to publish comes back as unreached, and the service keeps chat
//! messages offline. It is the default, so that a server runs with nothing
//! else installed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chat_proto::UserId;
use chat_service::{Bus, BusError, Inbound, Notice};

/// Presence for one server, in memory.
#[derive(Debug, Default)]
pub struct LocalBus {
    online: Mutex<HashSet<UserId>>,
}

impl LocalBus {
    /// An empty bus: nobody online.
    pub fn new() -> LocalBus {
        LocalBus::default()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        // Every update is a single insert or remove, so a panic elsewhere
        // cannot leave the set half-changed.
        self.online.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn start(&self, _inbound: Arc<dyn Inbound>) -> Result<(), BusError> {
        Ok(())
    }

    async fn claim(&self, user: UserId) -> Result<bool, BusError> {
        Ok(self.users().insert(user))
    }

    async fn release(&self, user: UserId) -> Result<(), BusError> {
        self.users().remove(&user);
        Ok(())
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, BusError> {
        let online = self.users();
        Ok(users.iter().map(|u| online.contains(u)).collect())
    }

    async fn publish(&self, users: &[UserId], _notice: &Notice) -> Result<Vec<UserId>, BusError> {
        Ok(users.to_vec())
    }

    async fn shutdown(&self) {
        self.users().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_user_is_claimed_once_until_released() {
        let bus = LocalBus::new();
        assert!(bus.claim(1).await.unwrap());
        assert!(!bus.claim(1).await.unwrap());
        assert_eq!(bus.online(&[1, 2]).await.unwrap(), vec![true, false]);
        bus.release(1).await.unwrap();
        assert!(bus.claim(1).await.unwrap());
        assert_eq!(
            bus.publish(&[1, 2], &Notice::Wake).await.unwrap(),
            vec![1, 2]
        );
        bus.shutdown().await;
        assert_eq!(bus.online(&[1]).await.unwrap(), vec![false]);
    }
}
