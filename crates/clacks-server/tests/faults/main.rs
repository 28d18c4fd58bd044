//! Fault injection against real processes (issue 11): the `clacks` binary
//! killed with SIGKILL or SIGTERM, its database link cut by a proxy the test
//! controls, a NATS server of the test's own stopped and restarted, a node
//! lost behind HAProxy, and more sends than the server can commit.
//!
//! Every test starts its own processes on their own ports over a fresh
//! database, so tests run in parallel with each other and with the rest of
//! the suite; the shared MariaDB, PostgreSQL and NATS servers are never
//! stopped (a proxy in front of them is cut instead, and NATS faults use a
//! `nats-server` the test owns).
//!
//! The harness is in `harness/`; each fault has a module of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/graphql/client.rs"]
mod client;
#[allow(dead_code, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

mod harness;

mod crash;
mod database_outage;
mod nats_outage;
mod node_loss;
mod overload;
mod presence;
mod shutdown;
