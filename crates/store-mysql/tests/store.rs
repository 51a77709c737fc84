//! The store conformance suite against a real MariaDB, and what only a
//! database server can show: killed connections, an outage and recovery,
//! concurrent writers, several servers migrating one database at once.
//!
//! `CHAT_TEST_MYSQL_URL` names the database server (default
//! `mysql://root@127.0.0.1:3306`, no database in the URL). Each test works
//! in databases of its own, named `chat_test_<pid>_<n>_<nanos>`, and drops
//! them afterwards, even when it fails. Without a reachable server the
//! tests fail, saying how to provide one: they never pass by skipping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_proto::Role;
use chat_service::{store_suite, Store, StoreError};
use chat_store_mysql::{schema::SCHEMA_VERSION, MysqlStore};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DEFAULT_SERVER: &str = "mysql://root@127.0.0.1:3306";

const HOW_TO_PROVIDE: &str = "these tests need a running MariaDB: install and start \
    mariadb-server (apt-get install -y mariadb-server && service mariadb start), or set \
    CHAT_TEST_MYSQL_URL to a server URL such as mysql://root@127.0.0.1:3306";

#[tokio::test]
async fn conformance() {
    let databases = Mutex::new(Vec::new());
    let databases = &databases;
    store_suite::run_all(|| async move {
        let db = TestDb::create().await;
        let store = connect(&db.url, 4).await;
        databases.lock().unwrap_or_else(|e| e.into_inner()).push(db);
        store
    })
    .await;
}

#[tokio::test]
async fn data_is_shared_by_stores_on_one_database() {
    let db = TestDb::create().await;
    let first = connect(&db.url, 2).await;
    let alice = must(first.create_user("张三", "h").await, "create 张三");
    let group = must(
        first.create_group(alice, "测试群", "描述😀").await,
        "create group",
    );
    must(
        first.store_offline(&[alice], "你好，世界😀").await,
        "store offline",
    );

    // A second server sees the first one's data and its unique names.
    let second = connect(&db.url, 2).await;
    let found = must(second.group(group).await, "look up group").map(|g| g.desc);
    assert_eq!(found, Some("描述😀".to_owned()));
    let offline = must(second.offline(alice, usize::MAX).await, "offline");
    assert_eq!(
        offline
            .iter()
            .map(|m| m.payload.as_str())
            .collect::<Vec<_>>(),
        ["你好，世界😀"]
    );
    let again = second.create_user("张三", "h").await;
    assert!(matches!(again, Err(StoreError::NameTaken)), "{again:?}");

    must(first.close().await, "close first");
    must(second.close().await, "close second");
}

#[tokio::test]
async fn servers_starting_at_once_migrate_once() {
    // The database does not exist yet: both servers create and migrate it.
    let db = TestDb::named();
    let (a, b) = tokio::join!(
        MysqlStore::connect(&db.url, 1),
        MysqlStore::connect(&db.url, 1)
    );
    let (a, b) = (must(a, "first server"), must(b, "second server"));

    let mut admin = admin().await;
    let sql = format!(
        "SELECT version FROM `{}`.schema_version ORDER BY version",
        db.name
    );
    let versions: Vec<u32> = admin.query(sql).await.expect("read schema_version");
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());

    let id = must(a.create_user("alice", "h").await, "create on a");
    assert!(must(b.user(id).await, "read on b").is_some());
    must(a.close().await, "close a");
    must(b.close().await, "close b");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TestDb::create().await;
    must(connect(&db.url, 1).await.close().await, "close");

    let mut admin = admin().await;
    let sql = format!(
        "INSERT INTO `{}`.schema_version (version) VALUES (?)",
        db.name
    );
    admin
        .exec_drop(sql, (SCHEMA_VERSION + 1,))
        .await
        .expect("record a newer version");
    let err = MysqlStore::connect(&db.url, 1)
        .await
        .expect_err("a newer schema must be refused");
    assert!(err.to_string().contains("schema version"), "{err}");
}

#[tokio::test]
async fn killed_connections_are_replaced() {
    let db = TestDb::create().await;
    let store = connect(&db.url, 1).await;
    let alice = must(store.create_user("alice", "h").await, "create alice");

    // Killed while idle, noticed when the pool hands it out.
    kill_connections(&db, true).await;
    assert!(must(store.user(alice).await, "read after kill").is_some());

    // Killed just before a read, which may find out only when it reads.
    kill_connections(&db, false).await;
    assert!(must(store.user(alice).await, "read right after kill").is_some());

    kill_connections(&db, true).await;
    must(store.create_user("bob", "h").await, "write after kill");
    must(store.close().await, "close");
}

