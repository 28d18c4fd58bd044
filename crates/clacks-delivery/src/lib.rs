//! Live fan-out on one node: routes committed channel events to the
//! subscriptions interested in their channel, and admits live connections
//! under the node's limits, tracking them so they can be closed (forced
//! disconnect, shutdown).
//!
//! Rules this module keeps, because the delivery path runs once per event
//! per subscriber:
//! - no I/O and no database access here; events arrive already committed;
//! - the registry lock is a read/write lock, never held across an await; publishing only does `try_send` on bounded queues;
//! - a subscription whose queue is full is ended with [`EndReason::Overflow`]
//!   instead of blocking the publisher or silently dropping events;
//! - registrations are owned by guards and removed in `Drop`, so a vanished
//!   connection never leaves a dead sender behind.

mod connections;
mod hub;
mod nats;
mod queue;
mod shared;

pub use connections::{CloseReason, ConnectionGuard, ConnectionLimits, Connections, Refusal};
pub use hub::{Backfill, Delivery, EndReason, Hub, HubSettings, HubStats, Interest, Subscription};
pub use nats::NatsBus;
pub use shared::SharedEvent;
