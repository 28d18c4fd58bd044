use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clacks_core::{
    Channel, ChannelEvent, ChannelId, ChannelPage, ChannelSummary, ClientMessageId, DisplayName,
    Error, EventPayload, HistoryPage, Member, Message, MessageBody, MessageId, Metadata, ReadMark,
    Result, Role, SeenBy, Sender, Seq, UserId, now_ms,
};
use clacks_delivery::{
    CloseReason, ConnectionGuard, Connections, Hub, Interest, NatsBus, Refusal, Subscription,
};
use clacks_store::{ChannelPatch, MarkedRead, NewMessage, Store, StoredMessage};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{Auth, Caller, MintedToken, TokenRequest};
use crate::limits::Limits;
use crate::stream::EventStream;

/// Most events one subscription may replay when it resumes; a client
/// further behind reloads history instead.
pub const MAX_RESUME_EVENTS: usize = 100_000;

/// A page of history: `before` (newest first, the default) or `after`
/// (oldest first) a seq.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryRequest {
    pub before: Option<Seq>,
    pub after: Option<Seq>,
    pub limit: Option<u32>,
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
    send_limiter: DefaultKeyedRateLimiter<UserId>,
    typing_limiter: DefaultKeyedRateLimiter<(UserId, ChannelId)>,
}

