//! The GraphQL schema: the original v0 schema verbatim (snake_case names
//! kept, marked deprecated where a camelCase twin exists) plus the chat API
//! of SPEC section 3. Resolvers parse arguments, call the service and map
//! the result; every rule lives in `clacks-service`.
//!
//! Times are whole seconds since the Unix epoch (the original `sent_at`
//! convention); positions in a channel are `seq`s.

use std::sync::Arc;

use async_graphql::{
    Context, Enum, ID, InputObject, Interface, Json, Object, Result, Schema, SchemaBuilder,
    Subscription, TypeDirective,
};
use clacks_core::{
    Channel, ChannelEvent, ChannelId, ChannelSummary, EventPayload, Member, Message, MessageId,
    Reaction, SeenBy, Sender, Seq, UserId,
};
use clacks_delivery::{Delivery, EndReason};
use clacks_service::{
    Caller, ChatService, HistoryRequest, PresenceStatus, SearchRequest, SendOptions,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::OnceCell;

use crate::error::gql;
use crate::guard::{FetchBudget, Refusal};
use crate::render::{FeedHandoff, FeedSlot};

pub type ClacksSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Who is asking: set per request (HTTP) or per connection (WebSocket).
/// `None` when no token was given: every field but `__typename` (and
/// introspection, when it is public) then fails with `UNAUTHENTICATED`.
#[derive(Clone)]
pub struct RequestCaller(pub Option<Arc<Caller>>);

/// Lets a subscription close its whole WebSocket connection (a slow
/// consumer whose queue overflowed). Absent over HTTP.
pub trait ConnectionControl: Send + Sync {
    fn close(&self, code: u16, reason: &'static str);
}

#[derive(Clone)]
pub struct Control(pub Arc<dyn ConnectionControl>);

pub fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
}

/// The schema. Depth and cost are the guard's to check (before the engine
/// validates anything), so the engine's own limits stay off.
pub fn build(service: Arc<ChatService>) -> ClacksSchema {
    builder().data(service).finish()
}

/// The schema for callers without a token: the same, without the "Did you
/// mean ...?" suggestions that would describe it to strangers.
pub fn build_anonymous(service: Arc<ChatService>) -> ClacksSchema {
    builder().data(service).disable_suggestions().finish()
}

/// The served schema as SDL (what `schema.graphql` holds).
pub fn sdl() -> String {
    builder().finish().sdl()
}

fn service<'a>(ctx: &Context<'a>) -> Result<&'a Arc<ChatService>> {
    ctx.data::<Arc<ChatService>>().map_err(|_| {
        gql(clacks_core::Error::Internal(
            "schema built without service".into(),
        ))
    })
}

/// The authenticated caller, or `UNAUTHENTICATED`.
fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Arc<Caller>> {
    ctx.data_opt::<RequestCaller>()
        .and_then(|c| c.0.as_ref())
        .ok_or_else(|| {
            gql(clacks_core::Error::Unauthenticated(
                "a bearer token is required".into(),
            ))
        })
}

/// The service and the authenticated caller, for a resolver about to reach
/// the database: charges the operation's [`FetchBudget`] (a field past the
/// budget fails with `LIMIT_EXCEEDED`, the rest of the operation goes on).
fn parts<'a>(ctx: &Context<'a>) -> Result<(&'a Arc<ChatService>, &'a Arc<Caller>)> {
    let caller = caller(ctx)?;
    let budget = ctx.data_opt::<FetchBudget>().ok_or_else(|| {
        gql(clacks_core::Error::Internal(
            "an operation ran without a fetch budget".into(),
        ))
    })?;
    budget.charge().map_err(Refusal::into_error)?;
    Ok((service(ctx)?, caller))
}

// The cost model, declared where the resolvers are and published in the
// SDL with the names and shapes of Apollo's demand-control directives.
// `crate::guard` reads them back from the SDL.

/// What resolving this field once adds to an operation's cost (checked
/// against the server's cost limit): 1 unless declared; fields that read
/// the database declare more.
#[TypeDirective(name = "cost", location = "FieldDefinition")]
fn cost(weight: i32) {}

/// How many rows this list counts for in an operation's cost (its
/// selection's cost is multiplied by them): the first given of its
/// `slicingArguments` (clamped to the largest page), else `assumedSize`,
/// else a default page.
#[TypeDirective(name = "listSize", location = "FieldDefinition")]
fn list_size(assumed_size: Option<i32>, slicing_arguments: Option<Vec<String>>) {}

/// Cost of a resolution that reaches the database.
const FETCH: i32 = 10;

/// Rows assumed of the lists the service does not page (a user's
/// channels, a channel's members, a message's readers); longer ones are
/// caught by the fetch budget.
const ASSUMED_ROWS: i32 = 50;
/// `MembersJoined.userIds` and `MembersLeft.userIds` list at most this many.
const MEMBER_BATCH_LISTED_SIZE: i32 = clacks_core::MEMBER_BATCH_LISTED as i32;

fn slicing(argument: &str) -> Option<Vec<String>> {
    Some(vec![argument.to_owned()])
}

fn channel_id(id: &ID) -> Result<ChannelId> {
    ChannelId::parse(id).map_err(gql)
}

