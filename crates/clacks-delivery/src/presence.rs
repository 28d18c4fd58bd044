//! Who is online: a user is online while any node holds an authenticated
//! connection of theirs.
//!
//! Each node knows its own connections ([`crate::Connections`] reports a
//! user's first and last one here). Other nodes' users arrive over NATS
//! ([`crate::NatsBus`]): each node sends its users' changes at once and,
//! every third of the TTL, a heartbeat listing all its online users; an
//! entry of another node that is not heard of again within the TTL expires,
//! so the users of a node that crashed or lost NATS go offline within
//! about one TTL.
//!
//! Costs: a connection's first authentication and its last close are one
//! short lock here (a hash-map update), whatever the user's channels; no
//! other connection event touches this table. Memory: one entry per user
//! online somewhere in the cluster, and a bounded map of when users were
//! last seen ([`LAST_SEEN_CAPACITY`]).
//!
//! Each change of a user's cluster-wide state, as this node sees it, is
//! offered to one watcher (the service, which tells the user's small
//! channels), in order, under the table's lock; offered, never awaited: a
//! full queue drops the change.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clacks_core::{UserId, now_ms};
use tokio::sync::mpsc;

/// Users whose last-seen time is remembered after they went offline; the
/// oldest are forgotten beyond it (their `lastSeenAt` becomes unknown).
pub const LAST_SEEN_CAPACITY: usize = 100_000;
/// Changes waiting for the watcher; beyond this they are dropped.
const CHANGE_QUEUE: usize = 4_096;

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceStatus {
    pub online: bool,
    /// When the user's last connection closed (ms, this node's clock or
    /// the clock of the node that held it), if known: `None` while online
    /// and for a user not seen since this node started.
    pub last_seen_at: Option<i64>,
}

/// A user came online or went offline, cluster-wide as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub user: UserId,
    pub online: bool,
    pub last_seen_at: Option<i64>,
}

/// What this node tells the others: its users that came online, its users
/// that went offline (at `at`), or, in a heartbeat, all its online users
/// (several messages for many users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Online(UserId),
    Offline(UserId, i64),
    Heartbeat(Vec<UserId>),
}

/// Most users one heartbeat message lists (a user id is at most 200
/// characters, so a message stays well under NATS' 1 MB default).
pub const USERS_PER_HEARTBEAT: usize = 2_000;

#[derive(Default)]
struct Entry {
    /// Held by a connection of this node.
    local: bool,
    /// Other nodes holding the user: node id, last heard (ms), and until
    /// when the entry stands.
    remote: Vec<(u64, i64, Instant)>,
}

impl Entry {
    fn online(&self, now: Instant) -> bool {
        self.local || self.remote.iter().any(|(_, _, until)| *until > now)
    }
}

#[derive(Default)]
struct Table {
    users: HashMap<UserId, Entry>,
    last_seen: HashMap<UserId, i64>,
    /// `last_seen`'s insertion order, to forget the oldest.
    seen_order: VecDeque<(UserId, i64)>,
}

impl Table {
    fn remember(&mut self, user: &UserId, at: i64) {
        self.last_seen.insert(user.clone(), at);
        self.seen_order.push_back((user.clone(), at));
        while self.seen_order.len() > LAST_SEEN_CAPACITY {
            if let Some((old, old_at)) = self.seen_order.pop_front()
                && self.last_seen.get(&old) == Some(&old_at)
            {
                self.last_seen.remove(&old);
            }
        }
    }
}

type Sink = Box<dyn Fn(Outgoing) + Send + Sync>;

