//! What the service suites share: a service over a fresh test database with
//! rate limits out of the way, callers holding minted tokens, and a macro
//! that runs a test on each backend.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use clacks_delivery::{ConnectionLimits, Connections, Hub, HubSettings};
use clacks_service::{
    Auth, AuthSettings, Caller, ChatService, ChatServiceParts, Limits, Rate, RateLimits,
    StoreBackfill,
};
use clacks_store::{PoolSettings, Store};
use clacks_testkit::TestDatabase;

/// Runs each named `async fn(TestBackend)` on SQLite, MariaDB and
/// PostgreSQL, one test per backend.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })* }
    };
}

/// A service whose subscribers may queue 100,000 events.
pub async fn service(db: &TestDatabase) -> Arc<ChatService> {
    service_with(db, 100_000, Limits::default()).await
}

/// A service with the given queue capacity and limits; its rate limits
/// (sends, edits, subscribes, query cost) are raised out of the way.
pub async fn service_with(
    db: &TestDatabase,
    queue_capacity: usize,
    limits: Limits,
) -> Arc<ChatService> {
    let generous = Rate::new(1_000_000, 1_000_000).unwrap();
    let limits = Limits {
        rates: RateLimits {
            send: generous,
            edit: generous,
            subscribe: generous,
            // Replays are charged to it, one unit per event.
            query_cost: generous,
            ..limits.rates
        },
        ..limits
    };
    service_exactly(db, queue_capacity, limits).await
}

/// A service with exactly the given queue capacity and limits.
#[allow(dead_code)]
pub async fn service_exactly(
    db: &TestDatabase,
    queue_capacity: usize,
    limits: Limits,
) -> Arc<ChatService> {
    let store: Arc<dyn Store> = clacks_store::connect(&db.url, &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    ChatService::new(ChatServiceParts {
        hub: Hub::new(
            HubSettings {
                queue_capacity,
                ..HubSettings::default()
            },
            Arc::new(StoreBackfill(store.clone())),
        ),
        store,
        connections: Connections::new(ConnectionLimits::default()),
        auth: Auth::new(b"0123456789abcdef0123456789abcdef", AuthSettings::default()),
        limits,
        bus: None,
    })
}

/// The caller a token minted for `user` authenticates as.
pub fn caller(service: &ChatService, user: &str) -> Caller {
    let token = service
        .admin_mint_token(user.into(), Default::default())
        .unwrap()
        .token;
    service.authenticate(&token).unwrap()
}