fn message_id(id: &ID) -> Result<MessageId> {
    MessageId::parse(id).map_err(gql)
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn id_of(value: impl ToString) -> ID {
    ID(value.to_string())
}

// ----- User ---------------------------------------------------------------

/// A user of the application. Clacks does no user management: a user is
/// an opaque id; `name` and `claims` are known for the caller only, from
/// their token.
pub struct User {
    id: String,
    me: Option<Arc<Caller>>,
}

impl User {
    fn of(id: &UserId) -> Self {
        User {
            id: id.as_str().to_owned(),
            me: None,
        }
    }
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    /// The `name` claim of the caller's token (null for other users).
    async fn name(&self) -> Option<&str> {
        self.me.as_ref().and_then(|c| c.name.as_deref())
    }

    /// Every claim of the caller's token (null for other users).
    async fn claims(&self) -> Option<Json<serde_json::Map<String, serde_json::Value>>> {
        self.me.as_ref().map(|c| Json(c.claims()))
    }

    /// Whether the user is online (holds a live connection to any node),
    /// and when they were last seen (the system, sender of system
    /// messages, is never online).
    async fn presence(&self, ctx: &Context<'_>) -> Result<PresenceObj> {
        caller(ctx)?;
        let status = match UserId::parse(self.id.clone()) {
            Ok(user) => service(ctx)?.presence_of(&user),
            Err(_) => PresenceStatus {
                online: false,
                last_seen_at: None,
            },
        };
        Ok(PresenceObj(status))
    }
}

/// A user's presence.
pub struct PresenceObj(PresenceStatus);

#[Object(name = "Presence")]
impl PresenceObj {
    /// Holds a live (authenticated WebSocket) connection to any node.
    async fn online(&self) -> bool {
        self.0.online
    }

    /// When their last connection closed (seconds); null while online, and
    /// when not seen since the server started.
    async fn last_seen_at(&self) -> Option<i64> {
        self.0.last_seen_at.map(secs)
    }
}

// ----- Message ------------------------------------------------------------

/// A message. Deleted messages stay as tombstones (empty content,
/// `deleted: true`) so a channel's seqs stay gap-free.
pub struct MessageObj(pub Message);

#[Object(name = "Message")]
impl MessageObj {
    async fn id(&self) -> ID {
        id_of(self.0.id)
    }

    /// Position in the channel: strictly increasing, gap-free.
    async fn seq(&self) -> Seq {
        self.0.seq
    }

    /// The sender; for messages posted by the application itself (system
    /// messages) a user with the empty id.
    async fn sender(&self) -> User {
        User {
            id: self.0.sender.display_id().to_owned(),
            me: None,
        }
    }

    /// The sender's id; null for system messages.
    async fn sender_id(&self) -> Option<ID> {
        self.0.sender.user_id().map(|u| ID(u.as_str().to_owned()))
    }

    /// True for messages posted by the application, not by a user.
    async fn system(&self) -> bool {
        matches!(self.0.sender, Sender::System)
    }

    async fn content(&self) -> &str {
        &self.0.content
    }

    // Loaded only if more than its id is asked for; costed as if it were.
    #[graphql(directive = cost::apply(FETCH))]
    async fn channel(&self) -> ChannelObj {
        ChannelObj::lazy(self.0.channel_id)
    }

    async fn channel_id(&self) -> ID {
        id_of(self.0.channel_id)
    }

    #[graphql(name = "sent_at", deprecation = "Use `sentAt`.")]
    async fn sent_at_v0(&self) -> i64 {
        secs(self.0.created_at)
    }

    /// When the message was stored, in seconds since the epoch.
    async fn sent_at(&self) -> i64 {
        secs(self.0.created_at)
    }

    /// When the content was last edited (seconds), if it was.
    async fn edited_at(&self) -> Option<i64> {
        self.0.edited_at.map(secs)
    }

    /// When the message was deleted (seconds), if it was.
    async fn deleted_at(&self) -> Option<i64> {
        self.0.deleted_at.map(secs)
    }

    async fn deleted(&self) -> bool {
        self.0.is_deleted()
    }

    /// The message this one replies to (the root of its thread), or null
    /// for a top-level message.
    async fn parent_id(&self) -> Option<ID> {
        self.0.parent_id.map(id_of)
    }

    /// Replies in this message's thread (tombstones included; 0 for a
    /// reply: threads are one level deep).
    async fn reply_count(&self) -> i64 {
        self.0.reply_count
    }

    /// When the newest reply was stored (seconds), if any.
    async fn last_reply_at(&self) -> Option<i64> {
        self.0.last_reply_at.map(secs)
    }

    /// The members the sender mentioned (none on a tombstone; at most 50).
    #[graphql(directive = list_size::apply(Some(50), None))]
    async fn mentions(&self) -> Vec<User> {
        self.0.mentions.iter().map(User::of).collect()
    }

    /// Whether the caller is among `mentions`.
    async fn mentioned_me(&self, ctx: &Context<'_>) -> Result<bool> {
        let caller = caller(ctx)?;
        Ok(self.0.mentions.contains(&caller.user_id))
    }

    /// The id the sender's client gave to make sending idempotent.
    async fn client_message_id(&self) -> Option<&str> {
        self.0.client_message_id.as_deref()
    }

    /// The reactions, one per key in the order keys were first used, with
    /// how many users reacted and whether the caller did. Follow them live
    /// with the `ReactionAdded` / `ReactionRemoved` events, which carry
    /// the new count.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(Some(ASSUMED_ROWS), None))]
    async fn reactions(&self, ctx: &Context<'_>) -> Result<Vec<ReactionObj>> {
        if crate::render::is_new_message(ctx, self.0.id) {
            // Rendering its creation: nobody has reacted yet.
            return Ok(Vec::new());
        }
        let (service, caller) = parts(ctx)?;
        let reactions = service.reactions_for(caller, &self.0).await.map_err(gql)?;
        Ok(reactions.into_iter().map(ReactionObj).collect())
    }

    /// Members whose read watermark passed this message, and when (the
    /// sender excluded).
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(Some(ASSUMED_ROWS), None))]
    async fn seen_by(&self, ctx: &Context<'_>) -> Result<Vec<SeenByObj>> {
        let (service, caller) = parts(ctx)?;
        let seen = service.seen_by(caller, self.0.id).await.map_err(gql)?;
        Ok(seen.into_iter().map(SeenByObj).collect())
    }
}

/// One reaction key on a message.
pub struct ReactionObj(Reaction);

#[Object(name = "Reaction")]
impl ReactionObj {
    /// The emoji or short key.
    async fn key(&self) -> &str {
        &self.0.key
    }

    /// How many users reacted with it.
    async fn count(&self) -> i64 {
        self.0.count
    }

    /// Whether the caller is one of them.
    async fn reacted_by_me(&self) -> bool {
        self.0.reacted_by_me
    }
}

/// A member who has read a message.
pub struct SeenByObj(SeenBy);

#[Object(name = "SeenBy")]
impl SeenByObj {
    async fn user(&self) -> User {
        User::of(&self.0.user_id)
    }

    async fn user_id(&self) -> ID {
        ID(self.0.user_id.as_str().to_owned())
    }

    /// When the member's watermark passed the message (seconds).
    async fn seen_at(&self) -> i64 {
        secs(self.0.seen_at)
    }
}

// ----- Channel ------------------------------------------------------------

/// A channel as one of its members sees it. Loaded lazily: a channel
/// reached through a message or an event costs no query unless a field
/// other than `id` is asked for.
pub struct ChannelObj {
    id: ChannelId,
    loaded: OnceCell<(Channel, Member)>,
    unread_count: Option<i64>,
    unread_mention_count: Option<i64>,
    last_message: Option<Option<Message>>,
}

