//! Subscriptions over both WebSocket protocols, their close codes, the JWT
//! rules over WebSocket, authorization and live membership.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::{Frame, LEGACY, MODERN, Ws, bad_tokens, now, token_with};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    two_members_chat_over_both_protocols,
    transport_ws_close_codes,
    legacy_protocol_frames,
    jwt_rules_over_websocket,
    token_expiry_closes_with_4401,
    membership_and_subscription_limits,
    forced_disconnect_and_shutdown,
);

const EVENTS: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after) {
    __typename channelId seq
    ... on MessageCreated { message { seq content sender { id } } }
    ... on ReadReceipt { userId lastReadSeq }
    ... on Typing { userId }
    ... on MemberLeft { userId }
} }";

const SEND: &str =
    "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }";

async fn two_members_chat_over_both_protocols(app: TestApp) {
    let channel = app.channel_with("general", &["alice", "bob"]).await;
    let c = channel.to_string();
    // Alice: graphql-ws library protocol, the original `message` subscription.
    let mut alice = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    alice
        .subscribe(
            "m",
            "subscription { message { content seq sender { id } channel { id } sent_at } }",
            json!({}),
        )
        .await;
    // Bob: legacy protocol, the rich event stream of the channel.
    let mut bob = Ws::open(&app.ws_url, LEGACY, &app.token("bob")).await;
    bob.subscribe("e", EVENTS, json!({"c": c})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Alice sends over her WebSocket (a mutation as an operation).
    alice
        .subscribe("send-1", SEND, json!({"c": c, "t": "hi bob"}))
        .await;
    let mut got_result = false;
    let mut got_own = false;
    // The mutation's `complete` may come before or after the live event.
    let mut got_complete = false;
    while !(got_result && got_own && got_complete) {
        let frame = alice.recv().await;
        match (
            frame["type"].as_str().unwrap(),
            frame["id"].as_str().unwrap(),
        ) {
            ("next", "send-1") => {
                assert_eq!(frame["payload"]["data"]["createMessage"]["seq"], 1);
                got_result = true;
            }
            ("complete", "send-1") => got_complete = true,
            ("next", "m") => {
                assert_eq!(frame["payload"]["data"]["message"]["content"], "hi bob");
                got_own = true;
            }
            other => panic!("unexpected {other:?}: {frame}"),
        }
    }
    let (id, payload) = bob.next_payload().await;
    assert_eq!(id, "e");
    let event = &payload["data"]["events"];
    assert_eq!(event["__typename"], "MessageCreated");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["channelId"], c.as_str());
    assert_eq!(event["message"]["content"], "hi bob");
    assert_eq!(event["message"]["sender"]["id"], "alice");

    // Bob answers over HTTP; Alice sees it live with the original fields.
    let r = app
        .graphql(
            Some(&app.token("bob")),
            SEND,
            json!({"c": c, "t": "hi alice"}),
        )
        .await;
    assert_eq!(r["data"]["createMessage"]["seq"], 2, "{r}");
    let (id, payload) = alice.next_payload().await;
    assert_eq!(id, "m");
    let message = &payload["data"]["message"];
    assert_eq!(message["content"], "hi alice");
    assert_eq!(message["sender"]["id"], "bob");
    assert_eq!(message["channel"]["id"], c.as_str());
    assert!(message["sent_at"].as_i64().unwrap() > 0);
    let (_, own) = bob.next_payload().await;
    assert_eq!(own["data"]["events"]["seq"], 2);

    // Alice reads; Bob sees the receipt. Alice types; Bob sees it.
    let alice_token = app.token("alice");
    app.graphql(
        Some(&alice_token),
        "mutation($c: ID!) { markRead(channel: $c, seq: 2) { lastReadSeq } }",
        json!({"c": c}),
    )
    .await;
    let (_, receipt) = bob.next_payload().await;
    assert_eq!(receipt["data"]["events"]["__typename"], "ReadReceipt");
    assert_eq!(receipt["data"]["events"]["userId"], "alice");
    assert_eq!(receipt["data"]["events"]["lastReadSeq"], 2);
    app.graphql(
        Some(&alice_token),
        "mutation($c: ID!) { setTyping(channel: $c) }",
        json!({"c": c}),
    )
    .await;
    let (_, typing) = bob.next_payload().await;
    assert_eq!(typing["data"]["events"]["__typename"], "Typing");
    let unread = app
        .graphql(
            Some(&app.token("bob")),
            "{ channels { unreadCount } }",
            json!({}),
        )
        .await;
    assert_eq!(unread["data"]["channels"][0]["unreadCount"], 1);

    // Resume: a fresh subscription after seq 1 replays seq 2 first.
    bob.subscribe("r", EVENTS, json!({"c": c, "after": 1}))
        .await;
    let (id, replayed) = bob.next_payload().await;
    assert_eq!(id, "r");
    assert_eq!(replayed["data"]["events"]["seq"], 2);
    app.shutdown().await;
}

