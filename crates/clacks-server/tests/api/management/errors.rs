//! Every error status of the management API, each as problem+json, and no
//! input answering 500.

use reqwest::Method;
use serde_json::json;

use super::{Reply, call, create_channel, delete, get, patch, post, put, read};
use crate::backend_tests;
use crate::helpers::TestApp;

backend_tests!(
    malformed_requests_are_400,
    wrong_content_type_is_415,
    unknown_things_are_404,
    conflict_is_409,
    body_over_limit_is_413,
    validation_failures_are_422,
    unknown_routes_and_methods,
    hostile_input_never_500
);

async fn raw(app: &TestApp, method: Method, path: &str, content_type: &str, body: &str) -> Reply {
    read(
        app.http
            .request(method, app.api(path))
            .header("content-type", content_type)
            .body(body.to_owned()),
    )
    .await
}

async fn malformed_requests_are_400(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    for (method, path) in [
        (Method::POST, "/channel".to_owned()),
        (Method::PATCH, format!("/channel/{id}")),
        (Method::PUT, format!("/channel/{id}/users")),
        (Method::POST, format!("/channel/{id}/messages")),
        (Method::POST, "/jwt".to_owned()),
    ] {
        raw(
            &app,
            method.clone(),
            &path,
            "application/json",
            r#"{"displayName": "#,
        )
        .await
        .problem(400);
        raw(&app, method, &path, "application/json", "")
            .await
            .problem(400);
    }
    // Path and query parameters that do not parse.
    get(&app, "/channel/abc").await.problem(400);
    get(&app, "/channel/1.5/users").await.problem(400);
    get(&app, "/channel/99999999999999999999999")
        .await
        .problem(400);
    delete(&app, &format!("/channel/{id}/messages/xyz"))
        .await
        .problem(400);
    get(&app, "/channel?limit=many").await.problem(400);
    get(&app, "/channel?limit=-1").await.problem(400);
    get(&app, &format!("/channel/{id}/messages?before=soon"))
        .await
        .problem(400);
    get(&app, "/jwt/alice?ttl=forever").await.problem(400);
    app.shutdown().await;
}

async fn wrong_content_type_is_415(app: TestApp) {
    let id = create_channel(&app, "c", &[]).await;
    let body = r#"{"displayName": "x", "uid": "u", "content": "c", "userId": "u"}"#;
    for (method, path) in [
        (Method::POST, "/channel".to_owned()),
        (Method::PATCH, format!("/channel/{id}")),
        (Method::PUT, format!("/channel/{id}/users")),
        (Method::POST, format!("/channel/{id}/messages")),
        (Method::POST, "/jwt".to_owned()),
    ] {
        raw(&app, method.clone(), &path, "text/plain", body)
            .await
            .problem(415);
        // No content type at all.
        read(app.http.request(method, app.api(&path)).body(body))
            .await
            .problem(415);
    }
    app.shutdown().await;
}

async fn unknown_things_are_404(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    let missing = id + 1000;
    get(&app, &format!("/channel/{missing}")).await.problem(404);
    // Ids that cannot exist are simply not found.
    get(&app, "/channel/0").await.problem(404);
    get(&app, "/channel/-3/users").await.problem(404);
    patch(
        &app,
        &format!("/channel/{missing}"),
        json!({"displayName": "x"}),
    )
    .await
    .problem(404);
    delete(&app, &format!("/channel/{missing}"))
        .await
        .problem(404);
    get(&app, &format!("/channel/{missing}/users"))
        .await
        .problem(404);
    put(
        &app,
        &format!("/channel/{missing}/users"),
        json!({"uid": "bob"}),
    )
    .await
    .problem(404);
    delete(&app, &format!("/channel/{missing}/users/alice"))
        .await
        .problem(404);
    get(&app, &format!("/channel/{missing}/messages"))
        .await
        .problem(404);
    post(
        &app,
        &format!("/channel/{missing}/messages"),
        json!({"content": "hi"}),
    )
    .await
    .problem(404);
    post(
        &app,
        &format!("/channel/{missing}/messages"),
        json!({"content": "hi", "senderId": "alice"}),
    )
    .await
    .problem(404);
    // A user who is not a member.
    delete(&app, &format!("/channel/{id}/users/nobody"))
        .await
        .problem(404);
    // A message that does not exist, or belongs to another channel.
    delete(&app, &format!("/channel/{id}/messages/424242"))
        .await
        .problem(404);
    let other = create_channel(&app, "other", &[]).await;
    let message = post(
        &app,
        &format!("/channel/{other}/messages"),
        json!({"content": "x"}),
    )
    .await;
    let message_id = message.ok(201)["id"].as_i64().expect("id");
    delete(&app, &format!("/channel/{id}/messages/{message_id}"))
        .await
        .problem(404);
    app.shutdown().await;
}

