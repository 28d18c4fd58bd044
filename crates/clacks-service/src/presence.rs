//! Presence: who is online (a user is while any node holds an
//! authenticated connection of theirs; see [`clacks_delivery::Presence`]),
//! when they were last seen, and the `presence` events of small channels.
//!
//! Costs, so that a connection never costs O(members): the table is kept by
//! the delivery layer in O(1) per first connection and last close. Each
//! online/offline transition of a user (not each socket) costs every node
//! one bounded store query, the user's channels of at most
//! [`crate::Limits::presence_events_max_members`] members (at most
//! [`MAX_PRESENCE_CHANNELS`]), and an ephemeral event to this node's
//! subscribers of each. Larger channels get no events: their online members
//! are read on demand ([`ChatService::online_members_for`]).

use std::sync::Arc;

use clacks_core::{ChannelId, EventPayload, Result, UserId};
use clacks_delivery::{Hub, PresenceChange, PresenceStatus};
use clacks_store::Store;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::service::{ChatService, ephemeral_event};

/// Most channels one presence transition is told to.
pub const MAX_PRESENCE_CHANNELS: u32 = 1_000;
/// Members read at once while looking for a channel's online ones.
const SCAN_PAGE: u32 = 1_000;
/// Query-cost units a client pays for each page of members read beyond
/// the first: a fetch (10) and its rows, as a 1,000-row list costs in a
/// GraphQL query. Without it, one member of a huge channel with few
/// members online could make each cheap-looking `presence(channel)` read
/// the whole member list, again and again.
const SCAN_PAGE_COST: u64 = 10 + SCAN_PAGE as u64;

/// Tells the small channels of each user whose presence changed, on this
/// node (every node sees every change, so none is sent over NATS).
pub(crate) async fn tell_small_channels(
    mut changes: mpsc::Receiver<PresenceChange>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    max_members: u32,
) {
    while let Some(change) = changes.recv().await {
        if max_members == 0 {
            continue;
        }
        let channels = match store
            .small_channels_of(&change.user, max_members, MAX_PRESENCE_CHANNELS)
            .await
        {
            Ok(channels) => channels,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a user's channels for a presence event");
                continue;
            }
        };
        for channel in channels {
            let event = ephemeral_event(
                &hub,
                channel,
                EventPayload::Presence {
                    user_id: change.user.clone(),
                    online: change.online,
                    last_seen_at: change.last_seen_at,
                },
            );
            hub.publish(event);
        }
    }
}

impl ChatService {
    /// A user's presence (the caller reached this user through a channel
    /// they share, or it is themselves).
    pub fn presence_of(&self, user: &UserId) -> PresenceStatus {
        self.connections().presence().status(user)
    }

    /// A page of the online members of a channel the caller is in, by user
    /// id: those after `after`, at most `limit` (defaulted and bounded like
    /// every page). A page shorter than `limit` is the last.
    pub async fn online_members_for(
        &self,
        caller: &Caller,
        channel: ChannelId,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<UserId>> {
        self.require_member(caller, channel).await?;
        self.online_members(channel, after, limit, Some(caller))
            .await
    }

    /// A user's presence (management API).
    pub fn admin_user_presence(&self, user: String) -> Result<PresenceStatus> {
        Ok(self.presence_of(&UserId::parse(user)?))
    }

    /// A page of a channel's online members (management API);
    /// `NotFound(Channel)` when it does not exist.
    pub async fn admin_online_members(
        &self,
        channel: ChannelId,
        after: Option<String>,
        limit: Option<u32>,
    ) -> Result<Vec<UserId>> {
        self.online_members(channel, after, limit, None).await
    }

    /// Reads the members after `after` a thousand at a time, keeping the
    /// online ones, until the page is full or the members end: on demand,
    /// O(members after the cursor) in the worst case (few online). A
    /// client `payer` pays [`SCAN_PAGE_COST`] of its query-cost budget for
    /// every page after the first, and is refused (`RATE_LIMITED`) when
    /// the budget runs out.
    async fn online_members(
        &self,
        channel: ChannelId,
        after: Option<String>,
        limit: Option<u32>,
        payer: Option<&Caller>,
    ) -> Result<Vec<UserId>> {
        let limit = self.limits().page(limit) as usize;
        let mut cursor = after.map(UserId::parse).transpose()?;
        let presence = self.connections().presence();
        let mut online = Vec::new();
        for page in 0usize.. {
            if page > 0
                && let Some(caller) = payer
            {
                self.charge_query_cost(caller, SCAN_PAGE_COST)?;
            }
            let members = self
                .store()
                .members_page(channel, cursor.as_ref(), SCAN_PAGE)
                .await?;
            let last_page = members.len() < SCAN_PAGE as usize;
            for member in members {
                if presence.is_online(&member.user_id) {
                    online.push(member.user_id.clone());
                    if online.len() >= limit {
                        return Ok(online);
                    }
                }
                cursor = Some(member.user_id);
            }
            if last_page {
                break;
            }
        }
        Ok(online)
    }
}

/// The default of [`crate::Limits::presence_events_max_members`].
pub const DEFAULT_PRESENCE_EVENTS_MAX_MEMBERS: u32 = 100;
