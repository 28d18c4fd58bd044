//! The JSON shapes of the management API. The original endpoints' shapes
//! (SPEC section 4) are kept field for field; extensions use richer
//! camelCase objects. Every timestamp is milliseconds since the Unix epoch.

use std::borrow::Cow;

use clacks_core::{Channel, ChannelSummary, Message};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

// ----- validation rules, as documented ------------------------------------
//
// The service validates (`clacks_core::values`); these patterns only tell
// clients and schemathesis the same rules: no control characters, not
// blank, identifiers without surrounding whitespace.

/// No control characters, no leading or trailing whitespace.
const IDENTIFIER_PATTERN: &str =
    r"^[^\s\x00-\x1F\x7F-\x9F]([^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F])?$";

/// The schema of a user id (the `UserId` component).
pub struct UserIdSchema;

impl PartialSchema for UserIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The application's opaque user id: 1 to 200 characters, no control \
                 characters, no leading or trailing whitespace.",
            ))
            .min_length(Some(1))
            .max_length(Some(clacks_core::USER_ID_MAX_CHARS))
            .pattern(Some(IDENTIFIER_PATTERN))
            .into()
    }
}

impl ToSchema for UserIdSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("UserId")
    }
}

/// The schema of a member's role (the `Role` component).
pub struct RoleSchema;

impl PartialSchema for RoleSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A member's role: free-form, 1 to 32 characters, no control characters, \
                 no leading or trailing whitespace (default `member`).",
            ))
            .min_length(Some(1))
            .max_length(Some(clacks_core::ROLE_MAX_CHARS))
            .pattern(Some(IDENTIFIER_PATTERN))
            .into()
    }
}

impl ToSchema for RoleSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Role")
    }
}

// ----- original shapes --------------------------------------------------

/// One entry of the original channel list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelListItem {
    pub id: i64,
    pub display_name: String,
}

/// `POST /channel` request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateChannel {
    /// 1 to 150 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 150,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub display_name: String,
    /// Users to add as members (at most 1000).
    #[serde(default, deserialize_with = "null_as_default")]
    #[schema(value_type = Option<Vec<UserIdSchema>>, max_items = 1000)]
    pub initial_users: Vec<String>,
    /// Extension: a JSON object kept with the channel (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `POST /channel` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedChannel {
    pub id: i64,
}

/// `GET /channel/{channelId}` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDetail {
    pub display_name: String,
    /// Ids of the channel's members.
    pub users: Vec<String>,
}

/// `PUT /channel/{channelId}/users` request body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMember {
    /// The user to add.
    #[schema(value_type = UserIdSchema)]
    pub uid: String,
    /// Extension: the member's role (default `member`).
    #[serde(default)]
    #[schema(value_type = Option<RoleSchema>)]
    pub role: Option<String>,
}

// ----- extension shapes -------------------------------------------------

/// `PATCH /channel/{channelId}/users` request body: users to add and
/// users to remove, together at most the configured maximum
/// (`CLACKS_MAX_BULK_MEMBERS`, default 10,000). A user may not be in both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkMembers {
    /// Users to add; those already members are left as they are.
    #[serde(default)]
    #[schema(value_type = Vec<UserIdSchema>)]
    pub add: Vec<String>,
    /// Users to remove; those who are not members are skipped.
    #[serde(default)]
    #[schema(value_type = Vec<UserIdSchema>)]
    pub remove: Vec<String>,
    /// The role of the added members (default `member`).
    #[serde(default)]
    #[schema(value_type = Option<RoleSchema>)]
    pub role: Option<String>,
}

/// What a bulk membership change did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkMembersResult {
    /// Users who became members.
    pub added: usize,
    /// Users to add who already were members.
    pub already_members: usize,
    /// Members who were removed.
    pub removed: usize,
    /// Users to remove who were not members.
    pub not_members: usize,
}

impl From<clacks_service::MembershipChange> for BulkMembersResult {
    fn from(change: clacks_service::MembershipChange) -> Self {
        BulkMembersResult {
            added: change.added,
            already_members: change.already_members,
            removed: change.removed,
            not_members: change.not_members,
        }
    }
}

/// Paging of `GET /channel/{channelId}/users`. Giving either parameter
/// switches the answer from the original bare array to a [`MemberPage`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberListQuery {
    /// Page size: default 50; a value outside 1 to 200 is brought into
    /// that range.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
    /// Only members whose user id sorts after this one (the previous
    /// page's `nextAfter`).
    #[param(value_type = Option<UserIdSchema>)]
    pub after: Option<String>,
}

