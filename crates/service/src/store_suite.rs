//! The conformance suite that every [`Store`] implementation runs.
//!
//! The service relies on more than the trait's signatures: names that are
//! unique byte for byte, ids that only grow, friendships that are mutual,
//! a creator who is a member the moment the group exists, offline messages
//! that come back oldest first and are removed only when handed over. This
//! module states those promises once, as executable cases, so that the
//! embedded store and the MariaDB store are held to the same contract.
//!
//! It is compiled only with the `store-suite` feature, which store crates
//! enable for their tests. Each case gets a fresh, empty store from the
//! caller's factory, so no case depends on another's data, and a failure
//! panics with the case's name and what differed.
//!
//! ```
//! # use chat_service::MemoryStore as MyStore;
//! #[tokio::test]
//! async fn conformance() {
//!     chat_service::store_suite::run_all(|| async { MyStore::new() }).await;
//! }
//! # fn main() {}
//! ```

use std::fmt::Debug;
use std::future::Future;

use chat_proto::{Role, UserId};

use crate::store::{GroupRecord, GroupWithMembers, MemberRecord, Store, StoreError, UserRecord};

/// Names and texts that broke servers of this kind: quotes, SQL, escapes,
/// Chinese and emoji. Stores must keep every one byte for byte.
const TRICKY_TEXTS: &[&str] = &[
    "O'Brien",
    "x'); DROP TABLE user;--",
    "张三",
    "测试群",
    "描述😀",
    "g'1",
    "it's \"quoted\" \\ back\\slash 100% ; -- ' OR '1'='1",
    "你好，世界😀",
    "\\x00 \\' \\\" %s %d ?1 :name $1",
];

/// Runs every case of the suite, each against a fresh, empty store from
/// `make`.
///
/// Panics at the first case that fails, naming it and what differed; each
/// case's name is printed to standard error as it starts and ends, so the
/// test's output shows which promise was broken.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    case("create and look up users", &make, users_round_trip).await;
    case(
        "user names are unique byte for byte",
        &make,
        user_name_taken,
    )
    .await;
    case("unknown ids find nothing", &make, unknown_ids).await;
    case("friendship is mutual and idempotent", &make, friendship).await;
    case("friends are ordered by id", &make, friends_ordered).await;
    case("a group starts with its creator", &make, create_group).await;
    case("group names are unique", &make, group_name_taken).await;
    case("members are added once, ordered by id", &make, add_member).await;
    case("groups of a user, ordered, with members", &make, groups_of).await;
    case(
        "offline messages come back oldest first",
        &make,
        offline_order,
    )
    .await;
    case(
        "delete removes only the given messages",
        &make,
        offline_delete,
    )
    .await;
    case(
        "offline ids grow past deleted ones",
        &make,
        offline_ids_grow,
    )
    .await;
    case("text that looks like SQL round-trips", &make, tricky_texts).await;
    case("large payloads and many messages", &make, sizes).await;
}

/// Runs one case on a fresh store, with its name in the test's output so a
/// failure says which promise was broken.
async fn case<S, F, Fut, C, CFut>(name: &str, make: &F, body: C)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    C: FnOnce(S) -> CFut,
    CFut: Future<Output = ()>,
{
    eprintln!("store suite: {name}");
    let store = make().await;
    body(store).await;
    eprintln!("store suite: {name}: ok");
}

async fn users_round_trip<S: Store>(store: S) {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaC8rPQ";
    let alice = ok(store.create_user("alice", hash).await, "create alice");
    let bob = ok(store.create_user("bob", "other-hash").await, "create bob");
    assert_ne!(alice, bob, "two users got the same id");

    let found = ok(store.user(alice).await, "look up alice");
    let expected = UserRecord {
        id: alice,
        name: "alice".into(),
        password_hash: hash.into(),
    };
    assert_eq!(found, Some(expected), "alice does not read back as written");

    let found = ok(store.user(bob).await, "look up bob");
    assert_eq!(
        found.map(|u| u.name),
        Some("bob".to_owned()),
        "bob reads back wrong"
    );
}

async fn user_name_taken<S: Store>(store: S) {
    let alice = ok(store.create_user("alice", "h1").await, "create alice");

    let again = store.create_user("alice", "h2").await;
    assert_name_taken(again, "a second user named alice");
    let kept = ok(store.user(alice).await, "look up alice");
    assert_eq!(
        kept.map(|u| u.password_hash),
        Some("h1".to_owned()),
        "the taken name changed"
    );

    // Names compare as bytes: case, trailing blanks and accents make
    // different names, as they do in every store.
    for other in ["Alice", "ALICE", "alice ", " alice", "alicé"] {
        ok(
            store.create_user(other, "h").await,
            &format!("create {other:?} next to alice"),
        );
    }
}

