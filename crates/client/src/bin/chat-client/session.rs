//! A person's chat session: commands in, messages out, and a connection
//! that comes back by itself.
//!
//! The session owns the link to the server and the little state a person
//! needs shown (who is logged in, the current conversation, names learnt).
//! It waits on two things at once, typed lines and the link, so a message
//! that arrives while nothing is typed still shows. When the link drops,
//! the session says so and reconnects with backoff; through a load balancer
//! the new connection lands on a live server. A login does not survive
//! that, and the password is never kept to replay it: the person is asked
//! to log in again.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use chat_client::{is_delivery, Client, ClientConfig, ClientError, CloseReason};
use chat_proto::{Format, LoginOk, Request, ServerMsg, UserId};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::backoff::Backoff;
use crate::command::{self, Command, HELP};
use crate::display::{self, Conversation, Directory};
use crate::terminal::Output;

/// How long a command waits for its reply before the person gets the
/// prompt back; a later reply is still shown when it comes.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol version asked for at login: list items as objects.
const PROTOCOL_VERSION: u32 = 2;

/// One person's session.
pub struct Session {
    config: ClientConfig,
    out: Output,
    link: Link,
    backoff: Backoff,
    directory: Directory,
    conversation: Option<Conversation>,
    /// The logged-in user.
    me: Option<UserId>,
    /// The user whose conversation `conversation` is: a reconnection that
    /// logs the same user in again keeps it, anyone else starts afresh, so
    /// a plain line never goes out in another user's name.
    conversation_of: Option<UserId>,
    /// Server messages are printed as JSON lines rather than as text.
    json: bool,
    /// Whether a login was lost with the last connection.
    login_lost: bool,
    /// Requests sent on this connection whose replies have not come yet.
    replies_owed: usize,
    /// Commands that failed: refused by the server, not understood, or not
    /// sent. A script's exit status says whether there were any.
    failures: usize,
}

/// The state of the connection.
enum Link {
    Up(Client),
    /// Connecting, then waiting for the server to answer; the error is
    /// for people.
    Connecting(Pin<Box<dyn Future<Output = Result<Client, String>> + Send>>),
    Down {
        retry_at: Instant,
    },
}

/// Something that happened on the link.
enum LinkEvent {
    Message(ServerMsg),
    Lost(CloseReason),
    Connected(Result<Client, String>),
    Retry,
}

impl Session {
    pub fn new(config: ClientConfig, out: Output, json: bool) -> Session {
        Session {
            config,
            out,
            link: Link::Down {
                retry_at: Instant::now(),
            },
            backoff: Backoff::new(Duration::from_millis(300), Duration::from_secs(30)),
            directory: Directory::default(),
            conversation: None,
            conversation_of: None,
            json,
            me: None,
            login_lost: false,
            replies_owed: 0,
            failures: 0,
        }
    }

    /// Runs until `/quit` or the end of input; how many commands failed.
    pub async fn run(mut self, mut lines: mpsc::UnboundedReceiver<String>) -> usize {
        // The first connection is waited for, so that a script's first
        // line does not find the session still connecting.
        self.start_connecting();
        let event = next_event(&mut self.link).await;
        self.on_link_event(event);
        self.out
            .note("/help lists the commands; /quit or Ctrl-D leaves");
        self.out.prompt(self.prompt());

        loop {
            tokio::select! {
                // What has arrived is shown before the next line is acted on.
                biased;
                event = next_event(&mut self.link) => self.on_link_event(event),
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    if !self.on_line(&line).await {
                        break;
                    }
                    self.out.prompt(self.prompt());
                }
            }
        }