impl MemberListQuery {
    pub fn is_paged(&self) -> bool {
        self.limit.is_some() || self.after.is_some()
    }
}

/// A member of a channel.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberDto {
    #[schema(value_type = UserIdSchema)]
    pub uid: String,
    pub role: String,
    /// When they joined (ms since the epoch).
    pub joined_at: i64,
    /// Their read watermark: every seq up to it is read.
    pub last_read_seq: i64,
}

impl From<clacks_core::Member> for MemberDto {
    fn from(member: clacks_core::Member) -> Self {
        MemberDto {
            uid: member.user_id.into_string(),
            role: member.role.as_str().to_owned(),
            joined_at: member.joined_at,
            last_read_seq: member.last_read_seq,
        }
    }
}

/// A page of members, ordered by user id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPage {
    pub items: Vec<MemberDto>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(value_type = Option<UserIdSchema>)]
    pub next_after: Option<String>,
}

/// `GET /channel/{channelId}/users`: the original bare array of user ids,
/// or a page when a paging parameter was given.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MemberList {
    All(Vec<String>),
    Page(MemberPage),
}

/// A channel, as the extension endpoints return it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Channel)]
pub struct ChannelDto {
    pub id: i64,
    pub display_name: String,
    /// The application's JSON object, or null.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Seq of the newest entry in the channel's stream (0 when empty).
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Channel> for ChannelDto {
    fn from(channel: Channel) -> Self {
        ChannelDto {
            id: channel.id.0,
            display_name: channel.display_name,
            metadata: channel.metadata.map(|m| m.as_value().clone()),
            last_seq: channel.last_seq,
            created_at: channel.created_at,
            updated_at: channel.updated_at,
        }
    }
}

/// Paging of `GET /channel`. Giving either parameter switches the answer
/// from the original bare array to a [`ChannelPage`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChannelListQuery {
    /// Page size: default 50; a value outside 1 to 200 is brought into
    /// that range.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
    /// Only channels with an id greater than this (the previous page's
    /// `nextAfter`).
    pub after: Option<i64>,
}

impl ChannelListQuery {
    pub fn is_paged(&self) -> bool {
        self.limit.is_some() || self.after.is_some()
    }
}

/// A page of channels, ordered by id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelPage {
    pub items: Vec<ChannelDto>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

/// `GET /channel`: the original bare array, or a page when a paging
/// parameter was given.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ChannelList {
    All(Vec<ChannelListItem>),
    Page(ChannelPage),
}

/// `PATCH /channel/{channelId}` request body: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateChannel {
    /// New display name, 1 to 150 characters, not blank, no control
    /// characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 150,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub display_name: Option<String>,
    /// New metadata object; null removes it, absent leaves it unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<Value>>,
}

/// A message. Deleted messages stay as tombstones: same id, seq and sender,
/// empty content, `deletedAt` set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Message)]
pub struct MessageDto {
    pub id: i64,
    pub channel_id: i64,
    /// Position in the channel's stream: strictly increasing, gap-free.
    pub seq: i64,
    /// The sending user, or null for a system message.
    pub sender_id: Option<String>,
    pub client_message_id: Option<String>,
    pub content: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// The message this one replies to (its thread), or null.
    pub parent_id: Option<i64>,
    /// Replies in this message's thread (tombstones included).
    pub reply_count: i64,
    /// When the newest reply was stored, or null.
    pub last_reply_at: Option<i64>,
    /// The members the message mentions.
    pub mentions: Vec<String>,
}

impl From<Message> for MessageDto {
    fn from(message: Message) -> Self {
        MessageDto {
            id: message.id.0,
            channel_id: message.channel_id.0,
            seq: message.seq,
            sender_id: message.sender.user_id().map(|u| u.as_str().to_owned()),
            client_message_id: message.client_message_id,
            content: message.content,
            created_at: message.created_at,
            edited_at: message.edited_at,
            deleted_at: message.deleted_at,
            parent_id: message.parent_id.map(|p| p.0),
            reply_count: message.reply_count,
            last_reply_at: message.last_reply_at,
            mentions: message
                .mentions
                .into_iter()
                .map(|u| u.as_str().to_owned())
                .collect(),
        }
    }
}

/// Seq cursors of `GET /channel/{channelId}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Messages with a seq below this one, newest first (the default
    /// direction; absent with `after` absent: the newest messages).
    pub before: Option<i64>,
    /// Messages with a seq above this one, oldest first; with `before`
    /// too, those between the two (e.g. to fill a gap).
    pub after: Option<i64>,
    /// Page size: default 50; a value outside 1 to 200 is brought into
    /// that range.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
}

