//! The tables of the embedded store and how a database file gets them.
//!
//! The tables mirror the MariaDB store's (`docs/architecture.md`, data
//! model). A file records the schema version it has in `PRAGMA
//! user_version`; opening a file applies the migrations it lacks, each in
//! its own transaction with the version bump, so a crash leaves the file at
//! one version or the next, never between. A file from a newer program is
//! refused rather than misread.
//!
//! Ids use `AUTOINCREMENT` so that an id is never given twice, even after
//! the newest row is deleted: a late deletion of handed-over offline
//! messages must not hit a newer one. Presence is not stored: it lives on
//! the bus.

use chat_service::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes a database from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the data model's five tables.
    "CREATE TABLE user (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         name          TEXT NOT NULL UNIQUE,
         password_hash TEXT NOT NULL,
         created_at    TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
     );
     CREATE TABLE friend (
         userid   INTEGER NOT NULL REFERENCES user (id),
         friendid INTEGER NOT NULL REFERENCES user (id),
         PRIMARY KEY (userid, friendid)
     ) WITHOUT ROWID;
     CREATE TABLE allgroup (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         groupname  TEXT NOT NULL UNIQUE,
         groupdesc  TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
     );
     CREATE TABLE groupuser (
         groupid   INTEGER NOT NULL REFERENCES allgroup (id),
         userid    INTEGER NOT NULL REFERENCES user (id),
         grouprole TEXT NOT NULL CHECK (grouprole IN ('creator', 'normal')),
         PRIMARY KEY (groupid, userid)
     ) WITHOUT ROWID;
     CREATE INDEX groupuser_by_user ON groupuser (userid);
     CREATE TABLE offlinemessage (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         userid     INTEGER NOT NULL REFERENCES user (id),
         payload    TEXT NOT NULL,
         created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
     );
     CREATE INDEX offlinemessage_by_user ON offlinemessage (userid, id);",
];

/// Brings the database to [`SCHEMA_VERSION`], creating the tables in an
/// empty one.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let mut version = user_version(conn)?;
    while version < SCHEMA_VERSION {
        // IMMEDIATE takes the write lock first, so two processes opening a
        // new file at once migrate one after the other; the second then
        // sees the new version and does nothing.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::backend)?;
        version = user_version(&tx)?;
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            break;
        };
        tx.execute_batch(step).map_err(StoreError::backend)?;
        version += 1;
        tx.pragma_update(None, "user_version", version)
            .map_err(StoreError::backend)?;
        tx.commit().map_err(StoreError::backend)?;
        tracing::info!(version, "migrated SQLite schema");
    }

    if version != SCHEMA_VERSION {
        let message = format!(
            "the database has schema version {version}; this program knows {SCHEMA_VERSION}"
        );
        return Err(StoreError::Backend(message.into()));
    }
    Ok(())
}

/// The schema version the database records; 0 for a new one.
fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::backend)
}
