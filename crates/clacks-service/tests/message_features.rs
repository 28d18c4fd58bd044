//! Reactions, replies and mentions at the service boundary (issue 13), on
//! every backend: the rules both APIs share, the events they publish and
//! their replay on resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use clacks_core::{ChannelEvent, Error, EventPayload, MessageId, Seq};
use clacks_delivery::Delivery;
use clacks_service::{Caller, EventStream, HistoryRequest, SendOptions};
use clacks_testkit::{TestBackend, TestDatabase};
use common::{caller, service};
use futures::StreamExt;
use futures::future::join_all;

backend_tests!(
    reactions_raced_from_many_users_count_exactly,
    reactions_are_refused_to_non_members_tombstones_and_bad_keys,
    a_message_carries_a_bounded_number_of_reaction_keys,
    a_thread_is_followed_live_and_resumed,
    replies_keep_the_thread_rule,
    mentions_are_counted_unread_then_read,
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

/// One member cannot pile keys onto a message: past the cap a new key is
/// refused (and takes no seq), while the keys already there stay open to
/// everyone, and taking one back makes room.
async fn a_message_carries_a_bounded_number_of_reaction_keys(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel = service
        .admin_create_channel("keys".into(), vec!["alice".into(), "bob".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let bob = caller(&service, "bob");
    let message = service
        .send(&alice, channel, "react to me".into(), None)
        .await
        .unwrap();
    let cap = clacks_core::MAX_REACTION_KEYS_PER_MESSAGE;
    for n in 0..cap {
        service
            .add_reaction(&alice, message.id, format!("k{n}"))
            .await
            .unwrap();
    }
    let before = service.admin_channel(channel).await.unwrap().last_seq;
    for who in [&alice, &bob] {
        let refused = service
            .add_reaction(who, message.id, "one_more".into())
            .await;
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    }
    assert_eq!(
        service.admin_channel(channel).await.unwrap().last_seq,
        before,
        "a refused reaction takes no seq"
    );
    // An existing key is still anyone's to add.
    service
        .add_reaction(&bob, message.id, "k0".into())
        .await
        .unwrap();
    let reactions = service.reactions_for(&bob, &message).await.unwrap();
    assert_eq!(reactions.len() as i64, cap);
    assert_eq!(reactions[0].count, 2);
    // Taking the last user's reaction back frees its key's place.
    service
        .remove_reaction(&alice, message.id, "k1".into())
        .await
        .unwrap();
    service
        .add_reaction(&bob, message.id, "one_more".into())
        .await
        .unwrap();
    assert_eq!(
        service.reactions_for(&bob, &message).await.unwrap().len() as i64,
        cap
    );
}

/// A member's unread mentions in `channel`, asked for the channel alone
/// and read from their channel list (one grouped query), which must agree.
async fn unread_mentions(
    service: &clacks_service::ChatService,
    who: &Caller,
    channel: clacks_core::ChannelId,
) -> i64 {
    let alone = service
        .unread_mention_count_for(who, channel)
        .await
        .unwrap();
    let listed = service
        .my_channels(who)
        .await
        .unwrap()
        .into_iter()
        .find(|summary| summary.channel.id == channel)
        .expect("the channel is in the member's list")
        .unread_mention_count;
    assert_eq!(alone, listed, "the channel list counts mentions alike");
    alone
}

fn reply(parent: MessageId) -> SendOptions {
    SendOptions {
        parent_id: Some(parent),
        ..SendOptions::default()
    }
}

/// Replies from several members race with top-level messages and replies
/// in another thread: the root counts its replies, the thread pages by seq
/// both ways, and a subscriber following the thread (events filtered by
/// `thread()`) sees exactly its replies and their reactions, live and on
/// resume.
async fn a_thread_is_followed_live_and_resumed(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel = service
        .admin_create_channel(
            "threads".into(),
            vec!["alice".into(), "bob".into(), "carol".into()],
            None,
        )
        .await
        .unwrap()
        .id;
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| caller(&service, u));
    let root = service
        .send(&alice, channel, "root".into(), None)
        .await
        .unwrap();
    let other = service
        .send(&alice, channel, "another root".into(), None)
        .await
        .unwrap();
    let mut live = service
        .subscribe_events(&bob, Some(channel), &[])
        .await
        .unwrap();

    const EACH: usize = 6;
    let writers = [&bob, &carol, &alice].map(|who| {
        let service = service.clone();
        async move {
            let mut mine = Vec::new();
            for i in 0..EACH {
                let (content, options) = match i % 3 {
                    0 | 1 => (
                        format!("{} reply {i}", who.user_id.as_str()),
                        reply(root.id),
                    ),
                    _ => (
                        format!("{} elsewhere {i}", who.user_id.as_str()),
                        reply(other.id),
                    ),
                };
                let sent = service
                    .send_with(who, channel, content, options)
                    .await
                    .unwrap();
                service
                    .send(who, channel, format!("top {i}"), None)
                    .await
                    .unwrap();
                mine.push(sent);
            }
            mine
        }
    });
    let sent: Vec<_> = join_all(writers).await.into_iter().flatten().collect();
    let in_root: Vec<_> = sent
        .iter()
        .filter(|m| m.parent_id == Some(root.id))
        .collect();
    assert_eq!(in_root.len(), 3 * EACH * 2 / 3);
    // A retry of a reply returns it, and is not counted again.
    let retried = service
        .send_with(
            &bob,
            channel,
            "once".into(),
            SendOptions {
                client_message_id: Some("r-1".into()),
                parent_id: Some(root.id),
                ..SendOptions::default()
            },
        )
        .await
        .unwrap();
    let again = service
        .send_with(
            &bob,
            channel,
            "once".into(),
            SendOptions {
                client_message_id: Some("r-1".into()),
                parent_id: Some(root.id),
                ..SendOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again, retried);
    service
        .add_reaction(&carol, retried.id, "👀".into())
        .await
        .unwrap();
    let replies = in_root.len() as i64 + 1;

    let root_now = service.message_for(&carol, root.id).await.unwrap();
    assert_eq!(root_now.reply_count, replies);
    assert_eq!(root_now.last_reply_at, Some(retried.created_at));
    assert_eq!(
        service
            .message_for(&carol, other.id)
            .await
            .unwrap()
            .reply_count,
        (3 * EACH / 3) as i64
    );

    // Paged newest first, then oldest first from a cursor.
    let newest = service
        .thread_for(
            &carol,
            root.id,
            HistoryRequest {
                limit: Some(5),
                ..HistoryRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(newest.len(), 5);
    assert_eq!(newest[0].id, retried.id);
    assert!(newest.windows(2).all(|w| w[0].seq > w[1].seq));
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = service
            .thread_for(
                &carol,
                root.id,
                HistoryRequest {
                    after: Some(after),
                    limit: Some(4),
                    ..HistoryRequest::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(page);
    }
    assert_eq!(all.len() as i64, replies);
    assert!(all.iter().all(|m| m.parent_id == Some(root.id)));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));

    // Followed live: the thread's own events, in seq order.
    let last = service.admin_channel(channel).await.unwrap().last_seq;
    let thread_events = |events: Vec<ChannelEvent>| -> Vec<ChannelEvent> {
        events
            .into_iter()
            .filter(|e| e.payload.thread() == Some(root.id))
            .collect()
    };
    let followed = thread_events(events_until(&mut live, last).await);
    let expected: Vec<Seq> = all.iter().map(|m| m.seq).chain([last]).collect();
    assert_eq!(
        followed.iter().map(|e| e.seq).collect::<Vec<_>>(),
        expected,
        "every reply, then the reaction on one"
    );
    assert!(matches!(
        &followed.last().unwrap().payload,
        EventPayload::ReactionAdded { parent_id: Some(p), .. } if *p == root.id
    ));
    for event in &followed[..followed.len() - 1] {
        match &event.payload {
            EventPayload::MessageCreated { message } => {
                assert_eq!(message.parent_id, Some(root.id))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // Resumed from the root: the same.
    let mut resumed = service
        .subscribe_events(&carol, Some(channel), &[(channel, root.seq)])
        .await
        .unwrap();
    assert_eq!(
        thread_events(events_until(&mut resumed, last).await),
        followed
    );
}

/// A reply's parent is a top-level message of the same channel, not a
/// tombstone; threads are one level deep; non-members are refused (and
/// learn nothing about the parent).
async fn replies_keep_the_thread_rule(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel = service
        .admin_create_channel("a".into(), vec!["alice".into()], None)
        .await
        .unwrap()
        .id;
    let elsewhere = service
        .admin_create_channel("b".into(), vec!["alice".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let alice = caller(&service, "alice");
    let eve = caller(&service, "eve");
    let root = service
        .send(&alice, channel, "root".into(), None)
        .await
        .unwrap();
    let first = service
        .send_with(&alice, channel, "first".into(), reply(root.id))
        .await
        .unwrap();
    let foreign = service
        .send(&alice, elsewhere, "over there".into(), None)
        .await
        .unwrap();
    let before = service.admin_channel(channel).await.unwrap().last_seq;

    let invalid = |r: Result<_, Error>| {
        matches!(
            r,
            Err(Error::InvalidInput {
                field: "parentId",
                ..
            })
        )
    };
    assert!(invalid(
        service
            .send_with(&alice, channel, "nested".into(), reply(first.id))
            .await
    ));
    assert!(invalid(
        service
            .send_with(&alice, channel, "across".into(), reply(foreign.id))
            .await
    ));
    assert!(invalid(
        service
            .send_with(
                &alice,
                channel,
                "nowhere".into(),
                reply(MessageId(foreign.id.0 + 100))
            )
            .await
    ));
    // Eve, not in the channel, is refused before the parent is looked at,
    // and cannot read the thread.
    let refused = service
        .send_with(&eve, channel, "let me in".into(), reply(root.id))
        .await;
    assert!(
        matches!(refused, Err(Error::NotMember { .. })),
        "{refused:?}"
    );
    let refused = service
        .thread_for(&eve, root.id, HistoryRequest::default())
        .await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    // Replying in a channel she is in to a message of one she is not in
    // tells her nothing more than a message that does not exist.
    assert!(invalid(
        service
            .send_with(&eve, elsewhere, "sneaky".into(), reply(root.id))
            .await
    ));
    assert_eq!(
        service.admin_channel(channel).await.unwrap().last_seq,
        before,
        "refusals take no seq"
    );

    service.delete(&alice, root.id).await.unwrap();
    let refused = service
        .send_with(&alice, channel, "late".into(), reply(root.id))
        .await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    // The thread stays readable, tombstone and all.
    let thread = service
        .thread_for(&alice, root.id, HistoryRequest::default())
        .await
        .unwrap();
    assert_eq!(thread, vec![first.clone()]);

    // The management API replies too (as the system here).
    let (posted, created) = service
        .admin_post_message_with(elsewhere, None, "system reply".into(), reply(foreign.id))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(posted.parent_id, Some(foreign.id));
}

fn mentioning(users: &[&str]) -> SendOptions {
    SendOptions {
        mentions: users.iter().map(|u| (*u).to_owned()).collect(),
        ..SendOptions::default()
    }
}

/// Mentions name members only; the mentioned member counts them unread
/// until their watermark passes them, a deleted message stops counting,
/// and the sender's own mention of themself never counts.
async fn mentions_are_counted_unread_then_read(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let service = service(&db).await;
    let channel = service
        .admin_create_channel(
            "mentions".into(),
            vec!["alice".into(), "bob".into(), "carol".into()],
            None,
        )
        .await
        .unwrap()
        .id;
    let [alice, bob, carol, eve] = ["alice", "bob", "carol", "eve"].map(|u| caller(&service, u));
    let mut live = service
        .subscribe_events(&carol, Some(channel), &[])
        .await
        .unwrap();

    let first = service
        .send_with(
            &alice,
            channel,
            "@bob look".into(),
            mentioning(&["bob", "bob", "alice"]),
        )
        .await
        .unwrap();
    assert_eq!(
        first
            .mentions
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>(),
        ["bob", "alice"],
        "distinct, in order"
    );
    service
        .send(&alice, channel, "no mention".into(), None)
        .await
        .unwrap();
    let second = service
        .send_with(
            &carol,
            channel,
            "@bob @alice".into(),
            mentioning(&["bob", "alice"]),
        )
        .await
        .unwrap();
    let third = service
        .send_with(&alice, channel, "@bob again".into(), mentioning(&["bob"]))
        .await
        .unwrap();
    // A reply may mention too.
    let reply = service
        .send_with(
            &carol,
            channel,
            "@bob in a thread".into(),
            SendOptions {
                parent_id: Some(first.id),
                ..mentioning(&["bob"])
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.parent_id, Some(first.id));

    assert_eq!(unread_mentions(&service, &bob, channel).await, 4);
    assert_eq!(service.unread_count_for(&bob, channel).await.unwrap(), 5);
    assert_eq!(
        unread_mentions(&service, &alice, channel).await,
        1,
        "carol's; alice's own mention of herself is not unread"
    );
    assert_eq!(unread_mentions(&service, &carol, channel).await, 0);

    // Live events carry the mentions.
    let events = events_until(&mut live, reply.seq).await;
    let mentioned: Vec<Vec<String>> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::MessageCreated { message } => Some(
                message
                    .mentions
                    .iter()
                    .map(|u| u.as_str().to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(mentioned[0], ["bob", "alice"]);
    assert_eq!(mentioned[1], Vec::<String>::new());

    // Reading up to the second leaves the third and the reply.
    service.mark_read(&bob, channel, second.seq).await.unwrap();
    assert_eq!(unread_mentions(&service, &bob, channel).await, 2);
    service.delete(&alice, third.id).await.unwrap();
    assert_eq!(unread_mentions(&service, &bob, channel).await, 1);
    assert!(
        service
            .message_for(&bob, third.id)
            .await
            .unwrap()
            .mentions
            .is_empty(),
        "a tombstone keeps no mentions"
    );
    let last = service.admin_channel(channel).await.unwrap().last_seq;
    service.mark_read(&bob, channel, last).await.unwrap();
    assert_eq!(unread_mentions(&service, &bob, channel).await, 0);

    // Only members may be mentioned; bad ids and too many are refused;
    // nothing is stored or takes a seq.
    let before = service.admin_channel(channel).await.unwrap().last_seq;
    for refused in [
        service
            .send_with(&alice, channel, "@eve".into(), mentioning(&["bob", "eve"]))
            .await,
        service
            .send_with(&alice, channel, "@nobody".into(), mentioning(&[""]))
            .await,
        service
            .send_with(
                &alice,
                channel,
                "@everyone".into(),
                SendOptions {
                    mentions: (0..51).map(|i| format!("u{i}")).collect(),
                    ..SendOptions::default()
                },
            )
            .await,
        service
            .admin_post_message_with(channel, None, "@eve".into(), mentioning(&["eve"]))
            .await
            .map(|(m, _)| m),
    ] {
        assert!(
            matches!(refused, Err(Error::InvalidInput { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(
        service.admin_channel(channel).await.unwrap().last_seq,
        before
    );
    // A non-member is refused as for any send, and cannot count.
    let refused = service
        .send_with(&eve, channel, "@bob".into(), mentioning(&["bob"]))
        .await;
    assert!(
        matches!(refused, Err(Error::NotMember { .. })),
        "{refused:?}"
    );
    let refused = service.unread_mention_count_for(&eve, channel).await;
    assert!(
        matches!(refused, Err(Error::NotMember { .. })),
        "{refused:?}"
    );
    // The application mentions as the system.
    let (posted, _) = service
        .admin_post_message_with(
            channel,
            None,
            "@carol deploy done".into(),
            mentioning(&["carol"]),
        )
        .await
        .unwrap();
    assert_eq!(posted.mentions.len(), 1);
    assert_eq!(
        service
            .unread_mention_count_for(&carol, channel)
            .await
            .unwrap(),
        1
    );
}
