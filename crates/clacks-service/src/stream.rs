//! A subscriber's event stream: what it missed, then live events, with no
//! gap and no duplicate at the seam.
//!
//! The live subscription is registered before anything is read, and each
//! resumed channel is then read by the subscription itself, from the store
//! and page by page as the stream is polled, up to what the hub has
//! delivered, before the hub queues that channel's events for it again
//! (see `clacks_delivery::Hub::resume`). So a resume costs one page of
//! memory however far behind the client is, it goes at the client's pace,
//! and the seam is exact by construction.

use std::pin::Pin;
use std::task::{Context, Poll};

use clacks_delivery::{Delivery, ReplayStats, Subscription};
use futures::Stream;

pub struct EventStream {
    live: Subscription,
    resumed_events: u64,
}

impl EventStream {
    pub(crate) fn new(live: Subscription, resumed_events: u64) -> Self {
        EventStream {
            live,
            resumed_events,
        }
    }

    /// How many stored events the resume points asked for when the stream
    /// started (each resumed channel's newest seq on this node minus the
    /// seq given): what the replay will cost, to charge before it runs.
    pub fn resumed_events(&self) -> u64 {
        self.resumed_events
    }

    /// What the stream has read back so far, and the most it held at once.
    pub fn replay_stats(&self) -> ReplayStats {
        self.live.replay_stats()
    }
}

impl Stream for EventStream {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        Pin::new(&mut self.live).poll_next(cx)
    }
}
