//! Full-text search at the service boundary (issue 13 item 5), on every
//! backend: matching, ranking, paging, the membership rule, edits and
//! tombstones, and hostile queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::HashSet;

use clacks_core::{ChannelId, Error, MessageId};
use clacks_service::{Caller, ChatService, SearchRequest, SearchResults};
use clacks_testkit::{TestBackend, TestDatabase};
use common::{caller, service, service_exactly};

backend_tests!(
    finds_by_a_word_and_ranks_the_better_match_first,
    paging_returns_each_hit_once,
    non_members_learn_nothing,
    edits_reindex_and_tombstones_are_not_found,
    hostile_queries_get_results_or_bad_input,
    bad_limits_cursors_and_queries_are_refused,
    the_application_searches_by_channel_user_or_everywhere,
    searches_are_bounded_per_user_and_per_node,
    the_background_indexer_alone_indexes,
    rounds_index_this_nodes_channels_and_sweeps_the_rest,
);

/// Messages that match none of the words searched, so that every engine
/// sees the searched words as rare (InnoDB ranks a word found in every
/// row at 0).
const NOISE: &[&str] = &[
    "good morning everyone",
    "lunch is ready downstairs",
    "deploy finished without errors",
    "see you tomorrow",
    "weather looks grim today",
    "coffee machine broken again",
];

fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        ..SearchRequest::default()
    }
}

async fn search(service: &ChatService, caller: &Caller, query: &str) -> SearchResults {
    service.search_for(caller, &request(query)).await.unwrap()
}

fn ids(results: &SearchResults) -> Vec<MessageId> {
    results.hits.iter().map(|h| h.message.id).collect()
}

async fn channel_with(service: &ChatService, name: &str, users: &[&str]) -> ChannelId {
    service
        .admin_create_channel(
            name.into(),
            users.iter().map(|u| (*u).into()).collect(),
            None,
        )
        .await
        .unwrap()
        .id
}

async fn post(service: &ChatService, caller: &Caller, channel: ChannelId, text: &str) -> MessageId {
    service
        .send(caller, channel, text.into(), None)
        .await
        .unwrap()
        .id
}

async fn noise(service: &ChatService, caller: &Caller, channel: ChannelId) {
    for text in NOISE {
        post(service, caller, channel, text).await;
    }
}

async fn finds_by_a_word_and_ranks_the_better_match_first(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "fruit", &["alice"]).await;
    noise(&service, &alice, channel).await;
    let weak = post(
        &service,
        &alice,
        channel,
        "yesterday at the market I bought bread, cheese, one apple, some bananas and cherries",
    )
    .await;
    let strong = post(&service, &alice, channel, "apple apple apple").await;

    let found = search(&service, &alice, "Apple").await;
    assert_eq!(ids(&found), [strong, weak], "the better match first");
    assert!(found.hits[0].score > found.hits[1].score);
    assert_eq!(found.hits[0].message.channel_id, channel);
    assert_eq!(found.hits[0].message.content, "apple apple apple");
    assert!(found.next.is_none());

    // Every word must match.
    let both = search(&service, &alice, "bananas cherries").await;
    assert_eq!(ids(&both), [weak]);
    assert!(
        search(&service, &alice, "bananas walrus")
            .await
            .hits
            .is_empty()
    );
    // In one channel, by argument.
    let scoped = service
        .search_for(
            &alice,
            &SearchRequest {
                channel: Some(channel),
                ..request("cheese")
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&scoped), [weak]);
}