#[tokio::test]
async fn a_read_on_a_silently_dead_connection_is_retried() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(upstream().await).await;
    let store = must(
        MysqlStore::connect(&proxy.url(&db.name), 1).await,
        "connect",
    );
    let alice = must(store.create_user("alice", "h").await, "create alice");

    // The pool's connection looks alive until a statement is sent on it.
    proxy.sever();
    assert!(must(store.user(alice).await, "read on a dead connection").is_some());

    // A write is not retried: it might have been applied. The next works.
    proxy.sever();
    let lost = store.create_user("bob", "h").await;
    assert!(matches!(lost, Err(StoreError::Backend(_))), "{lost:?}");
    must(
        store.create_user("carol", "h").await,
        "write on a fresh connection",
    );
    must(store.close().await, "close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_of_one_name_have_one_winner() {
    let db = TestDb::create().await;
    let store = Arc::new(connect(&db.url, 8).await);
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(must(
            store.create_user(&format!("user{i}"), "h").await,
            "create user",
        ));
    }

    let mut groups = Vec::new();
    let mut twins = Vec::new();
    for &user in &users {
        let racer = Arc::clone(&store);
        groups.push(tokio::spawn(async move {
            racer.create_group(user, "contested", "").await
        }));
        let racer = Arc::clone(&store);
        twins.push(tokio::spawn(
            async move { racer.create_user("twin", "h").await },
        ));
    }

    let group = one_winner(groups, "create_group").await;
    let members = must(store.members(group).await, "members");
    assert_eq!(members.len(), 1, "only the winner is a member: {members:?}");
    assert_eq!(members[0].role, Role::Creator);
    one_winner(twins, "create_user").await;
}

#[tokio::test]
async fn an_outage_fails_calls_in_time_and_the_pool_recovers() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(upstream().await).await;
    let limit = Duration::from_secs(2);
    let url = proxy.url(&db.name);
    let store = MysqlStore::connect_with_timeout(&url, 2, limit).await;
    let store = must(store, "connect through the proxy");
    let alice = must(store.create_user("alice", "h").await, "create alice");

    // Down: open connections are cut, new ones are accepted and never
    // answered, as when the database's machine stops responding.
    proxy.set_up(false);
    for round in 0..2 {
        let started = Instant::now();
        let read = store.user(alice).await;
        assert!(
            read.is_err(),
            "round {round}: a read succeeded during the outage"
        );
        let write = store.create_user(&format!("down{round}"), "h").await;
        assert!(
            write.is_err(),
            "round {round}: a write succeeded during the outage"
        );
        let took = started.elapsed();
        assert!(
            took < 2 * limit + Duration::from_secs(1),
            "round {round}: took {took:?}"
        );
    }

    // Up again: the same store works, without a restart.
    proxy.set_up(true);
    assert!(must(store.user(alice).await, "read after the outage").is_some());
    must(
        store.create_user("bob", "h").await,
        "write after the outage",
    );
    must(store.close().await, "close");
}

#[tokio::test]
async fn connecting_to_a_dead_or_silent_server_fails_in_time() {
    let limit = Duration::from_secs(1);

    // Nobody listens: refused at once.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = closed.local_addr().expect("local address").port();
    drop(closed);
    let url = format!("mysql://root@127.0.0.1:{port}/chat");
    let started = Instant::now();
    let refused = MysqlStore::connect_with_timeout(&url, 1, limit).await;
    assert!(
        refused.is_err() && started.elapsed() < limit * 3,
        "{refused:?}"
    );

    // A server that accepts and never answers.
    let proxy = Proxy::start(upstream().await).await;
    proxy.set_up(false);
    let started = Instant::now();
    let silent = MysqlStore::connect_with_timeout(&proxy.url("chat"), 1, limit).await;
    let took = started.elapsed();
    assert!(silent.is_err(), "connected to a silent server");
    assert!(took < limit * 3, "took {took:?}");
}

#[tokio::test]
async fn a_url_without_database_is_refused() {
    let err = MysqlStore::connect(&server_url(), 1)
        .await
        .expect_err("no database named");
    assert!(err.to_string().contains("names no database"), "{err}");
}

/// The one id among the tasks' results, checking that every other task
/// got [`StoreError::NameTaken`].
async fn one_winner(tasks: Vec<JoinHandle<Result<i64, StoreError>>>, what: &str) -> i64 {
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("the task panicked") {
            Ok(id) => winners.push(id),
            Err(StoreError::NameTaken) => {}
            Err(err) => panic!("{what}: want NameTaken or success, got {err}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{what}: exactly one must win, got {winners:?}"
    );
    winners[0]
}

/// Kills every connection that uses the test's database, as an
/// administrator or a server restart would, and optionally waits until the
/// server has closed them.
async fn kill_connections(db: &TestDb, wait: bool) {
    let mut admin = admin().await;
    let sql =
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()";
    let ids: Vec<u64> = admin
        .exec(sql, (&db.name,))
        .await
        .expect("list connections");
    assert!(!ids.is_empty(), "the store has no connection to kill");
    for &id in &ids {
        // KILL takes no placeholder; the id is a number from the server.
        admin.query_drop(format!("KILL {id}")).await.expect("kill");
    }
    if !wait {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?";
        let mut alive = 0;
        for &id in &ids {
            let count: Option<u64> = admin.exec_first(sql, (id,)).await.expect("count");
            alive += count.unwrap_or(0);
        }
        if alive == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "killed connections stay alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(url: &str, pool_max: usize) -> MysqlStore {
    must(MysqlStore::connect(url, pool_max).await, "connect")
}

/// The value of a call that must succeed, or a panic naming the call.
fn must<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

fn server_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
}

fn server_opts() -> Opts {
    let url = server_url();
    let opts = Opts::from_url(&url)
        .unwrap_or_else(|err| panic!("CHAT_TEST_MYSQL_URL {url:?} is not a MariaDB URL: {err}"));
    assert!(
        opts.db_name().is_none(),
        "CHAT_TEST_MYSQL_URL must name no database: {url}"
    );
    opts
}

/// A connection without a default database, to set up and inspect tests.
async fn admin() -> Conn {
    let url = server_url();
    match tokio::time::timeout(Duration::from_secs(5), Conn::new(server_opts())).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => panic!("cannot reach MariaDB at {url}: {err}; {HOW_TO_PROVIDE}"),
        Err(_) => panic!("MariaDB at {url} did not answer within 5 s; {HOW_TO_PROVIDE}"),
    }
}