impl ChannelObj {
    fn lazy(id: ChannelId) -> Self {
        ChannelObj {
            id,
            loaded: OnceCell::new(),
            unread_count: None,
            unread_mention_count: None,
            last_message: None,
        }
    }

    fn loaded(channel: Channel, member: Member) -> Self {
        ChannelObj {
            id: channel.id,
            loaded: OnceCell::new_with(Some((channel, member))),
            unread_count: None,
            unread_mention_count: None,
            last_message: None,
        }
    }

    fn summary(summary: ChannelSummary) -> Self {
        ChannelObj {
            unread_count: Some(summary.unread_count),
            unread_mention_count: Some(summary.unread_mention_count),
            last_message: Some(summary.last_message),
            ..ChannelObj::loaded(summary.channel, summary.member)
        }
    }

    async fn load(&self, ctx: &Context<'_>) -> Result<&(Channel, Member)> {
        self.loaded
            .get_or_try_init(|| async {
                let (service, caller) = parts(ctx)?;
                service.channel_for(caller, self.id).await.map_err(gql)
            })
            .await
    }

    async fn channel(&self, ctx: &Context<'_>) -> Result<&Channel> {
        Ok(&self.load(ctx).await?.0)
    }

    async fn member(&self, ctx: &Context<'_>) -> Result<&Member> {
        Ok(&self.load(ctx).await?.1)
    }
}

#[Object(name = "Channel")]
impl ChannelObj {
    async fn id(&self) -> ID {
        id_of(self.id)
    }

    #[graphql(name = "display_name", deprecation = "Use `displayName`.")]
    async fn display_name_v0(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.channel(ctx).await?.display_name)
    }

    async fn display_name(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.channel(ctx).await?.display_name)
    }

    /// The application's JSON metadata of the channel, if any.
    async fn metadata(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> {
        Ok(self
            .channel(ctx)
            .await?
            .metadata
            .as_ref()
            .map(|m| Json(m.as_value().clone())))
    }

    /// Seq of the newest entry of the channel when it was loaded.
    async fn last_seq(&self, ctx: &Context<'_>) -> Result<Seq> {
        Ok(self.channel(ctx).await?.last_seq)
    }

    /// The members, as users (the original field; see `members`).
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(Some(ASSUMED_ROWS), None))]
    async fn users(&self, ctx: &Context<'_>) -> Result<Vec<Option<User>>> {
        let (service, caller) = parts(ctx)?;
        let members = service.members_for(caller, self.id).await.map_err(gql)?;
        Ok(members.iter().map(|m| Some(User::of(&m.user_id))).collect())
    }

    /// The members with their role and read state.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(Some(ASSUMED_ROWS), None))]
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<MemberObj>> {
        let (service, caller) = parts(ctx)?;
        let members = service.members_for(caller, self.id).await.map_err(gql)?;
        Ok(members.into_iter().map(MemberObj).collect())
    }

    /// A page of the members, ordered by user id: those whose id sorts
    /// after `after` (the last `user.id` of the previous page), at most
    /// `limit` (default 50, at most 200). For channels too large for
    /// `members`: follow pages until one comes back shorter than `limit`.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn members_page(
        &self,
        ctx: &Context<'_>,
        after: Option<ID>,
        limit: Option<i32>,
    ) -> Result<Vec<MemberObj>> {
        let (service, caller) = parts(ctx)?;
        let members = service
            .members_page_for(
                caller,
                self.id,
                after.map(|a| a.0),
                limit.map(|l| u32::try_from(l).unwrap_or(1)),
            )
            .await
            .map_err(gql)?;
        Ok(members.into_iter().map(MemberObj).collect())
    }

    /// The caller's role in the channel.
    async fn role(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(self.member(ctx).await?.role.as_str())
    }

    /// The caller's read watermark: every seq up to it is read.
    async fn last_read_seq(&self, ctx: &Context<'_>) -> Result<Seq> {
        Ok(self.member(ctx).await?.last_read_seq)
    }

    /// When the caller's watermark last moved (seconds), if ever.
    async fn last_read_at(&self, ctx: &Context<'_>) -> Result<Option<i64>> {
        Ok(self.member(ctx).await?.last_read_at.map(secs))
    }

    /// Messages after the caller's read watermark (not their own).
    #[graphql(directive = cost::apply(FETCH))]
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        if let Some(count) = self.unread_count {
            return Ok(count);
        }
        let (service, caller) = parts(ctx)?;
        service.unread_count_for(caller, self.id).await.map_err(gql)
    }

    /// Messages after the caller's read watermark that mention them (not
    /// their own, not deleted); `markRead` clears them with the rest.
    #[graphql(directive = cost::apply(FETCH))]
    async fn unread_mention_count(&self, ctx: &Context<'_>) -> Result<i64> {
        if let Some(count) = self.unread_mention_count {
            return Ok(count);
        }
        let (service, caller) = parts(ctx)?;
        service
            .unread_mention_count_for(caller, self.id)
            .await
            .map_err(gql)
    }

    /// The newest message, if any.
    #[graphql(directive = cost::apply(FETCH))]
    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<MessageObj>> {
        if let Some(last) = &self.last_message {
            return Ok(last.clone().map(MessageObj));
        }
        let (service, caller) = parts(ctx)?;
        let page = service
            .history_for(
                caller,
                self.id,
                HistoryRequest {
                    limit: Some(1),
                    ..HistoryRequest::default()
                },
            )
            .await
            .map_err(gql)?;
        Ok(page.into_iter().next().map(MessageObj))
    }

    /// History paged by seq. Without `after`: the newest messages with
    /// `seq < before` (or the newest of all), newest first. With `after`:
    /// the oldest messages with `seq > after` (and `seq < before` when
    /// given too), oldest first. `limit` defaults to 50, at most 200.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn history(
        &self,
        ctx: &Context<'_>,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<i32>,
    ) -> Result<Vec<MessageObj>> {
        let (service, caller) = parts(ctx)?;
        let page = service
            .history_for(
                caller,
                self.id,
                HistoryRequest {
                    before,
                    after,
                    limit: limit.map(|l| u32::try_from(l).unwrap_or(1)),
                },
            )
            .await
            .map_err(gql)?;
        Ok(page.into_iter().map(MessageObj).collect())
    }

    /// The original paging: `count` messages (default 50) ending at seq
    /// `last` inclusive (default: the newest), oldest first. The v0 schema
    /// typed this as a single `Message`, an evident slip: it is a list.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("count")))]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        last: Option<ID>,
        count: Option<i32>,
    ) -> Result<Vec<MessageObj>> {
        let (service, caller) = parts(ctx)?;
        let before = match last {
            Some(last) => Some(
                last.parse::<Seq>()
                    .map_err(|_| gql(clacks_core::Error::invalid("last", "must be a seq")))?
                    .saturating_add(1),
            ),
            None => None,
        };
        let mut page = service
            .history_for(
                caller,
                self.id,
                HistoryRequest {
                    before,
                    after: None,
                    limit: count.map(|c| u32::try_from(c).unwrap_or(1)),
                },
            )
            .await
            .map_err(gql)?;
        page.reverse();
        Ok(page.into_iter().map(MessageObj).collect())
    }

    #[graphql(
        name = "message_view",
        deprecation = "Use `messageView`.",
        directive = cost::apply(FETCH),
        directive = list_size::apply(None, slicing("count"))
    )]
    async fn message_view_v0(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "user_id")] user_id: ID,
        last: i32,
        count: i32,
    ) -> Result<Vec<MessageViewObj>> {
        self.views(ctx, user_id, last, count).await
    }

    /// `count` messages ending at seq `last` (inclusive; 0 or less: the
    /// newest), oldest first, each with whether `userId` has seen it.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("count")))]
    async fn message_view(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        last: i32,
        count: i32,
    ) -> Result<Vec<MessageViewObj>> {
        self.views(ctx, user_id, last, count).await
    }
}

