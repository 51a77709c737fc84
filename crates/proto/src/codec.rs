//! Codecs: a frame's payload to a message and back.
//!
//! The [`Codec`] trait covers both directions of both sides, so a server
//! decodes requests and encodes replies, and a client (the terminal client,
//! the load generator, the tests) does the opposite with the same code.
//! [`JsonCodec`] speaks the reference project's JSON, field names and all.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::message::*;

/// A payload that is not a well-formed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The message id, where the payload got that far.
    pub msgid: Option<i64>,
    /// [`ErrorCode::BadRequest`] or [`ErrorCode::UnknownMsgId`].
    pub code: ErrorCode,
    /// What is wrong, naming the field.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn bad(msgid: Option<i64>, message: impl Into<String>) -> DecodeError {
        DecodeError {
            msgid,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }

    /// The error reply that tells the client about it.
    pub fn into_reply(self) -> ServerMsg {
        ServerMsg::Error {
            request: self.msgid,
            failure: Failure::new(self.code, self.message),
        }
    }
}

/// Turns payloads into messages and back, for one wire format.
pub trait Codec: Send + Sync + 'static {
    /// Server side: a client's request.
    fn decode_request(&self, payload: &[u8]) -> Result<Request, DecodeError>;
    /// Server side: a reply or delivery, appended to `out`.
    fn encode_reply(&self, msg: &ServerMsg, out: &mut Vec<u8>);
    /// Client side: a request, appended to `out`.
    fn encode_request(&self, request: &Request, out: &mut Vec<u8>);
    /// Client side: a server's message.
    fn decode_reply(&self, payload: &[u8]) -> Result<ServerMsg, DecodeError>;
}

