//! How server messages look to a person.
//!
//! Everything here is a pure function from messages to text, so the look
//! is tested without a terminal. Names and texts come from other users and
//! are cleaned of control characters first: a message must not be able to
//! move the cursor, recolour the terminal or hide what it is.

use std::collections::HashMap;

use chat_proto::{Delivery, Failure, Friend, Group, GroupId, Member, UserId};

/// Names learnt from the server, to show names where messages carry ids.
#[derive(Debug, Default)]
pub struct Directory {
    users: HashMap<UserId, String>,
    groups: HashMap<GroupId, String>,
}

impl Directory {
    pub fn learn_user(&mut self, id: UserId, name: &str) {
        self.users.insert(id, name.to_owned());
    }

    pub fn learn_friends(&mut self, friends: &[Friend]) {
        for friend in friends {
            self.learn_user(friend.id, &friend.name);
        }
    }

    pub fn learn_groups(&mut self, groups: &[Group]) {
        for group in groups {
            self.learn_group(group.id, &group.name);
            for member in &group.members {
                self.learn_user(member.id, &member.name);
            }
        }
    }

    pub fn learn_group(&mut self, id: GroupId, name: &str) {
        self.groups.insert(id, name.to_owned());
    }

    pub fn learn_delivery(&mut self, delivery: &Delivery) {
        match delivery {
            Delivery::One(m) => self.learn_user(m.from, &m.from_name),
            Delivery::Group(m) => self.learn_user(m.from, &m.from_name),
        }
    }

    pub fn user(&self, id: UserId) -> Option<&str> {
        self.users.get(&id).map(String::as_str)
    }

    pub fn group(&self, id: GroupId) -> Option<&str> {
        self.groups.get(&id).map(String::as_str)
    }
}

/// Where plain lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    User(UserId),
    Group(GroupId),
}

/// The prompt, naming the current conversation.
pub fn prompt(conversation: Option<Conversation>, directory: &Directory) -> String {
    match conversation {
        None => "> ".to_owned(),
        Some(Conversation::User(id)) => match directory.user(id) {
            Some(name) => format!("[to {}] > ", clean_line(name)),
            None => format!("[to user {id}] > "),
        },
        Some(Conversation::Group(id)) => match directory.group(id) {
            Some(name) => format!("[to group {}] > ", clean_line(name)),
            None => format!("[to group {id}] > "),
        },
    }
}

/// A chat message: `[time] name (id): text`, with the group for group
/// messages.
pub fn delivery(delivery: &Delivery, directory: &Directory) -> String {
    match delivery {
        Delivery::One(m) => format!(
            "[{}] {} ({}): {}",
            clean_line(&m.time),
            clean_line(&m.from_name),
            m.from,
            clean_text(&m.text)
        ),
        Delivery::Group(m) => format!(
            "[{}] {} ({}) in {}: {}",
            clean_line(&m.time),
            clean_line(&m.from_name),
            m.from,
            group_label(m.group, directory),
            clean_text(&m.text)
        ),
    }
}

fn group_label(id: GroupId, directory: &Directory) -> String {
    match directory.group(id) {
        Some(name) => format!("{} ({id})", clean_line(name)),
        None => format!("group {id}"),
    }
}

/// Why a request failed, in the server's words: `errmsg (errno N)`.
pub fn failure(failure: &Failure) -> String {
    format!(
        "{} (errno {})",
        clean_line(&failure.message),
        failure.code.code()
    )
}

/// One friend: `name (id) state`.
pub fn friend(friend: &Friend) -> String {
    format!(
        "{} ({}) {}",
        clean_line(&friend.name),
        friend.id,
        friend.state.as_str()
    )
}

/// The friends block of a login or a listing.
pub fn friends(friends: &[Friend]) -> String {
    if friends.is_empty() {
        return "friends: none yet (/friend <id> adds one)".to_owned();
    }
    let mut out = format!("friends ({}):", friends.len());
    for f in friends {
        out.push_str("\n  ");
        out.push_str(&friend(f));
    }
    out
}

/// The groups block of a login or a listing, members under each group.
pub fn groups(groups: &[Group]) -> String {
    if groups.is_empty() {
        return "groups: none yet (/group create or /join adds one)".to_owned();
    }
    let mut out = format!("groups ({}):", groups.len());
    for g in groups {
        out.push_str("\n  ");
        out.push_str(&group(g));
    }
    out
}

