//! Store operations that run to the end even when their caller goes away.
//!
//! Clients drop requests all the time (a closed tab, a `complete` during a
//! resume), and with them the futures of the store operations they were
//! waiting on. sqlx's drivers do not all survive that:
//! - MySQL (launchbadge/sqlx#563) is not safe to cancel at all: a statement
//!   dropped in flight leaves its connection mid-protocol. Tried on MariaDB
//!   with one connection and requests dropped at random points
//!   (`storage::requests_dropped_midway_*`): the connection either
//!   went back to the pool inside a transaction the dropped request began,
//!   so later plain reads on it saw a stale snapshot, or never came back
//!   (sqlx's release check waited on it for as long as we watched, over
//!   90 s): one connection lost per unlucky disconnect, until none is left.
//! - PostgreSQL: `begin` has a guard meant to roll back a dropped `BEGIN`,
//!   but it does nothing for an outermost transaction (it only acts at a
//!   depth above zero, and the depth is raised after the `BEGIN` returns):
//!   the same test saw stale snapshots within 60 rounds. Worse than stale
//!   reads, later statements outside a transaction on that connection
//!   would commit or roll back with whatever ends the leftover one.
//! - SQLite: the same leftover transaction, handled by the pool's release
//!   check as well (see `sqlite.rs`).
//!
//! Each operation therefore runs in a task of its own: a caller that went
//! away leaves it to finish, commit or roll back, and hand its connection
//! back whole. A task costs about a microsecond against a round trip to the
//! database.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use clacks_core::{
    Channel, ChannelEvent, ChannelId, ChannelPage, ChannelSummary, DisplayName, Error, HistoryPage,
    Member, Message, MessageBody, MessageId, Metadata, Reaction, ReactionKey, ReadMark, Result,
    Role, SearchQuery, SeenBy, Seq, UserId,
};

use crate::{
    Actor, AddedMember, Backend, ChannelPatch, DeletedChannel, MarkedRead, MembershipChange,
    MessageExtras, NewMessage, PoolStats, SearchHit, SearchIndexed, SearchPageRequest, SearchScope,
    Store, StoredMessage,
};

/// A store whose operations finish even when their caller is dropped.
pub(crate) struct Detached<S> {
    inner: Arc<S>,
}

impl<S: Store> Detached<S> {
    pub(crate) fn new(inner: S) -> Self {
        Detached {
            inner: Arc::new(inner),
        }
    }

    async fn run<T, F, Fut>(&self, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<S>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        tokio::spawn(operation(self.inner.clone()))
            .await
            .map_err(|e| Error::Internal(format!("a database operation failed to finish: {e}")))?
    }
}