impl ChatService {
    pub fn new(parts: ChatServiceParts) -> Arc<Self> {
        let limits = parts.limits;
        let send_quota = Quota::per_second(limits.send_per_second).allow_burst(limits.send_burst);
        let typing_quota = Quota::with_period(limits.typing_interval.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        Arc::new(ChatService {
            store: parts.store,
            hub: parts.hub,
            connections: parts.connections,
            auth: parts.auth,
            bus: parts.bus,
            send_limiter: RateLimiter::keyed(send_quota),
            typing_limiter: RateLimiter::keyed(typing_quota),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Succeeds when the database answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
    }

    /// Forgets idle rate-limiter state; call periodically.
    pub fn housekeeping(&self) {
        self.send_limiter.retain_recent();
        self.typing_limiter.retain_recent();
    }

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
        self.hub.publish(event);
    }

    fn ephemeral(&self, channel: ChannelId, payload: EventPayload) -> ChannelEvent {
        ChannelEvent {
            channel_id: channel,
            seq: self.hub.last_seq(channel),
            durable: false,
            at: now_ms(),
            payload,
        }
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

    /// The caller's membership of `channel`. A non-member learns nothing,
    /// not even whether the channel exists.
    async fn require_member(&self, caller: &Caller, channel: ChannelId) -> Result<Member> {
        self.store
            .member(channel, &caller.user_id)
            .await?
            .ok_or_else(|| Error::forbidden("not a member of this channel"))
    }

    /// A message the caller may see (a member of its channel).
    async fn visible_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let message = match self.store.message(id).await {
            Ok(message) => message,
            Err(Error::NotFound(_)) => return Err(Error::forbidden("no access to this message")),
            Err(e) => return Err(e),
        };
        self.require_member(caller, message.channel_id).await?;
        Ok(message)
    }

    fn history_page(&self, request: HistoryRequest) -> Result<HistoryPage> {
        match (request.before, request.after) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "history",
                "give either before or after, not both",
            )),
            (None, Some(after)) => Ok(HistoryPage::After(after.max(0))),
            (before, None) => Ok(HistoryPage::Before(before)),
        }
    }

    // ----- client operations (an authenticated end user) ---------------

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

    /// Sends a message as the caller. With a client message id, a retry
    /// returns the original message instead of storing a duplicate.
    pub async fn send(
        &self,
        caller: &Caller,
        channel: ChannelId,
        content: String,
        client_message_id: Option<String>,
    ) -> Result<Message> {
        let content = self.message_body(content)?;
        let client_message_id = client_message_id.map(ClientMessageId::parse).transpose()?;
        // Membership is checked by the store, in the transaction that stores
        // the message (see NewMessage::require_member).
        if let Err(not_until) = self.send_limiter.check_key(&caller.user_id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("clacks_rate_limited_total", "what" => "send").increment(1);
            return Err(Error::RateLimited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            });
        }
        let stored = self
            .store
            .create_message(&NewMessage {
                channel_id: channel,
                sender: Sender::User(caller.user_id.clone()),
                content,
                client_message_id,
                require_member: true,
            })
            .await?;
        Ok(self.after_store(stored))
    }

    fn after_store(&self, stored: StoredMessage) -> Message {
        if stored.created {
            static STORED: OnceLock<metrics::Counter> = OnceLock::new();
            STORED
                .get_or_init(|| metrics::counter!("clacks_messages_stored_total"))
                .increment(1);
            self.publish(ChannelEvent {
                channel_id: stored.message.channel_id,
                seq: stored.message.seq,
                durable: true,
                at: stored.message.created_at,
                payload: EventPayload::MessageCreated {
                    message: stored.message.clone(),
                },
            });
        }
        stored.message
    }

    /// Edits one of the caller's own messages.
    pub async fn edit(&self, caller: &Caller, id: MessageId, content: String) -> Result<Message> {
        let content = self.message_body(content)?;
        let message = self.visible_message(caller, id).await?;
        if message.sender.user_id() != Some(&caller.user_id) {
            return Err(Error::forbidden("only the sender may edit a message"));
        }
        let (message, event) = self.store.edit_message(id, &content).await?;
        self.publish(event);
        Ok(message)
    }

    /// Deletes one of the caller's own messages, leaving a tombstone.
    pub async fn delete(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let message = self.visible_message(caller, id).await?;
        if message.sender.user_id() != Some(&caller.user_id) {
            return Err(Error::forbidden("only the sender may delete a message"));
        }
        let (message, event) = self.store.delete_message(id).await?;
        if let Some(event) = event {
            self.publish(event);
        }
        Ok(message)
    }

    /// Moves the caller's read watermark forward (never back) and tells
    /// the other members.
    pub async fn mark_read(&self, caller: &Caller, channel: ChannelId, seq: Seq) -> Result<Member> {
        self.require_member(caller, channel).await?;
        let MarkedRead { member, moved } =
            self.store.mark_read(channel, &caller.user_id, seq).await?;
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
    /// within the typing interval return `false` and broadcast nothing.
    pub async fn set_typing(&self, caller: &Caller, channel: ChannelId) -> Result<bool> {
        self.require_member(caller, channel).await?;
        if self
            .typing_limiter
            .check_key(&(caller.user_id.clone(), channel))
            .is_err()
        {
            return Ok(false);
        }
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
    pub async fn subscribe(
        &self,
        caller: &Caller,
        channel: Option<ChannelId>,
    ) -> Result<Subscription> {
        match channel {
            Some(channel) => {
                self.require_member(caller, channel).await?;
                let subscription = self
                    .hub
                    .subscribe(caller.user_id.clone(), Interest::Channel(channel));
                // Read after registering: what commits later is delivered live.
                let last = self.store.channel(channel).await?.last_seq;
                self.hub.set_baseline(channel, last);
                Ok(subscription)
            }
            None => {
                // Register first, list second: a join committed in between
                // is then routed by the hub itself, never missed.
                let subscription = self
                    .hub
                    .subscribe(caller.user_id.clone(), Interest::AllChannels(Vec::new()));
                let summaries = self.store.user_channels(&caller.user_id).await?;
                let channels: Vec<ChannelId> = summaries.iter().map(|s| s.channel.id).collect();
                self.hub.add_channels(&subscription, &channels);
                for summary in &summaries {
                    self.hub
                        .set_baseline(summary.channel.id, summary.channel.last_seq);
                }
                Ok(subscription)
            }
        }
    }

    /// Subscribes the caller to the event stream of one channel (or of all
    /// their channels), resuming after the given seqs: everything durable
    /// after each `(channel, seq)` is replayed from the store first, then
    /// live events follow with no gap and no duplicate. Channels without a
    /// resume point start with live events only.
    pub async fn subscribe_events(
        &self,
        caller: &Caller,
        channel: Option<ChannelId>,
        resume: &[(ChannelId, Seq)],
    ) -> Result<EventStream> {
        let live = self.subscribe(caller, channel).await?;
        let mut replay = Vec::new();
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
            self.require_member(caller, resume_channel).await?;
            let mut cursor = after;
            loop {
                let page = self
                    .store
                    .events_after(resume_channel, cursor, clacks_store::MAX_PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                cursor = last.seq;
                let full = page.len() >= clacks_store::MAX_PAGE as usize;
                replay.extend(page);
                if replay.len() > MAX_RESUME_EVENTS {
                    return Err(Error::invalid(
                        "afterSeq",
                        format!(
                            "more than {MAX_RESUME_EVENTS} events were missed; load history, then resume from a recent seq"
                        ),
                    ));
                }
                if !full {
                    break;
                }
            }
        }
        if !replay.is_empty() {
            metrics::counter!("clacks_resume_replays_total").increment(1);
            metrics::counter!("clacks_resume_replayed_events_total").increment(replay.len() as u64);
        }
        Ok(EventStream::new(live, replay, resume))
    }

    /// Durable events after `after` in `channel`, for a resuming member.
    pub async fn replay_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<ChannelEvent>> {
        self.require_member(caller, channel).await?;
        self.store.events_after(channel, after, limit).await
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
        self.store
            .create_channel(&display_name, metadata.as_ref(), &users)
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
        let patch = ChannelPatch {
            display_name: display_name.map(DisplayName::parse).transpose()?,
            metadata: metadata
                .map(|m| m.map(Metadata::parse).transpose())
                .transpose()?,
        };
        let (channel, event) = self.store.update_channel(channel, &patch).await?;
        self.publish(event);
        Ok(channel)
    }

    pub async fn admin_delete_channel(&self, channel: ChannelId) -> Result<()> {
        let deleted = self.store.delete_channel(channel).await?;
        let mut event = self.ephemeral(channel, EventPayload::ChannelDeleted);
        event.seq = event.seq.max(deleted.channel.last_seq);
        self.publish(event);
        Ok(())
    }

    pub async fn admin_members(&self, channel: ChannelId) -> Result<Vec<Member>> {
        self.store.members(channel).await
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
        let added = self.store.add_member(channel, &user, &role).await?;
        let created = added.event.is_some();
        if let Some(event) = added.event {
            self.publish(event);
        }
        Ok((added.member, created))
    }

    pub async fn admin_remove_member(&self, channel: ChannelId, user: String) -> Result<()> {
        let user = UserId::parse(user)?;
        let event = self.store.remove_member(channel, &user).await?;
        self.publish(event);
        Ok(())
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
        let content = self.message_body(content)?;
        let client_message_id = client_message_id.map(ClientMessageId::parse).transpose()?;
        let sender = match sender {
            Some(user) => {
                let user = UserId::parse(user)?;
                self.store.channel(channel).await?;
                if self.store.member(channel, &user).await?.is_none() {
                    return Err(Error::Conflict(format!(
                        "{user} is not a member of channel {channel}"
                    )));
                }
                Sender::User(user)
            }
            None => Sender::System,
        };
        let stored = self
            .store
            .create_message(&NewMessage {
                channel_id: channel,
                sender,
                content,
                client_message_id,
                require_member: false,
            })
            .await?;
        let created = stored.created;
        Ok((self.after_store(stored), created))
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

    pub async fn admin_delete_message(&self, channel: ChannelId, id: MessageId) -> Result<Message> {
        let message = self.store.message(id).await?;
        if message.channel_id != channel {
            return Err(Error::NotFound(clacks_core::Entity::Message));
        }
        let (message, event) = self.store.delete_message(id).await?;
        if let Some(event) = event {
            self.publish(event);
        }
        Ok(message)
    }

    pub async fn admin_user_channels(&self, user: String) -> Result<Vec<ChannelSummary>> {
        let user = UserId::parse(user)?;
        self.store.user_channels(&user).await
    }

    pub fn admin_mint_token(&self, user: String, request: TokenRequest) -> Result<MintedToken> {
        let user = UserId::parse(user)?;
        self.auth.mint(
            &user,
            request,
            self.limits.default_token_ttl,
            self.limits.max_token_ttl,
        )
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
