//! Events delivered to subscribers.
//!
//! Durable events (messages created / edited / deleted, reactions added /
//! removed, members joined / left, channel updated) take the channel's next `seq` in the transaction
//! that stores them, so a client that remembers the last seq it saw can
//! resume without gaps or duplicates. Ephemeral events (typing, read
//! receipts, presence, channel deleted) are never stored; they carry the channel's
//! current seq as a position marker and `durable == false`.

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Message};
use crate::values::{ChannelId, MessageId, Role, Seq, UserId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelEvent {
    pub channel_id: ChannelId,
    pub seq: Seq,
    pub durable: bool,
    pub at: i64,
    pub payload: EventPayload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventPayload {
    MessageCreated {
        message: Message,
    },
    MessageEdited {
        message: Message,
    },
    MessageDeleted {
        message: Message,
    },
    MemberJoined {
        user_id: UserId,
        role: Role,
    },
    MemberLeft {
        user_id: UserId,
    },
    ChannelUpdated {
        channel: Channel,
    },
    ChannelDeleted,
    /// A user reacted to a message; `count` is how many users have
    /// reacted with `key` to it now (this one included).
    ReactionAdded {
        message_id: MessageId,
        /// The thread of the message (its parent), if it is a reply.
        #[serde(default)]
        parent_id: Option<MessageId>,
        user_id: UserId,
        key: String,
        count: i64,
    },
    /// A user took their reaction back; `count` is how many are left.
    ReactionRemoved {
        message_id: MessageId,
        #[serde(default)]
        parent_id: Option<MessageId>,
        user_id: UserId,
        key: String,
        count: i64,
    },
    ReadReceipt {
        user_id: UserId,
        last_read_seq: Seq,
    },
    Typing {
        user_id: UserId,
    },
    /// A member came online (their first live connection in the cluster)
    /// or went offline (their last one closed, or the node holding it went
    /// silent). Ephemeral, sent only to channels of up to the configured
    /// member count.
    Presence {
        user_id: UserId,
        online: bool,
        /// When their last connection closed (ms), when offline.
        #[serde(default)]
        last_seen_at: Option<i64>,
    },
}

impl EventPayload {
    /// The thread an event belongs to, named by its top-level message: a
    /// message's (or a reaction's) parent, or the message itself when it
    /// is top-level. `None` for events about no message.
    pub fn thread(&self) -> Option<MessageId> {
        match self {
            EventPayload::MessageCreated { message }
            | EventPayload::MessageEdited { message }
            | EventPayload::MessageDeleted { message } => {
                Some(message.parent_id.unwrap_or(message.id))
            }
            EventPayload::ReactionAdded {
                message_id,
                parent_id,
                ..
            }
            | EventPayload::ReactionRemoved {
                message_id,
                parent_id,
                ..
            } => Some(parent_id.unwrap_or(*message_id)),
            _ => None,
        }
    }

    /// The stored `kind` of a durable event other than message creation
    /// (messages are their own rows).
    pub fn stored_kind(&self) -> Option<&'static str> {
        Some(match self {
            EventPayload::MessageEdited { .. } => "message_edited",
            EventPayload::MessageDeleted { .. } => "message_deleted",
            EventPayload::MemberJoined { .. } => "member_joined",
            EventPayload::MemberLeft { .. } => "member_left",
            EventPayload::ChannelUpdated { .. } => "channel_updated",
            EventPayload::ReactionAdded { .. } => "reaction_added",
            EventPayload::ReactionRemoved { .. } => "reaction_removed",
            _ => return None,
        })
    }
}