async fn unknown_ids<S: Store>(store: S) {
    let alice = ok(store.create_user("alice", "h").await, "create alice");
    let nobody: UserId = alice + 1_000_000;

    assert_eq!(ok(store.user(nobody).await, "unknown user"), None);
    assert_eq!(ok(store.user(0).await, "user 0"), None);
    assert_eq!(ok(store.user(-1).await, "user -1"), None);
    assert_eq!(ok(store.group(1_000_000).await, "unknown group"), None);
    assert_eq!(
        ok(store.members(1_000_000).await, "members of unknown group"),
        vec![]
    );
    assert_eq!(
        ok(
            store.member_ids(1_000_000).await,
            "member ids of unknown group"
        ),
        Vec::<UserId>::new()
    );
    assert_eq!(
        ok(store.friends(nobody).await, "friends of unknown user"),
        vec![]
    );
    assert_eq!(ok(store.friends(alice).await, "friends of a loner"), vec![]);
    assert_eq!(
        ok(store.groups_of(alice).await, "groups of a loner"),
        vec![]
    );
    assert_eq!(
        ok(
            store.offline(alice, usize::MAX).await,
            "offline of a new user"
        ),
        vec![]
    );
    assert_eq!(
        ok(
            store.offline(nobody, usize::MAX).await,
            "offline of unknown user"
        ),
        vec![]
    );
}

async fn friendship<S: Store>(store: S) {
    let alice = ok(store.create_user("alice", "h").await, "create alice");
    let bob = ok(store.create_user("bob", "h").await, "create bob");

    assert!(
        ok(store.add_friendship(alice, bob).await, "befriend"),
        "first befriend not new"
    );
    assert!(
        !ok(store.add_friendship(alice, bob).await, "befriend again"),
        "second was new"
    );
    assert!(
        !ok(store.add_friendship(bob, alice).await, "befriend back"),
        "reverse was new"
    );

    let of_alice = ok(store.friends(alice).await, "friends of alice");
    assert_eq!(of_alice, vec![(bob, "bob".to_owned())], "alice's friends");
    let of_bob = ok(store.friends(bob).await, "friends of bob");
    assert_eq!(
        of_bob,
        vec![(alice, "alice".to_owned())],
        "bob's friends: not mutual"
    );
}

async fn friends_ordered<S: Store>(store: S) {
    let users = create_users(&store, &["u1", "u2", "u3", "u4"]).await;
    let [u1, u2, u3, u4] = [users[0], users[1], users[2], users[3]];

    // Befriended out of id order, from both sides.
    ok(store.add_friendship(u1, u4).await, "u1-u4");
    ok(store.add_friendship(u3, u1).await, "u3-u1");
    ok(store.add_friendship(u1, u2).await, "u1-u2");

    let friends = ok(store.friends(u1).await, "friends of u1");
    let expected = vec![
        (u2, "u2".to_owned()),
        (u3, "u3".to_owned()),
        (u4, "u4".to_owned()),
    ];
    assert_eq!(friends, expected, "friends must be ordered by id");
    assert_eq!(
        ok(store.friends(u2).await, "friends of u2"),
        vec![(u1, "u1".to_owned())]
    );
}

async fn create_group<S: Store>(store: S) {
    let alice = ok(store.create_user("alice", "h").await, "create alice");

    let group = ok(
        store.create_group(alice, "rust", "about rust").await,
        "create group",
    );
    let record = ok(store.group(group).await, "look up group");
    let expected = GroupRecord {
        id: group,
        name: "rust".into(),
        desc: "about rust".into(),
    };
    assert_eq!(record, Some(expected.clone()), "group reads back wrong");

    let creator = MemberRecord {
        id: alice,
        name: "alice".into(),
        role: Role::Creator,
    };
    let members = ok(store.members(group).await, "members");
    assert_eq!(
        members,
        vec![creator.clone()],
        "the creator must be the only member"
    );
    let groups = ok(store.groups_of(alice).await, "groups of alice");
    assert_eq!(
        groups,
        vec![GroupWithMembers {
            group: expected,
            members: vec![creator]
        }]
    );

    // An empty description is a description.
    let quiet = ok(
        store.create_group(alice, "quiet", "").await,
        "create quiet group",
    );
    let record = ok(store.group(quiet).await, "look up quiet group");
    assert_eq!(
        record.map(|g| g.desc),
        Some(String::new()),
        "empty description"
    );
}

