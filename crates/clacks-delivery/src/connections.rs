use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use clacks_core::UserId;
use futures::task::AtomicWaker;

/// Why the server closes a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The management API asked to disconnect the user.
    ForcedDisconnect,
    /// The server is shutting down.
    ShuttingDown,
}

const OPEN: u8 = 0;
const FORCED: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// One connection's close request: a few words, as there is one per live
/// connection (a watch channel costs ~350 bytes).
#[derive(Default)]
struct CloseSignal {
    reason: AtomicU8,
    waker: AtomicWaker,
}

impl CloseSignal {
    fn request(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::ForcedDisconnect => FORCED,
            CloseReason::ShuttingDown => SHUTTING_DOWN,
        };
        // The first reason stands.
        let _ = self
            .reason
            .compare_exchange(OPEN, code, Ordering::AcqRel, Ordering::Acquire);
        self.waker.wake();
    }

    fn requested(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Acquire) {
            FORCED => Some(CloseReason::ForcedDisconnect),
            SHUTTING_DOWN => Some(CloseReason::ShuttingDown),
            _ => None,
        }
    }
}

/// A user's connections: usually one or two, so a vector.
type Registry = HashMap<UserId, Vec<(u64, Arc<CloseSignal>)>>;

/// Live WebSocket connections by user, so they can be closed from outside.
#[derive(Default)]
pub struct Connections {
    by_user: Mutex<Registry>,
    next_id: AtomicU64,
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Connections::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; the guard unregisters it when dropped.
    pub fn register(self: &Arc<Self>, user: UserId) -> ConnectionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(CloseSignal::default());
        self.lock()
            .entry(user.clone())
            .or_default()
            .push((id, signal.clone()));
        ConnectionGuard {
            id,
            user,
            signal,
            registry: Arc::downgrade(self),
        }
    }

    /// Asks every connection of `user` to close; returns how many.
    pub fn disconnect_user(&self, user: &UserId, reason: CloseReason) -> usize {
        let registry = self.lock();
        registry.get(user).map_or(0, |conns| {
            for (_, signal) in conns {
                signal.request(reason);
            }
            conns.len()
        })
    }

    /// Asks every connection to close.
    pub fn disconnect_all(&self, reason: CloseReason) -> usize {
        let registry = self.lock();
        let mut count = 0;
        for (_, signal) in registry.values().flatten() {
            signal.request(reason);
            count += 1;
        }
        count
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// A registered connection. Await [`ConnectionGuard::closed`] to learn when
/// the server wants it closed.
pub struct ConnectionGuard {
    id: u64,
    user: UserId,
    signal: Arc<CloseSignal>,
    registry: Weak<Connections>,
}

impl ConnectionGuard {
    /// Resolves with the reason once the connection must close.
    pub async fn closed(&mut self) -> CloseReason {
        std::future::poll_fn(|cx| {
            if let Some(reason) = self.signal.requested() {
                return Poll::Ready(reason);
            }
            self.signal.waker.register(cx.waker());
            match self.signal.requested() {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut map = registry.lock();
            if let Some(conns) = map.get_mut(&self.user) {
                conns.retain(|(id, _)| *id != self.id);
                if conns.is_empty() {
                    map.remove(&self.user);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn disconnect_counts_and_signals() {
        let conns = Connections::new();
        let alice = UserId::parse("alice").unwrap();
        let mut a1 = conns.register(alice.clone());
        let _a2 = conns.register(alice.clone());
        let _b = conns.register(UserId::parse("bob").unwrap());
        assert_eq!(conns.count(), 3);
        assert_eq!(
            conns.disconnect_user(&alice, CloseReason::ForcedDisconnect),
            2
        );
        assert_eq!(a1.closed().await, CloseReason::ForcedDisconnect);
        drop(a1);
        assert_eq!(conns.count(), 2);
    }
}
