//! Per-user rate limits on the client operations: one token bucket per user
//! for each kind of operation, one for query cost (in cost units), and the
//! typing throttle per user and channel.
//!
//! The buckets live in this node's memory: with several nodes, each meters
//! the operations it serves (README, "Rate limits", says why).

use std::num::NonZeroU32;
use std::time::Duration;

use clacks_core::{ChannelId, Error, Result, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A sustained rate per second and a burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// `None` when either number is zero.
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// The client operations metered per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Send,
    Edit,
    Delete,
    MarkRead,
    Typing,
    /// Opening a subscription.
    Subscribe,
}

impl Operation {
    /// The label of `clacks_rate_limited_total`.
    fn name(self) -> &'static str {
        match self {
            Operation::Send => "send",
            Operation::Edit => "edit",
            Operation::Delete => "delete",
            Operation::MarkRead => "mark_read",
            Operation::Typing => "typing",
            Operation::Subscribe => "subscribe",
        }
    }
}

/// The rates of every metered operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub send: Rate,
    pub edit: Rate,
    pub delete: Rate,
    pub mark_read: Rate,
    /// Typing events of one user, all channels together.
    pub typing: Rate,
    pub subscribe: Rate,
    /// Query cost units; the burst bounds the costliest query a user can
    /// ever run.
    pub query_cost: Rate,
    /// At most one typing event per user and channel per this interval
    /// (more are dropped quietly, not refused).
    pub typing_interval: Duration,
}

/// A rate for the defaults (their numbers are not zero).
const fn rate(per_second: u32, burst: u32) -> Rate {
    const fn non_zero(n: u32) -> NonZeroU32 {
        match NonZeroU32::new(n) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        }
    }
    Rate {
        per_second: non_zero(per_second),
        burst: non_zero(burst),
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            send: rate(10, 30),
            edit: rate(5, 20),
            delete: rate(5, 20),
            mark_read: rate(20, 100),
            typing: rate(5, 20),
            subscribe: rate(10, 100),
            query_cost: rate(2_000, 20_000),
            typing_interval: Duration::from_secs(2),
        }
    }
}

type PerUser = DefaultKeyedRateLimiter<UserId>;

/// The buckets, keyed by user (and channel, for the typing throttle).
pub(crate) struct RateLimiters {
    send: PerUser,
    edit: PerUser,
    delete: PerUser,
    mark_read: PerUser,
    typing: PerUser,
    subscribe: PerUser,
    query_cost: PerUser,
    query_cost_burst: NonZeroU32,
    typing_per_channel: DefaultKeyedRateLimiter<(UserId, ChannelId)>,
}

impl RateLimiters {
    pub fn new(limits: &RateLimits) -> Self {
        let per_user = |rate: Rate| RateLimiter::keyed(rate.quota());
        let typing_per_channel = Quota::with_period(limits.typing_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX));
        RateLimiters {
            send: per_user(limits.send),
            edit: per_user(limits.edit),
            delete: per_user(limits.delete),
            mark_read: per_user(limits.mark_read),
            typing: per_user(limits.typing),
            subscribe: per_user(limits.subscribe),
            query_cost: per_user(limits.query_cost),
            query_cost_burst: limits.query_cost.burst,
            typing_per_channel: RateLimiter::keyed(typing_per_channel),
        }
    }

    fn per_user(&self) -> [&PerUser; 7] {
        [
            &self.send,
            &self.edit,
            &self.delete,
            &self.mark_read,
            &self.typing,
            &self.subscribe,
            &self.query_cost,
        ]
    }

    /// Takes one token of `user`'s bucket for `operation`, or refuses with
    /// when to retry.
    pub fn check(&self, operation: Operation, user: &UserId) -> Result<()> {
        let bucket = match operation {
            Operation::Send => &self.send,
            Operation::Edit => &self.edit,
            Operation::Delete => &self.delete,
            Operation::MarkRead => &self.mark_read,
            Operation::Typing => &self.typing,
            Operation::Subscribe => &self.subscribe,
        };
        match bucket.check_key(user) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(refused(
                operation.name(),
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
        }
    }

    /// Takes `cost` units of `user`'s query-cost bucket.
    pub fn charge_query_cost(&self, user: &UserId, cost: u64) -> Result<()> {
        if cost == 0 {
            return Ok(());
        }
        let too_costly = || {
            Error::invalid(
                "query",
                format!(
                    "costs {cost} units, more than the {} one user may spend at once",
                    self.query_cost_burst
                ),
            )
        };
        let units = u32::try_from(cost)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(too_costly)?;
        match self.query_cost.check_key_n(user, units) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(
                "query_cost",
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_insufficient_capacity) => Err(too_costly()),
        }
    }

    /// Charges a resume's replay to `user`'s query-cost bucket, one unit
    /// per event it reads back from the store. A replay longer than the
    /// bucket takes all of it: a client far behind is slowed down, never
    /// locked out.
    pub fn charge_replay(&self, user: &UserId, events: u64) -> Result<()> {
        self.charge_query_cost(user, events.min(u64::from(self.query_cost_burst.get())))
    }

    /// Whether a typing event of `user` in `channel` is due (not within
    /// the typing interval of the previous one).
    pub fn typing_due(&self, user: &UserId, channel: ChannelId) -> bool {
        self.typing_per_channel
            .check_key(&(user.clone(), channel))
            .is_ok()
    }

    /// Forgets the buckets of users idle long enough to be full again.
    pub fn retain_recent(&self) {
        for limiter in self.per_user() {
            limiter.retain_recent();
        }
        self.typing_per_channel.retain_recent();
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.per_user().iter().map(|l| l.len()).sum::<usize>() + self.typing_per_channel.len()
    }
}