impl ChannelObj {
    async fn views(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        last: i32,
        count: i32,
    ) -> Result<Vec<MessageViewObj>> {
        let (service, caller) = parts(ctx)?;
        let viewer = UserId::parse(user_id.0).map_err(gql)?;
        let views = service
            .message_views(
                caller,
                self.id,
                &viewer,
                Seq::from(last),
                u32::try_from(count).unwrap_or(1),
            )
            .await
            .map_err(gql)?;
        Ok(views.into_iter().map(MessageViewObj).collect())
    }
}

/// A member of a channel.
pub struct MemberObj(Member);

#[Object(name = "ChannelMember")]
impl MemberObj {
    async fn user(&self) -> User {
        User::of(&self.0.user_id)
    }

    async fn user_id(&self) -> ID {
        ID(self.0.user_id.as_str().to_owned())
    }

    async fn role(&self) -> &str {
        self.0.role.as_str()
    }

    /// When the member joined (seconds).
    async fn joined_at(&self) -> i64 {
        secs(self.0.joined_at)
    }

    async fn last_read_seq(&self) -> Seq {
        self.0.last_read_seq
    }

    async fn last_read_at(&self) -> Option<i64> {
        self.0.last_read_at.map(secs)
    }
}

/// One message as seen by one member (the original schema's type).
pub struct MessageViewObj(clacks_service::MessageView);

#[Object(name = "MessageView")]
impl MessageViewObj {
    async fn user(&self) -> User {
        User::of(&self.0.user_id)
    }

    /// The message's seq.
    async fn order(&self) -> Seq {
        self.0.message.seq
    }

    async fn message(&self) -> MessageObj {
        MessageObj(self.0.message.clone())
    }

    async fn seen(&self) -> bool {
        self.0.seen
    }

    /// When the member read it (seconds); null if unseen or own message.
    async fn time(&self) -> Option<i64> {
        self.0.seen_at.map(secs)
    }
}

/// The caller's read state in a channel after `markRead`.
pub struct ReadState(Member);

#[Object]
impl ReadState {
    async fn channel_id(&self) -> ID {
        id_of(self.0.channel_id)
    }

    #[graphql(directive = cost::apply(FETCH))]
    async fn channel(&self) -> ChannelObj {
        ChannelObj::lazy(self.0.channel_id)
    }

    async fn last_read_seq(&self) -> Seq {
        self.0.last_read_seq
    }

    async fn last_read_at(&self) -> Option<i64> {
        self.0.last_read_at.map(secs)
    }

    #[graphql(directive = cost::apply(FETCH))]
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let (service, caller) = parts(ctx)?;
        service
            .unread_count_for(caller, self.0.channel_id)
            .await
            .map_err(gql)
    }

    #[graphql(directive = cost::apply(FETCH))]
    async fn unread_mention_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let (service, caller) = parts(ctx)?;
        service
            .unread_mention_count_for(caller, self.0.channel_id)
            .await
            .map_err(gql)
    }
}

// ----- Search -------------------------------------------------------------

/// A message found by `search`, with its channel and its place in the
/// result list.
pub struct SearchHitObj(clacks_service::SearchHit);

#[Object(name = "SearchHit")]
impl SearchHitObj {
    async fn message(&self) -> MessageObj {
        MessageObj(self.0.message.clone())
    }

    // Loaded only if more than its id is asked for; costed as if it were.
    #[graphql(directive = cost::apply(FETCH))]
    async fn channel(&self) -> ChannelObj {
        ChannelObj::lazy(self.0.message.channel_id)
    }

    /// Relevance, higher is better. Each database engine scores its own way,
    /// so a score only orders the hits of one search.
    async fn score(&self) -> f64 {
        self.0.score
    }

    /// Pass as `after` for the hits ranked below this one.
    async fn cursor(&self) -> &str {
        &self.0.cursor
    }
}

// ----- Query --------------------------------------------------------------

