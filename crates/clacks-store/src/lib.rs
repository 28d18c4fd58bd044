//! Durable storage for Clacks: one [`Store`] interface, three backends
//! (SQLite, MySQL/MariaDB, PostgreSQL) sharing one set of SQL statements.
//!
//! What this layer guarantees, on every backend:
//! - a channel's seq counter (`channels.last_seq`) is bumped in the same
//!   transaction that stores the message or durable event taking the seq, so
//!   seqs are unique, increasing and gap-free under any concurrency (a
//!   rollback rolls the counter back too; AUTO_INCREMENT would leave holes);
//! - read watermarks only move forward;
//! - deleting a channel removes every row that belongs to it (webhook
//!   deliveries already recorded for it, `channel.deleted` among them, are
//!   the application's and stay until sent);
//! - a committed event has its webhook outbox row, written in its own
//!   transaction ([`webhooks`]);
//! - a user acts in a channel only as a member: a message, edit or delete
//!   by a user is refused ([`Error::NotMember`]) unless they are a member
//!   when the transaction holds the channel's seq lock. A removal takes the
//!   same lock for its `member_left` event, so nothing by a removed member
//!   takes a seq after their `member_left`; checked anywhere else, the rule
//!   would race with the removal.
//!
//! Every writer of a channel's membership or seqs takes the channel row
//! lock first (by bumping or locking `channels`), then touches other rows.
//!
//! What it must never do: enforce the other product rules (size limits,
//! rate limits, who may read). Those live in the service layer, once, for
//! both APIs.

mod batch;
mod detached;
mod dialect;
#[macro_use]
mod sql;
#[macro_use]
pub mod webhooks;

pub mod mysql;
pub mod postgres;
pub mod search;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use clacks_core::{
    Channel, ChannelEvent, ChannelId, ChannelPage, ChannelSummary, ClientMessageId, DisplayName,
    Error, HistoryPage, Member, Message, MessageBody, MessageId, Metadata, Reaction, ReactionKey,
    ReadMark, Result, Role, SearchQuery, SeenBy, Sender, Seq, UserId,
};

pub use dialect::Backend;
pub use webhooks::{
    AttemptRecord, DueDelivery, NewWebhook, UnreadCheck, WebhookPatch, WebhookStore,
};

/// The most rows one paged read returns, whatever the caller asks for.
pub const MAX_PAGE: u32 = 10_000;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel_id: ChannelId,
    pub sender: Sender,
    pub content: MessageBody,
    pub client_message_id: Option<ClientMessageId>,
}

/// What a message may carry beyond a [`NewMessage`]. A message with any of
/// it is stored in a transaction of its own, outside the group commit.
#[derive(Debug, Clone, Default)]
pub struct MessageExtras {
    /// Reply in the thread of this message.
    pub parent_id: Option<MessageId>,
    /// Members mentioned, distinct.
    pub mentions: Vec<UserId>,
}

/// Who changes a message.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An end user: only the message's sender, while a member of its
    /// channel.
    User(&'a UserId),
    /// The application's server (management API): any message.
    Application,
}

impl Actor<'_> {
    /// The end user acting, if it is one.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Actor::User(user) => Some(user),
            Actor::Application => None,
        }
    }
}

/// The outcome of storing a message.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub message: Message,
    /// False when `client_message_id` matched an earlier message, which is
    /// returned instead of storing a duplicate.
    pub created: bool,
}

/// Changes to a channel; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub display_name: Option<DisplayName>,
    /// `Some(None)` clears the metadata.
    pub metadata: Option<Option<Metadata>>,
}

/// The outcome of adding a member.
#[derive(Debug, Clone)]
pub struct AddedMember {
    pub member: Member,
    /// The `member_joined` event, or `None` when the user already was a
    /// member (adding is idempotent).
    pub event: Option<ChannelEvent>,
}

/// The outcome of a bulk membership change ([`Store::change_members`]).
#[derive(Debug, Clone, Default)]
pub struct MembershipChange {
    /// Users added (they were not members).
    pub added: usize,
    /// Users asked to be added who already were members (left as they were).
    pub already_members: usize,
    /// Users removed (they were members).
    pub removed: usize,
    /// Users asked to be removed who were not members.
    pub not_members: usize,
    /// The change's events at consecutive seqs taken in its transaction:
    /// the additions first, then the removals. One user in a direction is
    /// a `member_joined` / `member_left`; more are one `members_joined` /
    /// `members_left` (with every user in its [`clacks_core::MemberBatch`]'s
    /// `affected`, though the stored row lists at most
    /// [`clacks_core::MEMBER_BATCH_LISTED`]).
    pub events: Vec<ChannelEvent>,
}

