//! The fan-out hub with a per-channel sequencer.
//!
//! Committed events reach the hub out of order now and then: two
//! transactions commit seq 5 and 6 in order, but the task that committed 6
//! may publish first (and, with several nodes, NATS may lose or delay one).
//! Each channel with subscribers therefore keeps the next seq it expects;
//! events ahead of it wait in a small buffer, and a gap that persists past
//! `gap_timeout` is filled from the database through [`Backfill`]. So every
//! subscriber sees a channel's durable events exactly in seq order, without
//! gaps, and the database is the only source of truth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use clacks_core::{ChannelEvent, ChannelId, EventPayload, Seq, UserId};
use futures::Stream;
use futures::future::BoxFuture;

use crate::SharedEvent;
use crate::queue::DeliveryQueue;

/// Where the hub reads what it missed: the database.
pub trait Backfill: Send + Sync + 'static {
    /// Durable events with `seq > after`, ascending, at most `limit`.
    fn events_after(
        &self,
        channel: ChannelId,
        after: Seq,
        limit: u32,
    ) -> BoxFuture<'_, clacks_core::Result<Vec<ChannelEvent>>>;
    /// The channel's newest committed seq (`NotFound` once deleted).
    fn last_seq(&self, channel: ChannelId) -> BoxFuture<'_, clacks_core::Result<Seq>>;
}

/// What a subscription wants to receive.
#[derive(Debug, Clone)]
pub enum Interest {
    /// One channel.
    Channel(ChannelId),
    /// Every channel the user is a member of, following membership changes
    /// live: the initial set is given, joins add to it, leaves remove. The
    /// rest of the set, read after registering, comes with
    /// [`Hub::add_channels`].
    AllChannels(Vec<ChannelId>),
}

/// Why a subscription ended (after its last event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The subscriber is no longer a member of the (single) channel.
    Removed,
    /// The (single) channel was deleted.
    ChannelDeleted,
    /// The subscriber did not keep up and its bounded queue filled.
    Overflow,
}

#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<SharedEvent>),
    End(EndReason),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub subscriptions: usize,
    pub channels: usize,
    /// Durable events waiting for a missing predecessor.
    pub pending_events: usize,
}

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Events queued per subscription before it is ended as too slow.
    pub queue_capacity: usize,
    /// How long an out-of-order event waits for its predecessor before the
    /// gap is filled from the database.
    pub gap_timeout: Duration,
    /// Events buffered per channel before the gap is filled at once.
    pub max_pending: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            queue_capacity: 1024,
            gap_timeout: Duration::from_millis(50),
            max_pending: 4096,
        }
    }
}

struct Sub {
    user: UserId,
    all_channels: bool,
    queue: Arc<DeliveryQueue>,
    /// All-channels subscriptions until [`Hub::add_channels`]: the
    /// channels the user left meanwhile, with the `member_left` seq.
    left_while_listing: Option<HashMap<ChannelId, Seq>>,
}

#[derive(Default)]
struct ChannelEntry {
    subs: HashSet<u64>,
    /// The next durable seq to deliver; `None` until the baseline is known.
    next_seq: Option<Seq>,
    /// Durable events that arrived ahead of `next_seq`.
    pending: BTreeMap<Seq, Arc<SharedEvent>>,
    /// A backfill task for this channel is scheduled or running.
    backfilling: bool,
    /// Read everything after `next_seq` from the database even without a
    /// visible gap (after a NATS reconnect, events may be missing at the
    /// tail where no later event reveals them).
    catch_up: bool,
}

#[derive(Default)]
struct Registry {
    subs: HashMap<u64, Sub>,
    channels: HashMap<ChannelId, ChannelEntry>,
    /// All-channels subscriptions by user, to follow their joins.
    all_by_user: HashMap<UserId, HashSet<u64>>,
    /// Channels each subscription is routed from (to unregister).
    routes: HashMap<u64, HashSet<ChannelId>>,
}

impl Registry {
    /// Records a membership change of `user` for their all-channels
    /// subscriptions still reading their channel list.
    fn note_membership(&mut self, user: &UserId, channel: ChannelId, left_at: Option<Seq>) {
        let Registry {
            subs, all_by_user, ..
        } = self;
        for id in all_by_user.get(user).into_iter().flatten() {
            if let Some(Sub {
                left_while_listing: Some(left),
                ..
            }) = subs.get_mut(id)
            {
                match left_at {
                    Some(seq) => left.insert(channel, seq),
                    None => left.remove(&channel),
                };
            }
        }
    }

