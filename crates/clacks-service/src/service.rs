use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use clacks_core::{
    Channel, ChannelEvent, ChannelId, ChannelPage, ChannelSummary, ClientMessageId, DisplayName,
    Entity, Error, EventPayload, HistoryPage, Member, Message, MessageBody, MessageId, Metadata,
    Reaction, ReactionKey, ReadMark, Result, Role, SEARCH_MAX_DEPTH, SearchCursor, SearchQuery,
    SeenBy, Sender, Seq, UserId, now_ms,
};
use clacks_delivery::{
    CloseReason, ConnectionGuard, Connections, Hub, HubStats, Interest, NatsBus, Refusal,
    Subscription,
};
use clacks_store::{
    Actor, Backend, ChannelPatch, MarkedRead, MembershipChange, MessageExtras, NewMessage,
    PoolStats, SearchPageRequest, SearchScope, Store, StoredMessage,
};

use crate::auth::{Auth, Caller, MintedToken, TokenRequest};
use crate::limits::{Limits, SEARCH_COST};
use crate::rate_limit::{Operation, RateLimiters};
use crate::search_indexer::PendingChannels;
use crate::stream::EventStream;

/// Most channels one subscription may resume (`resume` entries). A
/// resume point costs a few words while the subscription reads that
/// channel's backlog, whatever its length: the backlog is read a page at a
/// time, as the client takes it.
pub const MAX_RESUME_POINTS: usize = 1_000;

/// A page of history: `before` (newest first, the default) or `after`
/// (oldest first) a seq.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryRequest {
    pub before: Option<Seq>,
    pub after: Option<Seq>,
    pub limit: Option<u32>,
}

/// A full-text search, as either API receives it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// The words to find (every one must match); see
    /// [`clacks_core::SearchQuery`].
    pub query: String,
    /// Only this channel; else every channel in scope.
    pub channel: Option<ChannelId>,
    /// Hits per page: default [`Limits::default_search_page`], at most
    /// [`Limits::max_search_page`] (outside 1 to that: `InvalidInput`).
    pub limit: Option<i64>,
    /// The `cursor` of the last hit of the previous page.
    pub after: Option<String>,
}

/// One message found, with where it stands in the result list.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub message: Message,
    /// Relevance, higher is better (engine-specific scale).
    pub score: f64,
    /// Pass as `after` for the hits ranked below this one.
    pub cursor: String,
}

/// A page of search hits, best first (ties newest first).
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// The cursor of the next page: `None` when this page is the last one
    /// (shorter than asked, or at [`SEARCH_MAX_DEPTH`]).
    pub next: Option<String>,
}

/// What a send may carry beyond its content.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Makes the send idempotent: a retry with the same id returns the
    /// original message instead of storing a duplicate.
    pub client_message_id: Option<String>,
    /// Reply in the thread of this message: a top-level message of the
    /// same channel (threads are one level deep), not a tombstone.
    pub parent_id: Option<MessageId>,
    /// Members to mention: at most [`MAX_MENTIONS`] user ids, each a
    /// member of the channel; repeats count once.
    pub mentions: Vec<String>,
}

/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 50;

impl SendOptions {
    /// The extras to store: the parent, and the mentions parsed and
    /// made distinct (in the order given).
    fn extras(&self) -> Result<MessageExtras> {
        if self.mentions.len() > MAX_MENTIONS {
            return Err(Error::invalid(
                "mentions",
                format!("at most {MAX_MENTIONS} users may be mentioned"),
            ));
        }
        let mut mentions: Vec<UserId> = Vec::with_capacity(self.mentions.len());
        for raw in &self.mentions {
            let user = UserId::parse(raw.clone())?;
            if !mentions.contains(&user) {
                mentions.push(user);
            }
        }
        Ok(MessageExtras {
            parent_id: self.parent_id,
            mentions,
        })
    }
}

/// One message as seen by one member (the original schema's `MessageView`).
#[derive(Debug, Clone)]
pub struct MessageView {
    pub user_id: UserId,
    pub message: Message,
    pub seen: bool,
    /// When the member's watermark passed it (ms), if it did by reading.
    pub seen_at: Option<i64>,
}

/// What the service is built from.
/// When a client refused because every search slot is taken may retry.
const SEARCH_BUSY_RETRY_MS: u64 = 1_000;

pub struct ChatServiceParts {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub connections: Arc<Connections>,
    pub auth: Auth,
    pub limits: Limits,
    /// Fan-out to other nodes; `None` when this node works alone.
    pub bus: Option<Arc<NatsBus>>,
}

pub struct ChatService {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    connections: Arc<Connections>,
    auth: Auth,
    limits: Limits,
    bus: Option<Arc<NatsBus>>,
    publisher: Arc<Publisher>,
    rate: RateLimiters,
    /// One permit per search running on this node.
    search_slots: Arc<tokio::sync::Semaphore>,
}

/// What a caller who may not see a message is told, whether it exists or
/// lies in a channel they are not in: the same.
fn no_access_to_message(error: Error) -> Error {
    match error {
        Error::NotFound(Entity::Message) | Error::NotMember { .. } => {
            Error::forbidden("no access to this message")
        }
        other => other,
    }
}

/// A caller is told the same of a channel that does not exist as of one
/// they are not a member of.
fn unless_member(caller: &Caller, channel: ChannelId) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::NotFound(Entity::Channel) => Error::NotMember {
            user: caller.user_id.clone(),
            channel,
        },
        other => other,
    }
}