/// The presence table of one node.
pub struct Presence {
    table: Mutex<Table>,
    /// Where this node's changes go to the other nodes (set by the NATS
    /// bus; none on a node working alone). Called under the table's lock,
    /// so that changes and heartbeats leave in the order they were made.
    sink: OnceLock<Sink>,
    watcher: OnceLock<mpsc::Sender<PresenceChange>>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            table: Mutex::default(),
            sink: OnceLock::new(),
            watcher: OnceLock::new(),
        }
    }
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The changes of users' cluster-wide state, for one watcher; `None`
    /// once taken.
    pub fn watch(&self) -> Option<mpsc::Receiver<PresenceChange>> {
        let (sender, receiver) = mpsc::channel(CHANGE_QUEUE);
        self.watcher.set(sender).ok()?;
        Some(receiver)
    }

    /// Sends this node's changes and heartbeats to `sink` from now on.
    pub(crate) fn send_to(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    fn changed(&self, user: &UserId, online: bool, last_seen_at: Option<i64>) {
        if let Some(watcher) = self.watcher.get()
            && watcher
                .try_send(PresenceChange {
                    user: user.clone(),
                    online,
                    last_seen_at,
                })
                .is_err()
        {
            metrics::counter!("clacks_presence_changes_dropped_total").increment(1);
        }
    }

    fn send(&self, message: Outgoing) {
        if let Some(sink) = self.sink.get() {
            sink(message);
        }
    }

    /// A user's presence.
    pub fn status(&self, user: &UserId) -> PresenceStatus {
        let table = self.lock();
        let online = table
            .users
            .get(user)
            .is_some_and(|entry| entry.online(Instant::now()));
        PresenceStatus {
            online,
            last_seen_at: if online {
                None
            } else {
                table.last_seen.get(user).copied()
            },
        }
    }

    /// Whether `user` is online.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.status(user).online
    }

    /// Users online somewhere in the cluster (metrics).
    pub fn online_count(&self) -> usize {
        self.lock().users.len()
    }

    /// The first connection of `user` on this node authenticated.
    pub(crate) fn local_online(&self, user: &UserId) {
        let mut table = self.lock();
        let now = Instant::now();
        let entry = table.users.entry(user.clone()).or_default();
        let was = entry.online(now);
        entry.local = true;
        self.send(Outgoing::Online(user.clone()));
        if !was {
            self.changed(user, true, None);
        }
        drop(table);
    }

    /// The last connection of `user` on this node closed.
    pub(crate) fn local_offline(&self, user: &UserId) {
        let at = now_ms();
        let mut table = self.lock();
        let now = Instant::now();
        let Some(entry) = table.users.get_mut(user) else {
            return;
        };
        entry.local = false;
        let still = entry.online(now);
        if !still {
            table.users.remove(user);
            table.remember(user, at);
        }
        self.send(Outgoing::Offline(user.clone(), at));
        if !still {
            self.changed(user, false, Some(at));
        }
        drop(table);
    }

    /// Node `node` holds `user` (a change or a heartbeat); the entry stands
    /// for `ttl`.
    pub(crate) fn remote_online(&self, node: u64, users: &[UserId], ttl: Duration) {
        let now = Instant::now();
        let heard = now_ms();
        let until = now + ttl;
        let mut table = self.lock();
        for user in users {
            let entry = table.users.entry(user.clone()).or_default();
            let was = entry.online(now);
            match entry.remote.iter_mut().find(|(n, _, _)| *n == node) {
                Some(slot) => *slot = (node, heard, until),
                None => entry.remote.push((node, heard, until)),
            }
            if !was {
                self.changed(user, true, None);
            }
        }
    }

    /// Node `node` no longer holds `user`, since `at` (ms).
    pub(crate) fn remote_offline(&self, node: u64, user: &UserId, at: i64) {
        let now = Instant::now();
        let mut table = self.lock();
        let Some(entry) = table.users.get_mut(user) else {
            return;
        };
        let was = entry.online(now);
        entry.remote.retain(|(n, _, _)| *n != node);
        if entry.online(now) {
            return;
        }
        table.users.remove(user);
        table.remember(user, at);
        if was {
            self.changed(user, false, Some(at));
        }
    }

    /// Drops the entries of nodes not heard of within their TTL; the users
    /// they held alone go offline (last seen when their node was last
    /// heard of).
    pub(crate) fn expire(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut table = self.lock();
        table.users.retain(|user, entry| {
            let mut last_heard = None;
            entry.remote.retain(|(_, heard, until)| {
                let keep = *until > now;
                if !keep {
                    last_heard = last_heard.max(Some(*heard));
                }
                keep
            });
            if entry.local || !entry.remote.is_empty() {
                return true;
            }
            gone.push((user.clone(), last_heard.unwrap_or_else(now_ms)));
            false
        });
        for (user, at) in gone {
            table.remember(&user, at);
            self.changed(&user, false, Some(at));
        }
    }

    /// Sends this node's online users, as heartbeat messages.
    pub(crate) fn heartbeat(&self) {
        let table = self.lock();
        let local: Vec<UserId> = table
            .users
            .iter()
            .filter(|(_, entry)| entry.local)
            .map(|(user, _)| user.clone())
            .collect();
        for chunk in local.chunks(USERS_PER_HEARTBEAT) {
            self.send(Outgoing::Heartbeat(chunk.to_vec()));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn local_and_remote_holders_and_expiry() {
        let presence = Presence::default();
        let mut changes = presence.watch().unwrap();
        assert!(presence.watch().is_none(), "one watcher");
        let ann = user("ann");
        assert_eq!(
            presence.status(&ann),
            PresenceStatus {
                online: false,
                last_seen_at: None
            }
        );
        presence.local_online(&ann);
        assert!(presence.is_online(&ann));
        assert!(changes.try_recv().unwrap().online);
        // Held on another node too: closing here keeps her online.
        presence.remote_online(7, std::slice::from_ref(&ann), Duration::from_secs(60));
        assert!(changes.try_recv().is_err(), "no change");
        presence.local_offline(&ann);
        assert!(presence.is_online(&ann));
        assert!(changes.try_recv().is_err());
        presence.remote_offline(7, &ann, 1234);
        assert_eq!(
            presence.status(&ann),
            PresenceStatus {
                online: false,
                last_seen_at: Some(1234)
            }
        );
        let change = changes.try_recv().unwrap();
        assert_eq!((change.online, change.last_seen_at), (false, Some(1234)));

        // A silent node's users expire.
        let bob = user("bob");
        presence.remote_online(9, std::slice::from_ref(&bob), Duration::from_millis(20));
        assert!(presence.is_online(&bob));
        assert!(changes.try_recv().unwrap().online);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            !presence.is_online(&bob),
            "past its TTL even before a sweep"
        );
        presence.expire();
        assert_eq!(presence.online_count(), 0);
        let change = changes.try_recv().unwrap();
        assert!(!change.online);
        assert!(presence.status(&bob).last_seen_at.is_some());
    }

    #[test]
    fn changes_and_heartbeats_reach_the_sink_in_order() {
        let presence = Presence::default();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = sent.clone();
        presence.send_to(Box::new(move |message| sink.lock().unwrap().push(message)));
        presence.local_online(&user("ann"));
        presence.remote_online(3, &[user("bob")], Duration::from_secs(60));
        presence.heartbeat();
        presence.local_offline(&user("ann"));
        presence.heartbeat();
        let sent = sent.lock().unwrap();
        assert!(matches!(&sent[0], Outgoing::Online(u) if u.as_str() == "ann"));
        assert_eq!(
            sent[1],
            Outgoing::Heartbeat(vec![user("ann")]),
            "own users only"
        );
        assert!(matches!(&sent[2], Outgoing::Offline(u, _) if u.as_str() == "ann"));
        assert_eq!(sent.len(), 3, "an empty heartbeat sends nothing");
    }

    #[test]
    fn last_seen_is_bounded() {
        let mut table = Table::default();
        for i in 0..LAST_SEEN_CAPACITY + 10 {
            table.remember(&user(&format!("u{i}")), 1);
        }
        assert_eq!(table.last_seen.len(), LAST_SEEN_CAPACITY);
        assert!(!table.last_seen.contains_key(&user("u0")));
    }
}
