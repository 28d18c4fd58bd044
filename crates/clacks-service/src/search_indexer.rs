//! The search indexer: keeps the full-text index up with what was sent,
//! off the send path. A send commits its message without touching the
//! index; this task then indexes every channel that is behind, in rounds
//! with a budget ([`clacks_store::Store::index_search`]). Every search also
//! catches up its own scope first ([`catch_up`]), so what it finds never
//! depends on how far this task got: the task only keeps that catch-up
//! short.
//!
//! Several nodes may run it on one database: the store has them take turns
//! per channel. What it must never do: lock what a send locks (the store's
//! indexer locks only its own progress rows), or stop on an error (a failed
//! round is logged, counted and retried at the next tick).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clacks_core::Result;
use clacks_store::{SearchScope, Store};

/// Seqs (so at most messages) one call of the store's indexer handles.
pub const INDEX_BUDGET: u32 = 5_000;

/// The default time between two rounds of the background indexer.
pub const DEFAULT_INDEX_INTERVAL: Duration = Duration::from_millis(500);

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
}

impl SearchIndexer {
    /// Its metrics' series exist from here on (at 0), not from its first
    /// round or error: a scrape sees the same series before and after.
    pub fn new(store: Arc<dyn Store>, interval: Duration) -> Self {
        indexed_counter().increment(0);
        round_gauge().set(0.0);
        errors_counter().increment(0);
        SearchIndexer { store, interval }
    }

    /// One round: every channel behind, [`INDEX_BUDGET`] seqs at most (the
    /// rest waits for the next tick). Returns the messages indexed.
    pub async fn round(&self) -> Result<u64> {
        let started = Instant::now();
        let indexed = self
            .store
            .index_search(&SearchScope::All, INDEX_BUDGET)
            .await;
        round_gauge().set(started.elapsed().as_secs_f64());
        let indexed = indexed?;
        indexed_counter().increment(indexed.messages);
        Ok(indexed.messages)
    }

    /// Runs a round per interval until `stop` completes.
    pub async fn run(self, stop: impl Future<Output = ()>) {
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
            if let Err(e) = self.round().await {
                errors_counter().increment(1);
                tracing::warn!(error = %e, "indexing messages for search failed; retrying");
            }
        }
    }
}
