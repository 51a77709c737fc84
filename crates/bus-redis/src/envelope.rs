//! The payload of one PUBLISH: a notice and the users it is for.
//!
//! A server's channel carries notices for many of its users, so every
//! payload names its recipients: `{"users":[…],"notice":{…}}`, with the
//! notice in the service's own serde form. JSON keeps the payload readable
//! with `redis-cli SUBSCRIBE` when a cluster misbehaves.

use chat_proto::UserId;
use chat_service::Notice;
use serde::Deserialize;

/// A notice as one server received it from another.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) users: Vec<UserId>,
    pub(crate) notice: Notice,
}

/// The notice of one `publish` call, serialised once for every server it
/// goes to: only the list of users differs between their payloads.
pub(crate) struct EncodedNotice(String);

impl EncodedNotice {
    pub(crate) fn new(notice: &Notice) -> Result<EncodedNotice, serde_json::Error> {
        serde_json::to_string(notice).map(EncodedNotice)
    }

    /// The payload for `users`; both halves are JSON already, so putting
    /// them side by side in an object is JSON too.
    pub(crate) fn for_users(&self, users: &[UserId]) -> Result<String, serde_json::Error> {
        let users = serde_json::to_string(users)?;
        Ok(format!(r#"{{"users":{users},"notice":{}}}"#, self.0))
    }
}

/// Reads a payload; an error means a server that speaks another format.
pub(crate) fn decode(payload: &[u8]) -> Result<Envelope, serde_json::Error> {
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chat_proto::{ChatMessage, Delivery};

    use super::*;

    fn chat() -> Notice {
        Notice::Chat(Arc::new(Delivery::One(ChatMessage {
            from: 1,
            from_name: "ann \"the\" first".to_owned(),
            to: 2,
            text: "héllo\n{}".to_owned(),
            time: "2024-01-02 03:04:05".to_owned(),
        })))
    }

    #[test]
    fn every_notice_survives_the_trip() {
        let notices = [
            chat(),
            Notice::FriendAdded {
                from: 7,
                from_name: "bob".to_owned(),
            },
            Notice::Wake,
        ];
        for notice in notices {
            let payload = EncodedNotice::new(&notice)
                .and_then(|n| n.for_users(&[2, 3]))
                .expect("every notice encodes");
            let envelope = decode(payload.as_bytes()).expect("an encoded notice decodes");
            assert_eq!(envelope.users, vec![2, 3]);
            assert_eq!(envelope.notice, notice);
        }
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(decode(b"hello").is_err());
        assert!(decode(br#"{"users":[1]}"#).is_err());
        assert!(decode(br#"{"users":["x"],"notice":{"notice":"wake"}}"#).is_err());
    }
}
