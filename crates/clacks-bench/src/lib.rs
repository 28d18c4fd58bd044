//! `clacks-bench`: the load tool of SPEC section 8 and issue 6.
//!
//! It drives a real Clacks server (spawned by the tool, or already running)
//! over real sockets: management API to create channels, HS256 tokens
//! minted locally (one per user), one `graphql-transport-ws` WebSocket per
//! user, sends through GraphQL mutations over HTTP (or the management API),
//! and measures what the issue asks for.
//!
//! - [`ceiling`]: the minimal broadcast server Clacks is compared with
//!   (`--compare-ceiling`).
//! - [`balancer`]: HAProxy and a NATS server of the run's own in front of
//!   several spawned nodes (`--nodes N --balancer`).
//! - [`target`]: where the server is and how to talk to its two APIs.
//! - [`spawn`]: starts `clacks` processes on free loopback ports over a
//!   fresh database.
//! - [`ws`]: the minimal `graphql-transport-ws` client and the receiver
//!   loop (cheap parsing: the tool must not be the bottleneck).
//! - [`metrics`]: latency histograms, counters, `/proc` readings.
//! - [`report`]: the JSON document and the human summary.
//! - [`scenarios`]: one function per scenario; the binary and the smoke
//!   test both call them.
//!
//! Every wait in here is bounded: phases have durations, drains and
//! connects have timeouts, the binary wraps a whole run in `--timeout`.
//! Traffic only ever goes to the URLs given (loopback by default).

pub mod balancer;
pub mod ceiling;
pub mod metrics;
pub mod report;
pub mod scenarios;
pub mod spawn;
pub mod target;
pub mod ws;

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the tool's epoch (first call). Embedded in message
/// content by senders and compared by receivers in the same process.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Raises this process's open-file soft limit to its hard limit (spawned
/// servers inherit it). Returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: could not raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}
