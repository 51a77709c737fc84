//! What a typed line means.
//!
//! Parsing is kept apart from doing, so that every command's syntax is
//! tested without a server, and the help text sits next to the parser it
//! describes.

use chat_proto::{GroupId, UserId};

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An empty line.
    Nothing,
    /// A plain line: a message to the current conversation.
    Say(String),
    Register {
        name: String,
        password: String,
    },
    Login {
        id: UserId,
        password: String,
    },
    Logout,
    Friend(UserId),
    /// Switch to a one-to-one conversation, and send `text` if there is any.
    Msg {
        to: UserId,
        text: Option<String>,
    },
    CreateGroup {
        name: String,
        desc: String,
    },
    Join(GroupId),
    /// Switch to a group conversation, and send `text` if there is any.
    GroupMsg {
        group: GroupId,
        text: Option<String>,
    },
    List,
    /// Keep showing what arrives for a while without reading input; for
    /// scripts, which otherwise end before the replies to their last lines.
    Wait(std::time::Duration),
    Help,
    Quit,
}

/// The help text, one command a line.
pub const HELP: &str = "\
commands:
  /register <name> <password>   create an account; the reply tells your id
  /login <id> <password>        log in
  /logout                       log out, staying connected
  /friend <id>                  become friends with a user
  /msg <id> [text…]             talk to a user; plain lines then go to them
  /group create <name> [desc…]  create a group
  /join <groupid>               join a group
  /g <groupid> [text…]          talk in a group; plain lines then go there
  /list                         friends with their state, groups with members
  /wait <seconds>               show what arrives for a while (for scripts)
  /help                         this text
  /quit                         leave (Ctrl-D does too)
a line that starts with // is sent as text starting with /";

/// Understands one line; the error says what was expected.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Command::Nothing);
    }
    let Some(body) = line.trim_start().strip_prefix('/') else {
        return Ok(Command::Say(line.to_owned()));
    };
    if body.starts_with('/') {
        return Ok(Command::Say(body.to_owned()));
    }

    let (name, rest) = word(body);
    match name {
        "register" | "reg" => {
            let (user, password) = word(rest);
            match (user, password.trim()) {
                ("", _) | (_, "") => Err(usage("/register <name> <password>")),
                (user, password) => Ok(Command::Register {
                    name: user.to_owned(),
                    password: password.to_owned(),
                }),
            }
        }
        "login" => {
            let (id, password) = word(rest);
            let id = number(id, "/login <id> <password>")?;
            match password.trim() {
                "" => Err(usage("/login <id> <password>")),
                password => Ok(Command::Login {
                    id,
                    password: password.to_owned(),
                }),
            }
        }
        "logout" => no_arguments(rest, Command::Logout, "/logout"),
        "friend" => one_number(rest, "/friend <id>").map(Command::Friend),
        "msg" => {
            let (to, text) = word(rest);
            Ok(Command::Msg {
                to: number(to, "/msg <id> [text…]")?,
                text: some_text(text),
            })
        }
        "group" => {
            let (sub, rest) = word(rest);
            let (group, desc) = word(rest);
            match (sub, group) {
                ("create", group) if !group.is_empty() => Ok(Command::CreateGroup {
                    name: group.to_owned(),
                    desc: desc.trim().to_owned(),
                }),
                _ => Err(usage("/group create <name> [description…]")),
            }
        }
        "join" => one_number(rest, "/join <groupid>").map(Command::Join),
        "g" => {
            let (group, text) = word(rest);
            Ok(Command::GroupMsg {
                group: number(group, "/g <groupid> [text…]")?,
                text: some_text(text),
            })
        }
        "list" => no_arguments(rest, Command::List, "/list"),
        "wait" => {
            let seconds = rest.trim().parse::<f64>().ok();
            match seconds.and_then(|s| std::time::Duration::try_from_secs_f64(s).ok()) {
                Some(duration) => Ok(Command::Wait(duration)),
                None => Err(usage("/wait <seconds>")),
            }
        }
        "help" | "?" => Ok(Command::Help),
        "quit" | "exit" => Ok(Command::Quit),
        other => Err(format!("unknown command /{other}; /help lists them")),
    }
}

/// The first word of `text` and what follows it (with the separating
/// white space still in front, so that message text keeps its spacing
/// after one separator is dropped).
fn word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (&text[..end], &text[end..])
}

