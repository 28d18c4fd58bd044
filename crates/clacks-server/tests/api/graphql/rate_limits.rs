//! Per-user rate limits on every client operation: `RATE_LIMITED` with
//! `retryAfterMs`, one bucket per kind of operation.

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::client::{MODERN, Ws};
use crate::helpers::TestApp;

fn rate_limited(response: &Value, what: &str) {
    let error = &response["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "RATE_LIMITED",
        "{what}: {response}"
    );
    let retry = error["extensions"]["retryAfterMs"].as_i64().unwrap_or(0);
    assert!(
        (1..=1000).contains(&retry),
        "{what}: one token a second comes back within a second: {response}"
    );
}

fn ok(response: &Value, what: &str) {
    assert!(response.get("errors").is_none(), "{what}: {response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_operation_is_rate_limited_per_user() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        for (rate, burst) in [
            (&mut config.edit_rate, &mut config.edit_burst),
            (&mut config.delete_rate, &mut config.delete_burst),
            (&mut config.mark_read_rate, &mut config.mark_read_burst),
            (&mut config.typing_rate, &mut config.typing_burst),
            (&mut config.subscribe_rate, &mut config.subscribe_burst),
        ] {
            (*rate, *burst) = (1, 2);
        }
    })
    .await
    else {
        return;
    };
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let channels: Vec<String> = [
        app.channel_with("one", &["alice", "bob"]).await,
        app.channel_with("two", &["alice", "bob"]).await,
        app.channel_with("three", &["alice", "bob"]).await,
    ]
    .iter()
    .map(i64::to_string)
    .collect();
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = app
            .graphql(
                Some(&alice),
                "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { id } }",
                json!({"c": channels[0], "t": format!("m{i}")}),
            )
            .await;
        ids.push(
            r["data"]["createMessage"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let edit = "mutation($id: ID!) { editMessage(id: $id, content: \"edited\") { id } }";
    let delete = "mutation($id: ID!) { deleteMessage(id: $id) { id } }";
    let mark_read = "mutation($c: ID!) { markRead(channel: $c, seq: 1) { lastReadSeq } }";
    let typing = "mutation($c: ID!) { setTyping(channel: $c) }";
    for (what, query, variables) in [
        (
            "edit",
            edit,
            ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
        ),
        (
            "delete",
            delete,
            ids.iter().map(|id| json!({"id": id})).collect(),
        ),
        ("markRead", mark_read, vec![json!({"c": channels[0]}); 3]),
        // One typing event per channel: the per-user bucket spans channels.
        (
            "typing",
            typing,
            channels.iter().map(|c| json!({"c": c})).collect(),
        ),
    ] {
        for variables in &variables[..2] {
            ok(
                &app.graphql(Some(&alice), query, variables.clone()).await,
                what,
            );
        }
        rate_limited(
            &app.graphql(Some(&alice), query, variables[2].clone()).await,
            what,
        );
    }
    // Another user has buckets of their own.
    ok(
        &app.graphql(Some(&bob), mark_read, json!({"c": channels[0]}))
            .await,
        "bob's markRead",
    );
    // Typing again within the interval of one channel is dropped quietly,
    // not refused (and takes no token).
    let again = app
        .graphql(Some(&bob), typing, json!({"c": channels[1]}))
        .await;
    assert_eq!(again["data"]["setTyping"], true);
    let again = app
        .graphql(Some(&bob), typing, json!({"c": channels[1]}))
        .await;
    assert_eq!(again["data"]["setTyping"], false, "{again}");

    // Subscriptions opened, over one socket or several.
    let subscription = "subscription { message { seq } }";
    let mut first = Ws::open(&app.ws_url, MODERN, &alice).await;
    first.subscribe("1", subscription, json!({})).await;
    let mut second = Ws::open(&app.ws_url, MODERN, &alice).await;
    second.subscribe("1", subscription, json!({})).await;
    second.subscribe("2", subscription, json!({})).await;
    let refused = second.recv().await;
    assert_eq!(refused["id"], "2", "{refused}");
    assert_eq!(refused["type"], "error", "{refused}");
    rate_limited(&json!({"errors": refused["payload"]}), "subscribe");
    app.shutdown().await;
}

/// A subscription completed right after it is sent is stopped before its
/// resolver runs; it is counted all the same (a client churning
/// `subscribe` + `complete` pairs still costs a parse, a task and a
/// registration each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_completed_at_once_are_counted() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        (config.subscribe_rate, config.subscribe_burst) = (1, 2);
    })
    .await
    else {
        return;
    };
    let alice = app.token("alice");
    let mut ws = Ws::open(&app.ws_url, MODERN, &alice).await;
    let subscription = "subscription { message { seq } }";
    for id in ["1", "2", "3"] {
        ws.subscribe(id, subscription, json!({})).await;
        ws.send(json!({"id": id, "type": "complete"})).await;
    }
    // Live subscriptions answer nothing: the first frame is the refusal.
    let refused = ws.recv().await;
    assert_eq!(refused["id"], "3", "{refused}");
    assert_eq!(refused["type"], "error", "{refused}");
    rate_limited(&json!({"errors": refused["payload"]}), "subscribe");
    app.shutdown().await;
}