/// A page of a channel's history.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// Newest first when paging with `before` (the default), oldest first
    /// with `after`.
    pub items: Vec<MessageDto>,
    /// Pass as `before` for older messages; null when there are none (or
    /// when paging with `after`).
    pub next_before: Option<i64>,
    /// Pass as `after` for newer messages; null when this page reached the
    /// newest (or when paging with `before`).
    pub next_after: Option<i64>,
}

/// Parameters of `GET /search`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find; every one must match. Letters and digits make
    /// words, every other character separates them (none is an operator).
    /// At most 256 characters and 16 words.
    #[param(min_length = 1, max_length = 256)]
    pub q: String,
    /// Only this channel's messages.
    #[param(minimum = 1)]
    pub channel: Option<i64>,
    /// Only the messages of channels this user is a member of (with
    /// `channel`: that channel, which the user must be a member of).
    #[param(value_type = Option<UserIdSchema>)]
    pub user: Option<String>,
    /// Hits per page: default 20, 1 to 100 (others are refused).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The previous page's `next`.
    #[param(pattern = r"^s1\.[0-9a-fA-F]{1,8}$")]
    pub after: Option<String>,
}

/// A message found by `GET /search`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchHitDto {
    /// The message (its `channelId` is its channel).
    pub message: MessageDto,
    /// Relevance, higher is better; each database engine scores its own
    /// way, so a score only orders the hits of one search.
    pub score: f64,
    /// Pass as `after` for the hits ranked below this one.
    pub cursor: String,
}

/// A page of `GET /search`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    /// Best match first, equal matches newest first.
    pub items: Vec<SearchHitDto>,
    /// Pass as `after` for the next page; null on the last one.
    pub next: Option<String>,
}

impl From<clacks_service::SearchResults> for SearchPage {
    fn from(results: clacks_service::SearchResults) -> Self {
        SearchPage {
            items: results
                .hits
                .into_iter()
                .map(|hit| SearchHitDto {
                    message: hit.message.into(),
                    score: hit.score,
                    cursor: hit.cursor,
                })
                .collect(),
            next: results.next,
        }
    }
}

/// `POST /channel/{channelId}/messages` request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostMessage {
    /// Not blank, no NUL; at most the configured message size in bytes of
    /// UTF-8 (default 16 KiB).
    #[schema(min_length = 1, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: String,
    /// Post as this member; absent or null posts a system message.
    #[serde(default)]
    #[schema(value_type = Option<UserIdSchema>)]
    pub sender_id: Option<String>,
    /// Makes the post idempotent: a retry with the same id returns the
    /// original message (status 200) instead of storing a duplicate.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1F\x7F-\x9F]([^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F])?$"
    )]
    pub client_message_id: Option<String>,
    /// Post as a reply in the thread of this message: a top-level message
    /// of the same channel (threads are one level deep), not deleted.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub parent_id: Option<i64>,
    /// Members to mention (at most 50), each a member of the channel.
    #[serde(default)]
    #[schema(value_type = Vec<UserIdSchema>, max_items = 50)]
    pub mentions: Vec<String>,
}

/// One of a user's channels with the user's read state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserChannel {
    pub channel: ChannelDto,
    pub role: String,
    pub joined_at: i64,
    /// The user's read watermark: every seq up to it is read.
    pub last_read_seq: i64,
    pub last_read_at: Option<i64>,
    pub unread_count: i64,
    /// Unread messages that mention the user (same watermark).
    pub unread_mention_count: i64,
    pub last_message: Option<MessageDto>,
}

impl From<ChannelSummary> for UserChannel {
    fn from(summary: ChannelSummary) -> Self {
        UserChannel {
            channel: summary.channel.into(),
            role: summary.member.role.as_str().to_owned(),
            joined_at: summary.member.joined_at,
            last_read_seq: summary.member.last_read_seq,
            last_read_at: summary.member.last_read_at,
            unread_count: summary.unread_count,
            unread_mention_count: summary.unread_mention_count,
            last_message: summary.last_message.map(Into::into),
        }
    }
}

/// Token options on `GET /jwt/{uid}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The `name` claim (the user's display name in GraphQL `me`).
    pub name: Option<String>,
    /// Lifetime in seconds (default: the server's token TTL, one day; at
    /// most one year).
    #[param(minimum = 1, maximum = 31_536_000)]
    pub ttl: Option<u64>,
    /// Extra claims, as a JSON object (URL-encoded), e.g. `{"avatar":"a.png"}`.
    pub claims: Option<String>,
}

