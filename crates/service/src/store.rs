//! The storage the chat rules need, as a trait.
//!
//! A store keeps users, friendships, groups, memberships and offline
//! messages (the data model in `docs/architecture.md`). It knows nothing of
//! sessions or presence: whether a user is online is the bus's business,
//! so a login or logout never writes to the store.
//!
//! Implementations must use prepared statements with bound parameters only
//! and keep each method atomic: a method that writes several rows (creating
//! a group with its creator's membership) writes all of them or none.

use async_trait::async_trait;
use chat_proto::{GroupId, Role, UserId};

/// A registered user as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    /// A PHC-format password hash (Argon2), never the password.
    pub password_hash: String,
}

/// A group's own fields, without its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: UserId,
    pub name: String,
    pub role: Role,
}

/// A group with its members, ordered by user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupWithMembers {
    pub group: GroupRecord,
    pub members: Vec<MemberRecord>,
}

/// A message kept for a user who was offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineRecord {
    /// Orders delivery: a message stored later has a larger id.
    pub id: i64,
    /// The message as the service serialized it; opaque to the store.
    pub payload: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A user or group name that must be unique is taken.
    #[error("name is taken")]
    NameTaken,
    /// The backend failed (connection lost, disk full, timeout). The
    /// request may succeed if retried later.
    #[error("storage failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(err))
    }
}

/// Persistent chat data. Every method is one atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a user; [`StoreError::NameTaken`] if the name is in use.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError>;

    /// The user with this id, if any.
    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Makes `a` and `b` friends of each other. `false` if they already were.
    async fn add_friendship(&self, a: UserId, b: UserId) -> Result<bool, StoreError>;

    /// The user's friends as `(id, name)`, ordered by id.
    async fn friends(&self, user: UserId) -> Result<Vec<(UserId, String)>, StoreError>;

    /// Creates a group with `creator` as its member of role creator, in one
    /// transaction; [`StoreError::NameTaken`] if the name is in use.
    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
    ) -> Result<GroupId, StoreError>;

    /// The group with this id, if any.
    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError>;

    /// Adds `user` to `group` with `role`. `false` if already a member.
    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        role: Role,
    ) -> Result<bool, StoreError>;

    /// The group's members, ordered by user id.
    async fn members(&self, group: GroupId) -> Result<Vec<MemberRecord>, StoreError>;

    /// Every group the user is a member of, with all members, ordered by id.
    async fn groups_of(&self, user: UserId) -> Result<Vec<GroupWithMembers>, StoreError>;

    /// Keeps one message for each of `users`, in one transaction.
    async fn store_offline(&self, users: &[UserId], payload: &str) -> Result<(), StoreError>;

    /// The messages kept for `user`, oldest first, without removing them.
    async fn offline(&self, user: UserId) -> Result<Vec<OfflineRecord>, StoreError>;

    /// Removes the given messages of `user` (those that were handed over).
    async fn delete_offline(&self, user: UserId, ids: &[i64]) -> Result<(), StoreError>;

    /// Closes connections and flushes, at shutdown. Nothing by default.
    async fn close(&self) {}
}
