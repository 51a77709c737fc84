//! A store that lives in the process's memory.
//!
//! A server embedded in a test, an example or a small tool needs the chat
//! rules without a database: [`MemoryStore`] keeps the same data as the SQL
//! stores in plain collections behind one lock, and passes the same
//! conformance suite, so the service cannot tell it from them until the
//! process ends and the data goes with it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chat_proto::{GroupId, Role, UserId};

use crate::store::{
    GroupRecord, GroupWithMembers, MemberRecord, OfflineRecord, Store, StoreError, UserRecord,
};

/// A [`Store`] kept entirely in memory.
///
/// **It keeps nothing across restarts**: users, friendships, groups and
/// offline messages are gone when the store is dropped or the process
/// exits, and nothing is ever removed while it runs except offline
/// messages that were handed over. Use it to embed the service in tests,
/// examples and short-lived tools; a server that users come back to needs
/// a store on disk or in a database.
///
/// It behaves as the SQL stores do: ids are assigned from 1 and never
/// reused, names are unique byte for byte (`alice` and `Alice` are two
/// users), friendships are mutual, a group's creator is its member from the
/// moment the group exists, and offline messages come back oldest first
/// until deleted by id. Like a database with foreign keys, it refuses to
/// refer to a user or group that does not exist, with
/// [`StoreError::Backend`].
///
/// Every call takes one lock for its whole step, so each is atomic and all
/// of them are serialized; no call waits on anything else while holding it.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store: no users, no groups, no messages.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Every method checks everything that can fail before it changes
        // anything, so a panic while the lock was held cannot have left a
        // step half done, and the data is still sound to use.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryStore {
    // Sizes only: the tables hold password hashes and message texts, which
    // have no place in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = self.tables();
        f.debug_struct("MemoryStore")
            .field("users", &tables.users.len())
            .field("groups", &tables.groups.len())
            .field(
                "offline",
                &tables.offline.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError> {
        let mut tables = self.tables();
        if tables.user_names.contains(name) {
            return Err(StoreError::NameTaken);
        }
        let id = tables.users.len() as UserId + 1;
        tables.user_names.insert(name.to_owned());
        tables.users.insert(
            id,
            UserRecord {
                id,
                name: name.to_owned(),
                password_hash: password_hash.to_owned(),
            },
        );
        Ok(id)
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.tables().users.get(&id).cloned())
    }

    async fn add_friendship(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        tables.check_user(a)?;
        tables.check_user(b)?;
        // Both directions are always written together, so one tells.
        let added = tables.friends.entry(a).or_default().insert(b);
        tables.friends.entry(b).or_default().insert(a);
        Ok(added)
    }

    async fn friends(&self, user: UserId) -> Result<Vec<(UserId, String)>, StoreError> {
        let tables = self.tables();
        let Some(friends) = tables.friends.get(&user) else {
            return Ok(Vec::new());
        };
        Ok(friends
            .iter()
            .map(|id| (*id, tables.user_name(*id).to_owned()))
            .collect())
    }

    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
    ) -> Result<GroupId, StoreError> {
        let mut tables = self.tables();
        tables.check_user(creator)?;
        if tables.group_names.contains(name) {
            return Err(StoreError::NameTaken);
        }
        let id = tables.groups.len() as GroupId + 1;
        tables.group_names.insert(name.to_owned());
        tables.groups.insert(
            id,
            GroupRecord {
                id,
                name: name.to_owned(),
                desc: desc.to_owned(),
            },
        );
        tables.join(id, creator, Role::Creator);
        Ok(id)
    }

    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.tables().groups.get(&id).cloned())
    }

    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        role: Role,
    ) -> Result<bool, StoreError> {
        let mut tables = self.tables();
        tables.check_group(group)?;
        tables.check_user(user)?;
        Ok(tables.join(group, user, role))
    }

    async fn members(&self, group: GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        Ok(self.tables().members(group))
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<GroupWithMembers>, StoreError> {
        let tables = self.tables();
        let Some(groups) = tables.groups_of.get(&user) else {
            return Ok(Vec::new());
        };
        Ok(groups
            .iter()
            .filter_map(|id| {
                Some(GroupWithMembers {
                    group: tables.groups.get(id)?.clone(),
                    members: tables.members(*id),
                })
            })
            .collect())
    }

    async fn store_offline(&self, users: &[UserId], payload: &str) -> Result<(), StoreError> {
        let mut tables = self.tables();
        for user in users {
            tables.check_user(*user)?;
        }
        // One copy of the text for all recipients: a group message to many
        // offline members would otherwise be copied once for each.
        let payload: Arc<str> = Arc::from(payload);
        for user in users {
            tables.last_offline += 1;
            let id = tables.last_offline;
            tables
                .offline
                .entry(*user)
                .or_default()
                .insert(id, payload.clone());
        }
        Ok(())
    }

    async fn offline(&self, user: UserId, limit: usize) -> Result<Vec<OfflineRecord>, StoreError> {
        let tables = self.tables();
        let Some(messages) = tables.offline.get(&user) else {
            return Ok(Vec::new());
        };
        Ok(messages
            .iter()
            .take(limit)
            .map(|(id, payload)| OfflineRecord {
                id: *id,
                payload: payload.to_string(),
            })
            .collect())
    }

    async fn delete_offline(&self, user: UserId, ids: &[i64]) -> Result<(), StoreError> {
        let mut tables = self.tables();
        let Some(messages) = tables.offline.get_mut(&user) else {
            return Ok(());
        };
        for id in ids {
            messages.remove(id);
        }
        if messages.is_empty() {
            tables.offline.remove(&user);
        }
        Ok(())
    }
}

