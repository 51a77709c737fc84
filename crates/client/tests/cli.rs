//! The `chat-client` binary driven through a pipe, as a script would: its
//! commands, what it shows, and how it lives through a lost connection.

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chat_proto::{
    ChatMessage, Delivery, ErrorCode, Friend, Group, GroupMessage, LoginOk, Member, Presence,
    Request, Role, ServerMsg,
};
use support::{ordinary, Answer, FakeServer};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::timeout;

/// Runs the binary with `args` and `script` on its standard input; what it
/// printed. Every command must succeed.
async fn run_with(args: &[&str], script: &str) -> String {
    let ran = run_raw(args, script).await;
    assert!(ran.ok, "exit status says a command failed: {ran:?}");
    assert!(ran.err.is_empty(), "stderr: {}", ran.err);
    ran.out
}

/// Runs the binary against `addr` with `script`, in which `failures`
/// commands fail: the exit status and standard error must say so.
async fn run_failing(addr: &str, script: &str, failures: usize) -> String {
    let ran = run_raw(&["--addr", addr], script).await;
    assert!(!ran.ok, "exit status says every command worked: {ran:?}");
    assert_eq!(
        ran.err,
        format!("{failures} command(s) failed\n"),
        "{ran:?}"
    );
    ran.out
}

#[derive(Debug)]
struct Ran {
    out: String,
    err: String,
    ok: bool,
}

async fn run_raw(args: &[&str], script: &str) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(script.as_bytes())
        .await
        .expect("script written");
    drop(stdin);
    let output = timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the binary finishes")
        .expect("its output");
    Ran {
        out: String::from_utf8(output.stdout).expect("UTF-8 output"),
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
        ok: output.status.success(),
    }
}

fn lisi() -> Friend {
    Friend {
        id: 13,
        name: "李四".into(),
        state: Presence::Online,
    }
}

fn group() -> Group {
    Group {
        id: 3,
        name: "测试群".into(),
        desc: "for tests".into(),
        members: vec![Member {
            id: 13,
            name: "李四".into(),
            state: Presence::Online,
            role: Role::Creator,
        }],
    }
}

fn login_ok() -> ServerMsg {
    ServerMsg::LoginAck(Ok(Box::new(LoginOk {
        id: 12,
        name: "张三".into(),
        friends: vec![lisi()],
        groups: vec![group()],
        offline: vec![Arc::new(Delivery::Group(GroupMessage {
            from: 13,
            from_name: "李四".into(),
            group: 3,
            text: "while you were out".into(),
            time: "2026-12-03 08:00:00".into(),
        }))],
        more_offline: 1,
        version: 2,
    })))
}

/// The offline message that did not fit into the LOGIN_ACK.
fn offline_rest() -> ServerMsg {
    ServerMsg::Deliver(Arc::new(Delivery::One(ChatMessage {
        from: 13,
        from_name: "李四".into(),
        to: 12,
        text: "and one more".into(),
        time: "2026-12-03 08:00:01".into(),
    })))
}

