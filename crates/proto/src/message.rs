//! The protocol's messages as types.
//!
//! These are the words the service, the transports and the clients share.
//! They say what a message means, not how it is spelled on the wire: a
//! [`Codec`](crate::Codec) does the spelling, so the service never learns
//! which codec a connection speaks. `docs/protocol.md` documents the JSON
//! spelling of every message here.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A user's numeric id, as the store assigns it at registration.
pub type UserId = i64;

/// A group's numeric id, as the store assigns it at creation.
pub type GroupId = i64;

/// Protocol version a client gets unless its LOGIN asks for a newer one.
///
/// Version 1 sends the list items of LOGIN_ACK as JSON strings that hold the
/// objects, as the reference clients expect; version 2 sends real objects.
pub const LEGACY_VERSION: u32 = 1;

/// The message ids of the protocol: 1–10 are the reference project's, the
/// rest are this project's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgId {
    Login = 1,
    LoginAck = 2,
    Logout = 3,
    Reg = 4,
    RegAck = 5,
    OneChat = 6,
    AddFriend = 7,
    CreateGroup = 8,
    AddGroup = 9,
    GroupChat = 10,
    AddFriendAck = 11,
    CreateGroupAck = 12,
    AddGroupAck = 13,
    Error = 14,
    Ping = 15,
    Pong = 16,
    List = 17,
    ListAck = 18,
    FriendAdded = 19,
    LogoutAck = 20,
    ChatAck = 21,
}

impl MsgId {
    /// The id as a number on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The message id for a number, if it is one.
    pub fn from_code(code: i64) -> Option<MsgId> {
        use MsgId::*;
        Some(match code {
            1 => Login,
            2 => LoginAck,
            3 => Logout,
            4 => Reg,
            5 => RegAck,
            6 => OneChat,
            7 => AddFriend,
            8 => CreateGroup,
            9 => AddGroup,
            10 => GroupChat,
            11 => AddFriendAck,
            12 => CreateGroupAck,
            13 => AddGroupAck,
            14 => Error,
            15 => Ping,
            16 => Pong,
            17 => List,
            18 => ListAck,
            19 => FriendAdded,
            20 => LogoutAck,
            21 => ChatAck,
            _ => return None,
        })
    }
}

/// Why a request failed, as the `errno` of a reply. `0` means success and
/// has no variant: a successful reply carries no `ErrorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Wrong user id or password (LOGIN), as the reference answers.
    BadCredentials = 1,
    /// The account is already logged in somewhere in the cluster.
    AlreadyOnline = 2,
    /// The request needs a logged-in session and this connection has none.
    NotLoggedIn = 3,
    /// The frame is not a well-formed request: bad JSON, a missing or
    /// mistyped field. The message names the field.
    BadRequest = 4,
    /// The `msgid` is not one a client may send.
    UnknownMsgId = 5,
    /// No user has that id.
    NoSuchUser = 6,
    /// No group has that id.
    NoSuchGroup = 7,
    /// The user name or group name is taken.
    NameTaken = 8,
    /// The two users are already friends.
    AlreadyFriends = 9,
    /// The user is already a member of the group.
    AlreadyMember = 10,
    /// Only members may post to a group.
    NotMember = 11,
    /// A user cannot befriend themself.
    SelfFriend = 12,
    /// A message or frame is longer than the server accepts.
    TooLong = 13,
    /// A value is out of its allowed range (empty password, name too long).
    Invalid = 14,
    /// Storage or the message bus failed; the request may be retried.
    Unavailable = 15,
    /// This connection already has a logged-in session: log out first.
    SessionActive = 16,
}

impl ErrorCode {
    /// The number sent as `errno`.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The code for an `errno`, if it is one.
    pub fn from_code(code: i64) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match code {
            1 => BadCredentials,
            2 => AlreadyOnline,
            3 => NotLoggedIn,
            4 => BadRequest,
            5 => UnknownMsgId,
            6 => NoSuchUser,
            7 => NoSuchGroup,
            8 => NameTaken,
            9 => AlreadyFriends,
            10 => AlreadyMember,
            11 => NotMember,
            12 => SelfFriend,
            13 => TooLong,
            14 => Invalid,
            15 => Unavailable,
            16 => SessionActive,
            _ => return None,
        })
    }
}

/// A failed request: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, self.code.code())
    }
}

/// What a client asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Log in; `version` selects the LOGIN_ACK list form (see
    /// [`LEGACY_VERSION`]).
    Login {
        id: UserId,
        password: String,
        version: u32,
    },
    /// End the session; the connection stays open.
    Logout,
    /// Create an account.
    Register { name: String, password: String },
    /// Send a message to one user.
    OneChat { to: UserId, text: String },
    /// Become friends with a user (both ways).
    AddFriend { friend: UserId },
    /// Create a group, with the sender as its creator.
    CreateGroup { name: String, desc: String },
    /// Join a group.
    AddGroup { group: GroupId },
    /// Send a message to every other member of a group.
    GroupChat { group: GroupId, text: String },
    /// Keep the connection alive; answered by [`ServerMsg::Pong`].
    Ping,
    /// Ask again for friends and groups, as LOGIN_ACK gave them.
    List,
}