/// The data of a [`MemoryStore`], shaped after the SQL tables, with the
/// indexes that make each trait method a lookup rather than a scan.
#[derive(Default)]
struct Tables {
    /// Users by id; ids are dense from 1 because users are never removed.
    users: HashMap<UserId, UserRecord>,
    user_names: HashSet<String>,
    /// Each user's friends, both directions stored, ordered by id.
    friends: HashMap<UserId, BTreeSet<UserId>>,
    /// Groups by id, dense from 1 like users.
    groups: HashMap<GroupId, GroupRecord>,
    group_names: HashSet<String>,
    /// Each group's members with their roles, ordered by user id.
    members: HashMap<GroupId, BTreeMap<UserId, Role>>,
    /// The reverse of `members`, for `groups_of`.
    groups_of: HashMap<UserId, BTreeSet<GroupId>>,
    /// Each user's offline messages by id, oldest first.
    offline: HashMap<UserId, BTreeMap<i64, Arc<str>>>,
    /// The last offline message id given; one counter for every user, so
    /// an id is never given twice, even after the newest is deleted.
    last_offline: i64,
}

impl Tables {
    fn check_user(&self, id: UserId) -> Result<(), StoreError> {
        if self.users.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::backend(Missing { kind: "user", id }))
        }
    }

    fn check_group(&self, id: GroupId) -> Result<(), StoreError> {
        if self.groups.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::backend(Missing { kind: "group", id }))
        }
    }

    /// Makes `user` a member of `group`; `false` if they already were, in
    /// which case their role stays what it was.
    fn join(&mut self, group: GroupId, user: UserId, role: Role) -> bool {
        let members = self.members.entry(group).or_default();
        if members.contains_key(&user) {
            return false;
        }
        members.insert(user, role);
        self.groups_of.entry(user).or_default().insert(group);
        true
    }

    fn members(&self, group: GroupId) -> Vec<MemberRecord> {
        let Some(members) = self.members.get(&group) else {
            return Vec::new();
        };
        members
            .iter()
            .map(|(id, role)| MemberRecord {
                id: *id,
                name: self.user_name(*id).to_owned(),
                role: *role,
            })
            .collect()
    }

    /// The name of a user that another table refers to.
    fn user_name(&self, id: UserId) -> &str {
        // Every write checks that the users it refers to exist, and users
        // are never removed, so a reference never dangles.
        &self
            .users
            .get(&id)
            .expect("tables refer only to existing users")
            .name
    }
}

/// A write referred to a user or group that does not exist: what a foreign
/// key refuses in the SQL stores. The service checks first, so only a
/// caller that breaks its rules sees this.
#[derive(Debug)]
struct Missing {
    kind: &'static str,
    id: i64,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {} with id {}", self.kind, self.id)
    }
}

impl std::error::Error for Missing {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        crate::store_suite::run_all(|| async { MemoryStore::new() }).await;
    }

    #[tokio::test]
    async fn ids_start_at_one() {
        let store = MemoryStore::new();
        let alice = store.create_user("alice", "h").await.expect("creates");
        let group = store.create_group(alice, "g", "").await.expect("creates");
        store.store_offline(&[alice], "m").await.expect("stores");
        let offline = store.offline(alice, usize::MAX).await.expect("reads");
        assert_eq!((alice, group, offline[0].id), (1, 1, 1));
    }

    #[tokio::test]
    async fn refuses_references_to_what_does_not_exist() {
        let store = MemoryStore::new();
        let alice = store.create_user("alice", "h").await.expect("creates");
        let group = store.create_group(alice, "g", "").await.expect("creates");
        let nobody = alice + 1;

        assert!(backend(store.add_friendship(alice, nobody).await));
        assert!(backend(store.create_group(nobody, "h", "").await));
        assert!(backend(store.add_member(group, nobody, Role::Normal).await));
        assert!(backend(
            store.add_member(group + 1, alice, Role::Normal).await
        ));
        assert!(backend(store.store_offline(&[alice, nobody], "m").await));

        // A refused call changed nothing, not even for the users that exist.
        assert_eq!(store.friends(alice).await.expect("reads"), vec![]);
        assert_eq!(
            store.offline(alice, usize::MAX).await.expect("reads"),
            vec![]
        );
        assert!(store.create_group(alice, "h", "").await.is_ok());
    }

    fn backend<T>(result: Result<T, StoreError>) -> bool {
        matches!(result, Err(StoreError::Backend(_)))
    }

    #[tokio::test]
    async fn debug_shows_sizes_not_secrets() {
        let store = MemoryStore::new();
        store
            .create_user("alice", "$argon2id$secret")
            .await
            .expect("creates");
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("users: 1"), "{shown}");
    }
}
