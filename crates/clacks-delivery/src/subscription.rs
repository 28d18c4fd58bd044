//! A subscription as its consumer sees it: the events the hub queues for
//! it, and, in the channels it is behind in (see the hub's module doc),
//! the events it reads itself, one page at a time, when its consumer asks
//! for the next event. Nothing runs in the background for it: a consumer
//! that stops polling stops reading, and what it holds is one page.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use clacks_core::{ChannelEvent, ChannelId, EventPayload, Seq, UserId};
use futures::Stream;
use futures::future::BoxFuture;

use crate::SharedEvent;
use crate::hub::{Backfill, Delivery, EndReason, Hub, look_up_batches};
use crate::queue::{DeliveryQueue, Queued};

/// What a subscription read back itself, rather than being handed live.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    /// Events read from the store or from a channel's shared tail.
    pub replayed: u64,
    /// The most events it held at once, read and not yet handed out.
    pub largest_buffer: usize,
}

/// A live subscription: a stream of deliveries that ends after an
/// [`Delivery::End`]. Dropping it unregisters it.
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) queue: Arc<DeliveryQueue>,
    hub: Weak<Hub>,
    ended: bool,
    /// Present while some channel is read here rather than queued (boxed:
    /// most subscriptions never need it, and it is freed once caught up).
    catching_up: Option<Box<CatchUp>>,
    stats: ReplayStats,
}

/// The channels a subscription reads itself, and the page in hand.
pub(crate) struct CatchUp {
    user: UserId,
    single_channel: bool,
    pub(crate) cursors: VecDeque<Cursor>,
    page: VecDeque<Arc<SharedEvent>>,
    /// How the stream ends once the page is handed out (a single-channel
    /// subscription that read its own removal).
    end: Option<EndReason>,
    reading: Option<Reading>,
}

/// Where a subscription stands in a channel it reads itself.
pub(crate) struct Cursor {
    pub(crate) channel: ChannelId,
    /// The channel's last event read (handed out, or in the page).
    pub(crate) read_to: Seq,
    /// Membership changes after this seq happened while it was subscribed
    /// and apply to the stream, as they do live; earlier ones are history
    /// and are replayed as they are.
    live_from: Seq,
    /// (all channels) The subscriber left the channel in what was read:
    /// nothing more of it is handed out unless it joins again.
    pub(crate) left: bool,
}

impl Cursor {
    pub(crate) fn new(channel: ChannelId, read_to: Seq, live_from: Seq) -> Self {
        Cursor {
            channel,
            read_to,
            live_from,
            left: false,
        }
    }
}

struct Reading {
    channel: ChannelId,
    events: BoxFuture<'static, Vec<ChannelEvent>>,
}

/// What a subscription behind reads next (see [`Hub::advance`]).
pub(crate) enum Work {
    /// Events of the channel's shared tail.
    Tail(ChannelId, Vec<Arc<SharedEvent>>),
    /// A page to read from the store.
    Read {
        channel: ChannelId,
        after: Seq,
        limit: u32,
        backfill: Arc<dyn Backfill>,
    },
}

impl CatchUp {
    pub(crate) fn new(user: UserId, single_channel: bool) -> Self {
        CatchUp {
            user,
            single_channel,
            cursors: VecDeque::new(),
            page: VecDeque::new(),
            end: None,
            reading: None,
        }
    }

    fn is_done(&self) -> bool {
        self.cursors.is_empty()
            && self.page.is_empty()
            && self.end.is_none()
            && self.reading.is_none()
    }

    /// Takes events read for `channel` into the page, applying the
    /// subscriber's own membership changes as live delivery would.
    /// Returns how many it took.
    fn take(&mut self, channel: ChannelId, events: Vec<Arc<SharedEvent>>) -> usize {
        let Some(index) = self.cursors.iter().position(|c| c.channel == channel) else {
            // Forgotten meanwhile (the channel was deleted).
            return 0;
        };
        let before = self.page.len();
        for event in events {
            let cursor = &mut self.cursors[index];
            if event.seq <= cursor.read_to {
                continue;
            }
            cursor.read_to = event.seq;
            if event.seq > cursor.live_from {
                match &event.payload {
                    payload if payload.membership_of(&self.user) == Some(false) => {
                        let already_left = std::mem::replace(&mut cursor.left, true);
                        if self.single_channel {
                            // The leave is its last event.
                            self.page.push_back(event);
                            self.end = Some(EndReason::Removed);
                            self.cursors.remove(index);
                            break;
                        }
                        if !already_left {
                            self.page.push_back(event);
                        }
                        continue;
                    }
                    payload if payload.membership_of(&self.user) == Some(true) => {
                        cursor.left = false;
                    }
                    _ => {}
                }
            }
            if !cursor.left {
                self.page.push_back(event);
            }
        }
        self.page.len() - before
    }

    /// Stops reading `channel` (deleted): what was not handed out is gone.
    fn forget(&mut self, channel: ChannelId) {
        self.cursors.retain(|c| c.channel != channel);
        self.page.retain(|event| event.channel_id != channel);
        if self.reading.as_ref().is_some_and(|r| r.channel == channel) {
            self.reading = None;
        }
    }
}

