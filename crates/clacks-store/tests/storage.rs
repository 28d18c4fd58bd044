//! One storage suite, run against SQLite, MySQL/MariaDB and PostgreSQL, each
//! test in a fresh database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use clacks_core::{
    ChannelId, ChannelPage, ClientMessageId, DisplayName, Entity, Error, EventPayload, HistoryPage,
    MessageBody, Metadata, Role, Sender, UserId,
};
use clacks_store::{
    Actor, ChannelPatch, NewMessage, PoolSettings, SearchIndexed, SearchPageRequest, SearchScope,
    Store,
};
use clacks_testkit::{TestBackend, TestDatabase};

async fn run<F, Fut>(backend: TestBackend, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    run_with(backend, PoolSettings::default(), test).await
}

/// MariaDB through the statements written for MySQL 8 (no `INSERT ...
/// RETURNING`), which no test database here runs.
async fn run_mysql8<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let settings = PoolSettings {
        mysql8_statements: true,
        ..PoolSettings::default()
    };
    run_with(TestBackend::MySql, settings, test).await
}

async fn run_with<F, Fut>(backend: TestBackend, settings: PoolSettings, test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = clacks_store::connect(&db.url, &settings)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    test(store.clone()).await;
    store.close().await;
}

macro_rules! storage_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(clacks_testkit::TestBackend::Sqlite, super::$name).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(clacks_testkit::TestBackend::MySql, super::$name).await })*
        }
        mod mysql8 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run_mysql8(super::$name).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(clacks_testkit::TestBackend::Postgres, super::$name).await })*
        }
    };
}

storage_tests!(
    concurrent_writers_get_gap_free_seqs,
    idempotent_retry_under_concurrency_stores_one_message,
    watermark_never_moves_back,
    unread_counts_exclude_own_and_deleted_messages,
    channel_delete_leaves_nothing_behind,
    members_add_idempotently_and_record_events,
    history_pages_in_both_directions,
    events_after_replays_the_stream_in_order,
    edit_and_delete_keep_tombstones,
    seen_by_answers_who_and_when,
    settings_first_value_wins,
    channels_update_and_page,
    user_ids_compare_exactly,
    writes_to_missing_channels_are_not_found,
    batched_sends_across_channels_stay_gap_free,
    membership_is_checked_in_the_storing_transaction,
    edits_and_deletes_need_the_sender_as_a_member,
    no_message_from_a_removed_member_after_member_left,
    webhook_outbox_rows_commit_with_their_events,
    small_channels_of_a_user_count_members_up_to_the_limit,
    a_bulk_change_stores_one_small_event_per_direction,
    the_search_index_follows_sends_edits_and_deletes_when_indexed,
    indexing_respects_its_budget,
    concurrent_indexers_index_each_message_once,
    a_channel_far_behind_is_indexed_in_one_call,
);

/// 150 users added and 2 removed in one change: two stored events, the
/// larger one counting its users without listing them (they are kept aside
/// for `batch_users`), each user's watermark at the batch. Deleting the
/// channel leaves none of it.
async fn a_bulk_change_stores_one_small_event_per_direction(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "bob", "carol"]).await;
    let add: Vec<UserId> = (0..150).map(|n| user(&format!("u{n:03}"))).collect();
    let change = store
        .change_members(
            channel,
            &add,
            &[user("bob"), user("carol")],
            &Role::member(),
        )
        .await
        .unwrap();
    assert_eq!(
        (change.added, change.removed, change.events.len()),
        (150, 2, 2)
    );
    let events = store.events_after(channel, 0, 1_000).await.unwrap();
    assert_eq!(events.len(), 2);
    let EventPayload::MembersJoined { batch, .. } = &events[0].payload else {
        panic!("{:?}", events[0]);
    };
    assert_eq!((batch.count, batch.truncated), (150, true));
    assert!(batch.user_ids.is_empty() && batch.needs_lookup());
    let EventPayload::MembersLeft { batch } = &events[1].payload else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(batch.user_ids, vec![user("bob"), user("carol")]);
    assert!(!batch.truncated);

    let mut all = store.batch_users(channel, 1, None).await.unwrap();
    all.sort();
    assert_eq!(all, add);
    assert_eq!(
        store
            .batch_users(channel, 1, Some(&user("u007")))
            .await
            .unwrap(),
        vec![user("u007")]
    );
    assert!(
        store
            .batch_users(channel, 1, Some(&user("bob")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .batch_users(channel, 2, None)
            .await
            .unwrap()
            .is_empty(),
        "listed"
    );
    let member = store.member(channel, &user("u100")).await.unwrap().unwrap();
    assert_eq!(member.last_read_seq, 1);

    store.delete_channel(channel).await.unwrap();
    assert_eq!(store.rows_referencing(channel).await.unwrap(), 0);
}

/// Two store instances on one database (two nodes) racing on one client
/// message id still store it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_racing_on_one_client_id_store_one_message() {
    for backend in [
        TestBackend::Sqlite,
        TestBackend::MySql,
        TestBackend::Postgres,
    ] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let first = clacks_store::connect(&db.url, &PoolSettings::default())
            .await
            .unwrap();
        first.migrate().await.unwrap();
        let second = clacks_store::connect(&db.url, &PoolSettings::default())
            .await
            .unwrap();
        let channel = channel_with(&first, &["alice"]).await;
        for round in 0..20 {
            let new = NewMessage {
                channel_id: channel,
                sender: Sender::User(user("alice")),
                content: body("once"),
                client_message_id: Some(ClientMessageId::parse(format!("race-{round}")).unwrap()),
            };
            let tasks: Vec<_> = [first.clone(), second.clone(), first.clone(), second.clone()]
                .into_iter()
                .map(|store| {
                    let new = new.clone();
                    tokio::spawn(async move { store.create_message(&new).await.unwrap() })
                })
                .collect();
            let mut ids = HashSet::new();
            let mut created = 0;
            for task in tasks {
                let stored = task.await.unwrap();
                ids.insert(stored.message.id);
                created += usize::from(stored.created);
            }
            assert_eq!(
                (ids.len(), created),
                (1, 1),
                "{} round {round}",
                backend.name()
            );
        }
        assert_eq!(
            first.channel(channel).await.unwrap().last_seq,
            20,
            "{}",
            backend.name()
        );
        first.close().await;
        second.close().await;
    }
}

