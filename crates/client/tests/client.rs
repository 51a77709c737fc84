//! The library against a fake server: pairing of replies with requests
//! when deliveries come in between, both framings and both codecs,
//! heartbeats, and how the
//! end of a connection shows.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chat_client::{is_delivery, Client, ClientConfig, ClientError, CloseReason};
use chat_proto::{
    ChatMessage, Codec, Delivery, ErrorCode, Framing, JsonCodec, MsgId, ProtobufCodec, Request,
    ServerMsg,
};
use futures::StreamExt;
use support::{ordinary, Answer, FakeServer};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(5);

fn config(server: &FakeServer, framing: Framing) -> ClientConfig {
    ClientConfig {
        framing,
        ..ClientConfig::new(server.addr.to_string())
    }
}

/// Every framing and codec a client can speak.
fn wire_formats() -> [(Framing, Arc<dyn Codec>); 3] {
    [
        (Framing::Stream, Arc::new(JsonCodec)),
        (Framing::Length, Arc::new(JsonCodec)),
        (Framing::Length, Arc::new(ProtobufCodec)),
    ]
}

fn chat(from: i64, text: &str) -> ServerMsg {
    ServerMsg::Deliver(Arc::new(Delivery::One(ChatMessage {
        from,
        from_name: format!("user{from}"),
        to: 1,
        text: text.into(),
        time: "2026-12-03 19:20:01".into(),
    })))
}

/// Answers REG with the length of the name as the new id, so that a reply
/// given to the wrong caller shows; slips a delivery in before it.
fn registrar(_: usize, request: &Request) -> Answer {
    match request {
        Request::Register { name, .. } => Answer::Send(vec![
            chat(7, &format!("before {name}")),
            ServerMsg::RegAck(Ok(name.len() as i64)),
        ]),
        other => ordinary(other),
    }
}

async fn register(client: &Client, name: &str) -> ServerMsg {
    let request = Request::Register {
        name: name.into(),
        password: "pw".into(),
    };
    timeout(PATIENCE, client.request(request))
        .await
        .expect("a reply in time")
        .expect("an open connection")
}

async fn next_event(client: &Client) -> ServerMsg {
    timeout(PATIENCE, client.recv())
        .await
        .expect("an event in time")
        .expect("an open connection")
}

#[tokio::test]
async fn replies_pair_with_requests_around_deliveries_in_every_wire_format() {
    for (framing, codec) in wire_formats() {
        let server = FakeServer::start(registrar).await;
        let client = Client::connect(ClientConfig {
            codec,
            ..config(&server, framing)
        })
        .await
        .expect("connected");

        assert_eq!(register(&client, "abc").await, ServerMsg::RegAck(Ok(3)));
        assert_eq!(next_event(&client).await, chat(7, "before abc"));

        // Concurrent requests are pipelined and still each get their own.
        let (a, b, c) = tokio::join!(
            register(&client, "a"),
            register(&client, "bb"),
            register(&client, "cccc"),
        );
        assert_eq!(
            (a, b, c),
            (
                ServerMsg::RegAck(Ok(1)),
                ServerMsg::RegAck(Ok(2)),
                ServerMsg::RegAck(Ok(4))
            )
        );
        for _ in 0..3 {
            assert!(is_delivery(&next_event(&client).await));
        }

        // A reply to `send` comes out of the event stream in its place.
        client
            .send(Request::Register {
                name: "sent".into(),
                password: "pw".into(),
            })
            .await
            .expect("sent");
        let events: Vec<ServerMsg> = client.events().take(2).collect().await;
        assert_eq!(
            events,
            vec![chat(7, "before sent"), ServerMsg::RegAck(Ok(4))]
        );

        assert_eq!(server.framings(), vec![framing]);
        client.close().await;
    }
}