/// The JSON codec: the reference project's message ids and field names.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn decode_request(&self, payload: &[u8]) -> Result<Request, DecodeError> {
        let (msgid, map) = parse_object(payload)?;
        let id = Some(msgid);
        let fields = Fields {
            map: &map,
            msgid: id,
        };
        let request = match MsgId::from_code(msgid) {
            Some(MsgId::Login) => Request::Login {
                id: fields.int("id")?,
                password: fields.string("password")?,
                version: fields.opt_version("proto")?,
            },
            Some(MsgId::Logout) => Request::Logout,
            Some(MsgId::Reg) => Request::Register {
                name: fields.string("name")?,
                password: fields.string("password")?,
            },
            Some(MsgId::OneChat) => Request::OneChat {
                to: fields.int("toid")?,
                text: fields.string("msg")?,
            },
            Some(MsgId::AddFriend) => Request::AddFriend {
                friend: fields.int("friendid")?,
            },
            Some(MsgId::CreateGroup) => Request::CreateGroup {
                name: fields.string("groupname")?,
                desc: fields.opt_string("groupdesc")?.unwrap_or_default(),
            },
            Some(MsgId::AddGroup) => Request::AddGroup {
                group: fields.int("groupid")?,
            },
            Some(MsgId::GroupChat) => Request::GroupChat {
                group: fields.int("groupid")?,
                text: fields.string("msg")?,
            },
            Some(MsgId::Ping) => Request::Ping,
            Some(MsgId::List) => Request::List,
            _ => {
                return Err(DecodeError {
                    msgid: id,
                    code: ErrorCode::UnknownMsgId,
                    message: format!("msgid {msgid} is not a request a client may send"),
                })
            }
        };
        Ok(request)
    }

    fn encode_reply(&self, msg: &ServerMsg, out: &mut Vec<u8>) {
        // Deliveries are the hot path: they are written straight from the
        // message, without building a JSON tree first.
        if let ServerMsg::Deliver(delivery) = msg {
            write_json(out, &DeliveryOut::from(&**delivery));
            return;
        }
        write_json(out, &reply_value(msg));
    }

    fn encode_request(&self, request: &Request, out: &mut Vec<u8>) {
        let msgid = request.msg_id().code();
        let value = match request {
            Request::Login {
                id,
                password,
                version,
            } => {
                let mut v = json!({"msgid": msgid, "id": id, "password": password});
                if *version != LEGACY_VERSION {
                    v["proto"] = json!(version);
                }
                v
            }
            Request::Register { name, password } => {
                json!({"msgid": msgid, "name": name, "password": password})
            }
            Request::OneChat { to, text } => json!({"msgid": msgid, "toid": to, "msg": text}),
            Request::AddFriend { friend } => json!({"msgid": msgid, "friendid": friend}),
            Request::CreateGroup { name, desc } => {
                json!({"msgid": msgid, "groupname": name, "groupdesc": desc})
            }
            Request::AddGroup { group } => json!({"msgid": msgid, "groupid": group}),
            Request::GroupChat { group, text } => {
                json!({"msgid": msgid, "groupid": group, "msg": text})
            }
            Request::Logout | Request::Ping | Request::List => json!({ "msgid": msgid }),
        };
        write_json(out, &value);
    }

    fn decode_reply(&self, payload: &[u8]) -> Result<ServerMsg, DecodeError> {
        let (msgid, map) = parse_object(payload)?;
        let fields = Fields {
            map: &map,
            msgid: Some(msgid),
        };
        let failure = || -> Result<Option<Failure>, DecodeError> {
            let errno = fields.opt_int("errno")?.unwrap_or(0);
            if errno == 0 {
                return Ok(None);
            }
            let code = ErrorCode::from_code(errno)
                .ok_or_else(|| DecodeError::bad(Some(msgid), format!("unknown errno {errno}")))?;
            Ok(Some(Failure::new(
                code,
                fields.opt_string("errmsg")?.unwrap_or_default(),
            )))
        };
        let msg = match MsgId::from_code(msgid) {
            Some(MsgId::LoginAck) => ServerMsg::LoginAck(match failure()? {
                Some(f) => Err(f),
                None => Ok(Box::new(LoginOk {
                    id: fields.int("id")?,
                    name: fields.string("name")?,
                    friends: fields.list("friends", friend_from)?,
                    groups: fields.list("groups", group_from)?,
                    offline: fields.list("offlinemsg", |v| delivery_from(v).map(Arc::new))?,
                    more_offline: usize::try_from(fields.opt_int("offlinemore")?.unwrap_or(0))
                        .map_err(|_| DecodeError::bad(Some(msgid), "negative `offlinemore`"))?,
                    version: LEGACY_VERSION,
                })),
            }),
            Some(MsgId::LogoutAck) => ServerMsg::LogoutAck,
            Some(MsgId::RegAck) => ServerMsg::RegAck(match failure()? {
                Some(f) => Err(f),
                None => Ok(fields.int("id")?),
            }),
            Some(MsgId::OneChat) | Some(MsgId::GroupChat) => {
                ServerMsg::Deliver(Arc::new(delivery_from(&Value::Object(map.clone()))?))
            }
            Some(MsgId::ChatAck) => ServerMsg::ChatAck {
                request: MsgId::from_code(fields.int("reqid")?)
                    .ok_or_else(|| DecodeError::bad(Some(msgid), "unknown reqid"))?,
                time: fields.string("time")?,
            },
            Some(MsgId::AddFriendAck) => {
                ServerMsg::AddFriendAck(friend_from(fields.get("friend")?)?)
            }
            Some(MsgId::CreateGroupAck) => ServerMsg::CreateGroupAck {
                id: fields.int("groupid")?,
                name: fields.string("groupname")?,
                desc: fields.string("groupdesc")?,
            },
            Some(MsgId::AddGroupAck) => ServerMsg::AddGroupAck(group_from(fields.get("group")?)?),
            Some(MsgId::ListAck) => ServerMsg::ListAck {
                friends: fields.list("friends", friend_from)?,
                groups: fields.list("groups", group_from)?,
            },
            Some(MsgId::FriendAdded) => ServerMsg::FriendAdded(friend_from(fields.get("friend")?)?),
            Some(MsgId::Pong) => ServerMsg::Pong,
            Some(MsgId::Error) => ServerMsg::Error {
                request: fields.opt_int("reqid")?,
                failure: failure()?
                    .ok_or_else(|| DecodeError::bad(Some(msgid), "error reply with errno 0"))?,
            },
            _ => {
                return Err(DecodeError {
                    msgid: Some(msgid),
                    code: ErrorCode::UnknownMsgId,
                    message: format!("msgid {msgid} is not a server message"),
                })
            }
        };
        Ok(msg)
    }
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("messages serialize to JSON without fail");
}

