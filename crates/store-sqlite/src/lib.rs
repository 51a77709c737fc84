//! The chat store in an embedded SQLite database.
//!
//! [`SqliteStore`] implements [`chat_service::Store`] on one local file (or
//! in memory), so a single node runs without a database server. The tables
//! mirror the MariaDB ones of `docs/architecture.md`; see [`schema`] for
//! how they are created and versioned.
//!
//! SQLite's API blocks, and a blocked runtime worker stalls every session it
//! serves. So the connection lives on one dedicated thread: each store call
//! sends that thread a closure and awaits the answer on a oneshot channel.
//! One connection also serializes the writes, which is what SQLite does
//! anyway; WAL mode lets other processes read the file meanwhile.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chat_service::StoreError> {
//! use chat_service::Store;
//! use chat_store_sqlite::SqliteStore;
//!
//! let store = SqliteStore::open("chat.db")?;
//! let id = store.create_user("张三", "$argon2id$...").await?;
//! assert_eq!(store.user(id).await?.map(|u| u.name), Some("张三".to_owned()));
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! Names compare byte for byte (SQLite's `BINARY` collation): `alice`,
//! `Alice` and `alice ` are three different names.

pub mod schema;
mod worker;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::{GroupId, Role, UserId};
use chat_service::{
    GroupRecord, GroupWithMembers, MemberRecord, OfflineRecord, Store, StoreError, UserRecord,
};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::worker::Worker;

/// How long a statement waits for another process's lock on the file
/// before it fails: long enough for a checkpoint, short enough that a
/// client gets an answer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements kept prepared: every statement of this crate fits.
const STATEMENT_CACHE: usize = 32;

/// A [`Store`] on an SQLite database, served by its own thread.
///
/// Dropping the store stops the thread once queued calls are done; use
/// [`close`](SqliteStore::close) to wait for that and see any error.
#[derive(Debug)]
pub struct SqliteStore {
    worker: Worker,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` and brings its schema
    /// up to date.
    ///
    /// This blocks while the file is opened and migrated, which is meant to
    /// happen once, at start-up.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(StoreError::backend)?;
        let store = SqliteStore::start(conn)?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(store)
    }

    /// A store in memory, empty, gone when dropped: for tests and trials.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(StoreError::backend)?;
        SqliteStore::start(conn)
    }

    /// Finishes the queued calls, closes the database and stops the thread.
    pub async fn close(self) -> Result<(), StoreError> {
        self.worker.close().await
    }

    fn start(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        configure(&conn).map_err(StoreError::backend)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            worker: Worker::spawn(conn)?,
        })
    }

    /// Runs `job` on the store's thread and maps its error.
    async fn call<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.worker
            .run(move |conn| job(conn).map_err(store_error))
            .await
    }
}

/// Settings of the connection that the schema does not record.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // An in-memory database answers "memory" and keeps it: nothing to do.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    tracing::debug!(%mode, "SQLite journal mode");

    // In WAL mode NORMAL loses no committed data on a crash of the process,
    // only the last transactions on a power cut, and saves an fsync per
    // commit.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    /// Moves the write-ahead log into the database file, so a clean stop
    /// leaves one self-contained file behind.
    async fn close(&self) {
        let checkpoint = self
            .call(|conn| conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
            .await;
        if let Err(e) = checkpoint {
            tracing::warn!(error = %e, "could not checkpoint the SQLite log at shutdown");
        }
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.call(move |conn| {
            let sql = "INSERT INTO user (name, password_hash) VALUES (?1, ?2)";
            conn.prepare_cached(sql)?.insert(params![name, hash])
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.call(move |conn| {
            let sql = "SELECT id, name, password_hash FROM user WHERE id = ?1";
            let mut stmt = conn.prepare_cached(sql)?;
            stmt.query_row([id], |row| {
                Ok(UserRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    password_hash: row.get(2)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn add_friendship(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        self.call(move |conn| {
            // Both directions in one statement: a friendship is never half
            // written, and an existing one inserts nothing.
            let sql = "INSERT INTO friend (userid, friendid) VALUES (?1, ?2), (?2, ?1) \
                       ON CONFLICT DO NOTHING";
            let added = conn.prepare_cached(sql)?.execute([a, b])?;
            Ok(added > 0)
        })
        .await
    }

    async fn friends(&self, user: UserId) -> Result<Vec<(UserId, String)>, StoreError> {
        self.call(move |conn| {
            let sql = "SELECT u.id, u.name FROM friend f JOIN user u ON u.id = f.friendid \
                       WHERE f.userid = ?1 ORDER BY u.id";
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([user], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
    ) -> Result<GroupId, StoreError> {
        let (name, desc) = (name.to_owned(), desc.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sql = "INSERT INTO allgroup (groupname, groupdesc) VALUES (?1, ?2)";
            let group = tx.prepare_cached(sql)?.insert(params![name, desc])?;
            let sql = "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?1, ?2, ?3)";
            tx.prepare_cached(sql)?
                .execute(params![group, creator, Role::Creator.as_str()])?;
            tx.commit()?;
            Ok(group)
        })
        .await
    }

    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.call(move |conn| {
            let sql = "SELECT id, groupname, groupdesc FROM allgroup WHERE id = ?1";
            let mut stmt = conn.prepare_cached(sql)?;
            stmt.query_row([id], |row| {
                Ok(GroupRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    desc: row.get(2)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        role: Role,
    ) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let sql = "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?1, ?2, ?3) \
                       ON CONFLICT DO NOTHING";
            let added = conn
                .prepare_cached(sql)?
                .execute(params![group, user, role.as_str()])?;
            Ok(added > 0)
        })
        .await
    }

    async fn members(&self, group: GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.call(move |conn| {
            let sql = "SELECT u.id, u.name, gu.grouprole FROM groupuser gu \
                       JOIN user u ON u.id = gu.userid WHERE gu.groupid = ?1 ORDER BY u.id";
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([group], |row| member_at(row, 0))?;
            rows.collect()
        })
        .await
    }

    async fn member_ids(&self, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        self.call(move |conn| {
            let sql = "SELECT userid FROM groupuser WHERE groupid = ?1 ORDER BY userid";
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([group], |row| row.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<GroupWithMembers>, StoreError> {
        self.call(move |conn| {
            // One statement reads one snapshot: no group appears without the
            // members it had at that moment.
            let sql = "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, gu.grouprole \
                       FROM groupuser mine \
                       JOIN allgroup g ON g.id = mine.groupid \
                       JOIN groupuser gu ON gu.groupid = g.id \
                       JOIN user u ON u.id = gu.userid \
                       WHERE mine.userid = ?1 ORDER BY g.id, u.id";
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query([user])?;
            let mut groups: Vec<GroupWithMembers> = Vec::new();
            while let Some(row) = rows.next()? {
                let id: GroupId = row.get(0)?;
                let member = member_at(row, 3)?;
                match groups.last_mut() {
                    Some(last) if last.group.id == id => last.members.push(member),
                    _ => groups.push(GroupWithMembers {
                        group: GroupRecord {
                            id,
                            name: row.get(1)?,
                            desc: row.get(2)?,
                        },
                        members: vec![member],
                    }),
                }
            }
            Ok(groups)
        })
        .await
    }

    async fn store_offline(&self, users: &[UserId], payload: &str) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let (users, payload) = (users.to_vec(), payload.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let sql = "INSERT INTO offlinemessage (userid, payload) VALUES (?1, ?2)";
                let mut stmt = tx.prepare_cached(sql)?;
                for user in users {
                    stmt.execute(params![user, payload])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn offline(&self, user: UserId, limit: usize) -> Result<Vec<OfflineRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let sql =
                "SELECT id, payload FROM offlinemessage WHERE userid = ?1 ORDER BY id LIMIT ?2";
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([user, limit], |row| {
                Ok(OfflineRecord {
                    id: row.get(0)?,
                    payload: row.get(1)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn delete_offline(&self, user: UserId, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                // The user is part of the key so that ids of someone else's
                // messages delete nothing.
                let sql = "DELETE FROM offlinemessage WHERE userid = ?1 AND id = ?2";
                let mut stmt = tx.prepare_cached(sql)?;
                for id in ids {
                    stmt.execute([user, id])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

/// Reads a member from the columns `id, name, grouprole` starting at `at`.
fn member_at(row: &Row<'_>, at: usize) -> rusqlite::Result<MemberRecord> {
    let text: String = row.get(at + 2)?;
    let role = Role::parse(&text).ok_or_else(|| {
        let err = format!("unknown group role {text:?}");
        rusqlite::Error::FromSqlConversionFailure(at + 2, Type::Text, err.into())
    })?;
    Ok(MemberRecord {
        id: row.get(at)?,
        name: row.get(at + 1)?,
        role,
    })
}

/// Maps an SQLite error to the store's.
///
/// The only UNIQUE constraints of the schema are on user and group names
/// (pairs use primary keys and `ON CONFLICT DO NOTHING`), so a UNIQUE
/// violation always means the name is taken.
fn store_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_extended_error_code() {
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) => StoreError::NameTaken,
        _ => StoreError::backend(err),
    }
}