fn refused(what: &'static str, wait: Duration) -> Error {
    metrics::counter!("clacks_rate_limited_total", "what" => what).increment(1);
    Error::RateLimited {
        retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn limits(query_cost: Rate) -> RateLimits {
        RateLimits {
            edit: Rate::new(1, 2).unwrap(),
            query_cost,
            ..RateLimits::default()
        }
    }

    #[test]
    fn each_operation_has_its_own_bucket_per_user() {
        let limiters = RateLimiters::new(&limits(Rate::new(10, 100).unwrap()));
        let bob = UserId::parse("bob").unwrap();
        assert!(limiters.check(Operation::Edit, &alice()).is_ok());
        assert!(limiters.check(Operation::Edit, &alice()).is_ok());
        let Err(Error::RateLimited { retry_after_ms }) = limiters.check(Operation::Edit, &alice())
        else {
            panic!("the third edit in a burst of two is refused");
        };
        assert!(
            (1..=1000).contains(&retry_after_ms),
            "one token a second: {retry_after_ms}"
        );
        assert!(limiters.check(Operation::Delete, &alice()).is_ok());
        assert!(limiters.check(Operation::Edit, &bob).is_ok());
    }

    #[test]
    fn a_replay_longer_than_the_budget_takes_all_of_it() {
        let limiters = RateLimiters::new(&limits(Rate::new(10, 100).unwrap()));
        assert!(limiters.charge_replay(&alice(), 0).is_ok());
        assert!(
            limiters.charge_replay(&alice(), 1_000_000).is_ok(),
            "a full bucket pays for any replay"
        );
        assert!(matches!(
            limiters.charge_replay(&alice(), 1),
            Err(Error::RateLimited { .. })
        ));
        assert!(matches!(
            limiters.charge_query_cost(&alice(), 1),
            Err(Error::RateLimited { .. })
        ));
    }

    #[test]
    fn query_cost_is_charged_in_units() {
        let limiters = RateLimiters::new(&limits(Rate::new(10, 100).unwrap()));
        assert!(limiters.charge_query_cost(&alice(), 0).is_ok());
        assert!(limiters.charge_query_cost(&alice(), 60).is_ok());
        assert!(limiters.charge_query_cost(&alice(), 40).is_ok());
        let Err(Error::RateLimited { retry_after_ms }) = limiters.charge_query_cost(&alice(), 50)
        else {
            panic!("the bucket is empty");
        };
        // 50 units at 10 a second: about five seconds.
        assert!(
            (4_000..=5_000).contains(&retry_after_ms),
            "{retry_after_ms}"
        );
        for cost in [101, u64::from(u32::MAX) + 1] {
            assert!(
                matches!(
                    limiters.charge_query_cost(&alice(), cost),
                    Err(Error::InvalidInput { field: "query", .. })
                ),
                "a cost above the burst can never be paid: {cost}"
            );
        }
    }

    #[test]
    fn typing_is_throttled_per_channel_and_idle_keys_are_forgotten() {
        let limiters = RateLimiters::new(&RateLimits {
            typing_interval: Duration::from_millis(20),
            ..RateLimits::default()
        });
        assert!(limiters.typing_due(&alice(), ChannelId(1)));
        assert!(!limiters.typing_due(&alice(), ChannelId(1)));
        assert!(limiters.typing_due(&alice(), ChannelId(2)));
        limiters.check(Operation::Send, &alice()).unwrap();
        assert!(limiters.tracked_keys() >= 3);
        // A send token comes back in 100 ms, the typing one in 20 ms.
        std::thread::sleep(Duration::from_millis(300));
        limiters.retain_recent();
        assert_eq!(limiters.tracked_keys(), 0, "full buckets are dropped");
    }
}