        if let Link::Up(client) = self.link {
            client.close().await;
        }
        self.failures
    }

    /// Tells the person a command failed, and counts it.
    fn failed(&mut self, line: impl Into<String>) {
        self.failures += 1;
        self.out.note(line);
    }

    /// Carries out one typed line; `false` to quit.
    async fn on_line(&mut self, line: &str) -> bool {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.failed(error);
                return true;
            }
        };
        match command {
            Command::Nothing => {}
            Command::Help => self.out.note(HELP),
            Command::Quit => return false,
            Command::Wait(duration) => self.wait(duration).await,
            Command::Say(text) => match self.conversation {
                Some(Conversation::User(to)) => self.ask(Request::OneChat { to, text }).await,
                Some(Conversation::Group(group)) => {
                    self.ask(Request::GroupChat { group, text }).await
                }
                None => {
                    self.failed("no conversation yet: start one with /msg <id> or /g <groupid>")
                }
            },
            Command::Msg { to, text } => {
                self.conversation = Some(Conversation::User(to));
                self.conversation_of = self.me;
                if let Some(text) = text {
                    self.ask(Request::OneChat { to, text }).await;
                }
            }
            Command::GroupMsg { group, text } => {
                self.conversation = Some(Conversation::Group(group));
                self.conversation_of = self.me;
                if let Some(text) = text {
                    self.ask(Request::GroupChat { group, text }).await;
                }
            }
            Command::Register { name, password } => {
                self.ask(Request::Register { name, password }).await
            }
            Command::Login { id, password } => {
                self.ask(Request::Login {
                    id,
                    password,
                    version: PROTOCOL_VERSION,
                })
                .await
            }
            Command::Logout => self.ask(Request::Logout).await,
            Command::Friend(friend) => self.ask(Request::AddFriend { friend }).await,
            Command::CreateGroup { name, desc } => {
                self.ask(Request::CreateGroup { name, desc }).await
            }
            Command::Join(group) => self.ask(Request::AddGroup { group }).await,
            Command::List => self.ask(Request::List).await,
        }
        true
    }

    /// Sends a request and shows its reply, connecting first if need be.
    async fn ask(&mut self, request: Request) {
        if matches!(self.link, Link::Down { .. }) {
            self.start_connecting();
        }
        if matches!(self.link, Link::Connecting(_)) {
            let event = next_event(&mut self.link).await;
            self.on_link_event(event);
        }
        let Link::Up(client) = &self.link else {
            self.failed("not sent: not connected to the server");
            return;
        };
        if client.send(request).await.is_err() {
            // The link notices the end too and tells the person why.
            self.failed("not sent: the connection has ended");
            return;
        }
        self.replies_owed += 1;

        // Replies come in order, so the reply is the next message that is
        // not a delivery (or the last of several owed after a timeout);
        // the deliveries before it are shown as they came.
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while self.replies_owed > 0 && matches!(self.link, Link::Up(_)) {
            match timeout_at(deadline, next_event(&mut self.link)).await {
                Ok(event) => self.on_link_event(event),
                Err(_) => {
                    self.failed(format!(
                        "no reply within {} s; it will show when it comes",
                        REPLY_TIMEOUT.as_secs()
                    ));
                    return;
                }
            }
        }
        if !matches!(self.link, Link::Up(_)) {
            // The loss itself was told when it happened; this says which
            // command it cost, so that every failure counted has a line.
            self.failed("no reply: the connection ended before it came");
        }
    }

    /// Shows what arrives for a while, without reading input.
    async fn wait(&mut self, duration: Duration) {
        let Some(deadline) = Instant::now().checked_add(duration) else {
            self.out.note("that is longer than this program can wait");
            return;
        };
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return,
                event = next_event(&mut self.link) => self.on_link_event(event),
            }
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Message(msg) => {
                if !is_delivery(&msg) {
                    self.replies_owed = self.replies_owed.saturating_sub(1);
                }
                self.show(msg);
            }
            LinkEvent::Lost(reason) => {
                self.replies_owed = 0;
                self.login_lost |= self.me.take().is_some();
                let delay = self.backoff.next_delay();
                self.out.note(format!(
                    "connection lost: {reason}; reconnecting in {}",
                    seconds(delay)
                ));
                self.link = Link::Down {
                    retry_at: Instant::now() + delay,
                };
            }
            LinkEvent::Connected(Ok(client)) => {
                self.backoff.reset();
                let peer = client.peer_addr();
                if std::mem::take(&mut self.login_lost) {
                    self.out.note(format!(
                        "reconnected to {peer}; you are logged out: /login <id> <password> again"
                    ));
                } else {
                    self.out.note(format!("connected to {peer}"));
                }
                self.link = Link::Up(client);
            }
            LinkEvent::Connected(Err(error)) => {
                let delay = self.backoff.next_delay();
                self.out
                    .note(format!("{error}; retrying in {}", seconds(delay)));
                self.link = Link::Down {
                    retry_at: Instant::now() + delay,
                };
            }
            LinkEvent::Retry => self.start_connecting(),
        }
    }

    fn start_connecting(&mut self) {
        let config = self.config.clone();
        self.link = Link::Connecting(Box::pin(connect(config)));
    }

    /// Shows a server message, as text or as a JSON line, and learns what
    /// it tells.
    fn show(&mut self, msg: ServerMsg) {
        if !self.json {
            return self.show_text(msg);
        }
        let mut line = BytesMut::new();
        Format::default().encode(&msg, &mut line);
        self.out
            .line(String::from_utf8_lossy(&line).trim_end().to_owned());
        let out = std::mem::replace(&mut self.out, Output::discard());
        self.show_text(msg);
        self.out = out;
    }

    /// Shows a server message as text and learns what it tells.
    fn show_text(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::LoginAck(Ok(login)) => self.logged_in(&login),
            ServerMsg::LoginAck(Err(failure)) => {
                self.failed(format!("login failed: {}", display::failure(&failure)))
            }
            ServerMsg::LogoutAck => {
                self.me = None;
                self.conversation = None;
                self.out.line("logged out");
            }
            ServerMsg::RegAck(Ok(id)) => self.out.line(format!(
                "registered: your id is {id}; log in with /login {id} <password>"
            )),
            ServerMsg::RegAck(Err(failure)) => self.failed(format!(
                "registration failed: {}",
                display::failure(&failure)
            )),
            ServerMsg::Deliver(delivery) => {
                self.directory.learn_delivery(&delivery);
                self.out.line(display::delivery(&delivery, &self.directory));
            }
            // The line typed is still on the screen; a success adds nothing.
            ServerMsg::ChatAck { .. } | ServerMsg::Pong => {}
            ServerMsg::AddFriendAck(friend) => {
                self.directory.learn_friends(std::slice::from_ref(&friend));
                self.out
                    .line(format!("new friend: {}", display::friend(&friend)));
            }
            ServerMsg::FriendAdded(friend) => {
                self.directory.learn_friends(std::slice::from_ref(&friend));
                self.out.line(format!(
                    "{} added you as a friend",
                    display::friend(&friend)
                ));
            }
            ServerMsg::CreateGroupAck { id, name, desc: _ } => {
                self.directory.learn_group(id, &name);
                self.out.line(format!(
                    "created group {} ({id}); others join with /join {id}",
                    display::clean_line(&name)
                ));
            }
            ServerMsg::AddGroupAck(group) => {
                self.directory.learn_groups(std::slice::from_ref(&group));
                self.out
                    .line(format!("joined group {}", display::group(&group)));
            }
            ServerMsg::ListAck { friends, groups } => {
                self.directory.learn_friends(&friends);
                self.directory.learn_groups(&groups);
                self.out.line(display::friends(&friends));
                self.out.line(display::groups(&groups));
            }
            ServerMsg::Error { failure, .. } => {
                self.failed(format!("error: {}", display::failure(&failure)))
            }
        }
    }

    fn logged_in(&mut self, login: &LoginOk) {
        self.me = Some(login.id);
        self.login_lost = false;
        if self.conversation_of != Some(login.id) {
            self.conversation = None;
            self.conversation_of = Some(login.id);
        }
        self.directory.learn_user(login.id, &login.name);
        self.directory.learn_friends(&login.friends);
        self.directory.learn_groups(&login.groups);
        self.out.line(format!(
            "logged in as {} ({})",
            display::clean_line(&login.name),
            login.id
        ));
        self.out.line(display::friends(&login.friends));
        self.out.line(display::groups(&login.groups));
        let waiting = login.offline.len() + login.more_offline;
        if waiting == 0 {
            self.out.line("no messages while you were away");
            return;
        }
        self.out
            .line(format!("{waiting} message(s) while you were away:"));
        for delivery in &login.offline {
            self.directory.learn_delivery(delivery);
            self.out.line(display::delivery(delivery, &self.directory));
        }
        // A long backlog comes after the acknowledgement as ordinary
        // deliveries, which show as they arrive.
    }

    fn prompt(&self) -> String {
        display::prompt(self.conversation, &self.directory)
    }
}

