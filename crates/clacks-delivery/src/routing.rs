//! Which NATS subjects a node needs: the channels its hub routes, and the
//! users with an all-channels subscription here (whose joins must reach
//! this node before it follows the new channel).
//!
//! The hub records each change under its registry lock, which must stay
//! short: a change is one entry in a coalescing map (the latest wish per
//! topic wins, so churn on one channel is one entry, and the map never
//! holds more than the topics that changed since the NATS task last took
//! it). One task ([`crate::NatsBus`]) takes the map and subscribes or
//! unsubscribes. Interest that begins is proven live before anyone relies
//! on it: after its subscribe commands the task publishes a probe to this
//! node's own probe subject, numbered with the newest change it covers.
//! NATS processes one connection's commands in order, so when the probe
//! comes back every subscription sent before it is registered with the
//! server, and any event published after that reaches this node.
//! [`Routing::ready`] waits for that, which is what lets a subscriber read
//! its baseline from the database *after* its interest is live.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clacks_core::{ChannelId, UserId};
use tokio::sync::{Notify, watch};

/// How long [`Routing::ready`] waits for the NATS task: beyond it NATS is
/// too slow to wait for, and the node relies on what covers a lost event
/// anyway (gap fills, announcements, the catch-up after a reconnect).
const READY_WAIT: Duration = Duration::from_secs(2);

/// A NATS subject a node may need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// `{prefix}.ch.{id}`: a channel's events.
    Channel(ChannelId),
    /// `{prefix}.user.{token}`: a user's membership changes.
    User(UserId),
}

#[derive(Default)]
struct Pending {
    /// The latest wish per topic since the NATS task last looked.
    changes: HashMap<Topic, bool>,
    /// Numbers every change; the NATS task probes with the newest it took.
    requested: u64,
}

pub struct Routing {
    /// Off without NATS: nobody takes the changes, so none are recorded.
    enabled: AtomicBool,
    connected: AtomicBool,
    pending: Mutex<Pending>,
    wake: Notify,
    /// The newest change number whose probe came back.
    applied: watch::Sender<u64>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            enabled: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            applied: watch::channel(0).0,
        }
    }
}

impl Routing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// Whether channels are followed on NATS one by one (a node without
    /// NATS has nothing to wait for).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    /// Records that `topic` is needed (or no longer); cheap, called under
    /// the hub's registry lock.
    pub(crate) fn want(&self, topic: Topic, on: bool) {
        if !self.enabled() {
            return;
        }
        {
            let mut pending = self.lock();
            pending.changes.insert(topic, on);
            pending.requested += 1;
        }
        self.wake.notify_one();
    }

    /// Asks for a probe covering everything subscribed so far (after a
    /// reconnect, when the client has sent its subscriptions again).
    pub(crate) fn request_probe(&self) -> u64 {
        let requested = {
            let mut pending = self.lock();
            pending.requested += 1;
            pending.requested
        };
        self.wake.notify_one();
        requested
    }

    /// The changes to apply and the number the probe after them carries.
    pub(crate) fn take(&self) -> (HashMap<Topic, bool>, u64) {
        let mut pending = self.lock();
        let requested = pending.requested;
        (std::mem::take(&mut pending.changes), requested)
    }

    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// A probe came back: every change up to `number` is live on NATS.
    pub(crate) fn probed(&self, number: u64) {
        self.applied.send_if_modified(|applied| {
            let newer = number > *applied;
            if newer {
                *applied = number;
            }
            newer
        });
    }

    /// Waits until every interest recorded before this call is registered
    /// with the NATS server. Returns false when it could not be shown:
    /// NATS is unreachable (nothing is live then; the catch-up after the
    /// reconnect reads what was missed) or slower than [`READY_WAIT`].
    pub async fn ready(&self) -> bool {
        if !self.enabled() {
            return true;
        }
        let target = self.lock().requested;
        self.wait_for(target, READY_WAIT).await
    }

    pub(crate) async fn wait_for(&self, target: u64, within: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        if *applied.borrow() >= target {
            return true;
        }
        if !self.connected.load(Ordering::Acquire) {
            metrics::counter!("clacks_nats_interest_unconfirmed_total").increment(1);
            return false;
        }
        let live = tokio::time::timeout(within, applied.wait_for(|applied| *applied >= target))
            .await
            .is_ok_and(|done| done.is_ok());
        if !live {
            metrics::counter!("clacks_nats_interest_unconfirmed_total").increment(1);
        }
        live
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_wish_per_topic_wins() {
        let routing = Routing::default();
        routing.want(Topic::Channel(ChannelId(1)), true);
        assert!(routing.take().0.is_empty(), "nothing recorded while off");
        routing.enable();
        for on in [true, false, true, false] {
            routing.want(Topic::Channel(ChannelId(1)), on);
        }
        routing.want(Topic::Channel(ChannelId(2)), true);
        let (changes, number) = routing.take();
        assert_eq!(changes.len(), 2);
        assert!(!changes[&Topic::Channel(ChannelId(1))]);
        assert!(changes[&Topic::Channel(ChannelId(2))]);
        assert_eq!(number, 5);
        assert!(routing.take().0.is_empty());
    }

    #[tokio::test]
    async fn ready_waits_for_the_probe_that_covers_it() {
        let routing = std::sync::Arc::new(Routing::default());
        routing.enable();
        routing.set_connected(true);
        routing.want(Topic::Channel(ChannelId(1)), true);
        let waiter = {
            let routing = routing.clone();
            tokio::spawn(async move { routing.ready().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        routing.probed(1);
        assert!(waiter.await.unwrap());
        routing.set_connected(false);
        routing.want(Topic::Channel(ChannelId(2)), true);
        assert!(!routing.ready().await, "no waiting while disconnected");
    }
}
