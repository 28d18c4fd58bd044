//! Bulk membership at the service boundary, on every backend: thousands of
//! users added or removed in one transaction, one batched event per
//! direction and request, live subscriptions following the change exactly
//! as they follow single adds and removals, idempotent repeats, limits, and
//! paged member lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clacks_core::{ChannelId, Error, EventPayload, MEMBER_BATCH_LISTED};
use clacks_delivery::{Delivery, EndReason};
use clacks_service::{ChatService, EventStream, Limits};
use clacks_testkit::{TestBackend, TestDatabase};
use common::caller;
use futures::StreamExt;

async fn service(db: &TestDatabase, max_bulk_members: usize) -> Arc<ChatService> {
    service_with_queue(db, max_bulk_members, 100_000).await
}

async fn service_with_queue(
    db: &TestDatabase,
    max_bulk_members: usize,
    queue_capacity: usize,
) -> Arc<ChatService> {
    let limits = Limits {
        max_bulk_members,
        ..Limits::default()
    };
    common::service_with(db, queue_capacity, limits).await
}

fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n:05}")).collect()
}

/// The next delivery, or a failure after 10 s.
async fn next(stream: &mut EventStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the stream is open")
}

/// The channel's stored events, as a resume from seq 0 reads them.
async fn stored_events(db: &TestDatabase, channel: ChannelId) -> Vec<clacks_core::ChannelEvent> {
    let store = clacks_store::connect(&db.url, &clacks_store::PoolSettings::default())
        .await
        .unwrap();
    store.events_after(channel, 0, 10_000).await.unwrap()
}

/// Every member of the channel, read page by page.
async fn all_pages(service: &ChatService, channel: ChannelId, limit: u32) -> Vec<String> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = service
            .admin_members_page(channel, after.clone(), Some(limit))
            .await
            .unwrap();
        let done = page.len() < limit as usize;
        after = page.last().map(|m| m.user_id.as_str().to_owned());
        all.extend(page.into_iter().map(|m| m.user_id.into_string()));
        if done {
            return all;
        }
    }
}

backend_tests!(
    bulk_add_reaches_added_members_live_and_is_idempotent,
    bulk_remove_ends_removed_members_subscriptions,
    bulk_changes_beyond_the_limits_are_refused_whole,
    a_bulk_change_of_thousands_is_one_event_for_subscribers_and_replay,
    a_small_bulk_change_lists_its_users_and_one_user_keeps_the_single_event,
    bulk_changes_racing_sends_keep_seqs_gap_free
);

