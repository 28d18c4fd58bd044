//! Reactions, replies and mentions at the service boundary (issue 13), on
//! every backend: the rules both APIs share, the events they publish and
//! their replay on resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clacks_core::{ChannelEvent, Error, EventPayload, MessageId, Seq};
use clacks_delivery::{ConnectionLimits, Connections, Delivery, Hub, HubSettings};
use clacks_service::{
    Auth, AuthSettings, Caller, ChatService, ChatServiceParts, EventStream, Limits, Rate,
    RateLimits, StoreBackfill,
};
use clacks_store::{PoolSettings, Store};
use clacks_testkit::{TestBackend, TestDatabase};
use futures::StreamExt;
use futures::future::join_all;

async fn service(db: &TestDatabase) -> Arc<ChatService> {
    let store: Arc<dyn Store> = clacks_store::connect(&db.url, &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let generous = Rate::new(1_000_000, 1_000_000).unwrap();
    ChatService::new(ChatServiceParts {
        hub: Hub::new(
            HubSettings {
                queue_capacity: 100_000,
                ..HubSettings::default()
            },
            Arc::new(StoreBackfill(store.clone())),
        ),
        store,
        connections: Connections::new(ConnectionLimits::default()),
        auth: Auth::new(b"0123456789abcdef0123456789abcdef", AuthSettings::default()),
        limits: Limits {
            rates: RateLimits {
                send: generous,
                edit: generous,
                subscribe: generous,
                query_cost: generous,
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

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })* }
    };
}

backend_tests!(
    reactions_raced_from_many_users_count_exactly,
    reactions_are_refused_to_non_members_tombstones_and_bad_keys,
);

/// Reads durable events of `stream` until one with `seq >= last`.
async fn events_until(stream: &mut EventStream, last: Seq) -> Vec<ChannelEvent> {
    let mut events = Vec::new();
    while events.last().map_or(0, |e: &ChannelEvent| e.seq) < last {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Delivery::Event(event))) => {
                if event.durable {
                    events.push(ChannelEvent::clone(&event));
                }
            }
            other => panic!(
                "the stream stopped after {:?}: {other:?}",
                events.last().map(|e| e.seq)
            ),
        }
    }
    events
}

