//! Every management endpoint over real HTTP, happy paths and behaviour.

use serde_json::{Value, json};

use super::{create_channel, delete, get, patch, post, put};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    integration_session,
    channel_paging,
    message_history_paging,
    message_posting,
    user_channels_with_unread_counts,
    token_minting,
    disconnect_closes_live_connections
);

/// The "done when" session of issue 3: create a channel with two users,
/// rename it, add and remove a member, post a message, read it back, mint
/// a token for a member, delete the channel.
async fn integration_session(app: TestApp) {
    let id = create_channel(&app, "Project X", &["alice", "bob"]).await;

    let renamed = patch(
        &app,
        &format!("/channel/{id}"),
        json!({"displayName": "Project Y", "metadata": {"topic": "launch"}}),
    )
    .await;
    let channel = renamed.ok(200);
    assert_eq!(channel["id"], id);
    assert_eq!(channel["displayName"], "Project Y");
    assert_eq!(channel["metadata"], json!({"topic": "launch"}));
    assert!(channel["createdAt"].as_i64().expect("createdAt") > 1_600_000_000_000);
    assert!(channel["updatedAt"].as_i64() >= channel["createdAt"].as_i64());
    assert!(channel["lastSeq"].is_i64());
    assert_eq!(
        get(&app, &format!("/channel/{id}")).await.json["displayName"],
        "Project Y"
    );
    // Metadata alone, then removed with null; the name stays.
    let cleared = patch(&app, &format!("/channel/{id}"), json!({"metadata": null})).await;
    assert_eq!(cleared.ok(200)["metadata"], Value::Null);
    assert_eq!(cleared.json["displayName"], "Project Y");
    // An empty patch changes nothing: the channel as it is.
    let unchanged = patch(&app, &format!("/channel/{id}"), json!({})).await;
    assert_eq!(unchanged.ok(200), cleared.ok(200));

    put(
        &app,
        &format!("/channel/{id}/users"),
        json!({"uid": "carol", "role": "admin"}),
    )
    .await
    .ok(200);
    delete(&app, &format!("/channel/{id}/users/bob"))
        .await
        .ok(200);
    assert_eq!(
        get(&app, &format!("/channel/{id}/users")).await.json,
        json!(["alice", "carol"])
    );

    let posted = post(
        &app,
        &format!("/channel/{id}/messages"),
        json!({"content": "hello", "senderId": "alice"}),
    )
    .await;
    let message = posted.ok(201).clone();
    assert_eq!(message["content"], "hello");
    assert_eq!(message["senderId"], "alice");
    assert_eq!(message["channelId"], id);

    let history = get(&app, &format!("/channel/{id}/messages")).await;
    let items = history.ok(200)["items"].as_array().expect("items").clone();
    assert_eq!(items, vec![message]);

    let token = get(&app, "/jwt/carol").await;
    let caller = app
        .service
        .authenticate(token.ok(200).as_str().expect("string"))
        .expect("valid token");
    assert_eq!(caller.user_id.as_str(), "carol");

    delete(&app, &format!("/channel/{id}")).await.ok(200);
    get(&app, &format!("/channel/{id}")).await.problem(404);
    get(&app, &format!("/channel/{id}/messages"))
        .await
        .problem(404);
    app.shutdown().await;
}