fn some_text(rest: &str) -> Option<String> {
    let text = rest.strip_prefix(char::is_whitespace).unwrap_or(rest);
    (!text.trim().is_empty()).then(|| text.to_owned())
}

fn number(text: &str, syntax: &str) -> Result<i64, String> {
    text.parse().map_err(|_| match text {
        "" => usage(syntax),
        _ => format!("{text:?} is not a number; usage: {syntax}"),
    })
}

fn one_number(rest: &str, syntax: &str) -> Result<i64, String> {
    let (value, extra) = word(rest);
    if !extra.trim().is_empty() {
        return Err(usage(syntax));
    }
    number(value, syntax)
}

fn no_arguments(rest: &str, command: Command, syntax: &str) -> Result<Command, String> {
    if rest.trim().is_empty() {
        Ok(command)
    } else {
        Err(usage(syntax))
    }
}

fn usage(syntax: &str) -> String {
    format!("usage: {syntax}")
}

/// Whether a line may go into the editor's history: not the ones that
/// carry a password.
pub fn is_private(line: &str) -> bool {
    let (name, _) = word(line.trim_start().strip_prefix('/').unwrap_or(""));
    matches!(name, "login" | "register" | "reg")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn error(line: &str) -> String {
        match parse(line) {
            Err(error) => error,
            Ok(command) => panic!("{line:?} parsed as {command:?}"),
        }
    }

    #[test]
    fn plain_lines_are_messages() {
        assert_eq!(
            parse("hello  there"),
            Ok(Command::Say("hello  there".into()))
        );
        assert_eq!(
            parse("//not a command"),
            Ok(Command::Say("/not a command".into()))
        );
        assert_eq!(parse("   "), Ok(Command::Nothing));
        assert_eq!(parse("你好\r\n"), Ok(Command::Say("你好".into())));
    }

    #[test]
    fn account_commands() {
        assert_eq!(
            parse("/register 张三 secret pass"),
            Ok(Command::Register {
                name: "张三".into(),
                password: "secret pass".into()
            })
        );
        assert_eq!(
            parse("/login 12 pw"),
            Ok(Command::Login {
                id: 12,
                password: "pw".into()
            })
        );
        assert!(parse("/login 12").is_err());
        assert!(error("/login x pw").contains("not a number"));
        assert!(error("/register").starts_with("usage"));
        assert_eq!(parse("/logout"), Ok(Command::Logout));
        assert!(parse("/logout now").is_err());
    }

    #[test]
    fn conversations_keep_the_texts_spacing() {
        assert_eq!(
            parse("/msg 12 hi  there "),
            Ok(Command::Msg {
                to: 12,
                text: Some("hi  there ".into())
            })
        );
        assert_eq!(parse("/msg 12"), Ok(Command::Msg { to: 12, text: None }));
        assert_eq!(
            parse("/g 3 大家好"),
            Ok(Command::GroupMsg {
                group: 3,
                text: Some("大家好".into())
            })
        );
        assert!(error("/msg").starts_with("usage"));
        assert!(parse("/g abc hi").is_err());
    }

    #[test]
    fn groups_friends_and_the_rest() {
        assert_eq!(
            parse("/group create 测试群 a  group"),
            Ok(Command::CreateGroup {
                name: "测试群".into(),
                desc: "a  group".into()
            })
        );
        assert_eq!(
            parse("/group create g"),
            Ok(Command::CreateGroup {
                name: "g".into(),
                desc: String::new()
            })
        );
        assert!(parse("/group create").is_err());
        assert!(parse("/group delete g").is_err());
        assert_eq!(parse("/join 4"), Ok(Command::Join(4)));
        assert_eq!(parse("/friend 7"), Ok(Command::Friend(7)));
        assert!(parse("/friend 7 8").is_err());
        assert_eq!(parse("/list"), Ok(Command::List));
        assert_eq!(parse("/help"), Ok(Command::Help));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert_eq!(
            parse("/wait 0.5"),
            Ok(Command::Wait(Duration::from_millis(500)))
        );
        assert!(parse("/wait -1").is_err());
        assert!(error("/frobnicate").contains("/help"));
    }

    #[test]
    fn lines_with_passwords_stay_out_of_history() {
        assert!(is_private("/login 1 pw"));
        assert!(is_private("  /register a b"));
        assert!(!is_private("/msg 1 my login is 1"));
        assert!(!is_private("login"));
    }
}
