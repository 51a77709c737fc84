//! The chat store on MariaDB, shared by every server of a cluster.
//!
//! [`MysqlStore`] implements [`chat_service::Store`] with a pool of
//! connections to one database. Servers on several machines use the same
//! database, so this is the store of a cluster; a single node can use the
//! embedded SQLite store instead. The tables are those of the data model in
//! `docs/architecture.md`; [`schema`] creates and versions them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chat_service::StoreError> {
//! use chat_service::Store;
//! use chat_store_mysql::MysqlStore;
//!
//! let store = MysqlStore::connect("mysql://chat:secret@127.0.0.1:3306/chat", 8).await?;
//! let id = store.create_user("张三", "$argon2id$...").await?;
//! assert_eq!(store.user(id).await?.map(|u| u.name), Some("张三".to_owned()));
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! Choices that a reader of the database should know:
//!
//! - **Text is utf8mb4 throughout**, on the tables and on every connection
//!   (`SET NAMES utf8mb4`), so Chinese and emoji are stored as written.
//! - **Names compare byte for byte.** User and group names use the
//!   `utf8mb4_nopad_bin` collation: `alice`, `Alice` and `alice ` are three
//!   different names, as in the SQLite store, and a name reads back exactly
//!   as it was written. (`utf8mb4_bin` would not do: it pads, so `alice`
//!   and `alice ` would collide.) That collation is MariaDB's (10.2 and
//!   later); MySQL 8 names the same thing `utf8mb4_0900_bin`, and this
//!   crate does not run on MySQL as it is.
//! - **Every call is bounded in time** ([`DEFAULT_CALL_TIMEOUT`]): when the
//!   database is down or unreachable, calls fail with
//!   [`StoreError::Backend`] instead of hanging sessions, and the pool
//!   replaces dead connections as soon as the database answers again.
//!   A read whose connection turns out to be dead is retried once on a
//!   fresh one; a write is not, because it may have been applied.
//! - **Only prepared statements with bound parameters** carry data. The
//!   only SQL assembled at run time is `CREATE DATABASE` for the database
//!   named in the URL, after checking that the name is a plain identifier.
//! - **No TLS.** The crate is built without `mysql_async`'s TLS features,
//!   which would pull a large C build; the database must be reached on a
//!   trusted network (the cluster's own) or through a tunnel.

pub mod schema;

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::{GroupId, Role, UserId};
use chat_service::{
    GroupRecord, GroupWithMembers, MemberRecord, OfflineRecord, Store, StoreError, UserRecord,
};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{
    Conn, DriverError, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, TxOpts,
    Value,
};

/// How long one store call may take, waiting for a connection included,
/// before it fails.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long creating or migrating the schema may take at start-up; longer
/// than a call, since another server may be migrating the same database.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections beyond the first are closed after this long.
const IDLE_TTL: Duration = Duration::from_secs(60);

/// Keepalive probes find connections to a machine that vanished.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Session settings of every connection, run again whenever one is reset.
/// Strict mode makes a value that does not fit an error, never a silently
/// truncated name; no engine substitution keeps the tables transactional.
const SESSION_SETUP: [&str; 2] = [
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE'",
];

/// Offline messages deleted per statement; see [`DELETE_OFFLINE`].
const DELETE_BATCH: usize = 64;

/// Deletes up to [`DELETE_BATCH`] of a user's offline messages. The list
/// always has that many placeholders (short batches repeat their last id),
/// so one prepared statement serves every call and a login's hundreds of
/// messages take a few round trips, not hundreds.
static DELETE_OFFLINE: LazyLock<String> = LazyLock::new(|| {
    let marks = vec!["?"; DELETE_BATCH].join(", ");
    format!("DELETE FROM offlinemessage WHERE userid = ? AND id IN ({marks})")
});

/// MariaDB's error codes that this crate tells apart.
mod code {
    /// A duplicate value of a unique key.
    pub const DUPLICATE_ENTRY: u16 = 1062;
    /// The URL names a database that does not exist.
    pub const UNKNOWN_DATABASE: u16 = 1049;
    /// The server is shutting down.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// The connection was killed (`KILL`, an administrator, a restart).
    pub const CONNECTION_KILLED: u16 = 1927;
    /// The transaction lost a deadlock and was rolled back whole.
    pub const DEADLOCK: u16 = 1213;
}

