//! Live fan-out on one node: routes committed channel events to the
//! subscriptions interested in their channel, and admits live connections
//! under the node's limits, tracking them so they can be closed (forced
//! disconnect, shutdown).
//!
//! Rules this module keeps, because the delivery path runs once per event
//! per subscriber:
//! - no I/O on the publishing path; events arrive already committed, and
//!   the only database reads are a channel's gap fill (once per channel,
//!   shared) and a subscription's own backlog, read when its consumer asks;
//! - the registry lock is a read/write lock, never held across an await;
//!   publishing only does `try_send` on bounded queues;
//! - a subscription whose queue is full reads the rest of the channel
//!   itself, at its pace, instead of blocking the publisher or silently
//!   dropping events; one still behind a while after live events overflowed
//!   its queue is ended with [`EndReason::Overflow`] (too slow);
//! - registrations are owned by guards and removed in `Drop`, so a vanished
//!   connection never leaves a dead sender behind.

mod connections;
mod hub;
mod nats;
mod presence;
mod queue;
mod routing;
mod shared;
mod signing;
mod subscription;

pub use connections::{CloseReason, ConnectionGuard, ConnectionLimits, Connections, Refusal};
pub use hub::{Backfill, Delivery, EndReason, Hub, HubSettings, HubStats, Interest};
pub use nats::{InterestStats, NatsBus, NatsSettings};
pub use presence::{Presence, PresenceChange, PresenceStatus};
pub use shared::{Rendering, SharedEvent};
pub use signing::ClusterKey;
pub use subscription::{ReplayStats, Subscription};
