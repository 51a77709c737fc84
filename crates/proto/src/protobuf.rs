//! The protobuf codec: the protocol's messages in Protocol Buffers.
//!
//! JSON keeps the reference clients and a person at `nc` working; protobuf
//! is for clients that want a compact, typed encoding with generated code
//! in their own language. Both codecs map to the same [`Request`] and
//! [`ServerMsg`], so the service cannot tell which one a connection speaks.
//!
//! The schema is `proto/chat.proto` in this crate. Its generated types stay
//! private (module `pb`): they are a spelling, and every check the schema
//! cannot express (a oneof that must be set, enum values it names, message
//! ids that exist) happens here, on the way in, so that a malformed payload
//! becomes a [`DecodeError`] with [`ErrorCode::BadRequest`] and never a
//! panic.

use std::sync::Arc;

use prost::Message;

use crate::codec::{Codec, DecodeError};
use crate::message::*;

/// Types generated from `proto/chat.proto` when the crate is built.
mod pb {
    // Generated code has no say in its style, and not every generated item
    // (the enums' name helpers, for one) is used by the codec.
    #![allow(dead_code, missing_docs, clippy::all, clippy::pedantic)]

    include!(concat!(env!("OUT_DIR"), "/chat.rs"));
}

use pb::client_message::Request as PbRequest;
use pb::server_message::Reply as PbReply;

/// The protobuf codec: payloads are `chat.ClientMessage` and
/// `chat.ServerMessage` of `proto/chat.proto`.
///
/// No encoded `ClientMessage` starts with `{`, so a server tells it from a
/// JSON payload by the first byte (see the schema for why).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProtobufCodec;

impl Codec for ProtobufCodec {
    fn decode_request(&self, payload: &[u8]) -> Result<Request, DecodeError> {
        let message = pb::ClientMessage::decode(payload).map_err(malformed)?;
        let request = message.request.ok_or_else(|| {
            DecodeError::bad(None, "ClientMessage holds no request this server knows")
        })?;
        Ok(request_from_pb(request))
    }

    fn encode_reply(&self, msg: &ServerMsg, out: &mut Vec<u8>) {
        let message = pb::ServerMessage {
            reply: Some(reply_to_pb(msg)),
        };
        encode(&message, out);
    }

    fn encode_request(&self, request: &Request, out: &mut Vec<u8>) {
        let message = pb::ClientMessage {
            request: Some(request_to_pb(request)),
        };
        encode(&message, out);
    }

    fn decode_reply(&self, payload: &[u8]) -> Result<ServerMsg, DecodeError> {
        let message = pb::ServerMessage::decode(payload).map_err(malformed)?;
        let reply = message.reply.ok_or_else(|| {
            DecodeError::bad(None, "ServerMessage holds no reply this client knows")
        })?;
        reply_from_pb(reply)
    }
}

fn encode(message: &impl Message, out: &mut Vec<u8>) {
    out.reserve(message.encoded_len());
    message.encode(out).expect("a Vec grows to fit any message");
}

fn malformed(e: prost::DecodeError) -> DecodeError {
    DecodeError::bad(None, format!("malformed protobuf: {e}"))
}

/// A decoding error in a message whose kind is known.
fn bad(msgid: MsgId, message: impl Into<String>) -> DecodeError {
    DecodeError::bad(Some(i64::from(msgid.code())), message)
}

fn request_to_pb(request: &Request) -> PbRequest {
    match request {
        Request::Login {
            id,
            password,
            version,
        } => PbRequest::Login(pb::Login {
            id: *id,
            password: password.clone(),
            version: Some(*version),
        }),
        Request::Logout => PbRequest::Logout(pb::Logout {}),
        Request::Register { name, password } => PbRequest::Register(pb::Register {
            name: name.clone(),
            password: password.clone(),
        }),
        Request::OneChat { to, text } => PbRequest::OneChat(pb::OneChat {
            to: *to,
            text: text.clone(),
        }),
        Request::AddFriend { friend } => PbRequest::AddFriend(pb::AddFriend { friend: *friend }),
        Request::CreateGroup { name, desc } => PbRequest::CreateGroup(pb::CreateGroup {
            name: name.clone(),
            desc: desc.clone(),
        }),
        Request::AddGroup { group } => PbRequest::AddGroup(pb::AddGroup { group: *group }),
        Request::GroupChat { group, text } => PbRequest::GroupChat(pb::GroupChat {
            group: *group,
            text: text.clone(),
        }),
        Request::Ping => PbRequest::Ping(pb::Ping {}),
        Request::List => PbRequest::List(pb::List {}),
    }
}