async fn conflict_is_409(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    // Posting as someone who is not a member of the channel.
    let reply = post(
        &app,
        &format!("/channel/{id}/messages"),
        json!({"content": "hi", "senderId": "mallory"}),
    )
    .await;
    let problem = reply.problem(409);
    assert_eq!(problem["type"], "urn:clacks:problem:conflict");
    app.shutdown().await;
}

async fn body_over_limit_is_413(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    let huge = "x".repeat(2 * 1024 * 1024);
    for (method, path, body) in [
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": huge}),
        ),
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": huge}),
        ),
        (
            Method::PUT,
            format!("/channel/{id}/users"),
            json!({"uid": huge}),
        ),
    ] {
        call(&app, method, &path, Some(body)).await.problem(413);
    }
    app.shutdown().await;
}

async fn validation_failures_are_422(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    let long_uid = "u".repeat(201);
    let too_many: Vec<String> = (0..1001).map(|n| format!("user{n}")).collect();
    let cases = [
        // Display names: empty, blank, over 150 characters, wrong type.
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": ""}),
        ),
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": "   "}),
        ),
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": "x".repeat(151)}),
        ),
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": 5}),
        ),
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"initialUsers": []}),
        ),
        // User ids: over 200 characters; too many initial users.
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": "x", "initialUsers": [long_uid]}),
        ),
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": "x", "initialUsers": too_many}),
        ),
        (
            Method::PUT,
            format!("/channel/{id}/users"),
            json!({"uid": long_uid}),
        ),
        (
            Method::PUT,
            format!("/channel/{id}/users"),
            json!({"uid": ""}),
        ),
        (Method::PUT, format!("/channel/{id}/users"), json!({})),
        // Metadata must be an object.
        (
            Method::POST,
            "/channel".to_owned(),
            json!({"displayName": "x", "metadata": [1]}),
        ),
        // A body that is not an object, though serde would read a
        // struct's fields from an array in order.
        (Method::PATCH, format!("/channel/{id}"), json!([null, null])),
        (Method::PATCH, format!("/channel/{id}"), json!(["renamed"])),
        (Method::POST, "/channel".to_owned(), json!(["x", []])),
        (
            Method::PUT,
            format!("/channel/{id}/users"),
            json!(["carol"]),
        ),
        (Method::POST, "/jwt".to_owned(), json!("alice")),
        // PATCH: blank name, over-long name.
        (
            Method::PATCH,
            format!("/channel/{id}"),
            json!({"displayName": ""}),
        ),
        (
            Method::PATCH,
            format!("/channel/{id}"),
            json!({"displayName": "x".repeat(151)}),
        ),
        (
            Method::PATCH,
            format!("/channel/{id}"),
            json!({"metadata": "text"}),
        ),
        // Messages: over the size limit (16 KiB), empty, over-long ids.
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": "x".repeat(16 * 1024 + 1)}),
        ),
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": ""}),
        ),
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": "  \n"}),
        ),
        (Method::POST, format!("/channel/{id}/messages"), json!({})),
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": "x", "senderId": long_uid}),
        ),
        (
            Method::POST,
            format!("/channel/{id}/messages"),
            json!({"content": "x", "clientMessageId": "c".repeat(101)}),
        ),
        // Tokens: bad ttl, reserved claims, missing user.
        (
            Method::POST,
            "/jwt".to_owned(),
            json!({"userId": "a", "ttl": 0}),
        ),
        (
            Method::POST,
            "/jwt".to_owned(),
            json!({"userId": "a", "ttl": 60.5}),
        ),
        (
            Method::POST,
            "/jwt".to_owned(),
            json!({"userId": "a", "ttl": -60}),
        ),
        (
            Method::POST,
            "/jwt".to_owned(),
            json!({"userId": "a", "ttl": 10_u64.pow(12)}),
        ),
        (
            Method::POST,
            "/jwt".to_owned(),
            json!({"userId": "a", "claims": {"sub": "root"}}),
        ),
        (Method::POST, "/jwt".to_owned(), json!({"userId": long_uid})),
        (Method::POST, "/jwt".to_owned(), json!({"name": "no user"})),
    ];
    for (method, path, body) in cases {
        let reply = call(&app, method.clone(), &path, Some(body.clone())).await;
        assert_eq!(reply.status, 422, "{method} {path} {body}: {}", reply.text);
        reply.problem(422);
    }
    // Query and path validation.
    get(&app, "/jwt/alice?ttl=0").await.problem(422);
    get(&app, "/jwt/alice?claims=%5B1%5D").await.problem(422);
    get(&app, "/jwt/alice?claims=%7B%22exp%22%3A1%7D")
        .await
        .problem(422);
    get(&app, &format!("/jwt/{long_uid}")).await.problem(422);
    get(&app, &format!("/users/{long_uid}/channels"))
        .await
        .problem(422);
    get(&app, "/users/%20/channels").await.problem(422);
    post(&app, &format!("/users/{long_uid}/disconnect"), json!({}))
        .await
        .problem(422);
    delete(&app, &format!("/channel/{id}/users/{long_uid}"))
        .await
        .problem(422);
    // Nothing was created by the failed requests.
    assert_eq!(
        get(&app, "/channel").await.json.as_array().map(Vec::len),
        Some(1)
    );
    app.shutdown().await;
}

