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
    a_thread_is_followed_live_and_resumed_over_graphql,
    a_mention_is_counted_unread_then_read,
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
    send_reply(app, channel, from, content, None).await
}

async fn send_reply(
    app: &TestApp,
    channel: i64,
    from: &str,
    content: &str,
    parent: Option<&str>,
) -> (String, i64) {
    let r = app
        .graphql(
            Some(&app.token(from)),
            "mutation($c: ID!, $t: String!, $p: ID) {
                createMessage(input: {channel: $c, content: $t, parentId: $p}) { id seq parentId }
            }",
            json!({"c": channel.to_string(), "t": content, "p": parent}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(r["data"]["createMessage"]["parentId"].as_str(), parent);
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
    let thread = "query($p: ID!) { thread(parent: $p) { id } }";
    for (query, variables) in [
        (thread, json!({"p": message})),
        (thread, json!({"p": "999999"})),
        (
            "mutation($c: ID!, $p: ID) { createMessage(input: {channel: $c, content: \"hi\", parentId: $p}) { id } }",
            json!({"c": channel.to_string(), "p": message}),
        ),
        (
            "mutation($c: ID!) { createMessage(input: {channel: $c, content: \"@alice\", mentions: [\"alice\"]}) { id } }",
            json!({"c": channel.to_string()}),
        ),
        (
            "query($c: ID!) { channel(id: $c) { unreadMentionCount } }",
            json!({"c": channel.to_string()}),
        ),
    ] {
        let r = app.graphql(Some(&eve), query, variables).await;
        assert_eq!(code(&r), "FORBIDDEN", "{r}");
    }
    let mut ws = Ws::open(&app.ws_url, MODERN, &eve).await;
    ws.subscribe(
        "t",
        "subscription($c: ID!, $p: ID) { events(channel: $c, thread: $p) { seq } }",
        json!({"c": channel.to_string(), "p": message}),
    )
    .await;
    let frame = ws.recv().await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["payload"][0]["extensions"]["code"], "FORBIDDEN");

    let alice = app.token("alice");
    let r = app
        .graphql(Some(&alice), ADD, json!({"m": message, "k": "thumbs up"}))
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    let (reply, _) = send_reply(&app, channel, "alice", "in thread", Some(&message)).await;
    let r = app
        .graphql(
            Some(&alice),
            "mutation($c: ID!, $p: ID) { createMessage(input: {channel: $c, content: \"deeper\", parentId: $p}) { id } }",
            json!({"c": channel.to_string(), "p": reply}),
        )
        .await;
    assert_eq!(
        code(&r),
        "BAD_USER_INPUT",
        "threads are one level deep: {r}"
    );
    app.shutdown().await;
}

const THREAD: &str = "subscription($c: ID, $t: ID, $after: Int) {
    events(channel: $c, thread: $t, afterSeq: $after) {
        __typename seq
        ... on MessageCreated { message { id content parentId replyCount reactions { key } } }
        ... on ReactionAdded { messageId parentId key count }
    }
}";