/// Most rows one multi-row statement of a bulk membership change carries
/// (7 parameters a row stays under every backend's parameter limit).
pub const BULK_CHUNK: usize = 500;

/// The outcome of moving a read watermark.
#[derive(Debug, Clone)]
pub struct MarkedRead {
    pub member: Member,
    /// False when the watermark already was at or past the requested seq.
    pub moved: bool,
}

/// Which channels a search looks in. Who may search where is the
/// service's rule; the store only filters.
#[derive(Debug, Clone)]
pub enum SearchScope {
    /// One channel.
    Channel(ChannelId),
    /// Every channel `user` is a member of when the search runs.
    MemberOf(UserId),
    /// Every channel (the application's server).
    All,
}

/// One page of a search ([`Store::search_messages`]).
#[derive(Debug, Clone, Copy)]
pub struct SearchPageRequest {
    /// Hits to skip (those of the pages before).
    pub offset: u32,
    /// Hits to return at most.
    pub limit: u32,
}

/// A message that matched a search, with its engine's relevance.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: Message,
    /// Higher is better. Each engine scores its own way (SQLite: bm25,
    /// negated; MariaDB: InnoDB's TF-IDF relevance; PostgreSQL: ts_rank), so
    /// scores order one result list and mean nothing across backends.
    pub score: f64,
}

/// The outcome of one [`Store::index_search`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchIndexed {
    /// Messages whose index rows were written or removed (new messages,
    /// edits, deletes).
    pub messages: u64,
    /// Whether every channel of the scope found behind was indexed up to
    /// the last seq it had when read; false when the budget ran out first.
    pub done: bool,
}

/// The outcome of deleting a channel.
#[derive(Debug, Clone)]
pub struct DeletedChannel {
    pub channel: Channel,
    /// Who was a member when it was deleted (to tell their subscriptions).
    pub members: Vec<UserId>,
}

