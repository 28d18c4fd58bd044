//! The use cases of Clacks, each written once and called by both transports
//! (the GraphQL client API and the management REST API): read access,
//! limits, rate limiting, idempotency, and publishing committed events to
//! live subscribers all happen here and only here. The membership rule of
//! writes is the store's, checked in the transaction that takes the seq
//! (the only place it cannot race with a removal); its refusal,
//! [`clacks_core::Error::NotMember`], passes through here unchanged.
//!
//! Two kinds of caller:
//! - [`Caller`]: an end user authenticated by JWT, who may only act on the
//!   channels they belong to;
//! - the application's own server, through the `admin_*` methods, which is
//!   trusted with every channel (the management port is its alone).

pub mod auth;
mod backfill;
mod limits;
mod presence;
mod rate_limit;
pub mod search_indexer;
mod service;
mod stream;
pub mod webhook_worker;
mod webhooks;

pub use auth::{Auth, AuthSettings, Caller, MintedToken, TokenRequest};
pub use backfill::StoreBackfill;
pub use clacks_delivery::PresenceStatus;
pub use clacks_store::MembershipChange;
pub use limits::{DEFAULT_MAX_BULK_MEMBERS, DEFAULT_MAX_CONCURRENT_SEARCHES, Limits, SEARCH_COST};
pub use presence::{DEFAULT_PRESENCE_EVENTS_MAX_MEMBERS, MAX_PRESENCE_CHANNELS};
pub use rate_limit::{Rate, RateLimits};
pub use search_indexer::{PendingChannels, SearchIndexer};
pub use service::{
    ChatService, ChatServiceParts, HistoryRequest, MAX_MENTIONS, MAX_RESUME_POINTS, MessageView,
    SearchHit, SearchRequest, SearchResults, SendOptions,
};
pub use stream::EventStream;
pub use webhook_worker::{WebhookSettings, WebhookWorker};
pub use webhooks::{MAX_ATTEMPTS_PAGE, WebhookChanges, WebhookInput};