async fn paging_returns_each_hit_once(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "hay", &["alice"]).await;
    noise(&service, &alice, channel).await;
    let mut needles = HashSet::new();
    for i in 0..23 {
        // Scores vary with the repetitions and the length; some tie.
        let text = format!("{} haystack number {i}", "needle ".repeat(1 + i % 3));
        needles.insert(post(&service, &alice, channel, &text).await);
    }
    let mut seen = Vec::new();
    let mut scores = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = service
            .search_for(
                &alice,
                &SearchRequest {
                    limit: Some(5),
                    after: after.clone(),
                    ..request("needle")
                },
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.hits.len() <= 5);
        seen.extend(ids(&page));
        scores.extend(page.hits.iter().map(|h| h.score));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.hits.last().map(|h| &h.cursor));
                after = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "paging did not end");
    }
    assert_eq!(seen.len(), 23, "{seen:?}");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), needles);
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first across pages: {scores:?}"
    );
    // Equal scores: newest first.
    for (pair, ids) in scores.windows(2).zip(seen.windows(2)) {
        if pair[0] == pair[1] {
            assert!(ids[0] > ids[1], "ties newest first");
        }
    }
}

async fn non_members_learn_nothing(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let bob = caller(&service, "bob");
    let ours = channel_with(&service, "ours", &["alice", "bob"]).await;
    let theirs = channel_with(&service, "theirs", &["bob"]).await;
    noise(&service, &bob, ours).await;
    let visible = post(&service, &bob, ours, "secret plan alpha").await;
    let hidden = post(&service, &bob, theirs, "secret plan bravo").await;

    assert_eq!(
        ids(&search(&service, &alice, "secret plan").await),
        [visible]
    );
    let both: HashSet<_> = ids(&search(&service, &bob, "secret plan").await)
        .into_iter()
        .collect();
    assert_eq!(both, HashSet::from([visible, hidden]));
    assert!(search(&service, &alice, "bravo").await.hits.is_empty());

    // A channel argument the caller is not in: the refusal of every other
    // read, the same for a channel that does not exist.
    for channel in [theirs, ChannelId(theirs.0 + 1000)] {
        let refused = service
            .search_for(
                &alice,
                &SearchRequest {
                    channel: Some(channel),
                    ..request("secret")
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(refused, Error::NotMember { .. }), "{refused:?}");
        let history = service
            .history_for(&alice, channel, Default::default())
            .await
            .unwrap_err();
        assert_eq!(
            std::mem::discriminant(&refused),
            std::mem::discriminant(&history)
        );
    }

    // Removed from a channel, its messages are out of reach at once.
    service
        .admin_remove_member(ours, "alice".into())
        .await
        .unwrap();
    assert!(search(&service, &alice, "secret").await.hits.is_empty());
}

async fn edits_reindex_and_tombstones_are_not_found(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "zoo", &["alice"]).await;
    noise(&service, &alice, channel).await;
    let edited = post(&service, &alice, channel, "original walrus sighting").await;
    let deleted = post(&service, &alice, channel, "doomed platypus sighting").await;
    assert_eq!(search(&service, &alice, "sighting").await.hits.len(), 2);

    service
        .edit(&alice, edited, "replacement narwhal sighting".into())
        .await
        .unwrap();
    assert!(search(&service, &alice, "walrus").await.hits.is_empty());
    let found = search(&service, &alice, "narwhal").await;
    assert_eq!(ids(&found), [edited]);
    assert_eq!(
        found.hits[0].message.content,
        "replacement narwhal sighting"
    );

    service.delete(&alice, deleted).await.unwrap();
    assert!(search(&service, &alice, "platypus").await.hits.is_empty());
    assert_eq!(ids(&search(&service, &alice, "sighting").await), [edited]);

    // The application deletes too; deleting the channel empties the index
    // of its messages.
    service.admin_delete_message(channel, edited).await.unwrap();
    assert!(search(&service, &alice, "narwhal").await.hits.is_empty());
    let other = channel_with(&service, "other", &["alice"]).await;
    post(&service, &alice, other, "ephemeral wombat").await;
    service.admin_delete_channel(other).await.unwrap();
    let everywhere = service
        .admin_search(&request("wombat"), None)
        .await
        .unwrap();
    assert!(everywhere.hits.is_empty());
}