impl ChatService {
    pub fn new(parts: ChatServiceParts) -> Arc<Self> {
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some(changes) = parts.connections.presence().watch()
        {
            runtime.spawn(crate::presence::tell_small_channels(
                changes,
                parts.store.clone(),
                parts.hub.clone(),
                parts.limits.presence_events_max_members,
            ));
        }
        Arc::new(ChatService {
            store: parts.store,
            publisher: Arc::new(Publisher {
                hub: parts.hub.clone(),
                bus: parts.bus.clone(),
                webhook_wake: Arc::new(tokio::sync::Notify::new()),
                search_pending: Arc::new(PendingChannels::default()),
            }),
            hub: parts.hub,
            connections: parts.connections,
            auth: parts.auth,
            bus: parts.bus,
            rate: RateLimiters::new(&parts.limits.rates),
            search_slots: Arc::new(tokio::sync::Semaphore::new(
                parts.limits.max_concurrent_searches.max(1),
            )),
            limits: parts.limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The store, for the use cases in this crate's other modules.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Notified whenever this node commits a durable event: what wakes
    /// the webhook worker at once (other nodes' events it finds by polling).
    pub fn webhook_wake(&self) -> Arc<tokio::sync::Notify> {
        self.publisher.webhook_wake.clone()
    }

    /// The channels this node changed messages in since the search
    /// indexer last looked: what keeps its rounds to those channels.
    pub fn search_pending(&self) -> Arc<PendingChannels> {
        self.publisher.search_pending.clone()
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// The link to the other nodes, for tests that inject its faults.
    #[doc(hidden)]
    pub fn bus(&self) -> Option<&Arc<NatsBus>> {
        self.bus.as_ref()
    }

    /// Succeeds when the database answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
    }

    /// The database this node stores in.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Database connections open and idle (metrics).
    pub fn pool_stats(&self) -> PoolStats {
        self.store.pool_stats()
    }

    /// Live subscriptions and channels of this node's hub (metrics).
    pub fn hub_stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// Closes the database pools, waiting for connections in use (the end
    /// of a shutdown).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Forgets idle rate-limiter state; call periodically.
    pub fn housekeeping(&self) {
        self.rate.retain_recent();
    }

    /// Charges a client request's query cost, in cost units, to the
    /// caller's budget: `RATE_LIMITED` (with when to retry) once spent,
    /// `InvalidInput` for a cost above what the budget can ever hold.
    pub fn charge_query_cost(&self, caller: &Caller, cost: u64) -> Result<()> {
        self.rate.charge_query_cost(&caller.user_id, cost)
    }

    /// Takes one of the caller's subscription tokens: `RATE_LIMITED` once
    /// spent. A transport calls it when it receives a subscription, before
    /// running it, so that one stopped before its resolver ran (a
    /// `subscribe` followed at once by its `complete`) is counted too;
    /// [`Self::subscribe`] does not charge again.
    pub fn admit_subscription(&self, caller: &Caller) -> Result<()> {
        self.rate.check(Operation::Subscribe, &caller.user_id)
    }

    fn publish(&self, event: ChannelEvent) {
        self.publisher.publish(event);
    }

    /// Runs a write, and publishes the event it committed, in a task of
    /// its own that the request only awaits: a request dropped after the
    /// commit (the client went away or sent `complete`, the socket closed,
    /// the server is shutting down) still publishes, instead of leaving
    /// the event unseen until the channel's next one.
    async fn commit<T: Send + 'static, E: IntoIterator<Item = ChannelEvent> + Send + 'static>(
        &self,
        write: impl Future<Output = Result<(T, E)>> + Send + 'static,
    ) -> Result<T> {
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            let (outcome, events) = write.await?;
            for event in events {
                publisher.publish(event);
            }
            Ok(outcome)
        })
        .await
        .map_err(|e| Error::Internal(format!("a write task failed: {e}")))?
    }

    fn ephemeral(&self, channel: ChannelId, payload: EventPayload) -> ChannelEvent {
        ephemeral_event(&self.hub, channel, payload)
    }

    fn message_body(&self, content: String) -> Result<MessageBody> {
        MessageBody::parse(content, self.limits.max_message_bytes)
    }

    // ----- authentication ---------------------------------------------

    /// Validates a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<Caller> {
        self.auth.verify(token)
    }

    /// Admits a new live connection from the client `address` under the
    /// node's total and per-address connection limits.
    pub fn admit_connection(&self, address: IpAddr) -> Result<ConnectionGuard, Refusal> {
        self.connections.admit(address)
    }

    /// Counts an authenticated connection as `caller`'s, under the
    /// per-user limit; a forced disconnect of the user then closes it.
    pub fn register_connection(
        &self,
        connection: &mut ConnectionGuard,
        caller: &Caller,
    ) -> Result<(), Refusal> {
        connection.register_user(caller.user_id.clone())
    }

    // ----- rules shared by the client operations -----------------------

    /// The caller's membership of `channel`, for reading it. A non-member
    /// learns nothing, not even whether the channel exists. (Writes check
    /// membership in their transaction instead: see clacks-store.)
    pub(crate) async fn require_member(
        &self,
        caller: &Caller,
        channel: ChannelId,
    ) -> Result<Member> {
        self.store
            .member(channel, &caller.user_id)
            .await?
            .ok_or_else(|| Error::NotMember {
                user: caller.user_id.clone(),
                channel,
            })
    }