/// The database server's address, for the proxy to forward to.
async fn upstream() -> SocketAddr {
    let opts = server_opts();
    let host = (opts.ip_or_hostname(), opts.tcp_port());
    let mut addrs = tokio::net::lookup_host(host)
        .await
        .expect("resolve the MariaDB host");
    addrs.next().expect("the MariaDB host has an address")
}

/// A database of the test's own, dropped when this goes out of scope.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh, empty database.
    async fn create() -> TestDb {
        let db = TestDb::named();
        let sql = format!("CREATE DATABASE `{}` CHARACTER SET utf8mb4", db.name);
        admin()
            .await
            .query_drop(sql)
            .await
            .expect("create the test database");
        db
    }

    /// A unique name for a database that does not exist yet; dropping the
    /// guard drops it if something created it.
    fn named() -> TestDb {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let name = format!("chat_test_{}_{n}_{nanos}", std::process::id());
        let url = database_url(&server_url(), &name);
        TestDb { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run while a failed test unwinds, maybe inside a runtime
        // that is shutting down: a thread with a runtime of its own can
        // still talk to the server.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = Conn::new(server_opts()).await.map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS `{name}`");
                conn.query_drop(sql).await.map_err(|e| e.to_string())?;
                conn.disconnect().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

/// `server` with `database` as its path, keeping any query parameters.
fn database_url(server: &str, database: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    format!("{}/{database}{query}", base.trim_end_matches('/'))
}

/// A TCP proxy in front of MariaDB that can play an outage.
struct Proxy {
    port: u16,
    up: watch::Sender<bool>,
    severed: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (up, state) = watch::channel(true);
        let (severed, sever) = watch::channel(0);
        let task = tokio::spawn(serve(listener, upstream, state, sever));
        Proxy {
            port,
            up,
            severed,
            task,
        }
    }

    /// Up forwards; down cuts every open connection and leaves new ones
    /// accepted but unanswered.
    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Kills the open connections silently, as a firewall that forgot them
    /// or a lost FIN would: the client learns it only when it sends on one.
    /// New connections are forwarded as before.
    fn sever(&self) {
        self.severed.send_modify(|n| *n += 1);
    }

    /// The server URL's user and password, with the proxy as the host.
    ///
    /// Without `prefer_socket=false` the client would notice that the
    /// proxy is on this machine and switch to MariaDB's Unix socket,
    /// bypassing the proxy.
    fn url(&self, database: &str) -> String {
        let opts = server_opts();
        let user = opts.user().unwrap_or("root");
        let password = opts.pass().map(|p| format!(":{p}")).unwrap_or_default();
        let port = self.port;
        format!("mysql://{user}{password}@127.0.0.1:{port}/{database}?prefer_socket=false")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Receiver<bool>,
    sever: watch::Receiver<u64>,
) {
    let mut silent = Vec::new();
    while let Ok((client, _)) = listener.accept().await {
        if *state.borrow() {
            silent.clear();
            tokio::spawn(forward(client, upstream, state.clone(), sever.clone()));
        } else {
            silent.push(client);
        }
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<bool>,
    mut sever: watch::Receiver<u64>,
) {
    // Only severances after this connection was made concern it.
    sever.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let severed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = state.wait_for(|up| !*up) => false,
        _ = sever.changed() => true,
    };
    if severed {
        drop(server);
        let mut byte = [0_u8; 1];
        let _ = client.read(&mut byte).await;
    }
}

#[test]
fn database_urls_keep_parameters() {
    assert_eq!(database_url("mysql://root@h:1", "d"), "mysql://root@h:1/d");
    assert_eq!(database_url("mysql://root@h:1/", "d"), "mysql://root@h:1/d");
    assert_eq!(
        database_url("mysql://root@h:1?x=1", "d"),
        "mysql://root@h:1/d?x=1"
    );
}