#[derive(Default)]
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// The caller, with the profile claims of their token.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let caller = caller(ctx)?;
        Ok(User {
            id: caller.user_id.as_str().to_owned(),
            me: Some(caller.clone()),
        })
    }

    #[graphql(
        name = "unread_messages",
        deprecation = "Use `unreadMessages`.",
        directive = cost::apply(FETCH),
        directive = list_size::apply(None, None)
    )]
    async fn unread_messages_v0(&self, ctx: &Context<'_>) -> Result<Vec<Option<MessageObj>>> {
        Ok(self
            .unread_messages(ctx, None)
            .await?
            .into_iter()
            .map(Some)
            .collect())
    }

    /// Messages after the caller's read watermarks in all their channels.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn unread_messages(
        &self,
        ctx: &Context<'_>,
        limit: Option<i32>,
    ) -> Result<Vec<MessageObj>> {
        let (service, caller) = parts(ctx)?;
        let messages = service
            .unread_messages_for(caller, limit.map(|l| u32::try_from(l).unwrap_or(1)))
            .await
            .map_err(gql)?;
        Ok(messages.into_iter().map(MessageObj).collect())
    }

    /// The caller's channels with unread counts and last messages.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(Some(ASSUMED_ROWS), None))]
    async fn channels(&self, ctx: &Context<'_>) -> Result<Vec<ChannelObj>> {
        let (service, caller) = parts(ctx)?;
        let summaries = service.my_channels(caller).await.map_err(gql)?;
        Ok(summaries.into_iter().map(ChannelObj::summary).collect())
    }

    /// One of the caller's channels (`FORBIDDEN` for any other id).
    #[graphql(directive = cost::apply(FETCH))]
    async fn channel(&self, ctx: &Context<'_>, id: ID) -> Result<ChannelObj> {
        let (service, caller) = parts(ctx)?;
        let (channel, member) = service
            .channel_for(caller, channel_id(&id)?)
            .await
            .map_err(gql)?;
        Ok(ChannelObj::loaded(channel, member))
    }

    /// A page of the replies in the thread of `parent` (a message of one of
    /// the caller's channels), by seq as `Channel.history`: newest first,
    /// or oldest first with `after`. `limit` defaults to 50, at most 200.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn thread(
        &self,
        ctx: &Context<'_>,
        parent: ID,
        before: Option<Seq>,
        after: Option<Seq>,
        limit: Option<i32>,
    ) -> Result<Vec<MessageObj>> {
        let (service, caller) = parts(ctx)?;
        let page = service
            .thread_for(
                caller,
                message_id(&parent)?,
                HistoryRequest {
                    before,
                    after,
                    limit: limit.map(|l| u32::try_from(l).unwrap_or(1)),
                },
            )
            .await
            .map_err(gql)?;
        Ok(page.into_iter().map(MessageObj).collect())
    }

    /// A page of the online members of one of the caller's channels
    /// (`FORBIDDEN` for any other id), ordered by user id: those after
    /// `after` (the last `id` of the previous page), at most `limit`
    /// (default 50, at most 200). A page shorter than `limit` is the last.
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn presence(
        &self,
        ctx: &Context<'_>,
        channel: ID,
        after: Option<ID>,
        limit: Option<i32>,
    ) -> Result<Vec<User>> {
        let (service, caller) = parts(ctx)?;
        let online = service
            .online_members_for(
                caller,
                channel_id(&channel)?,
                after.map(|a| a.0),
                limit.map(|l| u32::try_from(l).unwrap_or(1)),
            )
            .await
            .map_err(gql)?;
        Ok(online.iter().map(User::of).collect())
    }

    /// Full-text search of the messages of the caller's channels, or of
    /// `channel` (one of them: `FORBIDDEN` for any other id). A message
    /// matches when it holds every word of `query` (letters and digits;
    /// everything else separates words, so no character is an operator;
    /// at most 256 characters and 16 words). Best match first, equal
    /// matches newest first; deleted messages are never found, edited ones
    /// by their current content. Paged: pass the last hit's `cursor` as
    /// `after` until a page comes back shorter than `limit` (default 20,
    /// 1 to 100; at most 1,000 hits in all). What counts as a word differs
    /// by database (README, "Search").
    #[graphql(directive = cost::apply(FETCH), directive = list_size::apply(None, slicing("limit")))]
    async fn search(
        &self,
        ctx: &Context<'_>,
        query: String,
        channel: Option<ID>,
        limit: Option<i32>,
        after: Option<String>,
    ) -> Result<Vec<SearchHitObj>> {
        let (service, caller) = parts(ctx)?;
        let request = SearchRequest {
            query,
            channel: channel.as_ref().map(channel_id).transpose()?,
            limit: limit.map(i64::from),
            after,
        };
        let results = service.search_for(caller, &request).await.map_err(gql)?;
        Ok(results.hits.into_iter().map(SearchHitObj).collect())
    }

    /// One message of one of the caller's channels.
    #[graphql(directive = cost::apply(FETCH))]
    async fn message(&self, ctx: &Context<'_>, id: ID) -> Result<MessageObj> {
        let (service, caller) = parts(ctx)?;
        let message = service
            .message_for(caller, message_id(&id)?)
            .await
            .map_err(gql)?;
        Ok(MessageObj(message))
    }
}

// ----- Mutation -----------------------------------------------------------

#[derive(InputObject)]
pub struct CreateMessageInput {
    pub content: String,
    pub channel: ID,
    /// Makes sending idempotent: a retry with the same id returns the
    /// original message instead of a duplicate.
    pub client_message_id: Option<String>,
    /// Reply in the thread of this message: a top-level message of the
    /// same channel (threads are one level deep), not deleted.
    pub parent_id: Option<ID>,
    /// Users to mention (at most 50), each a member of the channel.
    pub mentions: Option<Vec<ID>>,
}

#[derive(Default)]
pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Sends a message to a channel the caller is a member of.
    #[graphql(directive = cost::apply(FETCH))]
    async fn create_message(
        &self,
        ctx: &Context<'_>,
        input: Option<CreateMessageInput>,
    ) -> Result<Option<MessageObj>> {
        let (service, caller) = parts(ctx)?;
        let input =
            input.ok_or_else(|| gql(clacks_core::Error::invalid("input", "is required")))?;
        let options = SendOptions {
            client_message_id: input.client_message_id,
            parent_id: input.parent_id.as_ref().map(message_id).transpose()?,
            mentions: input
                .mentions
                .unwrap_or_default()
                .into_iter()
                .map(|id| id.0)
                .collect(),
        };
        let message = service
            .send_with(caller, channel_id(&input.channel)?, input.content, options)
            .await
            .map_err(gql)?;
        Ok(Some(MessageObj(message)))
    }

    /// Replaces the content of one of the caller's own messages.
    #[graphql(directive = cost::apply(FETCH))]
    async fn edit_message(&self, ctx: &Context<'_>, id: ID, content: String) -> Result<MessageObj> {
        let (service, caller) = parts(ctx)?;
        let message = service
            .edit(caller, message_id(&id)?, content)
            .await
            .map_err(gql)?;
        Ok(MessageObj(message))
    }

    /// Deletes one of the caller's own messages, leaving a tombstone.
    #[graphql(directive = cost::apply(FETCH))]
    async fn delete_message(&self, ctx: &Context<'_>, id: ID) -> Result<MessageObj> {
        let (service, caller) = parts(ctx)?;
        let message = service
            .delete(caller, message_id(&id)?)
            .await
            .map_err(gql)?;
        Ok(MessageObj(message))
    }

    /// Adds the caller's reaction (an emoji or a short key: at most 64
    /// bytes, no whitespace or control characters) to a message of one of
    /// their channels. Idempotent: reacting again changes nothing. A
    /// message carries at most 50 different keys (`CONFLICT` for a new one
    /// past that).
    #[graphql(directive = cost::apply(FETCH))]
    async fn add_reaction(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        key: String,
    ) -> Result<MessageObj> {
        let (service, caller) = parts(ctx)?;
        let message = service
            .add_reaction(caller, self::message_id(&message_id)?, key)
            .await
            .map_err(gql)?;
        Ok(MessageObj(message))
    }

    /// Takes back the caller's reaction. Idempotent.
    #[graphql(directive = cost::apply(FETCH))]
    async fn remove_reaction(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        key: String,
    ) -> Result<MessageObj> {
        let (service, caller) = parts(ctx)?;
        let message = service
            .remove_reaction(caller, self::message_id(&message_id)?, key)
            .await
            .map_err(gql)?;
        Ok(MessageObj(message))
    }

    /// Moves the caller's read watermark up to `seq` (never back).
    #[graphql(directive = cost::apply(FETCH))]
    async fn mark_read(&self, ctx: &Context<'_>, channel: ID, seq: Seq) -> Result<ReadState> {
        let (service, caller) = parts(ctx)?;
        let member = service
            .mark_read(caller, channel_id(&channel)?, seq)
            .await
            .map_err(gql)?;
        Ok(ReadState(member))
    }

    /// Tells the other members the caller is typing. Ephemeral; returns
    /// false when throttled (at most one broadcast per interval).
    #[graphql(directive = cost::apply(FETCH))]
    async fn set_typing(&self, ctx: &Context<'_>, channel: ID) -> Result<bool> {
        let (service, caller) = parts(ctx)?;
        service
            .set_typing(caller, channel_id(&channel)?)
            .await
            .map_err(gql)
    }
}

