//! Bulk membership as subscribers see it: one `MembersJoined` /
//! `MembersLeft` per request (issue 14), live and on replay, removal at
//! once for a removed subscriber, and an added user's all-channels stream
//! following the channel.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::{MODERN, Ws};
use crate::backend_tests;
use crate::helpers::TestApp;
use crate::management::patch;

backend_tests!(
    a_bulk_add_is_one_event_live_and_on_replay,
    a_bulk_removal_ends_a_removed_subscriber_at_once,
);

const EVENTS: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after) {
    __typename channelId seq
    ... on MessageCreated { message { content } }
    ... on MembersJoined { userIds count truncated role }
    ... on MembersLeft { userIds count truncated }
} }";

const SEND: &str =
    "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }";

fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n:05}")).collect()
}

async fn event(ws: &mut Ws) -> Value {
    let (_, payload) = tokio::time::timeout(Duration::from_secs(10), ws.next_payload())
        .await
        .expect("an event within 10 s");
    payload["data"]["events"].clone()
}

async fn send(app: &TestApp, channel: i64, text: &str) -> i64 {
    let reply = app
        .graphql(
            Some(&app.token("alice")),
            SEND,
            json!({"c": channel.to_string(), "t": text}),
        )
        .await;
    reply["data"]["createMessage"]["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("{reply}"))
}

/// 2,000 users added in one request: a subscriber of the channel gets one
/// `MembersJoined` with the count, an added user's all-channels stream
/// starts with it and gets the next message, a resume from seq 0 replays one
/// event, not 2,000; a small request lists its users.
async fn a_bulk_add_is_one_event_live_and_on_replay(app: TestApp) {
    let channel = app.channel_with("big", &["alice"]).await;
    let c = channel.to_string();
    let mut alice = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    alice.subscribe("e", EVENTS, json!({"c": c})).await;
    let mut carol = Ws::open(&app.ws_url, MODERN, &app.token("carol")).await;
    carol.subscribe("all", EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut add = users("u", 1_999);
    add.push("carol".into());
    patch(
        &app,
        &format!("/channel/{channel}/users"),
        json!({"add": add}),
    )
    .await
    .ok(200);
    let expected = json!({"__typename": "MembersJoined", "channelId": c, "seq": 1,
        "userIds": [], "count": 2_000, "truncated": true, "role": "member"});
    assert_eq!(event(&mut alice).await, expected);
    assert_eq!(event(&mut carol).await, expected);
    assert_eq!(send(&app, channel, "welcome").await, 2);
    assert_eq!(event(&mut alice).await["seq"], 2);
    let next = event(&mut carol).await;
    assert_eq!(
        (next["seq"].clone(), next["message"]["content"].clone()),
        (json!(2), json!("welcome"))
    );

    let mut resumed = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    resumed
        .subscribe("r", EVENTS, json!({"c": c, "after": 0}))
        .await;
    assert_eq!(event(&mut resumed).await, expected);
    assert_eq!(event(&mut resumed).await["seq"], 2);

    patch(
        &app,
        &format!("/channel/{channel}/users"),
        json!({"add": ["x", "y", "z"]}),
    )
    .await
    .ok(200);
    let small = event(&mut alice).await;
    assert_eq!(
        small,
        json!({"__typename": "MembersJoined", "channelId": c, "seq": 3,
            "userIds": ["x", "y", "z"], "count": 3, "truncated": false, "role": "member"})
    );
    app.shutdown().await;
}

/// 500 members removed in one request, bob among them: his subscription of
/// the channel gets the `MembersLeft` and ends with FORBIDDEN at once;
/// carol's all-channels stream drops the channel.
async fn a_bulk_removal_ends_a_removed_subscriber_at_once(app: TestApp) {
    let channel = app
        .channel_with("shrinking", &["alice", "bob", "carol"])
        .await;
    let c = channel.to_string();
    let path = format!("/channel/{channel}/users");
    let others = users("u", 498);
    patch(&app, &path, json!({"add": others})).await.ok(200);
    let mut bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    bob.subscribe("e", EVENTS, json!({"c": c})).await;
    let mut carol = Ws::open(&app.ws_url, MODERN, &app.token("carol")).await;
    carol.subscribe("all", EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut remove = vec!["bob".to_owned(), "carol".to_owned()];
    remove.extend(others);
    patch(&app, &path, json!({"remove": remove})).await.ok(200);
    let left = event(&mut bob).await;
    assert_eq!(
        (
            left["__typename"].clone(),
            left["count"].clone(),
            left["truncated"].clone()
        ),
        (json!("MembersLeft"), json!(500), json!(true))
    );
    let (_, forbidden) = tokio::time::timeout(Duration::from_secs(5), bob.next_payload())
        .await
        .expect("the end at once");
    assert_eq!(
        forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{forbidden}"
    );
    assert_eq!(bob.recv().await, json!({"id": "e", "type": "complete"}));
    assert_eq!(event(&mut carol).await["__typename"], "MembersLeft");
    send(&app, channel, "after they left").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), carol.next_payload())
            .await
            .is_err(),
        "nothing of the channel reaches carol after her removal"
    );
    app.shutdown().await;
}