/// A client follows one thread live over a WebSocket while the channel
/// carries other messages and another thread, then resumes it; the thread
/// pages over HTTP; the management API posts a reply.
async fn a_thread_is_followed_live_and_resumed_over_graphql(app: TestApp) {
    let channel = app.channel_with("threads", &["alice", "bob"]).await;
    let c = channel.to_string();
    let (root, root_seq) = send(&app, channel, "alice", "root").await;
    let (other, _) = send(&app, channel, "alice", "another root").await;
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    ws.subscribe("thread", THREAD, json!({"c": c, "t": root}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut replies = Vec::new();
    for i in 0..4 {
        let from = if i % 2 == 0 { "alice" } else { "bob" };
        replies.push(send_reply(&app, channel, from, &format!("reply {i}"), Some(&root)).await);
        send(&app, channel, from, &format!("top {i}")).await;
        send_reply(&app, channel, from, &format!("elsewhere {i}"), Some(&other)).await;
    }
    let posted: Value = app
        .http
        .post(app.api(&format!("/channel/{channel}/messages")))
        .json(&json!({"content": "from the server", "parentId": root.parse::<i64>().unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        posted["parentId"],
        json!(root.parse::<i64>().unwrap()),
        "{posted}"
    );
    replies.push((posted["id"].to_string(), posted["seq"].as_i64().unwrap()));
    let r = app
        .graphql(
            Some(&app.token("alice")),
            ADD,
            json!({"m": replies[1].0, "k": "✅"}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");

    let live = payloads(&mut ws, replies.len() + 1).await;
    for (event, (id, seq)) in live.iter().zip(&replies) {
        assert_eq!(event["__typename"], "MessageCreated", "{event}");
        assert_eq!(event["seq"], *seq);
        assert_eq!(event["message"]["id"], id.as_str());
        assert_eq!(event["message"]["parentId"], root.as_str());
        assert_eq!(event["message"]["replyCount"], 0);
        assert_eq!(event["message"]["reactions"], json!([]));
    }
    let reaction = &live[replies.len()];
    assert_eq!(reaction["__typename"], "ReactionAdded", "{reaction}");
    assert_eq!(reaction["parentId"], root.as_str());
    assert_eq!(reaction["messageId"], replies[1].0.as_str());

    let mut resumed = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    resumed
        .subscribe(
            "again",
            THREAD,
            json!({"c": c, "t": root, "after": root_seq}),
        )
        .await;
    assert_eq!(payloads(&mut resumed, live.len()).await, live);

    let page = "query($p: ID!, $after: Int) {
        message(id: $p) { replyCount lastReplyAt }
        thread(parent: $p, after: $after, limit: 3) { id seq parentId }
    }";
    let r = app
        .graphql(
            Some(&app.token("alice")),
            page,
            json!({"p": root, "after": 0}),
        )
        .await;
    assert_eq!(r["data"]["message"]["replyCount"], replies.len(), "{r}");
    assert!(r["data"]["message"]["lastReplyAt"].is_i64(), "{r}");
    let first: Vec<i64> = r["data"]["thread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(first, replies[..3].iter().map(|r| r.1).collect::<Vec<_>>());
    app.shutdown().await;
}

/// Alice mentions bob over GraphQL; bob's live subscription shows it as
/// mentioning him, his channel counts it unread until he marks it read;
/// mentioning a non-member is BAD_USER_INPUT; the management API mentions.
async fn a_mention_is_counted_unread_then_read(app: TestApp) {
    let channel = app.channel_with("mentions", &["alice", "bob"]).await;
    let c = channel.to_string();
    let bob = app.token("bob");
    let mut ws = Ws::open(&app.ws_url, MODERN, &bob).await;
    ws.subscribe(
        "m",
        "subscription($c: ID) { message(channel: $c) { seq mentions { id } mentionedMe } }",
        json!({"c": c}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let alice = app.token("alice");
    let create = "mutation($c: ID!, $t: String!, $m: [ID!]) {
        createMessage(input: {channel: $c, content: $t, mentions: $m}) { seq mentions { id } mentionedMe }
    }";
    let r = app
        .graphql(
            Some(&alice),
            create,
            json!({"c": c, "t": "@bob hi", "m": ["bob"]}),
        )
        .await;
    assert_eq!(
        r["data"]["createMessage"]["mentions"],
        json!([{"id": "bob"}]),
        "{r}"
    );
    assert_eq!(r["data"]["createMessage"]["mentionedMe"], false);
    let seq = r["data"]["createMessage"]["seq"].as_i64().unwrap();
    let r = app
        .graphql(
            Some(&alice),
            create,
            json!({"c": c, "t": "plain", "m": null}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");

    let (_, payload) = ws.next_payload().await;
    assert_eq!(payload["data"]["message"]["seq"], seq);
    assert_eq!(payload["data"]["message"]["mentionedMe"], true, "{payload}");
    let (_, payload) = ws.next_payload().await;
    assert_eq!(
        payload["data"]["message"]["mentionedMe"], false,
        "{payload}"
    );

    let counts = "query($c: ID!) {
        channel(id: $c) { unreadCount unreadMentionCount }
        channels { id unreadMentionCount }
    }";
    let r = app.graphql(Some(&bob), counts, json!({"c": c})).await;
    assert_eq!(r["data"]["channel"]["unreadCount"], 2, "{r}");
    assert_eq!(r["data"]["channel"]["unreadMentionCount"], 1, "{r}");
    assert_eq!(r["data"]["channels"][0]["unreadMentionCount"], 1, "{r}");
    let r = app
        .graphql(
            Some(&bob),
            "mutation($c: ID!, $s: Int!) { markRead(channel: $c, seq: $s) { unreadCount unreadMentionCount } }",
            json!({"c": c, "s": seq}),
        )
        .await;
    assert_eq!(
        r["data"]["markRead"],
        json!({"unreadCount": 1, "unreadMentionCount": 0}),
        "{r}"
    );

    let r = app
        .graphql(
            Some(&alice),
            create,
            json!({"c": c, "t": "@eve", "m": ["eve"]}),
        )
        .await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");

    let posted: Value = app
        .http
        .post(app.api(&format!("/channel/{channel}/messages")))
        .json(&json!({"content": "@bob from the app", "mentions": ["bob"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["mentions"], json!(["bob"]), "{posted}");
    let r = app.graphql(Some(&bob), counts, json!({"c": c})).await;
    assert_eq!(r["data"]["channel"]["unreadMentionCount"], 1, "{r}");
    app.shutdown().await;
}