/// Bulk adds and removes while a member keeps sending: every seq is taken
/// once, each request is one event, and a subscriber sees the whole stream
/// in order without a gap.
async fn bulk_changes_racing_sends_keep_seqs_gap_free(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db, 10_000).await;
    let channel = service
        .admin_create_channel("busy".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let mut stream = service
        .subscribe_events(&alice, Some(channel), &[])
        .await
        .unwrap();
    let sender = {
        let service = service.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            for n in 0..200 {
                service
                    .send(&alice, channel, format!("m{n}"), None)
                    .await
                    .unwrap();
            }
        })
    };
    let mut changes = Vec::new();
    for round in 0..4 {
        let add = users(&format!("r{round}-"), 1_000);
        changes.push(
            service
                .admin_change_members(channel, add.clone(), vec![], None)
                .await
                .unwrap(),
        );
        changes.push(
            service
                .admin_change_members(channel, vec![], add[..500].to_vec(), None)
                .await
                .unwrap(),
        );
    }
    sender.await.unwrap();
    let last = service.admin_channel(channel).await.unwrap().last_seq;
    assert_eq!(last, 200 + 4 * 2, "one seq per request");
    let (mut joined, mut left) = (0, 0);
    for seq in 1..=last {
        let Delivery::Event(event) = next(&mut stream).await else {
            panic!("the stream ended at {seq}");
        };
        assert_eq!(event.seq, seq, "in order, no gap");
        match &event.payload {
            EventPayload::MembersJoined { batch, .. } => {
                assert_eq!((batch.count, batch.truncated), (1_000, true));
                joined += 1;
            }
            EventPayload::MembersLeft { batch } => {
                assert_eq!((batch.count, batch.truncated), (500, true));
                left += 1;
            }
            EventPayload::MessageCreated { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((joined, left), (4, 4));
    assert!(changes.iter().all(|c| c.added == 1_000 || c.removed == 500));
}

/// 3,000 users added in one call are one event: subscribers (with a queue
/// of 64) get it and the message after, and a resume from seq 0 reads two
/// events, not 3,001. The stored event gives the count, not the users.
async fn a_bulk_change_of_thousands_is_one_event_for_subscribers_and_replay(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service_with_queue(&db, 10_000, 64).await;
    let channel = service
        .admin_create_channel("burst".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let mut single = service
        .subscribe_events(&alice, Some(channel), &[])
        .await
        .unwrap();
    let mut all = service.subscribe_events(&alice, None, &[]).await.unwrap();
    let change = service
        .admin_change_members(channel, users("u", 3_000), vec![], None)
        .await
        .unwrap();
    assert_eq!(change.added, 3_000);
    let sent = service
        .send(&alice, channel, "after the burst".into(), None)
        .await
        .unwrap();
    assert_eq!(sent.seq, 2);
    let mut resumed = service
        .subscribe_events(&alice, Some(channel), &[(channel, 0)])
        .await
        .unwrap();
    for stream in [&mut single, &mut all, &mut resumed] {
        let Delivery::Event(batch) = next(stream).await else {
            panic!("ended early");
        };
        assert_eq!(batch.seq, 1);
        let EventPayload::MembersJoined { batch, .. } = &batch.payload else {
            panic!("not a batch: {batch:?}");
        };
        assert_eq!((batch.count, batch.truncated), (3_000, true));
        assert!(batch.user_ids.is_empty(), "left out beyond the bound");
        let Delivery::Event(message) = next(stream).await else {
            panic!("ended early");
        };
        assert_eq!(message.seq, sent.seq);
    }
    let stored = stored_events(&db, channel).await;
    assert_eq!(stored.len(), 2, "one stored event for 3,000 users");
}

/// Up to the bound the batch lists its users; a request changing one user
/// in a direction keeps the single `member_joined` / `member_left`.
async fn a_small_bulk_change_lists_its_users_and_one_user_keeps_the_single_event(
    backend: TestBackend,
) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db, 10_000).await;
    let channel = service
        .admin_create_channel("small".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let listed = users("u", MEMBER_BATCH_LISTED);
    service
        .admin_change_members(channel, listed.clone(), vec!["alice".into()], None)
        .await
        .unwrap();
    service
        .admin_change_members(channel, vec!["bob".into()], listed[..2].to_vec(), None)
        .await
        .unwrap();
    let events = stored_events(&db, channel).await;
    assert_eq!(events.len(), 4);
    let EventPayload::MembersJoined { batch, .. } = &events[0].payload else {
        panic!("{:?}", events[0]);
    };
    let ids: Vec<&str> = batch.user_ids.iter().map(|u| u.as_str()).collect();
    assert_eq!(ids, listed.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((batch.count, batch.truncated), (100, false));
    assert!(
        matches!(&events[1].payload, EventPayload::MemberLeft { user_id } if user_id.as_str() == "alice")
    );
    assert!(
        matches!(&events[2].payload, EventPayload::MemberJoined { user_id, .. } if user_id.as_str() == "bob")
    );
    let EventPayload::MembersLeft { batch } = &events[3].payload else {
        panic!("{:?}", events[3]);
    };
    assert_eq!(batch.user_ids.len(), 2);
    assert!(!batch.truncated);
}

/// 5,000 users added in one call: an added user's all-channels stream
/// follows the channel from the batched join on, in seq order without a
/// gap, and gets the message sent after. A repeat changes nothing. Paging lists
/// every member exactly once.
async fn bulk_add_reaches_added_members_live_and_is_idempotent(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db, 10_000).await;
    let channel = service
        .admin_create_channel("big".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let carol = caller(&service, "carol");
    let mut carols = service.subscribe_events(&carol, None, &[]).await.unwrap();
    let mut alices = service
        .subscribe_events(&alice, Some(channel), &[])
        .await
        .unwrap();

    let mut add = vec!["carol".to_owned()];
    add.extend(users("u", 4_999));
    // A duplicate in the request counts once.
    add.push("u00001".into());
    let change = service
        .admin_change_members(channel, add.clone(), vec![], Some("reader".into()))
        .await
        .unwrap();
    assert_eq!(
        (change.added, change.already_members, change.removed),
        (5_000, 0, 0)
    );
    let sent = service
        .send(&alice, channel, "welcome, all".into(), None)
        .await
        .unwrap();
    assert_eq!(sent.seq, 2, "one seq for the change, then the message");

    // Carol's stream: the batched join (she is one of its users, left out
    // of the event's list at this size), then the message.
    let Delivery::Event(join) = next(&mut carols).await else {
        panic!("carol's stream ended");
    };
    assert_eq!((join.channel_id, join.seq), (channel, 1));
    let EventPayload::MembersJoined { batch, role } = &join.payload else {
        panic!("unexpected {join:?}");
    };
    assert_eq!((batch.count, batch.truncated), (5_000, true));
    assert_eq!(role.as_str(), "reader");
    let Delivery::Event(message) = next(&mut carols).await else {
        panic!("carol's stream ended");
    };
    assert_eq!(message.seq, sent.seq);
    // An existing member's single-channel stream saw all of it too.
    for seq in 1..=sent.seq {
        let Delivery::Event(event) = next(&mut alices).await else {
            panic!("alice's stream ended");
        };
        assert_eq!(event.seq, seq);
    }
    // A resume from before the change replays it from storage: one event.
    let mut resumed = service
        .subscribe_events(&alice, Some(channel), &[(channel, 0)])
        .await
        .unwrap();
    for seq in 1..=sent.seq {
        let Delivery::Event(event) = next(&mut resumed).await else {
            panic!("the resumed stream ended");
        };
        assert_eq!(event.seq, seq);
    }

    // The repeat: nothing changes, no seq is taken.
    let again = service
        .admin_change_members(channel, add, vec![], None)
        .await
        .unwrap();
    assert_eq!(
        (again.added, again.already_members, again.events.len()),
        (0, 5_000, 0)
    );
    assert_eq!(
        service.admin_channel(channel).await.unwrap().last_seq,
        sent.seq
    );

    // Every member exactly once, page by page, in the unpaged order.
    let paged = all_pages(&service, channel, 200).await;
    assert_eq!(paged.len(), 5_001);
    assert_eq!(paged.iter().collect::<HashSet<_>>().len(), 5_001);
    let unpaged: Vec<String> = service
        .admin_members(channel)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id.into_string())
        .collect();
    assert_eq!(paged, unpaged);
    // The client side, as a member.
    let first = service
        .members_page_for(&carol, channel, None, Some(3))
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[0].user_id.as_str(), unpaged[0]);
    // A non-member learns nothing.
    let eve = caller(&service, "eve");
    assert!(matches!(
        service.members_page_for(&eve, channel, None, None).await,
        Err(Error::NotMember { .. })
    ));
}

/// Removal in bulk: the removed members' single-channel subscriptions end
/// after the `members_left`, their all-channels streams stop routing the
/// channel, and nothing sent afterwards reaches them. Users who are not
/// members are counted; a repeat changes nothing.
async fn bulk_remove_ends_removed_members_subscriptions(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db, 10_000).await;
    let channel = service
        .admin_create_channel("shrinking".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let mut add = vec!["bob".to_owned(), "carol".to_owned()];
    add.extend(users("u", 3_000));
    service
        .admin_change_members(channel, add, vec![], None)
        .await
        .unwrap();
    let (alice, bob, carol) = (
        caller(&service, "alice"),
        caller(&service, "bob"),
        caller(&service, "carol"),
    );
    let mut bobs = service
        .subscribe_events(&bob, Some(channel), &[])
        .await
        .unwrap();
    let mut carols = service.subscribe_events(&carol, None, &[]).await.unwrap();
    let before = service
        .send(&alice, channel, "before".into(), None)
        .await
        .unwrap();

    let mut remove = vec!["bob".to_owned(), "carol".to_owned(), "nobody".to_owned()];
    remove.extend(users("u", 2_000));
    let change = service
        .admin_change_members(channel, vec![], remove.clone(), None)
        .await
        .unwrap();
    assert_eq!((change.removed, change.not_members), (2_002, 1));
    let after = service
        .send(&alice, channel, "after".into(), None)
        .await
        .unwrap();
    assert_eq!(after.seq, before.seq + 2);

    // Bob: the message before, the batched leave, then the end.
    let Delivery::Event(first) = next(&mut bobs).await else {
        panic!("bob's stream ended early");
    };
    assert_eq!(first.seq, before.seq);
    let mut last = first.seq;
    loop {
        match next(&mut bobs).await {
            Delivery::Event(event) => {
                assert_eq!(event.seq, last + 1, "in order, no gap");
                last = event.seq;
                assert!(
                    event.seq < after.seq,
                    "nothing after the removal reaches bob"
                );
                assert!(matches!(event.payload, EventPayload::MembersLeft { .. }));
            }
            Delivery::End(reason) => {
                assert_eq!(reason, EndReason::Removed);
                break;
            }
        }
    }
    // Carol: everything up to her own leave, then nothing of the channel.
    loop {
        let Delivery::Event(event) = next(&mut carols).await else {
            panic!("carol's all-channels stream ends only with her connection");
        };
        assert!(event.seq < after.seq, "nothing after carol's removal");
        if let EventPayload::MembersLeft { batch } = &event.payload {
            assert_eq!((batch.count, batch.truncated), (2_002, true));
            break;
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), carols.next())
            .await
            .is_err(),
        "nothing reaches carol after her member_left"
    );
    assert!(
        service
            .subscribe_events(&bob, Some(channel), &[])
            .await
            .is_err()
    );

    let again = service
        .admin_change_members(channel, vec![], remove, None)
        .await
        .unwrap();
    assert_eq!((again.removed, again.not_members), (0, 2_003));
    let left = all_pages(&service, channel, 150).await;
    assert_eq!(left.len(), 1_001, "alice and u02000..u02999");
    assert_eq!(left.iter().collect::<HashSet<_>>().len(), 1_001);
}

