//! Records as the store returns them.

use serde::{Deserialize, Serialize};

use crate::values::{ChannelId, MessageId, Metadata, Role, Seq, UserId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: ChannelId,
    pub display_name: String,
    pub metadata: Option<Metadata>,
    /// Seq of the newest entry in the channel's stream (0 when empty).
    pub last_seq: Seq,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub channel_id: ChannelId,
    pub user_id: UserId,
    pub role: Role,
    pub joined_at: i64,
    /// The read watermark: every entry with `seq <= last_read_seq` is read.
    pub last_read_seq: Seq,
    /// When the watermark last moved (None: never).
    pub last_read_at: Option<i64>,
}

/// Who sent a message: a member, or the application itself (bots,
/// notifications posted through the management API).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Sender {
    User(UserId),
    System,
}

impl Sender {
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Sender::User(id) => Some(id),
            Sender::System => None,
        }
    }

    /// The id shown where a user id is expected (the original schema's
    /// `sender: User!`): the user's id, or `""` for system messages.
    pub fn display_id(&self) -> &str {
        match self {
            Sender::User(id) => id.as_str(),
            Sender::System => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub seq: Seq,
    pub sender: Sender,
    pub client_message_id: Option<String>,
    /// Empty once deleted: a tombstone keeps seq and sender, not content.
    pub content: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// The thread this message replies in (a top-level message of the
    /// same channel); `None` for a top-level message.
    #[serde(default)]
    pub parent_id: Option<MessageId>,
    /// Replies in this message's thread, tombstones included (0 for a
    /// reply: threads are one level deep).
    #[serde(default)]
    pub reply_count: i64,
    /// When the newest reply was stored.
    #[serde(default)]
    pub last_reply_at: Option<i64>,
    /// Members the sender mentioned (none on a tombstone).
    #[serde(default)]
    pub mentions: Vec<UserId>,
}

impl Message {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// One reaction key on a message as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    pub key: String,
    /// Users who reacted with this key (at least 1).
    pub count: i64,
    /// Whether the viewer is one of them.
    pub reacted_by_me: bool,
}

/// One of the caller's channels with its read state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelSummary {
    pub channel: Channel,
    pub member: Member,
    pub unread_count: i64,
    /// Unread messages that mention the member (as
    /// `Store::unread_mention_count`).
    pub unread_mention_count: i64,
    pub last_message: Option<Message>,
}

/// A member who has read a given message, and when the watermark passed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenBy {
    pub user_id: UserId,
    pub seen_at: i64,
}

/// One move of a member's read watermark. Moves are kept so "when did U see
/// message S" is answerable with one row per move, not one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadMark {
    pub up_to_seq: Seq,
    pub read_at: i64,
}

impl ReadMark {
    /// When a member with these marks (ascending by seq) first read `seq`.
    pub fn seen_at(marks: &[ReadMark], seq: Seq) -> Option<i64> {
        marks
            .iter()
            .filter(|m| m.up_to_seq >= seq)
            .map(|m| m.read_at)
            .min()
    }
}

/// Paging direction over a channel's history, by seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest messages with `seq < before` (or the newest of all),
    /// returned newest first.
    Before(Option<Seq>),
    /// The oldest messages with `seq > after`, returned oldest first.
    After(Seq),
    /// The oldest messages with `after < seq < before` (a window, e.g. a
    /// gap to fill), returned oldest first.
    Between(Seq, Seq),
}

/// Keyset paging over channels by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPage {
    pub after_id: Option<ChannelId>,
    pub limit: u32,
}