async fn channel_paging(app: TestApp) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(create_channel(&app, &format!("c{n}"), &[]).await);
    }
    // Without a paging parameter: the original bare array.
    assert_eq!(
        get(&app, "/channel").await.ok(200).as_array().map(Vec::len),
        Some(5)
    );

    let mut seen = Vec::new();
    let mut path = "/channel?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = get(&app, &path).await;
        let body = page.ok(200);
        let items = body["items"].as_array().expect("a page object");
        assert!(items.len() <= 2);
        for item in items {
            assert!(
                item["displayName"].is_string() && item["lastSeq"].is_i64(),
                "{item}"
            );
            seen.push(item["id"].as_i64().expect("id"));
        }
        pages += 1;
        match body["nextAfter"].as_i64() {
            Some(after) => path = format!("/channel?limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every channel once, in id order");
    assert_eq!(pages, 3);
    // `after` alone pages with the default size.
    let rest = get(&app, &format!("/channel?after={}", ids[2])).await;
    assert_eq!(rest.ok(200)["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(rest.json["nextAfter"], Value::Null);
    app.shutdown().await;
}

async fn message_history_paging(app: TestApp) {
    let id = create_channel(&app, "history", &["alice"]).await;
    let mut seqs = Vec::new();
    for n in 0..5 {
        let reply = post(
            &app,
            &format!("/channel/{id}/messages"),
            json!({"content": format!("m{n}"), "senderId": "alice"}),
        )
        .await;
        seqs.push(reply.ok(201)["seq"].as_i64().expect("seq"));
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free: {seqs:?}"
    );
    let content = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["content"].as_str().expect("content").to_owned())
            .collect()
    };

    // Default: newest first.
    let newest = get(&app, &format!("/channel/{id}/messages?limit=2")).await;
    assert_eq!(content(newest.ok(200)), ["m4", "m3"]);
    let before = newest.json["nextBefore"].as_i64().expect("nextBefore");
    assert_eq!(newest.json["nextAfter"], Value::Null);
    let older = get(
        &app,
        &format!("/channel/{id}/messages?limit=2&before={before}"),
    )
    .await;
    assert_eq!(content(older.ok(200)), ["m2", "m1"]);

    // after: oldest first.
    let first = get(&app, &format!("/channel/{id}/messages?after=0&limit=3")).await;
    assert_eq!(content(first.ok(200)), ["m0", "m1", "m2"]);
    let after = first.json["nextAfter"].as_i64().expect("nextAfter");
    let rest = get(
        &app,
        &format!("/channel/{id}/messages?after={after}&limit=3"),
    )
    .await;
    assert_eq!(content(rest.ok(200)), ["m3", "m4"]);
    assert_eq!(rest.json["nextAfter"], Value::Null);

    // after and before: the window between them, oldest first, paged
    // with nextAfter.
    let (low, high) = (seqs[0], seqs[4]);
    let window = format!("/channel/{id}/messages?after={low}&before={high}&limit=2");
    let window = get(&app, &window).await;
    assert_eq!(content(window.ok(200)), ["m1", "m2"]);
    let after = window.json["nextAfter"].as_i64().expect("nextAfter");
    let next = format!("/channel/{id}/messages?after={after}&before={high}&limit=2");
    let next = get(&app, &next).await;
    assert_eq!(content(next.ok(200)), ["m3"]);
    assert_eq!(next.json["nextAfter"], Value::Null);
    let empty = format!("/channel/{id}/messages?after={high}&before={low}");
    assert_eq!(
        content(get(&app, &empty).await.ok(200)),
        Vec::<String>::new()
    );

    // Deleting leaves a tombstone; the seqs stay gap-free.
    let victim = first.json["items"][1].clone();
    let path = format!("/channel/{id}/messages/{}", victim["id"]);
    let tombstone = delete(&app, &path).await;
    let body = tombstone.ok(200).clone();
    assert_eq!(body["id"], victim["id"]);
    assert_eq!(body["seq"], victim["seq"]);
    assert_eq!(body["content"], "");
    assert!(body["deletedAt"].is_i64());
    // Deleting again answers the same tombstone.
    assert_eq!(delete(&app, &path).await.ok(200), &body);
    let all = get(&app, &format!("/channel/{id}/messages?after=0")).await;
    let items = all.ok(200)["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert_eq!(items[1]["deletedAt"], body["deletedAt"]);
    app.shutdown().await;
}

async fn message_posting(app: TestApp) {
    let id = create_channel(&app, "posting", &["alice"]).await;
    let path = format!("/channel/{id}/messages");

    // As the system: senderId null.
    let system = post(&app, &path, json!({"content": "maintenance at noon"})).await;
    let system = system.ok(201);
    assert_eq!(system["senderId"], Value::Null);
    assert_eq!(system["clientMessageId"], Value::Null);
    assert_eq!(system["editedAt"], Value::Null);
    assert_eq!(system["deletedAt"], Value::Null);
    let explicit_null = post(&app, &path, json!({"content": "again", "senderId": null})).await;
    assert_eq!(explicit_null.ok(201)["senderId"], Value::Null);

    // Idempotent retry with a client message id: 201, then 200 with the
    // original.
    let body = json!({"content": "once", "senderId": "alice", "clientMessageId": "c-1"});
    let first = post(&app, &path, body.clone()).await;
    let first = first.ok(201).clone();
    assert_eq!(first["clientMessageId"], "c-1");
    let retry = post(&app, &path, body).await;
    assert_eq!(retry.ok(200), &first);
    let history = get(&app, &format!("{path}?limit=50")).await;
    assert_eq!(history.ok(200)["items"].as_array().map(Vec::len), Some(3));
    app.shutdown().await;
}

async fn user_channels_with_unread_counts(app: TestApp) {
    let a = create_channel(&app, "a", &["alice", "bob"]).await;
    let b = create_channel(&app, "b", &["bob"]).await;
    create_channel(&app, "c", &["carol"]).await;
    for (text, mentions) in [("one", json!([])), ("two", json!(["bob"]))] {
        post(
            &app,
            &format!("/channel/{a}/messages"),
            json!({"content": text, "senderId": "alice", "mentions": mentions}),
        )
        .await
        .ok(201);
    }

    let reply = get(&app, "/users/bob/channels").await;
    let channels = reply.ok(200).as_array().expect("array").clone();
    let ids: Vec<i64> = channels
        .iter()
        .map(|c| c["channel"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, [a, b]);
    let first = &channels[0];
    assert_eq!(first["unreadCount"], 2);
    assert_eq!(first["unreadMentionCount"], 1);
    assert_eq!(first["lastReadSeq"], 0);
    assert_eq!(first["role"], "member");
    assert!(first["joinedAt"].is_i64());
    assert_eq!(first["lastMessage"]["content"], "two");
    assert_eq!(channels[1]["unreadCount"], 0);
    assert_eq!(channels[1]["lastMessage"], Value::Null);

    // Reading moves the watermark, and the counts follow.
    let bob = app.service.authenticate(&app.token("bob")).expect("bob");
    let seq = first["lastMessage"]["seq"].as_i64().expect("seq");
    app.service
        .mark_read(&bob, clacks_core::ChannelId(a), seq)
        .await
        .expect("mark read");
    let after = get(&app, "/users/bob/channels").await;
    assert_eq!(after.ok(200)[0]["unreadCount"], 0);
    assert_eq!(after.json[0]["unreadMentionCount"], 0);
    assert_eq!(after.json[0]["lastReadSeq"], seq);

    // A user Clacks never saw has no channels.
    assert_eq!(
        get(&app, "/users/nobody/channels").await.ok(200),
        &json!([])
    );
    app.shutdown().await;
}

async fn token_minting(app: TestApp) {
    // Query parameters on the original endpoint: still a bare JSON string.
    let claims = r#"{"avatar":"a.png","team":7}"#;
    let reply = app
        .http
        .get(app.api("/jwt/alice"))
        .query(&[("name", "Alice"), ("ttl", "60"), ("claims", claims)])
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 200);
    let token: String = reply.json().await.expect("a JSON string");
    let caller = app.service.authenticate(&token).expect("valid");
    assert_eq!(caller.user_id.as_str(), "alice");
    assert_eq!(caller.name.as_deref(), Some("Alice"));
    assert_eq!(caller.claims()["avatar"], "a.png");
    assert_eq!(caller.claims()["team"], 7);
    assert_eq!(
        caller.expires_at - caller.claims()["iat"].as_i64().expect("iat"),
        60
    );

    // POST /jwt with a JSON body: the token and when it expires (ms).
    let minted = post(
        &app,
        "/jwt",
        json!({"userId": "bob", "name": "Bob", "claims": {"plan": "pro"}, "ttl": 120}),
    )
    .await;
    let body = minted.ok(200);
    let caller = app
        .service
        .authenticate(body["token"].as_str().expect("token"))
        .expect("valid");
    assert_eq!(caller.user_id.as_str(), "bob");
    assert_eq!(caller.name.as_deref(), Some("Bob"));
    assert_eq!(caller.claims()["plan"], "pro");
    assert_eq!(body["expiresAt"].as_i64(), Some(caller.expires_at * 1000));
    // A whole number written with a fraction is the same integer (JSON
    // Schema's `integer`).
    let fraction = post(&app, "/jwt", json!({"userId": "bob", "ttl": 120.0})).await;
    let token = fraction.ok(200)["token"].as_str().expect("token");
    let caller = app.service.authenticate(token).expect("valid");
    assert_eq!(
        caller.expires_at - caller.claims()["iat"].as_i64().expect("iat"),
        120
    );
    // Only the user is required; `uid` is accepted as in PUT .../users.
    let minimal = post(&app, "/jwt", json!({"uid": "carol"})).await;
    let token = minimal.ok(200)["token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.service
            .authenticate(&token)
            .expect("valid")
            .user_id
            .as_str(),
        "carol"
    );
    app.shutdown().await;
}

async fn disconnect_closes_live_connections(app: TestApp) {
    let dave = app.service.authenticate(&app.token("dave")).expect("dave");
    assert_eq!(
        post(&app, "/users/dave/disconnect", json!({}))
            .await
            .ok(200),
        &json!({"closed": 0})
    );
    let mut live = Vec::new();
    for _ in 0..2 {
        let mut connection = app
            .service
            .admit_connection(std::net::Ipv4Addr::LOCALHOST.into())
            .expect("admitted");
        app.service
            .register_connection(&mut connection, &dave)
            .expect("registered");
        live.push(connection);
    }
    // No body is needed.
    let reply = super::read(app.http.post(app.api("/users/dave/disconnect"))).await;
    assert_eq!(reply.ok(200), &json!({"closed": 2}));
    app.shutdown().await;
}
