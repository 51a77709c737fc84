//! The chat service: sessions, routing and the rules of every request.
//!
//! # How a message finds its recipient
//!
//! A chat message goes, for each recipient, to the first of these that
//! takes it: the recipient's session on this server; the server that holds
//! the recipient's presence, through the [`Bus`]; the offline table of the
//! [`Store`]. A message that was stored offline while its recipient was
//! logging in is not left there: after storing, the sender checks presence
//! again and wakes the server that holds the recipient, which hands over
//! what is stored. Handing over stored messages (at login or on a wake)
//! happens under a per-user lock and deletes exactly the messages handed
//! over, so each message arrives once.
//!
//! # Why a session is registered only after its LOGIN_ACK
//!
//! A login claims presence first, then, under the user's lock, reads the
//! offline messages, queues the LOGIN_ACK that carries them and only then
//! registers the session for live delivery. A live message therefore never
//! overtakes the LOGIN_ACK, and one that arrives in between is stored and
//! handed over by the wake, after the ones it followed.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use async_trait::async_trait;
use chat_proto::{
    ChatMessage, Delivery, ErrorCode, Failure, Friend, Group, GroupId, GroupMessage, LoginOk,
    Member, MsgId, Presence, Request, Role, ServerMsg, UserId,
};
use tracing::{debug, error, info, warn};

use crate::bus::{Bus, BusError, Inbound, Notice};
use crate::outbound::Outbound;
use crate::password::{self, PasswordCost};
use crate::store::{GroupWithMembers, Store, StoreError, UserRecord};

/// Limits and choices of one chat service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Cost of the password hashes made at registration.
    pub password_cost: PasswordCost,
    /// Longest chat text accepted, in bytes of UTF-8.
    pub max_message_bytes: usize,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            password_cost: PasswordCost::Standard,
            max_message_bytes: 60 * 1024,
        }
    }
}

/// Longest user or group name, in characters (any script).
pub const MAX_NAME_CHARS: usize = 32;
/// Longest group description, in characters.
pub const MAX_DESC_CHARS: usize = 200;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Text bytes of offline messages carried inside a LOGIN_ACK; the rest
/// follow it as ordinary deliveries, so the ack stays a reasonable frame.
const LOGIN_ACK_OFFLINE_BYTES: usize = 64 * 1024;

/// Offline messages read at once: a login or a step of handing over takes
/// at most this many, and the rest follow in later steps.
const OFFLINE_READ_LIMIT: usize = 1000;

/// Pause between two steps of handing over a long backlog, so the
/// connection can drain.
const BACKLOG_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// Number of per-user locks; users share a lock when their ids collide.
const USER_LOCKS: usize = 1024;

/// The chat service of one server. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct ChatService {
    inner: Arc<Inner>,
}

impl fmt::Debug for ChatService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    /// A service over the given store and bus. Call [`ChatService::start`]
    /// before accepting connections.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, config: ServiceConfig) -> ChatService {
        let user_locks = (0..USER_LOCKS)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();
        ChatService {
            inner: Arc::new_cyclic(|me| Inner {
                me: me.clone(),
                config,
                store,
                bus,
                sessions: RwLock::new(HashMap::new()),
                claimed: Mutex::new(HashSet::new()),
                user_locks,
                lock_hasher: RandomState::new(),
                names: RwLock::new(HashMap::new()),
                next_connection: AtomicU64::new(1),
            }),
        }
    }

    /// Starts taking notices from other servers through the bus. Call it
    /// once, before the first [`connect`](ChatService::connect).
    pub async fn start(&self) -> Result<(), BusError> {
        self.inner
            .bus
            .start(Arc::new(InboundHandle(self.inner.clone())))
            .await
    }

    /// A new client connection whose messages go out through `outbound`.
    pub fn connect(&self, outbound: Arc<dyn Outbound>) -> Connection {
        Connection {
            inner: self.inner.clone(),
            id: self.inner.next_connection.fetch_add(1, Ordering::Relaxed),
            outbound,
            session: None,
        }
    }

    /// How many users are logged in on this server.
    pub fn online_count(&self) -> usize {
        read(&self.inner.sessions).len()
    }

    /// Logs every user of this server out, releases their presence and
    /// shuts the bus down. The store stays open for whoever owns it to
    /// [`close`](Store::close) afterwards.
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<Session>> = write(&self.inner.sessions)
            .drain()
            .map(|(_, session)| session)
            .collect();
        for session in &sessions {
            session.close();
        }
        lock(&self.inner.claimed).clear();
        self.inner.bus.shutdown().await;
        info!(users = sessions.len(), "logged out every user for shutdown");
    }
}

