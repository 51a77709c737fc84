//! The handed fault cases (C01–C10), run against every deployment built
//! here: one server or a cluster of two, clients of either framing. A
//! failure names the combination (`mio_mysql_redis_protobuf::c04_...`).
//!
//! Each case names a whole kind of fault that broke servers of this kind;
//! the expected values are the ones the cases prescribe.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use chat_proto::Framing;
use chat_proto::{Delivery, ErrorCode, MsgId, Request, ServerMsg};
use support::cluster::{BusKind, Deployment, Layers, StoreKind, TransportKind};
use support::{delivered_text, error_code, Wire};

fn c01_two_requests_in_one_write_get_two_replies(d: &Deployment) {
    let mut x = d.connect(0);
    let mut bytes = x.frame(&Request::Register {
        name: "a".into(),
        password: "pw".into(),
    });
    bytes.extend(x.frame(&Request::Register {
        name: "b".into(),
        password: "pw".into(),
    }));
    x.send_raw(&bytes);
    let (ServerMsg::RegAck(Ok(a)), ServerMsg::RegAck(Ok(b))) = (x.recv(), x.recv()) else {
        panic!("expected two REG_ACKs");
    };
    assert_ne!(a, b);
}

fn c01_a_request_split_across_a_pause_is_one_request(d: &Deployment) {
    let a = d.register("a");
    let mut x = d.connect(0);
    let bytes = x.frame(&Request::Login {
        id: a,
        password: "pw".into(),
        version: 1,
    });
    x.send_raw(&bytes[..10]);
    std::thread::sleep(Duration::from_millis(200));
    x.send_raw(&bytes[10..]);
    assert!(matches!(x.recv(), ServerMsg::LoginAck(Ok(_))));
    assert!(
        x.is_quiet(Duration::from_millis(200)),
        "no error after the split request"
    );
}

fn c01_nul_terminated_requests_as_the_reference_client_sends(d: &Deployment) {
    let mut x = d.connect_with(0, Framing::Stream);
    x.send_raw(b"{\"msgid\":4,\"name\":\"a\",\"password\":\"pw\"}\0{\"msgid\":15}\0");
    assert!(matches!(x.recv(), ServerMsg::RegAck(Ok(_))));
    assert_eq!(x.recv(), ServerMsg::Pong);
    assert!(x.is_quiet(Duration::from_millis(200)));
}

fn c01_a_thousand_messages_in_one_write_arrive_in_order(d: &Deployment) {
    let (a, b) = (d.register("a"), d.register("b"));
    let mut pa = d.connect(0);
    pa.login(a);
    let mut pb = d.connect(1);
    pb.login(b);
    let mut bytes = Vec::new();
    for i in 0..1000 {
        bytes.extend(pa.frame(&Request::OneChat {
            to: b,
            text: format!("m{i}"),
        }));
    }
    pa.send_raw(&bytes);
    for i in 0..1000 {
        assert_eq!(delivered_text(&pb.recv()), format!("m{i}"));
    }
    for _ in 0..1000 {
        assert!(matches!(pa.recv(), ServerMsg::ChatAck { .. }));
    }
}

fn c01_requests_before_a_half_close_are_answered(d: &Deployment) {
    // `printf ... | nc -q1 host port` sends its requests and shuts down its
    // sending side: the replies must still come, then the close.
    let a = d.register("a");
    let mut x = d.connect(0);
    let mut bytes = x.frame(&Request::Login {
        id: a,
        password: "pw".into(),
        version: 1,
    });
    for _ in 0..200 {
        bytes.extend(x.frame(&Request::Ping));
    }
    x.send_raw(&bytes);
    x.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(matches!(x.recv(), ServerMsg::LoginAck(Ok(_))));
    for i in 0..200 {
        assert_eq!(x.recv(), ServerMsg::Pong, "pong {i}");
    }
    assert_eq!(
        x.recv_payload(),
        None,
        "the server closes after the replies"
    );
    // The session ended with the connection: the user can log in again.
    let mut y = d.connect(1);
    y.login(a);
}

