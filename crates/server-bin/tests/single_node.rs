//! A single server end to end: sessions, groups, framings, limits and the
//! process's own life (restart, signals), on each transport.

mod support;

use std::time::Duration;

use chat_proto::{ErrorCode, Presence, Request, Role, ServerMsg};
use support::{delivered_text, error_code, Server};

fn a_second_login_is_refused_until_the_first_connection_closes(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let a = server.register("a");
    let mut first = server.connect();
    first.login(a);
    let mut second = server.connect();
    let reply = second.call(Request::Login {
        id: a,
        password: "pw".into(),
        version: 1,
    });
    assert_eq!(error_code(&reply), ErrorCode::AlreadyOnline);
    assert_eq!(
        error_code(&first.call(Request::Login {
            id: a,
            password: "pw".into(),
            version: 1
        })),
        ErrorCode::SessionActive
    );

    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match second.call(Request::Login {
            id: a,
            password: "pw".into(),
            version: 1,
        }) {
            ServerMsg::LoginAck(Ok(_)) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still refused: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn requests_before_login_are_refused_but_ping_works(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let mut x = server.connect();
    assert_eq!(x.call(Request::Ping), ServerMsg::Pong);
    for request in [
        Request::List,
        Request::Logout,
        Request::AddFriend { friend: 1 },
        Request::CreateGroup {
            name: "g".into(),
            desc: String::new(),
        },
        Request::AddGroup { group: 1 },
        Request::GroupChat {
            group: 1,
            text: "t".into(),
        },
    ] {
        assert_eq!(error_code(&x.call(request)), ErrorCode::NotLoggedIn);
    }
}

fn registration_rules(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let mut x = server.connect();
    let bad = |name: &str, password: &str| Request::Register {
        name: name.into(),
        password: password.into(),
    };
    for request in [
        bad("", "pw"),
        bad(&"n".repeat(33), "pw"),
        bad("tab\there", "pw"),
        bad(" pad", "pw"),
        bad("ok", ""),
    ] {
        assert_eq!(
            error_code(&x.call(request.clone())),
            ErrorCode::Invalid,
            "{request:?}"
        );
    }
    assert!(
        x.register(&"长".repeat(32), "pw") > 0,
        "32 characters of any script"
    );
    x.register("dup", "pw");
    assert_eq!(error_code(&x.call(bad("dup", "pw"))), ErrorCode::NameTaken);
}

fn group_chat_reaches_members_live_and_offline(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let (a, b, c, d) = (
        server.register("a"),
        server.register("b"),
        server.register("c"),
        server.register("d"),
    );
    let mut pa = server.connect();
    pa.login(a);
    let group = match pa.call(Request::CreateGroup {
        name: "team".into(),
        desc: "all of us".into(),
    }) {
        ServerMsg::CreateGroupAck { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let mut pb = server.connect();
    pb.login(b);
    match pb.call(Request::AddGroup { group }) {
        ServerMsg::AddGroupAck(g) => {
            let roles: Vec<(i64, Role, Presence)> =
                g.members.iter().map(|m| (m.id, m.role, m.state)).collect();
            assert_eq!(
                roles,
                vec![
                    (a, Role::Creator, Presence::Online),
                    (b, Role::Normal, Presence::Online)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    let mut pc = server.connect();
    pc.login(c);
    assert!(matches!(
        pc.call(Request::AddGroup { group }),
        ServerMsg::AddGroupAck(_)
    ));
    pc.logout();

    assert!(matches!(
        pa.call(Request::GroupChat {
            group,
            text: "hello team".into()
        }),
        ServerMsg::ChatAck { .. }
    ));
    match pb.recv() {
        ServerMsg::Deliver(d) => match &*d {
            chat_proto::Delivery::Group(m) => {
                assert_eq!(
                    (m.from, m.from_name.as_str(), m.group, m.text.as_str()),
                    (a, "a", group, "hello team")
                )
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(
        pa.is_quiet(Duration::from_millis(200)),
        "the sender does not get its own message"
    );

    let login = pc.login(c);
    assert_eq!(login.offline.len(), 1);
    assert_eq!(
        delivered_text(&ServerMsg::Deliver(login.offline[0].clone())),
        "hello team"
    );
    assert_eq!(login.groups.len(), 1);

    let mut pd = server.connect();
    pd.login(d);
    let reply = pd.call(Request::GroupChat {
        group,
        text: "let me in".into(),
    });
    assert_eq!(error_code(&reply), ErrorCode::NotMember);
    assert_eq!(
        error_code(&pd.call(Request::GroupChat {
            group: 999,
            text: "x".into()
        })),
        ErrorCode::NoSuchGroup
    );
}

fn friends_show_their_online_state(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let (a, b) = (server.register("a"), server.register("b"));
    let mut pa = server.connect();
    pa.login(a);
    match pa.call(Request::AddFriend { friend: b }) {
        ServerMsg::AddFriendAck(f) => assert_eq!(f.state, Presence::Offline),
        other => panic!("{other:?}"),
    }
    let mut pb = server.connect();
    let login = pb.login(b);
    assert_eq!(
        (login.friends[0].id, login.friends[0].state),
        (a, Presence::Online)
    );
    match pa.call(Request::List) {
        ServerMsg::ListAck { friends, .. } => assert_eq!(friends[0].state, Presence::Online),
        other => panic!("{other:?}"),
    }
}

fn reference_clients_get_list_items_as_strings(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let (a, b) = (server.register("a"), server.register("b"));
    let mut pa = server.connect();
    pa.login(a);
    assert!(matches!(
        pa.call(Request::AddFriend { friend: b }),
        ServerMsg::AddFriendAck(_)
    ));
    assert!(matches!(
        pa.call(Request::CreateGroup {
            name: "g".into(),
            desc: "d".into()
        }),
        ServerMsg::CreateGroupAck { .. }
    ));
    pa.chat(b, "offline one");

    let mut pb = server.connect();
    pb.send_raw(format!("{{\"msgid\":1,\"id\":{b},\"password\":\"pw\"}}").as_bytes());
    let ack = pb.recv_json();
    assert_eq!(ack["errno"], 0);
    let friend: serde_json::Value =
        serde_json::from_str(ack["friends"][0].as_str().expect("friend as a string"))
            .expect("holds JSON");
    assert_eq!(
        (friend["id"].as_i64(), friend["state"].as_str()),
        (Some(a), Some("online"))
    );
    let offline: serde_json::Value =
        serde_json::from_str(ack["offlinemsg"][0].as_str().expect("message as a string"))
            .expect("holds JSON");
    assert_eq!(
        (offline["msgid"].as_i64(), offline["msg"].as_str()),
        (Some(6), Some("offline one"))
    );
}

fn length_prefixed_clients_chat_with_stream_clients(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let mut pa = server.connect_length();
    let a = pa.register("a", "pw");
    let b = server.register("b");
    pa.login(a);
    let mut pb = server.connect();
    pb.login(b);
    pa.chat(b, "from a length-prefixed client");
    assert_eq!(delivered_text(&pb.recv()), "from a length-prefixed client");
    pb.chat(a, "from a stream client");
    assert_eq!(delivered_text(&pa.recv()), "from a stream client");
}

fn a_silent_client_is_disconnected_and_logged_out(t: &str) {
    let server = Server::start_with(&["--transport", t, "--idle-timeout", "5"]);
    let a = server.register("a");
    let mut silent = server.connect();
    silent.login(a);
    let mut pinger = server.connect();
    for _ in 0..7 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            pinger.call(Request::Ping),
            ServerMsg::Pong,
            "a pinging client stays"
        );
    }
    assert!(
        silent.recv_payload().is_none(),
        "the silent connection was closed"
    );
    pinger.login(a);
}

fn a_client_that_stops_reading_is_cut_off_and_its_messages_kept(t: &str) {
    let server = Server::start_with(&["--transport", t, "--outbound-queue", "16"]);
    let (a, b) = (server.register("a"), server.register("b"));
    let mut pb = server.connect();
    pb.login(b);
    let mut pa = server.connect();
    pa.login(a);
    let text = "z".repeat(60_000);
    for _ in 0..400 {
        pa.chat(b, &text);
    }
    pa.chat(b, "last");
    // B's connection is closed by the server once its queue overflowed;
    // what was queued before is still flushed to it.
    while pb.recv_payload().is_some() {}
    let mut again = server.connect();
    let login = again.login(b);
    let last = login
        .offline
        .last()
        .expect("messages after the cut-off were kept");
    assert_eq!(delivered_text(&ServerMsg::Deliver(last.clone())), "last");
    // Said once, however many messages found the queue full before the
    // close.
    let warnings = server
        .log()
        .iter()
        .filter(|line| line.contains("does not read its messages"))
        .count();
    assert_eq!(warnings, 1, "{:#?}", server.log());
}

fn data_survives_a_restart_and_sigterm_is_clean(t: &str) {
    let server = Server::start_with(&["--transport", t]);
    let (a, b) = (server.register("a"), server.register("b"));
    let mut pa = server.connect();
    pa.login(a);
    assert!(matches!(
        pa.call(Request::AddFriend { friend: b }),
        ServerMsg::AddFriendAck(_)
    ));
    pa.chat(b, "kept across the restart");

    let (status, took, dir) = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        pa.recv_payload().is_none(),
        "connections are closed at shutdown"
    );

    let server = Server::start_in(dir, &["--transport", t]);
    let mut pb = server.connect();
    let login = pb.login(b);
    assert_eq!(login.friends[0].id, a);
    assert_eq!(
        delivered_text(&ServerMsg::Deliver(login.offline[0].clone())),
        "kept across the restart"
    );
    let mut pa = server.connect();
    pa.login(a);
}

/// Runs `chat-server` with `args` and the SQLite store `db`, which must
/// fail to start; its standard error.
fn fails_to_start(args: &[&str], db: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .env_remove("CHAT_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("chat-server runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it started: {stderr}");
    stderr
}

#[test]
fn a_server_that_cannot_start_says_why_once_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no such dir").join("chat.db");
    let stderr = fails_to_start(&["--listen", "127.0.0.1:0"], &missing);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(last.contains(&missing.display().to_string()), "{stderr}");
    assert_eq!(
        last.matches("unable to open database file:").count(),
        1,
        "each cause once: {stderr}"
    );
}

#[test]
fn a_taken_port_is_said_before_any_data_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let stderr = fails_to_start(&["--listen", &addr], &db);
    assert!(
        stderr.starts_with(&format!("error: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!db.exists(), "no store was created");
}

#[test]
fn an_unreachable_redis_is_said_before_any_data_is_created() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port, closed again at once");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("chat.db");
    let bus = format!("redis://{closed}");
    let stderr = fails_to_start(&["--listen", "127.0.0.1:0", "--bus", &bus], &db);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot connect to Redis"),
        "{stderr}"
    );
    assert!(
        !last.contains("Os {"),
        "readable, not debug output: {stderr}"
    );
    assert!(!db.exists(), "no store was created");
}

/// Runs every test above on one transport, in a module named after it.
macro_rules! transports {
    ($($transport:ident),*) => {
        $(
            mod $transport {
                tests!(@each $transport; a_second_login_is_refused_until_the_first_connection_closes, requests_before_login_are_refused_but_ping_works, registration_rules, group_chat_reaches_members_live_and_offline, friends_show_their_online_state, reference_clients_get_list_items_as_strings, length_prefixed_clients_chat_with_stream_clients, a_silent_client_is_disconnected_and_logged_out, a_client_that_stops_reading_is_cut_off_and_its_messages_kept, data_survives_a_restart_and_sigterm_is_clean);
            }
        )*
    };
}

macro_rules! tests {
    (@each $transport:ident; $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                super::$test(stringify!($transport));
            }
        )*
    };
}

transports!(tokio, mio);
