//! The search indexer: keeps the full-text index up with what was sent,
//! off the send path. A send commits its message without touching the
//! index; this task then indexes every channel that is behind, in rounds
//! with a budget ([`clacks_store::Store::index_search`]). Every search also
//! catches up its own scope first ([`catch_up`]), so what it finds never
//! depends on how far this task got: the task only keeps that catch-up
//! short.
//!
//! A round looks only at the channels this node committed message events
//! to since the last one ([`PendingChannels`]), so an idle node costs the
//! database nothing; a full sweep of every channel runs at start, every
//! [`SWEEP_INTERVAL`], and whenever that set overflowed or a round failed,
//! for what another node left behind (it crashed, or runs no indexer).
//!
//! Sends come first: while the store's message writer is busy more than
//! [`YIELD_ABOVE`] of the time, rounds wait, for at most [`MAX_LAG`] after
//! the index fell behind ([`SendPressure`]). A burst of sends then pays
//! nothing for search; the index catches up in the quiet after it, or from
//! the lag bound on under a sustained load.
//!
//! Several nodes may run it on one database: the store has them take turns
//! per channel. What it must never do: lock what a send locks (the store's
//! indexer locks only its own progress rows), or stop on an error (a failed
//! round is logged, counted and retried at the next tick).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clacks_core::{ChannelId, Result};
use clacks_store::{SearchScope, Store};

/// Seqs (so at most messages) one call of the store's indexer handles.
pub const INDEX_BUDGET: u32 = 5_000;

/// The default time between two rounds of the background indexer.
pub const DEFAULT_INDEX_INTERVAL: Duration = Duration::from_millis(500);

/// The time between two full sweeps of every channel.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The share of the time the message writer may be busy with no effect on
/// the indexer; above it, rounds wait (for at most [`MAX_LAG`]).
pub const YIELD_ABOVE: f64 = 0.5;

/// The longest rounds wait for sends after the index fell behind: about
/// how stale the index gets under a sustained load. A search does not
/// wait for it (it catches up its own scope first), but pays for that
/// catch-up.
pub const MAX_LAG: Duration = Duration::from_secs(5);

/// Whether a round should wait for sends: reads the store's
/// [`Store::message_writer_busy`] at each tick and remembers since when the
/// index has been behind.
#[derive(Debug)]
pub struct SendPressure {
    last_reading: Option<(Instant, Duration)>,
    behind_since: Option<Instant>,
}

impl SendPressure {
    fn new() -> Self {
        SendPressure {
            last_reading: None,
            behind_since: None,
        }
    }

    /// At `now`, with the writer busy for `busy` in all and `work` waiting
    /// for the index: whether this round waits.
    fn defer(&mut self, now: Instant, busy: Duration, work: bool) -> bool {
        let load = match self.last_reading.replace((now, busy)) {
            Some((then, busy_then)) if now > then => {
                busy.saturating_sub(busy_then).as_secs_f64() / (now - then).as_secs_f64()
            }
            _ => 0.0,
        };
        if !work {
            self.behind_since = None;
            return false;
        }
        let behind_since = *self.behind_since.get_or_insert(now);
        load > YIELD_ABOVE && now.duration_since(behind_since) < MAX_LAG
    }

    /// After a round: whether it left the index caught up.
    fn caught_up(&mut self, caught_up: bool) {
        if caught_up {
            self.behind_since = None;
        }
    }
}

/// Most channels [`PendingChannels`] remembers; past it, the next round
/// sweeps every channel instead (one query, not one per channel), and
/// memory stays bounded when no indexer takes the set.
pub const MAX_PENDING_CHANNELS: usize = 256;

/// Channels this node committed message events to since the indexer last
/// looked: what its next round indexes.
#[derive(Default)]
pub struct PendingChannels {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    channels: HashSet<ChannelId>,
    overflowed: bool,
}

impl PendingChannels {
    /// Called for every committed event that changes what a search finds.
    pub(crate) fn mark(&self, channel: ChannelId) {
        let mut pending = self.lock();
        if pending.overflowed {
            return;
        }
        if pending.channels.len() >= MAX_PENDING_CHANNELS {
            pending.channels = HashSet::new();
            pending.overflowed = true;
        } else {
            pending.channels.insert(channel);
        }
    }

    fn overflow(&self) {
        let mut pending = self.lock();
        pending.channels = HashSet::new();
        pending.overflowed = true;
    }

