//! Reactions, replies and mentions over real sockets (issue 13): the
//! GraphQL fields and mutations, their events on a live WebSocket and on
//! resume, and refusals with their `extensions.code`.

use futures::future::join_all;
use serde_json::{Value, json};

use super::client::{MODERN, Ws};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    reactions_raced_over_graphql_reach_a_live_subscriber,
    non_members_are_refused_every_new_operation,
);

const REACTIONS: &str = "subscription($c: ID, $after: Int) {
    events(channel: $c, afterSeq: $after, kinds: [REACTION_ADDED, REACTION_REMOVED]) {
        __typename seq
        ... on ReactionAdded { messageId userId key count }
        ... on ReactionRemoved { messageId userId key count }
    }
}";

const ADD: &str = "mutation($m: ID!, $k: String!) { addReaction(messageId: $m, key: $k) { id reactions { key count reactedByMe } } }";
const REMOVE: &str = "mutation($m: ID!, $k: String!) { removeReaction(messageId: $m, key: $k) { id reactions { key count reactedByMe } } }";

fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

async fn send(app: &TestApp, channel: i64, from: &str, content: &str) -> (String, i64) {
    let r = app
        .graphql(
            Some(&app.token(from)),
            "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { id seq } }",
            json!({"c": channel.to_string(), "t": content}),
        )
        .await;
    let message = &r["data"]["createMessage"];
    (
        message["id"].as_str().expect("sent").to_owned(),
        message["seq"].as_i64().unwrap(),
    )
}

/// Reads `events` payloads of subscription `id` until `count` arrived.
async fn payloads(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let (_, payload) = ws.next_payload().await;
        assert!(payload["errors"].is_null(), "{payload}");
        got.push(payload["data"]["events"].clone());
    }
    got
}

/// Members react at once over HTTP; a live subscriber sees one event per
/// reaction with the counts going up by one in seq order; a resume from
/// before them replays the same; every member sees the count and their
/// own `reactedByMe`.
async fn reactions_raced_over_graphql_reach_a_live_subscriber(app: TestApp) {
    const USERS: usize = 12;
    let users: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let channel = app.channel_with("reactions", &names).await;
    let (message, seq) = send(&app, channel, "u0", "react to me").await;
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("u0")).await;
    ws.subscribe("live", REACTIONS, json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let tokens: Vec<String> = users.iter().map(|u| app.token(u)).collect();
    let reacts = tokens.iter().map(|token| {
        let app = &app;
        let message = message.clone();
        async move {
            let r = app
                .graphql(Some(token), ADD, json!({"m": message, "k": "👍"}))
                .await;
            assert!(r["errors"].is_null(), "{r}");
            // Idempotent: the repeat publishes nothing.
            let r = app
                .graphql(Some(token), ADD, json!({"m": message, "k": "👍"}))
                .await;
            assert!(r["errors"].is_null(), "{r}");
        }
    });
    join_all(reacts).await;
    let r = app
        .graphql(Some(&tokens[1]), REMOVE, json!({"m": message, "k": "👍"}))
        .await;
    assert_eq!(
        r["data"]["removeReaction"]["reactions"],
        json!([{"key": "👍", "count": USERS - 1, "reactedByMe": false}]),
        "{r}"
    );

    let live = payloads(&mut ws, USERS + 1).await;
    for (i, event) in live.iter().enumerate().take(USERS) {
        assert_eq!(event["__typename"], "ReactionAdded", "{event}");
        assert_eq!(event["messageId"], message.as_str());
        assert_eq!(event["count"], i + 1, "counts go up one by one: {live:?}");
        assert_eq!(event["seq"], seq + 1 + i as i64);
    }
    assert_eq!(live[USERS]["__typename"], "ReactionRemoved");
    assert_eq!(live[USERS]["userId"], "u1");
    assert_eq!(live[USERS]["count"], USERS - 1);

    let mut resumed = Ws::open(&app.ws_url, MODERN, &app.token("u5")).await;
    resumed
        .subscribe(
            "again",
            REACTIONS,
            json!({"c": channel.to_string(), "after": seq}),
        )
        .await;
    assert_eq!(payloads(&mut resumed, USERS + 1).await, live);

    let view = "query($m: ID!) { message(id: $m) { reactions { key count reactedByMe } } }";
    for (user, mine) in [("u0", true), ("u1", false)] {
        let r = app
            .graphql(Some(&app.token(user)), view, json!({"m": message}))
            .await;
        assert_eq!(
            r["data"]["message"]["reactions"],
            json!([{"key": "👍", "count": USERS - 1, "reactedByMe": mine}]),
            "{user}: {r}"
        );
    }
    app.shutdown().await;
}

/// A non-member is refused every new operation with the code the message
/// operations use, and learns nothing; bad input is BAD_USER_INPUT.
async fn non_members_are_refused_every_new_operation(app: TestApp) {
    let channel = app.channel_with("private", &["alice", "bob"]).await;
    let (message, _) = send(&app, channel, "alice", "members only").await;
    let eve = app.token("eve");
    for (query, variables) in [
        (ADD, json!({"m": message, "k": "👍"})),
        (REMOVE, json!({"m": message, "k": "👍"})),
        (ADD, json!({"m": "999999", "k": "👍"})),
    ] {
        let r = app.graphql(Some(&eve), query, variables).await;
        assert_eq!(code(&r), "FORBIDDEN", "{r}");
        assert!(r["data"].is_null(), "{r}");
    }
    let alice = app.token("alice");
    let r = app
        .graphql(Some(&alice), ADD, json!({"m": message, "k": "thumbs up"}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    app.shutdown().await;
}