async fn expect_close(ws: &mut Ws, code: u16) -> String {
    let (got, reason) = ws.closed().await;
    assert_eq!(got, code, "close reason {reason:?}");
    reason
}

async fn transport_ws_close_codes(app: TestApp) {
    let token = app.token("alice");
    let channel = app.channel_with("general", &["alice"]).await;

    // No connection_init within the timeout.
    let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
    expect_close(&mut ws, 4408).await;
    // Subscribe before ack.
    let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
    ws.subscribe("1", "{ me { id } }", json!({})).await;
    expect_close(&mut ws, 4401).await;
    // Rejected init.
    let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
    ws.send(json!({"type": "connection_init", "payload": {"token": "nope"}}))
        .await;
    expect_close(&mut ws, 4403).await;
    // Malformed messages.
    for bad in [
        "not json",
        r#"{"type": "what"}"#,
        r#"{"id": "1", "type": "subscribe"}"#,
    ] {
        let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
        ws.send_text(bad.to_owned()).await;
        expect_close(&mut ws, 4400).await;
    }
    // Second connection_init.
    let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
    ws.send(json!({"type": "connection_init"})).await;
    expect_close(&mut ws, 4429).await;
    // Ping is answered; queries work; a duplicate active id closes 4409.
    let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    let (_, me) = ws.next_payload().await;
    assert_eq!(me["data"]["me"]["id"], "alice");
    assert_eq!(ws.recv().await, json!({"id": "q", "type": "complete"}));
    let sub = "subscription($c: ID) { message(channel: $c) { seq } }";
    ws.subscribe("s", sub, json!({"c": channel.to_string()}))
        .await;
    // A completed id may be reused; an active one may not.
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    let (id, _) = ws.next_payload().await;
    assert_eq!(id, "q");
    assert_eq!(ws.recv().await["type"], "complete");
    ws.subscribe("s", sub, json!({"c": channel.to_string()}))
        .await;
    let reason = expect_close(&mut ws, 4409).await;
    assert!(reason.contains("already exists"), "{reason}");
    // Operation-level errors use `error` and keep the connection.
    let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
    ws.subscribe("v", "subscription { nope }", json!({})).await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    // Client `complete` stops a subscription; no more frames for it.
    ws.subscribe("s", sub, json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.send(json!({"id": "s", "type": "complete"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.graphql(
        Some(&token),
        SEND,
        json!({"c": channel.to_string(), "t": "x"}),
    )
    .await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(
        ws.recv().await["type"],
        "pong",
        "nothing for the stopped operation"
    );
    app.shutdown().await;
}

async fn legacy_protocol_frames(app: TestApp) {
    let token = app.token("alice");
    let channel = app.channel_with("general", &["alice"]).await;
    let c = channel.to_string();
    // Rejected init: connection_error, then the socket closes.
    let mut ws = Ws::connect(&app.ws_url, LEGACY, None).await;
    ws.send(json!({"type": "connection_init", "payload": {}}))
        .await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "connection_error");
    assert_eq!(error["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    ws.closed().await;

    // Ack, then a `ka` right away.
    let mut ws = Ws::connect(&app.ws_url, LEGACY, None).await;
    ws.send(
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    // Frame() hides ka frames; read the raw one through a query ordering.
    ws.subscribe("1", "{ me { id } }", json!({})).await;
    let (id, payload) = ws.next_payload().await;
    assert_eq!(id, "1");
    assert_eq!(payload["data"]["me"]["id"], "alice");
    assert_eq!(ws.recv().await, json!({"id": "1", "type": "complete"}));
    // start / data / stop.
    ws.subscribe(
        "2",
        "subscription($c: ID) { message(channel: $c) { content } }",
        json!({"c": c}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.graphql(Some(&token), SEND, json!({"c": c, "t": "legacy"}))
        .await;
    let (id, payload) = ws.next_payload().await;
    assert_eq!(id, "2");
    assert_eq!(payload["data"]["message"]["content"], "legacy");
    ws.send(json!({"id": "2", "type": "stop"})).await;
    // Errors of an operation arrive as data with errors.
    ws.subscribe("3", "subscription { nope }", json!({})).await;
    let (id, payload) = ws.next_payload().await;
    assert_eq!(id, "3");
    assert_eq!(payload["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    ws.send(json!({"type": "connection_terminate"})).await;
    ws.closed().await;
    app.shutdown().await;
}

async fn raw_ka(app: &TestApp, token: &str) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", LEGACY.parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures::SinkExt;
    stream
        .send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "connection_init", "payload": {"token": token}}).to_string(),
        ))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = stream.next().await {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            kinds.push(v["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds, vec!["connection_ack", "ka"]);
}

async fn jwt_rules_over_websocket(app: TestApp) {
    let token = app.token("alice");
    raw_ka(&app, &token).await;
    let me = "{ me { id } }";
    // The header on the upgrade, any scheme casing.
    for scheme in ["Bearer", "bearer"] {
        for protocol in [MODERN, LEGACY] {
            let mut ws =
                Ws::connect(&app.ws_url, protocol, Some(&format!("{scheme} {token}"))).await;
            ws.send(json!({"type": "connection_init"})).await;
            assert_eq!(
                ws.recv().await["type"],
                "connection_ack",
                "{scheme} {protocol}"
            );
            ws.subscribe("1", me, json!({})).await;
            assert_eq!(ws.next_payload().await.1["data"]["me"]["id"], "alice");
        }
    }
    // The init payload: every accepted spelling.
    for payload in [
        json!({"authorization": format!("Bearer {token}")}),
        json!({"Authorization": format!("bearer {token}")}),
        json!({"token": token}),
    ] {
        let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
        ws.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(ws.recv().await["type"], "connection_ack", "{payload}");
    }
    // Every bad token is refused: 4403 (graphql-transport-ws), and
    // connection_error (legacy); in the header or the payload.
    for (why, bad) in bad_tokens("alice") {
        let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
        ws.send(json!({"type": "connection_init", "payload": {"token": bad}}))
            .await;
        assert_eq!(ws.closed().await.0, 4403, "{why}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, Some(&format!("Bearer {bad}"))).await;
        ws.send(json!({"type": "connection_init"})).await;
        assert_eq!(ws.closed().await.0, 4403, "{why} in the header");
        let mut ws = Ws::connect(&app.ws_url, LEGACY, None).await;
        ws.send(json!({"type": "connection_init", "payload": {"token": bad}}))
            .await;
        assert_eq!(ws.recv().await["type"], "connection_error", "{why}");
    }
    // No token at all.
    let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.closed().await.0, 4403);
    app.shutdown().await;
}

async fn token_expiry_closes_with_4401(app: TestApp) {
    app.channel_with("general", &["alice"]).await;
    for protocol in [MODERN, LEGACY] {
        let short = token_with(json!({"sub": "alice", "nbf": now(), "exp": now() + 2}));
        let mut ws = Ws::open(&app.ws_url, protocol, &short).await;
        ws.subscribe("1", "subscription { events { seq } }", json!({}))
            .await;
        let started = std::time::Instant::now();
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4401, "{protocol}: {reason}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    app.shutdown().await;
}

async fn membership_and_subscription_limits(app: TestApp) {
    let channel = app.channel_with("general", &["alice", "bob"]).await;
    let c = channel.to_string();
    // A non-member may not subscribe, to a channel nor with a resume point.
    let mut mallory = Ws::open(&app.ws_url, MODERN, &app.token("mallory")).await;
    mallory.subscribe("1", EVENTS, json!({"c": c})).await;
    let error = mallory.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["payload"][0]["extensions"]["code"], "FORBIDDEN");
    mallory
        .subscribe(
            "2",
            "subscription($c: ID!) { events(resume: [{channel: $c, afterSeq: 0}]) { seq } }",
            json!({"c": c}),
        )
        .await;
    let error = mallory.recv().await;
    assert_eq!(error["payload"][0]["extensions"]["code"], "FORBIDDEN");
    // mallory's all-channels stream sees nothing of the channel.
    mallory
        .subscribe("3", "subscription { message { content } }", json!({}))
        .await;

    // Removal ends bob's single-channel subscription with FORBIDDEN.
    let mut bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    bob.subscribe("e", EVENTS, json!({"c": c})).await;
    let mut bob_legacy = Ws::open(&app.ws_url, LEGACY, &app.token("bob")).await;
    bob_legacy.subscribe("e", EVENTS, json!({"c": c})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.service
        .admin_remove_member(clacks_core::ChannelId(channel), "bob".into())
        .await
        .unwrap();
    let (_, left) = bob.next_payload().await;
    assert_eq!(left["data"]["events"]["__typename"], "MemberLeft");
    let (_, forbidden) = bob.next_payload().await;
    assert_eq!(
        forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{forbidden}"
    );
    assert_eq!(bob.recv().await, json!({"id": "e", "type": "complete"}));
    let (_, _left) = bob_legacy.next_payload().await;
    let (_, forbidden) = bob_legacy.next_payload().await;
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(bob_legacy.recv().await["type"], "complete");
    let r = app
        .graphql(
            Some(&app.token("alice")),
            SEND,
            json!({"c": c, "t": "after bob left"}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    bob.send(json!({"type": "ping"})).await;
    assert_eq!(bob.recv().await["type"], "pong", "bob gets nothing more");
    mallory.send(json!({"type": "ping"})).await;
    assert_eq!(mallory.recv().await["type"], "pong", "mallory gets nothing");

    // Deleting the channel completes its subscriptions after the event.
    let mut alice = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    alice
        .subscribe(
            "d",
            "subscription($c: ID) { events(channel: $c) { __typename seq } }",
            json!({"c": c}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.service
        .admin_delete_channel(clacks_core::ChannelId(channel))
        .await
        .unwrap();
    let (_, deleted) = alice.next_payload().await;
    assert_eq!(deleted["data"]["events"]["__typename"], "ChannelDeleted");
    assert_eq!(alice.recv().await, json!({"id": "d", "type": "complete"}));
    let backend = app.backend;
    app.shutdown().await;

    // At most N operations per connection.
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.max_subscriptions_per_connection = 2;
    })
    .await
    else {
        return;
    };
    app.channel_with("general", &["alice"]).await;
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    for id in ["a", "b", "c"] {
        ws.subscribe(id, "subscription { message { seq } }", json!({}))
            .await;
    }
    let error = ws.recv().await;
    assert_eq!(error["id"], "c");
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    app.shutdown().await;
}

async fn forced_disconnect_and_shutdown(app: TestApp) {
    app.channel_with("general", &["alice"]).await;
    let mut modern = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    let mut legacy = Ws::open(&app.ws_url, LEGACY, &app.token("alice")).await;
    let mut other = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    let closed = app
        .service
        .admin_disconnect_user("alice".into())
        .await
        .unwrap();
    assert_eq!(closed, 2);
    assert_eq!(expect_close(&mut modern, 4001).await, "disconnected");
    expect_close(&mut legacy, 4001).await;
    other.send(json!({"type": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
    app.shutdown().await;
    match other.frame().await {
        Frame::Closed(code, _) => assert_eq!(code, 1001),
        Frame::Json(v) => panic!("expected the shutdown close, got {v}"),
    }
}
