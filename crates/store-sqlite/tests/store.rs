//! The store conformance suite against SQLite, in memory and on files, and
//! what only a file can show: data that outlives the process's handle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chat_proto::Role;
use chat_service::{store_suite, Store, StoreError};
use chat_store_sqlite::{schema::SCHEMA_VERSION, SqliteStore};

#[tokio::test]
async fn conformance_in_memory() {
    store_suite::run_all(|| async { in_memory() }).await;
}

#[tokio::test]
async fn conformance_on_files() {
    let dir = TempDir::new("suite");
    let count = AtomicUsize::new(0);
    store_suite::run_all(|| {
        let path = dir
            .path()
            .join(format!("case-{}.db", count.fetch_add(1, Ordering::Relaxed)));
        async move { open(&path) }
    })
    .await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("chat.db");

    let store = open(&path);
    let alice = must(store.create_user("张三", "hash").await, "create 张三");
    let bob = must(store.create_user("O'Brien", "hash").await, "create O'Brien");
    must(store.add_friendship(alice, bob).await, "befriend");
    let group = must(
        store.create_group(alice, "测试群", "描述😀").await,
        "create group",
    );
    must(store.add_member(group, bob, Role::Normal).await, "join");
    must(store.store_offline(&[bob], "kept").await, "store offline");
    must(store.close().await, "close");

    let store = open(&path);
    let alice_again = must(store.user(alice).await, "look up 张三");
    assert_eq!(alice_again.map(|u| u.name), Some("张三".to_owned()));
    let friends = must(store.friends(bob).await, "friends");
    assert_eq!(friends, vec![(alice, "张三".to_owned())]);
    let groups = must(store.groups_of(bob).await, "groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group.desc, "描述😀");
    assert_eq!(groups[0].members.len(), 2);
    let offline = must(store.offline(bob, usize::MAX).await, "offline");
    let payloads: Vec<&str> = offline.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["kept"]);

    // The unique names still hold after reopening, and new ids do not
    // repeat old ones.
    let again = store.create_user("张三", "h").await;
    assert!(matches!(again, Err(StoreError::NameTaken)), "{again:?}");
    let carol = must(store.create_user("carol", "h").await, "create carol");
    assert!(carol > bob, "id {carol} after {bob}");
    must(store.close().await, "close again");
}

#[tokio::test]
async fn schema_version_is_recorded() {
    let dir = TempDir::new("version");
    let path = dir.path().join("chat.db");
    must(open(&path).close().await, "close");

    let conn = rusqlite::Connection::open(&path).expect("open the file directly");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version");
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");

    // A file from a newer program is refused, not misread.
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("set user_version");
    drop(conn);
    let err = SqliteStore::open(&path).expect_err("a newer schema must be refused");
    assert!(err.to_string().contains("schema version"), "{err}");
}

#[tokio::test]
async fn calls_from_many_tasks_are_served() {
    let store = std::sync::Arc::new(in_memory());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.create_user(&format!("user{i}"), "h").await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(must(task.await.expect("the task panicked"), "create user"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16, "every task got its own user");
}

fn in_memory() -> SqliteStore {
    SqliteStore::in_memory().unwrap_or_else(|err| panic!("in-memory store: {err}"))
}

/// The value of a call that must succeed, or a panic naming the call.
fn must<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()))
}

/// A directory of its own for one test, removed afterwards even when the
/// test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(purpose: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "chat-store-sqlite-{purpose}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