fn parse_object(payload: &[u8]) -> Result<(i64, Map<String, Value>), DecodeError> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| DecodeError::bad(None, format!("malformed JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(DecodeError::bad(None, "a message is a JSON object"));
    };
    let msgid = match map.get("msgid") {
        None => return Err(DecodeError::bad(None, "missing field `msgid`")),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| DecodeError::bad(None, "field `msgid` must be an integer"))?,
    };
    Ok((msgid, map))
}

/// Typed access to a message's fields, with errors that name the field.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    msgid: Option<i64>,
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Result<&Value, DecodeError> {
        self.map
            .get(name)
            .ok_or_else(|| self.error(format!("missing field `{name}`")))
    }

    fn error(&self, message: String) -> DecodeError {
        DecodeError::bad(self.msgid, message)
    }

    fn int(&self, name: &str) -> Result<i64, DecodeError> {
        self.get(name)?
            .as_i64()
            .ok_or_else(|| self.error(format!("field `{name}` must be an integer")))
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.int(name).map(Some),
        }
    }

    fn opt_version(&self, name: &str) -> Result<u32, DecodeError> {
        match self.opt_int(name)? {
            None => Ok(LEGACY_VERSION),
            Some(v) => u32::try_from(v).map_err(|_| {
                self.error(format!("field `{name}` must be a small positive integer"))
            }),
        }
    }

    fn string(&self, name: &str) -> Result<String, DecodeError> {
        self.get(name)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.error(format!("field `{name}` must be a string")))
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(name).map(Some),
        }
    }

    /// A list whose items may be objects or, as the reference sends them,
    /// strings holding objects.
    fn list<T>(
        &self,
        name: &str,
        item: impl Fn(&Value) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|v| unstring(v, &item)).collect(),
            Some(_) => Err(self.error(format!("field `{name}` must be a list"))),
        }
    }
}

fn unstring<T>(
    value: &Value,
    item: &impl Fn(&Value) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    match value {
        Value::String(text) => {
            let inner: Value = serde_json::from_str(text)
                .map_err(|e| DecodeError::bad(None, format!("list item is not JSON: {e}")))?;
            item(&inner)
        }
        other => item(other),
    }
}

fn object(value: &Value) -> Result<Fields<'_>, DecodeError> {
    match value {
        Value::Object(map) => Ok(Fields { map, msgid: None }),
        _ => Err(DecodeError::bad(None, "expected an object")),
    }
}

fn presence(fields: &Fields<'_>) -> Result<Presence, DecodeError> {
    Ok(Presence::from_online(
        fields.string("state")? == Presence::Online.as_str(),
    ))
}

fn friend_from(value: &Value) -> Result<Friend, DecodeError> {
    let f = object(value)?;
    Ok(Friend {
        id: f.int("id")?,
        name: f.string("name")?,
        state: presence(&f)?,
    })
}

fn member_from(value: &Value) -> Result<Member, DecodeError> {
    let f = object(value)?;
    let role = f.string("role")?;
    Ok(Member {
        id: f.int("id")?,
        name: f.string("name")?,
        state: presence(&f)?,
        role: Role::parse(&role).ok_or_else(|| f.error(format!("unknown role {role:?}")))?,
    })
}

