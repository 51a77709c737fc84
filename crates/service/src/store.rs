//! The storage the chat rules need, as a trait.
//!
//! The service owns the rules and a store owns the data, so that the same
//! rules run over an embedded file, a database shared by a cluster, or
//! plain memory. The contract every store keeps is on [`Store`]; the
//! conformance suite (`store_suite`) checks it.

use async_trait::async_trait;
use chat_proto::{GroupId, Role, UserId};

/// A registered user as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The id the store gave at registration.
    pub id: UserId,
    /// The name as registered, byte for byte.
    pub name: String,
    /// A PHC-format password hash (Argon2), never the password.
    pub password_hash: String,
}

/// A group's own fields, without its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The id the store gave at creation.
    pub id: GroupId,
    /// The group's unique name, byte for byte.
    pub name: String,
    /// The description given at creation; may be empty.
    pub desc: String,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member's user id.
    pub id: UserId,
    /// The member's user name.
    pub name: String,
    /// Whether the member created the group or joined it.
    pub role: Role,
}

/// A group with its members, ordered by user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupWithMembers {
    /// The group's own fields.
    pub group: GroupRecord,
    /// Every member, ordered by user id.
    pub members: Vec<MemberRecord>,
}

/// A message kept for a user who was offline, as [`Store::offline`]
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineRecord {
    /// Orders delivery and names the message for
    /// [`Store::delete_offline`]: a message stored later has a larger id.
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
    /// Wraps any backend error as [`StoreError::Backend`], for use with
    /// `map_err`.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(err))
    }
}

/// Where the chat's data lives: users, friendships, groups, memberships
/// and offline messages.
///
/// A store knows nothing of sessions or presence: whether a user is online
/// is the [`Bus`](crate::Bus)'s business, so a login or a logout never
/// writes to the store. What the service relies on, beyond the signatures:
///
/// - **Each method is one atomic step.** One that writes several rows
///   (a group with its creator's membership, a message for many users)
///   writes all of them or none, and one that reads several tables reads
///   them as of one moment.
/// - **Ids are given by the store**, are positive, and are never given
///   twice, even after what they named is gone.
/// - **Names are compared byte for byte**: `alice`, `Alice` and `alice `
///   are three users. Every string, the password hash and the offline
///   payload included, comes back exactly as it was written, whatever it
///   contains (quotes, SQL, any script, emoji); an SQL store binds
///   parameters and never builds statements from text.
/// - **Errors**: a taken name is [`StoreError::NameTaken`]; anything else
///   that fails is [`StoreError::Backend`], never a panic. A lookup of
///   something that does not exist is not an error but `None` or an empty
///   list.
///
/// The service calls the writing methods only with users and groups that
/// exist; a store may refuse anything else with [`StoreError::Backend`], as
/// a foreign key would.
///
/// Implementations run the conformance suite in their tests: the module
/// `store_suite`, compiled with the `store-suite` feature.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a user with the given name and password hash, and returns
    /// the new id; [`StoreError::NameTaken`] if another user has the name.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError>;

    /// The user with this id; `None` for any id the store never gave,
    /// zero and negative ones included.
    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Makes `a` and `b` friends of each other, both directions at once.
    /// `true` if they were not friends before, `false` if nothing changed
    /// (whichever of them asked first).
    async fn add_friendship(&self, a: UserId, b: UserId) -> Result<bool, StoreError>;

    /// The user's friends as `(id, name)`, ordered by id; empty for a user
    /// without friends or one that does not exist.
    async fn friends(&self, user: UserId) -> Result<Vec<(UserId, String)>, StoreError>;

    /// Creates a group and makes `creator` its member with
    /// [`Role::Creator`], in one step: no one ever sees the group without
    /// its creator. Returns the new id; [`StoreError::NameTaken`] if another
    /// group has the name, and then nothing is written. Group names are
    /// apart from user names: a group may be named like a user.
    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
    ) -> Result<GroupId, StoreError>;

    /// The group with this id, if it exists.
    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError>;

    /// Adds `user` to `group` with `role`. `false` if they already were a
    /// member, and then their role stays what it was.
    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        role: Role,
    ) -> Result<bool, StoreError>;

    /// The group's members, ordered by user id; empty for a group that
    /// does not exist.
    async fn members(&self, group: GroupId) -> Result<Vec<MemberRecord>, StoreError>;

    /// The ids of the group's members, ordered; empty for a group that does
    /// not exist. Every group message reads it, so a store should answer it
    /// without reading the users' names, as `members` must.
    async fn member_ids(&self, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        Ok(self
            .members(group)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }

    /// Every group the user is a member of, ordered by group id, each with
    /// all its members ordered by user id.
    async fn groups_of(&self, user: UserId) -> Result<Vec<GroupWithMembers>, StoreError>;

    /// Keeps `payload` as one message for each of `users`, all or none.
    /// Each message gets an id larger than any of that user's messages ever
    /// had, deleted ones included.
    /// No users is not an error and stores nothing. Payloads may be large
    /// (hundreds of kilobytes) and must come back unchanged.
    async fn store_offline(&self, users: &[UserId], payload: &str) -> Result<(), StoreError>;

    /// The oldest `limit` messages kept for `user`, oldest first (by
    /// growing id). Reading removes nothing: the service deletes what it
    /// handed over, once it has. The limit keeps a long absence from
    /// loading a whole backlog into memory at once.
    async fn offline(&self, user: UserId, limit: usize) -> Result<Vec<OfflineRecord>, StoreError>;

    /// Removes those of `user`'s messages whose ids are given, and nothing
    /// else: a message stored after the ids were read survives, and ids
    /// that are unknown, already deleted or another user's are ignored.
    async fn delete_offline(&self, user: UserId, ids: &[i64]) -> Result<(), StoreError>;

    /// Flushes and closes connections at shutdown, after the last call.
    /// Does nothing by default, for stores with nothing to flush.
    async fn close(&self) {}
}