async fn hostile_queries_get_results_or_bad_input(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "hostile", &["alice"]).await;
    noise(&service, &alice, channel).await;
    let target = post(
        &service,
        &alice,
        channel,
        "quoted \"syntax\" NEAR(things) with -minus +plus stars* and (parentheses) café 東京",
    )
    .await;
    let long = "x".repeat(10_000);
    let many_words = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let hostile = [
        "\"",
        "\"\"",
        "\"syntax",
        "syntax\"",
        "*",
        "syntax*",
        "*syntax",
        "-",
        "-syntax",
        "+syntax -things",
        "NEAR(",
        "NEAR(syntax things)",
        "NEAR(syntax things, 2)",
        "syntax NEAR things",
        "(",
        ")",
        "((syntax)",
        "syntax AND things",
        "syntax OR",
        "NOT syntax",
        "AND",
        "^syntax",
        "syntax:things",
        "content:syntax",
        "{syntax things}",
        "syntax & things | !parentheses <-> stars:*",
        "'; DROP TABLE messages; --",
        "\\",
        "%_%",
        "@syntax",
        "~syntax >things <minus",
        "\u{0}syntax",
        "syntax\u{200b}things",
        "東京",
        "café",
        "CAFÉ",
        "🦀🦀🦀",
        "ﷺ ℌ ǅ ß ﬁ",
        "½",
        long.as_str(),
        many_words.as_str(),
        "",
        "   ",
    ];
    for query in hostile {
        for channel in [None, Some(channel)] {
            let asked = SearchRequest {
                channel,
                ..request(query)
            };
            match service.search_for(&alice, &asked).await {
                Ok(results) => {
                    for hit in &results.hits {
                        assert_eq!(hit.message.id, target, "{query:?}");
                    }
                }
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "query", "{query:?}"),
                Err(other) => panic!("{query:?} answered {other:?}"),
            }
            match service.admin_search(&asked, None).await {
                Ok(_) | Err(Error::InvalidInput { .. }) => {}
                Err(other) => panic!("{query:?} answered the application {other:?}"),
            }
        }
    }
    // Operators are words like any other: they still find what they name.
    for query in [
        "\"syntax\"",
        "NEAR(things)",
        "+plus",
        "-minus",
        "stars*",
        "(parentheses)",
    ] {
        assert_eq!(
            ids(&search(&service, &alice, query).await),
            [target],
            "{query:?}"
        );
    }
}

async fn bad_limits_cursors_and_queries_are_refused(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "limits", &["alice"]).await;
    post(&service, &alice, channel, "limited edition").await;
    let refused = |field: &'static str| {
        move |error: Error| match error {
            Error::InvalidInput { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    };
    for limit in [0, -1, 101, i64::MAX] {
        let asked = SearchRequest {
            limit: Some(limit),
            ..request("limited")
        };
        refused("limit")(service.search_for(&alice, &asked).await.unwrap_err());
        refused("limit")(service.admin_search(&asked, None).await.unwrap_err());
    }
    for after in ["", "garbage", "s1.", "s1.zzzz", "42"] {
        let asked = SearchRequest {
            after: Some(after.into()),
            ..request("limited")
        };
        refused("after")(service.search_for(&alice, &asked).await.unwrap_err());
    }
    refused("query")(service.search_for(&alice, &request("")).await.unwrap_err());
    refused("query")(
        service
            .search_for(&alice, &request(&"y".repeat(257)))
            .await
            .unwrap_err(),
    );
    // The largest page and the defaults are served.
    let asked = SearchRequest {
        limit: Some(100),
        ..request("limited")
    };
    assert_eq!(
        service.search_for(&alice, &asked).await.unwrap().hits.len(),
        1
    );
    // Past the deepest page: an empty last page.
    let deep = clacks_core::SearchCursor::after_hit(clacks_core::SEARCH_MAX_DEPTH).encode();
    let past = service
        .search_for(
            &alice,
            &SearchRequest {
                after: Some(deep),
                ..request("limited")
            },
        )
        .await
        .unwrap();
    assert!(past.hits.is_empty() && past.next.is_none());
}

