//! Delivery guarantees at the service boundary, on every backend: ordered,
//! gap-free, duplicate-free streams across the replay/live seam, and live
//! membership.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use clacks_core::{ChannelId, EventPayload, Seq};
use clacks_delivery::{ConnectionLimits, Connections, Delivery, EndReason, Hub, HubSettings};
use clacks_service::{
    Auth, AuthSettings, Caller, ChatService, ChatServiceParts, Limits, StoreBackfill,
};
use clacks_store::{PoolSettings, Store};
use clacks_testkit::{TestBackend, TestDatabase};
use futures::StreamExt;
use rand::Rng;

async fn service(db: &TestDatabase) -> Arc<ChatService> {
    let store: Arc<dyn Store> = clacks_store::connect(&db.url, &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    ChatService::new(ChatServiceParts {
        hub: Hub::with_backfill(
            HubSettings {
                queue_capacity: 100_000,
                ..HubSettings::default()
            },
            Some(Arc::new(StoreBackfill(store.clone()))),
        ),
        store,
        connections: Connections::new(ConnectionLimits::default()),
        auth: Auth::new(b"0123456789abcdef0123456789abcdef", AuthSettings::default()),
        limits: Limits {
            send_per_second: NonZeroU32::new(1_000_000).unwrap(),
            send_burst: NonZeroU32::new(1_000_000).unwrap(),
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

macro_rules! delivery_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })* }
    };
}

delivery_tests!(
    resume_seam_is_exact_under_concurrent_writers,
    removed_member_receives_nothing_after_removal
);

/// Collects created-message seqs from `stream` until `last` arrives.
async fn collect_until(stream: &mut clacks_service::EventStream, last: Seq, hub: &Hub) -> Vec<Seq> {
    let mut seen = Vec::new();
    if last == 0 {
        return seen;
    }
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for seq {last}; got {seen:?}; hub {:?} last {}",
                    hub.stats(),
                    hub.last_seq(ChannelId(1))
                )
            });
        match next {
            Some(Delivery::Event(event)) => {
                if let EventPayload::MessageCreated { .. } = event.payload {
                    seen.push(event.seq);
                }
                if event.seq >= last {
                    return seen;
                }
            }
            other => panic!("stream ended early: {other:?}"),
        }
    }
}

async fn resume_seam_is_exact_under_concurrent_writers(backend: TestBackend) {
    const ITERATIONS: usize = 200;
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 3;
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let writers: Vec<String> = (0..WRITERS).map(|w| format!("writer{w}")).collect();
    let mut members: Vec<String> = writers.clone();
    members.push("reader".into());
    let channel = service
        .admin_create_channel("seam".into(), members, None)
        .await
        .unwrap()
        .id;
    let reader = caller(&service, "reader");
    let writer_callers: Vec<Caller> = writers.iter().map(|w| caller(&service, w)).collect();
    for i in 0..10 {
        service
            .send(&writer_callers[0], channel, format!("warm-up {i}"), None)
            .await
            .unwrap();
    }

    let mut rng = rand::rng();
    for iteration in 0..ITERATIONS {
        let current = service.admin_channel(channel).await.unwrap().last_seq;
        let resume_from: Seq = rng.random_range(0..=current);
        let tasks: Vec<_> = writer_callers
            .iter()
            .cloned()
            .map(|writer| {
                let service = service.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        service
                            .send(&writer, channel, format!("it{iteration}-{i}"), None)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        // Resume while the writers are busy.
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..2_000))).await;
        let mut stream = service
            .subscribe_events(&reader, Some(channel), &[(channel, resume_from)])
            .await
            .unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let last = service.admin_channel(channel).await.unwrap().last_seq;
        let got = collect_until(&mut stream, last, service.hub()).await;
        let expected: Vec<Seq> = ((resume_from + 1)..=last).collect();
        assert_eq!(
            got, expected,
            "iteration {iteration}: resumed after {resume_from}"
        );
    }
}

async fn removed_member_receives_nothing_after_removal(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel: ChannelId = service
        .admin_create_channel("removal".into(), vec!["alice".into(), "bob".into()], None)
        .await
        .unwrap()
        .id;
    let (alice, bob) = (caller(&service, "alice"), caller(&service, "bob"));
    let mut single = service
        .subscribe_events(&bob, Some(channel), &[])
        .await
        .unwrap();
    let mut all = service.subscribe_events(&bob, None, &[]).await.unwrap();
    let before = service
        .send(&alice, channel, "before".into(), None)
        .await
        .unwrap();
    service
        .admin_remove_member(channel, "bob".into())
        .await
        .unwrap();
    service
        .send(&alice, channel, "after".into(), None)
        .await
        .unwrap();

    let mut kinds = Vec::new();
    while let Some(delivery) = tokio::time::timeout(Duration::from_secs(5), single.next())
        .await
        .unwrap()
    {
        match delivery {
            Delivery::Event(event) => kinds.push(format!(
                "{}:{}",
                event.seq,
                matches!(event.payload, EventPayload::MemberLeft { .. })
            )),
            Delivery::End(reason) => {
                assert_eq!(reason, EndReason::Removed);
                break;
            }
        }
    }
    assert_eq!(
        kinds,
        vec![
            format!("{}:false", before.seq),
            format!("{}:true", before.seq + 1)
        ]
    );
    // The all-channels stream saw the same two events and nothing after.
    let first = all.next().await.unwrap();
    let second = all.next().await.unwrap();
    assert!(matches!(first, Delivery::Event(ref e) if e.seq == before.seq));
    assert!(
        matches!(second, Delivery::Event(ref e) if matches!(e.payload, EventPayload::MemberLeft { .. }))
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), all.next())
            .await
            .is_err(),
        "nothing after the removal"
    );
    // And bob can no longer subscribe.
    assert!(
        service
            .subscribe_events(&bob, Some(channel), &[])
            .await
            .is_err()
    );

    // Re-adding bob: his all-channels stream picks the channel up live.
    let mut fresh = service.subscribe_events(&bob, None, &[]).await.unwrap();
    service
        .admin_add_member(channel, "bob".into(), None)
        .await
        .unwrap();
    let again = service
        .send(&alice, channel, "welcome back".into(), None)
        .await
        .unwrap();
    let joined = fresh.next().await.unwrap();
    assert!(
        matches!(joined, Delivery::Event(ref e) if matches!(e.payload, EventPayload::MemberJoined { .. }))
    );
    let message = fresh.next().await.unwrap();
    assert!(matches!(message, Delivery::Event(ref e) if e.seq == again.seq));
}