#[async_trait]
pub trait Store: WebhookStore + Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies the embedded migrations of this backend.
    async fn migrate(&self) -> Result<()>;
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;
    /// Closes the pools, waiting for connections in use.
    async fn close(&self);
    /// Connections open and idle, for the metrics.
    fn pool_stats(&self) -> PoolStats;

    /// How long the message writer has had a batch in flight since the
    /// store opened. Two readings give the share of the time between them
    /// that sends kept the database busy: background work (the search
    /// indexer) reads it to yield to them.
    fn message_writer_busy(&self) -> std::time::Duration;

    async fn setting(&self, name: &str) -> Result<Option<String>>;
    /// Stores `value` unless the setting exists; returns the stored value
    /// (so concurrent first starts agree on one value).
    async fn init_setting(&self, name: &str, value: &str) -> Result<String>;

    async fn create_channel(
        &self,
        display_name: &DisplayName,
        metadata: Option<&Metadata>,
        initial_members: &[UserId],
    ) -> Result<Channel>;
    /// Applies the patch and records a `channel_updated` event.
    async fn update_channel(
        &self,
        id: ChannelId,
        patch: &ChannelPatch,
    ) -> Result<(Channel, ChannelEvent)>;
    /// Deletes the channel and everything in it.
    async fn delete_channel(&self, id: ChannelId) -> Result<DeletedChannel>;
    async fn channel(&self, id: ChannelId) -> Result<Channel>;
    /// Channels by ascending id.
    async fn list_channels(&self, page: ChannelPage) -> Result<Vec<Channel>>;

    async fn add_member(&self, id: ChannelId, user: &UserId, role: &Role) -> Result<AddedMember>;
    /// Removes the member and records a `member_left` event.
    async fn remove_member(&self, id: ChannelId, user: &UserId) -> Result<ChannelEvent>;
    /// Adds the users of `add` who are not members (with `role`) and removes
    /// the members of `remove`, in one transaction under the channel's seq
    /// lock, with chunked multi-row statements. Idempotent: users already in
    /// the wanted state are counted, not refused. The two lists must not
    /// share a user (the service refuses that). `NotFound(Channel)` when the
    /// channel does not exist.
    async fn change_members(
        &self,
        id: ChannelId,
        add: &[UserId],
        remove: &[UserId],
        role: &Role,
    ) -> Result<MembershipChange>;
    /// The users of the batched membership event at `seq` whose list the
    /// event left out (`truncated`): all of them, or only `only` if it is
    /// one. Empty for any other seq.
    async fn batch_users(
        &self,
        id: ChannelId,
        seq: Seq,
        only: Option<&UserId>,
    ) -> Result<Vec<UserId>>;
    /// Members by user id, at most `limit`, only those whose id sorts after
    /// `after`. `NotFound(Channel)` when the channel does not exist.
    async fn members_page(
        &self,
        id: ChannelId,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<Member>>;
    /// Members by user id. `NotFound(Channel)` when the channel does not exist.
    async fn members(&self, id: ChannelId) -> Result<Vec<Member>>;
    async fn member(&self, id: ChannelId, user: &UserId) -> Result<Option<Member>>;
    /// The user's channels with unread counts and last messages.
    async fn user_channels(&self, user: &UserId) -> Result<Vec<ChannelSummary>>;
    /// The user's channels by ascending id, each with its newest seq: what
    /// an all-channels subscription follows, without the summaries' cost.
    async fn user_channel_seqs(&self, user: &UserId) -> Result<Vec<(ChannelId, Seq)>>;
    /// The user's channels of at most `max_members` members, by ascending
    /// id, at most `limit` of them: where their presence changes are told.
    /// Counts at most `max_members + 1` members of each of the user's
    /// channels, so a huge channel costs no more than a small one.
    async fn small_channels_of(
        &self,
        user: &UserId,
        max_members: u32,
        limit: u32,
    ) -> Result<Vec<ChannelId>>;
    /// The newest seq of each of `channels` that exists.
    async fn last_seqs(&self, channels: &[ChannelId]) -> Result<Vec<(ChannelId, Seq)>>;

    /// Stores a message with the channel's next seq; idempotent on
    /// `(channel, sender, client_message_id)`. A user sender must be a
    /// member (`NotMember`); `NotFound(Channel)` when the channel is gone.
    async fn create_message(&self, new: &NewMessage) -> Result<StoredMessage>;
    /// Replaces the content of `editor`'s own message and records a
    /// `message_edited` event. `NotMember` when the editor is not a member
    /// of the message's channel, `Forbidden` when not its sender.
    async fn edit_message(
        &self,
        id: MessageId,
        editor: &UserId,
        content: &MessageBody,
    ) -> Result<(Message, ChannelEvent)>;
    /// Leaves a tombstone (seq and sender kept, content cleared) and records
    /// a `message_deleted` event; `None` when it was deleted already. A
    /// user may delete only their own message, as a member (as for edits).
    async fn delete_message(
        &self,
        id: MessageId,
        by: Actor<'_>,
    ) -> Result<(Message, Option<ChannelEvent>)>;
    /// Stores a message with extras with the channel's next seq (one
    /// transaction, outside the group commit). The rules of
    /// [`Store::create_message`], and, under the channel's seq lock: a
    /// reply's parent is a message of the same channel (`InvalidInput`
    /// otherwise, the same whether it exists elsewhere or not at all), not
    /// a reply (`InvalidInput`: threads are one level deep), not a
    /// tombstone (`Conflict`), and the reply counts in the parent's
    /// `reply_count` / `last_reply_at`; every mentioned user is a member
    /// (`InvalidInput`).
    async fn create_message_with(
        &self,
        new: &NewMessage,
        extras: &MessageExtras,
    ) -> Result<StoredMessage>;
    /// Messages after the user's watermark that mention them (not their
    /// own, not deleted).
    async fn unread_mention_count(&self, channel: ChannelId, user: &UserId) -> Result<i64>;
    /// A page of the replies to `parent`, by seq as [`Store::history`].
    async fn thread(
        &self,
        parent: MessageId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// Adds `user`'s reaction `key` to a message and records a
    /// `reaction_added` event carrying the key's new count. Idempotent per
    /// (user, message, key): an existing reaction records nothing (`None`).
    /// `NotMember` unless the user is a member of the message's channel
    /// (checked under its seq lock, as for messages); `Conflict` on a
    /// tombstone. Changes of one channel's reactions are serialized by its
    /// seq lock, so the counts in the events are exact.
    async fn add_reaction(
        &self,
        message: MessageId,
        user: &UserId,
        key: &ReactionKey,
    ) -> Result<(Message, Option<ChannelEvent>)>;
    /// Takes back a reaction (`reaction_removed`); as [`Store::add_reaction`].
    async fn remove_reaction(
        &self,
        message: MessageId,
        user: &UserId,
        key: &ReactionKey,
    ) -> Result<(Message, Option<ChannelEvent>)>;
    /// A message's reactions by key, in the order keys were first used,
    /// each with whether `viewer` is among its users.
    async fn reactions(&self, message: MessageId, viewer: &UserId) -> Result<Vec<Reaction>>;
    async fn message(&self, id: MessageId) -> Result<Message>;
    async fn message_by_seq(&self, channel: ChannelId, seq: Seq) -> Result<Message>;
    async fn history(
        &self,
        channel: ChannelId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>>;
    /// Every durable event with `seq > after`, ascending, at most `limit`:
    /// what a resuming subscriber missed.
    async fn events_after(
        &self,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<ChannelEvent>>;

    /// Moves the watermark forward to `seq` (clamped to the channel's last
    /// seq); never back. `NotMember` when the user is not a member.
    async fn mark_read(&self, channel: ChannelId, user: &UserId, seq: Seq) -> Result<MarkedRead>;
    /// Messages after the user's watermark, not sent by the user, not deleted.
    async fn unread_count(&self, channel: ChannelId, user: &UserId) -> Result<i64>;
    /// Oldest unread messages across the user's channels.
    async fn unread_messages(&self, user: &UserId, limit: u32) -> Result<Vec<Message>>;
    /// Members who marked `seq` read, with when they did, earliest first.
    async fn seen_by(&self, channel: ChannelId, seq: Seq) -> Result<Vec<SeenBy>>;
    /// The moves of one member's watermark, ascending.
    async fn read_marks(&self, channel: ChannelId, user: &UserId) -> Result<Vec<ReadMark>>;

    /// Messages in `scope` holding every word of `query` (tombstones
    /// never), best match first, ties newest (highest id) first; the page
    /// `page` of that order. Searches the index as it is: what
    /// [`Store::index_search`] has not reached yet is not found. See [`crate::search`] for what each backend's
    /// engine counts as a word.
    async fn search_messages(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
        page: SearchPageRequest,
    ) -> Result<Vec<SearchHit>>;

    /// Brings the search index of the channels of `scope` that are behind
    /// (`channels.last_seq` past their `search_progress`) up to their last
    /// seq: new messages are indexed, edited ones re-indexed from their
    /// current content, deleted ones removed. Handles at most `budget` seqs
    /// in all (so at most `budget` messages); the rest is left for the next
    /// call (`done` false). Each channel in a transaction of its own that
    /// locks its `search_progress` row, never its `channels` row (which
    /// sends lock): indexers on several nodes may run at once, taking turns
    /// per channel, and one that comes later reads content at least as new.
    async fn index_search(&self, scope: &SearchScope, budget: u32) -> Result<SearchIndexed>;

    /// Rows in any table that still belong to `channel`: 0 after a delete.
    /// For tests and consistency checks.
    async fn rows_referencing(&self, channel: ChannelId) -> Result<i64>;
}

/// Connections of a store's pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: usize,
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// Message batches in flight at once (MySQL/MariaDB and PostgreSQL;
    /// SQLite has one writer). `None`: the backend's default.
    pub batch_pipeline: Option<usize>,
    /// MySQL backend: write message batches as for MySQL 8 (no `INSERT ...
    /// RETURNING`) even on MariaDB, so tests cover that path too.
    #[doc(hidden)]
    pub mysql8_statements: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(5),
            batch_pipeline: None,
            mysql8_statements: false,
        }
    }
}