async fn the_application_searches_by_channel_user_or_everywhere(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let bob = caller(&service, "bob");
    let a = channel_with(&service, "a", &["alice"]).await;
    let b = channel_with(&service, "b", &["bob"]).await;
    noise(&service, &alice, a).await;
    let in_a = post(&service, &alice, a, "quarterly report draft").await;
    let in_b = post(&service, &bob, b, "quarterly report final").await;

    let all: HashSet<_> = ids(&service
        .admin_search(&request("quarterly"), None)
        .await
        .unwrap())
    .into_iter()
    .collect();
    assert_eq!(all, HashSet::from([in_a, in_b]));
    let of_bob = service
        .admin_search(&request("quarterly"), Some("bob".into()))
        .await
        .unwrap();
    assert_eq!(ids(&of_bob), [in_b]);
    let in_channel = SearchRequest {
        channel: Some(a),
        ..request("quarterly")
    };
    assert_eq!(
        ids(&service.admin_search(&in_channel, None).await.unwrap()),
        [in_a]
    );
    let not_member = service
        .admin_search(&in_channel, Some("bob".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(not_member, Error::NotMember { .. }),
        "{not_member:?}"
    );
    let missing = SearchRequest {
        channel: Some(ChannelId(b.0 + 1000)),
        ..request("quarterly")
    };
    assert!(matches!(
        service.admin_search(&missing, None).await.unwrap_err(),
        Error::NotFound(_)
    ));
}

/// A search for a common word ranks every message holding it, which takes
/// a large channel's database seconds: each client search costs the
/// caller's query budget, and a node runs a bounded number at once,
/// refusing the rest at once (`RateLimited`) and taking new ones again as
/// soon as a slot frees.
async fn searches_are_bounded_per_user_and_per_node(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let generous = clacks_service::Rate::new(1_000_000, 1_000_000).unwrap();
    let mut limits = clacks_service::Limits {
        max_concurrent_searches: 1,
        ..Default::default()
    };
    limits.rates.send = generous;
    limits.rates.query_cost = generous;
    let service = service_exactly(&db, 1_000, limits.clone()).await;
    let channel = channel_with(&service, "busy", &["alice"]).await;
    let alice = caller(&service, "alice");
    for n in 0..300 {
        service
            .send(&alice, channel, format!("common word number {n}"), None)
            .await
            .unwrap();
    }
    let searches = (0..24).map(|_| {
        let service = service.clone();
        let alice = alice.clone();
        tokio::spawn(async move { service.search_for(&alice, &request("common")).await })
    });
    let mut found = 0;
    let mut refused = 0;
    for result in futures::future::join_all(searches).await {
        match result.unwrap() {
            Ok(results) => {
                assert_eq!(results.hits.len(), 20);
                found += 1;
            }
            Err(Error::RateLimited { retry_after_ms }) => {
                assert!(retry_after_ms > 0);
                refused += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(
        found >= 1 && refused >= 1,
        "{found} found, {refused} refused"
    );
    // Every slot is back once the searches ended.
    assert_eq!(search(&service, &alice, "common").await.hits.len(), 20);

    // One caller's budget: 1,500 units pay for one search, not two.
    limits.rates.query_cost = clacks_service::Rate::new(1, 1_500).unwrap();
    limits.max_concurrent_searches = 8;
    let service = service_exactly(&db, 1_000, limits).await;
    let alice = caller(&service, "alice");
    assert_eq!(search(&service, &alice, "common").await.hits.len(), 20);
    let refused = service.search_for(&alice, &request("common")).await;
    assert!(
        matches!(refused, Err(Error::RateLimited { .. })),
        "{refused:?}"
    );
    // The application's searches are not metered per user.
    for _ in 0..3 {
        service
            .admin_search(&request("common"), Some("alice".into()))
            .await
            .unwrap();
    }
}

/// The background indexer alone brings the index up to date (no search
/// to catch up): what it indexed is found by the store's search as it is,
/// and nothing is left behind once it has run; it stops when told.
async fn the_background_indexer_alone_indexes(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let alice = caller(&service, "alice");
    let channel = channel_with(&service, "quiet", &["alice"]).await;
    let store: std::sync::Arc<dyn clacks_store::Store> =
        clacks_store::connect(&db.url, &clacks_store::PoolSettings::default())
            .await
            .unwrap();
    let sent = post(&service, &alice, channel, "background hedgehog").await;
    let edited = post(&service, &alice, channel, "background mole").await;
    service
        .edit(&alice, edited, "background badger".into())
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let indexer = tokio::spawn(
        clacks_service::SearchIndexer::new(
            store.clone(),
            std::time::Duration::from_millis(20),
            service.search_pending(),
        )
        .run(async move {
            let _ = stopped.await;
        }),
    );
    let query = clacks_core::SearchQuery::parse("background").unwrap();
    let page = clacks_store::SearchPageRequest {
        offset: 0,
        limit: 10,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = store
            .search_messages(&query, &clacks_store::SearchScope::All, page)
            .await
            .unwrap();
        if found.len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not indexed in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), indexer)
        .await
        .expect("the indexer stops when told")
        .unwrap();
    // Up to the channel's last seq: nothing left for a search to index.
    assert_eq!(
        store
            .index_search(&clacks_store::SearchScope::All, 1000)
            .await
            .unwrap(),
        clacks_store::SearchIndexed {
            messages: 0,
            done: true
        }
    );
    let badger = clacks_core::SearchQuery::parse("badger").unwrap();
    let found = store
        .search_messages(&badger, &clacks_store::SearchScope::All, page)
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|h| h.message.id).collect::<Vec<_>>(),
        [edited]
    );
    assert_ne!(sent, edited);
    store.close().await;
}

/// Between sweeps, a round indexes only the channels this node changed
/// messages in; what another node sent waits for the next sweep (or for a
/// search, which catches up its own scope).
async fn rounds_index_this_nodes_channels_and_sweeps_the_rest(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let here = service(&db).await;
    let elsewhere = service(&db).await;
    let alice_here = caller(&here, "alice");
    let alice_elsewhere = caller(&elsewhere, "alice");
    let ours = channel_with(&here, "ours", &["alice"]).await;
    let theirs = channel_with(&here, "theirs", &["alice"]).await;
    let store: std::sync::Arc<dyn clacks_store::Store> =
        clacks_store::connect(&db.url, &clacks_store::PoolSettings::default())
            .await
            .unwrap();
    let before = post(&here, &alice_here, ours, "otter before start").await;
    let mut indexer = clacks_service::SearchIndexer::new(
        store.clone(),
        std::time::Duration::from_secs(3600),
        here.search_pending(),
    )
    .with_sweep_interval(std::time::Duration::from_secs(3600));
    assert_eq!(indexer.round().await.unwrap(), 1, "the first round sweeps");

    let ours_sent = post(&here, &alice_here, ours, "otter from here").await;
    let theirs_sent = post(&elsewhere, &alice_elsewhere, theirs, "otter from elsewhere").await;
    assert_eq!(
        indexer.round().await.unwrap(),
        1,
        "only this node's channel"
    );
    let otter = clacks_core::SearchQuery::parse("otter").unwrap();
    let page = clacks_store::SearchPageRequest {
        offset: 0,
        limit: 10,
    };
    let found = |store: std::sync::Arc<dyn clacks_store::Store>| {
        let otter = otter.clone();
        async move {
            let hits = store
                .search_messages(&otter, &clacks_store::SearchScope::All, page)
                .await
                .unwrap();
            hits.iter().map(|h| h.message.id).collect::<HashSet<_>>()
        }
    };
    assert_eq!(
        found(store.clone()).await,
        HashSet::from([before, ours_sent])
    );
    assert_eq!(indexer.round().await.unwrap(), 0, "nothing pending here");

    let mut indexer = indexer.with_sweep_interval(std::time::Duration::ZERO);
    assert_eq!(
        indexer.round().await.unwrap(),
        1,
        "the sweep finds the rest"
    );
    assert_eq!(
        found(store.clone()).await,
        HashSet::from([before, ours_sent, theirs_sent])
    );
    store.close().await;
}