/// A [`Store`] on a MariaDB database, through a pool of connections.
///
/// Cloning is cheap and shares the pool; [`close`](MysqlStore::close) on
/// any clone closes it for all.
#[derive(Debug, Clone)]
pub struct MysqlStore {
    pool: Pool,
    call_timeout: Duration,
}

impl MysqlStore {
    /// Connects to the database named in `url`
    /// (`mysql://user:password@host:port/database`), creating the database
    /// if it does not exist yet and the user may create it, and brings its
    /// schema up to date. The pool keeps at most `pool_max` connections.
    ///
    /// Fails within [`DEFAULT_CALL_TIMEOUT`] if the database cannot be
    /// reached.
    pub async fn connect(url: &str, pool_max: usize) -> Result<MysqlStore, StoreError> {
        MysqlStore::connect_with_timeout(url, pool_max, DEFAULT_CALL_TIMEOUT).await
    }

    /// [`connect`](MysqlStore::connect) with another bound on each call.
    pub async fn connect_with_timeout(
        url: &str,
        pool_max: usize,
        call_timeout: Duration,
    ) -> Result<MysqlStore, StoreError> {
        let opts = Opts::from_url(url).map_err(StoreError::backend)?;
        let Some(database) = opts.db_name().map(str::to_owned) else {
            return Err(invalid(
                "the MariaDB URL names no database: mysql://user@host:port/NAME",
            ));
        };
        let Some(constraints) = PoolConstraints::new(1, pool_max) else {
            return Err(invalid("the MariaDB pool needs at least one connection"));
        };
        let pool_opts = PoolOpts::new()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(IDLE_TTL)
            // A reset would drop the prepared statements at every return
            // to the pool; the store leaves no session state behind.
            .with_reset_connection(false);
        let opts: Opts = OptsBuilder::from_opts(opts)
            .setup(SESSION_SETUP.to_vec())
            .client_found_rows(false)
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .pool_opts(pool_opts)
            .into();

        let version = migrate(&opts, &database, call_timeout).await?;
        tracing::debug!(
            host = opts.ip_or_hostname(),
            port = opts.tcp_port(),
            database,
            schema_version = version,
            "connected to MariaDB"
        );
        Ok(MysqlStore {
            pool: Pool::new(opts),
            call_timeout,
        })
    }

    /// Closes the pool's connections once the calls in flight are done.
    pub async fn close(self) -> Result<(), StoreError> {
        match tokio::time::timeout(self.call_timeout, self.pool.disconnect()).await {
            Ok(result) => result.map_err(StoreError::backend),
            Err(_) => Err(timed_out(self.call_timeout)),
        }
    }

