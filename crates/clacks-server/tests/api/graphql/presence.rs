//! Presence over the real server: online while a WebSocket of the user is
//! open (two sockets: until both close), `PresenceChanged` events to a
//! small channel's subscriber, the `presence` query for members only,
//! `User.presence`, and the management endpoints.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::{MODERN, Ws};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(presence_follows_sockets_over_both_apis);

const EVENTS: &str = "subscription($c: ID) { events(channel: $c, kinds: [PRESENCE_CHANGED]) {
    __typename durable ... on PresenceChanged { userId online lastSeenAt }
} }";

/// The next `PresenceChanged` event of `ws` about ann, as (user, online,
/// lastSeenAt); the subscriber's own (bob's own coming online may arrive
/// after his subscription started) are skipped.
async fn presence_event(ws: &mut Ws) -> (String, bool, Value) {
    loop {
        let (_, payload) = ws.next_payload().await;
        let event = &payload["data"]["events"];
        assert_eq!(event["__typename"], "PresenceChanged", "{payload}");
        assert_eq!(event["durable"], false);
        if event["userId"] == "bob" {
            continue;
        }
        return (
            event["userId"].as_str().unwrap().to_owned(),
            event["online"].as_bool().unwrap(),
            event["lastSeenAt"].clone(),
        );
    }
}

async fn rest_presence(app: &TestApp, user: &str) -> Value {
    let response = app
        .http
        .get(app.api(&format!("/users/{user}/presence")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn online_members(app: &TestApp, user: &str, channel: i64) -> Value {
    app.graphql(
        Some(&app.token(user)),
        "query($c: ID!) { presence(channel: $c) { id } }",
        json!({"c": channel.to_string()}),
    )
    .await
}

async fn presence_follows_sockets_over_both_apis(app: TestApp) {
    let channel = app.channel_with("small", &["ann", "bob"]).await;
    assert_eq!(
        rest_presence(&app, "ann").await,
        json!({"online": false, "lastSeenAt": null})
    );

    let mut bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    bob.subscribe("e", EVENTS, json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let first = Ws::open(&app.ws_url, MODERN, &app.token("ann")).await;
    assert_eq!(
        presence_event(&mut bob).await,
        ("ann".into(), true, Value::Null)
    );
    assert_eq!(
        rest_presence(&app, "ann").await,
        json!({"online": true, "lastSeenAt": null})
    );
    let members = app
        .graphql(
            Some(&app.token("bob")),
            "query($c: ID!) { channel(id: $c) { members { user { id presence { online lastSeenAt } } } } }",
            json!({"c": channel.to_string()}),
        )
        .await;
    assert_eq!(
        members["data"]["channel"]["members"],
        json!([
            {"user": {"id": "ann", "presence": {"online": true, "lastSeenAt": null}}},
            {"user": {"id": "bob", "presence": {"online": true, "lastSeenAt": null}}},
        ]),
        "{members}"
    );
    assert_eq!(
        online_members(&app, "ann", channel).await["data"]["presence"],
        json!([{"id": "ann"}, {"id": "bob"}])
    );

    // A second socket, then the first closes: still online, no event.
    let second = Ws::open(&app.ws_url, MODERN, &app.token("ann")).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rest_presence(&app, "ann").await["online"], true);
    drop(second);
    let (user, online, last_seen) = presence_event(&mut bob).await;
    assert_eq!((user.as_str(), online), ("ann", false));
    let seconds = last_seen.as_i64().expect("lastSeenAt in seconds");
    let rest = rest_presence(&app, "ann").await;
    assert_eq!(rest["online"], false);
    let ms = rest["lastSeenAt"].as_i64().expect("lastSeenAt in ms");
    assert_eq!(ms.div_euclid(1000), seconds);

    // The sender of a system message is never online.
    app.service
        .admin_post_message(
            clacks_core::ChannelId(channel),
            None,
            "welcome".into(),
            None,
        )
        .await
        .unwrap();
    let system = app
        .graphql(
            Some(&app.token("bob")),
            "query($c: ID!) { channel(id: $c) { history(limit: 1) { sender { presence { online lastSeenAt } } } } }",
            json!({"c": channel.to_string()}),
        )
        .await;
    assert_eq!(
        system["data"]["channel"]["history"][0]["sender"]["presence"],
        json!({"online": false, "lastSeenAt": null}),
        "{system}"
    );

    // The channel's online members, for its members only.
    assert_eq!(
        online_members(&app, "bob", channel).await["data"]["presence"],
        json!([{"id": "bob"}])
    );
    let refused = online_members(&app, "eve", channel).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(refused["data"], Value::Null, "{refused}");

    let page: Value = app
        .http
        .get(app.api(&format!("/channel/{channel}/presence?limit=10")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"items": ["bob"], "nextAfter": null}));
    let missing = app
        .http
        .get(app.api("/channel/987654321/presence"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let invalid = app
        .http
        .get(app.api(&format!("/users/{}/presence", "x".repeat(300))))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    app.shutdown().await;
}