impl Request {
    /// The message id this request is sent with.
    pub fn msg_id(&self) -> MsgId {
        match self {
            Request::Login { .. } => MsgId::Login,
            Request::Logout => MsgId::Logout,
            Request::Register { .. } => MsgId::Reg,
            Request::OneChat { .. } => MsgId::OneChat,
            Request::AddFriend { .. } => MsgId::AddFriend,
            Request::CreateGroup { .. } => MsgId::CreateGroup,
            Request::AddGroup { .. } => MsgId::AddGroup,
            Request::GroupChat { .. } => MsgId::GroupChat,
            Request::Ping => MsgId::Ping,
            Request::List => MsgId::List,
        }
    }
}

/// A one-to-one message as it is delivered, stored offline and published
/// between servers. `from` and `from_name` come from the sender's session,
/// `time` from the server's clock: never from what the client wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub from: UserId,
    pub from_name: String,
    pub to: UserId,
    pub text: String,
    pub time: String,
}

/// A group message as it is delivered to each other member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessage {
    pub from: UserId,
    pub from_name: String,
    pub group: GroupId,
    pub text: String,
    pub time: String,
}

/// A chat message on its way to a recipient: live, through the bus, or kept
/// offline. Its serde form is the internal one stored in the offline table
/// and sent between servers, independent of any client's codec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "StoredDelivery")]
pub enum Delivery {
    One(ChatMessage),
    Group(GroupMessage),
}

/// [`Delivery`]'s serde form, read in one pass.
///
/// Serde reads an internally tagged enum by first copying every field into
/// a buffer of its own, then choosing the variant: for a delivery read from
/// the bus or the offline table that cost more than the rest of handing it
/// on. This flat struct reads the same JSON (unknown fields ignored, as
/// before) without the buffer.
#[derive(Deserialize)]
struct StoredDelivery {
    kind: DeliveryKind,
    from: UserId,
    from_name: String,
    #[serde(default)]
    to: Option<UserId>,
    #[serde(default)]
    group: Option<GroupId>,
    text: String,
    time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DeliveryKind {
    One,
    Group,
}

impl TryFrom<StoredDelivery> for Delivery {
    type Error = &'static str;

    fn try_from(d: StoredDelivery) -> Result<Delivery, &'static str> {
        match (d.kind, d.to, d.group) {
            (DeliveryKind::One, Some(to), _) => Ok(Delivery::One(ChatMessage {
                from: d.from,
                from_name: d.from_name,
                to,
                text: d.text,
                time: d.time,
            })),
            (DeliveryKind::Group, _, Some(group)) => Ok(Delivery::Group(GroupMessage {
                from: d.from,
                from_name: d.from_name,
                group,
                text: d.text,
                time: d.time,
            })),
            (DeliveryKind::One, None, _) => Err("missing field `to`"),
            (DeliveryKind::Group, _, None) => Err("missing field `group`"),
        }
    }
}

impl Delivery {
    /// Who sent it.
    pub fn sender(&self) -> UserId {
        match self {
            Delivery::One(m) => m.from,
            Delivery::Group(m) => m.from,
        }
    }
}

/// Whether a user is logged in anywhere in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
}

impl Presence {
    /// The reference's spelling: `"online"` or `"offline"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
        }
    }

    pub fn from_online(online: bool) -> Presence {
        if online {
            Presence::Online
        } else {
            Presence::Offline
        }
    }
}

/// A user as a friend list shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Friend {
    pub id: UserId,
    pub name: String,
    pub state: Presence,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Creator,
    Normal,
}

impl Role {
    /// The reference's spelling: `"creator"` or `"normal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Normal => "normal",
        }
    }

    /// The role for its spelling, if it is one.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "creator" => Some(Role::Creator),
            "normal" => Some(Role::Normal),
            _ => None,
        }
    }
}

/// A member of a group, with their state and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: UserId,
    pub name: String,
    pub state: Presence,
    pub role: Role,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
    pub members: Vec<Member>,
}

/// A successful login: who the user is, their friends and groups, and what
/// was kept for them while they were away, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOk {
    pub id: UserId,
    pub name: String,
    pub friends: Vec<Friend>,
    pub groups: Vec<Group>,
    pub offline: Vec<Arc<Delivery>>,
    /// How many more offline messages follow the LOGIN_ACK as ordinary
    /// deliveries, because putting them all in it would make it too large.
    pub more_offline: usize,
    /// The protocol version the client asked for; below 2 the list items
    /// are sent as JSON strings, as the reference clients expect.
    pub version: u32,
}