// ----- Events -------------------------------------------------------------

/// Where an event sits in its channel's stream.
#[derive(Clone, Copy)]
struct Head {
    channel_id: ChannelId,
    seq: Seq,
    durable: bool,
    at: i64,
}

macro_rules! event_type {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* } $($body:tt)*) => {
        $(#[$doc])*
        pub struct $name {
            head: Head,
            $($field: $ty,)*
        }

        #[Object]
        impl $name {
            async fn channel_id(&self) -> ID {
                id_of(self.head.channel_id)
            }

            /// The event's seq. Durable events have their own; ephemeral
            /// ones (read receipts, typing) carry the newest durable seq of
            /// the channel as a position marker.
            async fn seq(&self) -> Seq {
                self.head.seq
            }

            /// Stored (replayed on resume) or ephemeral.
            async fn durable(&self) -> bool {
                self.head.durable
            }

            /// When it happened (seconds).
            async fn at(&self) -> i64 {
                secs(self.head.at)
            }

            $($body)*
        }
    };
}

event_type!(
    /// A message was sent.
    MessageCreated { message: Message }
    async fn message(&self) -> MessageObj { MessageObj(self.message.clone()) }
);
event_type!(
    /// A message's content changed.
    MessageEdited { message: Message }
    async fn message(&self) -> MessageObj { MessageObj(self.message.clone()) }
);
event_type!(
    /// A message was deleted (its tombstone).
    MessageDeleted { message: Message }
    async fn message(&self) -> MessageObj { MessageObj(self.message.clone()) }
);
event_type!(
    /// A member reacted to a message; `count` is how many members have
    /// reacted with `key` now.
    ReactionAdded { message: MessageId, parent: Option<MessageId>, user: UserId, key: String, count: i64 }
    async fn message_id(&self) -> ID { id_of(self.message) }
    /// The message's thread (its parent), if it is a reply.
    async fn parent_id(&self) -> Option<ID> { self.parent.map(id_of) }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
    async fn key(&self) -> &str { &self.key }
    async fn count(&self) -> i64 { self.count }
);
event_type!(
    /// A member took back a reaction; `count` is how many are left.
    ReactionRemoved { message: MessageId, parent: Option<MessageId>, user: UserId, key: String, count: i64 }
    async fn message_id(&self) -> ID { id_of(self.message) }
    /// The message's thread (its parent), if it is a reply.
    async fn parent_id(&self) -> Option<ID> { self.parent.map(id_of) }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
    async fn key(&self) -> &str { &self.key }
    async fn count(&self) -> i64 { self.count }
);
event_type!(
    /// A member's read watermark moved.
    ReadReceipt { user: UserId, last_read: Seq }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
    async fn last_read_seq(&self) -> Seq { self.last_read }
);
event_type!(
    /// A member is typing (ephemeral, never stored).
    Typing { user: UserId }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
);
event_type!(
    /// A member came online or went offline (ephemeral; sent only to
    /// channels of at most `CLACKS_PRESENCE_EVENTS_MAX_MEMBERS` members).
    PresenceChanged { user: UserId, online: bool, last_seen: Option<i64> }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
    async fn online(&self) -> bool { self.online }
    /// When their last connection closed (seconds), when offline.
    async fn last_seen_at(&self) -> Option<i64> { self.last_seen.map(secs) }
);
event_type!(
    /// A member joined the channel.
    MemberJoined { user: UserId, role: String }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
    async fn role(&self) -> &str { &self.role }
);
event_type!(
    /// A member left or was removed.
    MemberLeft { user: UserId }
    async fn user(&self) -> User { User::of(&self.user) }
    async fn user_id(&self) -> ID { ID(self.user.as_str().to_owned()) }
);
event_type!(
    /// Several users were added by one bulk request, at one seq (a request
    /// adding one user is a `MemberJoined`). `userIds` lists them when
    /// there are at most 100; beyond that it is empty and `truncated` is
    /// true: refetch the channel's members (`channel { membersPage }`) instead.
    MembersJoined { users: Vec<UserId>, count: u64, truncated: bool, role: String }
    /// The users, when at most 100; empty when `truncated` (then
    /// refetch the channel's members, `channel { membersPage }`).
    #[graphql(directive = list_size::apply(Some(MEMBER_BATCH_LISTED_SIZE), None))]
    async fn user_ids(&self) -> Vec<ID> { self.users.iter().map(|u| ID(u.as_str().to_owned())).collect() }
    /// How many users were added.
    async fn count(&self) -> i64 { i64::try_from(self.count).unwrap_or(i64::MAX) }
    /// `userIds` was left out (more than 100 users): refetch the members.
    async fn truncated(&self) -> bool { self.truncated }
    async fn role(&self) -> &str { &self.role }
);
event_type!(
    /// Several members were removed by one bulk request, at one seq (a
    /// request removing one is a `MemberLeft`). `userIds` as in
    /// `MembersJoined`. A subscriber among them is removed at this event,
    /// as with `MemberLeft`.
    MembersLeft { users: Vec<UserId>, count: u64, truncated: bool }
    /// The users, when at most 100; empty when `truncated` (then
    /// refetch the channel's members, `channel { membersPage }`).
    #[graphql(directive = list_size::apply(Some(MEMBER_BATCH_LISTED_SIZE), None))]
    async fn user_ids(&self) -> Vec<ID> { self.users.iter().map(|u| ID(u.as_str().to_owned())).collect() }
    /// How many members were removed.
    async fn count(&self) -> i64 { i64::try_from(self.count).unwrap_or(i64::MAX) }
    /// `userIds` was left out (more than 100 users): refetch the members.
    async fn truncated(&self) -> bool { self.truncated }
);
event_type!(
    /// The channel was renamed or its metadata changed.
    ChannelUpdated { channel: Channel }
    async fn display_name(&self) -> &str { &self.channel.display_name }
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.channel.metadata.as_ref().map(|m| Json(m.as_value().clone()))
    }
);
event_type!(
    /// The channel was deleted; a single-channel stream completes after it.
    ChannelDeleted {}
    /// Always true.
    async fn deleted(&self) -> bool { true }
);