/// One group with its members, indented under a group block.
pub fn group(group: &Group) -> String {
    let mut out = format!("{} ({})", clean_line(&group.name), group.id);
    if !group.desc.is_empty() {
        out.push_str(": ");
        out.push_str(&clean_line(&group.desc));
    }
    for m in &group.members {
        out.push_str("\n    ");
        out.push_str(&member(m));
    }
    out
}

fn member(member: &Member) -> String {
    format!(
        "{} ({}) {}, {}",
        clean_line(&member.name),
        member.id,
        member.role.as_str(),
        member.state.as_str()
    )
}

/// A name, time or other one-line text from the server, safe to print.
pub fn clean_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_unsafe(c) || c == '\n' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// A message text, safe to print: line breaks stay, indented so that the
/// next line cannot pass for a message of its own.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\r' => {}
            c if is_unsafe(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Control characters (escape sequences start with one) and the Unicode
/// direction overrides that can make text read differently than it is.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_proto::{ChatMessage, ErrorCode, GroupMessage, Presence, Role};

    fn one(text: &str) -> Delivery {
        Delivery::One(ChatMessage {
            from: 12,
            from_name: "张三".into(),
            to: 1,
            text: text.into(),
            time: "2026-12-03 19:20:01".into(),
        })
    }

    #[test]
    fn one_to_one_message() {
        assert_eq!(
            delivery(&one("你好"), &Directory::default()),
            "[2026-12-03 19:20:01] 张三 (12): 你好"
        );
    }

    #[test]
    fn group_message_names_the_group_when_known() {
        let msg = Delivery::Group(GroupMessage {
            from: 12,
            from_name: "张三".into(),
            group: 3,
            text: "hi".into(),
            time: "2026-12-03 19:20:01".into(),
        });
        let mut dir = Directory::default();
        assert_eq!(
            delivery(&msg, &dir),
            "[2026-12-03 19:20:01] 张三 (12) in group 3: hi"
        );
        dir.learn_group(3, "测试群");
        assert_eq!(
            delivery(&msg, &dir),
            "[2026-12-03 19:20:01] 张三 (12) in 测试群 (3): hi"
        );
    }

    #[test]
    fn escape_sequences_are_defused() {
        let shown = delivery(&one("\u{1b}[2Jgone\r\nnext\u{202e}"), &Directory::default());
        assert!(!shown.contains('\u{1b}') && !shown.contains('\r'));
        assert!(
            shown.ends_with(": \u{fffd}[2Jgone\n    next\u{fffd}"),
            "{shown}"
        );
        assert_eq!(clean_line("a\nb\tc"), "a\u{fffd}b\tc");
    }

    #[test]
    fn prompt_names_the_conversation() {
        let mut dir = Directory::default();
        assert_eq!(prompt(None, &dir), "> ");
        assert_eq!(
            prompt(Some(Conversation::User(12)), &dir),
            "[to user 12] > "
        );
        dir.learn_delivery(&one("x"));
        assert_eq!(prompt(Some(Conversation::User(12)), &dir), "[to 张三] > ");
        dir.learn_group(3, "测试群");
        assert_eq!(
            prompt(Some(Conversation::Group(3)), &dir),
            "[to group 测试群] > "
        );
    }

    #[test]
    fn friends_and_groups_blocks() {
        let friends_list = [Friend {
            id: 13,
            name: "李四".into(),
            state: Presence::Online,
        }];
        assert_eq!(friends(&friends_list), "friends (1):\n  李四 (13) online");
        assert!(friends(&[]).starts_with("friends: none"));
        let group_list = [Group {
            id: 3,
            name: "测试群".into(),
            desc: "for tests".into(),
            members: vec![Member {
                id: 13,
                name: "李四".into(),
                state: Presence::Offline,
                role: Role::Creator,
            }],
        }];
        assert_eq!(
            groups(&group_list),
            "groups (1):\n  测试群 (3): for tests\n    李四 (13) creator, offline"
        );
    }

    #[test]
    fn failures_show_the_servers_message() {
        let f = Failure::new(ErrorCode::NoSuchUser, "no user with id 99");
        assert_eq!(failure(&f), "no user with id 99 (errno 6)");
    }
}
