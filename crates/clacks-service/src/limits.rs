use std::time::Duration;

use clacks_core::{DEFAULT_MAX_MESSAGE_BYTES, Error, Result};

use crate::rate_limit::RateLimits;

/// Default of [`Limits::max_concurrent_searches`].
pub const DEFAULT_MAX_CONCURRENT_SEARCHES: usize = 2;
/// Query-cost units a client's search costs on top of its fields: with the
/// default budget (2,000 a second), about two searches a second each.
pub const SEARCH_COST: u64 = 1_000;
/// Default of [`Limits::max_bulk_members`].
pub const DEFAULT_MAX_BULK_MEMBERS: usize = 10_000;

/// Limits enforced for every transport.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message content, in bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Most users a channel may be created with in one request.
    pub max_initial_users: usize,
    /// Most users one bulk membership change may name (added and removed
    /// together).
    pub max_bulk_members: usize,
    /// Largest page of history, channels or unread messages.
    pub max_page: u32,
    /// Page size when the caller gives none.
    pub default_page: u32,
    /// Most hits one search page returns.
    pub max_search_page: u32,
    /// Search page size when the caller gives none.
    pub default_search_page: u32,
    /// Searches this node runs at once (clients and management API
    /// together); more are refused at once. A search for a common word
    /// ranks every message holding it, which on a large channel takes the
    /// database seconds: this bounds what searches can take from it.
    pub max_concurrent_searches: usize,
    /// Per-user rate limits of the client operations.
    pub rates: RateLimits,
    /// Default lifetime of tokens minted by the management API.
    pub default_token_ttl: Duration,
    /// Longest lifetime a minted token may have.
    pub max_token_ttl: Duration,
    /// Channels of at most this many members get `presence` events when a
    /// member comes online or goes offline; 0: none do.
    pub presence_events_max_members: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_initial_users: 1000,
            max_bulk_members: DEFAULT_MAX_BULK_MEMBERS,
            max_page: 200,
            default_page: 50,
            max_search_page: 100,
            default_search_page: 20,
            max_concurrent_searches: DEFAULT_MAX_CONCURRENT_SEARCHES,
            rates: RateLimits::default(),
            default_token_ttl: Duration::from_secs(24 * 3600),
            max_token_ttl: Duration::from_secs(365 * 24 * 3600),
            presence_events_max_members: crate::DEFAULT_PRESENCE_EVENTS_MAX_MEMBERS,
        }
    }
}

impl Limits {
    /// A requested page size, defaulted and bounded.
    pub fn page(&self, requested: Option<u32>) -> u32 {
        requested
            .unwrap_or(self.default_page)
            .clamp(1, self.max_page)
    }

    /// A requested search page size: defaulted, and refused outside 1 to
    /// `max_search_page` (a search is costly: a bad size is a mistake to
    /// report, not to round).
    pub fn search_page(&self, requested: Option<i64>) -> Result<u32> {
        let Some(requested) = requested else {
            return Ok(self.default_search_page);
        };
        u32::try_from(requested)
            .ok()
            .filter(|limit| (1..=self.max_search_page).contains(limit))
            .ok_or_else(|| {
                Error::invalid(
                    "limit",
                    format!("must be 1 to {}, not {requested}", self.max_search_page),
                )
            })
    }
}
