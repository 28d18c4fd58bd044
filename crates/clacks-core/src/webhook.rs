//! Webhooks: what the application's server registers (a URL, a secret, the
//! event types and channels it wants), and the JSON each committed channel
//! event becomes when it is POSTed there.
//!
//! The JSON body of one delivery:
//! `{"id": "<delivery id>", "type": "message.created", "createdAt": ms,
//!   "channelId": n, "seq": n, "data": {...}}`, where `data` is
//! [`webhook_data`]. No I/O here: the store writes these in the event's
//! transaction, the service's worker sends them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::event::{ChannelEvent, EventPayload};
use crate::model::{Channel, Message};
use crate::values::{ChannelId, UserId};

/// The longest webhook URL accepted.
pub const WEBHOOK_URL_MAX_CHARS: usize = 2048;
/// Bounds of a webhook secret given by the application.
pub const WEBHOOK_SECRET_MIN_CHARS: usize = 16;
pub const WEBHOOK_SECRET_MAX_CHARS: usize = 256;
/// Most channels one webhook may list.
pub const WEBHOOK_MAX_CHANNELS: usize = 1000;

/// The kinds of event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookEventType {
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
    /// Several users added by one bulk request: one delivery.
    #[serde(rename = "members.joined")]
    MembersJoined,
    /// Several users removed by one bulk request: one delivery.
    #[serde(rename = "members.left")]
    MembersLeft,
    #[serde(rename = "channel.updated")]
    ChannelUpdated,
    #[serde(rename = "channel.deleted")]
    ChannelDeleted,
    /// A member without a live connection has not read a message a while
    /// after it arrived (one per member and message), for push
    /// notifications. Not a channel event: the worker derives it.
    #[serde(rename = "message.unread_offline")]
    MessageUnreadOffline,
}

impl WebhookEventType {
    pub const ALL: [WebhookEventType; 12] = [
        WebhookEventType::MessageCreated,
        WebhookEventType::MessageEdited,
        WebhookEventType::MessageDeleted,
        WebhookEventType::ReactionAdded,
        WebhookEventType::ReactionRemoved,
        WebhookEventType::MemberJoined,
        WebhookEventType::MemberLeft,
        WebhookEventType::MembersJoined,
        WebhookEventType::MembersLeft,
        WebhookEventType::ChannelUpdated,
        WebhookEventType::ChannelDeleted,
        WebhookEventType::MessageUnreadOffline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::MessageCreated => "message.created",
            WebhookEventType::MessageEdited => "message.edited",
            WebhookEventType::MessageDeleted => "message.deleted",
            WebhookEventType::ReactionAdded => "reaction.added",
            WebhookEventType::ReactionRemoved => "reaction.removed",
            WebhookEventType::MemberJoined => "member.joined",
            WebhookEventType::MemberLeft => "member.left",
            WebhookEventType::MembersJoined => "members.joined",
            WebhookEventType::MembersLeft => "members.left",
            WebhookEventType::ChannelUpdated => "channel.updated",
            WebhookEventType::ChannelDeleted => "channel.deleted",
            WebhookEventType::MessageUnreadOffline => "message.unread_offline",
        }
    }

    pub fn parse(raw: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                Error::invalid(
                    "eventTypes",
                    format!("unknown event type {raw:?} (known: {})", known.join(", ")),
                )
            })
    }

    /// The webhook type of a channel event; `None` for the ephemeral ones
    /// (typing, read receipts, presence), which are never sent.
    pub fn of(payload: &EventPayload) -> Option<Self> {
        Some(match payload {
            EventPayload::MessageCreated { .. } => WebhookEventType::MessageCreated,
            EventPayload::MessageEdited { .. } => WebhookEventType::MessageEdited,
            EventPayload::MessageDeleted { .. } => WebhookEventType::MessageDeleted,
            EventPayload::ReactionAdded { .. } => WebhookEventType::ReactionAdded,
            EventPayload::ReactionRemoved { .. } => WebhookEventType::ReactionRemoved,
            EventPayload::MemberJoined { .. } => WebhookEventType::MemberJoined,
            EventPayload::MemberLeft { .. } => WebhookEventType::MemberLeft,
            EventPayload::MembersJoined { .. } => WebhookEventType::MembersJoined,
            EventPayload::MembersLeft { .. } => WebhookEventType::MembersLeft,
            EventPayload::ChannelUpdated { .. } => WebhookEventType::ChannelUpdated,
            EventPayload::ChannelDeleted => WebhookEventType::ChannelDeleted,
            EventPayload::ReadReceipt { .. }
            | EventPayload::Typing { .. }
            | EventPayload::Presence { .. } => return None,
        })
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An absolute `http` or `https` URL with a host and no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::invalid("url", reason.to_owned());
        if raw.chars().count() > WEBHOOK_URL_MAX_CHARS {
            return Err(invalid("is longer than 2048 characters"));
        }
        let url = url::Url::parse(raw).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must be an http:// or https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "must not carry credentials (the signature authenticates Clacks)",
            ));
        }
        if url.fragment().is_some() {
            return Err(invalid("must not have a #fragment"));
        }
        Ok(WebhookUrl(url.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key a webhook's requests are signed with: 16 to 256 printable ASCII
/// characters, no whitespace.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<Self> {
        let chars = raw.chars().count();
        if !(WEBHOOK_SECRET_MIN_CHARS..=WEBHOOK_SECRET_MAX_CHARS).contains(&chars) {
            return Err(Error::invalid(
                "secret",
                "must be 16 to 256 characters (or left out: one is generated)",
            ));
        }
        if !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::invalid(
                "secret",
                "must be printable ASCII without whitespace",
            ));
        }
        Ok(WebhookSecret(raw.to_owned()))
    }

    /// A stored secret (validated when it was stored).
    pub fn from_trusted(raw: String) -> Self {
        WebhookSecret(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// A registered webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub secret: WebhookSecret,
    /// Empty: every event type.
    pub event_types: Vec<WebhookEventType>,
    /// `None`: every channel.
    pub channel_ids: Option<Vec<ChannelId>>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Webhook {
    /// Whether an event of this type in this channel goes to this webhook.
    pub fn wants(&self, event_type: WebhookEventType, channel: ChannelId) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.contains(&event_type))
            && self
                .channel_ids
                .as_ref()
                .is_none_or(|channels| channels.contains(&channel))
    }
}

