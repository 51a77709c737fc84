//! The tables of the MariaDB store and how a database gets them.
//!
//! Every server migrates the database when it starts, and several servers
//! may start at once. So a migration runs under a named lock of the
//! database server (`GET_LOCK`, one per database), the applied versions
//! are recorded in `schema_version`, and each step is idempotent
//! (`CREATE TABLE IF NOT EXISTS`): MariaDB commits every DDL statement on
//! its own, so a server that died half-way leaves steps that the next one
//! simply repeats. A database from a newer program is refused rather than
//! misread.
//!
//! Ids are `AUTO_INCREMENT`, which InnoDB never gives twice (MariaDB 10.2
//! and later keep the counter across restarts): a late deletion of
//! handed-over offline messages cannot hit a newer one. Presence is not
//! stored: it lives on the bus.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a starting server waits for another one's migration.
const LOCK_WAIT_SECONDS: u32 = 30;

/// Migration `i` takes a database from version `i` to version `i + 1`.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the data model's five tables.
    &[
        "CREATE TABLE IF NOT EXISTS `user` (
            id            BIGINT NOT NULL AUTO_INCREMENT,
            name          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
            password_hash VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            created_at    DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (id),
            UNIQUE KEY user_name (name)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS friend (
            userid   BIGINT NOT NULL,
            friendid BIGINT NOT NULL,
            PRIMARY KEY (userid, friendid),
            KEY friend_friendid (friendid),
            CONSTRAINT friend_user FOREIGN KEY (userid) REFERENCES `user` (id),
            CONSTRAINT friend_friend FOREIGN KEY (friendid) REFERENCES `user` (id)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS allgroup (
            id         BIGINT NOT NULL AUTO_INCREMENT,
            groupname  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
            groupdesc  TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (id),
            UNIQUE KEY allgroup_groupname (groupname)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS groupuser (
            groupid   BIGINT NOT NULL,
            userid    BIGINT NOT NULL,
            grouprole ENUM('creator', 'normal') NOT NULL,
            PRIMARY KEY (groupid, userid),
            KEY groupuser_userid (userid),
            CONSTRAINT groupuser_group FOREIGN KEY (groupid) REFERENCES allgroup (id),
            CONSTRAINT groupuser_user FOREIGN KEY (userid) REFERENCES `user` (id)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        // MEDIUMTEXT: a payload is a whole serialized message, which can
        // pass the 64 KiB of TEXT once escaped.
        "CREATE TABLE IF NOT EXISTS offlinemessage (
            id         BIGINT NOT NULL AUTO_INCREMENT,
            userid     BIGINT NOT NULL,
            payload    MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (id),
            KEY offlinemessage_userid (userid, id),
            CONSTRAINT offlinemessage_user FOREIGN KEY (userid) REFERENCES `user` (id)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
    ],
];

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
        version    INT NOT NULL,
        applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
        PRIMARY KEY (version)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4";

/// The lock's name is per database, so that servers of different clusters
/// on one database server do not wait for each other.
const LOCK: &str = "SELECT GET_LOCK(LEFT(CONCAT('chat_schema.', DATABASE()), 64), ?)";
const UNLOCK: &str = "SELECT RELEASE_LOCK(LEFT(CONCAT('chat_schema.', DATABASE()), 64))";

/// Brings the database of `conn` to [`SCHEMA_VERSION`] and returns the
/// version it has now.
///
/// `conn` should be a connection of its own: if this future is dropped
/// half-way, closing that connection is what releases the lock.
pub async fn migrate(conn: &mut Conn) -> mysql_async::Result<u32> {
    let locked: Option<Row> = conn.exec_first(LOCK, (LOCK_WAIT_SECONDS,)).await?;
    if locked.map(crate::decode::<(Option<i64>,)>).transpose()? != Some((Some(1),)) {
        let message = format!(
            "another server kept the schema lock for {LOCK_WAIT_SECONDS} s; is a migration stuck?"
        );
        return Err(mysql_async::Error::Other(message.into()));
    }

    let applied = apply(conn).await;
    let released = conn.exec_drop(UNLOCK, ()).await;
    let version = applied?;
    released?;
    Ok(version)
}

/// Applies the missing migrations; the caller holds the lock.
async fn apply(conn: &mut Conn) -> mysql_async::Result<u32> {
    conn.query_drop(CREATE_VERSION_TABLE).await?;
    let sql = "SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM schema_version";
    let row: Option<Row> = conn.exec_first(sql, ()).await?;
    let (current,): (i64,) = row.map(crate::decode).transpose()?.unwrap_or((0,));
    let current = u32::try_from(current).unwrap_or(u32::MAX);
    if current > SCHEMA_VERSION {
        let message = format!(
            "the database has schema version {current}; this program knows {SCHEMA_VERSION}"
        );
        return Err(mysql_async::Error::Other(message.into()));
    }

    for (done, steps) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        for step in *steps {
            conn.query_drop(*step).await?;
        }
        let version = done as u32 + 1;
        conn.exec_drop(
            "INSERT INTO schema_version (version) VALUES (?)",
            (version,),
        )
        .await?;
        tracing::info!(version, "migrated MariaDB schema");
    }
    Ok(SCHEMA_VERSION)
}