/// Nodes starting together on a fresh database (`docker compose up` with
/// two nodes) all start: one applies the migrations while the others wait
/// for it, then find them applied. SQLite is not shared between nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_on_a_fresh_database_all_migrate() {
    for backend in [TestBackend::MySql, TestBackend::Postgres] {
        for round in 0..3 {
            let Some(db) = TestDatabase::create(backend).await else {
                break;
            };
            let settings = PoolSettings::default();
            let nodes = futures::future::try_join_all(
                (0..4).map(|_| clacks_store::connect(&db.url, &settings)),
            )
            .await
            .unwrap();
            let migrated = futures::future::join_all(nodes.iter().map(|node| node.migrate())).await;
            for (node, result) in migrated.into_iter().enumerate() {
                if let Err(e) = result {
                    panic!(
                        "{} round {round}: node {node} failed to migrate: {e}",
                        backend.name()
                    );
                }
            }
            let channel = channel_with(&nodes[0], &["alice"]).await;
            assert_eq!(send(&nodes[3], channel, "alice", "up").await.seq, 1);
            for node in nodes {
                node.close().await;
            }
        }
    }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn body(text: &str) -> MessageBody {
    MessageBody::parse(text, 16 * 1024).unwrap()
}

async fn channel_with(store: &Arc<dyn Store>, members: &[&str]) -> ChannelId {
    let members: Vec<UserId> = members.iter().map(|m| user(m)).collect();
    store
        .create_channel(&DisplayName::parse("general").unwrap(), None, &members)
        .await
        .unwrap()
        .id
}

