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
    /// Several users added by one bulk request, at one seq (a request
    /// adding one user is a [`EventPayload::MemberJoined`]).
    MembersJoined {
        #[serde(flatten)]
        batch: MemberBatch,
        role: Role,
    },
    /// Several users removed by one bulk request, at one seq.
    MembersLeft {
        #[serde(flatten)]
        batch: MemberBatch,
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

/// Most users a batched membership event lists; beyond this it carries
/// only the count (a replay of the channel reads one small event per bulk
/// request, whatever its size), and clients refetch the member list.
pub const MEMBER_BATCH_LISTED: usize = 100;

/// The users of one bulk membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberBatch {
    /// The users, when `count <= MEMBER_BATCH_LISTED`; empty otherwise.
    pub user_ids: Vec<UserId>,
    pub count: u64,
    /// `true` when `user_ids` was left out for size.
    pub truncated: bool,
    /// Every user of the change, for the hub: filled on the node that made
    /// the change, and where a node read the change back it looked them
    /// up ([`MemberBatch::needs_lookup`]). Never sent anywhere (it can be
    /// 10,000 ids: more than a NATS message holds), never shown.
    #[serde(skip)]
    pub affected: Vec<UserId>,
}

impl MemberBatch {
    /// The batch of `users` (all of them kept in `affected`).
    pub fn of(users: Vec<UserId>) -> Self {
        let count = users.len() as u64;
        let truncated = users.len() > MEMBER_BATCH_LISTED;
        MemberBatch {
            user_ids: if truncated { Vec::new() } else { users.clone() },
            count,
            truncated,
            affected: users,
        }
    }

    /// Whether the users are known here: listed, or looked up.
    pub fn needs_lookup(&self) -> bool {
        self.truncated && self.affected.is_empty()
    }

    /// The users known to be in the change: all of them unless
    /// [`MemberBatch::needs_lookup`] (or only the ones looked up).
    pub fn users(&self) -> &[UserId] {
        if self.truncated {
            &self.affected
        } else {
            &self.user_ids
        }
    }
}

impl EventPayload {
    /// The batch of a batched membership event.
    pub fn member_batch(&self) -> Option<&MemberBatch> {
        match self {
            EventPayload::MembersJoined { batch, .. } | EventPayload::MembersLeft { batch } => {
                Some(batch)
            }
            _ => None,
        }
    }

    pub fn member_batch_mut(&mut self) -> Option<&mut MemberBatch> {
        match self {
            EventPayload::MembersJoined { batch, .. } | EventPayload::MembersLeft { batch } => {
                Some(batch)
            }
            _ => None,
        }
    }

    /// Whether `user` joined (`Some(true)`) or left (`Some(false)`) by
    /// this event, single or batched.
    pub fn membership_of(&self, user: &UserId) -> Option<bool> {
        match self {
            EventPayload::MemberJoined { user_id, .. } if user_id == user => Some(true),
            EventPayload::MemberLeft { user_id } if user_id == user => Some(false),
            EventPayload::MembersJoined { batch, .. } if batch.users().contains(user) => Some(true),
            EventPayload::MembersLeft { batch } if batch.users().contains(user) => Some(false),
            _ => None,
        }
    }

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
            EventPayload::MembersJoined { .. } => "members_joined",
            EventPayload::MembersLeft { .. } => "members_left",
            EventPayload::ChannelUpdated { .. } => "channel_updated",
            EventPayload::ReactionAdded { .. } => "reaction_added",
            EventPayload::ReactionRemoved { .. } => "reaction_removed",
            _ => return None,
        })
    }
}
