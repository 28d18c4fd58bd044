//! Live WebSocket connections on this node: admitted under the node's
//! connection limits, closable from outside (a forced disconnect, the
//! shutdown), and counted so the shutdown knows when the last one is gone.
//!
//! A connection is admitted when its upgrade arrives (counted in total and
//! per client address) and counted for its user once `connection_init`
//! authenticates it. Its [`ConnectionGuard`] holds its place in every
//! count and gives it back in `Drop`, so a vanished connection never keeps
//! a slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use clacks_core::UserId;
use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::Presence;

/// Why the server closes a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The management API asked to disconnect the user.
    ForcedDisconnect,
    /// The server is shutting down.
    ShuttingDown,
}

/// How many connections this node holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections in total.
    pub total: usize,
    /// Connections of one user.
    pub per_user: usize,
    /// Connections from one client address (IPv6: one /64 network);
    /// loopback clients are not counted.
    pub per_address: usize,
}

impl Default for ConnectionLimits {
    /// No limit (the server's configuration sets them).
    fn default() -> Self {
        ConnectionLimits {
            total: usize::MAX,
            per_user: usize::MAX,
            per_address: usize::MAX,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("this node holds its maximum of {limit} connections")]
    NodeFull { limit: usize },
    #[error("at most {limit} connections may come from one address")]
    AddressFull { limit: usize },
    #[error("at most {limit} connections may be open for one user")]
    UserFull { limit: usize },
}

impl Refusal {
    /// A fixed name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::ShuttingDown => "shutting_down",
            Refusal::NodeFull { .. } => "node_full",
            Refusal::AddressFull { .. } => "address",
            Refusal::UserFull { .. } => "user",
        }
    }
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

/// What a client address is counted as: IPv4 addresses one by one, IPv6
/// by /64 network (one subscriber line gets a whole /64, so counting its
/// addresses one by one would limit nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddressKey(IpAddr);

impl AddressKey {
    /// `None` for loopback: a local process (a reverse proxy not declared
    /// as trusted, a sidecar, a load test) speaks for many clients, never
    /// for one stranger.
    fn of(address: IpAddr) -> Option<AddressKey> {
        let address = address.to_canonical();
        if address.is_loopback() {
            return None;
        }
        Some(AddressKey(match address {
            IpAddr::V4(_) => address,
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        }))
    }
}

#[derive(Default)]
struct Registry {
    /// Every admitted connection's close signal.
    open: HashMap<u64, Arc<CloseSignal>>,
    /// Authenticated connections by user: usually one or two, so a vector.
    by_user: HashMap<UserId, Vec<u64>>,
    by_address: HashMap<AddressKey, usize>,
    /// Admits nothing more.
    shutting_down: bool,
}

/// Live WebSocket connections of this node.
pub struct Connections {
    registry: Mutex<Registry>,
    limits: ConnectionLimits,
    next_id: AtomicU64,
    /// Woken when the last connection is gone.
    all_closed: Notify,
    /// Who is online: told of each user's first and last connection here.
    presence: Arc<Presence>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Connections {
            registry: Mutex::default(),
            limits,
            next_id: AtomicU64::new(0),
            all_closed: Notify::new(),
            presence: Arc::new(Presence::default()),
        })
    }

    /// The presence table this node's connections feed.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `address` (the client's, as far as it is
    /// known) under the total and per-address limits.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionGuard, Refusal> {
        let address = AddressKey::of(address);
        let signal = Arc::new(CloseSignal::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.lock();
        if registry.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if registry.open.len() >= self.limits.total {
            return Err(Refusal::NodeFull {
                limit: self.limits.total,
            });
        }
        if let Some(key) = address {
            let from_address = registry.by_address.entry(key).or_default();
            if *from_address >= self.limits.per_address {
                return Err(Refusal::AddressFull {
                    limit: self.limits.per_address,
                });
            }
            *from_address += 1;
        }
        registry.open.insert(id, signal.clone());
        Ok(ConnectionGuard {
            id,
            address,
            user: None,
            signal,
            registry: Arc::downgrade(self),
        })
    }

    /// Asks every connection of `user` to close; returns how many.
    pub fn disconnect_user(&self, user: &UserId, reason: CloseReason) -> usize {
        let registry = self.lock();
        let Some(ids) = registry.by_user.get(user) else {
            return 0;
        };
        for id in ids {
            if let Some(signal) = registry.open.get(id) {
                signal.request(reason);
            }
        }
        ids.len()
    }

    /// Admits nothing more and asks every connection to close; returns
    /// how many were open.
    pub fn shut_down(&self) -> usize {
        let mut registry = self.lock();
        registry.shutting_down = true;
        for signal in registry.open.values() {
            signal.request(CloseReason::ShuttingDown);
        }
        registry.open.len()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so the last close in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.lock().open.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Whether `user` holds an authenticated connection to this node.
    pub fn is_connected(&self, user: &UserId) -> bool {
        self.lock()
            .by_user
            .get(user)
            .is_some_and(|ids| !ids.is_empty())
    }

    /// Connections open now (authenticated or not).
    pub fn count(&self) -> usize {
        self.lock().open.len()
    }
}

/// An admitted connection's place in the counts, given back when dropped.
/// Await [`ConnectionGuard::closed`] to learn when the server wants the
/// connection closed.
pub struct ConnectionGuard {
    id: u64,
    address: Option<AddressKey>,
    user: Option<UserId>,
    signal: Arc<CloseSignal>,
    registry: Weak<Connections>,
}