async fn small_channels_of_a_user_count_members_up_to_the_limit(store: Arc<dyn Store>) {
    let pair = channel_with(&store, &["ann", "bob"]).await;
    let trio = channel_with(&store, &["ann", "bob", "cat"]).await;
    let crowd = channel_with(&store, &["ann", "bob", "cat", "dan", "eve"]).await;
    let _without_ann = channel_with(&store, &["bob"]).await;
    let ann = user("ann");
    assert_eq!(
        store.small_channels_of(&ann, 3, 100).await.unwrap(),
        vec![pair, trio]
    );
    assert_eq!(
        store.small_channels_of(&ann, 2, 100).await.unwrap(),
        vec![pair]
    );
    assert_eq!(
        store.small_channels_of(&ann, 5, 100).await.unwrap(),
        vec![pair, trio, crowd]
    );
    assert_eq!(
        store.small_channels_of(&ann, 5, 2).await.unwrap(),
        vec![pair, trio]
    );
    assert!(
        store
            .small_channels_of(&ann, 1, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .small_channels_of(&user("zed"), 100, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn send(
    store: &Arc<dyn Store>,
    channel: ChannelId,
    from: &str,
    text: &str,
) -> clacks_core::Message {
    store
        .create_message(&NewMessage {
            channel_id: channel,
            sender: Sender::User(user(from)),
            content: body(text),
            client_message_id: None,
        })
        .await
        .unwrap()
        .message
}

async fn concurrent_writers_get_gap_free_seqs(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 500;
    let channel = channel_with(&store, &["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"]).await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(PER_WRITER);
                for i in 0..PER_WRITER {
                    seqs.push(
                        send(&store, channel, &format!("w{w}"), &format!("m{i}"))
                            .await
                            .seq,
                    );
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let expected: Vec<i64> = (1..=(WRITERS * PER_WRITER) as i64).collect();
    assert_eq!(
        all,
        expected,
        "seqs are exactly 1..={}",
        WRITERS * PER_WRITER
    );

    let stored = store
        .history(channel, HistoryPage::After(0), 10_000)
        .await
        .unwrap();
    let stored: Vec<i64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(stored, expected);
    assert_eq!(store.channel(channel).await.unwrap().last_seq, 4000);
}

async fn idempotent_retry_under_concurrency_stores_one_message(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    let new = NewMessage {
        channel_id: channel,
        sender: Sender::User(user("alice")),
        content: body("hello once"),
        client_message_id: Some(ClientMessageId::parse("retry-1").unwrap()),
    };
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let new = new.clone();
            tokio::spawn(async move { store.create_message(&new).await.unwrap() })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let stored = task.await.unwrap();
        ids.insert(stored.message.id);
        created += usize::from(stored.created);
        assert_eq!(stored.message.seq, 1);
        assert_eq!(stored.message.content, "hello once");
    }
    assert_eq!(ids.len(), 1, "every retry returns the same message");
    assert_eq!(created, 1, "exactly one call stored it");
    let history = store
        .history(channel, HistoryPage::Before(None), 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    // The seq counter was not consumed by the losing retries.
    assert_eq!(store.channel(channel).await.unwrap().last_seq, 1);
    // The same client id from another sender is another message.
    store
        .add_member(channel, &user("bob"), &Role::member())
        .await
        .unwrap();
    let other = store
        .create_message(&NewMessage {
            sender: Sender::User(user("bob")),
            ..new
        })
        .await
        .unwrap();
    assert!(other.created);
}

async fn watermark_never_moves_back(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "bob"]).await;
    for i in 0..10 {
        send(&store, channel, "alice", &format!("m{i}")).await;
    }
    let bob = user("bob");
    let first = store.mark_read(channel, &bob, 5).await.unwrap();
    assert!(first.moved);
    assert_eq!(first.member.last_read_seq, 5);
    assert!(first.member.last_read_at.is_some());

    let back = store.mark_read(channel, &bob, 3).await.unwrap();
    assert!(!back.moved);
    assert_eq!(back.member.last_read_seq, 5);

    let beyond = store.mark_read(channel, &bob, 1_000).await.unwrap();
    assert!(beyond.moved);
    assert_eq!(
        beyond.member.last_read_seq, 10,
        "clamped to the channel's last seq"
    );

    let concurrent: Vec<_> = (0..10)
        .map(|s| {
            let store = store.clone();
            let bob = bob.clone();
            tokio::spawn(async move { store.mark_read(channel, &bob, s).await.unwrap() })
        })
        .collect();
    for task in concurrent {
        assert_eq!(task.await.unwrap().member.last_read_seq, 10);
    }
    assert!(matches!(
        store.mark_read(channel, &bob, -1).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(
        store
            .mark_read(channel, &user("carol"), 1)
            .await
            .unwrap_err(),
        Error::NotMember {
            user: user("carol"),
            channel
        }
    );
}

async fn unread_counts_exclude_own_and_deleted_messages(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "bob"]).await;
    let other = channel_with(&store, &["bob"]).await;
    let a1 = send(&store, channel, "alice", "a1").await;
    send(&store, channel, "alice", "a2").await;
    send(&store, channel, "alice", "a3").await;
    send(&store, channel, "bob", "b1").await;
    let b2 = send(&store, channel, "bob", "b2").await;
    store
        .delete_message(a1.id, Actor::Application)
        .await
        .unwrap();
    store
        .create_message(&NewMessage {
            channel_id: other,
            sender: Sender::System,
            content: body("welcome"),
            client_message_id: None,
        })
        .await
        .unwrap();

    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(
        store.unread_count(channel, &bob).await.unwrap(),
        2,
        "alice's live messages"
    );
    assert_eq!(
        store.unread_count(channel, &alice).await.unwrap(),
        2,
        "bob's messages"
    );
    assert_eq!(
        store.unread_count(other, &bob).await.unwrap(),
        1,
        "system messages count"
    );

    let summaries = store.user_channels(&bob).await.unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].channel.id, channel);
    assert_eq!(summaries[0].unread_count, 2);
    assert_eq!(
        summaries[0].last_message.as_ref().map(|m| m.id),
        Some(b2.id)
    );
    assert_eq!(summaries[1].unread_count, 1);
    let total: i64 = summaries.iter().map(|s| s.unread_count).sum();
    assert_eq!(total, 3);
    assert_eq!(store.unread_messages(&bob, 100).await.unwrap().len(), 3);

    store.mark_read(channel, &bob, b2.seq).await.unwrap();
    assert_eq!(store.unread_count(channel, &bob).await.unwrap(), 0);
    assert_eq!(store.user_channels(&bob).await.unwrap()[0].unread_count, 0);
    assert_eq!(store.unread_messages(&bob, 100).await.unwrap().len(), 1);
}

async fn channel_delete_leaves_nothing_behind(store: Arc<dyn Store>) {
    let keep = channel_with(&store, &["alice"]).await;
    send(&store, keep, "alice", "stays").await;
    let channel = channel_with(&store, &["alice", "bob"]).await;
    let m = send(&store, channel, "alice", "hello").await;
    send(&store, channel, "bob", "hi").await;
    store
        .edit_message(m.id, &user("alice"), &body("hello!"))
        .await
        .unwrap();
    store.mark_read(channel, &user("bob"), 2).await.unwrap();
    store
        .add_member(channel, &user("carol"), &Role::member())
        .await
        .unwrap();
    store
        .update_channel(
            channel,
            &ChannelPatch {
                display_name: Some(DisplayName::parse("renamed").unwrap()),
                metadata: None,
            },
        )
        .await
        .unwrap();
    store
        .index_search(&SearchScope::Channel(channel), 1000)
        .await
        .unwrap();
    assert_eq!(search_ids(&store, "hello").await, [m.id]);
    assert!(store.rows_referencing(channel).await.unwrap() > 5);

    let deleted = store.delete_channel(channel).await.unwrap();
    assert_eq!(
        deleted.members,
        vec![user("alice"), user("bob"), user("carol")]
    );
    assert_eq!(store.rows_referencing(channel).await.unwrap(), 0);
    assert_eq!(
        store.channel(channel).await.unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    assert_eq!(
        store.delete_channel(channel).await.unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    assert_eq!(
        store.message(m.id).await.unwrap_err(),
        Error::NotFound(Entity::Message)
    );
    // Other channels are untouched.
    assert_eq!(
        store
            .history(keep, HistoryPage::Before(None), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.user_channels(&user("alice")).await.unwrap().len(), 1);
}

async fn members_add_idempotently_and_record_events(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "alice"]).await;
    assert_eq!(
        store.members(channel).await.unwrap().len(),
        1,
        "initial users deduplicated"
    );
    let bob = user("bob");
    let admin = Role::parse("admin").unwrap();
    let added = store.add_member(channel, &bob, &admin).await.unwrap();
    let event = added.event.expect("a joined event");
    assert_eq!(event.seq, 1);
    assert!(
        matches!(event.payload, EventPayload::MemberJoined { ref user_id, .. } if user_id == &bob)
    );
    assert_eq!(added.member.role, admin);
    assert_eq!(
        added.member.last_read_seq, 1,
        "a new member starts with nothing unread"
    );

    let again = store
        .add_member(channel, &bob, &Role::member())
        .await
        .unwrap();
    assert!(again.event.is_none());
    assert_eq!(again.member.role, admin, "a repeat add changes nothing");

    // Concurrent adds of one user: one event.
    let carol = user("carol");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let carol = carol.clone();
            tokio::spawn(async move {
                store
                    .add_member(channel, &carol, &Role::member())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut events = 0;
    for task in tasks {
        events += usize::from(task.await.unwrap().event.is_some());
    }
    assert_eq!(events, 1);
    assert_eq!(store.channel(channel).await.unwrap().last_seq, 2);

    let members: Vec<String> = store
        .members(channel)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user_id.into_string())
        .collect();
    assert_eq!(members, vec!["alice", "bob", "carol"]);

    let left = store.remove_member(channel, &bob).await.unwrap();
    assert_eq!(left.seq, 3);
    assert!(matches!(left.payload, EventPayload::MemberLeft { .. }));
    assert_eq!(
        store.remove_member(channel, &bob).await.unwrap_err(),
        Error::NotFound(Entity::Member)
    );
    assert!(store.member(channel, &bob).await.unwrap().is_none());
    assert_eq!(
        store.channel(channel).await.unwrap().last_seq,
        3,
        "a failed removal takes no seq"
    );
    assert_eq!(
        store.members(ChannelId(i64::MAX)).await.unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    assert_eq!(
        store
            .remove_member(ChannelId(i64::MAX), &bob)
            .await
            .unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
}

async fn history_pages_in_both_directions(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    for i in 1..=25 {
        send(&store, channel, "alice", &format!("m{i}")).await;
    }
    let seqs = |page: Vec<clacks_core::Message>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    let newest = store
        .history(channel, HistoryPage::Before(None), 10)
        .await
        .unwrap();
    assert_eq!(seqs(newest), (16..=25).rev().collect::<Vec<_>>());
    let older = store
        .history(channel, HistoryPage::Before(Some(16)), 10)
        .await
        .unwrap();
    assert_eq!(seqs(older), (6..=15).rev().collect::<Vec<_>>());
    let oldest = store
        .history(channel, HistoryPage::Before(Some(6)), 10)
        .await
        .unwrap();
    assert_eq!(seqs(oldest), (1..=5).rev().collect::<Vec<_>>());
    let forward = store
        .history(channel, HistoryPage::After(20), 10)
        .await
        .unwrap();
    assert_eq!(seqs(forward), (21..=25).collect::<Vec<_>>());
    let window = store
        .history(channel, HistoryPage::Between(10, 14), 10)
        .await
        .unwrap();
    assert_eq!(
        seqs(window),
        vec![11, 12, 13],
        "after < seq < before, oldest first"
    );
    let cut = store
        .history(channel, HistoryPage::Between(10, 20), 3)
        .await
        .unwrap();
    assert_eq!(
        seqs(cut),
        vec![11, 12, 13],
        "the oldest of the window first"
    );
    let empty = store
        .history(channel, HistoryPage::Between(14, 10), 10)
        .await
        .unwrap();
    assert!(empty.is_empty(), "an empty window is no error");
    let bounded = store
        .history(channel, HistoryPage::After(0), u32::MAX)
        .await
        .unwrap();
    assert_eq!(bounded.len(), 25, "a huge limit is clamped, not an error");
    assert_eq!(
        store.message_by_seq(channel, 7).await.unwrap().content,
        "m7"
    );
    assert_eq!(
        store.message_by_seq(channel, 99).await.unwrap_err(),
        Error::NotFound(Entity::Message)
    );
}

async fn events_after_replays_the_stream_in_order(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    let m1 = send(&store, channel, "alice", "one").await; // 1
    store
        .add_member(channel, &user("bob"), &Role::member())
        .await
        .unwrap(); // 2
    send(&store, channel, "bob", "two").await; // 3
    store
        .edit_message(m1.id, &user("alice"), &body("one, edited"))
        .await
        .unwrap(); // 4
    store
        .update_channel(
            channel,
            &ChannelPatch {
                display_name: Some(DisplayName::parse("renamed").unwrap()),
                metadata: Some(Some(
                    Metadata::parse(serde_json::json!({"topic": "x"})).unwrap(),
                )),
            },
        )
        .await
        .unwrap(); // 5
    store
        .delete_message(m1.id, Actor::User(&user("alice")))
        .await
        .unwrap(); // 6
    store.remove_member(channel, &user("bob")).await.unwrap(); // 7

    let all = store.events_after(channel, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|e| e.durable && e.channel_id == channel));
    let kinds: Vec<&str> = all
        .iter()
        .map(|e| match &e.payload {
            EventPayload::MessageCreated { .. } => "created",
            EventPayload::MemberJoined { .. } => "joined",
            EventPayload::MessageEdited { .. } => "edited",
            EventPayload::ChannelUpdated { .. } => "updated",
            EventPayload::MessageDeleted { .. } => "deleted",
            EventPayload::MemberLeft { .. } => "left",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created", "joined", "created", "edited", "updated", "deleted", "left"
        ]
    );
    match &all[4].payload {
        EventPayload::ChannelUpdated { channel: updated } => {
            assert_eq!(updated.display_name, "renamed");
            assert_eq!(updated.metadata.as_ref().unwrap().as_value()["topic"], "x");
        }
        other => panic!("unexpected {other:?}"),
    }
    let page = store.events_after(channel, 2, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(
        store
            .events_after(channel, 7, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn edit_and_delete_keep_tombstones(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    let m = send(&store, channel, "alice", "draft").await;
    let (edited, event) = store
        .edit_message(m.id, &user("alice"), &body("final"))
        .await
        .unwrap();
    assert_eq!(edited.content, "final");
    assert!(edited.edited_at.is_some());
    assert_eq!(edited.seq, 1, "an edit keeps the message's seq");
    assert_eq!(event.seq, 2, "and records an event with the next one");

    let (tombstone, event) = store
        .delete_message(m.id, Actor::User(&user("alice")))
        .await
        .unwrap();
    assert!(tombstone.is_deleted());
    assert_eq!(tombstone.content, "");
    assert_eq!(tombstone.seq, 1);
    assert_eq!(event.unwrap().seq, 3);
    let (_, again) = store
        .delete_message(m.id, Actor::Application)
        .await
        .unwrap();
    assert!(again.is_none(), "deleting twice records nothing");
    assert!(matches!(
        store
            .edit_message(m.id, &user("alice"), &body("zombie"))
            .await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.channel(channel).await.unwrap().last_seq, 3);
    let history = store
        .history(channel, HistoryPage::Before(None), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "the tombstone stays in history");
    assert!(history[0].is_deleted());
    assert_eq!(
        store
            .edit_message(clacks_core::MessageId(i64::MAX), &user("alice"), &body("x"))
            .await
            .unwrap_err(),
        Error::NotFound(Entity::Message)
    );
}

async fn seen_by_answers_who_and_when(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "bob", "carol"]).await;
    for i in 1..=5 {
        send(&store, channel, "alice", &format!("m{i}")).await;
    }
    store.mark_read(channel, &user("bob"), 3).await.unwrap();
    store.mark_read(channel, &user("bob"), 4).await.unwrap();
    store.mark_read(channel, &user("carol"), 5).await.unwrap();

    let seen: Vec<String> = store
        .seen_by(channel, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.user_id.into_string())
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(seen.contains(&"bob".to_owned()) && seen.contains(&"carol".to_owned()));
    let seen5 = store.seen_by(channel, 5).await.unwrap();
    assert_eq!(seen5.len(), 1);
    assert_eq!(seen5[0].user_id, user("carol"));
    assert!(seen5[0].seen_at > 0);

    // Moves within the window coalesce into one row per reader.
    let marks = store.read_marks(channel, &user("bob")).await.unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].up_to_seq, 4);
    assert_eq!(
        clacks_core::ReadMark::seen_at(&marks, 2),
        Some(marks[0].read_at)
    );
    assert_eq!(clacks_core::ReadMark::seen_at(&marks, 5), None);
}

async fn settings_first_value_wins(store: Arc<dyn Store>) {
    assert_eq!(store.setting("jwt_secret").await.unwrap(), None);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .init_setting("jwt_secret", &format!("secret-{i}"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut values = HashSet::new();
    for task in tasks {
        values.insert(task.await.unwrap());
    }
    assert_eq!(values.len(), 1);
    let stored = store.setting("jwt_secret").await.unwrap().unwrap();
    assert!(values.contains(&stored));
}

async fn channels_update_and_page(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            store
                .create_channel(&DisplayName::parse(format!("c{i}")).unwrap(), None, &[])
                .await
                .unwrap()
                .id,
        );
    }
    let first = store
        .list_channels(ChannelPage {
            after_id: None,
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), ids[..3]);
    let next = store
        .list_channels(ChannelPage {
            after_id: Some(ids[2]),
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(next.iter().map(|c| c.id).collect::<Vec<_>>(), ids[3..6]);

    let metadata = Metadata::parse(serde_json::json!({"kind": "support", "n": 1})).unwrap();
    let (updated, event) = store
        .update_channel(
            ids[0],
            &ChannelPatch {
                display_name: Some(DisplayName::parse("Ünïcödé 💬").unwrap()),
                metadata: Some(Some(metadata.clone())),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Ünïcödé 💬");
    assert_eq!(updated.metadata, Some(metadata));
    assert_eq!(event.seq, 1);
    let fetched = store.channel(ids[0]).await.unwrap();
    assert_eq!(fetched.display_name, "Ünïcödé 💬");
    let (cleared, _) = store
        .update_channel(
            ids[0],
            &ChannelPatch {
                display_name: None,
                metadata: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.metadata, None);
    assert_eq!(cleared.display_name, "Ünïcödé 💬");
}

async fn user_ids_compare_exactly(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["Alice", "alice", "ALICE", "ali ce"]).await;
    assert_eq!(store.members(channel).await.unwrap().len(), 4);
    send(&store, channel, "Alice", "hi").await;
    assert_eq!(
        store.unread_count(channel, &user("alice")).await.unwrap(),
        1
    );
    assert_eq!(
        store.unread_count(channel, &user("Alice")).await.unwrap(),
        0
    );
    assert!(
        store
            .member(channel, &user("aLiCe"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn batched_sends_across_channels_stay_gap_free(store: Arc<dyn Store>) {
    let busy_before = store.message_writer_busy();
    let channels: Vec<ChannelId> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(channel_with(&store, &["s"]).await);
        }
        ids
    };
    let tasks: Vec<_> = (0..64)
        .map(|sender| {
            let store = store.clone();
            let channels = channels.clone();
            tokio::spawn(async move {
                let mut stored = Vec::new();
                for i in 0..25 {
                    let channel = channels[(sender + i) % channels.len()];
                    // Every third message is retried at once with its id.
                    let client_id = (i % 3 == 0)
                        .then(|| ClientMessageId::parse(format!("{sender}-{i}")).unwrap());
                    let new = NewMessage {
                        channel_id: channel,
                        sender: Sender::User(user("s")),
                        content: body("x"),
                        client_message_id: client_id.clone(),
                    };
                    let (a, b) = tokio::join!(store.create_message(&new), async {
                        match &client_id {
                            Some(_) => Some(store.create_message(&new).await),
                            None => None,
                        }
                    });
                    let a = a.unwrap();
                    if let Some(b) = b {
                        let b = b.unwrap();
                        assert_eq!(a.message.id, b.message.id, "a retry returns the original");
                        assert!(a.created != b.created, "exactly one of the two stored it");
                    }
                    stored.push(a.message);
                }
                stored
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap().len();
    }
    assert_eq!(total, 64 * 25);
    let mut all = 0;
    for channel in channels {
        let history = store
            .history(channel, HistoryPage::After(0), 10_000)
            .await
            .unwrap();
        let seqs: Vec<i64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "gap-free in {channel}"
        );
        let ids: HashSet<_> = history.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), history.len());
        all += history.len();
    }
    assert_eq!(all, 64 * 25, "no duplicate stored");
    // What the search indexer reads to yield to sends.
    let busy = store.message_writer_busy() - busy_before;
    assert!(
        busy > std::time::Duration::ZERO,
        "the writer counted its busy time"
    );
}

async fn membership_is_checked_in_the_storing_transaction(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    let send = |from: &str, channel: ChannelId| NewMessage {
        channel_id: channel,
        sender: Sender::User(user(from)),
        content: body("hi"),
        client_message_id: None,
    };
    // Concurrent sends from members and non-members land in shared batches.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let new = send(if i % 2 == 0 { "alice" } else { "mallory" }, channel);
            tokio::spawn(async move { (i, store.create_message(&new).await) })
        })
        .collect();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i % 2 == 0 {
            assert!(result.unwrap().created);
        } else {
            assert_eq!(
                result.unwrap_err(),
                Error::NotMember {
                    user: user("mallory"),
                    channel
                }
            );
        }
    }
    let seqs: Vec<i64> = store
        .history(channel, HistoryPage::After(0), 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<_>>(),
        "refused sends take no seq"
    );
    assert_eq!(store.channel(channel).await.unwrap().last_seq, 20);
    assert_eq!(
        store
            .create_message(&send("alice", ChannelId(i64::MAX)))
            .await
            .unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    // System messages need no membership.
    let system = NewMessage {
        sender: Sender::System,
        ..send("alice", channel)
    };
    assert!(store.create_message(&system).await.unwrap().created);
}

/// Only the sender edits or deletes a message, and only while a member;
/// the application deletes any message. A refusal takes no seq.
async fn edits_and_deletes_need_the_sender_as_a_member(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice", "bob"]).await;
    let m = send(&store, channel, "alice", "mine").await;
    let (alice, bob, mallory) = (user("alice"), user("bob"), user("mallory"));
    assert!(matches!(
        store.edit_message(m.id, &bob, &body("theirs")).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        store.delete_message(m.id, Actor::User(&bob)).await,
        Err(Error::Forbidden(_))
    ));
    let not_member = Error::NotMember {
        user: mallory.clone(),
        channel,
    };
    assert_eq!(
        store
            .edit_message(m.id, &mallory, &body("x"))
            .await
            .unwrap_err(),
        not_member
    );
    store.remove_member(channel, &alice).await.unwrap(); // seq 2
    let removed = Error::NotMember {
        user: alice.clone(),
        channel,
    };
    assert_eq!(
        store
            .edit_message(m.id, &alice, &body("late"))
            .await
            .unwrap_err(),
        removed
    );
    assert_eq!(
        store
            .delete_message(m.id, Actor::User(&alice))
            .await
            .unwrap_err(),
        removed
    );
    assert_eq!(
        store.channel(channel).await.unwrap().last_seq,
        2,
        "refusals take no seq"
    );
    let (tombstone, event) = store
        .delete_message(m.id, Actor::Application)
        .await
        .unwrap();
    assert!(tombstone.is_deleted());
    assert_eq!(event.unwrap().seq, 3);
}

/// Sends raced against the sender's removal: whatever the interleaving,
/// no message of theirs takes a seq after their `member_left`, and the
/// seqs stay gap-free.
async fn no_message_from_a_removed_member_after_member_left(store: Arc<dyn Store>) {
    for round in 0..20 {
        let channel = channel_with(&store, &["alice", "bob"]).await;
        let senders: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let from = if i % 2 == 0 { "alice" } else { "bob" };
                    store
                        .create_message(&NewMessage {
                            channel_id: channel,
                            sender: Sender::User(user(from)),
                            content: body("racing"),
                            client_message_id: None,
                        })
                        .await
                })
            })
            .collect();
        let removal = store.remove_member(channel, &user("alice")).await.unwrap();
        for sender in senders {
            match sender.await.unwrap() {
                Ok(_) => {}
                Err(Error::NotMember { user: u, .. }) => assert_eq!(u, user("alice")),
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
        let events = store.events_after(channel, 0, 100).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=events.len() as i64).collect::<Vec<_>>(),
            "round {round}: gap-free"
        );
        for event in &events {
            if let EventPayload::MessageCreated { message } = &event.payload
                && message.sender.user_id() == Some(&user("alice"))
            {
                assert!(
                    message.seq < removal.seq,
                    "round {round}: alice's message {} after her member_left {}",
                    message.seq,
                    removal.seq
                );
            }
        }
    }
}

async fn writes_to_missing_channels_are_not_found(store: Arc<dyn Store>) {
    let missing = ChannelId(i64::MAX);
    let err = store
        .create_message(&NewMessage {
            channel_id: missing,
            sender: Sender::User(user("alice")),
            content: body("lost?"),
            client_message_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err, Error::NotFound(Entity::Channel));
    assert_eq!(
        store
            .add_member(missing, &user("a"), &Role::member())
            .await
            .unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    assert_eq!(
        store.mark_read(missing, &user("a"), 1).await.unwrap_err(),
        Error::NotFound(Entity::Channel)
    );
    assert!(matches!(
        store
            .update_channel(missing, &ChannelPatch::default())
            .await,
        Err(Error::NotFound(Entity::Channel))
    ));
}

/// The message writer keeps its connections between batches, unchecked by
/// the pool. After the database drops them (a restart, a failover, an
/// idle timeout), the next send still goes through, on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_survive_the_database_dropping_the_writers_connections() {
    let Some(db) = TestDatabase::create(TestBackend::MySql).await else {
        return;
    };
    let store = clacks_store::connect(&db.url, &PoolSettings::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let channel = channel_with(&store, &["alice"]).await;
    assert_eq!(send(&store, channel, "alice", "before").await.seq, 1);

    // Every connection of the store to its (test-only) database is killed.
    use sqlx::Connection;
    let mut admin = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ids.is_empty(), "the store holds connections");
    for id in ids {
        let _ = sqlx::raw_sql(&format!("KILL {id}"))
            .execute(&mut admin)
            .await;
    }
    let _ = admin.close().await;

    assert_eq!(send(&store, channel, "alice", "after").await.seq, 2);
    store.close().await;
}

/// Requests dropped at random points (the client went away) leave their
/// connection whole: the pool's one connection keeps answering (it hung
/// for good on MariaDB), and plain reads on it see what was committed
/// since, not the snapshot of a transaction the dropped request began and
/// nothing ended (MariaDB and PostgreSQL).
async fn requests_dropped_midway_leave_their_connections_whole(backend: TestBackend) {
    let settings = PoolSettings {
        max_connections: 1,
        ..PoolSettings::default()
    };
    run_with(backend, settings, |store| async move {
        let channel = channel_with(&store, &["alice"]).await;
        for round in 1..=150i64 {
            let delay = std::time::Duration::from_micros(rand::random_range(0..400));
            // Begins a read-only transaction, dropped at a random point.
            let _ = tokio::time::timeout(delay, store.user_channels(&user("alice"))).await;
            send(&store, channel, "alice", "hi").await;
            eprintln!("round {round} delay {delay:?}");
            let seen = store.channel(channel).await.unwrap().last_seq;
            assert_eq!(
                seen, round,
                "round {round}: a plain read saw a stale snapshot"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_dropped_midway_leave_their_connections_whole_sqlite() {
    requests_dropped_midway_leave_their_connections_whole(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_dropped_midway_leave_their_connections_whole_mysql() {
    requests_dropped_midway_leave_their_connections_whole(TestBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_dropped_midway_leave_their_connections_whole_postgres() {
    requests_dropped_midway_leave_their_connections_whole(TestBackend::Postgres).await;
}

/// The webhook outbox: rows only for committed events (a refused send
/// writes none), none while no webhook is enabled; routing moves them into
/// deliveries once; a claimed delivery is leased to one owner.
async fn webhook_outbox_rows_commit_with_their_events(store: Arc<dyn Store>) {
    use clacks_core::{AttemptOutcome, WebhookEventType, WebhookSecret, WebhookUrl, now_ms};
    use clacks_store::{AttemptRecord, NewWebhook};

    let channel = channel_with(&store, &["alice"]).await;
    let other = channel_with(&store, &["alice"]).await;
    send(&store, channel, "alice", "before any webhook").await;
    assert_eq!(store.route_webhook_outbox(100, 0).await.unwrap(), 0);

    store
        .create_webhook(&NewWebhook {
            url: WebhookUrl::parse("http://127.0.0.1:9/hook").unwrap(),
            secret: WebhookSecret::parse("0123456789abcdef").unwrap(),
            event_types: vec![WebhookEventType::MessageCreated],
            channel_ids: Some(vec![channel]),
            enabled: true,
        })
        .await
        .unwrap();
    // Ten stored, five refused (not a member), in concurrent batches; and
    // one in a channel the webhook does not want.
    let sends = (0..15).map(|n| {
        let store = store.clone();
        async move {
            let from = if n % 3 == 0 { "mallory" } else { "alice" };
            store
                .create_message(&NewMessage {
                    channel_id: channel,
                    sender: Sender::User(user(from)),
                    content: body(&format!("m{n}")),
                    client_message_id: None,
                })
                .await
        }
    });
    let results = futures::future::join_all(sends).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 10);
    send(&store, other, "alice", "elsewhere").await;
    assert_eq!(store.route_webhook_outbox(100, 0).await.unwrap(), 11);
    assert_eq!(store.route_webhook_outbox(100, 0).await.unwrap(), 0);

    let now = now_ms();
    let claimed = store
        .claim_webhook_deliveries("node-1", now, now + 60_000, 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(claimed.iter().all(|d| d.attempts == 0));
    let ids: HashSet<&str> = claimed.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    // Leased: another node gets none of them.
    assert!(
        store
            .claim_webhook_deliveries("node-2", now, now + 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let record = AttemptRecord {
        attempt: 1,
        attempted_at: now,
        status_code: Some(503),
        error: Some("HTTP 503".into()),
        duration_ms: 3,
        outcome: AttemptOutcome::Retrying,
        next_attempt_at: now - 1,
    };
    // Only the lease holder records an attempt.
    assert!(
        !store
            .finish_webhook_attempt(claimed[0].id, "node-2", &record)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_webhook_attempt(claimed[0].id, "node-1", &record)
            .await
            .unwrap()
    );
    let again = store
        .claim_webhook_deliveries("node-2", now, now + 60_000, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, claimed[0].delivery_id);
    assert_eq!(again[0].attempts, 1);
    let attempts = store
        .webhook_attempts(claimed[0].webhook_id, 10)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(503));
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retrying);
    // A stopping node gives its leases back.
    store.release_webhook_leases("node-1").await.unwrap();
    assert_eq!(
        store
            .claim_webhook_deliveries("node-3", now, now + 60_000, 100)
            .await
            .unwrap()
            .len(),
        9
    );
}

/// The ids of the messages found for `query` everywhere, as the index is
/// now (no catch-up), best first.
async fn search_ids(store: &Arc<dyn Store>, query: &str) -> Vec<clacks_core::MessageId> {
    store
        .search_messages(
            &clacks_core::SearchQuery::parse(query).unwrap(),
            &SearchScope::All,
            SearchPageRequest {
                offset: 0,
                limit: 100,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.message.id)
        .collect()
}

/// Sending does not index (that is the indexer's work, off the send
/// path); indexing does, edits re-index from the current content, deletes
/// remove, and a channel caught up has nothing left to index.
async fn the_search_index_follows_sends_edits_and_deletes_when_indexed(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    let other = channel_with(&store, &["alice"]).await;
    let edited = send(&store, channel, "alice", "original walrus sighting").await;
    let deleted = send(&store, channel, "alice", "doomed platypus sighting").await;
    let elsewhere = send(&store, other, "alice", "distant walrus").await;
    assert!(
        search_ids(&store, "walrus").await.is_empty(),
        "not indexed by the send"
    );

    let one = store
        .index_search(&SearchScope::Channel(channel), 1000)
        .await
        .unwrap();
    assert_eq!(
        one,
        SearchIndexed {
            messages: 2,
            done: true
        }
    );
    assert_eq!(search_ids(&store, "walrus").await, [edited.id]);
    let mine = store
        .index_search(&SearchScope::MemberOf(user("alice")), 1000)
        .await
        .unwrap();
    assert_eq!(
        mine,
        SearchIndexed {
            messages: 1,
            done: true
        }
    );
    let mut both = search_ids(&store, "walrus").await;
    both.sort();
    assert_eq!(both, [edited.id, elsewhere.id]);
    let nothing_left = store.index_search(&SearchScope::All, 1000).await.unwrap();
    assert_eq!(
        nothing_left,
        SearchIndexed {
            messages: 0,
            done: true
        }
    );

    store
        .edit_message(
            edited.id,
            &user("alice"),
            &body("replacement narwhal sighting"),
        )
        .await
        .unwrap();
    store
        .delete_message(deleted.id, Actor::Application)
        .await
        .unwrap();
    // Until indexed, the index still holds the old words (a tombstone is
    // never found, indexed or not).
    let mut stale = search_ids(&store, "walrus").await;
    stale.sort();
    assert_eq!(stale, [edited.id, elsewhere.id]);
    assert!(search_ids(&store, "platypus").await.is_empty());
    let changes = store.index_search(&SearchScope::All, 1000).await.unwrap();
    assert_eq!(
        changes,
        SearchIndexed {
            messages: 2,
            done: true
        }
    );
    assert_eq!(search_ids(&store, "walrus").await, [elsewhere.id]);
    assert_eq!(search_ids(&store, "narwhal").await, [edited.id]);
    assert!(search_ids(&store, "platypus").await.is_empty());
    assert_eq!(search_ids(&store, "sighting").await, [edited.id]);

    // A message sent, edited and deleted between two rounds.
    let brief = send(&store, channel, "alice", "fleeting quokka").await;
    store
        .edit_message(brief.id, &user("alice"), &body("fleeting numbat"))
        .await
        .unwrap();
    let kept = send(&store, channel, "alice", "lasting numbat").await;
    store
        .delete_message(brief.id, Actor::Application)
        .await
        .unwrap();
    store.index_search(&SearchScope::All, 1000).await.unwrap();
    assert_eq!(search_ids(&store, "numbat").await, [kept.id]);
    assert!(search_ids(&store, "quokka").await.is_empty());
}

/// A call indexes at most its budget; the next one continues where it
/// stopped, until every message is found once.
async fn indexing_respects_its_budget(store: Arc<dyn Store>) {
    let first = channel_with(&store, &["alice"]).await;
    let second = channel_with(&store, &["alice"]).await;
    for n in 0..7 {
        send(&store, first, "alice", &format!("budgeted kiwi {n}")).await;
        send(&store, second, "alice", &format!("budgeted kiwi {n}")).await;
    }
    let mut total = 0;
    let mut calls = 0;
    loop {
        let round = store.index_search(&SearchScope::All, 3).await.unwrap();
        assert!(round.messages <= 3, "{round:?}");
        total += round.messages;
        calls += 1;
        assert_eq!(search_ids(&store, "kiwi").await.len() as u64, total);
        if round.done {
            break;
        }
        assert!(calls < 20, "indexing does not finish");
    }
    assert_eq!(total, 14);
    assert!(calls >= 5, "14 messages in calls of 3: {calls} calls");
}

/// Indexers running at once (as on several nodes) take turns per channel:
/// each message is indexed once, from its current content.
async fn concurrent_indexers_index_each_message_once(store: Arc<dyn Store>) {
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(channel_with(&store, &["alice"]).await);
    }
    let mut expected = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        for n in 0..40 {
            let message = send(&store, *channel, "alice", &format!("racing emu {c} {n}")).await;
            match n % 10 {
                3 => {
                    store
                        .edit_message(message.id, &user("alice"), &body("racing cassowary"))
                        .await
                        .unwrap();
                }
                7 => {
                    store
                        .delete_message(message.id, Actor::Application)
                        .await
                        .unwrap();
                }
                _ => expected.push(message.id),
            }
        }
    }
    let indexers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let round = store.index_search(&SearchScope::All, 7).await.unwrap();
                if round.done {
                    break;
                }
            }
        })
    });
    for indexer in futures::future::join_all(indexers).await {
        indexer.unwrap();
    }
    let mut found = search_ids(&store, "emu").await;
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(search_ids(&store, "cassowary").await.len(), 12);
    assert_eq!(
        store.index_search(&SearchScope::All, 1000).await.unwrap(),
        SearchIndexed {
            messages: 0,
            done: true
        }
    );
}

/// A database with messages stored before migration 0006 (indexed in the
/// send transaction then) keeps them searchable: the migration moves the
/// index and marks the channels indexed, so there is nothing to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_from_before_the_deferred_index_stay_searchable() {
    for backend in [
        TestBackend::Sqlite,
        TestBackend::MySql,
        TestBackend::Postgres,
    ] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        migrate_up_to(&db, 5).await;
        let store = clacks_store::connect(&db.url, &PoolSettings::default())
            .await
            .unwrap();
        let channel = channel_with(&store, &["alice"]).await;
        let kept = send(&store, channel, "alice", "ancient tortoise").await;
        let edited = send(&store, channel, "alice", "ancient lizard").await;
        let deleted = send(&store, channel, "alice", "ancient beetle").await;
        store
            .edit_message(edited.id, &user("alice"), &body("ancient gecko"))
            .await
            .unwrap();
        store
            .delete_message(deleted.id, Actor::Application)
            .await
            .unwrap();

        store.migrate().await.unwrap();
        assert_eq!(
            search_ids(&store, "tortoise").await,
            [kept.id],
            "{backend:?}"
        );
        assert_eq!(
            search_ids(&store, "gecko").await,
            [edited.id],
            "{backend:?}"
        );
        assert!(search_ids(&store, "lizard").await.is_empty(), "{backend:?}");
        assert!(search_ids(&store, "beetle").await.is_empty(), "{backend:?}");
        assert_eq!(
            store.index_search(&SearchScope::All, 1000).await.unwrap(),
            SearchIndexed {
                messages: 0,
                done: true
            },
            "{backend:?}"
        );
        // And what comes after is indexed as usual.
        let later = send(&store, channel, "alice", "modern tortoise").await;
        store.index_search(&SearchScope::All, 1000).await.unwrap();
        let mut found = search_ids(&store, "tortoise").await;
        found.sort();
        assert_eq!(found, [kept.id, later.id], "{backend:?}");
        store.delete_channel(channel).await.unwrap();
        assert_eq!(store.rows_referencing(channel).await.unwrap(), 0);
        store.close().await;
    }
}

/// Applies the backend's migrations up to `version` only.
async fn migrate_up_to(db: &TestDatabase, version: i64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(match db.backend {
            TestBackend::Sqlite => "sqlite",
            TestBackend::MySql => "mysql",
            TestBackend::Postgres => "postgres",
        });
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    match db.backend {
        TestBackend::Sqlite => {
            let options =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
                    .unwrap()
                    .create_if_missing(true)
                    .foreign_keys(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        TestBackend::MySql => {
            let pool = sqlx::MySqlPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        TestBackend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// A channel more behind than one indexing transaction covers is indexed
/// in several, all in one call when the budget allows.
async fn a_channel_far_behind_is_indexed_in_one_call(store: Arc<dyn Store>) {
    let channel = channel_with(&store, &["alice"]).await;
    for wave in 0..11 {
        let texts: Vec<String> = (0..100)
            .map(|n| format!("plentiful yak {wave} {n}"))
            .collect();
        futures::future::join_all(
            texts
                .iter()
                .map(|text| send(&store, channel, "alice", text)),
        )
        .await;
    }
    let indexed = store.index_search(&SearchScope::All, 5000).await.unwrap();
    assert_eq!(
        indexed,
        SearchIndexed {
            messages: 1100,
            done: true
        }
    );
    let page = store
        .search_messages(
            &clacks_core::SearchQuery::parse("yak").unwrap(),
            &SearchScope::Channel(channel),
            SearchPageRequest {
                offset: 1000,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 100);
}