/// One client connection's view of the service.
///
/// The transport calls [`Connection::handle`] for each request in the order
/// received, and [`Connection::close`] when the connection ends. One
/// dropped without `close` inside a Tokio runtime still logs its user out,
/// a moment later; dropped outside one, its user stays online.
pub struct Connection {
    inner: Arc<Inner>,
    id: u64,
    outbound: Arc<dyn Outbound>,
    session: Option<Arc<Session>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The logged-in user, if any.
    pub fn user(&self) -> Option<UserId> {
        self.session.as_ref().map(|s| s.user)
    }

    /// Handles one request; replies and deliveries go out through the
    /// connection's [`Outbound`].
    pub async fn handle(&mut self, request: Request) {
        let msgid = request.msg_id();
        let reply = match request {
            Request::Ping => Some(ServerMsg::Pong),
            Request::Register { name, password } => Some(self.inner.register(name, password).await),
            Request::Login {
                id,
                password,
                version,
            } => self.login(id, password, version).await,
            Request::Logout => Some(self.logout().await),
            request => match &self.session {
                None => Some(not_logged_in(msgid)),
                Some(session) => Some(self.inner.serve(session, request).await),
            },
        };
        if let Some(reply) = reply {
            self.outbound.send(reply);
        }
    }

    /// Ends the connection: its user, if any, is logged out at once.
    pub async fn close(mut self) {
        if let Some(session) = self.session.take() {
            self.inner.end_session(&session).await;
            info!(
                user = session.user,
                connection = self.id,
                "logged out: connection closed"
            );
        }
    }

    async fn login(&mut self, id: UserId, password: String, version: u32) -> Option<ServerMsg> {
        if let Some(current) = &self.session {
            let message = format!(
                "this connection is logged in as {}: log out first",
                current.user
            );
            return Some(login_failed(ErrorCode::SessionActive, message));
        }
        match self
            .inner
            .login(id, password, version, &self.outbound)
            .await
        {
            Ok(session) => {
                info!(user = id, connection = self.id, "logged in");
                self.session = Some(session);
                None
            }
            Err(reply) => reply,
        }
    }

    async fn logout(&mut self) -> ServerMsg {
        match self.session.take() {
            None => not_logged_in(MsgId::Logout),
            Some(session) => {
                self.inner.end_session(&session).await;
                info!(user = session.user, connection = self.id, "logged out");
                ServerMsg::LogoutAck
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // A transport that forgets `close` (or panics) must not leave its
        // user online for good: end the session on the runtime instead.
        if let Some(session) = self.session.take() {
            let inner = self.inner.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { inner.end_session(&session).await });
            }
        }
    }
}

/// A logged-in user on one connection.
///
/// Messages go to the connection only while the session is alive, so after
/// a logout (or a login as someone else on the same connection) nothing
/// meant for the old user reaches it.
struct Session {
    user: UserId,
    name: String,
    outbound: Arc<dyn Outbound>,
    alive: Mutex<bool>,
    /// Stored messages are still being handed over: live messages go to
    /// the store behind them, so that none overtakes an older one.
    backlog: AtomicBool,
}

impl Session {
    /// Queues a live message; `false` while a backlog is handed over.
    fn send(&self, msg: ServerMsg) -> bool {
        !self.backlog.load(Ordering::Acquire) && self.push(msg)
    }

