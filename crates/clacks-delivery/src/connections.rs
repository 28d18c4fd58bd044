use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use clacks_core::UserId;
use tokio::sync::watch;

/// Why the server closes a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The management API asked to disconnect the user.
    ForcedDisconnect,
    /// The server is shutting down.
    ShuttingDown,
}

type Registry = HashMap<UserId, HashMap<u64, watch::Sender<Option<CloseReason>>>>;

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
        let (tx, rx) = watch::channel(None);
        self.lock().entry(user.clone()).or_default().insert(id, tx);
        ConnectionGuard {
            id,
            user,
            close: rx,
            registry: Arc::downgrade(self),
        }
    }

    /// Asks every connection of `user` to close; returns how many.
    pub fn disconnect_user(&self, user: &UserId, reason: CloseReason) -> usize {
        let registry = self.lock();
        registry.get(user).map_or(0, |conns| {
            conns
                .values()
                .filter(|tx| tx.send(Some(reason)).is_ok())
                .count()
        })
    }

    /// Asks every connection to close.
    pub fn disconnect_all(&self, reason: CloseReason) -> usize {
        let registry = self.lock();
        registry
            .values()
            .flat_map(|conns| conns.values())
            .filter(|tx| tx.send(Some(reason)).is_ok())
            .count()
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

/// A registered connection. Await [`ConnectionGuard::closed`] to learn when
/// the server wants it closed.
pub struct ConnectionGuard {
    id: u64,
    user: UserId,
    close: watch::Receiver<Option<CloseReason>>,
    registry: Weak<Connections>,
}

impl ConnectionGuard {
    /// Resolves with the reason once the connection must close.
    pub async fn closed(&mut self) -> CloseReason {
        loop {
            if let Some(reason) = *self.close.borrow_and_update() {
                return reason;
            }
            if self.close.changed().await.is_err() {
                // The registry is gone: the server is shutting down.
                return CloseReason::ShuttingDown;
            }
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut map = registry.lock();
            if let Some(conns) = map.get_mut(&self.user) {
                conns.remove(&self.id);
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