    /// Whether a round has anything to do besides a sweep.
    fn is_empty(&self) -> bool {
        let pending = self.lock();
        pending.channels.is_empty() && !pending.overflowed
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding it leaves a set that is still valid.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts messages indexed (written or removed) on this node.
fn indexed_counter() -> &'static metrics::Counter {
    static INDEXED: OnceLock<metrics::Counter> = OnceLock::new();
    INDEXED.get_or_init(|| metrics::counter!("clacks_search_indexed_messages_total"))
}

/// How long this node's last background round took, in seconds.
fn round_gauge() -> &'static metrics::Gauge {
    static ROUND: OnceLock<metrics::Gauge> = OnceLock::new();
    ROUND.get_or_init(|| metrics::gauge!("clacks_search_index_round_seconds"))
}

/// Counts background rounds that waited for sends.
fn deferred_counter() -> &'static metrics::Counter {
    static DEFERRED: OnceLock<metrics::Counter> = OnceLock::new();
    DEFERRED.get_or_init(|| metrics::counter!("clacks_search_index_deferred_rounds_total"))
}

/// Counts background rounds that failed.
fn errors_counter() -> &'static metrics::Counter {
    static ERRORS: OnceLock<metrics::Counter> = OnceLock::new();
    ERRORS.get_or_init(|| metrics::counter!("clacks_search_index_errors_total"))
}

/// The most calls of [`INDEX_BUDGET`] one search makes before it searches
/// anyway. The background task keeps every scope within one budget of its
/// last seq, so this bound is only reached when that task is off or
/// failing, or when senders outpace indexing: then a search that waits for
/// the flood to end would hold its slot (and a database connection) for
/// as long as the flood lasts.
pub const CATCH_UP_MAX_CALLS: u32 = 8;

/// Indexes `scope` up to the last seq of each of its channels: calls with
/// [`INDEX_BUDGET`] until one reports it is done, or
/// [`CATCH_UP_MAX_CALLS`] times. Returns the messages indexed and whether
/// the scope is caught up.
pub(crate) async fn catch_up(store: &dyn Store, scope: &SearchScope) -> Result<(u64, bool)> {
    let mut total = 0;
    for _ in 0..CATCH_UP_MAX_CALLS {
        let round = store.index_search(scope, INDEX_BUDGET).await?;
        total += round.messages;
        indexed_counter().increment(round.messages);
        if round.done {
            return Ok((total, true));
        }
    }
    Ok((total, false))
}

/// The background indexer of one node.
pub struct SearchIndexer {
    store: Arc<dyn Store>,
    interval: Duration,
    pending: Arc<PendingChannels>,
    sweep_interval: Duration,
    last_sweep: Option<Instant>,
    pressure: SendPressure,
}

impl SearchIndexer {
    /// Indexes the channels marked in `pending` (the service's
    /// [`crate::ChatService::search_pending`]) every `interval`, and sweeps
    /// every channel from time to time. Its metrics' series exist from here
    /// on (at 0), not from its first round or error: a scrape sees the same
    /// series before and after.
    pub fn new(store: Arc<dyn Store>, interval: Duration, pending: Arc<PendingChannels>) -> Self {
        indexed_counter().increment(0);
        round_gauge().set(0.0);
        errors_counter().increment(0);
        deferred_counter().increment(0);
        SearchIndexer {
            store,
            interval,
            pending,
            sweep_interval: SWEEP_INTERVAL,
            last_sweep: None,
            pressure: SendPressure::new(),
        }
    }

    /// Sets the time between two full sweeps (tests shorten or lengthen it).
    pub fn with_sweep_interval(mut self, sweep_interval: Duration) -> Self {
        self.sweep_interval = sweep_interval;
        self
    }

    /// One round: the pending channels, or every channel when a sweep is
    /// due, [`INDEX_BUDGET`] seqs at most (the rest waits for the next
    /// tick). Returns the messages indexed.
    pub async fn round(&mut self) -> Result<u64> {
        let started = Instant::now();
        let indexed = self.index_pending().await;
        round_gauge().set(started.elapsed().as_secs_f64());
        if indexed.is_err() {
            // What was taken for this round is lost: sweep next time.
            self.pending.overflow();
        }
        let indexed = indexed?;
        indexed_counter().increment(indexed);
        Ok(indexed)
    }

    fn sweep_due(&self) -> bool {
        self.last_sweep
            .is_none_or(|at| at.elapsed() >= self.sweep_interval)
    }

