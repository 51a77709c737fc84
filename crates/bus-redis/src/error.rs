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
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
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

impl From<RedisBusError> for BusError {
    fn from(err: RedisBusError) -> BusError {
        BusError::backend(err)
    }
}
