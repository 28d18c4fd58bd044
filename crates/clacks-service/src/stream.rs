//! A subscriber's event stream: replay from the store, then live events,
//! with no gap and no duplicate at the seam.
//!
//! The live subscription is registered *before* the store is read, so an
//! event committed after the read is delivered live; an event committed
//! before it is in the replay; one that is both (committed before the read,
//! published after the registration) is dropped here by seq.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use clacks_core::{ChannelEvent, ChannelId, Seq};
use clacks_delivery::{Delivery, SharedEvent, Subscription};
use futures::Stream;

pub struct EventStream {
    replay: VecDeque<Arc<SharedEvent>>,
    live: Subscription,
    /// Newest durable seq handed out per channel.
    delivered: HashMap<ChannelId, Seq>,
}

impl EventStream {
    pub(crate) fn new(
        live: Subscription,
        replay: Vec<ChannelEvent>,
        resumed: &[(ChannelId, Seq)],
    ) -> Self {
        let mut delivered: HashMap<ChannelId, Seq> = resumed.iter().copied().collect();
        for event in &replay {
            delivered.insert(event.channel_id, event.seq);
        }
        EventStream {
            replay: replay.into_iter().map(SharedEvent::replayed).collect(),
            live,
            delivered,
        }
    }

    /// Events replayed from the store, still to be handed out.
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }
}

impl Stream for EventStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        if let Some(event) = self.replay.pop_front() {
            if self.replay.is_empty() {
                // Caught up: give the replay buffer back for the long live
                // part of the subscription.
                self.replay = VecDeque::new();
            }
            return Poll::Ready(Some(Delivery::Event(event)));
        }
        loop {
            match Pin::new(&mut self.live).poll_next(cx) {
                Poll::Ready(Some(Delivery::Event(event))) => {
                    if event.durable {
                        let last = self.delivered.entry(event.channel_id).or_insert(0);
                        if event.seq <= *last {
                            continue;
                        }
                        *last = event.seq;
                    }
                    return Poll::Ready(Some(Delivery::Event(event)));
                }
                other => return other,
            }
        }
    }
}