fn group_from(value: &Value) -> Result<Group, DecodeError> {
    let f = object(value)?;
    Ok(Group {
        id: f.int("id")?,
        name: f.string("groupname")?,
        desc: f.string("groupdesc")?,
        members: f.list("users", member_from)?,
    })
}

fn delivery_from(value: &Value) -> Result<Delivery, DecodeError> {
    let f = object(value)?;
    let (from, from_name, text, time) = (
        f.int("id")?,
        f.string("name")?,
        f.string("msg")?,
        f.string("time")?,
    );
    match MsgId::from_code(f.int("msgid")?) {
        Some(MsgId::OneChat) => Ok(Delivery::One(ChatMessage {
            from,
            from_name,
            to: f.int("toid")?,
            text,
            time,
        })),
        Some(MsgId::GroupChat) => Ok(Delivery::Group(GroupMessage {
            from,
            from_name,
            group: f.int("groupid")?,
            text,
            time,
        })),
        _ => Err(f.error("a delivered message has msgid 6 or 10".into())),
    }
}

/// A delivery as the reference spells it.
#[derive(Serialize)]
struct DeliveryOut<'a> {
    msgid: u32,
    id: UserId,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toid: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groupid: Option<GroupId>,
    msg: &'a str,
    time: &'a str,
}

impl<'a> From<&'a Delivery> for DeliveryOut<'a> {
    fn from(delivery: &'a Delivery) -> DeliveryOut<'a> {
        match delivery {
            Delivery::One(m) => DeliveryOut {
                msgid: MsgId::OneChat.code(),
                id: m.from,
                name: &m.from_name,
                toid: Some(m.to),
                groupid: None,
                msg: &m.text,
                time: &m.time,
            },
            Delivery::Group(m) => DeliveryOut {
                msgid: MsgId::GroupChat.code(),
                id: m.from,
                name: &m.from_name,
                toid: None,
                groupid: Some(m.group),
                msg: &m.text,
                time: &m.time,
            },
        }
    }
}

fn friend_value(f: &Friend) -> Value {
    json!({"id": f.id, "name": f.name, "state": f.state.as_str()})
}

fn member_value(m: &Member) -> Value {
    json!({"id": m.id, "name": m.name, "state": m.state.as_str(), "role": m.role.as_str()})
}

/// A group as an object; with `as_strings` its members are strings holding
/// objects, as the reference's LOGIN_ACK has them.
fn group_value(g: &Group, as_strings: bool) -> Value {
    let users: Vec<Value> = g
        .members
        .iter()
        .map(|m| maybe_string(member_value(m), as_strings))
        .collect();
    json!({"id": g.id, "groupname": g.name, "groupdesc": g.desc, "users": users})
}

fn maybe_string(value: Value, as_string: bool) -> Value {
    if as_string {
        Value::String(value.to_string())
    } else {
        value
    }
}

fn delivery_value(d: &Delivery) -> Value {
    serde_json::to_value(DeliveryOut::from(d)).expect("a delivery serializes to JSON")
}

fn failure_value(msgid: MsgId, f: &Failure) -> Value {
    json!({"msgid": msgid.code(), "errno": f.code.code(), "errmsg": f.message})
}

