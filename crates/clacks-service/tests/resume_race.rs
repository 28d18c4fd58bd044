//! A send racing a subscription that resumes a brand-new channel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use clacks_delivery::{ConnectionLimits, Connections, Delivery, Hub, HubSettings};
use clacks_service::{
    Auth, AuthSettings, Caller, ChatService, ChatServiceParts, Limits, Rate, RateLimits,
    StoreBackfill,
};
use clacks_store::{PoolSettings, Store};
use clacks_testkit::{TestBackend, TestDatabase};
use futures::StreamExt;
use rand::Rng;

async fn service(db: &TestDatabase) -> Arc<ChatService> {
    service_with_queue(db, 100_000).await
}

async fn service_with_queue(db: &TestDatabase, queue_capacity: usize) -> Arc<ChatService> {
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
        limits: Limits {
            rates: RateLimits {
                send: Rate::new(1_000_000, 1_000_000).unwrap(),
                subscribe: Rate::new(1_000_000, 1_000_000).unwrap(),
                // Replays are charged to it, one unit per event.
                query_cost: Rate::new(1_000_000, 1_000_000).unwrap(),
                ..RateLimits::default()
            },
            ..Limits::default()
        },
        bus: None,
    })
}

fn caller(service: &ChatService, user: &str) -> Caller {
    let token = service
        .admin_mint_token(user.into(), Default::default())
        .unwrap()
        .token;
    service.authenticate(&token).unwrap()
}

/// Reproduction of a defect found at the end of a session, not yet fixed:
/// a send that commits while an `events(resume: [(channel, 0)])`
/// subscription registers, in a channel created just before, is sometimes
/// never delivered to it (seen: dozens of the 300 rounds on SQLite; the
/// Apollo guide test in e2e/guides.sh meets the same race about 1 run in
/// 10). Ignored until the hub/replay seam is fixed, so that it does not
/// fail every CI run meanwhile; run it with
/// `cargo test -p clacks-service --test resume_race -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces an open defect: a send racing a resume subscribe in a new channel is lost"]
async fn a_send_racing_a_resume_subscribe_in_a_new_channel_is_delivered() {
    let db = TestDatabase::create(TestBackend::Sqlite).await.unwrap();
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let bob = caller(&service, "bob");
    let mut lost = 0;
    for round in 0..300 {
        let channel = service
            .admin_create_channel(
                format!("r{round}"),
                vec!["alice".into(), "bob".into()],
                None,
            )
            .await
            .unwrap()
            .id;
        let delay = rand::rng().random_range(0..300u64);
        let s2 = service.clone();
        let a2 = alice.clone();
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(delay)).await;
            s2.send(&a2, channel, "hi".into(), None).await.unwrap()
        });
        let mut stream = service
            .subscribe_events(&bob, None, &[(channel, 0)])
            .await
            .unwrap();
        send.await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(d) = stream.next().await {
                if let Delivery::Event(e) = d
                    && e.channel_id == channel
                    && e.seq == 1
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !got {
            lost += 1;
            eprintln!("round {round} delay {delay}: seq 1 never arrived");
        }
    }
    assert_eq!(lost, 0, "lost in {lost} of 300 rounds");
}
