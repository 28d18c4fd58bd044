//! Clacks' domain vocabulary: validated identifiers and values, the records the
//! store returns, the events delivered to subscribers, and the one error type
//! every layer speaks.
//!
//! It also says how a connection URL may be printed ([`redact_url`]).
//!
//! This crate does no I/O. Everything that crosses a transport boundary is
//! parsed into one of these types at the edge ("parse, don't validate"), so
//! the GraphQL API and the management API enforce the same rules.

pub mod error;
pub mod event;
pub mod model;
pub mod redact;
pub mod search;
pub mod values;
pub mod webhook;

pub use error::{Entity, Error, Result};
pub use event::{ChannelEvent, EventPayload, MEMBER_BATCH_LISTED, MemberBatch};
pub use model::*;
pub use redact::redact_url;
pub use search::{
    SEARCH_MAX_DEPTH, SEARCH_MAX_WORDS, SEARCH_QUERY_MAX_CHARS, SearchCursor, SearchQuery,
};
pub use values::*;
pub use webhook::{
    AttemptOutcome, Webhook, WebhookAttempt, WebhookEventType, WebhookSecret, WebhookUrl,
};

/// Milliseconds since the Unix epoch: the one time representation stored in
/// every backend (portable across SQLite, MySQL and PostgreSQL, and exact).
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