/// Every request the schema can hold is a valid [`Request`]: its fields are
/// integers and strings, which prost has already checked.
fn request_from_pb(request: PbRequest) -> Request {
    match request {
        PbRequest::Login(m) => Request::Login {
            id: m.id,
            password: m.password,
            version: m.version.unwrap_or(LEGACY_VERSION),
        },
        PbRequest::Logout(_) => Request::Logout,
        PbRequest::Register(m) => Request::Register {
            name: m.name,
            password: m.password,
        },
        PbRequest::OneChat(m) => Request::OneChat {
            to: m.to,
            text: m.text,
        },
        PbRequest::AddFriend(m) => Request::AddFriend { friend: m.friend },
        PbRequest::CreateGroup(m) => Request::CreateGroup {
            name: m.name,
            desc: m.desc,
        },
        PbRequest::AddGroup(m) => Request::AddGroup { group: m.group },
        PbRequest::GroupChat(m) => Request::GroupChat {
            group: m.group,
            text: m.text,
        },
        PbRequest::Ping(_) => Request::Ping,
        PbRequest::List(_) => Request::List,
    }
}

fn reply_to_pb(msg: &ServerMsg) -> PbReply {
    match msg {
        ServerMsg::LoginAck(result) => PbReply::LoginAck(pb::LoginAck {
            outcome: Some(match result {
                Ok(ok) => pb::login_ack::Outcome::Ok(login_ok_to_pb(ok)),
                Err(f) => pb::login_ack::Outcome::Failure(failure_to_pb(f)),
            }),
        }),
        ServerMsg::LogoutAck => PbReply::LogoutAck(pb::LogoutAck {}),
        ServerMsg::RegAck(result) => PbReply::RegAck(pb::RegAck {
            outcome: Some(match result {
                Ok(id) => pb::reg_ack::Outcome::Id(*id),
                Err(f) => pb::reg_ack::Outcome::Failure(failure_to_pb(f)),
            }),
        }),
        ServerMsg::Deliver(delivery) => match &**delivery {
            Delivery::One(m) => PbReply::OneChat(chat_to_pb(m)),
            Delivery::Group(m) => PbReply::GroupChat(group_chat_to_pb(m)),
        },
        ServerMsg::ChatAck { request, time } => PbReply::ChatAck(pb::ChatAck {
            request: request.code(),
            time: time.clone(),
        }),
        ServerMsg::AddFriendAck(f) => PbReply::AddFriendAck(pb::AddFriendAck {
            friend: Some(friend_to_pb(f)),
        }),
        ServerMsg::CreateGroupAck { id, name, desc } => {
            PbReply::CreateGroupAck(pb::CreateGroupAck {
                id: *id,
                name: name.clone(),
                desc: desc.clone(),
            })
        }
        ServerMsg::AddGroupAck(g) => PbReply::AddGroupAck(pb::AddGroupAck {
            group: Some(group_to_pb(g)),
        }),
        ServerMsg::ListAck { friends, groups } => PbReply::ListAck(pb::ListAck {
            friends: friends.iter().map(friend_to_pb).collect(),
            groups: groups.iter().map(group_to_pb).collect(),
        }),
        ServerMsg::FriendAdded(f) => PbReply::FriendAdded(pb::FriendAdded {
            friend: Some(friend_to_pb(f)),
        }),
        ServerMsg::Pong => PbReply::Pong(pb::Pong {}),
        ServerMsg::Error { request, failure } => PbReply::Error(pb::Error {
            request: *request,
            failure: Some(failure_to_pb(failure)),
        }),
    }
}