#[tokio::test]
async fn a_reply_that_cannot_be_decoded_still_takes_its_place() {
    let server = FakeServer::start(|_, request| match request {
        Request::List => Answer::Raw(vec![
            r#"{"msgid":6,"id":"not a number"}"#,
            r#"{"msgid":14,"errno":4242,"errmsg":"a newer server's error"}"#,
        ]),
        other => ordinary(other),
    })
    .await;
    let client = Client::connect(config(&server, Framing::Stream))
        .await
        .expect("connected");

    let reply = timeout(PATIENCE, client.request(Request::List))
        .await
        .expect("in time")
        .expect("open");
    match reply {
        ServerMsg::Error { failure, .. } => assert_eq!(failure.message, "a newer server's error"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    // The broken delivery is reported as an event, not taken for the reply.
    assert!(matches!(next_event(&client).await, ServerMsg::Error { .. }));
    let reply = client.request(Request::Logout).await.expect("open");
    assert_eq!(reply, ServerMsg::LogoutAck);
}

#[tokio::test]
async fn heartbeats_keep_quiet_and_their_pongs_are_swallowed() {
    let server = FakeServer::start(|_, request| ordinary(request)).await;
    let client = Client::connect(ClientConfig {
        heartbeat: Duration::from_millis(50),
        ..config(&server, Framing::Length)
    })
    .await
    .expect("connected");

    assert!(
        timeout(Duration::from_millis(400), client.recv())
            .await
            .is_err(),
        "heartbeat answers must not show as events"
    );
    let pings = server
        .requests()
        .iter()
        .filter(|r| **r == Request::Ping)
        .count();
    assert!(pings >= 3, "only {pings} heartbeats in 400 ms");
    assert!(client.close_reason().is_none());

    // A PING the caller sends itself is answered to the caller.
    assert_eq!(
        client.request(Request::Ping).await.expect("open"),
        ServerMsg::Pong
    );
}

#[tokio::test]
async fn a_server_that_stops_answering_is_declared_dead() {
    let server = FakeServer::start(|_, _| Answer::Nothing).await;
    let client = Client::connect(ClientConfig {
        heartbeat: Duration::from_millis(50),
        ..config(&server, Framing::Stream)
    })
    .await
    .expect("connected");

    assert_eq!(
        timeout(PATIENCE, client.recv()).await.expect("in time"),
        None
    );
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::HeartbeatTimeout(_))
    ));
}

#[tokio::test]
async fn the_end_of_a_connection_shows_and_a_new_one_can_be_made() {
    // The first connection hangs up when asked for the list; later ones
    // answer it.
    let server = FakeServer::start(|n, request| match request {
        Request::List if n == 0 => Answer::Hangup,
        Request::List => Answer::Send(vec![ServerMsg::ListAck {
            friends: vec![],
            groups: vec![],
        }]),
        other => ordinary(other),
    })
    .await;
    let client = Client::connect(config(&server, Framing::Stream))
        .await
        .expect("connected");
    assert_eq!(
        client.request(Request::Logout).await.expect("open"),
        ServerMsg::LogoutAck
    );

    // A request in flight when the server goes away fails, it does not hang.
    let in_flight = timeout(PATIENCE, client.request(Request::List))
        .await
        .expect("in time");
    assert!(
        matches!(
            in_flight,
            Err(ClientError::Closed(CloseReason::ServerClosed))
        ),
        "{in_flight:?}"
    );
    assert_eq!(
        timeout(PATIENCE, client.recv()).await.expect("in time"),
        None
    );
    assert!(matches!(
        client.close_reason(),
        Some(CloseReason::ServerClosed)
    ));
    assert!(matches!(
        client.send(Request::Ping).await,
        Err(ClientError::Closed(CloseReason::ServerClosed))
    ));

    let again = Client::connect(config(&server, Framing::Stream))
        .await
        .expect("reconnected");
    assert!(matches!(
        again.request(Request::List).await,
        Ok(ServerMsg::ListAck { .. })
    ));
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn connecting_to_nothing_is_an_error() {
    // Bind a port, then free it, so that nothing listens there.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("bound")
    };
    let result = Client::connect(ClientConfig::new(addr.to_string())).await;
    assert!(
        matches!(result, Err(ClientError::Connect { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_error_reply_is_an_answer_not_a_client_error() {
    let server = FakeServer::start(|_, request| {
        Answer::Send(vec![ServerMsg::error(
            request.msg_id(),
            ErrorCode::NotLoggedIn,
            "log in first",
        )])
    })
    .await;
    let client = Client::connect(config(&server, Framing::Length))
        .await
        .expect("connected");
    let reply = client
        .request(Request::AddFriend { friend: 2 })
        .await
        .expect("open");
    assert_eq!(
        reply,
        ServerMsg::error(MsgId::AddFriend, ErrorCode::NotLoggedIn, "log in first")
    );
}