    fn route(&mut self, id: u64, channel: ChannelId) {
        self.channels.entry(channel).or_default().subs.insert(id);
        self.routes.entry(id).or_default().insert(channel);
    }

    fn unroute(&mut self, id: u64, channel: ChannelId) {
        if let Some(entry) = self.channels.get_mut(&channel) {
            entry.subs.remove(&id);
            if entry.subs.is_empty() {
                self.channels.remove(&channel);
            }
        }
        if let Some(routes) = self.routes.get_mut(&id) {
            routes.remove(&channel);
        }
    }

    fn remove(&mut self, id: u64) {
        for channel in self.routes.remove(&id).unwrap_or_default() {
            if let Some(entry) = self.channels.get_mut(&channel) {
                entry.subs.remove(&id);
                if entry.subs.is_empty() {
                    self.channels.remove(&channel);
                }
            }
        }
        if let Some(sub) = self.subs.remove(&id) {
            sub.queue.close();
            if let Some(set) = self.all_by_user.get_mut(&sub.user) {
                set.remove(&id);
                if set.is_empty() {
                    self.all_by_user.remove(&sub.user);
                }
            }
        }
    }

    /// Queues `event` for one subscription; records an overflow.
    fn push(&self, id: u64, event: &Arc<SharedEvent>, ended: &mut Vec<(u64, Option<EndReason>)>) {
        if let Some(sub) = self.subs.get(&id)
            && !sub.queue.push(Delivery::Event(event.clone()))
        {
            ended.push((id, None));
        }
    }

    /// Hands `event` (in order) to the channel's subscriptions and applies
    /// the membership change it carries.
    fn deliver(&mut self, event: &Arc<SharedEvent>) {
        let channel = event.channel_id;
        let mut ended: Vec<(u64, Option<EndReason>)> = Vec::new();
        if let Some(entry) = self.channels.get(&channel) {
            for id in &entry.subs {
                self.push(*id, event, &mut ended);
            }
        }
        match &event.payload {
            EventPayload::MemberJoined { user_id, .. } => {
                self.note_membership(user_id, channel, None);
                let ids: Vec<u64> = self
                    .all_by_user
                    .get(user_id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    if !self.routes.get(&id).is_some_and(|r| r.contains(&channel)) {
                        // The joiner's all-channels stream starts with the
                        // join itself.
                        self.route(id, channel);
                        self.push(id, event, &mut ended);
                    }
                }
            }
            EventPayload::MemberLeft { user_id } => {
                self.note_membership(user_id, channel, Some(event.seq));
                let leaving: Vec<u64> = self
                    .channels
                    .get(&channel)
                    .map(|e| {
                        e.subs
                            .iter()
                            .copied()
                            .filter(|id| self.subs.get(id).is_some_and(|s| &s.user == user_id))
                            .collect()
                    })
                    .unwrap_or_default();
                for id in leaving {
                    if self.subs.get(&id).is_some_and(|s| s.all_channels) {
                        self.unroute(id, channel);
                    } else {
                        ended.push((id, Some(EndReason::Removed)));
                    }
                }
            }
            EventPayload::ChannelDeleted => {
                let subs: Vec<u64> = self
                    .channels
                    .get(&channel)
                    .map(|e| e.subs.iter().copied().collect())
                    .unwrap_or_default();
                for id in subs {
                    if self.subs.get(&id).is_some_and(|s| s.all_channels) {
                        self.unroute(id, channel);
                    } else {
                        ended.push((id, Some(EndReason::ChannelDeleted)));
                    }
                }
            }
            _ => {}
        }
        for (id, reason) in ended {
            if let (Some(reason), Some(sub)) = (reason, self.subs.get(&id)) {
                sub.queue.push_last(Delivery::End(reason));
            }
            if reason.is_none() {
                metrics::counter!("clacks_slow_consumer_overflows_total").increment(1);
            }
            // Closing lets the stream drain what is queued and then end
            // with the recorded reason.
            self.remove(id);
        }
        metrics::counter!("clacks_events_routed_total").increment(1);
    }