/// Over the limit, an invalid user id, a user both added and removed, or
/// no such channel: refused, and nothing changes.
async fn bulk_changes_beyond_the_limits_are_refused_whole(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db, 10).await;
    let channel = service
        .admin_create_channel("limited".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let refused = |result: Result<clacks_service::MembershipChange, Error>| {
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{result:?}"
        );
    };
    refused(
        service
            .admin_change_members(channel, users("u", 6), users("v", 5), None)
            .await,
    );
    let mut bad = users("u", 3);
    bad.push(" ".into());
    refused(
        service
            .admin_change_members(channel, bad, vec![], None)
            .await,
    );
    refused(
        service
            .admin_change_members(channel, vec!["bob".into()], vec!["bob".into()], None)
            .await,
    );
    refused(
        service
            .admin_change_members(channel, users("u", 2), vec![], Some(String::new()))
            .await,
    );
    assert!(matches!(
        service
            .admin_change_members(ChannelId(channel.0 + 1_000), users("u", 2), vec![], None)
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        service
            .admin_members_page(ChannelId(channel.0 + 1_000), None, None)
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(all_pages(&service, channel, 50).await, vec!["alice"]);
    assert_eq!(service.admin_channel(channel).await.unwrap().last_seq, 0);
    // At the limit exactly: accepted.
    let change = service
        .admin_change_members(channel, users("u", 10), vec![], None)
        .await
        .unwrap();
    assert_eq!(change.added, 10);
}
