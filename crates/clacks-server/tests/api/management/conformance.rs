//! The original Clacks management API, request for request (SPEC section 4
//! table): paths, methods, JSON field names, numeric ids and statuses.
//! Existing integrations depend on these exact shapes: if this test fails,
//! a change broke compatibility.

use serde_json::{Value, json};

use super::{delete, get, post, put};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(original_api_shapes, original_api_not_found);

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

async fn original_api_shapes(app: TestApp) {
    // GET /healthz: 200 when serving.
    assert_eq!(get(&app, "/healthz").await.status, 200);

    // POST /channel {"displayName", "initialUsers"} -> 200 {"id": n}.
    let created = post(
        &app,
        "/channel",
        json!({"displayName": "General", "initialUsers": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(keys(&created.json), ["id"]);
    let id = created.json["id"].as_i64().expect("numeric channel id");
    assert!(id > 0);
    // initialUsers may be omitted or empty.
    let other = post(&app, "/channel", json!({"displayName": "Empty"})).await;
    assert_eq!(other.status, 200, "{}", other.text);
    let other_id = other.json["id"].as_i64().expect("id");
    let empty = post(
        &app,
        "/channel",
        json!({"displayName": "Empty too", "initialUsers": []}),
    )
    .await;
    assert_eq!(empty.status, 200, "{}", empty.text);

    // GET /channel -> [{"id": n, "displayName": s}] (a bare array).
    let list = get(&app, "/channel").await;
    assert_eq!(list.status, 200);
    let items = list.json.as_array().expect("a bare array");
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(keys(item), ["displayName", "id"]);
        assert!(item["id"].is_i64());
        assert!(item["displayName"].is_string());
    }
    assert!(items.contains(&json!({"id": id, "displayName": "General"})));

    // GET /channel/{channelId} -> {"displayName": s, "users": [uid]}.
    let channel = get(&app, &format!("/channel/{id}")).await;
    assert_eq!(channel.status, 200);
    assert_eq!(keys(&channel.json), ["displayName", "users"]);
    assert_eq!(channel.json["displayName"], "General");
    let mut users: Vec<&str> = channel.json["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u.as_str().expect("uid string"))
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);

    // PUT /channel/{channelId}/users {"uid": s} adds a member, idempotently.
    for _ in 0..2 {
        let added = put(
            &app,
            &format!("/channel/{id}/users"),
            json!({"uid": "carol"}),
        )
        .await;
        assert_eq!(added.status, 200, "{}", added.text);
    }

    // GET /channel/{channelId}/users -> [uid].
    let members = get(&app, &format!("/channel/{id}/users")).await;
    assert_eq!(members.status, 200);
    let mut members: Vec<&str> = members
        .json
        .as_array()
        .expect("a bare array")
        .iter()
        .map(|u| u.as_str().expect("uid string"))
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["alice", "bob", "carol"]);

    // DELETE /channel/{channelId}/users/{uid} removes a member.
    let removed = delete(&app, &format!("/channel/{id}/users/bob")).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    let members = get(&app, &format!("/channel/{id}/users")).await;
    assert_eq!(members.json, json!(["alice", "carol"]));

    // GET /jwt/{uid} -> a JSON string holding a valid token for that user.
    let jwt = get(&app, "/jwt/alice").await;
    assert_eq!(jwt.status, 200);
    assert_eq!(jwt.content_type(), "application/json");
    let token = jwt.json.as_str().expect("a JSON string");
    let caller = app.service.authenticate(token).expect("a valid token");
    assert_eq!(caller.user_id.as_str(), "alice");
    for claim in ["sub", "exp", "nbf", "iat"] {
        assert!(
            caller.claims().contains_key(claim),
            "{claim} in {:?}",
            caller.claims()
        );
    }
    let lifetime = caller.expires_at - caller.claims()["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 86_400, "default lifetime: one day");

    // DELETE /channel/{channelId} deletes the channel.
    let deleted = delete(&app, &format!("/channel/{id}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(get(&app, &format!("/channel/{id}")).await.status, 404);
    let list = get(&app, "/channel").await;
    let ids: Vec<i64> = list
        .json
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    assert!(ids.contains(&other_id) && !ids.contains(&id));
    app.shutdown().await;
}

async fn original_api_not_found(app: TestApp) {
    // The table names 404 for GET and PUT .../users on a missing channel.
    assert_eq!(get(&app, "/channel/999999/users").await.status, 404);
    assert_eq!(
        put(&app, "/channel/999999/users", json!({"uid": "alice"}))
            .await
            .status,
        404
    );
    assert_eq!(get(&app, "/channel/999999").await.status, 404);
    assert_eq!(delete(&app, "/channel/999999").await.status, 404);
    assert_eq!(
        delete(&app, "/channel/999999/users/alice").await.status,
        404
    );
    app.shutdown().await;
}
