use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};

use clacks_core::{ChannelEvent, ChannelId, EventPayload, Seq, UserId};
use futures::Stream;
use tokio::sync::mpsc;

/// What a subscription wants to receive.
#[derive(Debug, Clone)]
pub enum Interest {
    /// One channel.
    Channel(ChannelId),
    /// Every channel the user is a member of, following membership changes
    /// live: the initial set is given, joins add to it, leaves remove.
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
    Event(Arc<ChannelEvent>),
    End(EndReason),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub subscriptions: usize,
    pub channels: usize,
}

struct Sub {
    user: UserId,
    all_channels: bool,
    tx: mpsc::Sender<Delivery>,
    overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
struct ChannelEntry {
    subs: HashSet<u64>,
    /// The newest durable seq seen on this node, the position marker given
    /// to ephemeral events.
    last_seq: Seq,
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
            if let Some(set) = self.all_by_user.get_mut(&sub.user) {
                set.remove(&id);
                if set.is_empty() {
                    self.all_by_user.remove(&sub.user);
                }
            }
        }
    }
}

/// The node-local fan-out hub.
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    capacity: usize,
}

impl Hub {
    /// `capacity` bounds each subscription's queue of undelivered events.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Hub {
            registry: RwLock::new(Registry::default()),
            next_id: AtomicU64::new(1),
            capacity: capacity.max(1),
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
    /// delivered to it (a caller that replays history first subscribes, then
    /// reads the store, then drops duplicates by seq).
    pub fn subscribe(self: &Arc<Self>, user: UserId, interest: Interest) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
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
                tx,
                overflowed: overflowed.clone(),
            },
        );
        registry.routes.insert(id, HashSet::new());
        for channel in channels {
            registry.route(id, channel);
        }
        if all_channels {
            registry.all_by_user.entry(user).or_default().insert(id);
        }
        drop(registry);
        Subscription {
            id,
            rx,
            overflowed,
            ended: false,
            hub: Arc::downgrade(self),
        }
    }

    /// The newest durable seq this node has routed for `channel` (0 when
    /// none): the position ephemeral events carry.
    pub fn last_seq(&self, channel: ChannelId) -> Seq {
        self.read().channels.get(&channel).map_or(0, |c| c.last_seq)
    }

    /// Routes a committed event to its channel's subscriptions.
    pub fn publish(&self, event: ChannelEvent) {
        let event = Arc::new(event);
        let channel = event.channel_id;
        let mut ended: Vec<(u64, Option<EndReason>)> = Vec::new();
        {
            let registry = self.read();
            if let Some(entry) = registry.channels.get(&channel) {
                for id in &entry.subs {
                    let Some(sub) = registry.subs.get(id) else {
                        continue;
                    };
                    if sub.tx.try_send(Delivery::Event(event.clone())).is_err() {
                        sub.overflowed.store(true, Ordering::Release);
                        ended.push((*id, None));
                    }
                }
            }
        }
        let membership_change = matches!(
            event.payload,
            EventPayload::MemberJoined { .. }
                | EventPayload::MemberLeft { .. }
                | EventPayload::ChannelDeleted
        );
        if !membership_change && ended.is_empty() && !event.durable {
            return;
        }
        let mut registry = self.write();
        if event.durable {
            if let Some(entry) = registry.channels.get_mut(&channel) {
                entry.last_seq = entry.last_seq.max(event.seq);
            }
        }
        match &event.payload {
            EventPayload::MemberJoined { user_id, .. } => {
                let ids: Vec<u64> = registry
                    .all_by_user
                    .get(user_id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for id in ids {
                    let already = registry
                        .routes
                        .get(&id)
                        .is_some_and(|r| r.contains(&channel));
                    if !already {
                        registry.route(id, channel);
                        // The joiner's own all-channels stream learns of
                        // the new channel through the join itself.
                        if let Some(sub) = registry.subs.get(&id) {
                            if sub.tx.try_send(Delivery::Event(event.clone())).is_err() {
                                sub.overflowed.store(true, Ordering::Release);
                                ended.push((id, None));
                            }
                        }
                    }
                }
            }
            EventPayload::MemberLeft { user_id } => {
                let leaving: Vec<u64> = registry
                    .channels
                    .get(&channel)
                    .map(|e| {
                        e.subs
                            .iter()
                            .copied()
                            .filter(|id| registry.subs.get(id).is_some_and(|s| &s.user == user_id))
                            .collect()
                    })
                    .unwrap_or_default();
                for id in leaving {
                    let all = registry.subs.get(&id).is_some_and(|s| s.all_channels);
                    if all {
                        registry.unroute(id, channel);
                    } else {
                        ended.push((id, Some(EndReason::Removed)));
                    }
                }
            }
            EventPayload::ChannelDeleted => {
                let subs: Vec<u64> = registry
                    .channels
                    .get(&channel)
                    .map(|e| e.subs.iter().copied().collect())
                    .unwrap_or_default();
                for id in subs {
                    let all = registry.subs.get(&id).is_some_and(|s| s.all_channels);
                    if all {
                        registry.unroute(id, channel);
                    } else {
                        ended.push((id, Some(EndReason::ChannelDeleted)));
                    }
                }
            }
            _ => {}
        }
        for (id, reason) in ended {
            if let (Some(reason), Some(sub)) = (reason, registry.subs.get(&id)) {
                if sub.tx.try_send(Delivery::End(reason)).is_err() {
                    sub.overflowed.store(true, Ordering::Release);
                }
            }
            // Dropping the sender lets the stream drain what is queued and
            // then end with the recorded reason.
            registry.remove(id);
        }
    }

    /// Adds channels to an all-channels subscription (after it was
    /// registered, so nothing published in between is missed).
    pub fn add_channels(&self, subscription: &Subscription, channels: &[ChannelId]) {
        let mut registry = self.write();
        if registry.subs.contains_key(&subscription.id) {
            for channel in channels {
                registry.route(subscription.id, *channel);
            }
        }
    }

    pub fn stats(&self) -> HubStats {
        let registry = self.read();
        HubStats {
            subscriptions: registry.subs.len(),
            channels: registry.channels.len(),
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.write().remove(id);
    }
}

/// A live subscription: a stream of deliveries that ends after an
/// [`Delivery::End`]. Dropping it unregisters it.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    overflowed: Arc<AtomicBool>,
    ended: bool,
    hub: Weak<Hub>,
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Delivery::End(reason))) => {
                self.ended = true;
                Poll::Ready(Some(Delivery::End(reason)))
            }
            Poll::Ready(Some(delivery)) => Poll::Ready(Some(delivery)),
            Poll::Ready(None) => {
                self.ended = true;
                if self.overflowed.load(Ordering::Acquire) {
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

    #[tokio::test]
    async fn routes_by_channel() {
        let hub = Hub::new(16);
        let mut one = hub.subscribe(user("a"), Interest::Channel(ChannelId(1)));
        let mut two = hub.subscribe(user("b"), Interest::Channel(ChannelId(2)));
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
    async fn overflow_ends_only_the_slow_subscription() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe(user("slow"), Interest::Channel(ChannelId(1)));
        let mut fast = hub.subscribe(user("fast"), Interest::Channel(ChannelId(1)));
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
}