fn reply_from_pb(reply: PbReply) -> Result<ServerMsg, DecodeError> {
    Ok(match reply {
        PbReply::LoginAck(m) => {
            let msgid = MsgId::LoginAck;
            ServerMsg::LoginAck(match m.outcome {
                Some(pb::login_ack::Outcome::Ok(ok)) => Ok(Box::new(login_ok_from_pb(ok)?)),
                Some(pb::login_ack::Outcome::Failure(f)) => Err(failure_from_pb(f, msgid)?),
                None => return Err(bad(msgid, "LoginAck holds neither `ok` nor `failure`")),
            })
        }
        PbReply::LogoutAck(_) => ServerMsg::LogoutAck,
        PbReply::RegAck(m) => {
            let msgid = MsgId::RegAck;
            ServerMsg::RegAck(match m.outcome {
                Some(pb::reg_ack::Outcome::Id(id)) => Ok(id),
                Some(pb::reg_ack::Outcome::Failure(f)) => Err(failure_from_pb(f, msgid)?),
                None => return Err(bad(msgid, "RegAck holds neither `id` nor `failure`")),
            })
        }
        PbReply::OneChat(m) => ServerMsg::Deliver(Arc::new(Delivery::One(chat_from_pb(m)))),
        PbReply::GroupChat(m) => {
            ServerMsg::Deliver(Arc::new(Delivery::Group(group_chat_from_pb(m))))
        }
        PbReply::ChatAck(m) => ServerMsg::ChatAck {
            request: MsgId::from_code(i64::from(m.request)).ok_or_else(|| {
                bad(
                    MsgId::ChatAck,
                    format!("ChatAck.request {} is no message id", m.request),
                )
            })?,
            time: m.time,
        },
        PbReply::AddFriendAck(m) => {
            let msgid = MsgId::AddFriendAck;
            ServerMsg::AddFriendAck(friend_from_pb(required(m.friend, msgid, "friend")?, msgid)?)
        }
        PbReply::CreateGroupAck(m) => ServerMsg::CreateGroupAck {
            id: m.id,
            name: m.name,
            desc: m.desc,
        },
        PbReply::AddGroupAck(m) => {
            let msgid = MsgId::AddGroupAck;
            ServerMsg::AddGroupAck(group_from_pb(required(m.group, msgid, "group")?, msgid)?)
        }
        PbReply::ListAck(m) => {
            let msgid = MsgId::ListAck;
            ServerMsg::ListAck {
                friends: friends_from_pb(m.friends, msgid)?,
                groups: groups_from_pb(m.groups, msgid)?,
            }
        }
        PbReply::FriendAdded(m) => {
            let msgid = MsgId::FriendAdded;
            ServerMsg::FriendAdded(friend_from_pb(required(m.friend, msgid, "friend")?, msgid)?)
        }
        PbReply::Pong(_) => ServerMsg::Pong,
        PbReply::Error(m) => {
            let msgid = MsgId::Error;
            ServerMsg::Error {
                request: m.request,
                failure: failure_from_pb(required(m.failure, msgid, "failure")?, msgid)?,
            }
        }
    })
}

/// A message field the schema marks "Required", which proto3 cannot.
fn required<T>(field: Option<T>, msgid: MsgId, name: &str) -> Result<T, DecodeError> {
    field.ok_or_else(|| bad(msgid, format!("missing field `{name}`")))
}

fn login_ok_to_pb(ok: &LoginOk) -> pb::LoginOk {
    pb::LoginOk {
        id: ok.id,
        name: ok.name.clone(),
        friends: ok.friends.iter().map(friend_to_pb).collect(),
        groups: ok.groups.iter().map(group_to_pb).collect(),
        offline: ok.offline.iter().map(|d| delivery_to_pb(d)).collect(),
        // usize is at most 64 bits wide on every target Rust supports.
        more_offline: u64::try_from(ok.more_offline).unwrap_or(u64::MAX),
        version: ok.version,
    }
}

