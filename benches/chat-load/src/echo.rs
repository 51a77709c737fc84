//! A trivial responder that speaks the chat protocol and does nothing else:
//! the machine's own limit, measured in the same run.
//!
//! Figures such as "50,000 messages/s" mean little on a shared 2-core
//! machine whose speed changes from run to run. What does mean something
//! is how close the chat server comes to the cheapest possible server on
//! the same machine at the same moment, driven by the same client code. So
//! this responder reads frames with the same [`ServerWire`] the server's
//! transports use, and answers a ONE_CHAT with what the server would send
//! (a CHAT_ACK to the sender and a delivery), except that the delivery goes
//! back to the sender itself: no sessions, no routing, no store, no bus.
//! It runs in its own process (`chat-load echo-responder`) so that it is
//! measured like a server, with its own CPU and memory.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::BytesMut;
use chat_proto::{
    ChatMessage, Delivery, Failure, GroupMessage, Incoming, LoginOk, MsgId, Request, ServerMsg,
    ServerWire, UserId,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest frame accepted, as the server's default.
const MAX_FRAME: usize = 64 * 1024;

/// The `time` every delivery carries; the server formats its clock, which
/// costs little next to the rest.
const TIME: &str = "2000-01-01 00:00:00";

/// Serves on `listen` until standard input closes (the parent process
/// ended or closed it) or `max_secs` have passed, whichever comes first,
/// after printing `listening ADDR` on standard output.
pub async fn serve(listen: &str, max_secs: u64) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("no local address")?;
    println!("listening {addr}");

    let ids = Arc::new(AtomicI64::new(1));
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&ids)));
                }
                // Out of file descriptors, say: the run will show errors.
                Err(error) => eprintln!("echo responder: accept failed: {error}"),
            }
        }
    };
    let parent_gone = async {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    tokio::select! {
        () = accept => {}
        () = parent_gone => {}
        () = tokio::time::sleep(std::time::Duration::from_secs(max_secs)) => {}
    }
    Ok(())
}

/// One connection: read what is there, answer every request, write the
/// answers in one go.
async fn connection(mut stream: TcpStream, ids: Arc<AtomicI64>) {
    let _ = stream.set_nodelay(true);
    let mut wire = ServerWire::new(MAX_FRAME);
    let mut input = BytesMut::with_capacity(8 * 1024);
    let mut output = BytesMut::with_capacity(8 * 1024);
    let mut user: Option<(UserId, String)> = None;
    loop {
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut fatal = false;
        while let Some(incoming) = wire.next(&mut input) {
            let format = wire.format().unwrap_or_default();
            match incoming {
                Incoming::Request(request) => {
                    for msg in answer(request, &mut user, &ids) {
                        format.encode(&msg, &mut output);
                    }
                }
                Incoming::Refused(reply) => format.encode(&reply, &mut output),
                Incoming::Fatal(reply) => {
                    format.encode(&reply, &mut output);
                    fatal = true;
                    break;
                }
            }
        }
        if stream.write_all(&output).await.is_err() || fatal {
            return;
        }
        output.clear();
        if input.capacity() - input.len() < 1024 {
            input.reserve(8 * 1024);
        }
    }
}

/// What the chat server would send for `request`, minus everything that
/// needs another user.
fn answer(
    request: Request,
    user: &mut Option<(UserId, String)>,
    ids: &AtomicI64,
) -> Vec<ServerMsg> {
    match request {
        Request::Register { .. } => {
            vec![ServerMsg::RegAck(Ok(ids.fetch_add(1, Ordering::Relaxed)))]
        }
        Request::Login { id, version, .. } => {
            let name = format!("user{id}");
            *user = Some((id, name.clone()));
            vec![ServerMsg::LoginAck(Ok(Box::new(LoginOk {
                id,
                name,
                friends: Vec::new(),
                groups: Vec::new(),
                offline: Vec::new(),
                more_offline: 0,
                version,
            })))]
        }
        Request::Logout => {
            *user = None;
            vec![ServerMsg::LogoutAck]
        }
        Request::Ping => vec![ServerMsg::Pong],
        request => {
            let Some((from, from_name)) = user.clone() else {
                return vec![ServerMsg::error(
                    request.msg_id(),
                    chat_proto::ErrorCode::NotLoggedIn,
                    "not logged in",
                )];
            };
            let ack = |request| ServerMsg::ChatAck {
                request,
                time: TIME.into(),
            };
            match request {
                Request::OneChat { to, text } => vec![
                    ack(MsgId::OneChat),
                    ServerMsg::Deliver(Arc::new(Delivery::One(ChatMessage {
                        from,
                        from_name,
                        to,
                        text,
                        time: TIME.into(),
                    }))),
                ],
                Request::GroupChat { group, text } => vec![
                    ack(MsgId::GroupChat),
                    ServerMsg::Deliver(Arc::new(Delivery::Group(GroupMessage {
                        from,
                        from_name,
                        group,
                        text,
                        time: TIME.into(),
                    }))),
                ],
                other => vec![ServerMsg::Error {
                    request: Some(i64::from(other.msg_id().code())),
                    failure: Failure::new(
                        chat_proto::ErrorCode::UnknownMsgId,
                        "the echo responder answers LOGIN, ONE_CHAT, GROUP_CHAT and PING only",
                    ),
                }],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::Format;

    fn encode_all(format: Format, msgs: &[ServerMsg]) -> BytesMut {
        let mut out = BytesMut::new();
        for msg in msgs {
            format.encode(msg, &mut out);
        }
        out
    }

    #[test]
    fn a_chat_is_acknowledged_and_echoed_to_the_sender() {
        let ids = AtomicI64::new(1);
        let mut user = None;
        let login = Request::Login {
            id: 5,
            password: "pw".into(),
            version: 2,
        };
        assert!(matches!(
            answer(login, &mut user, &ids)[..],
            [ServerMsg::LoginAck(Ok(_))]
        ));
        let replies = answer(
            Request::OneChat {
                to: 9,
                text: "0 1 ..".into(),
            },
            &mut user,
            &ids,
        );
        match &replies[..] {
            [ServerMsg::ChatAck { .. }, ServerMsg::Deliver(delivery)] => match &**delivery {
                Delivery::One(m) => assert_eq!((m.from, m.to, m.text.as_str()), (5, 9, "0 1 ..")),
                other => panic!("expected a one-to-one delivery, got {other:?}"),
            },
            other => panic!("expected an ack and a delivery, got {other:?}"),
        }
        assert!(!encode_all(Format::default(), &replies).is_empty());
    }

    #[test]
    fn chats_need_a_login() {
        let ids = AtomicI64::new(1);
        let replies = answer(
            Request::OneChat {
                to: 1,
                text: "x".into(),
            },
            &mut None,
            &ids,
        );
        assert!(matches!(replies[..], [ServerMsg::Error { .. }]));
    }
}