impl ConnectionGuard {
    /// Counts the connection as `user`'s (once; the user of a connection
    /// never changes), under the per-user limit. From then on a forced
    /// disconnect of the user closes it.
    pub fn register_user(&mut self, user: UserId) -> Result<(), Refusal> {
        if self.user.is_some() {
            return Ok(());
        }
        let Some(connections) = self.registry.upgrade() else {
            return Err(Refusal::ShuttingDown);
        };
        let mut registry = connections.lock();
        let limit = connections.limits.per_user;
        if registry.by_user.get(&user).map_or(0, Vec::len) >= limit {
            return Err(Refusal::UserFull { limit });
        }
        let ids = registry.by_user.entry(user.clone()).or_default();
        ids.push(self.id);
        if ids.len() == 1 {
            connections.presence.local_online(&user);
        }
        self.user = Some(user);
        Ok(())
    }

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
        let Some(connections) = self.registry.upgrade() else {
            return;
        };
        let mut registry = connections.lock();
        registry.open.remove(&self.id);
        if let Some(user) = &self.user
            && let Some(ids) = registry.by_user.get_mut(user)
        {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                registry.by_user.remove(user);
                connections.presence.local_offline(user);
            }
        }
        if let Some(key) = self.address
            && let Some(from_address) = registry.by_address.get_mut(&key)
        {
            *from_address -= 1;
            if *from_address == 0 {
                registry.by_address.remove(&key);
            }
        }
        let last = registry.open.is_empty();
        drop(registry);
        if last {
            connections.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn disconnect_counts_and_signals() {
        let conns = Connections::new(ConnectionLimits::default());
        let mut a1 = conns.admit(ip("192.0.2.1")).unwrap();
        a1.register_user(user("alice")).unwrap();
        let mut a2 = conns.admit(ip("192.0.2.1")).unwrap();
        a2.register_user(user("alice")).unwrap();
        let mut b = conns.admit(ip("192.0.2.2")).unwrap();
        b.register_user(user("bob")).unwrap();
        let _anonymous = conns.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(conns.count(), 4);
        assert_eq!(
            conns.disconnect_user(&user("alice"), CloseReason::ForcedDisconnect),
            2
        );
        assert_eq!(a1.closed().await, CloseReason::ForcedDisconnect);
        drop(a1);
        assert_eq!(conns.count(), 3);
        assert_eq!(conns.shut_down(), 3);
        assert_eq!(
            a2.closed().await,
            CloseReason::ForcedDisconnect,
            "the first reason stands"
        );
        assert_eq!(b.closed().await, CloseReason::ShuttingDown);
        assert_eq!(
            conns.admit(ip("192.0.2.9")).err(),
            Some(Refusal::ShuttingDown)
        );
    }

    #[test]
    fn total_and_per_address_limits() {
        let conns = Connections::new(ConnectionLimits {
            total: 5,
            per_address: 2,
            ..ConnectionLimits::default()
        });
        let first = conns.admit(ip("192.0.2.1")).unwrap();
        let _second = conns.admit(ip("192.0.2.1")).unwrap();
        let full = Some(Refusal::AddressFull { limit: 2 });
        assert_eq!(conns.admit(ip("192.0.2.1")).err(), full);
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(conns.admit(ip("::ffff:192.0.2.1")).err(), full);
        // IPv6 counts by /64.
        let _v6 = conns.admit(ip("2001:db8:0:1::1")).unwrap();
        let _v6_same_net = conns.admit(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(conns.admit(ip("2001:db8:0:1::3")).err(), full);
        let _v6_other_net = conns.admit(ip("2001:db8:0:2::1")).unwrap();
        // Loopback is not counted per address, only in total.
        assert_eq!(
            conns.admit(ip("127.0.0.1")).err(),
            Some(Refusal::NodeFull { limit: 5 })
        );
        drop(first);
        let _local = conns.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            conns.admit(ip("::1")).err(),
            Some(Refusal::NodeFull { limit: 5 })
        );
        assert_eq!(conns.count(), 5);
    }

    #[test]
    fn per_user_limit_counts_authenticated_connections() {
        let conns = Connections::new(ConnectionLimits {
            per_user: 2,
            ..ConnectionLimits::default()
        });
        let mut first = conns.admit(ip("127.0.0.1")).unwrap();
        first.register_user(user("alice")).unwrap();
        let mut second = conns.admit(ip("127.0.0.1")).unwrap();
        second.register_user(user("alice")).unwrap();
        let mut third = conns.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            third.register_user(user("alice")),
            Err(Refusal::UserFull { limit: 2 })
        );
        third.register_user(user("bob")).unwrap();
        drop(first);
        let mut again = conns.admit(ip("127.0.0.1")).unwrap();
        again.register_user(user("alice")).unwrap();
    }

    #[tokio::test]
    async fn all_closed_resolves_when_the_last_connection_goes() {
        let conns = Connections::new(ConnectionLimits::default());
        conns.all_closed().await;
        let first = conns.admit(ip("192.0.2.1")).unwrap();
        let second = conns.admit(ip("192.0.2.1")).unwrap();
        let waiter = tokio::spawn({
            let conns = conns.clone();
            async move { conns.all_closed().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