    /// Runs one call, bounded in time; `map` turns the database's error into
    /// the store's. Writes come here directly and are never repeated: one
    /// whose connection died may have been applied.
    async fn call<T>(
        &self,
        map: fn(mysql_async::Error) -> StoreError,
        work: impl Future<Output = mysql_async::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(result) => result.map_err(map),
            Err(_) => Err(timed_out(self.call_timeout)),
        }
    }

    /// Runs a read, bounded in time, and once more if its connection turned
    /// out to be dead: reading twice is harmless, and the pool hands out a
    /// fresh connection the second time.
    async fn read<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = mysql_async::Result<T>>,
    {
        self.call(StoreError::backend, async {
            match work().await {
                Err(err) if connection_lost(&err) => {
                    tracing::warn!(%err, "MariaDB connection lost; reading again");
                    work().await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs a write, bounded in time. A write is never repeated after a
    /// lost connection (it may have been applied), but it is when MariaDB
    /// chose it as the victim of a deadlock, which InnoDB resolves by
    /// rolling the victim's transaction back whole: concurrent offline
    /// inserts and deletes for the same users meet in this way under load.
    async fn write<T, F, Fut>(
        &self,
        map: fn(mysql_async::Error) -> StoreError,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = mysql_async::Result<T>>,
    {
        self.call(map, retry_deadlocks(work)).await
    }

    async fn conn(&self) -> mysql_async::Result<Conn> {
        self.pool.get_conn().await
    }
}

#[async_trait]
impl Store for MysqlStore {
    /// Disconnects the pool once the calls in flight are done, so MariaDB
    /// does not keep this server's connections until they time out.
    async fn close(&self) {
        match tokio::time::timeout(self.call_timeout, self.pool.clone().disconnect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not close the MariaDB pool cleanly"),
            Err(_) => tracing::warn!("closing the MariaDB pool timed out"),
        }
    }

    async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId, StoreError> {
        self.write(name_taken, || async move {
            let mut conn = self.conn().await?;
            let sql = "INSERT INTO `user` (name, password_hash) VALUES (?, ?)";
            conn.exec_drop(sql, (name, password_hash)).await?;
            inserted_id(&conn)
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT id, name, password_hash FROM `user` WHERE id = ?";
            let row: Option<Row> = conn.exec_first(sql, (id,)).await?;
            let Some(row) = row else { return Ok(None) };
            let (id, name, password_hash) = decode(row)?;
            Ok(Some(UserRecord {
                id,
                name,
                password_hash,
            }))
        })
        .await
    }

    async fn add_friendship(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        self.write(StoreError::backend, || async move {
            let mut conn = self.conn().await?;
            // Both directions in one statement: a friendship is never half
            // written. A row that exists already counts as no change.
            let sql = "INSERT INTO friend (userid, friendid) VALUES (?, ?), (?, ?) \
                       ON DUPLICATE KEY UPDATE userid = userid";
            conn.exec_drop(sql, (a, b, b, a)).await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn friends(&self, user: UserId) -> Result<Vec<(UserId, String)>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT u.id, u.name FROM friend f JOIN `user` u ON u.id = f.friendid \
                       WHERE f.userid = ? ORDER BY u.id";
            let rows: Vec<Row> = conn.exec(sql, (user,)).await?;
            rows.into_iter().map(decode).collect()
        })
        .await
    }

    async fn create_group(
        &self,
        creator: UserId,
        name: &str,
        desc: &str,
    ) -> Result<GroupId, StoreError> {
        self.write(name_taken, || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let sql = "INSERT INTO allgroup (groupname, groupdesc) VALUES (?, ?)";
            tx.exec_drop(sql, (name, desc)).await?;
            let group = inserted_id(&tx)?;
            let sql = "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?, ?, ?)";
            tx.exec_drop(sql, (group, creator, Role::Creator.as_str()))
                .await?;
            tx.commit().await?;
            Ok(group)
        })
        .await
    }

    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT id, groupname, groupdesc FROM allgroup WHERE id = ?";
            let row: Option<Row> = conn.exec_first(sql, (id,)).await?;
            let Some(row) = row else { return Ok(None) };
            let (id, name, desc) = decode(row)?;
            Ok(Some(GroupRecord { id, name, desc }))
        })
        .await
    }

    async fn add_member(
        &self,
        group: GroupId,
        user: UserId,
        role: Role,
    ) -> Result<bool, StoreError> {
        self.write(StoreError::backend, || async move {
            let mut conn = self.conn().await?;
            let sql = "INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?, ?, ?) \
                       ON DUPLICATE KEY UPDATE groupid = groupid";
            conn.exec_drop(sql, (group, user, role.as_str())).await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    async fn members(&self, group: GroupId) -> Result<Vec<MemberRecord>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT u.id, u.name, gu.grouprole FROM groupuser gu \
                       JOIN `user` u ON u.id = gu.userid WHERE gu.groupid = ? ORDER BY u.id";
            let rows: Vec<Row> = conn.exec(sql, (group,)).await?;
            rows.into_iter().map(|row| member(decode(row)?)).collect()
        })
        .await
    }

    async fn member_ids(&self, group: GroupId) -> Result<Vec<UserId>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT userid FROM groupuser WHERE groupid = ? ORDER BY userid";
            let ids: Vec<UserId> = conn.exec(sql, (group,)).await?;
            Ok(ids)
        })
        .await
    }

    async fn groups_of(&self, user: UserId) -> Result<Vec<GroupWithMembers>, StoreError> {
        self.read(|| async move {
            let mut conn = self.conn().await?;
            // One statement reads one snapshot: no group appears without the
            // members it had at that moment.
            let sql = "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, gu.grouprole \
                       FROM groupuser mine \
                       JOIN allgroup g ON g.id = mine.groupid \
                       JOIN groupuser gu ON gu.groupid = g.id \
                       JOIN `user` u ON u.id = gu.userid \
                       WHERE mine.userid = ? ORDER BY g.id, u.id";
            let rows: Vec<Row> = conn.exec(sql, (user,)).await?;
            let mut groups: Vec<GroupWithMembers> = Vec::new();
            for row in rows {
                let (id, name, desc, user, user_name, role) = decode(row)?;
                let member = member((user, user_name, role))?;
                match groups.last_mut() {
                    Some(last) if last.group.id == id => last.members.push(member),
                    _ => groups.push(GroupWithMembers {
                        group: GroupRecord { id, name, desc },
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
        self.write(StoreError::backend, || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let sql = "INSERT INTO offlinemessage (userid, payload) VALUES (?, ?)";
            tx.exec_batch(sql, users.iter().map(|&user| (user, payload)))
                .await?;
            tx.commit().await
        })
        .await
    }

    async fn offline(&self, user: UserId, limit: usize) -> Result<Vec<OfflineRecord>, StoreError> {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        self.read(|| async move {
            let mut conn = self.conn().await?;
            let sql = "SELECT id, payload FROM offlinemessage WHERE userid = ? ORDER BY id LIMIT ?";
            let rows: Vec<Row> = conn.exec(sql, (user, limit)).await?;
            rows.into_iter()
                .map(|row| decode(row).map(|(id, payload)| OfflineRecord { id, payload }))
                .collect()
        })
        .await
    }

    async fn delete_offline(&self, user: UserId, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(StoreError::backend, || async move {
            let mut conn = self.conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            for batch in ids.chunks(DELETE_BATCH) {
                // The user is part of the condition so that ids of someone
                // else's messages delete nothing.
                let mut params = Vec::with_capacity(DELETE_BATCH + 1);
                params.push(Value::from(user));
                let last = batch.last().copied().unwrap_or_default();
                let padded = batch.iter().copied().chain(std::iter::repeat(last));
                params.extend(padded.take(DELETE_BATCH).map(Value::from));
                tx.exec_drop(DELETE_OFFLINE.as_str(), Params::Positional(params))
                    .await?;
            }
            tx.commit().await
        })
        .await
    }
}

/// Opens one connection of its own, outside the pool, and migrates the
/// schema on it. Its own, because the schema lock belongs to a session:
/// if start-up is cut short, dropping this connection releases the lock,
/// where a pooled one would keep holding it.
async fn migrate(opts: &Opts, database: &str, call_timeout: Duration) -> Result<u32, StoreError> {
    let connected = tokio::time::timeout(call_timeout, Conn::new(opts.clone())).await;
    let mut conn = match connected {
        Err(_) => return Err(timed_out(call_timeout)),
        Ok(Err(err)) if is_server_error(&err, code::UNKNOWN_DATABASE) => {
            create_database(opts, database, call_timeout).await?;
            let connected = tokio::time::timeout(call_timeout, Conn::new(opts.clone())).await;
            connected
                .map_err(|_| timed_out(call_timeout))?
                .map_err(StoreError::backend)?
        }
        Ok(connected) => connected.map_err(StoreError::backend)?,
    };

    let migrated = tokio::time::timeout(SCHEMA_TIMEOUT, schema::migrate(&mut conn)).await;
    let version = migrated
        .map_err(|_| timed_out(SCHEMA_TIMEOUT))?
        .map_err(StoreError::backend)?;
    if let Err(err) = conn.disconnect().await {
        tracing::debug!(%err, "closing the schema connection failed");
    }
    Ok(version)
}

/// Creates the database the URL names, on a connection without a default
/// database.
async fn create_database(
    opts: &Opts,
    database: &str,
    call_timeout: Duration,
) -> Result<(), StoreError> {
    // An identifier cannot be a bound parameter. This one comes from the
    // configuration, and only plain names are accepted, so nothing in it
    // can end the quoting.
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if database.is_empty() || database.len() > 64 || !database.chars().all(plain) {
        return Err(invalid(
            "the database does not exist, and only a name of letters, digits and _ \
             (at most 64) is created",
        ));
    }
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{database}` \
         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    );
    let server = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
    let work = async {
        let mut conn = Conn::new(server).await?;
        conn.query_drop(sql).await?;
        conn.disconnect().await
    };
    match tokio::time::timeout(call_timeout, work).await {
        Ok(result) => result.map_err(StoreError::backend)?,
        Err(_) => return Err(timed_out(call_timeout)),
    }
    tracing::info!(database, "created MariaDB database");
    Ok(())
}

/// The row as `T`, or an error that names the mismatch instead of the
/// panic that `mysql_async`'s own conversion would raise.
fn decode<T: FromRow>(row: Row) -> mysql_async::Result<T> {
    mysql_async::from_row_opt(row).map_err(|err| mysql_async::Error::Other(Box::new(err)))
}

/// A member from the columns `id, name, grouprole`.
fn member((id, name, role): (UserId, String, String)) -> mysql_async::Result<MemberRecord> {
    let Some(role) = Role::parse(&role) else {
        let message = format!("unknown group role {role:?} in the database");
        return Err(mysql_async::Error::Other(message.into()));
    };
    Ok(MemberRecord { id, name, role })
}

/// The id that the last INSERT on `conn` generated.
fn inserted_id(conn: &Conn) -> mysql_async::Result<i64> {
    conn.last_insert_id()
        .and_then(|id| i64::try_from(id).ok())
        .ok_or_else(|| mysql_async::Error::Other("MariaDB reported no usable inserted id".into()))
}

/// Maps a failed insert of a name: a duplicate key can only be the name's,
/// since the row's id is generated.
fn name_taken(err: mysql_async::Error) -> StoreError {
    if is_server_error(&err, code::DUPLICATE_ENTRY) {
        StoreError::NameTaken
    } else {
        StoreError::backend(err)
    }
}

fn is_server_error(err: &mysql_async::Error, code: u16) -> bool {
    matches!(err, mysql_async::Error::Server(server) if server.code == code)
}

/// Whether `err` says that the connection died, rather than that the
/// statement failed on a live one.
fn connection_lost(err: &mysql_async::Error) -> bool {
    match err {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(DriverError::ConnectionClosed) => true,
        mysql_async::Error::Server(server) => {
            matches!(server.code, code::CONNECTION_KILLED | code::SERVER_SHUTDOWN)
        }
        _ => false,
    }
}

/// Times a transaction is run again after losing a deadlock.
const DEADLOCK_RETRIES: u32 = 5;

/// Runs `work`, and again while it loses deadlocks, a few times, with a
/// growing pause so that the transactions that met do not meet again.
async fn retry_deadlocks<T, F, Fut>(work: F) -> mysql_async::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = mysql_async::Result<T>>,
{
    let mut lost = 0;
    loop {
        match work().await {
            Err(mysql_async::Error::Server(server))
                if server.code == code::DEADLOCK && lost < DEADLOCK_RETRIES =>
            {
                lost += 1;
                tracing::debug!(%server, lost, "lost a deadlock; running the transaction again");
                tokio::time::sleep(Duration::from_millis(2 << lost)).await;
            }
            other => return other,
        }
    }
}

fn timed_out(limit: Duration) -> StoreError {
    StoreError::Backend(format!("MariaDB did not answer within {limit:?}").into())
}

fn invalid(message: &str) -> StoreError {
    StoreError::Backend(message.into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn server_error(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "test".to_owned(),
            state: "40001".to_owned(),
        })
    }

    /// Fails with `code` `failures` times, then succeeds; counts its runs.
    async fn flaky(runs: &AtomicU32, failures: u32, code: u16) -> mysql_async::Result<u32> {
        let run = runs.fetch_add(1, Ordering::SeqCst);
        if run < failures {
            Err(server_error(code))
        } else {
            Ok(run)
        }
    }

    #[tokio::test]
    async fn a_transaction_that_loses_deadlocks_runs_again() {
        let runs = AtomicU32::new(0);
        let result = retry_deadlocks(|| flaky(&runs, 2, code::DEADLOCK)).await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_end_and_other_errors_are_not_retried() {
        let runs = AtomicU32::new(0);
        let result = retry_deadlocks(|| flaky(&runs, u32::MAX, code::DEADLOCK)).await;
        assert!(result.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), DEADLOCK_RETRIES + 1);

        let runs = AtomicU32::new(0);
        let result = retry_deadlocks(|| flaky(&runs, 1, code::DUPLICATE_ENTRY)).await;
        assert!(result.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
