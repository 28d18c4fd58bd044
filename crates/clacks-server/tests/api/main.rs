//! Integration tests: the real server over real sockets, on each database.
//! One test binary (modules below) so it compiles once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod graphql;
#[allow(dead_code)]
mod helpers;
mod management;
mod ops;
mod search;
mod web;
mod webhooks;