    /// A round, unless sends keep the database busy and the index has not
    /// been behind for [`MAX_LAG`] yet. Returns the messages indexed, or
    /// `None` for a round that waited.
    pub async fn round_unless_sends_are_busy(&mut self) -> Result<Option<u64>> {
        let work = self.sweep_due() || !self.pending.is_empty();
        let busy = self.store.message_writer_busy();
        if self.pressure.defer(Instant::now(), busy, work) {
            deferred_counter().increment(1);
            tracing::debug!("search index round deferred: sends keep the database busy");
            return Ok(None);
        }
        let indexed = self.round().await;
        if let Ok(indexed) = &indexed {
            tracing::debug!(indexed, "search index round");
        }
        self.pressure
            .caught_up(indexed.is_ok() && self.pending.is_empty());
        indexed.map(Some)
    }

    async fn index_pending(&mut self) -> Result<u64> {
        let pending = self.pending.take();
        let sweep_due = self.sweep_due();
        if pending.overflowed || sweep_due {
            self.last_sweep = Some(Instant::now());
            let indexed = self
                .store
                .index_search(&SearchScope::All, INDEX_BUDGET)
                .await?;
            if !indexed.done {
                self.pending.overflow();
            }
            return Ok(indexed.messages);
        }
        let mut budget = INDEX_BUDGET;
        let mut total = 0;
        let mut channels = pending.channels.into_iter();
        for channel in channels.by_ref() {
            let indexed = self
                .store
                .index_search(&SearchScope::Channel(channel), budget)
                .await?;
            total += indexed.messages;
            budget = budget.saturating_sub(u32::try_from(indexed.messages).unwrap_or(u32::MAX));
            if !indexed.done {
                self.pending.mark(channel);
            }
            if budget == 0 {
                break;
            }
        }
        for channel in channels {
            self.pending.mark(channel);
        }
        Ok(total)
    }

    /// Runs a round per interval until `stop` completes.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            // A round in progress is left to finish: each channel's part is
            // a transaction of its own, and the store runs it to the end.
            if let Err(e) = self.round_unless_sends_are_busy().await {
                errors_counter().increment(1);
                tracing::warn!(error = %e, "indexing messages for search failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_wait_for_busy_sends_at_most_the_lag_bound() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut pressure = SendPressure::new();
        // The first reading has no load to compare with.
        assert!(!pressure.defer(at(0), Duration::ZERO, true));
        pressure.caught_up(true);
        // Writer busy 80% of the last 500 ms, work waiting: wait.
        assert!(pressure.defer(at(500), Duration::from_millis(400), true));
        // Busy 20%: go.
        assert!(!pressure.defer(at(1_000), Duration::from_millis(500), true));
        // Busy all the time, still behind since 500 ms: waits until then
        // plus the bound, then goes every round until caught up.
        let mut busy = Duration::from_millis(500);
        let mut last_deferred = 0;
        for tick in 3..20u64 {
            busy += Duration::from_millis(500);
            if pressure.defer(at(tick * 500), busy, true) {
                last_deferred = tick * 500;
            }
        }
        assert_eq!(
            last_deferred,
            500 + MAX_LAG.as_millis() as u64 - 500,
            "the last tick within the bound"
        );
        // Caught up: the next burst waits again.
        pressure.caught_up(true);
        busy += Duration::from_millis(500);
        assert!(pressure.defer(at(10_000), busy, true));
        // Nothing to index: never waits, and forgets it was behind.
        busy += Duration::from_millis(500);
        assert!(!pressure.defer(at(10_500), busy, false));
    }

    #[test]
    fn pending_channels_stay_bounded_and_overflow_into_a_sweep() {
        let pending = PendingChannels::default();
        pending.mark(ChannelId(1));
        pending.mark(ChannelId(1));
        let taken = pending.take();
        assert_eq!(taken.channels, HashSet::from([ChannelId(1)]));
        assert!(!taken.overflowed);
        assert!(pending.take().channels.is_empty(), "taking empties it");

        for id in 0..=MAX_PENDING_CHANNELS as i64 {
            pending.mark(ChannelId(id));
        }
        pending.mark(ChannelId(-1));
        let taken = pending.take();
        assert!(taken.overflowed);
        assert!(taken.channels.is_empty(), "no memory kept past the bound");
        assert!(!pending.take().overflowed);
    }
}
