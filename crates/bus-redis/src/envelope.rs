//! The payload of one PUBLISH: the notices of a batch for one server, and
//! the users each is for.
//!
//! A server's channel carries notices for many of its users, so every
//! notice names its recipients, and a batch's notices for one server share
//! one payload, in the order they were queued:
//! `[{"users":[…],"notice":…},…]`, each notice in the service's own serde
//! form. JSON keeps the payload readable with `redis-cli SUBSCRIBE` when a
//! cluster misbehaves.

use std::fmt::Write;

use chat_proto::UserId;
use chat_service::Notice;
use serde::Deserialize;

/// A notice as one server received it from another.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) users: Vec<UserId>,
    pub(crate) notice: Notice,
}

/// A notice serialised once, however many servers it goes to: only the
/// list of users differs between their payloads.
pub(crate) struct EncodedNotice(String);

impl EncodedNotice {
    pub(crate) fn new(notice: &Notice) -> Result<EncodedNotice, serde_json::Error> {
        serde_json::to_string(notice).map(EncodedNotice)
    }
}

/// One server's payload as a batch is sorted out, and which users of which
/// job of the batch it carries.
#[derive(Default)]
pub(crate) struct ServerPayload {
    body: String,
    members: Vec<(usize, Vec<UserId>)>,
}

impl ServerPayload {
    /// Adds the notice of job `index` for `users`. Ids and an encoded
    /// notice are JSON already, so writing them side by side is JSON too.
    pub(crate) fn push(&mut self, index: usize, users: Vec<UserId>, notice: &EncodedNotice) {
        self.body
            .push_str(if self.body.is_empty() { "[" } else { "," });
        self.body.push_str(r#"{"users":["#);
        for (i, user) in users.iter().enumerate() {
            if i > 0 {
                self.body.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(self.body, "{user}");
        }
        self.body.push_str(r#"],"notice":"#);
        self.body.push_str(&notice.0);
        self.body.push('}');
        self.members.push((index, users));
    }

    /// The payload, and the users of each job it carries.
    pub(crate) fn finish(mut self) -> (String, Vec<(usize, Vec<UserId>)>) {
        self.body.push(']');
        (self.body, self.members)
    }
}

/// Reads a payload; an error means a server that speaks another format.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<Envelope>, serde_json::Error> {
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
    fn a_batch_survives_the_trip_in_order() {
        let notices = [
            chat(),
            Notice::FriendAdded {
                from: 7,
                from_name: "bob".to_owned(),
            },
            Notice::Wake,
        ];
        let mut payload = ServerPayload::default();
        for (index, notice) in notices.iter().enumerate() {
            let encoded = EncodedNotice::new(notice).expect("every notice encodes");
            payload.push(index, vec![2, index as UserId + 3], &encoded);
        }
        let (body, members) = payload.finish();
        assert_eq!(
            members,
            vec![(0, vec![2, 3]), (1, vec![2, 4]), (2, vec![2, 5])]
        );
        let envelopes = decode(body.as_bytes()).expect("an encoded batch decodes");
        assert_eq!(envelopes.len(), notices.len());
        for (index, (envelope, notice)) in envelopes.iter().zip(&notices).enumerate() {
            assert_eq!(envelope.users, vec![2, index as UserId + 3]);
            assert_eq!(&envelope.notice, notice);
        }
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(decode(b"hello").is_err());
        assert!(decode(br#"[{"users":[1]}]"#).is_err());
        assert!(decode(br#"[{"users":["x"],"notice":"wake"}]"#).is_err());
        // One envelope, not a list of them: another version's payload.
        assert!(decode(br#"{"users":[1],"notice":"wake"}"#).is_err());
    }
}