async fn group_name_taken<S: Store>(store: S) {
    let alice = ok(store.create_user("alice", "h").await, "create alice");
    let bob = ok(store.create_user("bob", "h").await, "create bob");
    let group = ok(
        store.create_group(alice, "rust", "first").await,
        "create group",
    );

    assert_name_taken(
        store.create_group(bob, "rust", "second").await,
        "a second group rust",
    );

    // The failed creation left nothing behind: bob joined no group and the
    // first group kept its description and single member.
    assert_eq!(
        ok(store.groups_of(bob).await, "groups of bob"),
        vec![],
        "half-made group"
    );
    let record = ok(store.group(group).await, "look up group");
    assert_eq!(
        record.map(|g| g.desc),
        Some("first".to_owned()),
        "the taken group changed"
    );
    assert_eq!(
        ok(store.members(group).await, "members").len(),
        1,
        "members changed"
    );

    // A group name may equal a user name, and differs from its other cases.
    ok(
        store.create_group(bob, "alice", "").await,
        "group named like a user",
    );
    ok(
        store.create_group(bob, "Rust", "").await,
        "group named Rust next to rust",
    );
}

async fn add_member<S: Store>(store: S) {
    let users = create_users(&store, &["u1", "u2", "u3", "u4"]).await;
    let [u1, u2, u3, u4] = [users[0], users[1], users[2], users[3]];
    let group = ok(store.create_group(u3, "g", "").await, "create group");

    // Joined out of id order.
    for user in [u4, u1, u2] {
        assert!(
            ok(store.add_member(group, user, Role::Normal).await, "join"),
            "join not new"
        );
    }
    assert!(
        !ok(
            store.add_member(group, u1, Role::Normal).await,
            "join again"
        ),
        "rejoin new"
    );
    assert!(
        !ok(
            store.add_member(group, u3, Role::Normal).await,
            "creator joins"
        ),
        "creator"
    );
    assert!(
        !ok(
            store.add_member(group, u2, Role::Creator).await,
            "join as creator"
        ),
        "role"
    );

    let members = ok(store.members(group).await, "members");
    let expected = vec![
        MemberRecord {
            id: u1,
            name: "u1".into(),
            role: Role::Normal,
        },
        MemberRecord {
            id: u2,
            name: "u2".into(),
            role: Role::Normal,
        },
        MemberRecord {
            id: u3,
            name: "u3".into(),
            role: Role::Creator,
        },
        MemberRecord {
            id: u4,
            name: "u4".into(),
            role: Role::Normal,
        },
    ];
    assert_eq!(
        members, expected,
        "members must be ordered by id, roles kept"
    );
    assert_eq!(
        ok(store.member_ids(group).await, "member ids"),
        vec![u1, u2, u3, u4],
        "member ids must be the members', ordered"
    );
}

async fn groups_of<S: Store>(store: S) {
    let users = create_users(&store, &["u1", "u2", "u3"]).await;
    let [u1, u2, u3] = [users[0], users[1], users[2]];
    let first = ok(store.create_group(u2, "first", "1").await, "create first");
    let second = ok(store.create_group(u3, "second", "2").await, "create second");
    let _other = ok(store.create_group(u3, "other", "3").await, "create other");

    // u1 joins the later group first.
    ok(
        store.add_member(second, u1, Role::Normal).await,
        "join second",
    );
    ok(
        store.add_member(first, u1, Role::Normal).await,
        "join first",
    );

    let groups = ok(store.groups_of(u1).await, "groups of u1");
    let member = |id, name: &str, role| MemberRecord {
        id,
        name: name.into(),
        role,
    };
    let expected = vec![
        GroupWithMembers {
            group: GroupRecord {
                id: first,
                name: "first".into(),
                desc: "1".into(),
            },
            members: vec![
                member(u1, "u1", Role::Normal),
                member(u2, "u2", Role::Creator),
            ],
        },
        GroupWithMembers {
            group: GroupRecord {
                id: second,
                name: "second".into(),
                desc: "2".into(),
            },
            members: vec![
                member(u1, "u1", Role::Normal),
                member(u3, "u3", Role::Creator),
            ],
        },
    ];
    assert_eq!(
        groups, expected,
        "groups ordered by id, each with all members by id"
    );

    let of_u3 = ok(store.groups_of(u3).await, "groups of u3");
    let names: Vec<_> = of_u3.iter().map(|g| g.group.name.as_str()).collect();
    assert_eq!(names, ["second", "other"], "u3's groups by id");
}