/// `POST /jwt` request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestBody {
    /// The user the token speaks for (`sub`).
    #[serde(alias = "uid")]
    #[schema(value_type = UserIdSchema)]
    pub user_id: String,
    /// The `name` claim.
    #[serde(default)]
    pub name: Option<String>,
    /// Extra claims. `sub`, `exp`, `nbf`, `iat`, `iss`, `aud` and `jti` are
    /// set by Clacks and refused here.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub claims: Option<serde_json::Map<String, Value>>,
    /// Lifetime in seconds (default: the server's token TTL, one day; at
    /// most one year).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub ttl: Option<u64>,
}

/// A minted token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// An HS256 JWT for the client API.
    pub token: String,
    /// When it expires (milliseconds since the epoch).
    pub expires_at: i64,
}

/// `POST /users/{uid}/disconnect` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnected {
    /// How many live connections of the user were closed on this node.
    pub closed: u64,
}

/// `GET /users/{uid}/presence` response.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDto {
    /// Holds a live connection to any node.
    pub online: bool,
    /// When their last connection closed (ms since the epoch); null while
    /// online, and when not seen since the server started.
    pub last_seen_at: Option<i64>,
}

impl From<clacks_service::PresenceStatus> for PresenceDto {
    fn from(status: clacks_service::PresenceStatus) -> Self {
        PresenceDto {
            online: status.online,
            last_seen_at: status.last_seen_at,
        }
    }
}

/// Paging of `GET /channel/{channelId}/presence`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// Page size: default 50; a value outside 1 to 200 is brought into
    /// that range.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
    /// Only members whose user id sorts after this one (the previous
    /// page's `nextAfter`).
    #[param(value_type = Option<UserIdSchema>)]
    pub after: Option<String>,
}

/// A page of a channel's online members, ordered by user id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlinePage {
    #[schema(value_type = Vec<UserIdSchema>)]
    pub items: Vec<String>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(value_type = Option<UserIdSchema>)]
    pub next_after: Option<String>,
}

/// `GET /healthz` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

// ----- webhooks (extension) ---------------------------------------------

/// The schema of a channel id in a webhook's list: a positive integer.
pub struct WebhookChannelIdSchema;

impl PartialSchema for WebhookChannelIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(1))
            .into()
    }
}

impl ToSchema for WebhookChannelIdSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositiveChannelId")
    }
}

/// The event types a webhook may subscribe to.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEventType)]
pub enum WebhookEventTypeName {
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "message.edited")]
    MessageEdited,
    #[serde(rename = "message.deleted")]
    MessageDeleted,
    #[serde(rename = "reaction.added")]
    ReactionAdded,
    #[serde(rename = "reaction.removed")]
    ReactionRemoved,
    #[serde(rename = "member.joined")]
    MemberJoined,
    #[serde(rename = "member.left")]
    MemberLeft,
    /// Several users added by one bulk request (`PATCH
    /// /channel/{channelId}/users`): one delivery, `data` =
    /// `{"userIds", "count", "truncated", "role"}`; `userIds` is empty and
    /// `truncated` true beyond 100 users (read the members instead).
    #[serde(rename = "members.joined")]
    MembersJoined,
    /// Several members removed by one bulk request: one delivery, `data`
    /// as for `members.joined` without `role`.
    #[serde(rename = "members.left")]
    MembersLeft,
    #[serde(rename = "channel.updated")]
    ChannelUpdated,
    #[serde(rename = "channel.deleted")]
    ChannelDeleted,
    #[serde(rename = "message.unread_offline")]
    MessageUnreadOffline,
}

/// `POST /webhooks` request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateWebhook {
    /// Where events are POSTed: an absolute `http://` or `https://` URL
    /// (at most 2048 characters, no credentials, no fragment).
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    pub url: String,
    /// The HMAC-SHA256 key of the `Clacks-Signature` header: 16 to 256
    /// printable ASCII characters. Left out: a random one is generated.
    #[serde(default)]
    #[schema(min_length = 16, max_length = 256, pattern = r"^[!-~]+$")]
    pub secret: Option<String>,
    /// The event types to send; left out, null or empty: every type.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schema(value_type = Option<Vec<WebhookEventTypeName>>)]
    pub event_types: Vec<String>,
    /// The channels whose events to send (at most 1000); left out or
    /// null: every channel, including channels created later.
    #[serde(default, deserialize_with = "whole_ids")]
    #[schema(value_type = Option<Vec<WebhookChannelIdSchema>>, max_items = 1000)]
    pub channel_ids: Option<Vec<i64>>,
    /// Default true. A disabled webhook gets nothing (events committed
    /// while it is disabled are not kept for it).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /webhooks/{webhookId}` request body: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048, format = "uri")]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(min_length = 16, max_length = 256, pattern = r"^[!-~]+$")]
    pub secret: Option<String>,
    /// The event types to send; empty: every type.
    #[serde(default)]
    #[schema(value_type = Option<Vec<WebhookEventTypeName>>)]
    pub event_types: Option<Vec<String>>,
    /// The channels to send; null: every channel; absent: unchanged.
    #[serde(default, deserialize_with = "present_ids")]
    #[schema(value_type = Option<Vec<WebhookChannelIdSchema>>, max_items = 1000)]
    pub channel_ids: Option<Option<Vec<i64>>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A webhook.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Webhook)]