/// Connects, and makes sure a server answers.
///
/// Behind a load balancer a TCP connection is accepted even when no server
/// is alive, and then closed at once; without asking for an answer, such a
/// connection would count as a success and reconnects would never back
/// off. PING needs no login, so it is the question asked.
async fn connect(config: ClientConfig) -> Result<Client, String> {
    let addr = config.addr.clone();
    let patience = config.connect_timeout;
    let client = Client::connect(config)
        .await
        .map_err(|error| error.to_string())?;
    match timeout(patience, client.request(Request::Ping)).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(ClientError::Closed(reason))) => {
            Err(format!("no server answered at {addr}: {reason}"))
        }
        Ok(Err(error)) => Err(format!("no server answered at {addr}: {error}")),
        Err(_) => Err(format!(
            "no server answered at {addr} within {}",
            seconds(patience)
        )),
    }
}

/// Waits for the next thing to happen on the link.
async fn next_event(link: &mut Link) -> LinkEvent {
    match link {
        Link::Up(client) => match client.recv().await {
            Some(msg) => LinkEvent::Message(msg),
            None => LinkEvent::Lost(client.close_reason().unwrap_or(CloseReason::ClientClosed)),
        },
        Link::Connecting(connect) => LinkEvent::Connected(connect.as_mut().await),
        Link::Down { retry_at } => {
            sleep_until(*retry_at).await;
            LinkEvent::Retry
        }
    }
}

fn seconds(delay: Duration) -> String {
    format!("{:.1} s", delay.as_secs_f64())
}