fn c02_malformed_input_is_answered_and_hurts_nobody_else(d: &Deployment) {
    let (a, b) = (d.register("a"), d.register("b"));
    let mut pa = d.connect(0);
    pa.login(a);
    let mut pb = d.connect(1);
    pb.login(b);

    // Each frame on its own line, so that the stream decoder can resync
    // after a broken object as it would for a person typing into nc.
    let frames: [&[u8]; 9] = [
        b"{\"msgid\":\n",
        b"hello\n",
        b"[]\n",
        b"{}\n",
        b"{\"foo\":1}\n",
        b"{\"msgid\":\"1\"}\n",
        b"{\"msgid\":99999}\n",
        b"{\"msgid\":1,\"id\":\"abc\",\"password\":1}\n",
        b"{\"msgid\":4,\"name\":\"\xff\xfe\",\"password\":\"pw\"}\n",
    ];
    let mut x = d.connect_with(0, Framing::Stream);
    x.send_raw(b"{\"msgid\":15}\n");
    assert_eq!(x.recv(), ServerMsg::Pong);
    for (i, frame) in frames.iter().enumerate() {
        x.send_raw(frame);
        if i == 0 {
            // A cut-short object is only known to be broken when the next
            // bytes arrive; the next frame completes its error.
            continue;
        }
        let reply = x.recv();
        assert!(
            matches!(reply, ServerMsg::Error { .. }),
            "frame {i}: {reply:?}"
        );
    }
    x.send_raw(b"{\"msgid\":15}\n");
    assert_eq!(x.recv(), ServerMsg::Pong, "X still works");

    // Each malformed frame on a length-prefixed connection too.
    let mut y = d.connect_with(1, Framing::Length);
    for frame in frames {
        let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(frame);
        y.send_raw(&bytes);
        assert!(
            matches!(y.recv(), ServerMsg::Error { .. }),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
    }

    // Bytes that fit no framing: an error, then that connection alone closes.
    let mut z = d.connect_with(1, Framing::Stream);
    z.send_raw(b"\xff\xfe garbage");
    assert!(matches!(z.recv(), ServerMsg::Error { .. }));
    assert!(z.recv_payload().is_none(), "connection closed");

    // A flood of it (a file sent to the wrong port), sent whole before
    // anything is read, as `nc` does: the server reads and drops the rest
    // instead of resetting the connection, so the sender's writes succeed
    // and the error reply is there to read after them.
    let mut w = d.connect_with(1, Framing::Stream);
    let junk = vec![b'x'; 32 << 20];
    w.stream
        .write_all(&junk)
        .expect("the server takes what follows an unreadable frame");
    w.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(matches!(w.recv(), ServerMsg::Error { .. }));
    assert!(w.recv_payload().is_none(), "connection closed");

    pa.chat(b, "still here");
    assert_eq!(delivered_text(&pb.recv()), "still here");
}

fn c03_missing_or_mistyped_fields(d: &Deployment) {
    let (a, b) = (d.register("a"), d.register("b"));
    let mut pa = d.connect(0);
    pa.login(a);

    pa.send_json(b"{\"msgid\":8,\"groupname\":\"nodesc\"}");
    match pa.recv() {
        ServerMsg::CreateGroupAck { desc, .. } => assert_eq!(desc, ""),
        other => panic!("{other:?}"),
    }

    pa.send_json(format!("{{\"msgid\":6,\"to_id\":{b},\"msg\":\"x\"}}").as_bytes());
    match pa.recv() {
        ServerMsg::Error { failure, request } => {
            assert_eq!((failure.code, request), (ErrorCode::BadRequest, Some(6)));
            assert!(failure.message.contains("toid"), "{}", failure.message);
        }
        other => panic!("{other:?}"),
    }

    pa.send_json(format!("{{\"msgid\":6,\"toid\":\"{b}\",\"msg\":\"x\"}}").as_bytes());
    match pa.recv() {
        ServerMsg::Error { failure, .. } => {
            assert!(
                failure.message.contains("`toid` must be an integer"),
                "{}",
                failure.message
            )
        }
        other => panic!("{other:?}"),
    }
}

fn c04_one_connection_several_sessions(d: &Deployment) {
    let (a, b, c) = (d.register("a"), d.register("b"), d.register("c"));
    let mut pc = d.connect(1);
    pc.login(c);
    let mut x = d.connect(0);

    x.login(a);
    pc.chat(a, "to a 1");
    assert_eq!(delivered_text(&x.recv()), "to a 1");
    x.logout();
    pc.chat(a, "to a while out");
    let again = x.login(a);
    assert_eq!(again.offline.len(), 1);
    x.logout();
    pc.chat(a, "to a after switch");
    let as_b = x.login(b);
    assert!(as_b.offline.is_empty());
    pc.chat(b, "to b");
    pc.chat(a, "to a again");
    assert_eq!(delivered_text(&x.recv()), "to b");
    assert!(
        x.is_quiet(Duration::from_millis(300)),
        "nothing for A reaches B's session"
    );

    x.logout();
    let back = x.login(a);
    let texts: Vec<&str> = back
        .offline
        .iter()
        .map(|d| match &**d {
            Delivery::One(m) => m.text.as_str(),
            Delivery::Group(m) => m.text.as_str(),
        })
        .collect();
    assert_eq!(texts, ["to a after switch", "to a again"]);
}

fn c05_failed_logins_answer_fast_with_errno_1(d: &Deployment) {
    let a = d.register("a");
    let mut x = d.connect(0);
    for (id, password) in [
        (a, "wrong"),
        (999_999, "pw"),
        (0, "pw"),
        (-1, "pw"),
        (a, ""),
    ] {
        let started = Instant::now();
        let reply = x.call(Request::Login {
            id,
            password: password.into(),
            version: 1,
        });
        assert!(started.elapsed() < Duration::from_secs(1));
        match reply {
            ServerMsg::LoginAck(Err(f)) => {
                assert_eq!(f.code, ErrorCode::BadCredentials, "{id} {password:?}");
                assert!(!f.message.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
    x.login(a);
}

fn c06_text_that_looks_like_sql_is_only_text(d: &Deployment) {
    let (a, b) = (d.register("a"), d.register("b"));
    let obrien = d.register("O'Brien");
    let dropper = d.register("x'); DROP TABLE user;--");
    let mut po = d.connect(0);
    assert_eq!(po.login(obrien).name, "O'Brien");
    let mut pd = d.connect(1);
    assert_eq!(pd.login(dropper).name, "x'); DROP TABLE user;--");

    let text = r#"it's "quoted" \ back\slash 100% ; -- ' OR '1'='1"#;
    let mut pa = d.connect(0);
    pa.login(a);
    pa.chat(b, text);
    match pa.call(Request::CreateGroup {
        name: "g'1".into(),
        desc: "d".into(),
    }) {
        ServerMsg::CreateGroupAck { name, .. } => assert_eq!(name, "g'1"),
        other => panic!("{other:?}"),
    }
    let mut pb = d.connect(1);
    let login = pb.login(b);
    assert_eq!(login.offline.len(), 1);
    assert_eq!(
        delivered_text(&ServerMsg::Deliver(login.offline[0].clone())),
        text
    );
    // Every table still works.
    assert!(matches!(
        pa.call(Request::AddFriend { friend: b }),
        ServerMsg::AddFriendAck(_)
    ));
    assert!(matches!(pa.call(Request::List), ServerMsg::ListAck { .. }));
    assert!(d.register("later") > 0);
}

fn c07_sizes_up_to_the_limit_arrive_whole(d: &Deployment) {
    let (a, b, c) = (d.register("a"), d.register("b"), d.register("c"));
    let mut pa = d.connect(0);
    pa.login(a);
    let mut pb = d.connect(1);
    pb.login(b);
    let limit = 60 * 1024;
    let sizes = [900, 5_000, 60_000, limit];
    for size in sizes {
        let text = "x".repeat(size - 4) + "😀";
        pa.chat(b, &text);
        pa.chat(c, &text);
        assert_eq!(delivered_text(&pb.recv()), text, "{size} bytes live");
    }
    let too_long = "y".repeat(limit + 1);
    let reply = pa.call(Request::OneChat {
        to: b,
        text: too_long,
    });
    assert_eq!(error_code(&reply), ErrorCode::TooLong);
    if let ServerMsg::Error { failure, .. } = reply {
        assert!(failure.message.contains("too long"), "{}", failure.message);
    }
    pa.send(&Request::Ping);
    assert_eq!(pa.recv(), ServerMsg::Pong, "connection goes on");

    for i in 0..300 {
        pa.chat(c, &format!("n{i}"));
    }
    let mut pc = d.connect(1);
    let login = pc.login(c);
    let texts: Vec<String> = login
        .offline
        .iter()
        .map(|d| delivered_text(&ServerMsg::Deliver(d.clone())).to_owned())
        .collect();
    assert_eq!(texts.len(), sizes.len() + 300);
    for (i, size) in sizes.iter().enumerate() {
        assert_eq!(texts[i].len(), *size, "offline message {i}");
    }
    for i in 0..300 {
        assert_eq!(texts[sizes.len() + i], format!("n{i}"));
    }
}

fn c08_chinese_and_emoji_round_trip(d: &Deployment) {
    let zhang = d.register("张三");
    let (b, c) = (d.register("b"), d.register("c"));
    let mut pz = d.connect(0);
    assert_eq!(pz.login(zhang).name, "张三");
    let group = match pz.call(Request::CreateGroup {
        name: "测试群".into(),
        desc: "描述😀".into(),
    }) {
        ServerMsg::CreateGroupAck { id, name, desc } => {
            assert_eq!((name.as_str(), desc.as_str()), ("测试群", "描述😀"));
            id
        }
        other => panic!("{other:?}"),
    };
    let mut pb = d.connect(1);
    pb.login(b);
    match pb.call(Request::AddGroup { group }) {
        ServerMsg::AddGroupAck(g) => {
            assert_eq!((g.name.as_str(), g.desc.as_str()), ("测试群", "描述😀"));
            assert!(g.members.iter().any(|m| m.name == "张三"));
        }
        other => panic!("{other:?}"),
    }
    let text = "你好，世界😀";
    pz.chat(b, text);
    let got = pb.recv();
    assert_eq!(delivered_text(&got), text);
    if let ServerMsg::Deliver(d) = &got {
        assert!(matches!(&**d, Delivery::One(m) if m.from_name == "张三"));
    }
    pz.chat(c, text);
    assert!(matches!(
        pz.call(Request::GroupChat {
            group,
            text: text.into()
        }),
        ServerMsg::ChatAck { .. }
    ));
    assert_eq!(delivered_text(&pb.recv()), text);

    let mut pc = d.connect(1);
    let login = pc.login(c);
    assert_eq!(
        delivered_text(&ServerMsg::Deliver(login.offline[0].clone())),
        text
    );
    let relog = {
        pb.logout();
        pb.login(b)
    };
    assert_eq!(relog.groups[0].name, "测试群");
    assert_eq!(relog.groups[0].desc, "描述😀");
}

fn c09_identity_comes_from_the_session(d: &Deployment) {
    let (a, b, c) = (d.register("a"), d.register("b"), d.register("c"));
    let mut pb = d.connect(1);
    pb.login(b);

    let mut stranger = d.connect(1);
    // The first frame sets the connection's codec for its replies.
    assert_eq!(stranger.call(Request::Ping), ServerMsg::Pong);
    stranger.send_json(
        format!("{{\"msgid\":6,\"id\":{a},\"toid\":{b},\"msg\":\"forged\"}}").as_bytes(),
    );
    assert_eq!(error_code(&stranger.recv()), ErrorCode::NotLoggedIn);
    assert!(pb.is_quiet(Duration::from_millis(300)), "nothing delivered");

    let mut pc = d.connect(1);
    pc.login(c);
    pc.send_json(
        format!(
            "{{\"msgid\":6,\"id\":{a},\"name\":\"a\",\"time\":\"1999-01-01 00:00:00\",\"toid\":{b},\"msg\":\"hi\"}}"
        )
        .as_bytes(),
    );
    assert!(matches!(pc.recv(), ServerMsg::ChatAck { .. }));
    match pb.recv() {
        ServerMsg::Deliver(d) => match &*d {
            Delivery::One(m) => {
                assert_eq!((m.from, m.from_name.as_str()), (c, "c"));
                assert_ne!(m.time, "1999-01-01 00:00:00");
                assert_eq!(m.time.len(), "YYYY-MM-DD HH:MM:SS".len());
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    pc.send_json(format!("{{\"msgid\":7,\"id\":{a},\"friendid\":{b}}}").as_bytes());
    assert!(matches!(pc.recv(), ServerMsg::AddFriendAck(_)));
    let mut pa = d.connect(0);
    assert!(
        pa.login(a).friends.is_empty(),
        "the friendship is C's, not A's"
    );
    match pc.call(Request::List) {
        ServerMsg::ListAck { friends, .. } => assert_eq!(friends[0].id, b),
        other => panic!("{other:?}"),
    }
}

fn c10_validation_gives_feedback(d: &Deployment) {
    let (a, b) = (d.register("a"), d.register("b"));
    let mut pb = d.connect(1);
    pb.login(b);
    let mut pa = d.connect(0);
    pa.login(a);

    match pa.call(Request::AddFriend { friend: b }) {
        ServerMsg::AddFriendAck(f) => assert_eq!((f.id, f.name.as_str()), (b, "b")),
        other => panic!("{other:?}"),
    }
    match pb.recv() {
        ServerMsg::FriendAdded(f) => assert_eq!(f.id, a),
        other => panic!("B is told: {other:?}"),
    }
    match pb.call(Request::List) {
        ServerMsg::ListAck { friends, .. } => assert_eq!(friends[0].id, a),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error_code(&pa.call(Request::AddFriend { friend: b })),
        ErrorCode::AlreadyFriends
    );
    assert_eq!(
        error_code(&pa.call(Request::AddFriend { friend: a })),
        ErrorCode::SelfFriend
    );
    let reply = pa.call(Request::AddFriend { friend: 999_999 });
    assert_eq!(error_code(&reply), ErrorCode::NoSuchUser);
    assert!(format!("{reply:?}").contains("no such user"));

    let group = match pb.call(Request::CreateGroup {
        name: "G".into(),
        desc: String::new(),
    }) {
        ServerMsg::CreateGroupAck { id, .. } => id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        pa.call(Request::AddGroup { group }),
        ServerMsg::AddGroupAck(_)
    ));
    assert_eq!(
        error_code(&pa.call(Request::AddGroup { group })),
        ErrorCode::AlreadyMember
    );
    assert_eq!(
        error_code(&pa.call(Request::AddGroup { group: 999_999 })),
        ErrorCode::NoSuchGroup
    );
    let dup = pa.call(Request::CreateGroup {
        name: "G".into(),
        desc: String::new(),
    });
    assert_eq!(error_code(&dup), ErrorCode::NameTaken);
    if let ServerMsg::Error { request, .. } = dup {
        assert_eq!(request, Some(i64::from(MsgId::CreateGroup.code())));
    }
}

/// Runs every case against one deployment per test.
macro_rules! cases {
    ($layers:expr) => {
        cases!(@each $layers;
            c01_two_requests_in_one_write_get_two_replies,
            c01_a_request_split_across_a_pause_is_one_request,
            c01_nul_terminated_requests_as_the_reference_client_sends,
            c01_a_thousand_messages_in_one_write_arrive_in_order,
            c01_requests_before_a_half_close_are_answered,
            c02_malformed_input_is_answered_and_hurts_nobody_else,
            c03_missing_or_mistyped_fields,
            c04_one_connection_several_sessions,
            c05_failed_logins_answer_fast_with_errno_1,
            c06_text_that_looks_like_sql_is_only_text,
            c07_sizes_up_to_the_limit_arrive_whole,
            c08_chinese_and_emoji_round_trip,
            c09_identity_comes_from_the_session,
            c10_validation_gives_feedback);
    };
    (@each $layers:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                super::$case(&Deployment::start($layers));
            }
        )*
    };
}

/// One module per deployment, so a failure names it.
macro_rules! deployments {
    ($($name:ident => $transport:ident, $store:ident, $bus:ident, $wire:ident;)*) => {
        $(
            mod $name {
                use super::*;
                cases!(Layers {
                    transport: TransportKind::$transport,
                    store: StoreKind::$store,
                    bus: BusKind::$bus,
                    wire: Wire::$wire,
                });
            }
        )*
    };
}

// Every transport, store and bus that makes a deployment: SQLite is one
// server's file, so the Redis bus (which means two servers here) runs on
// MariaDB only; a single server runs on either store.
deployments! {
    tokio_sqlite_local_json_stream => Tokio, Sqlite, Local, JsonStream;
    tokio_sqlite_local_json_length => Tokio, Sqlite, Local, JsonLength;
    tokio_sqlite_local_protobuf => Tokio, Sqlite, Local, Protobuf;
    tokio_mysql_local_json_stream => Tokio, Mysql, Local, JsonStream;
    tokio_mysql_local_json_length => Tokio, Mysql, Local, JsonLength;
    tokio_mysql_local_protobuf => Tokio, Mysql, Local, Protobuf;
    tokio_mysql_redis_json_stream => Tokio, Mysql, Redis, JsonStream;
    tokio_mysql_redis_json_length => Tokio, Mysql, Redis, JsonLength;
    tokio_mysql_redis_protobuf => Tokio, Mysql, Redis, Protobuf;
    mio_sqlite_local_json_stream => Mio, Sqlite, Local, JsonStream;
    mio_sqlite_local_json_length => Mio, Sqlite, Local, JsonLength;
    mio_sqlite_local_protobuf => Mio, Sqlite, Local, Protobuf;
    mio_mysql_local_json_stream => Mio, Mysql, Local, JsonStream;
    mio_mysql_local_json_length => Mio, Mysql, Local, JsonLength;
    mio_mysql_local_protobuf => Mio, Mysql, Local, Protobuf;
    mio_mysql_redis_json_stream => Mio, Mysql, Redis, JsonStream;
    mio_mysql_redis_json_length => Mio, Mysql, Redis, JsonLength;
    mio_mysql_redis_protobuf => Mio, Mysql, Redis, Protobuf;
}