fn login_ok_from_pb(ok: pb::LoginOk) -> Result<LoginOk, DecodeError> {
    let msgid = MsgId::LoginAck;
    let offline = ok
        .offline
        .into_iter()
        .map(|d| delivery_from_pb(d, msgid).map(Arc::new))
        .collect::<Result<_, _>>()?;
    Ok(LoginOk {
        id: ok.id,
        name: ok.name,
        friends: friends_from_pb(ok.friends, msgid)?,
        groups: groups_from_pb(ok.groups, msgid)?,
        offline,
        more_offline: usize::try_from(ok.more_offline)
            .map_err(|_| bad(msgid, "`more_offline` is too large"))?,
        version: ok.version,
    })
}

fn failure_to_pb(f: &Failure) -> pb::Failure {
    pb::Failure {
        // The schema numbers its error codes as errno does.
        code: f.code as i32,
        message: f.message.clone(),
    }
}

fn failure_from_pb(f: pb::Failure, msgid: MsgId) -> Result<Failure, DecodeError> {
    let code = ErrorCode::from_code(i64::from(f.code))
        .ok_or_else(|| bad(msgid, format!("unknown error code {}", f.code)))?;
    Ok(Failure::new(code, f.message))
}

fn presence_to_pb(state: Presence) -> i32 {
    match state {
        Presence::Online => pb::Presence::Online as i32,
        Presence::Offline => pb::Presence::Offline as i32,
    }
}

fn presence_from_pb(value: i32, msgid: MsgId) -> Result<Presence, DecodeError> {
    match pb::Presence::try_from(value) {
        Ok(pb::Presence::Online) => Ok(Presence::Online),
        Ok(pb::Presence::Offline) => Ok(Presence::Offline),
        Ok(pb::Presence::Unspecified) | Err(_) => {
            Err(bad(msgid, format!("unknown presence {value}")))
        }
    }
}

fn role_to_pb(role: Role) -> i32 {
    match role {
        Role::Creator => pb::Role::Creator as i32,
        Role::Normal => pb::Role::Normal as i32,
    }
}

fn role_from_pb(value: i32, msgid: MsgId) -> Result<Role, DecodeError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Creator) => Ok(Role::Creator),
        Ok(pb::Role::Normal) => Ok(Role::Normal),
        Ok(pb::Role::Unspecified) | Err(_) => Err(bad(msgid, format!("unknown role {value}"))),
    }
}

fn friend_to_pb(f: &Friend) -> pb::Friend {
    pb::Friend {
        id: f.id,
        name: f.name.clone(),
        state: presence_to_pb(f.state),
    }
}

fn friend_from_pb(f: pb::Friend, msgid: MsgId) -> Result<Friend, DecodeError> {
    Ok(Friend {
        id: f.id,
        name: f.name,
        state: presence_from_pb(f.state, msgid)?,
    })
}

fn friends_from_pb(friends: Vec<pb::Friend>, msgid: MsgId) -> Result<Vec<Friend>, DecodeError> {
    friends
        .into_iter()
        .map(|f| friend_from_pb(f, msgid))
        .collect()
}

fn group_to_pb(g: &Group) -> pb::Group {
    pb::Group {
        id: g.id,
        name: g.name.clone(),
        desc: g.desc.clone(),
        members: g
            .members
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                state: presence_to_pb(m.state),
                role: role_to_pb(m.role),
            })
            .collect(),
    }
}