    /// Queues a reply or a stored message, backlog or not.
    fn push(&self, msg: ServerMsg) -> bool {
        let alive = lock(&self.alive);
        *alive && self.outbound.send(msg)
    }

    fn is_alive(&self) -> bool {
        *lock(&self.alive)
    }

    fn close(&self) {
        *lock(&self.alive) = false;
    }
}

struct Inner {
    /// The service itself, for the tasks it spawns.
    me: Weak<Inner>,
    config: ServiceConfig,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Sessions that take live messages.
    sessions: RwLock<HashMap<UserId, Arc<Session>>>,
    /// Users whose presence this server claimed: logged in, or logging in.
    claimed: Mutex<HashSet<UserId>>,
    user_locks: Box<[tokio::sync::Mutex<()>]>,
    lock_hasher: RandomState,
    /// User names by id. Neither ever changes, so the cache never goes stale.
    names: RwLock<HashMap<UserId, String>>,
    next_connection: AtomicU64,
}

/// A request that failed on the server's side, not the client's.
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl Inner {
    async fn register(&self, name: String, password: String) -> ServerMsg {
        let failed = |code, message: String| ServerMsg::RegAck(Err(Failure::new(code, message)));
        if let Err(message) = check_name(&name, "name") {
            return failed(ErrorCode::Invalid, message);
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            let message = format!("a password has 1 to {MAX_PASSWORD_BYTES} bytes");
            return failed(ErrorCode::Invalid, message);
        }
        let hash = match password::hash(self.config.password_cost, password).await {
            Ok(hash) => hash,
            Err(message) => {
                error!(%message, "registration failed");
                return failed(
                    ErrorCode::Unavailable,
                    "registration failed, try again".into(),
                );
            }
        };
        match self.store.create_user(&name, &hash).await {
            Ok(id) => {
                info!(user = id, "registered");
                write(&self.names).insert(id, name);
                ServerMsg::RegAck(Ok(id))
            }
            Err(StoreError::NameTaken) => {
                failed(ErrorCode::NameTaken, format!("the name {name:?} is taken"))
            }
            Err(e) => failed(ErrorCode::Unavailable, unavailable(MsgId::Reg, &e.into())),
        }
    }

    /// Logs `id` in; the error is the reply to send, if any.
    async fn login(
        &self,
        id: UserId,
        password: String,
        version: u32,
        outbound: &Arc<dyn Outbound>,
    ) -> Result<Arc<Session>, Option<ServerMsg>> {
        let bad_credentials = || login_failed(ErrorCode::BadCredentials, "wrong id or password");
        let user = match self.user(id).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(Some(bad_credentials())),
            Err(fault) => {
                let message = unavailable(MsgId::Login, &fault);
                return Err(Some(login_failed(ErrorCode::Unavailable, message)));
            }
        };
        if !password::verify(password, user.password_hash.clone()).await {
            return Err(Some(bad_credentials()));
        }
        self.claim(id).await.map_err(Some)?;

        let _guard = self.lock_user(id).await;
        let session = Arc::new(Session {
            user: id,
            name: user.name.clone(),
            outbound: outbound.clone(),
            alive: Mutex::new(true),
            backlog: AtomicBool::new(false),
        });
        let (mut ack, ids, mut handed) = match self.login_ack(&user, version).await {
            Ok(ack) => ack,
            Err(fault) => {
                self.unclaim(id).await;
                let message = unavailable(MsgId::Login, &fault);
                return Err(Some(login_failed(ErrorCode::Unavailable, message)));
            }
        };
        // A full read means more may wait in the store than was read.
        let more_stored = ids.len() + handed.len() >= OFFLINE_READ_LIMIT;
        let rest = split_offline(&mut ack.offline, LOGIN_ACK_OFFLINE_BYTES);
        ack.more_offline = rest.len();
        if !session.push(ServerMsg::LoginAck(Ok(Box::new(ack)))) {
            self.unclaim(id).await;
            return Err(None);
        }
        handed.extend_from_slice(&ids[..ids.len() - rest.len()]);
        self.forget_offline(id, &handed).await;
        if !rest.is_empty() || more_stored {
            // The rest stay stored and are handed over as the connection
            // has room, before any live message.
            session.backlog.store(true, Ordering::Release);
            self.pump_backlog(id, session.clone());
        }
        write(&self.sessions).insert(id, session.clone());
        Ok(session)
    }

    /// Claims `id`'s presence here and in the cluster.
    async fn claim(&self, id: UserId) -> Result<(), ServerMsg> {
        let already_online =
            || login_failed(ErrorCode::AlreadyOnline, "this account is already online");
        if !lock(&self.claimed).insert(id) {
            return Err(already_online());
        }
        match self.bus.claim(id).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                lock(&self.claimed).remove(&id);
                Err(already_online())
            }
            Err(e) => {
                lock(&self.claimed).remove(&id);
                Err(login_failed(
                    ErrorCode::Unavailable,
                    unavailable(MsgId::Login, &e.into()),
                ))
            }
        }
    }

    async fn unclaim(&self, id: UserId) {
        lock(&self.claimed).remove(&id);
        if let Err(e) = self.bus.release(id).await {
            warn!(user = id, error = %e, "could not release presence; it expires by itself");
        }
    }

    async fn end_session(&self, session: &Arc<Session>) {
        let _guard = self.lock_user(session.user).await;
        session.close();
        {
            let mut sessions = write(&self.sessions);
            if sessions
                .get(&session.user)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.user);
            }
        }
        self.unclaim(session.user).await;
    }

    /// The LOGIN_ACK for `user`, the ids of its offline messages in the
    /// same order, and the ids of unreadable ones, to be deleted.
    async fn login_ack(
        &self,
        user: &UserRecord,
        version: u32,
    ) -> Result<(LoginOk, Vec<i64>, Vec<i64>), Fault> {
        let (friends, groups) = self.friends_and_groups(user.id).await?;
        let records = self.store.offline(user.id, OFFLINE_READ_LIMIT).await?;
        let mut ids = Vec::with_capacity(records.len());
        let mut offline = Vec::with_capacity(records.len());
        let mut unreadable = Vec::new();
        for record in records {
            match serde_json::from_str::<Delivery>(&record.payload) {
                Ok(delivery) => {
                    ids.push(record.id);
                    offline.push(Arc::new(delivery));
                }
                Err(e) => {
                    error!(user = user.id, id = record.id, error = %e, "dropping unreadable offline message");
                    unreadable.push(record.id);
                }
            }
        }
        let ok = LoginOk {
            id: user.id,
            name: user.name.clone(),
            friends,
            groups,
            offline,
            more_offline: 0,
            version,
        };
        Ok((ok, ids, unreadable))
    }

    async fn forget_offline(&self, user: UserId, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.store.delete_offline(user, ids).await {
            // They were handed over: keeping them means a second delivery
            // at the next login, which is better than losing them.
            error!(user, error = %e, "could not delete delivered offline messages");
        }
    }

    /// Handles a request of a logged-in session.
    async fn serve(&self, session: &Arc<Session>, request: Request) -> ServerMsg {
        let msgid = request.msg_id();
        let result = match request {
            Request::OneChat { to, text } => self.one_chat(session, to, text).await,
            Request::GroupChat { group, text } => self.group_chat(session, group, text).await,
            Request::AddFriend { friend } => self.add_friend(session, friend).await,
            Request::CreateGroup { name, desc } => self.create_group(session, name, desc).await,
            Request::AddGroup { group } => self.add_group(session, group).await,
            Request::List => self.list(session).await,
            Request::Ping | Request::Register { .. } | Request::Login { .. } | Request::Logout => {
                unreachable!("handled by the connection")
            }
        };
        match result {
            Ok(Ok(reply)) => reply,
            Ok(Err((code, message))) => ServerMsg::error(msgid, code, message),
            Err(fault) => {
                ServerMsg::error(msgid, ErrorCode::Unavailable, unavailable(msgid, &fault))
            }
        }
    }

    async fn one_chat(&self, session: &Session, to: UserId, text: String) -> Outcome {
        if let Err(refusal) = self.check_text(&text) {
            return Ok(Err(refusal));
        }
        if self.user_name(to).await?.is_none() {
            return Ok(Err((ErrorCode::NoSuchUser, format!("no such user: {to}"))));
        }
        let time = now();
        let delivery = Delivery::One(ChatMessage {
            from: session.user,
            from_name: session.name.clone(),
            to,
            text,
            time: time.clone(),
        });
        self.send_chat(&[to], Arc::new(delivery)).await?;
        debug!(from = session.user, to, "one-to-one message");
        Ok(Ok(ServerMsg::ChatAck {
            request: MsgId::OneChat,
            time,
        }))
    }

    async fn group_chat(&self, session: &Session, group: GroupId, text: String) -> Outcome {
        if let Err(refusal) = self.check_text(&text) {
            return Ok(Err(refusal));
        }
        // One store read per message: members only. A group always has its
        // creator as a member, so only a refusal asks whether it exists.
        let members = self.store.member_ids(group).await?;
        if !members.contains(&session.user) {
            if members.is_empty() && self.store.group(group).await?.is_none() {
                return Ok(Err((
                    ErrorCode::NoSuchGroup,
                    format!("no such group: {group}"),
                )));
            }
            return Ok(Err((
                ErrorCode::NotMember,
                format!("you are not a member of group {group}"),
            )));
        }
        let recipients: Vec<UserId> = members
            .into_iter()
            .filter(|id| *id != session.user)
            .collect();
        let time = now();
        let delivery = Delivery::Group(GroupMessage {
            from: session.user,
            from_name: session.name.clone(),
            group,
            text,
            time: time.clone(),
        });
        self.send_chat(&recipients, Arc::new(delivery)).await?;
        debug!(
            from = session.user,
            group,
            recipients = recipients.len(),
            "group message"
        );
        Ok(Ok(ServerMsg::ChatAck {
            request: MsgId::GroupChat,
            time,
        }))
    }

    async fn add_friend(&self, session: &Session, friend: UserId) -> Outcome {
        if friend == session.user {
            return Ok(Err((
                ErrorCode::SelfFriend,
                "you cannot add yourself as a friend".into(),
            )));
        }
        let Some(name) = self.user_name(friend).await? else {
            return Ok(Err((
                ErrorCode::NoSuchUser,
                format!("no such user: {friend}"),
            )));
        };
        if !self.store.add_friendship(session.user, friend).await? {
            return Ok(Err((
                ErrorCode::AlreadyFriends,
                format!("{name} is already your friend"),
            )));
        }
        let notice = Notice::FriendAdded {
            from: session.user,
            from_name: session.name.clone(),
        };
        let online = self.notify(friend, notice).await;
        Ok(Ok(ServerMsg::AddFriendAck(Friend {
            id: friend,
            name,
            state: Presence::from_online(online),
        })))
    }

    async fn create_group(&self, session: &Session, name: String, desc: String) -> Outcome {
        if let Err(message) = check_name(&name, "groupname") {
            return Ok(Err((ErrorCode::Invalid, message)));
        }
        if desc.chars().count() > MAX_DESC_CHARS || desc.chars().any(char::is_control) {
            let message = format!("a groupdesc has at most {MAX_DESC_CHARS} printable characters");
            return Ok(Err((ErrorCode::Invalid, message)));
        }
        match self.store.create_group(session.user, &name, &desc).await {
            Ok(id) => {
                info!(user = session.user, group = id, "created group");
                Ok(Ok(ServerMsg::CreateGroupAck { id, name, desc }))
            }
            Err(StoreError::NameTaken) => Ok(Err((
                ErrorCode::NameTaken,
                format!("a group named {name:?} exists"),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn add_group(&self, session: &Session, group: GroupId) -> Outcome {
        let Some(record) = self.store.group(group).await? else {
            return Ok(Err((
                ErrorCode::NoSuchGroup,
                format!("no such group: {group}"),
            )));
        };
        if !self
            .store
            .add_member(group, session.user, Role::Normal)
            .await?
        {
            return Ok(Err((
                ErrorCode::AlreadyMember,
                format!("you are already in group {group}"),
            )));
        }
        let members = self.store.members(group).await?;
        let mut groups = self
            .with_presence(
                Vec::new(),
                vec![GroupWithMembers {
                    group: record,
                    members,
                }],
            )
            .await?
            .1;
        let group = groups.pop().expect("one group in, one group out");
        Ok(Ok(ServerMsg::AddGroupAck(group)))
    }

    async fn list(&self, session: &Session) -> Outcome {
        let (friends, groups) = self.friends_and_groups(session.user).await?;
        Ok(Ok(ServerMsg::ListAck { friends, groups }))
    }

    fn check_text(&self, text: &str) -> Result<(), (ErrorCode, String)> {
        let limit = self.config.max_message_bytes;
        if text.len() > limit {
            let message = format!(
                "message too long: {} bytes, the limit is {limit}",
                text.len()
            );
            return Err((ErrorCode::TooLong, message));
        }
        Ok(())
    }

    async fn friends_and_groups(&self, user: UserId) -> Result<(Vec<Friend>, Vec<Group>), Fault> {
        let friends = self.store.friends(user).await?;
        let groups = self.store.groups_of(user).await?;
        self.with_presence(friends, groups).await
    }

    /// Friends and groups with every user's online state from the bus.
    async fn with_presence(
        &self,
        friends: Vec<(UserId, String)>,
        groups: Vec<GroupWithMembers>,
    ) -> Result<(Vec<Friend>, Vec<Group>), Fault> {
        let mut ids: Vec<UserId> = friends.iter().map(|(id, _)| *id).collect();
        ids.extend(groups.iter().flat_map(|g| g.members.iter().map(|m| m.id)));
        ids.sort_unstable();
        ids.dedup();
        let online: HashSet<UserId> = if ids.is_empty() {
            HashSet::new()
        } else {
            let states = self.bus.online(&ids).await?;
            ids.iter()
                .zip(states)
                .filter(|(_, on)| *on)
                .map(|(id, _)| *id)
                .collect()
        };
        let state = |id: &UserId| Presence::from_online(online.contains(id));
        let friends = friends
            .into_iter()
            .map(|(id, name)| Friend {
                state: state(&id),
                id,
                name,
            })
            .collect();
        let groups = groups
            .into_iter()
            .map(|g| Group {
                id: g.group.id,
                name: g.group.name,
                desc: g.group.desc,
                members: g
                    .members
                    .into_iter()
                    .map(|m| Member {
                        state: state(&m.id),
                        id: m.id,
                        name: m.name,
                        role: m.role,
                    })
                    .collect(),
            })
            .collect();
        Ok((friends, groups))
    }

    /// Hands a chat message to every recipient: live here, through the bus
    /// to another server, or into the offline table.
    async fn send_chat(&self, recipients: &[UserId], delivery: Arc<Delivery>) -> Result<(), Fault> {
        let elsewhere: Vec<UserId> = recipients
            .iter()
            .copied()
            .filter(|u| !self.deliver_here(*u, &delivery))
            .collect();
        if elsewhere.is_empty() {
            return Ok(());
        }
        let unreached = match self
            .bus
            .publish(&elsewhere, &Notice::Chat(delivery.clone()))
            .await
        {
            Ok(unreached) => unreached,
            Err(e) => {
                warn!(error = %e, "bus unavailable: keeping messages for other servers offline");
                elsewhere
            }
        };
        self.keep_offline(&unreached, &delivery).await?;
        Ok(())
    }

    fn deliver_here(&self, user: UserId, delivery: &Arc<Delivery>) -> bool {
        let session = read(&self.sessions).get(&user).cloned();
        session.is_some_and(|s| s.send(ServerMsg::Deliver(delivery.clone())))
    }

    /// Stores `delivery` for `users`, then wakes whichever of them logged
    /// in meanwhile, so the message does not wait for their next login.
    async fn keep_offline(&self, users: &[UserId], delivery: &Delivery) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_string(delivery).map_err(StoreError::backend)?;
        self.store.store_offline(users, &payload).await?;
        let (here, elsewhere): (Vec<UserId>, Vec<UserId>) = {
            let claimed = lock(&self.claimed);
            users.iter().partition(|u| claimed.contains(u))
        };
        for user in here {
            self.hand_over_offline(user).await;
        }
        if !elsewhere.is_empty() {
            if let Err(e) = self.bus.publish(&elsewhere, &Notice::Wake).await {
                warn!(error = %e, "could not wake other servers; messages wait for the next login");
            }
        }
        Ok(())
    }

    /// Gives a logged-in user what is stored for them, as much as their
    /// connection has room for; the rest is pumped after.
    async fn hand_over_offline(&self, user: UserId) {
        let Some(session) = self.hand_over_step(user).await else {
            return;
        };
        if !session.backlog.swap(true, Ordering::AcqRel) {
            self.pump_backlog(user, session);
        }
    }

    /// One step of handing over stored messages; the session if some are
    /// left for a later step.
    async fn hand_over_step(&self, user: UserId) -> Option<Arc<Session>> {
        let _guard = self.lock_user(user).await;
        // Not logged in here (any more), or still logging in: that login
        // reads the table after this point, under the same lock.
        let session = read(&self.sessions).get(&user).cloned()?;
        let records = match self.store.offline(user, OFFLINE_READ_LIMIT).await {
            Ok(records) => records,
            Err(e) => {
                warn!(user, error = %e, "could not read offline messages; they wait for the next login");
                return None;
            }
        };
        let room = session.outbound.room();
        let total = records.len();
        let mut handed = Vec::with_capacity(total.min(room));
        for record in records.into_iter().take(room) {
            match serde_json::from_str::<Delivery>(&record.payload) {
                Ok(delivery) => {
                    if !session.push(ServerMsg::Deliver(Arc::new(delivery))) {
                        break;
                    }
                }
                Err(e) => {
                    error!(user, id = record.id, error = %e, "dropping unreadable offline message")
                }
            }
            handed.push(record.id);
        }
        self.forget_offline(user, &handed).await;
        if handed.len() < total && session.is_alive() {
            return Some(session);
        }
        session.backlog.store(false, Ordering::Release);
        None
    }

    /// Hands over `user`'s backlog in steps until it is empty or the
    /// session ends.
    fn pump_backlog(&self, user: UserId, session: Arc<Session>) {
        let Some(inner) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            while session.is_alive() {
                tokio::time::sleep(BACKLOG_STEP).await;
                match inner.hand_over_step(user).await {
                    Some(current) if Arc::ptr_eq(&current, &session) => {}
                    _ => return,
                }
            }
        });
    }

    /// Sends a notice that may be dropped; whether `user` is online.
    async fn notify(&self, user: UserId, notice: Notice) -> bool {
        if let Some(reply) = notice_reply(&notice) {
            let session = read(&self.sessions).get(&user).cloned();
            if session.is_some_and(|s| s.send(reply)) {
                return true;
            }
        }
        match self.bus.publish(&[user], &notice).await {
            Ok(unreached) => unreached.is_empty(),
            Err(e) => {
                warn!(user, error = %e, "could not pass on a notification");
                false
            }
        }
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, Fault> {
        if id <= 0 {
            return Ok(None);
        }
        Ok(self.store.user(id).await?)
    }

    async fn user_name(&self, id: UserId) -> Result<Option<String>, Fault> {
        if let Some(name) = read(&self.names).get(&id) {
            return Ok(Some(name.clone()));
        }
        let Some(user) = self.user(id).await? else {
            return Ok(None);
        };
        write(&self.names).insert(id, user.name.clone());
        Ok(Some(user.name))
    }

    async fn lock_user(&self, user: UserId) -> tokio::sync::MutexGuard<'_, ()> {
        let slot = self.lock_hasher.hash_one(user) as usize % self.user_locks.len();
        self.user_locks[slot].lock().await
    }
}

/// Either a reply, a refusal the client caused, or a server-side fault.
type Outcome = Result<Result<ServerMsg, (ErrorCode, String)>, Fault>;

/// What a notice looks like to a user on this server.
fn notice_reply(notice: &Notice) -> Option<ServerMsg> {
    match notice {
        Notice::Chat(delivery) => Some(ServerMsg::Deliver(delivery.clone())),
        Notice::FriendAdded { from, from_name } => Some(ServerMsg::FriendAdded(Friend {
            id: *from,
            name: from_name.clone(),
            state: Presence::Online,
        })),
        Notice::Wake => None,
    }
}

/// Takes notices from other servers on behalf of the service.
struct InboundHandle(Arc<Inner>);

#[async_trait]
impl Inbound for InboundHandle {
    async fn notice(&self, users: Vec<UserId>, notice: Notice) {
        let inner = &self.0;
        match &notice {
            Notice::Chat(delivery) => {
                let missed: Vec<UserId> = users
                    .into_iter()
                    .filter(|u| !inner.deliver_here(*u, delivery))
                    .collect();
                if let Err(e) = inner.keep_offline(&missed, delivery).await {
                    error!(error = %e, users = ?missed, "lost a message: could not store it offline");
                }
            }
            Notice::FriendAdded { .. } => {
                for user in users {
                    let session = read(&inner.sessions).get(&user).cloned();
                    if let (Some(session), Some(reply)) = (session, notice_reply(&notice)) {
                        session.send(reply);
                    }
                }
            }
            Notice::Wake => {
                for user in users {
                    inner.hand_over_offline(user).await;
                }
            }
        }
    }
}

/// Keeps the oldest messages in `offline` up to `budget` bytes of text (at
/// least one) and returns the rest, oldest first.
fn split_offline(offline: &mut Vec<Arc<Delivery>>, budget: usize) -> Vec<Arc<Delivery>> {
    let mut used = 0;
    let keep = offline
        .iter()
        .take_while(|d| {
            used += text_len(d);
            used <= budget
        })
        .count()
        .max(1)
        .min(offline.len());
    offline.split_off(keep)
}

fn text_len(delivery: &Delivery) -> usize {
    match delivery {
        Delivery::One(m) => m.text.len(),
        Delivery::Group(m) => m.text.len(),
    }
}

fn check_name(name: &str, field: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "a {field} has 1 to {MAX_NAME_CHARS} printable characters"
        ));
    }
    if name.trim() != name {
        return Err(format!("a {field} cannot start or end with white space"));
    }
    Ok(())
}

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn not_logged_in(request: MsgId) -> ServerMsg {
    ServerMsg::error(
        request,
        ErrorCode::NotLoggedIn,
        "not logged in: send LOGIN first",
    )
}

fn login_failed(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::LoginAck(Err(Failure::new(code, message)))
}

/// Logs a server-side fault and says, for the client, to try again.
fn unavailable(request: MsgId, fault: &Fault) -> String {
    error!(request = ?request, error = %fault, "request failed");
    "the server cannot serve this request right now; try again".to_owned()
}

// A poisoned lock means a thread panicked while holding it; the maps it
// guards are still consistent (every update is one insert or remove), so
// the service goes on rather than failing every later request.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(rw: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    rw.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(rw: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    rw.write().unwrap_or_else(PoisonError::into_inner)
}