/// One event of a channel's stream.
#[derive(Interface)]
#[graphql(
    name = "ChannelEvent",
    field(name = "channel_id", ty = "ID"),
    field(name = "seq", ty = "Seq"),
    field(name = "durable", ty = "bool"),
    field(name = "at", ty = "i64")
)]
pub enum EventObj {
    MessageCreated(MessageCreated),
    MessageEdited(MessageEdited),
    MessageDeleted(MessageDeleted),
    ReactionAdded(ReactionAdded),
    ReactionRemoved(ReactionRemoved),
    ReadReceipt(ReadReceipt),
    Typing(Typing),
    PresenceChanged(PresenceChanged),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    MembersJoined(MembersJoined),
    MembersLeft(MembersLeft),
    ChannelUpdated(ChannelUpdated),
    ChannelDeleted(ChannelDeleted),
}

impl EventObj {
    pub(crate) fn from_event(event: &ChannelEvent) -> Self {
        let head = Head {
            channel_id: event.channel_id,
            seq: event.seq,
            durable: event.durable,
            at: event.at,
        };
        match &event.payload {
            EventPayload::MessageCreated { message } => EventObj::MessageCreated(MessageCreated {
                head,
                message: message.clone(),
            }),
            EventPayload::MessageEdited { message } => EventObj::MessageEdited(MessageEdited {
                head,
                message: message.clone(),
            }),
            EventPayload::MessageDeleted { message } => EventObj::MessageDeleted(MessageDeleted {
                head,
                message: message.clone(),
            }),
            EventPayload::MemberJoined { user_id, role } => EventObj::MemberJoined(MemberJoined {
                head,
                user: user_id.clone(),
                role: role.as_str().to_owned(),
            }),
            EventPayload::MemberLeft { user_id } => EventObj::MemberLeft(MemberLeft {
                head,
                user: user_id.clone(),
            }),
            // The listed users only: a node may know them all (it made the
            // change), but a client sees the same event live and replayed.
            EventPayload::MembersJoined { batch, role } => EventObj::MembersJoined(MembersJoined {
                head,
                users: batch.user_ids.clone(),
                count: batch.count,
                truncated: batch.truncated,
                role: role.as_str().to_owned(),
            }),
            EventPayload::MembersLeft { batch } => EventObj::MembersLeft(MembersLeft {
                head,
                users: batch.user_ids.clone(),
                count: batch.count,
                truncated: batch.truncated,
            }),
            EventPayload::ChannelUpdated { channel } => EventObj::ChannelUpdated(ChannelUpdated {
                head,
                channel: channel.clone(),
            }),
            EventPayload::ChannelDeleted => EventObj::ChannelDeleted(ChannelDeleted { head }),
            EventPayload::ReactionAdded {
                message_id,
                parent_id,
                user_id,
                key,
                count,
            } => EventObj::ReactionAdded(ReactionAdded {
                head,
                message: *message_id,
                parent: *parent_id,
                user: user_id.clone(),
                key: key.clone(),
                count: *count,
            }),
            EventPayload::ReactionRemoved {
                message_id,
                parent_id,
                user_id,
                key,
                count,
            } => EventObj::ReactionRemoved(ReactionRemoved {
                head,
                message: *message_id,
                parent: *parent_id,
                user: user_id.clone(),
                key: key.clone(),
                count: *count,
            }),
            EventPayload::ReadReceipt {
                user_id,
                last_read_seq,
            } => EventObj::ReadReceipt(ReadReceipt {
                head,
                user: user_id.clone(),
                last_read: *last_read_seq,
            }),
            EventPayload::Typing { user_id } => EventObj::Typing(Typing {
                head,
                user: user_id.clone(),
            }),
            EventPayload::Presence {
                user_id,
                online,
                last_seen_at,
            } => EventObj::PresenceChanged(PresenceChanged {
                head,
                user: user_id.clone(),
                online: *online,
                last_seen: *last_seen_at,
            }),
        }
    }
}

/// Kinds of event, to filter the `events` stream.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MessageCreated,
    MessageEdited,
    MessageDeleted,
    ReadReceipt,
    Typing,
    MemberJoined,
    MemberLeft,
    /// Users added by one bulk request (not included by `MEMBER_JOINED`).
    MembersJoined,
    /// Members removed by one bulk request (not included by `MEMBER_LEFT`).
    MembersLeft,
    ChannelUpdated,
    ChannelDeleted,
    ReactionAdded,
    ReactionRemoved,
    PresenceChanged,
}

/// Where to resume one channel: replay every durable event after
/// `afterSeq`, then continue live.
#[derive(InputObject)]
pub struct ResumeInput {
    pub channel: ID,
    pub after_seq: Seq,
}

// ----- Subscription -------------------------------------------------------

struct Feed<F> {
    events: clacks_service::EventStream,
    control: Option<Control>,
    map: F,
}

