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

use futures::task::AtomicWaker;

use crate::hub::Delivery;

/// Capacity kept once a queue drains; more is freed.
const KEEP: usize = 8;

pub(crate) struct DeliveryQueue {
    state: Mutex<State>,
    waker: AtomicWaker,
}

struct State {
    items: VecDeque<Delivery>,
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

    /// Queues `delivery`; false (and the queue marked overflowed) when full
    /// or closed.
    pub fn push(&self, delivery: Delivery) -> bool {
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            if state.items.len() >= state.capacity {
                state.overflowed = true;
                return false;
            }
            state.items.push_back(delivery);
        }
        self.waker.wake();
        true
    }

    /// Queues a final delivery even when full (an end reason must not be
    /// lost to the very overflow it may report).
    pub fn push_last(&self, delivery: Delivery) {
        self.lock().items.push_back(delivery);
        self.waker.wake();
    }

    /// Ends the queue: what is queued is still delivered, then the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }

    /// The next delivery; `Ready(None)` once closed and drained, with
    /// whether it overflowed.
    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut state = self.lock();
        if let Some(delivery) = state.items.pop_front() {
            if state.items.is_empty() && state.items.capacity() > KEEP {
                state.items.shrink_to(KEEP);
            }
            return Poll::Ready(Some(delivery));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        // Registered while holding the lock: a push after it is released
        // finds this waker.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::hub::EndReason;
    use futures::task::noop_waker_ref;

    fn pop(queue: &DeliveryQueue) -> Poll<Option<Delivery>> {
        queue.poll_pop(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn bounded_then_drained_in_order_then_ended() {
        let queue = DeliveryQueue::new(100);
        for _ in 0..100 {
            assert!(queue.push(Delivery::End(EndReason::Removed)));
        }
        assert!(!queue.push(Delivery::End(EndReason::Removed)));
        assert!(queue.overflowed());
        queue.push_last(Delivery::End(EndReason::ChannelDeleted));
        queue.close();
        for _ in 0..100 {
            assert!(matches!(
                pop(&queue),
                Poll::Ready(Some(Delivery::End(EndReason::Removed)))
            ));
        }
        assert!(matches!(
            pop(&queue),
            Poll::Ready(Some(Delivery::End(EndReason::ChannelDeleted)))
        ));
        assert!(matches!(pop(&queue), Poll::Ready(None)));
        // The burst's memory is given back once drained.
        assert!(queue.lock().items.capacity() <= KEEP);
    }

    #[test]
    fn empty_and_open_is_pending() {
        let queue = DeliveryQueue::new(4);
        assert!(pop(&queue).is_pending());
        assert!(queue.push(Delivery::End(EndReason::Removed)));
        assert!(pop(&queue).is_ready());
        assert!(pop(&queue).is_pending());
    }
}