/// Many members react at once, each twice with one key (idempotent) and
/// once with another, then half of them take the second back: the counts
/// end exact, every change took one seq (in a gap-free stream), the counts
/// the events carry go up (and down) by one in seq order, and a resume
/// replays the same events.
async fn reactions_raced_from_many_users_count_exactly(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    const USERS: usize = 24;
    let users: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let channel = service
        .admin_create_channel("reactions".into(), users.clone(), None)
        .await
        .unwrap()
        .id;
    let callers: Vec<Caller> = users.iter().map(|u| caller(&service, u)).collect();
    let message = service
        .send(&callers[0], channel, "react to me".into(), None)
        .await
        .unwrap();
    let mut live = service
        .subscribe_events(&callers[0], Some(channel), &[])
        .await
        .unwrap();

    let reacts = callers.iter().map(|caller| {
        let service = service.clone();
        async move {
            for key in ["👍", "+1", "👍"] {
                service
                    .add_reaction(caller, message.id, key.into())
                    .await
                    .unwrap();
            }
        }
    });
    join_all(reacts).await;
    let removals = callers.iter().step_by(2).map(|caller| {
        let service = service.clone();
        async move {
            service
                .remove_reaction(caller, message.id, "+1".into())
                .await
                .unwrap();
            // Taking back what is not there changes nothing.
            service
                .remove_reaction(caller, message.id, "+1".into())
                .await
                .unwrap();
        }
    });
    join_all(removals).await;

    let last = service.admin_channel(channel).await.unwrap().last_seq;
    let changes = USERS * 2 + USERS / 2;
    assert_eq!(
        last,
        message.seq + changes as Seq,
        "one seq per change, none for a repeat"
    );
    let seen = events_until(&mut live, last).await;
    assert_eq!(
        seen.iter().map(|e| e.seq).collect::<Vec<_>>(),
        ((message.seq + 1)..=last).collect::<Vec<_>>(),
        "gap-free, in order"
    );
    let mut counts: HashMap<String, i64> = HashMap::new();
    for event in &seen {
        match &event.payload {
            EventPayload::ReactionAdded {
                message_id,
                key,
                count,
                ..
            } => {
                assert_eq!(*message_id, message.id);
                let now = counts.entry(key.clone()).or_default();
                *now += 1;
                assert_eq!(count, now, "seq {}: {key}", event.seq);
            }
            EventPayload::ReactionRemoved { key, count, .. } => {
                let now = counts.entry(key.clone()).or_default();
                *now -= 1;
                assert_eq!(count, now, "seq {}: {key}", event.seq);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(counts["👍"], USERS as i64);
    assert_eq!(counts["+1"], (USERS / 2) as i64);

    // As each user sees them: in the order keys were first used.
    let shown = service.message_for(&callers[1], message.id).await.unwrap();
    for (i, caller) in callers.iter().enumerate().take(4) {
        let reactions = service.reactions_for(caller, &shown).await.unwrap();
        let summary: Vec<(&str, i64, bool)> = reactions
            .iter()
            .map(|r| (r.key.as_str(), r.count, r.reacted_by_me))
            .collect();
        let mine = i % 2 == 1;
        assert_eq!(
            summary.iter().find(|r| r.0 == "👍"),
            Some(&("👍", USERS as i64, true))
        );
        assert_eq!(
            summary.iter().find(|r| r.0 == "+1"),
            Some(&("+1", (USERS / 2) as i64, mine)),
            "user {i}"
        );
    }

    // A resume from before the first reaction replays the same events.
    let mut resumed = service
        .subscribe_events(&callers[3], Some(channel), &[(channel, message.seq)])
        .await
        .unwrap();
    let replayed = events_until(&mut resumed, last).await;
    assert_eq!(replayed, seen, "replayed as delivered live");
}

/// Every new operation refuses a non-member the way message operations
/// do (FORBIDDEN whether the message exists or not), a tombstone refuses
/// reactions, and keys are validated.
async fn reactions_are_refused_to_non_members_tombstones_and_bad_keys(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel = service
        .admin_create_channel("members".into(), vec!["alice".into(), "bob".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let bob = caller(&service, "bob");
    let eve = caller(&service, "eve");
    let message = service
        .send(&alice, channel, "hello".into(), None)
        .await
        .unwrap();
    service
        .add_reaction(&bob, message.id, "🎉".into())
        .await
        .unwrap();
    let before = service.admin_channel(channel).await.unwrap().last_seq;

    let forbidden = |r: Result<_, Error>| matches!(r, Err(Error::Forbidden(_)));
    assert!(forbidden(
        service.add_reaction(&eve, message.id, "🎉".into()).await
    ));
    assert!(forbidden(
        service.remove_reaction(&eve, message.id, "🎉".into()).await
    ));
    let missing = MessageId(message.id.0 + 1_000);
    assert!(forbidden(
        service.add_reaction(&eve, missing, "🎉".into()).await
    ));
    assert!(forbidden(
        service.add_reaction(&alice, missing, "🎉".into()).await
    ));
    assert!(forbidden(service.message_for(&eve, message.id).await));

    // A removed member is refused too, and learns nothing.
    service
        .admin_remove_member(channel, "bob".into())
        .await
        .unwrap();
    assert!(forbidden(
        service.remove_reaction(&bob, message.id, "🎉".into()).await
    ));
    let after_removal = service.admin_channel(channel).await.unwrap().last_seq;
    assert_eq!(after_removal, before + 1, "only the member_left took a seq");

    for bad in [
        "",
        " ",
        "thumbs up",
        "a\tb",
        "x\u{0}",
        "\u{200b}",
        &"x".repeat(65),
    ] {
        let refused = service.add_reaction(&alice, message.id, bad.into()).await;
        assert!(
            matches!(refused, Err(Error::InvalidInput { .. })),
            "{bad:?}: {refused:?}"
        );
    }
    // Emoji sequences (joiners, skin tones, flags) are keys.
    for good in ["👨‍👩‍👧‍👦", "👍🏽", "🇳🇴", "thumbs_up", "+1"] {
        service
            .add_reaction(&alice, message.id, good.into())
            .await
            .unwrap();
    }

    service.delete(&alice, message.id).await.unwrap();
    let refused = service.add_reaction(&alice, message.id, "👍".into()).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    let tomb = service.message_for(&alice, message.id).await.unwrap();
    assert!(
        service
            .reactions_for(&alice, &tomb)
            .await
            .unwrap()
            .is_empty()
    );
}