/// A page from the store; a failing database is retried (the subscriber
/// waits, it does not lose its place). Empty when the channel is gone.
///
/// A batched membership change that does not list its users is checked for
/// the subscriber alone (one point read), not read whole.
fn read_page(
    backfill: Arc<dyn Backfill>,
    user: UserId,
    channel: ChannelId,
    after: Seq,
    limit: u32,
) -> BoxFuture<'static, Vec<ChannelEvent>> {
    Box::pin(async move {
        let mut retry = Duration::from_millis(100);
        loop {
            let read = match backfill.events_after(channel, after, limit).await {
                Ok(mut events) => look_up_batches(&*backfill, &mut events, Some(&user))
                    .await
                    .map(|()| events),
                Err(e) => Err(e),
            };
            match read {
                Ok(events) => return events,
                Err(clacks_core::Error::NotFound(_)) => return Vec::new(),
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "reading a subscriber's backlog failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

impl Subscription {
    pub(crate) fn new(id: u64, queue: Arc<DeliveryQueue>, hub: Weak<Hub>) -> Self {
        Subscription {
            id,
            queue,
            hub,
            ended: false,
            catching_up: None,
            stats: ReplayStats::default(),
        }
    }

    /// What it read back itself so far.
    pub fn replay_stats(&self) -> ReplayStats {
        self.stats
    }

    /// Its catch-up state, created on first need.
    pub(crate) fn catch_up(&mut self, user: UserId, single_channel: bool) -> &mut CatchUp {
        self.catching_up
            .get_or_insert_with(|| Box::new(CatchUp::new(user, single_channel)))
    }

    fn took(&mut self, count: usize) {
        self.stats.replayed += count as u64;
        let buffered = self.catching_up.as_ref().map_or(0, |c| c.page.len());
        self.stats.largest_buffer = self.stats.largest_buffer.max(buffered);
    }

    fn end(&mut self, reason: EndReason) -> Poll<Option<Delivery>> {
        self.ended = true;
        // Its registration goes now, not when the consumer drops it.
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
        Poll::Ready(Some(Delivery::End(reason)))
    }

    /// Hands out what it read itself, or finds the next thing to read.
    /// `None` when there is nothing of its own to hand out now.
    fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> Option<Poll<Option<Delivery>>> {
        loop {
            let catch_up = self.catching_up.as_deref_mut()?;
            if let Some(event) = catch_up.page.pop_front() {
                return Some(Poll::Ready(Some(Delivery::Event(event))));
            }
            if let Some(reason) = catch_up.end.take() {
                return Some(self.end(reason));
            }
            if let Some(reading) = catch_up.reading.as_mut() {
                let Poll::Ready(events) = reading.events.as_mut().poll(cx) else {
                    return None;
                };
                let channel = reading.channel;
                catch_up.reading = None;
                if events.is_empty() {
                    // The channel is gone; its deletion is on its way.
                    catch_up.forget(channel);
                    continue;
                }
                let taken = catch_up.take(
                    channel,
                    events.into_iter().map(SharedEvent::replayed).collect(),
                );
                self.took(taken);
                continue;
            }
            if catch_up.cursors.is_empty() {
                if catch_up.is_done() {
                    self.catching_up = None;
                }
                return None;
            }
            let Some(hub) = self.hub.upgrade() else {
                return Some(Poll::Ready(None));
            };
            match hub.advance(self.id, catch_up) {
                Some(Work::Tail(channel, events)) => {
                    let taken = catch_up.take(channel, events);
                    self.took(taken);
                }
                Some(Work::Read {
                    channel,
                    after,
                    limit,
                    backfill,
                }) => {
                    catch_up.reading = Some(Reading {
                        channel,
                        events: read_page(backfill, catch_up.user.clone(), channel, after, limit),
                    });
                }
                // Caught up, or waiting for the hub to move.
                None => {
                    if catch_up.is_done() {
                        self.catching_up = None;
                    }
                    return None;
                }
            }
        }
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(ready) = this.poll_catch_up(cx) {
                return ready;
            }
            match this.queue.poll_pop(cx) {
                Poll::Ready(Some(Queued::Event(event))) => {
                    if matches!(event.payload, EventPayload::ChannelDeleted)
                        && let Some(catch_up) = this.catching_up.as_deref_mut()
                    {
                        catch_up.forget(event.channel_id);
                    }
                    return Poll::Ready(Some(Delivery::Event(event)));
                }
                Poll::Ready(Some(Queued::Behind { channel, read_to })) => {
                    // Everything of the channel queued before this marker
                    // is handed out; the rest it reads itself.
                    let Some(hub) = this.hub.upgrade() else {
                        return Poll::Ready(None);
                    };
                    if this.catching_up.is_none() {
                        this.catching_up = hub.catch_up_for(this.id).map(Box::new);
                    }
                    if let Some(catch_up) = this.catching_up.as_deref_mut() {
                        catch_up
                            .cursors
                            .push_back(Cursor::new(channel, read_to, read_to));
                    }
                }
                Poll::Ready(Some(Queued::End(reason))) => {
                    this.ended = true;
                    return Poll::Ready(Some(Delivery::End(reason)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.queue.overflowed() {
                        return Poll::Ready(Some(Delivery::End(EndReason::Overflow)));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
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
