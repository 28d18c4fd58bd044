//! The bounded queue between the hub and one subscription.
//!
//! One exists per subscription, and most of them sit empty for minutes:
//! a tokio mpsc channel costs about 1 KiB each before its first message
//! (the channel's cache-padded state and a first block of 32 slots). This
//! one costs a few words until events arrive, grows with a burst, and gives
//! the memory back once drained. The hub pushes under its registry lock
//! (never waits); the one consumer polls it as a stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use clacks_core::{ChannelId, Seq};
use futures::task::AtomicWaker;

use crate::SharedEvent;
use crate::hub::EndReason;

/// What the hub hands one subscription, in order.
#[derive(Debug)]
pub(crate) enum Queued {
    Event(Arc<SharedEvent>),
    /// From here on the subscription reads `channel` itself, after
    /// `read_to` (the channel's last event queued before this marker).
    Behind {
        channel: ChannelId,
        read_to: Seq,
    },
    End(EndReason),
}

/// Capacity kept once a queue drains; more is freed. Four is a
/// `VecDeque`'s smallest allocation for these items: a subscription that
/// got a few events keeps 96 bytes, and one that never did keeps none.
const KEEP: usize = 4;

pub(crate) struct DeliveryQueue {
    state: Mutex<State>,
    waker: AtomicWaker,
}

struct State {
    items: VecDeque<Queued>,
    capacity: usize,
    /// No more deliveries will come (the subscription was unregistered).
    closed: bool,
    /// A push found the queue full; the stream ends with an overflow.
    overflowed: bool,
}

impl DeliveryQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(DeliveryQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                closed: false,
                overflowed: false,
            }),
            waker: AtomicWaker::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a live event; false when full or closed (the hub then has
    /// the subscriber read the channel itself, see [`Self::overflow`]).
    pub fn push(&self, item: Queued) -> bool {
        {
            let mut state = self.lock();
            if state.closed || state.items.len() >= state.capacity {
                return false;
            }
            state.items.push_back(item);
        }
        self.waker.wake();
        true
    }

    /// Queues an event of a backlog the server created (a gap filled from
    /// the database) while the queue is at most half full; false otherwise.
    /// The other half stays free for live events, so a backlog never makes
    /// the subscriber overflow: the rest is read at its own pace.
    pub fn push_backlog(&self, item: Queued) -> bool {
        {
            let mut state = self.lock();
            if state.closed || state.items.len() >= state.capacity / 2 {
                return false;
            }
            state.items.push_back(item);
        }
        self.waker.wake();
        true
    }

    /// Queues an item even when full (an end reason must not be lost to
    /// the very overflow it may report; a channel's switch to being read
    /// by the subscriber itself must follow its last queued event).
    pub fn push_last(&self, item: Queued) {
        self.lock().items.push_back(item);
        self.waker.wake();
    }

    /// Drops the queued events of `channel`: the subscriber reads them
    /// from the store instead.
    pub fn purge(&self, channel: ChannelId) {
        self.lock()
            .items
            .retain(|item| !matches!(item, Queued::Event(event) if event.channel_id == channel));
    }

    /// Wakes the consumer without queueing anything (something it reads
    /// itself moved).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Ends the queue: what is queued is still delivered, then the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// The next item; `Ready(None)` once closed and drained, with whether
    /// it overflowed.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        let mut state = self.lock();
        if let Some(item) = state.items.pop_front() {
            if state.items.is_empty() && state.items.capacity() > KEEP {
                state.items.shrink_to(KEEP);
            }
            return Poll::Ready(Some(item));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        // Registered while holding the lock: a push after it is released
        // finds this waker.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    /// Marks the subscriber too slow: once drained, the stream ends with
    /// an overflow.
    pub fn overflow(&self) {
        self.lock().overflowed = true;
    }

    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn pop(queue: &DeliveryQueue) -> Poll<Option<Queued>> {
        queue.poll_pop(&mut Context::from_waker(noop_waker_ref()))
    }

    fn end() -> Queued {
        Queued::End(EndReason::Removed)
    }

    #[test]
    fn bounded_then_drained_in_order_then_ended() {
        let queue = DeliveryQueue::new(100);
        for _ in 0..100 {
            assert!(queue.push(end()));
        }
        assert!(!queue.push(end()));
        assert!(
            !queue.overflowed(),
            "the hub decides what a full queue means"
        );
        queue.overflow();
        assert!(queue.overflowed());
        queue.push_last(Queued::End(EndReason::ChannelDeleted));
        queue.close();
        for _ in 0..100 {
            assert!(matches!(
                pop(&queue),
                Poll::Ready(Some(Queued::End(EndReason::Removed)))
            ));
        }
        assert!(matches!(
            pop(&queue),
            Poll::Ready(Some(Queued::End(EndReason::ChannelDeleted)))
        ));
        assert!(matches!(pop(&queue), Poll::Ready(None)));
        // The burst's memory is given back once drained.
        assert!(queue.lock().items.capacity() <= KEEP);
    }

    #[test]
    fn a_backlog_fills_half_the_queue_and_never_overflows_it() {
        let queue = DeliveryQueue::new(10);
        let backlogged = (0..10).take_while(|_| queue.push_backlog(end())).count();
        assert_eq!(backlogged, 5);
        assert!(!queue.overflowed());
        for _ in 0..5 {
            assert!(queue.push(end()), "live events still have room");
        }
    }

    #[test]
    fn empty_and_open_is_pending() {
        let queue = DeliveryQueue::new(4);
        assert!(pop(&queue).is_pending());
        assert!(queue.push(end()));
        assert!(pop(&queue).is_ready());
        assert!(pop(&queue).is_pending());
    }
}