pub struct WebhookDto {
    pub id: i64,
    pub url: String,
    /// The signing key (the management API is the application's alone).
    pub secret: String,
    /// Empty: every event type.
    #[schema(value_type = Vec<WebhookEventTypeName>)]
    pub event_types: Vec<String>,
    /// Null: every channel.
    pub channel_ids: Option<Vec<i64>>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<clacks_core::Webhook> for WebhookDto {
    fn from(webhook: clacks_core::Webhook) -> Self {
        WebhookDto {
            id: webhook.id,
            url: webhook.url,
            secret: webhook.secret.as_str().to_owned(),
            event_types: webhook
                .event_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            channel_ids: webhook
                .channel_ids
                .map(|ids| ids.into_iter().map(|c| c.0).collect()),
            enabled: webhook.enabled,
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

/// What an attempt led to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AttemptOutcomeName {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; another attempt is scheduled.
    Retrying,
    /// It failed for good (max attempts or max age reached).
    Failed,
}

/// One attempt to deliver one event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WebhookAttempt)]
pub struct WebhookAttemptDto {
    /// The `Clacks-Delivery` header: the same on every attempt of a delivery.
    pub delivery_id: String,
    #[schema(value_type = WebhookEventTypeName)]
    pub event_type: String,
    pub channel_id: Option<i64>,
    pub seq: Option<i64>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub attempted_at: i64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed (no answer, or a non-2xx status).
    pub error: Option<String>,
    pub duration_ms: i64,
    #[schema(value_type = AttemptOutcomeName)]
    pub outcome: clacks_core::AttemptOutcome,
}

impl From<clacks_core::WebhookAttempt> for WebhookAttemptDto {
    fn from(attempt: clacks_core::WebhookAttempt) -> Self {
        WebhookAttemptDto {
            delivery_id: attempt.delivery_id,
            event_type: attempt.event_type,
            channel_id: attempt.channel_id.map(|c| c.0),
            seq: attempt.seq,
            attempt: attempt.attempt,
            attempted_at: attempt.attempted_at,
            status_code: attempt.status_code,
            error: attempt.error,
            duration_ms: attempt.duration_ms,
            outcome: attempt.outcome,
        }
    }
}

/// `GET /webhooks/{webhookId}/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Most attempts to return, newest first: default 50; a value outside
    /// 1 to 200 is brought into that range.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    pub limit: Option<u32>,
}

/// Tells an absent list (`None`) from an explicit `null` (`Some(None)`).
fn present_ids<'de, D>(deserializer: D) -> Result<Option<Option<Vec<i64>>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Some(whole_ids(deserializer)?))
}

/// A list of ids given as JSON numbers without a fraction (`3` or `3.0`,
/// as for [`whole_number`]), or null.
fn whole_ids<'de, D>(deserializer: D) -> Result<Option<Vec<i64>>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(numbers) = Option::<Vec<serde_json::Number>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    numbers
        .into_iter()
        .map(|number| {
            if let Some(n) = number.as_i64() {
                return Ok(n);
            }
            match number.as_f64() {
                // Exactly representable: within ±2^53, with no fraction.
                Some(f)
                    if f.fract() == 0.0
                        && (-9_007_199_254_740_992.0..9_007_199_254_740_992.0).contains(&f) =>
                {
                    Ok(f as i64)
                }
                _ => Err(serde::de::Error::custom(format!(
                    "expected a whole number as a channel id, got {number}"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `null` read as the type's default (the original clients may send
/// `"initialUsers": null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON number with no fraction, as JSON Schema's `integer` takes it:
/// `3600` and `3600.0` alike (some JSON encoders write every number with a
/// fraction).
fn whole_number<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        // Exactly representable: below 2^53, with no fraction.
        Some(f) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => {
            Ok(Some(f as u64))
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number of seconds, got {number}"
        ))),
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D>(deserializer: D) -> Result<Option<Option<Value>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Some(Option::<Value>::deserialize(deserializer)?))
}