    /// A message the caller may see (a member of its channel).
    async fn visible_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let message = self.store.message(id).await.map_err(no_access_to_message)?;
        self.require_member(caller, message.channel_id)
            .await
            .map_err(no_access_to_message)?;
        Ok(message)
    }

    fn history_page(&self, request: HistoryRequest) -> Result<HistoryPage> {
        match (request.before, request.after) {
            (Some(before), Some(after)) => Ok(HistoryPage::Between(after.max(0), before)),
            (None, Some(after)) => Ok(HistoryPage::After(after.max(0))),
            (before, None) => Ok(HistoryPage::Before(before)),
        }
    }

    /// A search request's input, parsed: the rules of both APIs (query,
    /// page size, cursor) checked here once, before any database work.
    fn search_input(&self, request: &SearchRequest) -> Result<(SearchQuery, u32, u32)> {
        let query = SearchQuery::parse(&request.query)?;
        let limit = self.limits.search_page(request.limit)?;
        let offset = match request.after.as_deref() {
            Some(raw) => SearchCursor::parse(raw)?.offset,
            None => 0,
        };
        Ok((query, limit, offset))
    }

    /// Runs a parsed search in `scope`, paging at most [`SEARCH_MAX_DEPTH`]
    /// hits deep.
    async fn search_in(
        &self,
        scope: SearchScope,
        (query, limit, offset): (SearchQuery, u32, u32),
    ) -> Result<SearchResults> {
        // Paging stops at SEARCH_MAX_DEPTH hits: past it, an empty last page.
        let limit = limit.min(SEARCH_MAX_DEPTH.saturating_sub(offset));
        if limit == 0 {
            return Ok(SearchResults {
                hits: Vec::new(),
                next: None,
            });
        }
        let Ok(slot) = self.search_slots.clone().try_acquire_owned() else {
            metrics::counter!("clacks_searches_refused_total").increment(1);
            return Err(Error::RateLimited {
                retry_after_ms: SEARCH_BUSY_RETRY_MS,
            });
        };
        // The slot goes with the query, not with the request: a client that
        // gives up does not stop the database working on it, so neither
        // may it free the slot. The index is first brought up to date in
        // the scope (the send path does not maintain it), so the search
        // finds every message committed before it began, on any node.
        let store = self.store.clone();
        let found = tokio::spawn(async move {
            let found = match crate::search_indexer::catch_up(&*store, &scope).await {
                Ok((indexed, caught_up)) => {
                    if !caught_up {
                        tracing::warn!(
                            indexed,
                            "search ran before its scope was fully indexed: \
                             indexing is behind the senders or stopped"
                        );
                    }
                    store
                        .search_messages(&query, &scope, SearchPageRequest { offset, limit })
                        .await
                }
                Err(e) => Err(e),
            };
            drop(slot);
            found
        })
        .await
        .map_err(|e| Error::Internal(format!("a search task failed: {e}")))??;
        let full = found.len() >= limit as usize;
        let hits: Vec<SearchHit> = found
            .into_iter()
            .zip(offset..)
            .map(|(hit, at)| SearchHit {
                message: hit.message,
                score: hit.score,
                cursor: SearchCursor::after_hit(at).encode(),
            })
            .collect();
        let next = hits
            .last()
            .filter(|_| full && offset.saturating_add(limit) < SEARCH_MAX_DEPTH)
            .map(|hit| hit.cursor.clone());
        Ok(SearchResults { hits, next })
    }

    // ----- client operations (an authenticated end user) ---------------

    /// Full-text search of the messages of the caller's channels (or of
    /// one of them: a channel the caller is not in is refused as every
    /// read of it is, exists or not). Tombstones are never found; an
    /// edited message is found by its current content only.
    pub async fn search_for(
        &self,
        caller: &Caller,
        request: &SearchRequest,
    ) -> Result<SearchResults> {
        let input = self.search_input(request)?;
        self.rate.charge_query_cost(&caller.user_id, SEARCH_COST)?;
        let scope = match request.channel {
            Some(channel) => {
                self.require_member(caller, channel).await?;
                SearchScope::Channel(channel)
            }
            None => SearchScope::MemberOf(caller.user_id.clone()),
        };
        self.search_in(scope, input).await
    }

    /// The caller's channels with unread counts and last messages.
    pub async fn my_channels(&self, caller: &Caller) -> Result<Vec<ChannelSummary>> {
        self.store.user_channels(&caller.user_id).await
    }

    pub async fn channel_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
    ) -> Result<(Channel, Member)> {
        let member = self.require_member(caller, channel).await?;
        Ok((self.store.channel(channel).await?, member))
    }

    pub async fn members_for(&self, caller: &Caller, channel: ChannelId) -> Result<Vec<Member>> {
        self.require_member(caller, channel).await?;
        self.store.members(channel).await
    }

    /// A page of the members of a channel the caller is in, by user id:
    /// those after `after`, at most `limit` (defaulted and bounded like
    /// every page).
    pub async fn members_page_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<Member>> {
        self.require_member(caller, channel).await?;
        let after = after.map(UserId::parse).transpose()?;
        self.store
            .members_page(channel, after.as_ref(), self.limits.page(limit))
            .await
    }

    pub async fn history_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
        request: HistoryRequest,
    ) -> Result<Vec<Message>> {
        self.require_member(caller, channel).await?;
        let page = self.history_page(request)?;
        self.store
            .history(channel, page, self.limits.page(request.limit))
            .await
    }

    pub async fn message_for(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        self.visible_message(caller, id).await
    }

    /// A page of the replies to `parent` (a message of one of the caller's
    /// channels), paged by seq as history is: newest first by default,
    /// oldest first with `after`.
    pub async fn thread_for(
        &self,
        caller: &Caller,
        parent: MessageId,
        request: HistoryRequest,
    ) -> Result<Vec<Message>> {
        self.visible_message(caller, parent).await?;
        let page = self.history_page(request)?;
        self.store
            .thread(parent, page, self.limits.page(request.limit))
            .await
    }

    /// Sends a message as the caller. With a client message id, a retry
    /// returns the original message instead of storing a duplicate.
    pub async fn send(
        &self,
        caller: &Caller,
        channel: ChannelId,
        content: String,
        client_message_id: Option<String>,
    ) -> Result<Message> {
        let options = SendOptions {
            client_message_id,
            ..SendOptions::default()
        };
        self.send_with(caller, channel, content, options).await
    }

    /// Sends a message as the caller, as a reply in a thread when
    /// `options.parent_id` is given (see [`SendOptions`]).
    pub async fn send_with(
        &self,
        caller: &Caller,
        channel: ChannelId,
        content: String,
        options: SendOptions,
    ) -> Result<Message> {
        let content = self.message_body(content)?;
        let extras = options.extras()?;
        let client_message_id = options
            .client_message_id
            .map(ClientMessageId::parse)
            .transpose()?;
        self.rate.check(Operation::Send, &caller.user_id)?;
        // The store refuses a sender who is not a member, and a parent
        // that breaks the thread rule, in the transaction that takes the
        // message's seq.
        let stored = self
            .store_message(
                NewMessage {
                    channel_id: channel,
                    sender: Sender::User(caller.user_id.clone()),
                    content,
                    client_message_id,
                },
                extras,
            )
            .await
            .map_err(unless_member(caller, channel))?;
        Ok(stored.message)
    }

    /// Stores a message (through the store's group commit; a reply in a
    /// transaction of its own) and publishes it when it is new.
    async fn store_message(&self, new: NewMessage, extras: MessageExtras) -> Result<StoredMessage> {
        let store = self.store.clone();
        self.commit(async move {
            let stored = if extras.parent_id.is_none() && extras.mentions.is_empty() {
                store.create_message(&new).await?
            } else {
                store.create_message_with(&new, &extras).await?
            };
            if !stored.created {
                return Ok((stored, None));
            }
            static STORED: OnceLock<metrics::Counter> = OnceLock::new();
            STORED
                .get_or_init(|| metrics::counter!("clacks_messages_stored_total"))
                .increment(1);
            let event = ChannelEvent {
                channel_id: stored.message.channel_id,
                seq: stored.message.seq,
                durable: true,
                at: stored.message.created_at,
                payload: EventPayload::MessageCreated {
                    message: stored.message.clone(),
                },
            };
            Ok((stored, Some(event)))
        })
        .await
    }

    /// Edits one of the caller's own messages (the store checks, with the
    /// edit, that the caller sent it and still is a member).
    pub async fn edit(&self, caller: &Caller, id: MessageId, content: String) -> Result<Message> {
        let content = self.message_body(content)?;
        self.rate.check(Operation::Edit, &caller.user_id)?;
        let store = self.store.clone();
        let editor = caller.user_id.clone();
        self.commit(async move {
            let (message, event) = store.edit_message(id, &editor, &content).await?;
            Ok((message, Some(event)))
        })
        .await
        .map_err(no_access_to_message)
    }

    /// Deletes one of the caller's own messages, leaving a tombstone (the
    /// store checks, with the delete, that the caller sent it and still is
    /// a member).
    pub async fn delete(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        self.rate.check(Operation::Delete, &caller.user_id)?;
        self.delete_message(id, Some(caller.user_id.clone()))
            .await
            .map_err(no_access_to_message)
    }

    /// Leaves a tombstone and publishes the deletion (once): by `user`
    /// (their own message, while a member), or by the application (None).
    async fn delete_message(&self, id: MessageId, user: Option<UserId>) -> Result<Message> {
        let store = self.store.clone();
        self.commit(async move {
            let actor = match &user {
                Some(user) => Actor::User(user),
                None => Actor::Application,
            };
            store.delete_message(id, actor).await
        })
        .await
    }

    /// Adds the caller's reaction `key` (an emoji or a short key, see
    /// [`ReactionKey`]) to a message of one of their channels, and
    /// publishes a `reaction_added` event with the key's new count.
    /// Idempotent per (caller, message, key): reacting again changes and
    /// publishes nothing. A message the caller may not see is refused as
    /// edits are (`FORBIDDEN`, whether it exists or not); a tombstone
    /// conflicts. Charged to the edit rate.
    pub async fn add_reaction(
        &self,
        caller: &Caller,
        id: MessageId,
        key: String,
    ) -> Result<Message> {
        self.change_reaction(caller, id, key, true).await
    }

    /// Takes back the caller's reaction (`reaction_removed`); the rules of
    /// [`Self::add_reaction`].
    pub async fn remove_reaction(
        &self,
        caller: &Caller,
        id: MessageId,
        key: String,
    ) -> Result<Message> {
        self.change_reaction(caller, id, key, false).await
    }

    async fn change_reaction(
        &self,
        caller: &Caller,
        id: MessageId,
        key: String,
        add: bool,
    ) -> Result<Message> {
        let key = ReactionKey::parse(key)?;
        self.rate.check(Operation::Edit, &caller.user_id)?;
        let store = self.store.clone();
        let user = caller.user_id.clone();
        self.commit(async move {
            // The store checks membership under the channel's seq lock.
            if add {
                store.add_reaction(id, &user, &key).await
            } else {
                store.remove_reaction(id, &user, &key).await
            }
        })
        .await
        .map_err(no_access_to_message)
    }

    /// The reactions on `message`, as the caller sees them (with whether
    /// they reacted). `message` is one the service gave the caller (its
    /// membership was checked when it was read); a tombstone has none.
    pub async fn reactions_for(&self, caller: &Caller, message: &Message) -> Result<Vec<Reaction>> {
        if message.is_deleted() {
            return Ok(Vec::new());
        }
        self.store.reactions(message.id, &caller.user_id).await
    }

    /// Moves the caller's read watermark forward (never back) and tells
    /// the other members.
    pub async fn mark_read(&self, caller: &Caller, channel: ChannelId, seq: Seq) -> Result<Member> {
        self.rate.check(Operation::MarkRead, &caller.user_id)?;
        let MarkedRead { member, moved } = self
            .store
            .mark_read(channel, &caller.user_id, seq)
            .await
            .map_err(unless_member(caller, channel))?;
        if moved {
            let event = self.ephemeral(
                channel,
                EventPayload::ReadReceipt {
                    user_id: caller.user_id.clone(),
                    last_read_seq: member.last_read_seq,
                },
            );
            self.publish(event);
        }
        Ok(member)
    }

    /// Broadcasts that the caller is typing. Ephemeral and throttled: calls
    /// within the typing interval of a channel return `false` and broadcast
    /// nothing (nor read the database); the broadcasts of one user, all
    /// channels together, are rate limited.
    pub async fn set_typing(&self, caller: &Caller, channel: ChannelId) -> Result<bool> {
        if !self.rate.typing_due(&caller.user_id, channel) {
            return Ok(false);
        }
        self.rate.check(Operation::Typing, &caller.user_id)?;
        self.require_member(caller, channel).await?;
        let event = self.ephemeral(
            channel,
            EventPayload::Typing {
                user_id: caller.user_id.clone(),
            },
        );
        self.publish(event);
        Ok(true)
    }

    pub async fn unread_count_for(&self, caller: &Caller, channel: ChannelId) -> Result<i64> {
        self.require_member(caller, channel).await?;
        self.store.unread_count(channel, &caller.user_id).await
    }

    /// Messages after the caller's read watermark that mention them (not
    /// their own, not deleted).
    pub async fn unread_mention_count_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
    ) -> Result<i64> {
        self.require_member(caller, channel).await?;
        self.store
            .unread_mention_count(channel, &caller.user_id)
            .await
    }

    pub async fn unread_messages_for(
        &self,
        caller: &Caller,
        limit: Option<u32>,
    ) -> Result<Vec<Message>> {
        self.store
            .unread_messages(&caller.user_id, self.limits.page(limit))
            .await
    }

    /// Who has read a message and when (the sender excluded).
    pub async fn seen_by(&self, caller: &Caller, id: MessageId) -> Result<Vec<SeenBy>> {
        let message = self.visible_message(caller, id).await?;
        let seen = self.store.seen_by(message.channel_id, message.seq).await?;
        Ok(seen
            .into_iter()
            .filter(|s| Some(&s.user_id) != message.sender.user_id())
            .collect())
    }

    /// Messages of a channel as seen by one member: `count` messages
    /// ending at seq `last` (inclusive; `last <= 0` means the newest),
    /// oldest first (the original schema's `message_view`).
    pub async fn message_views(
        &self,
        caller: &Caller,
        channel: ChannelId,
        viewer: &UserId,
        last: Seq,
        count: u32,
    ) -> Result<Vec<MessageView>> {
        self.require_member(caller, channel).await?;
        let Some(member) = self.store.member(channel, viewer).await? else {
            return Err(Error::NotFound(clacks_core::Entity::Member));
        };
        let before = if last > 0 {
            Some(last.saturating_add(1))
        } else {
            None
        };
        let mut messages = self
            .store
            .history(
                channel,
                HistoryPage::Before(before),
                self.limits.page(Some(count)),
            )
            .await?;
        messages.reverse();
        let marks: Vec<ReadMark> = self.store.read_marks(channel, viewer).await?;
        Ok(messages
            .into_iter()
            .map(|message| {
                let own = message.sender.user_id() == Some(viewer);
                let seen = own || member.last_read_seq >= message.seq;
                MessageView {
                    user_id: viewer.clone(),
                    seen_at: if seen {
                        ReadMark::seen_at(&marks, message.seq)
                    } else {
                        None
                    },
                    seen,
                    message,
                }
            })
            .collect())
    }

    /// Subscribes the caller to one channel, or to all of their channels
    /// (following joins and leaves live).
    ///
    /// The subscription registers with the hub first and membership is read
    /// second. A removal committed before the read is seen by it; one
    /// committed after publishes its `member_left` after the registration,
    /// so the hub delivers it and ends the subscription (or, for all
    /// channels, stops routing that channel). Checked the other way round,
    /// a removal in between would go unseen by both.
    pub async fn subscribe(
        &self,
        caller: &Caller,
        channel: Option<ChannelId>,
    ) -> Result<Subscription> {
        match channel {
            Some(channel) => {
                let subscription = self
                    .hub
                    .subscribe(caller.user_id.clone(), Interest::Channel(channel));
                // The baseline after this node's NATS interest in the
                // channel is live: an event committed after the read is
                // published after it, and reaches this node.
                self.hub.interest_ready().await;
                // The baseline before the membership: a removal committed
                // between the two reads is seen by the second, one after
                // both has a seq above the baseline and is delivered.
                let last = self
                    .store
                    .channel(channel)
                    .await
                    .map_err(unless_member(caller, channel))?
                    .last_seq;
                self.require_member(caller, channel).await?;
                self.hub.set_baseline(channel, last);
                Ok(subscription)
            }
            None => {
                // Register first, list second: a join committed in between
                // is routed by the hub itself, and a leave whose event
                // arrives before the list is routed is kept out by the hub.
                let subscription = self
                    .hub
                    .subscribe(caller.user_id.clone(), Interest::AllChannels(Vec::new()));
                // The user's membership changes reach this node before the
                // list is read: a join or leave after it is delivered.
                self.hub.interest_ready().await;
                let channels = self.store.user_channel_seqs(&caller.user_id).await?;
                let unbased = self.hub.add_channels(&subscription, &channels);
                // Each channel starts after the seq it was listed at: the
                // membership the list shows holds there, and a removal
                // after it is delivered as an event.
                for &(channel, listed_at) in &channels {
                    self.hub.set_baseline(channel, listed_at);
                }
                // An event committed after the list was read and published
                // before it was routed (or, with NATS, before this node's
                // interest in the channel was live) reached no one on this
                // node: where a channel is newer now than listed, the hub
                // reads the rest. So the newest seqs are read after the
                // interest is live, for every listed channel this node may
                // have just started receiving.
                let recheck = if self.hub.routes_by_interest() {
                    self.hub.interest_ready().await;
                    channels.iter().map(|(channel, _)| *channel).collect()
                } else {
                    unbased
                };
                if !recheck.is_empty() {
                    let newest = self.store.last_seqs(&recheck).await?;
                    self.hub.committed_since_listing(&newest);
                }
                Ok(subscription)
            }
        }
    }

    /// Subscribes the caller to the event stream of one channel (or of all
    /// their channels), resuming after the given seqs: everything durable
    /// after each `(channel, seq)` is replayed from the store first, then
    /// live events follow with no gap and no duplicate. Channels without a
    /// resume point start with live events only. The replay is read a page
    /// at a time as the stream is consumed, so any distance behind costs
    /// the same memory; [`EventStream::resumed_events`] says how long it is.
    pub async fn subscribe_events(
        &self,
        caller: &Caller,
        channel: Option<ChannelId>,
        resume: &[(ChannelId, Seq)],
    ) -> Result<EventStream> {
        if resume.len() > MAX_RESUME_POINTS {
            return Err(Error::invalid(
                "resume",
                format!("at most {MAX_RESUME_POINTS} channels may be resumed at once"),
            ));
        }
        let mut named = std::collections::HashSet::with_capacity(resume.len());
        for &(resume_channel, after) in resume {
            if channel.is_some_and(|c| c != resume_channel) {
                return Err(Error::invalid(
                    "resume",
                    "names a channel this subscription is not for",
                ));
            }
            if after < 0 {
                return Err(Error::invalid("afterSeq", "must not be negative"));
            }
            if !named.insert(resume_channel) {
                return Err(Error::invalid("resume", "names a channel twice"));
            }
        }
        let mut live = self.subscribe(caller, channel).await?;
        let mut resumed_events = 0;
        for &(resume_channel, after) in resume {
            // The subscription follows exactly the caller's channels.
            resumed_events += self
                .hub
                .resume(&mut live, resume_channel, after)
                .ok_or_else(|| Error::NotMember {
                    user: caller.user_id.clone(),
                    channel: resume_channel,
                })?;
        }
        self.rate.charge_replay(&caller.user_id, resumed_events)?;
        if resumed_events > 0 {
            metrics::counter!("clacks_resume_replays_total").increment(1);
            metrics::counter!("clacks_resume_replayed_events_total").increment(resumed_events);
        }
        Ok(EventStream::new(live, resumed_events))
    }

    // ----- management operations (the application's own server) -------

    pub async fn admin_create_channel(
        &self,
        display_name: String,
        initial_users: Vec<String>,
        metadata: Option<serde_json::Value>,
    ) -> Result<Channel> {
        let display_name = DisplayName::parse(display_name)?;
        if initial_users.len() > self.limits.max_initial_users {
            return Err(Error::invalid(
                "initialUsers",
                format!(
                    "at most {} users may be given",
                    self.limits.max_initial_users
                ),
            ));
        }
        let users = initial_users
            .into_iter()
            .map(UserId::parse)
            .collect::<Result<Vec<_>>>()?;
        let metadata = metadata.map(Metadata::parse).transpose()?;
        let store = self.store.clone();
        let hub = self.hub.clone();
        self.commit(async move {
            let channel = store
                .create_channel(&display_name, metadata.as_ref(), &users)
                .await?;
            // The initial members' "all channels" subscriptions learn of the
            // channel live. Not stored (the members start with the channel,
            // and its seqs with its first message); a subscription that
            // misses it lists the channel when it (re)subscribes. One per
            // user rather than a batch: nothing is replayed, `initialUsers`
            // is capped (`max_initial_users`), and clients of the original
            // schema learn of a new channel by their own `MemberJoined`.
            let joined: Vec<ChannelEvent> = users
                .into_iter()
                .map(|user_id| {
                    let mut event = ephemeral_event(
                        &hub,
                        channel.id,
                        EventPayload::MemberJoined {
                            user_id,
                            role: Role::default(),
                        },
                    );
                    event.seq = channel.last_seq;
                    event
                })
                .collect();
            Ok((channel, joined))
        })
        .await
    }

    pub async fn admin_list_channels(
        &self,
        after: Option<ChannelId>,
        limit: Option<u32>,
    ) -> Result<Vec<Channel>> {
        self.store
            .list_channels(ChannelPage {
                after_id: after,
                limit: self.limits.page(limit),
            })
            .await
    }

    /// Every channel, for the original unpaged `GET /channel`.
    pub async fn admin_all_channels(&self) -> Result<Vec<Channel>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_channels(ChannelPage {
                    after_id: after,
                    limit: clacks_store::MAX_PAGE,
                })
                .await?;
            let done = page.len() < clacks_store::MAX_PAGE as usize;
            after = page.last().map(|c| c.id);
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    pub async fn admin_channel(&self, channel: ChannelId) -> Result<Channel> {
        self.store.channel(channel).await
    }

    pub async fn admin_update_channel(
        &self,
        channel: ChannelId,
        display_name: Option<String>,
        metadata: Option<Option<serde_json::Value>>,
    ) -> Result<Channel> {
        if display_name.is_none() && metadata.is_none() {
            // An empty patch changes nothing (and announces nothing).
            return self.store.channel(channel).await;
        }
        let patch = ChannelPatch {
            display_name: display_name.map(DisplayName::parse).transpose()?,
            metadata: metadata
                .map(|m| m.map(Metadata::parse).transpose())
                .transpose()?,
        };
        let store = self.store.clone();
        self.commit(async move {
            let (channel, event) = store.update_channel(channel, &patch).await?;
            Ok((channel, Some(event)))
        })
        .await
    }

    pub async fn admin_delete_channel(&self, channel: ChannelId) -> Result<()> {
        let store = self.store.clone();
        let hub = self.hub.clone();
        self.commit(async move {
            let deleted = store.delete_channel(channel).await?;
            let mut event = ephemeral_event(&hub, channel, EventPayload::ChannelDeleted);
            event.seq = event.seq.max(deleted.channel.last_seq);
            Ok(((), Some(event)))
        })
        .await
    }

    pub async fn admin_members(&self, channel: ChannelId) -> Result<Vec<Member>> {
        self.store.members(channel).await
    }

    /// A page of a channel's members by user id (see `members_page_for`).
    pub async fn admin_members_page(
        &self,
        channel: ChannelId,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<Member>> {
        let after = after.map(UserId::parse).transpose()?;
        self.store
            .members_page(channel, after.as_ref(), self.limits.page(limit))
            .await
    }

    /// Adds and removes many members in one transaction. Idempotent: users
    /// already members (to add) or not members (to remove) are counted, not
    /// refused. At most `max_bulk_members` users in all; a user may not be
    /// both added and removed. The users added are one durable event, and
    /// the users removed another (`member_joined` / `member_left` for one
    /// user, `members_joined` / `members_left` for more), published after
    /// commit like a single add or removal, so live subscriptions follow at
    /// once; a channel's replay reads one event per request, not one per
    /// user.
    pub async fn admin_change_members(
        &self,
        channel: ChannelId,
        add: Vec<String>,
        remove: Vec<String>,
        role: Option<String>,
    ) -> Result<MembershipChange> {
        let max = self.limits.max_bulk_members;
        if add.len().saturating_add(remove.len()) > max {
            return Err(Error::invalid(
                "add",
                format!("at most {max} users may be added and removed in one request"),
            ));
        }
        let parse = |field: &'static str, users: Vec<String>| {
            users
                .into_iter()
                .enumerate()
                .map(|(n, user)| {
                    UserId::parse(user).map_err(|e| {
                        Error::invalid(
                            field,
                            format!("user {n} of `{field}` is not a valid id: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()
        };
        let add = parse("add", add)?;
        let remove = parse("remove", remove)?;
        let adding: std::collections::HashSet<&str> = add.iter().map(UserId::as_str).collect();
        if let Some(both) = remove.iter().find(|u| adding.contains(u.as_str())) {
            return Err(Error::invalid(
                "remove",
                format!("user {:?} is both added and removed", both.as_str()),
            ));
        }
        let role = role.map(Role::parse).transpose()?.unwrap_or_default();
        let store = self.store.clone();
        self.commit(async move {
            let mut change = store.change_members(channel, &add, &remove, &role).await?;
            let events = std::mem::take(&mut change.events);
            Ok((change, events))
        })
        .await
    }

    /// Adds a member (idempotent); returns the member and whether it is new.
    pub async fn admin_add_member(
        &self,
        channel: ChannelId,
        user: String,
        role: Option<String>,
    ) -> Result<(Member, bool)> {
        let user = UserId::parse(user)?;
        let role = role.map(Role::parse).transpose()?.unwrap_or_default();
        let store = self.store.clone();
        self.commit(async move {
            let added = store.add_member(channel, &user, &role).await?;
            let created = added.event.is_some();
            Ok(((added.member, created), added.event))
        })
        .await
    }

    pub async fn admin_remove_member(&self, channel: ChannelId, user: String) -> Result<()> {
        let user = UserId::parse(user)?;
        let store = self.store.clone();
        self.commit(async move {
            let event = store.remove_member(channel, &user).await?;
            Ok(((), Some(event)))
        })
        .await
    }

    /// Posts a message as a member, or as the system when `sender` is None.
    /// No rate limit: the application's server is trusted.
    pub async fn admin_post_message(
        &self,
        channel: ChannelId,
        sender: Option<String>,
        content: String,
        client_message_id: Option<String>,
    ) -> Result<(Message, bool)> {
        let options = SendOptions {
            client_message_id,
            ..SendOptions::default()
        };
        self.admin_post_message_with(channel, sender, content, options)
            .await
    }

    /// [`Self::admin_post_message`], as a reply in a thread with
    /// `options.parent_id` and with `options.mentions` (the rules of
    /// [`SendOptions`]).
    pub async fn admin_post_message_with(
        &self,
        channel: ChannelId,
        sender: Option<String>,
        content: String,
        options: SendOptions,
    ) -> Result<(Message, bool)> {
        let content = self.message_body(content)?;
        let extras = options.extras()?;
        let client_message_id = options
            .client_message_id
            .map(ClientMessageId::parse)
            .transpose()?;
        let sender = match sender {
            // A member: the store checks it with the message, as for clients.
            Some(user) => Sender::User(UserId::parse(user)?),
            None => Sender::System,
        };
        let stored = self
            .store_message(
                NewMessage {
                    channel_id: channel,
                    sender,
                    content,
                    client_message_id,
                },
                extras,
            )
            .await?;
        Ok((stored.message, stored.created))
    }

    pub async fn admin_history(
        &self,
        channel: ChannelId,
        request: HistoryRequest,
    ) -> Result<Vec<Message>> {
        self.store.channel(channel).await?;
        let page = self.history_page(request)?;
        self.store
            .history(channel, page, self.limits.page(request.limit))
            .await
    }

    /// Full-text search for the application: in one channel, in the
    /// channels of one user (`user`: as that user would search), or
    /// everywhere. A channel and a user together: that channel, which the
    /// user must be a member of (`NotMember`).
    pub async fn admin_search(
        &self,
        request: &SearchRequest,
        user: Option<String>,
    ) -> Result<SearchResults> {
        let input = self.search_input(request)?;
        let user = user.map(UserId::parse).transpose()?;
        let scope = match (request.channel, user) {
            (Some(channel), Some(user)) => {
                self.store.channel(channel).await?;
                if self.store.member(channel, &user).await?.is_none() {
                    return Err(Error::NotMember { user, channel });
                }
                SearchScope::Channel(channel)
            }
            (Some(channel), None) => {
                self.store.channel(channel).await?;
                SearchScope::Channel(channel)
            }
            (None, Some(user)) => SearchScope::MemberOf(user),
            (None, None) => SearchScope::All,
        };
        self.search_in(scope, input).await
    }

    pub async fn admin_delete_message(&self, channel: ChannelId, id: MessageId) -> Result<Message> {
        let message = self.store.message(id).await?;
        if message.channel_id != channel {
            return Err(Error::NotFound(clacks_core::Entity::Message));
        }
        self.delete_message(id, None).await
    }

    pub async fn admin_user_channels(&self, user: String) -> Result<Vec<ChannelSummary>> {
        let user = UserId::parse(user)?;
        self.store.user_channels(&user).await
    }

    pub fn admin_mint_token(&self, user: String, request: TokenRequest) -> Result<MintedToken> {
        self.auth.mint_for(user, request, &self.limits)
    }

    /// Closes every live connection of the user on every node; returns how
    /// many were closed.
    pub async fn admin_disconnect_user(&self, user: String) -> Result<usize> {
        let user = UserId::parse(user)?;
        let local = self
            .connections
            .disconnect_user(&user, CloseReason::ForcedDisconnect);
        let remote = match &self.bus {
            Some(bus) => bus.disconnect_user(&user).await,
            None => 0,
        };
        Ok(local + remote)
    }
}

/// Publishes committed events to this node's subscribers and the other
/// nodes.
struct Publisher {
    hub: Arc<Hub>,
    bus: Option<Arc<NatsBus>>,
    webhook_wake: Arc<tokio::sync::Notify>,
    search_pending: Arc<PendingChannels>,
}

impl Publisher {
    fn publish(&self, event: ChannelEvent) {
        static PUBLISHED: OnceLock<metrics::Counter> = OnceLock::new();
        // A handle looked up once: `counter!` with a name searches the
        // registry on every call, and this runs for every event.
        PUBLISHED
            .get_or_init(|| metrics::counter!("clacks_events_published_total"))
            .increment(1);
        if let Some(bus) = &self.bus {
            bus.publish(&event);
        }
        if event.durable || matches!(event.payload, EventPayload::ChannelDeleted) {
            // Its outbox row committed with it.
            self.webhook_wake.notify_one();
        }
        if matches!(
            event.payload,
            EventPayload::MessageCreated { .. }
                | EventPayload::MessageEdited { .. }
                | EventPayload::MessageDeleted { .. }
        ) {
            self.search_pending.mark(event.channel_id);
        }
        self.hub.publish(event);
    }
}

/// A live-only event, positioned at the channel's newest seq on this node.
pub(crate) fn ephemeral_event(
    hub: &Hub,
    channel: ChannelId,
    payload: EventPayload,
) -> ChannelEvent {
    ChannelEvent {
        channel_id: channel,
        seq: hub.last_seq(channel),
        durable: false,
        at: now_ms(),
        payload,
    }
}