/// A server where 李四 (13) echoes every message sent to them.
fn chat_server(_: usize, request: &Request) -> Answer {
    match request {
        Request::Login {
            id: 12, password, ..
        } if password == "pw" => Answer::Send(vec![login_ok(), offline_rest()]),
        Request::Login { .. } => Answer::Send(vec![ServerMsg::LoginAck(Err(
            chat_proto::Failure::new(ErrorCode::BadCredentials, "wrong id or password"),
        ))]),
        Request::OneChat { to: 13, text } => {
            let echo = ServerMsg::Deliver(Arc::new(Delivery::One(ChatMessage {
                from: 13,
                from_name: "李四".into(),
                to: 12,
                text: format!("echo: {text}"),
                time: "2026-12-03 19:20:01".into(),
            })));
            let mut answer = ordinary(request);
            if let Answer::Send(msgs) = &mut answer {
                msgs.insert(0, echo);
            }
            answer
        }
        Request::List => Answer::Send(vec![ServerMsg::ListAck {
            friends: vec![lisi()],
            groups: vec![group()],
        }]),
        Request::AddFriend { friend } => Answer::Send(vec![ServerMsg::error(
            request.msg_id(),
            ErrorCode::NoSuchUser,
            format!("no user has id {friend}"),
        )]),
        other => ordinary(other),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scripted_session() {
    let server = FakeServer::start(chat_server).await;
    // Three commands fail: the wrong password, the unknown friend, /bogus.
    let out = run_failing(
        &server.addr.to_string(),
        "/login 12 nope\n\
         /login 12 pw\n\
         /msg 13 hello\n\
         and again\n\
         /friend 99\n\
         /list\n\
         /bogus\n\
         /quit\n\
         /msg 13 never sent\n",
        3,
    )
    .await;

    let expected = [
        "login failed: wrong id or password (errno 1)",
        "logged in as 张三 (12)",
        "friends (1):\n  李四 (13) online",
        "groups (1):\n  测试群 (3): for tests\n    李四 (13) creator, online",
        "2 message(s) while you were away:",
        "[2026-12-03 08:00:00] 李四 (13) in 测试群 (3): while you were out",
        "[2026-12-03 08:00:01] 李四 (13): and one more",
        "[2026-12-03 19:20:01] 李四 (13): echo: hello",
        "[2026-12-03 19:20:01] 李四 (13): echo: and again",
        "error: no user has id 99 (errno 6)",
        "unknown command /bogus",
    ];
    let mut rest = out.as_str();
    for line in expected {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{out}"));
        rest = &rest[at + line.len()..];
    }
    assert!(!out.contains("never sent"), "{out}");
    assert!(server.requests().contains(&Request::OneChat {
        to: 13,
        text: "and again".into()
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_connection_is_told_and_reconnected() {
    // The first connection dies when the list is asked for.
    let server = FakeServer::start(|n, request| match request {
        Request::List if n == 0 => Answer::Hangup,
        _ => chat_server(n, request),
    })
    .await;
    // The /list whose reply the lost connection took counts as failed.
    let out = run_failing(
        &server.addr.to_string(),
        "/login 12 pw\n/list\n/wait 3\n/login 12 pw\n",
        1,
    )
    .await;

    let expected = [
        "connected to",
        "logged in as 张三 (12)",
        "connection lost: the server closed the connection; reconnecting in",
        "no reply: the connection ended before it came",
        "reconnected to",
        "you are logged out: /login <id> <password> again",
        "logged in as 张三 (12)",
    ];
    let mut rest = out.as_str();
    for line in expected {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{out}"));
        rest = &rest[at + line.len()..];
    }
    assert_eq!(server.connections(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_is_told_and_nothing_hangs() {
    // Bind a port, then free it, so that nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("bound")
    };
    let out = run_failing(&addr.to_string(), "/list\n", 1).await;
    assert!(out.contains("cannot connect to"), "{out}");
    assert!(
        out.contains("not sent: not connected to the server"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_speaks_the_same_chat() {
    let server = FakeServer::start(chat_server).await;
    let addr = server.addr.to_string();
    let out = run_with(
        &["--addr", &addr, "--codec", "protobuf"],
        "/login 12 pw\n/msg 13 你好\n",
    )
    .await;
    assert!(out.contains("logged in as 张三 (12)"), "{out}");
    assert!(
        out.contains("[2026-12-03 19:20:01] 李四 (13): echo: 你好"),
        "{out}"
    );
    assert_eq!(server.framings(), vec![chat_proto::Framing::Length]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_ends_the_conversation() {
    let server = FakeServer::start(chat_server).await;
    let out = run_failing(
        &server.addr.to_string(),
        "/login 12 pw\n/msg 13 first\n/logout\n/login 12 pw\nsecond\n",
        1,
    )
    .await;

    assert!(
        out.contains("no conversation yet: start one with /msg <id> or /g <groupid>"),
        "{out}"
    );
    let requests = server.requests();
    let texts: Vec<&str> = requests
        .iter()
        .filter_map(|request| match request {
            Request::OneChat { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["first"], "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_prints_each_server_message_as_one_json_line() {
    let server = FakeServer::start(chat_server).await;
    let addr = server.addr.to_string();
    let ran = run_raw(
        &["--addr", &addr, "--json"],
        "/login 12 pw\n/msg 13 hello\n/nonsense\nand again\n",
    )
    .await;
    let out = ran.out;

    // Standard output is for programs: JSON lines and nothing else. The
    // program's own notes, and the command it did not understand, are on
    // standard error, and the exit status counts the failure.
    let messages: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("a whole JSON object per line"))
        .collect();
    assert!(ran.err.contains("connected to"), "{}", ran.err);
    assert!(ran.err.contains("unknown command /nonsense"), "{}", ran.err);
    assert!(ran.err.ends_with("1 command(s) failed\n"), "{}", ran.err);
    assert!(!ran.ok);
    let ids: Vec<u64> = messages
        .iter()
        .filter_map(|m| m["msgid"].as_u64())
        .collect();
    // LOGIN_ACK, the offline message after it, then an echo (ONE_CHAT) and
    // an acknowledgement for each of the two lines.
    assert_eq!(ids.first(), Some(&2), "{out}");
    assert_eq!(messages[0]["name"], "张三", "{out}");
    assert_eq!(ids.iter().filter(|&&id| id == 6).count(), 3, "{out}");
    assert!(!out.contains("logged in as"), "{out}");
    // The conversation learnt from /msg still carries the plain line.
    assert!(server.requests().contains(&Request::OneChat {
        to: 13,
        text: "and again".into()
    }));
}