/// What a delivery attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; another attempt is scheduled.
    Retrying,
    /// It failed and was the last attempt (max attempts or max age).
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
        }
    }

    pub fn from_stored(raw: &str) -> Self {
        match raw {
            "delivered" => AttemptOutcome::Delivered,
            "retrying" => AttemptOutcome::Retrying,
            _ => AttemptOutcome::Failed,
        }
    }
}

/// One attempt to deliver one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// The delivery's id (the `Clacks-Delivery` header), the same on every
    /// attempt of one delivery.
    pub delivery_id: String,
    pub event_type: String,
    pub channel_id: Option<ChannelId>,
    pub seq: Option<i64>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub attempted_at: i64,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed without a status (connection refused, timeout), or a
    /// short reason for a non-2xx status.
    pub error: Option<String>,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
}

/// The `data` of a webhook body for a committed event, with its type;
/// `None` for events that are never sent.
pub fn webhook_data(event: &ChannelEvent) -> Option<(WebhookEventType, Value)> {
    let event_type = WebhookEventType::of(&event.payload)?;
    let data = match &event.payload {
        EventPayload::MessageCreated { message }
        | EventPayload::MessageEdited { message }
        | EventPayload::MessageDeleted { message } => json!({ "message": message_json(message) }),
        EventPayload::ReactionAdded {
            message_id,
            parent_id,
            user_id,
            key,
            count,
        }
        | EventPayload::ReactionRemoved {
            message_id,
            parent_id,
            user_id,
            key,
            count,
        } => json!({
            "messageId": message_id.0,
            "parentId": parent_id.map(|p| p.0),
            "userId": user_id.as_str(),
            "key": key,
            "count": count,
        }),
        EventPayload::MemberJoined { user_id, role } => {
            json!({ "userId": user_id.as_str(), "role": role.as_str() })
        }
        EventPayload::MemberLeft { user_id } => json!({ "userId": user_id.as_str() }),
        EventPayload::MembersJoined { batch, role } => {
            let mut data = member_batch_json(batch);
            data["role"] = json!(role.as_str());
            data
        }
        EventPayload::MembersLeft { batch } => member_batch_json(batch),
        EventPayload::ChannelUpdated { channel } => json!({ "channel": channel_json(channel) }),
        EventPayload::ChannelDeleted => json!({}),
        EventPayload::ReadReceipt { .. }
        | EventPayload::Typing { .. }
        | EventPayload::Presence { .. } => return None,
    };
    Some((event_type, data))
}

/// `{"userIds": [...], "count": n, "truncated": bool}`: `userIds` is
/// empty when `truncated` (more users than an event lists; read the
/// channel's members instead).
fn member_batch_json(batch: &crate::event::MemberBatch) -> Value {
    json!({
        "userIds": batch.user_ids.iter().map(UserId::as_str).collect::<Vec<_>>(),
        "count": batch.count,
        "truncated": batch.truncated,
    })
}

/// The body POSTed for one delivery of an event.
pub fn webhook_body(
    delivery_id: &str,
    event_type: &str,
    created_at: i64,
    channel: Option<ChannelId>,
    seq: Option<i64>,
    data: Value,
) -> String {
    json!({
        "id": delivery_id,
        "type": event_type,
        "createdAt": created_at,
        "channelId": channel.map(|c| c.0),
        "seq": seq,
        "data": data,
    })
    .to_string()
}

/// A message as the management API shows it.
fn message_json(message: &Message) -> Value {
    json!({
        "id": message.id.0,
        "channelId": message.channel_id.0,
        "seq": message.seq,
        "senderId": message.sender.user_id().map(UserId::as_str),
        "content": message.content,
        "clientMessageId": message.client_message_id,
        "createdAt": message.created_at,
        "editedAt": message.edited_at,
        "deletedAt": message.deleted_at,
        "parentId": message.parent_id.map(|p| p.0),
        "mentions": message.mentions.iter().map(UserId::as_str).collect::<Vec<_>>(),
    })
}

fn channel_json(channel: &Channel) -> Value {
    json!({
        "id": channel.id.0,
        "displayName": channel.display_name,
        "metadata": channel.metadata.as_ref().map(|m| m.as_value().clone()),
        "lastSeq": channel.last_seq,
        "createdAt": channel.created_at,
        "updatedAt": channel.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/x?y=1").is_ok());
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_bounded_printable_ascii() {
        assert!(WebhookSecret::parse("0123456789abcdef").is_ok());
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse("0123456789 abcdef").is_err());
        assert!(WebhookSecret::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn event_types_round_trip() {
        for t in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::parse(t.as_str()), Ok(t));
        }
        assert!(WebhookEventType::parse("message.typing").is_err());
    }
}
