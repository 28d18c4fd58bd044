//! How the connection stops one of its operations, whichever task runs it.
//!
//! An operation runs in its own task until its subscription is handed to
//! the connection's writer, then in the writer. Both wait on the same
//! switch: the waker registered last replaces the one before, so once the
//! writer polls the subscription, nothing refers to the finished task any
//! more and its memory is freed (a tokio task handle, or a futures
//! `Abortable`, would keep it for as long as the subscription lives).

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

const RUNNING: u8 = 0;
const STOPPED: u8 = 1;
const FINISHED: u8 = 2;

#[derive(Clone, Default)]
pub(super) struct StopSwitch(Arc<Inner>);

#[derive(Default)]
struct Inner {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl StopSwitch {
    /// The client stopped the operation (or the connection is closing).
    pub fn stop(&self) {
        if self
            .0
            .state
            .compare_exchange(RUNNING, STOPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.waker.wake();
        }
    }

    /// The operation is over by itself: its id is free again.
    pub fn finish(&self) {
        let _ =
            self.0
                .state
                .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire);
        drop(self.0.waker.take());
    }

    pub fn is_running(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == RUNNING
    }

    pub fn is_stopped(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == STOPPED
    }

    /// Ready once the operation was stopped.
    pub fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_stopped() {
            return Poll::Ready(());
        }
        self.0.waker.register(cx.waker());
        if self.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn stopped(&self) {
        poll_fn(|cx| self.poll_stopped(cx)).await
    }
}
