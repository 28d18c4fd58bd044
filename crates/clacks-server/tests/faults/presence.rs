//! Presence when a node dies: the users of a node killed with SIGKILL (no
//! goodbye on NATS, their sockets never closed cleanly) go offline on the
//! other node within the presence TTL, and its subscribers of their small
//! channels are told.

use std::time::{Duration, Instant};

use clacks_testkit::{TestBackend, TestDatabase};
use serde_json::{Value, json};

use crate::client::{MODERN, Ws};
use crate::harness::nats::NatsServer;
use crate::harness::server::{Server, ServerOptions};
use crate::harness::token;

const TTL: Duration = Duration::from_secs(2);

const PRESENCE_EVENTS: &str =
    "subscription($c: ID) { events(channel: $c, kinds: [PRESENCE_CHANGED]) {
    ... on PresenceChanged { userId online lastSeenAt }
} }";

/// The next presence event about `user`: (online, lastSeenAt).
async fn presence_of(ws: &mut Ws, user: &str) -> (bool, Value) {
    loop {
        let (_, payload) = ws.next_payload().await;
        let event = &payload["data"]["events"];
        if event["userId"] == user {
            return (
                event["online"].as_bool().unwrap(),
                event["lastSeenAt"].clone(),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_of_a_killed_node_go_offline_within_the_ttl() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = TestDatabase::create(TestBackend::Postgres).await else {
        return;
    };
    let options = ServerOptions::new(&db.url)
        .with("CLACKS_NATS_URL", nats.url())
        .with("CLACKS_PRESENCE_TTL", TTL.as_secs());
    let mut doomed = Server::start("doomed", &options).await;
    let survivor = Server::start("survivor", &options).await;
    let channel = survivor
        .create_channel("presence", &["ann".to_owned(), "eve".to_owned()])
        .await;
    let mut eve = Ws::open(&survivor.ws_url(), MODERN, &token("eve")).await;
    eve.subscribe("p", PRESENCE_EVENTS, json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _ann = Ws::open(&doomed.ws_url(), MODERN, &token("ann")).await;
    assert_eq!(presence_of(&mut eve, "ann").await, (true, Value::Null));

    let killed_at = Instant::now();
    doomed.kill().await;
    let (online, last_seen) = presence_of(&mut eve, "ann").await;
    let took = killed_at.elapsed();
    assert!(!online);
    assert!(last_seen.is_i64(), "{last_seen}");
    assert!(
        took <= TTL + Duration::from_secs(1),
        "offline {took:?} after the kill (TTL {TTL:?})"
    );
    let rest: Value = reqwest::get(format!(
        "http://{}/api/v1/users/ann/presence",
        survivor.management
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(rest["online"], false, "{rest}");
    assert!(rest["lastSeenAt"].is_i64(), "{rest}");
}