async fn unknown_routes_and_methods(app: TestApp) {
    let id = create_channel(&app, "c", &[]).await;
    for path in ["/nope", "/channel/1/nope", "/channels"] {
        get(&app, path).await.problem(404);
    }
    let outside = read(app.http.get(format!("{}/nope", app.management_url))).await;
    outside.problem(404);
    let reply = call(&app, Method::POST, &format!("/channel/{id}"), None).await;
    reply.problem(405);
    assert!(reply.headers.get("allow").is_some());
    call(&app, Method::DELETE, "/channel", None)
        .await
        .problem(405);
    call(&app, Method::PUT, "/jwt/alice", None)
        .await
        .problem(405);
    call(&app, Method::GET, "/users/a/disconnect", None)
        .await
        .problem(405);
    app.shutdown().await;
}

/// Inputs that have crashed servers before: control characters, NUL,
/// 4-byte UTF-8, extreme numbers. Each gets a 2xx or a 4xx, never a 5xx.
async fn hostile_input_never_500(app: TestApp) {
    let id = create_channel(&app, "c", &["alice"]).await;
    let wide = "𝕏".repeat(150);
    let strings = [
        "\u{0}",
        "a\u{0}b",
        "😀 emoji",
        wide.as_str(),
        "' OR 1=1 --",
        "trailing ",
        "\u{202e}rtl",
        "%00",
    ];
    for s in strings {
        for (method, path, body) in [
            (
                Method::POST,
                "/channel".to_owned(),
                json!({"displayName": s, "initialUsers": [s]}),
            ),
            (
                Method::POST,
                "/channel".to_owned(),
                json!({"displayName": "m", "metadata": {s: s}}),
            ),
            (
                Method::PATCH,
                format!("/channel/{id}"),
                json!({"displayName": s}),
            ),
            (
                Method::PUT,
                format!("/channel/{id}/users"),
                json!({"uid": s, "role": s}),
            ),
            (
                Method::POST,
                format!("/channel/{id}/messages"),
                json!({"content": s, "clientMessageId": s}),
            ),
            (
                Method::POST,
                "/jwt".to_owned(),
                json!({"userId": s, "name": s, "claims": {s: s}}),
            ),
        ] {
            let reply = call(&app, method.clone(), &path, Some(body.clone())).await;
            assert!(
                reply.status < 500,
                "{method} {path} {body}: {} {}",
                reply.status,
                reply.text
            );
        }
        let encoded: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
        for path in [
            format!("/users/{encoded}/channels"),
            format!("/jwt/{encoded}"),
            format!("/channel/{id}/users/{encoded}"),
        ] {
            let reply = get(&app, &path).await;
            assert!(
                reply.status < 500,
                "GET {path}: {} {}",
                reply.status,
                reply.text
            );
        }
    }
    for n in [i64::MAX, i64::MIN, 0, -1] {
        for path in [
            format!("/channel/{n}"),
            format!("/channel/{n}/users"),
            format!("/channel/{n}/messages?before={n}&limit=4294967295"),
            format!("/channel/{id}/messages?after={n}"),
            format!("/channel?after={n}&limit=0"),
        ] {
            let reply = get(&app, &path).await;
            assert!(
                reply.status < 500,
                "GET {path}: {} {}",
                reply.status,
                reply.text
            );
        }
        let reply = delete(&app, &format!("/channel/{id}/messages/{n}")).await;
        assert!(reply.status < 500, "{}", reply.text);
    }
    app.shutdown().await;
}