    /// Delivers `event` if it is the next one, buffers it if it is early,
    /// drops it if it was delivered already. Returns whether a backfill
    /// should be scheduled.
    fn sequence(&mut self, event: Arc<SharedEvent>, max_pending: usize) -> Sequenced {
        let channel = event.channel_id;
        let Some(entry) = self.channels.get_mut(&channel) else {
            // Nobody here listens to this channel, unless a user with an
            // all-channels subscription just joined it: their stream starts
            // at the join.
            if let EventPayload::MemberLeft { user_id } = &event.payload {
                self.note_membership(user_id, channel, Some(event.seq));
            }
            if let EventPayload::MemberJoined { user_id, .. } = &event.payload
                && self.all_by_user.contains_key(user_id)
            {
                self.channels.insert(
                    channel,
                    ChannelEntry {
                        next_seq: Some(event.seq + 1),
                        ..ChannelEntry::default()
                    },
                );
                self.deliver(&event);
            }
            return Sequenced::Done;
        };
        let Some(next) = entry.next_seq else {
            entry.pending.insert(event.seq, event);
            return Sequenced::NeedsBackfill;
        };
        if event.seq < next {
            return Sequenced::Done;
        }
        if event.seq > next {
            entry.pending.insert(event.seq, event);
            if entry.pending.len() >= max_pending {
                return Sequenced::NeedsBackfillNow;
            }
            return Sequenced::NeedsBackfill;
        }
        entry.next_seq = Some(next + 1);
        self.deliver(&event);
        self.flush(channel);
        Sequenced::Done
    }

    /// Delivers buffered events that are now next in line.
    fn flush(&mut self, channel: ChannelId) {
        loop {
            let Some(entry) = self.channels.get_mut(&channel) else {
                return;
            };
            let Some(next) = entry.next_seq else { return };
            // Drop what is already behind, then take the next one if here.
            while entry
                .pending
                .first_key_value()
                .is_some_and(|(seq, _)| *seq < next)
            {
                entry.pending.pop_first();
            }
            let Some(event) = entry.pending.remove(&next) else {
                return;
            };
            entry.next_seq = Some(next + 1);
            self.deliver(&event);
        }
    }
}

enum Sequenced {
    Done,
    NeedsBackfill,
    NeedsBackfillNow,
}

/// The node-local fan-out hub.
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    settings: HubSettings,
    backfill: Option<Arc<dyn Backfill>>,
    this: Weak<Hub>,
}