fn reply_value(msg: &ServerMsg) -> Value {
    let msgid = msg.msg_id().code();
    match msg {
        ServerMsg::LoginAck(Err(f)) => failure_value(MsgId::LoginAck, f),
        ServerMsg::LoginAck(Ok(ok)) => {
            let legacy = ok.version <= LEGACY_VERSION;
            let friends: Vec<Value> = ok
                .friends
                .iter()
                .map(|f| maybe_string(friend_value(f), legacy))
                .collect();
            let groups: Vec<Value> = ok
                .groups
                .iter()
                .map(|g| maybe_string(group_value(g, legacy), legacy))
                .collect();
            let offline: Vec<Value> = ok
                .offline
                .iter()
                .map(|d| maybe_string(delivery_value(d), legacy))
                .collect();
            json!({
                "msgid": msgid, "errno": 0, "errmsg": "", "id": ok.id, "name": ok.name,
                "friends": friends, "groups": groups, "offlinemsg": offline,
                "offlinemore": ok.more_offline,
            })
        }
        ServerMsg::LogoutAck => json!({"msgid": msgid, "errno": 0}),
        ServerMsg::RegAck(Err(f)) => failure_value(MsgId::RegAck, f),
        ServerMsg::RegAck(Ok(id)) => json!({"msgid": msgid, "errno": 0, "errmsg": "", "id": id}),
        ServerMsg::Deliver(d) => delivery_value(d),
        ServerMsg::ChatAck { request, time } => {
            json!({"msgid": msgid, "errno": 0, "reqid": request.code(), "time": time})
        }
        ServerMsg::AddFriendAck(f) => {
            json!({"msgid": msgid, "errno": 0, "friend": friend_value(f)})
        }
        ServerMsg::CreateGroupAck { id, name, desc } => json!({
            "msgid": msgid, "errno": 0, "groupid": id, "groupname": name, "groupdesc": desc,
        }),
        ServerMsg::AddGroupAck(g) => {
            json!({"msgid": msgid, "errno": 0, "group": group_value(g, false)})
        }
        ServerMsg::ListAck { friends, groups } => json!({
            "msgid": msgid, "errno": 0,
            "friends": friends.iter().map(friend_value).collect::<Vec<_>>(),
            "groups": groups.iter().map(|g| group_value(g, false)).collect::<Vec<_>>(),
        }),
        ServerMsg::FriendAdded(f) => json!({"msgid": msgid, "friend": friend_value(f)}),
        ServerMsg::Pong => json!({ "msgid": msgid }),
        ServerMsg::Error { request, failure } => {
            let mut v = failure_value(MsgId::Error, failure);
            if let Some(request) = request {
                v["reqid"] = json!(request);
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Request, DecodeError> {
        JsonCodec.decode_request(text.as_bytes())
    }

    #[test]
    fn reference_requests_decode() {
        assert_eq!(
            decode(r#"{"msgid":6,"id":1,"name":"a","toid":2,"msg":"hi","time":"x"}"#),
            Ok(Request::OneChat {
                to: 2,
                text: "hi".into()
            })
        );
        assert_eq!(
            decode(r#"{"msgid":1,"id":7,"password":"pw"}"#),
            Ok(Request::Login {
                id: 7,
                password: "pw".into(),
                version: 1
            })
        );
        assert_eq!(
            decode(r#"{"msgid":8,"groupname":"g"}"#),
            Ok(Request::CreateGroup {
                name: "g".into(),
                desc: String::new()
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = decode(r#"{"msgid":6,"to":2,"msg":"hi"}"#).expect_err("refused");
        assert_eq!((e.code, e.msgid), (ErrorCode::BadRequest, Some(6)));
        assert!(e.message.contains("`toid`"), "{}", e.message);
        let e = decode(r#"{"msgid":6,"toid":"12","msg":"hi"}"#).expect_err("refused");
        assert!(
            e.message.contains("`toid` must be an integer"),
            "{}",
            e.message
        );
        let e = decode(r#"{"msgid":"1"}"#).expect_err("refused");
        assert!(e.message.contains("`msgid`"), "{}", e.message);
        assert_eq!(
            decode(r#"{"msgid":99999}"#).expect_err("refused").code,
            ErrorCode::UnknownMsgId
        );
        assert_eq!(
            decode(r#"{"msgid":2}"#).expect_err("refused").code,
            ErrorCode::UnknownMsgId
        );
        assert_eq!(
            decode("[]").expect_err("refused").code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            JsonCodec
                .decode_request(b"{\"a\":\"\xff\"}")
                .expect_err("refused")
                .code,
            ErrorCode::BadRequest
        );
    }

    fn round_trip(msg: ServerMsg) -> ServerMsg {
        let mut out = Vec::new();
        JsonCodec.encode_reply(&msg, &mut out);
        JsonCodec.decode_reply(&out).expect("own output decodes")
    }

    fn sample_login(version: u32) -> ServerMsg {
        let member = Member {
            id: 2,
            name: "张三".into(),
            state: Presence::Online,
            role: Role::Creator,
        };
        ServerMsg::LoginAck(Ok(Box::new(LoginOk {
            id: 1,
            name: "O'Brien".into(),
            friends: vec![Friend {
                id: 2,
                name: "张三".into(),
                state: Presence::Offline,
            }],
            groups: vec![Group {
                id: 3,
                name: "测试群".into(),
                desc: "描述😀".into(),
                members: vec![member],
            }],
            offline: vec![Arc::new(Delivery::One(ChatMessage {
                from: 2,
                from_name: "张三".into(),
                to: 1,
                text: "it's \"q\" \\ 😀".into(),
                time: "2026-01-01 00:00:00".into(),
            }))],
            more_offline: 3,
            version,
        })))
    }

    #[test]
    fn login_ack_round_trips_in_both_list_forms() {
        for version in [1, 2] {
            assert_eq!(
                round_trip(sample_login(version)),
                sample_login(LEGACY_VERSION)
            );
        }
        let mut out = Vec::new();
        JsonCodec.encode_reply(&sample_login(1), &mut out);
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert!(v["friends"][0].is_string() && v["groups"][0].is_string());
        assert!(v["offlinemsg"][0].is_string());
        JsonCodec.encode_reply(&sample_login(2), out_clear(&mut out));
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert!(v["friends"][0].is_object() && v["groups"][0]["users"][0].is_object());
    }

    fn out_clear(out: &mut Vec<u8>) -> &mut Vec<u8> {
        out.clear();
        out
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Login {
                id: 1,
                password: "p".into(),
                version: 2,
            },
            Request::Logout,
            Request::Register {
                name: "n".into(),
                password: "p".into(),
            },
            Request::OneChat {
                to: 2,
                text: "t".into(),
            },
            Request::AddFriend { friend: 3 },
            Request::CreateGroup {
                name: "g".into(),
                desc: "d".into(),
            },
            Request::AddGroup { group: 4 },
            Request::GroupChat {
                group: 4,
                text: "t".into(),
            },
            Request::Ping,
            Request::List,
        ];
        for request in requests {
            let mut out = Vec::new();
            JsonCodec.encode_request(&request, &mut out);
            assert_eq!(JsonCodec.decode_request(&out), Ok(request));
        }
    }

    #[test]
    fn replies_round_trip() {
        let friend = Friend {
            id: 2,
            name: "b".into(),
            state: Presence::Online,
        };
        let msgs = [
            ServerMsg::LogoutAck,
            ServerMsg::RegAck(Ok(5)),
            ServerMsg::RegAck(Err(Failure::new(ErrorCode::NameTaken, "taken"))),
            ServerMsg::LoginAck(Err(Failure::new(ErrorCode::BadCredentials, "no"))),
            ServerMsg::ChatAck {
                request: MsgId::GroupChat,
                time: "t".into(),
            },
            ServerMsg::AddFriendAck(friend.clone()),
            ServerMsg::FriendAdded(friend.clone()),
            ServerMsg::CreateGroupAck {
                id: 1,
                name: "g".into(),
                desc: "".into(),
            },
            ServerMsg::ListAck {
                friends: vec![friend],
                groups: vec![],
            },
            ServerMsg::Pong,
            ServerMsg::error(MsgId::OneChat, ErrorCode::NoSuchUser, "no such user"),
            ServerMsg::Deliver(Arc::new(Delivery::Group(GroupMessage {
                from: 1,
                from_name: "a".into(),
                group: 9,
                text: "x".into(),
                time: "t".into(),
            }))),
        ];
        for msg in msgs {
            assert_eq!(round_trip(msg.clone()), msg);
        }
    }
}