async fn offline_order<S: Store>(store: S) {
    let users = create_users(&store, &["a", "b", "c"]).await;
    let [a, b, c] = [users[0], users[1], users[2]];

    ok(store.store_offline(&[a, b], "first").await, "store first");
    ok(store.store_offline(&[b], "second").await, "store second");
    ok(store.store_offline(&[a], "third").await, "store third");
    ok(
        store.store_offline(&[], "to nobody").await,
        "store for no user",
    );

    assert_payloads(&store, a, &["first", "third"]).await;
    assert_payloads(&store, b, &["first", "second"]).await;
    assert_payloads(&store, c, &[]).await;

    // Reading does not remove.
    assert_payloads(&store, a, &["first", "third"]).await;

    // A limit gives the oldest.
    let oldest: Vec<String> = ok(store.offline(b, 1).await, "read one of b")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(
        oldest,
        vec!["first".to_owned()],
        "a limit of 1 gives the oldest message"
    );
    assert!(
        ok(store.offline(b, 0).await, "read none of b").is_empty(),
        "a limit of 0 gives none"
    );
}

async fn offline_delete<S: Store>(store: S) {
    let users = create_users(&store, &["a", "b"]).await;
    let [a, b] = [users[0], users[1]];
    ok(store.store_offline(&[a, b], "one").await, "store one");
    ok(store.store_offline(&[a, b], "two").await, "store two");

    // A message stored between the read and the delete must survive.
    let read = ok(store.offline(a, usize::MAX).await, "read a");
    ok(store.store_offline(&[a], "late").await, "store late");
    let ids: Vec<i64> = read.iter().map(|m| m.id).collect();
    ok(store.delete_offline(a, &ids).await, "delete read");
    assert_payloads(&store, a, &["late"]).await;
    assert_payloads(&store, b, &["one", "two"]).await;

    // Another user's ids do not delete their messages.
    let of_b: Vec<i64> = ok(store.offline(b, usize::MAX).await, "read b")
        .iter()
        .map(|m| m.id)
        .collect();
    ok(store.delete_offline(a, &of_b).await, "delete b's ids as a");
    assert_payloads(&store, b, &["one", "two"]).await;

    // Nothing, unknown ids and already deleted ids are fine.
    ok(store.delete_offline(a, &[]).await, "delete nothing");
    ok(store.delete_offline(a, &ids).await, "delete again");
    ok(
        store.delete_offline(a, &[i64::MAX, -1]).await,
        "delete unknown ids",
    );
    assert_payloads(&store, a, &["late"]).await;

    let last: Vec<i64> = ok(store.offline(b, usize::MAX).await, "read b")
        .iter()
        .map(|m| m.id)
        .collect();
    ok(
        store.delete_offline(b, &last[1..]).await,
        "delete b's newest",
    );
    assert_payloads(&store, b, &["one"]).await;
}

async fn offline_ids_grow<S: Store>(store: S) {
    let a = ok(store.create_user("a", "h").await, "create a");
    ok(store.store_offline(&[a], "one").await, "store one");
    let first = ok(store.offline(a, usize::MAX).await, "read one");
    let first_id = first
        .first()
        .map(|m| m.id)
        .unwrap_or_else(|| panic!("one is missing"));

    // An id is never given twice, even once the newest message is gone, so
    // a late delete of handed-over ids cannot hit a newer message.
    ok(store.delete_offline(a, &[first_id]).await, "delete one");
    ok(store.store_offline(&[a], "two").await, "store two");
    let second = ok(store.offline(a, usize::MAX).await, "read two");
    assert_eq!(second.len(), 1, "exactly the new message");
    assert!(
        second[0].id > first_id,
        "id {} reused after {first_id}",
        second[0].id
    );
}