impl Hub {
    /// A hub without a database behind it: the first event of a channel
    /// sets its baseline and gaps are never filled (tests, tools).
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::with_backfill(
            HubSettings {
                queue_capacity: capacity,
                ..HubSettings::default()
            },
            None,
        )
    }

    pub fn with_backfill(settings: HubSettings, backfill: Option<Arc<dyn Backfill>>) -> Arc<Self> {
        Arc::new_cyclic(|this| Hub {
            registry: RwLock::new(Registry::default()),
            next_id: AtomicU64::new(1),
            settings: HubSettings {
                queue_capacity: settings.queue_capacity.max(1),
                max_pending: settings.max_pending.max(1),
                ..settings
            },
            backfill,
            this: this.clone(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a subscription. Events published after this returns are
    /// delivered to it, in seq order per channel, starting after the
    /// channel's baseline (see [`Hub::set_baseline`]).
    pub fn subscribe(&self, user: UserId, interest: Interest) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = DeliveryQueue::new(self.settings.queue_capacity);
        let (channels, all_channels) = match interest {
            Interest::Channel(c) => (vec![c], false),
            Interest::AllChannels(cs) => (cs, true),
        };
        let mut registry = self.write();
        registry.subs.insert(
            id,
            Sub {
                user: user.clone(),
                all_channels,
                queue: queue.clone(),
                left_while_listing: all_channels.then(HashMap::new),
            },
        );
        registry.routes.insert(id, HashSet::new());
        for channel in &channels {
            registry.route(id, *channel);
        }
        if all_channels {
            registry.all_by_user.entry(user).or_default().insert(id);
        }
        drop(registry);
        for channel in channels {
            self.schedule_backfill_if_unbased(channel);
        }
        Subscription {
            id,
            queue,
            ended: false,
            hub: self.this.clone(),
        }
    }

    /// Adds the user's channels, read after the subscription registered,
    /// to an all-channels subscription, each with the seq it was read at.
    /// A channel whose `member_left` (a later seq) arrived in between is
    /// left out: it was delivered before the subscription was routed there.
    pub fn add_channels(&self, subscription: &Subscription, channels: &[(ChannelId, Seq)]) {
        let mut registry = self.write();
        let Some(sub) = registry.subs.get_mut(&subscription.id) else {
            return;
        };
        let left = sub.left_while_listing.take().unwrap_or_default();
        let added: Vec<ChannelId> = channels
            .iter()
            .filter(|(channel, read_at)| left.get(channel).is_none_or(|left_at| left_at <= read_at))
            .map(|(channel, _)| *channel)
            .collect();
        for channel in &added {
            registry.route(subscription.id, *channel);
        }
        drop(registry);
        for channel in added {
            self.schedule_backfill_if_unbased(channel);
        }
    }

    /// Tells the hub the newest seq committed in `channel`, read from the
    /// store *after* a subscription registered: later events are delivered,
    /// earlier ones are history. Ignored when the channel already has one.
    pub fn set_baseline(&self, channel: ChannelId, last_committed: Seq) {
        let mut registry = self.write();
        if let Some(entry) = registry.channels.get_mut(&channel)
            && entry.next_seq.is_none()
        {
            entry.next_seq = Some(last_committed + 1);
            registry.flush(channel);
        }
    }

    /// The newest durable seq delivered for `channel` on this node (0 when
    /// unknown): the position ephemeral events carry.
    pub fn last_seq(&self, channel: ChannelId) -> Seq {
        self.read()
            .channels
            .get(&channel)
            .and_then(|c| c.next_seq)
            .map_or(0, |next| next - 1)
    }

    /// Routes a committed event to its channel's subscriptions, in seq order.
    pub fn publish(&self, event: ChannelEvent) {
        let event = SharedEvent::new(event);
        let channel = event.channel_id;
        let mut registry = self.write();
        if !event.durable {
            if registry.channels.contains_key(&channel) {
                registry.deliver(&event);
            }
            return;
        }
        let outcome = registry.sequence(event, self.settings.max_pending);
        drop(registry);
        match outcome {
            Sequenced::Done => {}
            Sequenced::NeedsBackfill => self.schedule_backfill(channel, self.settings.gap_timeout),
            Sequenced::NeedsBackfillNow => self.schedule_backfill(channel, Duration::ZERO),
        }
    }

    /// Reads what may have been missed in every subscribed channel from the
    /// database (after a NATS reconnect or a reported loss).
    pub fn catch_up_all(&self) {
        let channels: Vec<ChannelId> = {
            let mut registry = self.write();
            registry
                .channels
                .iter_mut()
                .filter(|(_, entry)| entry.next_seq.is_some())
                .map(|(channel, entry)| {
                    entry.catch_up = true;
                    *channel
                })
                .collect()
        };
        metrics::counter!("clacks_catch_ups_total").increment(1);
        for channel in channels {
            self.schedule_backfill(channel, Duration::ZERO);
        }
    }

    pub fn stats(&self) -> HubStats {
        let registry = self.read();
        HubStats {
            subscriptions: registry.subs.len(),
            channels: registry.channels.len(),
            pending_events: registry.channels.values().map(|c| c.pending.len()).sum(),
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.write().remove(id);
    }

    fn schedule_backfill_if_unbased(&self, channel: ChannelId) {
        let unbased = self
            .read()
            .channels
            .get(&channel)
            .is_some_and(|e| e.next_seq.is_none());
        if unbased {
            // The subscriber normally sets the baseline at once; this is the
            // safety net if it cannot.
            self.schedule_backfill(channel, self.settings.gap_timeout * 4);
        }
    }

    /// Fills a gap (or a missing baseline) of `channel` from the database
    /// after `delay`, unless it closes by itself first.
    fn schedule_backfill(&self, channel: ChannelId, delay: Duration) {
        {
            let mut registry = self.write();
            let Some(entry) = registry.channels.get_mut(&channel) else {
                return;
            };
            if entry.backfilling {
                return;
            }
            entry.backfilling = true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.this.clone();
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut retry = Duration::from_millis(100);
            loop {
                let Some(strong) = hub.upgrade() else { return };
                let filled = match &strong.backfill {
                    Some(backfill) => strong.backfill_once(&**backfill, channel).await,
                    None => {
                        strong.skip_gap(channel);
                        Ok(())
                    }
                };
                match filled {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(channel = %channel, error = %e, "backfill from the database failed; retrying");
                        drop(strong);
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Without a database, a gap that outlived the timeout is skipped: what
    /// arrived becomes the baseline.
    fn skip_gap(&self, channel: ChannelId) {
        let mut registry = self.write();
        if let Some(entry) = registry.channels.get_mut(&channel) {
            entry.backfilling = false;
            if let Some((first, _)) = entry.pending.first_key_value() {
                entry.next_seq = Some(*first);
            }
            registry.flush(channel);
        }
    }

    async fn backfill_once(
        &self,
        backfill: &dyn Backfill,
        channel: ChannelId,
    ) -> clacks_core::Result<()> {
        let state = {
            let mut registry = self.write();
            registry.channels.get_mut(&channel).map(|e| {
                (
                    e.next_seq,
                    e.pending.first_key_value().map(|(seq, _)| *seq),
                    std::mem::take(&mut e.catch_up),
                )
            })
        };
        let Some((next, first_pending, catch_up)) = state else {
            return Ok(());
        };
        match next {
            None => {
                // Subscribers set the baseline right after registering; this
                // runs only if one could not. Events that arrived since the
                // registration are kept; without any, the database decides.
                let last = match first_pending {
                    Some(first) => first - 1,
                    None => match backfill.last_seq(channel).await {
                        Ok(last) => last,
                        Err(clacks_core::Error::NotFound(_)) => 0,
                        Err(e) => return Err(e),
                    },
                };
                tracing::warn!(channel = %channel, baseline = last, "channel subscribed without a baseline; guessed one");
                metrics::counter!("clacks_backfills_total", "kind" => "baseline").increment(1);
                let mut registry = self.write();
                if let Some(entry) = registry.channels.get_mut(&channel) {
                    entry.backfilling = false;
                    if entry.next_seq.is_none() {
                        entry.next_seq = Some(last + 1);
                    }
                    registry.flush(channel);
                }
            }
            Some(next) => {
                const CATCH_UP_BATCH: Seq = 10_000;
                let wanted = match first_pending {
                    Some(first) => first - next,
                    None if catch_up => CATCH_UP_BATCH,
                    None => 0,
                };
                let mut more = false;
                if wanted > 0 {
                    let limit = u32::try_from(wanted).unwrap_or(u32::MAX).min(10_000);
                    let missing = match backfill.events_after(channel, next - 1, limit).await {
                        Ok(events) => events,
                        Err(clacks_core::Error::NotFound(_)) => Vec::new(),
                        Err(e) => return Err(e),
                    };
                    metrics::counter!("clacks_backfills_total", "kind" => "gap").increment(1);
                    metrics::counter!("clacks_backfilled_events_total")
                        .increment(missing.len() as u64);
                    more = catch_up && missing.len() as Seq >= wanted;
                    let mut registry = self.write();
                    for event in missing {
                        let _ = registry.sequence(SharedEvent::new(event), usize::MAX);
                    }
                    if more && let Some(entry) = registry.channels.get_mut(&channel) {
                        entry.catch_up = true;
                    }
                }
                let mut registry = self.write();
                let again = registry.channels.get_mut(&channel).is_some_and(|entry| {
                    entry.backfilling = false;
                    // Still a gap (the database did not have it yet, or it
                    // was larger than one batch), or more to catch up on.
                    entry.catch_up
                        || entry
                            .pending
                            .first_key_value()
                            .is_some_and(|(seq, _)| Some(*seq) != entry.next_seq)
                });
                drop(registry);
                if again {
                    let delay = if more {
                        Duration::ZERO
                    } else {
                        self.settings.gap_timeout
                    };
                    self.schedule_backfill(channel, delay);
                }
            }
        }
        Ok(())
    }
}

/// A live subscription: a stream of deliveries that ends after an
/// [`Delivery::End`]. Dropping it unregisters it.
pub struct Subscription {
    id: u64,
    queue: Arc<DeliveryQueue>,
    ended: bool,
    hub: Weak<Hub>,
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.queue.poll_pop(cx) {
            Poll::Ready(Some(Delivery::End(reason))) => {
                self.ended = true;
                Poll::Ready(Some(Delivery::End(reason)))
            }
            Poll::Ready(Some(delivery)) => Poll::Ready(Some(delivery)),
            Poll::Ready(None) => {
                self.ended = true;
                if self.queue.overflowed() {
                    Poll::Ready(Some(Delivery::End(EndReason::Overflow)))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clacks_core::{Message, MessageId, Role, Sender};
    use futures::StreamExt;
    use std::sync::Mutex;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn message(channel: i64, seq: Seq) -> ChannelEvent {
        ChannelEvent {
            channel_id: ChannelId(channel),
            seq,
            durable: true,
            at: 0,
            payload: EventPayload::MessageCreated {
                message: Message {
                    id: MessageId(seq),
                    channel_id: ChannelId(channel),
                    seq,
                    sender: Sender::System,
                    client_message_id: None,
                    content: format!("m{seq}"),
                    created_at: 0,
                    edited_at: None,
                    deleted_at: None,
                },
            },
        }
    }

    fn event(channel: i64, seq: Seq, payload: EventPayload) -> ChannelEvent {
        ChannelEvent {
            channel_id: ChannelId(channel),
            seq,
            durable: true,
            at: 0,
            payload,
        }
    }

    fn seq_of(d: Delivery) -> Seq {
        match d {
            Delivery::Event(e) => e.seq,
            Delivery::End(r) => panic!("ended: {r:?}"),
        }
    }

    /// A database stand-in holding every committed event of channel 1.
    struct Log(Mutex<Vec<ChannelEvent>>);

    impl Backfill for Log {
        fn events_after(
            &self,
            _: ChannelId,
            after: Seq,
            limit: u32,
        ) -> BoxFuture<'_, clacks_core::Result<Vec<ChannelEvent>>> {
            let events: Vec<_> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.seq > after)
                .take(limit as usize)
                .cloned()
                .collect();
            Box::pin(async move { Ok(events) })
        }

        fn last_seq(&self, _: ChannelId) -> BoxFuture<'_, clacks_core::Result<Seq>> {
            let last = self.0.lock().unwrap().last().map_or(0, |e| e.seq);
            Box::pin(async move { Ok(last) })
        }
    }

    #[tokio::test]
    async fn routes_by_channel() {
        let hub = Hub::new(16);
        let mut one = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        let mut two = hub.subscribe(user("b"), Interest::Channel(ChannelId(2)));
        hub.set_baseline(ChannelId(1), 0);
        hub.set_baseline(ChannelId(2), 0);
        hub.publish(message(1, 1));
        hub.publish(message(2, 1));
        hub.publish(message(1, 2));
        assert_eq!(seq_of(one.next().await.unwrap()), 1);
        assert_eq!(seq_of(one.next().await.unwrap()), 2);
        assert_eq!(seq_of(two.next().await.unwrap()), 1);
        assert_eq!(hub.last_seq(ChannelId(1)), 2);
        drop(one);
        drop(two);
        assert_eq!(hub.stats(), HubStats::default(), "dropping unregisters");
    }

    #[tokio::test]
    async fn reorders_and_drops_duplicates() {
        let hub = Hub::new(16);
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 3);
        hub.publish(message(1, 3)); // history: dropped
        hub.publish(message(1, 5)); // early: waits for 4
        hub.publish(message(1, 4));
        hub.publish(message(1, 4)); // duplicate
        hub.publish(message(1, 6));
        for expected in 4..=6 {
            assert_eq!(seq_of(sub.next().await.unwrap()), expected);
        }
        assert_eq!(hub.stats().pending_events, 0);
    }

    #[tokio::test]
    async fn fills_gaps_and_baselines_from_the_database() {
        let log = Arc::new(Log(Mutex::new((1..=10).map(|s| message(1, s)).collect())));
        let hub = Hub::with_backfill(
            HubSettings {
                gap_timeout: Duration::from_millis(10),
                ..HubSettings::default()
            },
            Some(log.clone()),
        );
        // No baseline given and nothing arrived: the hub asks the database.
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(hub.last_seq(ChannelId(1)), 10);
        // 11 and 12 were committed, but only 13 reaches this node.
        log.0
            .lock()
            .unwrap()
            .extend([message(1, 11), message(1, 12), message(1, 13)]);
        hub.publish(message(1, 13));
        for expected in 11..=13 {
            let next = tokio::time::timeout(Duration::from_secs(2), sub.next())
                .await
                .unwrap();
            assert_eq!(seq_of(next.unwrap()), expected);
        }
    }

    #[tokio::test]
    async fn catch_up_reads_a_silent_tail() {
        let log = Arc::new(Log(Mutex::new((1..=3).map(|s| message(1, s)).collect())));
        let hub = Hub::with_backfill(HubSettings::default(), Some(log.clone()));
        let mut sub = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 3);
        // 4 and 5 were committed elsewhere and their NATS messages lost;
        // nothing later reveals the gap.
        log.0.lock().unwrap().extend([message(1, 4), message(1, 5)]);
        hub.catch_up_all();
        for expected in 4..=5 {
            let next = tokio::time::timeout(Duration::from_secs(2), sub.next())
                .await
                .unwrap();
            assert_eq!(seq_of(next.unwrap()), expected);
        }
    }

    #[tokio::test]
    async fn overflow_ends_only_the_slow_subscription() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe(user("slow"), Interest::Channel(ChannelId(1)));
        let mut fast = hub.subscribe(user("fast"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        for seq in 1..=10 {
            hub.publish(message(1, seq));
            assert_eq!(seq_of(fast.next().await.unwrap()), seq);
        }
        for seq in 1..=4 {
            assert_eq!(seq_of(slow.next().await.unwrap()), seq);
        }
        assert!(matches!(
            slow.next().await,
            Some(Delivery::End(EndReason::Overflow))
        ));
        assert!(slow.next().await.is_none());
        assert_eq!(hub.stats().subscriptions, 1);
    }

    #[tokio::test]
    async fn membership_follows_joins_and_leaves() {
        let hub = Hub::new(16);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(vec![ChannelId(1)]));
        let mut single = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 0);
        hub.publish(message(2, 1));
        hub.publish(event(
            2,
            2,
            EventPayload::MemberJoined {
                user_id: user("a"),
                role: Role::member(),
            },
        ));
        hub.publish(message(2, 3));
        assert_eq!(seq_of(all.next().await.unwrap()), 2, "the join itself");
        assert_eq!(seq_of(all.next().await.unwrap()), 3);

        hub.publish(event(1, 1, EventPayload::MemberLeft { user_id: user("a") }));
        hub.publish(message(1, 2));
        assert_eq!(
            seq_of(single.next().await.unwrap()),
            1,
            "the leave is delivered"
        );
        assert!(matches!(
            single.next().await,
            Some(Delivery::End(EndReason::Removed))
        ));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            1,
            "the all stream sees the leave"
        );
        hub.publish(message(2, 4));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            4,
            "and nothing more of channel 1"
        );
    }

    /// An all-channels subscription reads its channel list after it
    /// registers. A leave that arrives in between, later than the list,
    /// keeps that channel out; an earlier one (the list already reflects
    /// it, the user rejoined) does not.
    #[tokio::test]
    async fn a_leave_while_the_channel_list_is_read_is_not_missed() {
        let hub = Hub::new(16);
        // Another subscriber keeps channel 1 sequenced.
        let _other = hub.subscribe(user("b"), Interest::Channel(ChannelId(1)));
        hub.set_baseline(ChannelId(1), 4);
        let mut all = hub.subscribe(user("a"), Interest::AllChannels(Vec::new()));
        // The list is read: channel 1 at seq 4, channel 2 at seq 7; then a
        // leaves channel 1 (seq 5), and an old leave of channel 2 (seq 6,
        // before a rejoin the list saw) is published late.
        hub.publish(event(1, 5, EventPayload::MemberLeft { user_id: user("a") }));
        hub.publish(event(2, 6, EventPayload::MemberLeft { user_id: user("a") }));
        hub.add_channels(&all, &[(ChannelId(1), 4), (ChannelId(2), 7)]);
        hub.set_baseline(ChannelId(2), 7);
        hub.publish(message(1, 6));
        hub.publish(message(2, 8));
        assert_eq!(
            seq_of(all.next().await.unwrap()),
            8,
            "channel 2 is followed, channel 1 is not"
        );
        assert_eq!(hub.stats().subscriptions, 2);
    }
}