#[async_trait]
impl<S: Store> Store for Detached<S> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<()> {
        self.run(|s| async move { s.migrate().await }).await
    }

    async fn ping(&self) -> Result<()> {
        self.run(|s| async move { s.ping().await }).await
    }

    async fn close(&self) {
        self.inner.close().await
    }

    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }

    fn message_writer_busy(&self) -> std::time::Duration {
        self.inner.message_writer_busy()
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.run(|s| async move { s.setting(&name).await }).await
    }

    async fn init_setting(&self, name: &str, value: &str) -> Result<String> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(|s| async move { s.init_setting(&name, &value).await })
            .await
    }

    async fn create_channel(
        &self,
        display_name: &DisplayName,
        metadata: Option<&Metadata>,
        initial_members: &[UserId],
    ) -> Result<Channel> {
        let display_name = display_name.clone();
        let metadata = metadata.cloned();
        let members = initial_members.to_vec();
        self.run(|s| async move {
            s.create_channel(&display_name, metadata.as_ref(), &members)
                .await
        })
        .await
    }

    async fn update_channel(
        &self,
        id: ChannelId,
        patch: &ChannelPatch,
    ) -> Result<(Channel, ChannelEvent)> {
        let patch = patch.clone();
        self.run(|s| async move { s.update_channel(id, &patch).await })
            .await
    }

    async fn delete_channel(&self, id: ChannelId) -> Result<DeletedChannel> {
        self.run(|s| async move { s.delete_channel(id).await })
            .await
    }

    async fn channel(&self, id: ChannelId) -> Result<Channel> {
        self.run(|s| async move { s.channel(id).await }).await
    }

    async fn list_channels(&self, page: ChannelPage) -> Result<Vec<Channel>> {
        self.run(|s| async move { s.list_channels(page).await })
            .await
    }

    async fn add_member(&self, id: ChannelId, user: &UserId, role: &Role) -> Result<AddedMember> {
        let (user, role) = (user.clone(), role.clone());
        self.run(|s| async move { s.add_member(id, &user, &role).await })
            .await
    }

    async fn remove_member(&self, id: ChannelId, user: &UserId) -> Result<ChannelEvent> {
        let user = user.clone();
        self.run(|s| async move { s.remove_member(id, &user).await })
            .await
    }

    async fn change_members(
        &self,
        id: ChannelId,
        add: &[UserId],
        remove: &[UserId],
        role: &Role,
    ) -> Result<MembershipChange> {
        let (add, remove, role) = (add.to_vec(), remove.to_vec(), role.clone());
        self.run(|s| async move { s.change_members(id, &add, &remove, &role).await })
            .await
    }

    async fn members_page(
        &self,
        id: ChannelId,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<Member>> {
        let after = after.cloned();
        self.run(|s| async move { s.members_page(id, after.as_ref(), limit).await })
            .await
    }

    async fn members(&self, id: ChannelId) -> Result<Vec<Member>> {
        self.run(|s| async move { s.members(id).await }).await
    }

    async fn member(&self, id: ChannelId, user: &UserId) -> Result<Option<Member>> {
        let user = user.clone();
        self.run(|s| async move { s.member(id, &user).await }).await
    }

    async fn user_channels(&self, user: &UserId) -> Result<Vec<ChannelSummary>> {
        let user = user.clone();
        self.run(|s| async move { s.user_channels(&user).await })
            .await
    }

    async fn user_channel_seqs(&self, user: &UserId) -> Result<Vec<(ChannelId, Seq)>> {
        let user = user.clone();
        self.run(|s| async move { s.user_channel_seqs(&user).await })
            .await
    }

    async fn small_channels_of(
        &self,
        user: &UserId,
        max_members: u32,
        limit: u32,
    ) -> Result<Vec<ChannelId>> {
        let user = user.clone();
        self.run(move |s| async move { s.small_channels_of(&user, max_members, limit).await })
            .await
    }

    async fn last_seqs(&self, channels: &[ChannelId]) -> Result<Vec<(ChannelId, Seq)>> {
        let channels = channels.to_vec();
        self.run(|s| async move { s.last_seqs(&channels).await })
            .await
    }

    async fn create_message(&self, new: &NewMessage) -> Result<StoredMessage> {
        let new = new.clone();
        self.run(|s| async move { s.create_message(&new).await })
            .await
    }

    async fn edit_message(
        &self,
        id: MessageId,
        editor: &UserId,
        content: &MessageBody,
    ) -> Result<(Message, ChannelEvent)> {
        let (editor, content) = (editor.clone(), content.clone());
        self.run(|s| async move { s.edit_message(id, &editor, &content).await })
            .await
    }

    async fn delete_message(
        &self,
        id: MessageId,
        by: Actor<'_>,
    ) -> Result<(Message, Option<ChannelEvent>)> {
        let by = by.user().cloned();
        self.run(|s| async move {
            let actor = by.as_ref().map_or(Actor::Application, Actor::User);
            s.delete_message(id, actor).await
        })
        .await
    }

    async fn create_message_with(
        &self,
        new: &NewMessage,
        extras: &MessageExtras,
    ) -> Result<StoredMessage> {
        let (new, extras) = (new.clone(), extras.clone());
        self.run(|s| async move { s.create_message_with(&new, &extras).await })
            .await
    }

    async fn unread_mention_count(&self, channel: ChannelId, user: &UserId) -> Result<i64> {
        let user = user.clone();
        self.run(|s| async move { s.unread_mention_count(channel, &user).await })
            .await
    }

    async fn thread(
        &self,
        parent: MessageId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.run(|s| async move { s.thread(parent, page, limit).await })
            .await
    }

    async fn add_reaction(
        &self,
        message: MessageId,
        user: &UserId,
        key: &ReactionKey,
    ) -> Result<(Message, Option<ChannelEvent>)> {
        let (user, key) = (user.clone(), key.clone());
        self.run(|s| async move { s.add_reaction(message, &user, &key).await })
            .await
    }

    async fn remove_reaction(
        &self,
        message: MessageId,
        user: &UserId,
        key: &ReactionKey,
    ) -> Result<(Message, Option<ChannelEvent>)> {
        let (user, key) = (user.clone(), key.clone());
        self.run(|s| async move { s.remove_reaction(message, &user, &key).await })
            .await
    }

    async fn reactions(&self, message: MessageId, viewer: &UserId) -> Result<Vec<Reaction>> {
        let viewer = viewer.clone();
        self.run(|s| async move { s.reactions(message, &viewer).await })
            .await
    }

    async fn message(&self, id: MessageId) -> Result<Message> {
        self.run(|s| async move { s.message(id).await }).await
    }

    async fn message_by_seq(&self, channel: ChannelId, seq: Seq) -> Result<Message> {
        self.run(|s| async move { s.message_by_seq(channel, seq).await })
            .await
    }

    async fn search_messages(
        &self,
        query: &SearchQuery,
        scope: &SearchScope,
        page: SearchPageRequest,
    ) -> Result<Vec<SearchHit>> {
        let (query, scope) = (query.clone(), scope.clone());
        self.run(|s| async move { s.search_messages(&query, &scope, page).await })
            .await
    }

    async fn history(
        &self,
        channel: ChannelId,
        page: HistoryPage,
        limit: u32,
    ) -> Result<Vec<Message>> {
        self.run(|s| async move { s.history(channel, page, limit).await })
            .await
    }

    async fn batch_users(
        &self,
        id: ChannelId,
        seq: Seq,
        only: Option<&UserId>,
    ) -> Result<Vec<UserId>> {
        let only = only.cloned();
        self.run(|s| async move { s.batch_users(id, seq, only.as_ref()).await })
            .await
    }

    async fn events_after(
        &self,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<ChannelEvent>> {
        self.run(|s| async move { s.events_after(channel, after, limit).await })
            .await
    }

    async fn mark_read(&self, channel: ChannelId, user: &UserId, seq: Seq) -> Result<MarkedRead> {
        let user = user.clone();
        self.run(|s| async move { s.mark_read(channel, &user, seq).await })
            .await
    }

    async fn unread_count(&self, channel: ChannelId, user: &UserId) -> Result<i64> {
        let user = user.clone();
        self.run(|s| async move { s.unread_count(channel, &user).await })
            .await
    }

    async fn unread_messages(&self, user: &UserId, limit: u32) -> Result<Vec<Message>> {
        let user = user.clone();
        self.run(|s| async move { s.unread_messages(&user, limit).await })
            .await
    }

    async fn seen_by(&self, channel: ChannelId, seq: Seq) -> Result<Vec<SeenBy>> {
        self.run(|s| async move { s.seen_by(channel, seq).await })
            .await
    }

    async fn read_marks(&self, channel: ChannelId, user: &UserId) -> Result<Vec<ReadMark>> {
        let user = user.clone();
        self.run(|s| async move { s.read_marks(channel, &user).await })
            .await
    }

    async fn index_search(&self, scope: &SearchScope, budget: u32) -> Result<SearchIndexed> {
        let scope = scope.clone();
        self.run(|s| async move { s.index_search(&scope, budget).await })
            .await
    }

    async fn rows_referencing(&self, channel: ChannelId) -> Result<i64> {
        self.run(|s| async move { s.rows_referencing(channel).await })
            .await
    }
}

#[async_trait]
impl<S: Store> crate::webhooks::WebhookStore for Detached<S> {
    async fn create_webhook(
        &self,
        new: &crate::webhooks::NewWebhook,
    ) -> Result<clacks_core::Webhook> {
        let new = new.clone();
        self.run(|s| async move { s.create_webhook(&new).await })
            .await
    }

    async fn webhooks(&self) -> Result<Vec<clacks_core::Webhook>> {
        self.run(|s| async move { s.webhooks().await }).await
    }

    async fn webhook(&self, id: i64) -> Result<clacks_core::Webhook> {
        self.run(|s| async move { s.webhook(id).await }).await
    }

    async fn update_webhook(
        &self,
        id: i64,
        patch: &crate::webhooks::WebhookPatch,
    ) -> Result<clacks_core::Webhook> {
        let patch = patch.clone();
        self.run(|s| async move { s.update_webhook(id, &patch).await })
            .await
    }

    async fn delete_webhook(&self, id: i64) -> Result<()> {
        self.run(|s| async move { s.delete_webhook(id).await })
            .await
    }

    async fn webhook_attempts(
        &self,
        id: i64,
        limit: u32,
    ) -> Result<Vec<clacks_core::WebhookAttempt>> {
        self.run(|s| async move { s.webhook_attempts(id, limit).await })
            .await
    }

    async fn route_webhook_outbox(&self, limit: u32, unread_delay_ms: i64) -> Result<usize> {
        self.run(|s| async move { s.route_webhook_outbox(limit, unread_delay_ms).await })
            .await
    }

    async fn due_unread_checks(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<crate::webhooks::UnreadCheck>> {
        self.run(|s| async move { s.due_unread_checks(now, limit).await })
            .await
    }

    async fn unread_members(&self, check: &crate::webhooks::UnreadCheck) -> Result<Vec<UserId>> {
        let check = check.clone();
        self.run(|s| async move { s.unread_members(&check).await })
            .await
    }

    async fn complete_unread_check(
        &self,
        check: &crate::webhooks::UnreadCheck,
        users: &[UserId],
    ) -> Result<usize> {
        let (check, users) = (check.clone(), users.to_vec());
        self.run(|s| async move { s.complete_unread_check(&check, &users).await })
            .await
    }

    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<crate::webhooks::DueDelivery>> {
        let owner = owner.to_owned();
        self.run(|s| async move {
            s.claim_webhook_deliveries(&owner, now, lease_until, limit)
                .await
        })
        .await
    }

    async fn finish_webhook_attempt(
        &self,
        delivery: i64,
        owner: &str,
        record: &crate::webhooks::AttemptRecord,
    ) -> Result<bool> {
        let (owner, record) = (owner.to_owned(), record.clone());
        self.run(|s| async move { s.finish_webhook_attempt(delivery, &owner, &record).await })
            .await
    }

    async fn release_webhook_leases(&self, owner: &str) -> Result<()> {
        let owner = owner.to_owned();
        self.run(|s| async move { s.release_webhook_leases(&owner).await })
            .await
    }

    async fn prune_webhook_deliveries(&self, before: i64) -> Result<u64> {
        self.run(|s| async move { s.prune_webhook_deliveries(before).await })
            .await
    }
}
