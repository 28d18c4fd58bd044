//! The error policy.
//!
//! Every fallible operation below the transports returns [`Error`]. Its
//! variants are the *kinds* of failure a client can act on, not the places a
//! failure came from: transports map each kind once (GraphQL
//! `extensions.code`, HTTP status + problem+json) and never inspect messages.
//!
//! - Client mistakes (`InvalidInput`, `PayloadTooLarge`, `NotFound`,
//!   `NotMember`, `Conflict`, `Forbidden`, `Unauthenticated`, `RateLimited`)
//!   carry a message that is safe to show to the caller.
//! - `Unavailable` means the database (or another dependency) could not be
//!   reached: retryable, nothing was changed.
//! - `Internal` is a bug or an unexpected database answer. Its detail is
//!   logged where it happens and never shown to a client.
//!
//! `anyhow` is for startup and background loops only (the server binary).

use std::fmt;

use crate::values::{ChannelId, UserId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist (or the caller may not know it does).
    #[error("{0} not found")]
    NotFound(Entity),
    /// The caller is known but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The user is not a member of the channel (or the channel does not
    /// exist, which a non-member is not told). The one answer of the
    /// membership rule, wherever it is checked: a client is refused, the
    /// management API posting as a non-member conflicts with the channel's
    /// membership.
    #[error("{user} is not a member of channel {channel}")]
    NotMember { user: UserId, channel: ChannelId },
    /// No or invalid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A field failed validation.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// A value exceeds a configured size limit.
    #[error("{what} is {actual} bytes, over the limit of {limit} bytes")]
    PayloadTooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    /// The caller exceeded a rate limit; retry after the given delay.
    #[error("rate limit exceeded, retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// A dependency (the database) is unreachable; nothing was changed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected answer from a dependency. Not shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub fn forbidden(reason: impl Into<String>) -> Self {
        Error::Forbidden(reason.into())
    }

    /// The message a client may see. Internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            Error::Unavailable(_) => "service temporarily unavailable".to_owned(),
            other => other.to_string(),
        }
    }
}

/// What a [`Error::NotFound`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Channel,
    Member,
    Message,
    Webhook,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Channel => "channel",
            Entity::Member => "member",
            Entity::Message => "message",
            Entity::Webhook => "webhook",
        })
    }
}