async fn tricky_texts<S: Store>(store: S) {
    let reader = ok(store.create_user("reader", "h").await, "create reader");
    for (i, text) in TRICKY_TEXTS.iter().enumerate() {
        let user = ok(
            store.create_user(text, text).await,
            &format!("create user {text:?}"),
        );
        let found = ok(store.user(user).await, "look up").map(|u| (u.name, u.password_hash));
        assert_eq!(
            found,
            Some((text.to_string(), text.to_string())),
            "user {text:?}"
        );

        let group = ok(store.create_group(user, text, text).await, "create group");
        let found = ok(store.group(group).await, "look up group").map(|g| (g.name, g.desc));
        assert_eq!(
            found,
            Some((text.to_string(), text.to_string())),
            "group {text:?}"
        );
        ok(store.add_member(group, reader, Role::Normal).await, "join");

        ok(store.add_friendship(reader, user).await, "befriend");
        ok(store.store_offline(&[reader, user], text).await, "store");
        assert_eq!(
            ok(store.offline(reader, usize::MAX).await, "read").len(),
            i + 1,
            "messages kept"
        );
    }

    // Every table is still there and every string came back as written.
    let friends = ok(store.friends(reader).await, "friends of reader");
    let names: Vec<&str> = friends.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(names, TRICKY_TEXTS, "friend names");
    let groups = ok(store.groups_of(reader).await, "groups of reader");
    let names: Vec<&str> = groups.iter().map(|g| g.group.name.as_str()).collect();
    assert_eq!(names, TRICKY_TEXTS, "group names");
    for group in &groups {
        let creator = group.members.iter().find(|m| m.role == Role::Creator);
        assert_eq!(
            creator.map(|m| &m.name),
            Some(&group.group.name),
            "member names"
        );
    }
    assert_payloads(&store, reader, TRICKY_TEXTS).await;
    ok(
        store.create_user("after", "h").await,
        "the user table is still there",
    );
}

async fn sizes<S: Store>(store: S) {
    let a = ok(store.create_user("a", "h").await, "create a");
    let b = ok(store.create_user("b", "h").await, "create b");

    // Exactly 60,000 bytes, mixing one-, three- and four-byte characters.
    let unit = "x'\"\\;张😀"; // 1+1+1+1+1+3+4 = 12 bytes
    let large = unit.repeat(5_000);
    assert_eq!(large.len(), 60_000, "the test payload's own size");
    let larger = "描".repeat(100_000); // 300,000 bytes, past any 64 KiB column
    ok(
        store.store_offline(&[a, b], &large).await,
        "store 60,000 bytes",
    );
    ok(
        store.store_offline(&[a], &larger).await,
        "store 300,000 bytes",
    );
    assert_payloads(&store, a, &[large.as_str(), larger.as_str()]).await;
    assert_payloads(&store, b, &[large.as_str()]).await;

    // 300 messages arrive in the order stored, then all go at once.
    let texts: Vec<String> = (0..300).map(|i| format!("message {i} 😀")).collect();
    for text in &texts {
        ok(store.store_offline(&[b], text).await, "store one of 300");
    }
    let mut expected = vec![large.as_str()];
    expected.extend(texts.iter().map(String::as_str));
    assert_payloads(&store, b, &expected).await;

    let ids: Vec<i64> = ok(store.offline(b, usize::MAX).await, "read b")
        .iter()
        .map(|m| m.id)
        .collect();
    ok(store.delete_offline(b, &ids).await, "delete 301");
    assert_payloads(&store, b, &[]).await;
    assert_payloads(&store, a, &[large.as_str(), larger.as_str()]).await;
}

/// Registers users with the given names, returning their ids in order.
async fn create_users<S: Store>(store: &S, names: &[&str]) -> Vec<UserId> {
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        ids.push(ok(
            store.create_user(name, "h").await,
            &format!("create {name}"),
        ));
    }
    ids
}

/// Checks `user`'s offline payloads, and that their ids strictly grow.
async fn assert_payloads<S: Store>(store: &S, user: UserId, expected: &[&str]) {
    let records = ok(store.offline(user, usize::MAX).await, "read offline");
    let payloads: Vec<&str> = records.iter().map(|m| m.payload.as_str()).collect();
    if payloads != expected {
        let shorten = |p: &&str| p.chars().take(40).collect::<String>();
        let got: Vec<String> = payloads.iter().map(shorten).collect();
        let want: Vec<String> = expected.iter().map(shorten).collect();
        panic!("offline of user {user}: got {got:?}, want {want:?} (shortened to 40 chars)");
    }
    for pair in records.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "offline ids must grow: {:?}",
            (pair[0].id, pair[1].id)
        );
    }
}

fn assert_name_taken<T: Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::NameTaken) => {}
        other => panic!("{what}: want NameTaken, got {other:?}"),
    }
}

/// The value of a store call that must succeed, or a panic saying which.
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err} ({err:?})"))
}