/// What the server sends: replies to requests and deliveries of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The answer to LOGIN.
    LoginAck(Result<Box<LoginOk>, Failure>),
    /// The answer to LOGOUT.
    LogoutAck,
    /// The answer to REG: the new user's id.
    RegAck(Result<UserId, Failure>),
    /// A chat message for this session's user.
    Deliver(Arc<Delivery>),
    /// A ONE_CHAT or GROUP_CHAT was accepted: delivered live or kept for
    /// the recipients who are offline.
    ChatAck { request: MsgId, time: String },
    /// The answer to ADD_FRIEND: the new friend.
    AddFriendAck(Friend),
    /// The answer to CREATE_GROUP: the new group's id.
    CreateGroupAck {
        id: GroupId,
        name: String,
        desc: String,
    },
    /// The answer to ADD_GROUP: the group joined, with its members.
    AddGroupAck(Group),
    /// The answer to LIST: friends and groups, always as objects.
    ListAck {
        friends: Vec<Friend>,
        groups: Vec<Group>,
    },
    /// Someone made this session's user their friend.
    FriendAdded(Friend),
    /// The answer to PING.
    Pong,
    /// A request failed; `request` names it where it could be read.
    Error {
        request: Option<i64>,
        failure: Failure,
    },
}

impl ServerMsg {
    /// An error reply to a request of the given kind.
    pub fn error(request: MsgId, code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            request: Some(i64::from(request.code())),
            failure: Failure::new(code, message),
        }
    }

    /// The message id this message is sent with.
    pub fn msg_id(&self) -> MsgId {
        match self {
            ServerMsg::LoginAck(_) => MsgId::LoginAck,
            ServerMsg::LogoutAck => MsgId::LogoutAck,
            ServerMsg::RegAck(_) => MsgId::RegAck,
            ServerMsg::Deliver(d) => match **d {
                Delivery::One(_) => MsgId::OneChat,
                Delivery::Group(_) => MsgId::GroupChat,
            },
            ServerMsg::ChatAck { .. } => MsgId::ChatAck,
            ServerMsg::AddFriendAck(_) => MsgId::AddFriendAck,
            ServerMsg::CreateGroupAck { .. } => MsgId::CreateGroupAck,
            ServerMsg::AddGroupAck(_) => MsgId::AddGroupAck,
            ServerMsg::ListAck { .. } => MsgId::ListAck,
            ServerMsg::FriendAdded(_) => MsgId::FriendAdded,
            ServerMsg::Pong => MsgId::Pong,
            ServerMsg::Error { .. } => MsgId::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Delivery {
        Delivery::One(ChatMessage {
            from: 1,
            from_name: "ann".to_owned(),
            to: 2,
            text: "hi \"you\"".to_owned(),
            time: "2024-01-02 03:04:05".to_owned(),
        })
    }

    fn group() -> Delivery {
        Delivery::Group(GroupMessage {
            from: 1,
            from_name: "ann".to_owned(),
            group: 9,
            text: "hello all".to_owned(),
            time: "2024-01-02 03:04:05".to_owned(),
        })
    }

    // Offline tables written by earlier versions hold this exact form.
    #[test]
    fn stored_form_is_unchanged_and_reads_back() {
        let one_json = serde_json::to_string(&one()).expect("encodes");
        assert_eq!(
            one_json,
            r#"{"kind":"one","from":1,"from_name":"ann","to":2,"text":"hi \"you\"","time":"2024-01-02 03:04:05"}"#
        );
        let group_json = serde_json::to_string(&group()).expect("encodes");
        assert_eq!(
            group_json,
            r#"{"kind":"group","from":1,"from_name":"ann","group":9,"text":"hello all","time":"2024-01-02 03:04:05"}"#
        );
        for (json, want) in [(one_json, one()), (group_json, group())] {
            assert_eq!(
                serde_json::from_str::<Delivery>(&json).expect("decodes"),
                want
            );
        }
    }

    #[test]
    fn field_order_and_unknown_fields_do_not_matter() {
        let json = r#"{"time":"2024-01-02 03:04:05","text":"hello all","extra":[1],"group":9,"from_name":"ann","from":1,"kind":"group"}"#;
        assert_eq!(
            serde_json::from_str::<Delivery>(json).expect("decodes"),
            group()
        );
    }

    #[test]
    fn a_delivery_without_its_recipient_is_refused() {
        for json in [
            r#"{"kind":"one","from":1,"from_name":"a","group":9,"text":"t","time":"x"}"#,
            r#"{"kind":"group","from":1,"from_name":"a","to":2,"text":"t","time":"x"}"#,
            r#"{"kind":"other","from":1,"from_name":"a","to":2,"text":"t","time":"x"}"#,
            r#"{"from":1,"from_name":"a","to":2,"text":"t","time":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Delivery>(json).is_err(), "{json}");
        }
    }
}