fn group_from_pb(g: pb::Group, msgid: MsgId) -> Result<Group, DecodeError> {
    let members = g
        .members
        .into_iter()
        .map(|m| {
            Ok(Member {
                id: m.id,
                name: m.name,
                state: presence_from_pb(m.state, msgid)?,
                role: role_from_pb(m.role, msgid)?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(Group {
        id: g.id,
        name: g.name,
        desc: g.desc,
        members,
    })
}

fn groups_from_pb(groups: Vec<pb::Group>, msgid: MsgId) -> Result<Vec<Group>, DecodeError> {
    groups
        .into_iter()
        .map(|g| group_from_pb(g, msgid))
        .collect()
}

fn chat_to_pb(m: &ChatMessage) -> pb::ChatMessage {
    pb::ChatMessage {
        from: m.from,
        from_name: m.from_name.clone(),
        to: m.to,
        text: m.text.clone(),
        time: m.time.clone(),
    }
}

fn chat_from_pb(m: pb::ChatMessage) -> ChatMessage {
    ChatMessage {
        from: m.from,
        from_name: m.from_name,
        to: m.to,
        text: m.text,
        time: m.time,
    }
}

fn group_chat_to_pb(m: &GroupMessage) -> pb::GroupMessage {
    pb::GroupMessage {
        from: m.from,
        from_name: m.from_name.clone(),
        group: m.group,
        text: m.text.clone(),
        time: m.time.clone(),
    }
}

fn group_chat_from_pb(m: pb::GroupMessage) -> GroupMessage {
    GroupMessage {
        from: m.from,
        from_name: m.from_name,
        group: m.group,
        text: m.text,
        time: m.time,
    }
}

fn delivery_to_pb(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        message: Some(match d {
            Delivery::One(m) => pb::delivery::Message::OneChat(chat_to_pb(m)),
            Delivery::Group(m) => pb::delivery::Message::GroupChat(group_chat_to_pb(m)),
        }),
    }
}

fn delivery_from_pb(d: pb::Delivery, msgid: MsgId) -> Result<Delivery, DecodeError> {
    match d.message {
        Some(pb::delivery::Message::OneChat(m)) => Ok(Delivery::One(chat_from_pb(m))),
        Some(pb::delivery::Message::GroupChat(m)) => Ok(Delivery::Group(group_chat_from_pb(m))),
        None => Err(bad(
            msgid,
            "a kept message holds neither `one_chat` nor `group_chat`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CodecKind;

    const TRICKY: &str = "张三 says \"hi\" \\ it's 😀\u{0}\n'; DROP TABLE user; --";

    fn every_request() -> Vec<Request> {
        let mut requests = vec![
            Request::Logout,
            Request::Register {
                name: "张三😀".into(),
                password: TRICKY.into(),
            },
            Request::OneChat {
                to: 2,
                text: TRICKY.into(),
            },
            Request::AddFriend { friend: i64::MAX },
            Request::CreateGroup {
                name: "测试群".into(),
                desc: String::new(),
            },
            Request::AddGroup { group: -1 },
            Request::GroupChat {
                group: 4,
                text: TRICKY.into(),
            },
            Request::Ping,
            Request::List,
        ];
        for version in [0, LEGACY_VERSION, 2, u32::MAX] {
            requests.push(Request::Login {
                id: 1,
                password: "pw \"😀\"".into(),
                version,
            });
        }
        requests
    }

    fn friend() -> Friend {
        Friend {
            id: 2,
            name: "张三".into(),
            state: Presence::Online,
        }
    }

    fn group() -> Group {
        Group {
            id: 3,
            name: "测试群".into(),
            desc: "描述😀".into(),
            members: vec![
                Member {
                    id: 1,
                    name: "O'Brien".into(),
                    state: Presence::Offline,
                    role: Role::Creator,
                },
                Member {
                    id: 2,
                    name: "张三".into(),
                    state: Presence::Online,
                    role: Role::Normal,
                },
            ],
        }
    }

    fn one_chat() -> Delivery {
        Delivery::One(ChatMessage {
            from: 2,
            from_name: "张三".into(),
            to: 1,
            text: TRICKY.into(),
            time: "2026-01-01 00:00:00".into(),
        })
    }

    fn group_chat() -> Delivery {
        Delivery::Group(GroupMessage {
            from: 1,
            from_name: "O'Brien".into(),
            group: 3,
            text: TRICKY.into(),
            time: "2026-01-01 00:00:01".into(),
        })
    }

    fn login_ok(version: u32) -> ServerMsg {
        ServerMsg::LoginAck(Ok(Box::new(LoginOk {
            id: 1,
            name: "O'Brien".into(),
            friends: vec![friend()],
            groups: vec![group()],
            offline: vec![Arc::new(one_chat()), Arc::new(group_chat())],
            more_offline: 3,
            version,
        })))
    }

    fn every_reply() -> Vec<ServerMsg> {
        vec![
            login_ok(LEGACY_VERSION),
            login_ok(2),
            ServerMsg::LoginAck(Ok(Box::new(LoginOk {
                id: 9,
                name: String::new(),
                friends: vec![],
                groups: vec![],
                offline: vec![],
                more_offline: 0,
                version: 0,
            }))),
            ServerMsg::LoginAck(Err(Failure::new(ErrorCode::BadCredentials, "no"))),
            ServerMsg::LoginAck(Err(Failure::new(ErrorCode::AlreadyOnline, "在线"))),
            ServerMsg::LogoutAck,
            ServerMsg::RegAck(Ok(5)),
            ServerMsg::RegAck(Ok(0)),
            ServerMsg::RegAck(Err(Failure::new(ErrorCode::NameTaken, "taken"))),
            ServerMsg::Deliver(Arc::new(one_chat())),
            ServerMsg::Deliver(Arc::new(group_chat())),
            ServerMsg::ChatAck {
                request: MsgId::OneChat,
                time: "2026-01-01 00:00:00".into(),
            },
            ServerMsg::ChatAck {
                request: MsgId::GroupChat,
                time: "t".into(),
            },
            ServerMsg::AddFriendAck(friend()),
            ServerMsg::CreateGroupAck {
                id: 1,
                name: "g😀".into(),
                desc: "".into(),
            },
            ServerMsg::AddGroupAck(group()),
            ServerMsg::ListAck {
                friends: vec![friend(), friend()],
                groups: vec![group()],
            },
            ServerMsg::ListAck {
                friends: vec![],
                groups: vec![],
            },
            ServerMsg::FriendAdded(friend()),
            ServerMsg::Pong,
            ServerMsg::error(MsgId::OneChat, ErrorCode::NoSuchUser, "no such user"),
            ServerMsg::Error {
                request: None,
                failure: Failure::new(ErrorCode::BadRequest, TRICKY),
            },
            ServerMsg::Error {
                request: Some(0),
                failure: Failure::new(ErrorCode::SessionActive, ""),
            },
        ]
    }

    /// The field number of the first field of an encoded message.
    fn first_field(payload: &[u8]) -> u64 {
        let mut key = 0u64;
        for (i, byte) in payload.iter().enumerate().take(10) {
            key |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return key >> 3;
            }
        }
        panic!("no field key in {payload:?}");
    }

    #[test]
    fn every_request_round_trips() {
        for request in every_request() {
            let mut out = Vec::new();
            ProtobufCodec.encode_request(&request, &mut out);
            assert_eq!(ProtobufCodec.decode_request(&out), Ok(request));
        }
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in every_reply() {
            let mut out = Vec::new();
            ProtobufCodec.encode_reply(&reply, &mut out);
            assert_eq!(ProtobufCodec.decode_reply(&out), Ok(reply));
        }
    }

    #[test]
    fn field_numbers_are_the_msgids() {
        for request in every_request() {
            let mut out = Vec::new();
            ProtobufCodec.encode_request(&request, &mut out);
            let expected = match request {
                Request::Ping => 22,
                _ => u64::from(request.msg_id().code()),
            };
            assert_eq!(first_field(&out), expected, "{request:?}");
        }
        for reply in every_reply() {
            let mut out = Vec::new();
            ProtobufCodec.encode_reply(&reply, &mut out);
            assert_eq!(first_field(&out), u64::from(reply.msg_id().code()));
        }
    }

    #[test]
    fn ping_and_pong_are_spelled_as_documented() {
        // docs/protocol.md shows these bytes; they pin the wire format.
        let mut out = Vec::new();
        ProtobufCodec.encode_request(&Request::Ping, &mut out);
        assert_eq!(out, b"\xb2\x01\x00");
        out.clear();
        ProtobufCodec.encode_reply(&ServerMsg::Pong, &mut out);
        assert_eq!(out, b"\x82\x01\x00");
        out.clear();
        ProtobufCodec.encode_request(
            &Request::OneChat {
                to: 2,
                text: "hi".into(),
            },
            &mut out,
        );
        assert_eq!(out, b"\x32\x06\x08\x02\x12\x02hi");
    }

    #[test]
    fn no_request_looks_like_json() {
        for request in every_request() {
            let mut out = Vec::new();
            ProtobufCodec.encode_request(&request, &mut out);
            assert_ne!(out.first(), Some(&b'{'), "{request:?}");
            assert_eq!(CodecKind::of_payload(&out), CodecKind::Protobuf);
        }
    }

    #[test]
    fn text_survives_byte_for_byte() {
        let mut out = Vec::new();
        ProtobufCodec.encode_request(
            &Request::OneChat {
                to: 1,
                text: TRICKY.into(),
            },
            &mut out,
        );
        let Ok(Request::OneChat { text, .. }) = ProtobufCodec.decode_request(&out) else {
            panic!("a ONE_CHAT decodes");
        };
        assert_eq!(text.as_bytes(), TRICKY.as_bytes());
        // The text is in the payload as it is: protobuf escapes nothing.
        assert!(out.windows(TRICKY.len()).any(|w| w == TRICKY.as_bytes()));
    }

    fn request_error(payload: &[u8]) -> DecodeError {
        match ProtobufCodec.decode_request(payload) {
            Err(e) => e,
            Ok(request) => panic!("{payload:?} decoded as {request:?}"),
        }
    }

    #[test]
    fn malformed_requests_are_bad_requests() {
        let cases: &[&[u8]] = &[
            b"",                                                     // no request at all
            b"\xff",                                                 // a cut-short field key
            b"\x0a\x05\x08",         // a Login longer than the payload
            b"\x32\x03\x12\x01\xff", // ONE_CHAT whose text is not UTF-8
            b"\x10\x01",             // only a field this server does not know
            b"\x7a\x00",             // the reserved field 15, as a message
            b"{\"msgid\":15}",       // JSON, read as protobuf
            b"\x0a\x02\x08\x80",     // a varint cut short inside Login
            b"\xb2\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", // an overlong length
        ];
        for payload in cases {
            let e = request_error(payload);
            assert_eq!(e.code, ErrorCode::BadRequest, "{payload:?}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    fn reply_error(reply: PbReply) -> DecodeError {
        let message = pb::ServerMessage { reply: Some(reply) };
        match ProtobufCodec.decode_reply(&message.encode_to_vec()) {
            Err(e) => e,
            Ok(msg) => panic!("decoded as {msg:?}"),
        }
    }

    #[test]
    fn replies_that_break_the_schema_rules_are_bad_requests() {
        let pb_friend = |state| pb::Friend {
            id: 1,
            name: "a".into(),
            state,
        };
        let pb_group = |role| pb::Group {
            id: 1,
            name: "g".into(),
            desc: String::new(),
            members: vec![pb::Member {
                id: 1,
                name: "a".into(),
                state: pb::Presence::Online as i32,
                role,
            }],
        };
        let failure = |code| pb::Failure {
            code,
            message: "m".into(),
        };
        let cases = [
            (
                PbReply::LoginAck(pb::LoginAck { outcome: None }),
                MsgId::LoginAck,
            ),
            (PbReply::RegAck(pb::RegAck { outcome: None }), MsgId::RegAck),
            (
                PbReply::RegAck(pb::RegAck {
                    outcome: Some(pb::reg_ack::Outcome::Failure(failure(0))),
                }),
                MsgId::RegAck,
            ),
            (
                PbReply::LoginAck(pb::LoginAck {
                    outcome: Some(pb::login_ack::Outcome::Failure(failure(99))),
                }),
                MsgId::LoginAck,
            ),
            (
                PbReply::LoginAck(pb::LoginAck {
                    outcome: Some(pb::login_ack::Outcome::Ok(pb::LoginOk {
                        offline: vec![pb::Delivery { message: None }],
                        ..pb::LoginOk::default()
                    })),
                }),
                MsgId::LoginAck,
            ),
            (
                PbReply::AddFriendAck(pb::AddFriendAck { friend: None }),
                MsgId::AddFriendAck,
            ),
            (
                PbReply::FriendAdded(pb::FriendAdded {
                    friend: Some(pb_friend(0)),
                }),
                MsgId::FriendAdded,
            ),
            (
                PbReply::ListAck(pb::ListAck {
                    friends: vec![pb_friend(7)],
                    groups: vec![],
                }),
                MsgId::ListAck,
            ),
            (
                PbReply::AddGroupAck(pb::AddGroupAck {
                    group: Some(pb_group(0)),
                }),
                MsgId::AddGroupAck,
            ),
            (
                PbReply::AddGroupAck(pb::AddGroupAck {
                    group: Some(pb_group(-3)),
                }),
                MsgId::AddGroupAck,
            ),
            (
                PbReply::AddGroupAck(pb::AddGroupAck { group: None }),
                MsgId::AddGroupAck,
            ),
            (
                PbReply::ChatAck(pb::ChatAck {
                    request: 99,
                    time: String::new(),
                }),
                MsgId::ChatAck,
            ),
            (
                PbReply::ChatAck(pb::ChatAck {
                    request: 0,
                    time: String::new(),
                }),
                MsgId::ChatAck,
            ),
            (
                PbReply::Error(pb::Error {
                    request: Some(1),
                    failure: None,
                }),
                MsgId::Error,
            ),
        ];
        for (reply, msgid) in cases {
            let shown = format!("{reply:?}");
            let e = reply_error(reply);
            assert_eq!(e.code, ErrorCode::BadRequest, "{shown}: {e}");
            assert_eq!(e.msgid, Some(i64::from(msgid.code())), "{shown}: {e}");
        }
        assert_eq!(
            ProtobufCodec.decode_reply(b"").map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn error_codes_match_the_schema() {
        fn screaming(name: &str) -> String {
            let mut out = String::from("ERROR_CODE");
            for c in name.chars() {
                if c.is_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
        for value in -1..64 {
            let ours = ErrorCode::from_code(i64::from(value)).map(|c| screaming(&format!("{c:?}")));
            let schema = pb::ErrorCode::try_from(value)
                .ok()
                .filter(|c| *c != pb::ErrorCode::Unspecified)
                .map(|c| c.as_str_name().to_owned());
            assert_eq!(ours, schema, "error code {value}");
        }
    }

    /// A tiny xorshift generator: enough to vary inputs, and reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn decodes_or_refuses(payload: &[u8]) {
        for code in [
            ProtobufCodec.decode_request(payload).err().map(|e| e.code),
            ProtobufCodec.decode_reply(payload).err().map(|e| e.code),
        ] {
            assert!(
                matches!(code, None | Some(ErrorCode::BadRequest)),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(48);
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            decodes_or_refuses(&payload);
        }
    }

    #[test]
    fn damaged_messages_never_panic() {
        // Random bytes rarely get past the first field; changing a few bytes
        // of real messages reaches the nested ones and the checks on them.
        let mut originals = Vec::new();
        for request in every_request() {
            let mut out = Vec::new();
            ProtobufCodec.encode_request(&request, &mut out);
            originals.push(out);
        }
        for reply in every_reply() {
            let mut out = Vec::new();
            ProtobufCodec.encode_reply(&reply, &mut out);
            originals.push(out);
        }
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for round in 0..20_000 {
            let mut payload = originals[round % originals.len()].clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(payload.len());
                payload[at] = rng.next() as u8;
            }
            payload.truncate(payload.len() - rng.below(2));
            decodes_or_refuses(&payload);
        }
    }
}
