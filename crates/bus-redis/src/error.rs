//! Why the Redis bus failed.
//!
//! The service sees every failure as a [`BusError`]; this type is what it
//! carries as its source, so that logs say what went wrong with Redis.

use chat_service::BusError;

/// A failure of the Redis bus, carried inside [`BusError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    /// The configuration cannot work; the message says what to change.
    #[error("invalid Redis bus configuration: {0}")]
    Config(String),
    /// Redis could not be reached within the command timeout, or it
    /// answered with an error.
    ///
    /// Not given as the source: the message already says all of it.
    #[error("Redis: {}", readable(.0))]
    Redis(fred::error::Error),
    /// Redis answered something this bus cannot have asked for.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// A notice could not be written as JSON.
    #[error("could not encode a notice: {0}")]
    Encode(#[from] serde_json::Error),
    /// Another running server already subscribes to this server's channel:
    /// two servers with one id would each receive the other's notices.
    #[error(
        "server id {0:?} is already used by a running server on this Redis: \
         give every server its own --server-id"
    )]
    ServerIdInUse(String),
    /// The batch a notice was published in failed; every notice of the
    /// batch carries the same failure.
    #[error(transparent)]
    Batch(std::sync::Arc<RedisBusError>),
    /// The bus was shut down while a notice waited to be published.
    #[error("the Redis bus is shut down")]
    Stopped,
    /// [`Bus::start`](chat_service::Bus::start) was called a second time,
    /// or after [`Bus::shutdown`](chat_service::Bus::shutdown).
    #[error("the Redis bus was already started or has been shut down")]
    NotStartable,
}

/// The client's error as a person should read it. The client keeps an
/// I/O error only as its debug form (`Os { code: 111, kind:
/// ConnectionRefused, message: "Connection refused" }`); its message is
/// what says what happened.
fn readable(error: &fred::error::Error) -> String {
    let details = error.details();
    if *error.kind() == fred::error::ErrorKind::IO {
        let message = details
            .split_once("message: \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(message, _)| message);
        if let Some(message) = message {
            return format!("I/O error: {message}");
        }
    }
    error.to_string()
}

impl From<fred::error::Error> for RedisBusError {
    fn from(error: fred::error::Error) -> RedisBusError {
        RedisBusError::Redis(error)
    }
}

impl From<RedisBusError> for BusError {
    fn from(err: RedisBusError) -> BusError {
        BusError::backend(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_failure_reads_as_its_message() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let os = std::io::Error::from_raw_os_error(111);
        let error = RedisBusError::from(fred::error::Error::from(os));
        let text = error.to_string();
        assert!(text.starts_with("Redis: I/O error: "), "{text}");
        assert!(!text.contains("Os {"), "{text}");
        // Without a message in its debug form, the client's own text.
        let error = RedisBusError::from(fred::error::Error::from(refused));
        assert!(error.to_string().starts_with("Redis: "), "{error}");
    }
}