/// Ends a stream per the delivery rules: a removed member gets one
/// `FORBIDDEN` error, a deleted channel completes, an overflowing
/// subscription closes the connection (code 4008, "slow consumer").
fn deliveries<T, F>(
    events: clacks_service::EventStream,
    control: Option<Control>,
    map: F,
) -> impl Stream<Item = Result<T>> + Send + 'static
where
    T: Send + 'static,
    F: FnMut(&ChannelEvent) -> Option<T> + Send + 'static,
{
    let feed = Feed {
        events,
        control,
        map,
    };
    futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        loop {
            match feed.events.next().await? {
                Delivery::Event(event) => {
                    if let Some(item) = (feed.map)(&event) {
                        return Some((Ok(item), Some(feed)));
                    }
                }
                Delivery::End(EndReason::Removed) => {
                    let error = gql(clacks_core::Error::forbidden(
                        "no longer a member of this channel",
                    ));
                    return Some((Err(error), None));
                }
                Delivery::End(EndReason::ChannelDeleted) => return None,
                Delivery::End(EndReason::Overflow) => {
                    if let Some(control) = &feed.control {
                        control.0.close(crate::ws::SLOW_CONSUMER, "slow consumer");
                    }
                    return None;
                }
            }
        }
    })
}

fn resume_points(
    channel: Option<ChannelId>,
    after_seq: Option<Seq>,
    resume: Option<Vec<ResumeInput>>,
) -> Result<Vec<(ChannelId, Seq)>> {
    let mut points = Vec::new();
    if let Some(after) = after_seq {
        let Some(channel) = channel else {
            return Err(gql(clacks_core::Error::invalid(
                "afterSeq",
                "needs a channel; use `resume` for all channels",
            )));
        };
        points.push((channel, after));
    }
    for point in resume.unwrap_or_default() {
        points.push((channel_id(&point.channel)?, point.after_seq));
    }
    Ok(points)
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// New messages of one channel, or of all the caller's channels when
    /// `channel` is omitted (following joins and leaves live). With
    /// `afterSeq` (one channel), messages after that seq are replayed
    /// first, then live ones follow with no gap and no duplicate.
    #[graphql(directive = cost::apply(FETCH))]
    async fn message(
        &self,
        ctx: &Context<'_>,
        channel: Option<ID>,
        after_seq: Option<Seq>,
    ) -> Result<BoxStream<'static, Result<Option<MessageObj>>>> {
        let (service, caller) = parts(ctx)?;
        let channel = channel.as_ref().map(channel_id).transpose()?;
        let resume = resume_points(channel, after_seq, None)?;
        let events = service
            .subscribe_events(caller, channel, &resume)
            .await
            .map_err(gql)?;
        if let Some(slot) = ctx.data_opt::<FeedSlot>() {
            slot.put(FeedHandoff {
                events,
                accept: Box::new(|event| {
                    matches!(event.payload, EventPayload::MessageCreated { .. })
                }),
            });
            return Ok(futures::stream::empty().boxed());
        }
        let control = ctx.data_opt::<Control>().cloned();
        Ok(deliveries(events, control, |event| match &event.payload {
            EventPayload::MessageCreated { message } => Some(Some(MessageObj(message.clone()))),
            _ => None,
        })
        .boxed())
    }

    /// Every event of one channel, or of all the caller's channels when
    /// `channel` is omitted. Resume after a disconnect with `afterSeq` (one
    /// channel) or `resume` (a seq per channel): durable events after it
    /// are replayed, then live ones follow with no gap and no duplicate.
    /// A member removed from a single channel gets a `FORBIDDEN` error
    /// and the stream completes; a deleted channel's stream completes
    /// after the `ChannelDeleted` event.
    #[graphql(directive = cost::apply(FETCH))]
    async fn events(
        &self,
        ctx: &Context<'_>,
        channel: Option<ID>,
        after_seq: Option<Seq>,
        resume: Option<Vec<ResumeInput>>,
        #[graphql(
            desc = "Only these kinds (default: all but PRESENCE_CHANGED, which is delivered only when asked for here)."
        )]
        kinds: Option<Vec<EventKind>>,
        #[graphql(
            desc = "Only events of this thread (default: all): messages and reactions whose thread root, or parent, is this message id."
        )]
        thread: Option<ID>,
    ) -> Result<BoxStream<'static, Result<EventObj>>> {
        let (service, caller) = parts(ctx)?;
        let channel = channel.as_ref().map(channel_id).transpose()?;
        let thread = thread.as_ref().map(message_id).transpose()?;
        let wanted = move |event: &ChannelEvent| {
            let kind = EventKind::of(&event.payload);
            let asked = match &kinds {
                Some(kinds) => kinds.contains(&kind),
                // Presence is asked for by name: a stream written before it
                // existed would see its events as bare seqs.
                None => kind != EventKind::PresenceChanged,
            };
            asked && thread.is_none_or(|thread| event.payload.thread() == Some(thread))
        };
        let resume = resume_points(channel, after_seq, resume)?;
        let events = service
            .subscribe_events(caller, channel, &resume)
            .await
            .map_err(gql)?;
        if let Some(slot) = ctx.data_opt::<FeedSlot>() {
            slot.put(FeedHandoff {
                events,
                accept: Box::new(wanted),
            });
            return Ok(futures::stream::empty().boxed());
        }
        let control = ctx.data_opt::<Control>().cloned();
        Ok(deliveries(events, control, move |event| {
            wanted(event).then(|| EventObj::from_event(event))
        })
        .boxed())
    }
}

impl EventKind {
    pub(crate) fn of(payload: &EventPayload) -> EventKind {
        match payload {
            EventPayload::MessageCreated { .. } => EventKind::MessageCreated,
            EventPayload::MessageEdited { .. } => EventKind::MessageEdited,
            EventPayload::MessageDeleted { .. } => EventKind::MessageDeleted,
            EventPayload::ReadReceipt { .. } => EventKind::ReadReceipt,
            EventPayload::Typing { .. } => EventKind::Typing,
            EventPayload::MemberJoined { .. } => EventKind::MemberJoined,
            EventPayload::MemberLeft { .. } => EventKind::MemberLeft,
            EventPayload::MembersJoined { .. } => EventKind::MembersJoined,
            EventPayload::MembersLeft { .. } => EventKind::MembersLeft,
            EventPayload::ChannelUpdated { .. } => EventKind::ChannelUpdated,
            EventPayload::ChannelDeleted => EventKind::ChannelDeleted,
            EventPayload::ReactionAdded { .. } => EventKind::ReactionAdded,
            EventPayload::ReactionRemoved { .. } => EventKind::ReactionRemoved,
            EventPayload::Presence { .. } => EventKind::PresenceChanged,
        }
    }
}