/// Opens a store for `url`. An unsupported or malformed URL is
/// `InvalidInput` (retrying will not help); an unreachable server is
/// `Unavailable` (retry with backoff).
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Arc<dyn Store>> {
    // Every backend's operations run detached from their callers: see
    // `detached` for what a dropped caller did to each driver.
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(Arc::new(detached::Detached::new(
            sqlite::SqliteStore::connect(url, settings).await?,
        ))),
        Backend::MySql => Ok(Arc::new(detached::Detached::new(
            mysql::MySqlStore::connect(url, settings).await?,
        ))),
        Backend::Postgres => Ok(Arc::new(detached::Detached::new(
            postgres::PgStore::connect(url, settings).await?,
        ))),
    }
}

/// Prepared statements kept per connection of a batch pool. A batch's
/// statements come in as many shapes as there are channel and row counts;
/// run on the shared pool, every one of its connections prepared them anew
/// (a round trip each) and sqlx's default cache of 100 could not hold them
/// all. Two dedicated connections with room for 512 keep them prepared.
pub(crate) const BATCH_STATEMENT_CACHE: usize = 512;

/// Maps a driver error to the error kinds the layers above understand.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unavailable(err.to_string()),
        sqlx::Error::Configuration(_) => Error::invalid("DATABASE_URL", err.to_string()),
        sqlx::Error::Database(ref db) => {
            // Connection-level refusals (auth, unknown database) are worth a
            // retry at startup; the rest is a bug or a schema mismatch.
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if matches!(
                code.as_str(),
                "1045" | "1049" | "28000" | "28P01" | "3D000" | "57P03"
            ) {
                Error::Unavailable(err.to_string())
            } else {
                tracing::error!(error = %err, "database error");
                Error::Internal(err.to_string())
            }
        }
        other => {
            tracing::error!(error = %other, "database error");
            Error::Internal(other.to_string())
        }
    }
}

pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
