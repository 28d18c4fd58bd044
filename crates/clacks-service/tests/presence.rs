//! Presence at the service boundary, on every backend: online while a
//! connection of the user is registered, last seen when the last one
//! closes, the online members of a channel for its members only, and
//! `presence` events for small channels only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clacks_core::{ChannelId, Error, EventPayload};
use clacks_delivery::{ConnectionGuard, Delivery};
use clacks_service::{Caller, ChatService, EventStream, Limits};
use clacks_testkit::{TestBackend, TestDatabase};
use common::{caller, service_exactly, service_with};
use futures::StreamExt;

backend_tests!(
    online_until_the_last_connection_closes,
    online_members_of_a_channel_for_members_only,
    presence_events_reach_small_channels_only,
    a_members_scan_for_presence_is_paid_from_the_query_budget,
);

fn connect(service: &ChatService, who: &Caller) -> ConnectionGuard {
    let mut connection = service
        .admit_connection(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .unwrap();
    service.register_connection(&mut connection, who).unwrap();
    connection
}

async fn channel(service: &ChatService, members: &[&str]) -> ChannelId {
    service
        .admin_create_channel(
            "presence".into(),
            members.iter().map(|m| (*m).to_owned()).collect(),
            None,
        )
        .await
        .unwrap()
        .id
}

async fn online_until_the_last_connection_closes(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service_with(&db, 1_000, Limits::default()).await;
    let ann = caller(&service, "ann");
    let before = service.admin_user_presence("ann".into()).unwrap();
    assert!(!before.online);
    assert_eq!(before.last_seen_at, None, "never seen since the start");

    let first = connect(&service, &ann);
    let second = connect(&service, &ann);
    assert!(service.presence_of(&ann.user_id).online);
    drop(first);
    assert!(
        service.presence_of(&ann.user_id).online,
        "one connection is still open"
    );
    let closed_at = clacks_core::now_ms();
    drop(second);
    let after = service.admin_user_presence("ann".into()).unwrap();
    assert!(!after.online);
    let seen = after.last_seen_at.expect("last seen when the last closed");
    assert!((seen - closed_at).abs() < 5_000, "{seen} vs {closed_at}");
    assert!(matches!(
        service.admin_user_presence("".into()),
        Err(Error::InvalidInput { .. })
    ));
}

async fn online_members_of_a_channel_for_members_only(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service_with(&db, 1_000, Limits::default()).await;
    let channel = channel(&service, &["ann", "bob", "cat", "dan"]).await;
    let ann = caller(&service, "ann");
    let eve = caller(&service, "eve");
    let _ann = connect(&service, &ann);
    let _cat = connect(&service, &caller(&service, "cat"));
    let _dan = connect(&service, &caller(&service, "dan"));
    let _eve = connect(&service, &eve);

    let names = |users: Vec<clacks_core::UserId>| {
        users
            .into_iter()
            .map(|u| u.into_string())
            .collect::<Vec<_>>()
    };
    let all = service
        .online_members_for(&ann, channel, None, None)
        .await
        .unwrap();
    assert_eq!(
        names(all),
        ["ann", "cat", "dan"],
        "eve is online, not a member"
    );
    let first = service
        .online_members_for(&ann, channel, None, Some(2))
        .await
        .unwrap();
    assert_eq!(names(first), ["ann", "cat"]);
    let rest = service
        .online_members_for(&ann, channel, Some("cat".into()), Some(2))
        .await
        .unwrap();
    assert_eq!(names(rest), ["dan"]);

    let refused = service.online_members_for(&eve, channel, None, None).await;
    assert!(
        matches!(refused, Err(Error::NotMember { .. })),
        "{refused:?}"
    );
    let missing = service
        .online_members_for(&eve, ChannelId(i64::from(i32::MAX)), None, None)
        .await;
    assert!(
        matches!(missing, Err(Error::NotMember { .. })),
        "{missing:?}"
    );
    assert_eq!(
        names(
            service
                .admin_online_members(channel, None, None)
                .await
                .unwrap()
        ),
        ["ann", "cat", "dan"]
    );
}

/// The next presence event of a stream, skipping others; `None` if none
/// comes within `wait`.
async fn next_presence(stream: &mut EventStream, wait: Duration) -> Option<(String, bool)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let delivery = tokio::time::timeout_at(deadline, stream.next())
            .await
            .ok()??;
        if let Delivery::Event(event) = delivery
            && let EventPayload::Presence {
                user_id, online, ..
            } = &event.payload
        {
            assert!(!event.durable);
            return Some((user_id.as_str().to_owned(), *online));
        }
    }
}

async fn presence_events_reach_small_channels_only(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let limits = Limits {
        presence_events_max_members: 3,
        ..Limits::default()
    };
    let service = service_with(&db, 1_000, limits).await;
    let small = channel(&service, &["ann", "bob", "cat"]).await;
    let big = channel(&service, &["ann", "bob", "cat", "dan"]).await;
    let bob = caller(&service, "bob");
    let mut in_small = service
        .subscribe_events(&bob, Some(small), &[])
        .await
        .unwrap();
    let mut in_big = service
        .subscribe_events(&bob, Some(big), &[])
        .await
        .unwrap();

    let ann = caller(&service, "ann");
    let first = connect(&service, &ann);
    assert_eq!(
        next_presence(&mut in_small, Duration::from_secs(5)).await,
        Some(("ann".into(), true))
    );
    let second = connect(&service, &ann);
    drop(first);
    assert_eq!(
        next_presence(&mut in_small, Duration::from_millis(300)).await,
        None,
        "a second socket and closing one of two change nothing"
    );
    drop(second);
    assert_eq!(
        next_presence(&mut in_small, Duration::from_secs(5)).await,
        Some(("ann".into(), false))
    );
    assert_eq!(
        next_presence(&mut in_big, Duration::from_millis(300)).await,
        None,
        "a channel over the limit gets no presence events"
    );
}

/// A huge channel with few members online makes `presence(channel)` read
/// many member pages; a client pays for each page after the first from its
/// query-cost budget and is refused when it runs out, so repeating a
/// cheap-looking query cannot keep the database reading member lists. The
/// management API is not metered.
async fn a_members_scan_for_presence_is_paid_from_the_query_budget(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let mut limits = Limits::default();
    // Room for one page after the first (1,010 units), not two.
    limits.rates.query_cost = clacks_service::Rate::new(1, 1_500).unwrap();
    let service = service_exactly(&db, 1_000, limits).await;
    let channel = channel(&service, &["ann"]).await;
    let others: Vec<String> = (0..2_500).map(|n| format!("user{n:05}")).collect();
    service
        .admin_change_members(channel, others, Vec::new(), None)
        .await
        .unwrap();
    let ann = caller(&service, "ann");
    let _ann = connect(&service, &ann);
    let _last = connect(&service, &caller(&service, "user02499"));

    // From near the end: one page, free.
    let tail = service
        .online_members_for(&ann, channel, Some("user02000".into()), None)
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    // From the start: three pages, the budget pays for one.
    let refused = service.online_members_for(&ann, channel, None, None).await;
    assert!(
        matches!(refused, Err(Error::RateLimited { .. })),
        "{refused:?}"
    );
    let all = service
        .admin_online_members(channel, None, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}
