//! The demo's dev-mode endpoints: a token for anyone and joining a channel
//! by name, only in dev mode and only for requests from this machine.

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::client;
use crate::backend_tests;
use crate::helpers::TestApp;
use crate::management::{Reply, read};

backend_tests!(joining_by_name_creates_once_then_adds);

async fn login(app: &TestApp, body: Value) -> Reply {
    read(
        client()
            .post(format!("{}/demo/login", app.client_url))
            .json(&body),
    )
    .await
}

async fn join(app: &TestApp, token: Option<&str>, channel: &str) -> Reply {
    let mut request = client()
        .post(format!("{}/demo/join", app.client_url))
        .json(&json!({ "channel": channel }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request).await
}

#[track_caller]
fn refused(reply: &Reply, status: u16, says: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let error = reply.json["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{error:?} should say {says:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_login_mints_a_working_token() {
    let Some(app) = TestApp::spawn(TestBackend::Sqlite).await else {
        return;
    };
    let reply = login(&app, json!({"userId": " alice ", "name": "Alice"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(reply.json["userId"], "alice");
    let expires_at = reply.json["expiresAt"].as_i64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        expires_at > now_ms + 3_600_000,
        "milliseconds, the default TTL ahead"
    );
    let token = reply.json["token"].as_str().unwrap();
    let me = app
        .graphql(Some(token), "{ me { id name } }", json!({}))
        .await;
    assert_eq!(me["data"]["me"], json!({"id": "alice", "name": "Alice"}));

    refused(&login(&app, json!({"userId": ""})).await, 422, "user id");
    refused(
        &login(&app, json!({"userId": "a", "role": "admin"})).await,
        422,
        "unknown field",
    );
    let not_json = read(
        client()
            .post(format!("{}/demo/login", app.client_url))
            .header("content-type", "text/plain")
            .body(r#"{"userId": "alice"}"#),
    )
    .await;
    assert_eq!(
        not_json.status, 415,
        "a page cannot post it without a preflight"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_endpoints_answer_only_this_machine() {
    let Some(app) = TestApp::spawn(TestBackend::Sqlite).await else {
        return;
    };
    let alice = app.token("alice");
    let port = app.client_url.rsplit(':').next().unwrap().to_owned();
    for (header, value, allowed) in [
        ("host", format!("localhost:{port}"), true),
        ("host", format!("[::1]:{port}"), true),
        // DNS rebinding: a public name that resolves to 127.0.0.1.
        ("host", format!("rebound.example:{port}"), false),
        ("origin", "http://localhost:5173".to_owned(), true),
        // A public page calling this machine's loopback from a browser.
        ("origin", "https://evil.example".to_owned(), false),
        ("origin", "null".to_owned(), false),
    ] {
        for path in ["/demo/login", "/demo/join"] {
            let reply = read(
                client()
                    .post(format!("{}{path}", app.client_url))
                    .header(header, &value)
                    .bearer_auth(&alice)
                    .json(&json!({"userId": "mallory", "channel": "general"})),
            )
            .await;
            if allowed {
                // Past the gate: the body is judged (login takes no
                // `channel`, join no `userId`).
                assert_eq!(reply.status, 422, "{path} with {header}: {value}");
            } else {
                assert_eq!(reply.status, 404, "{path} with {header}: {value}");
            }
        }
    }
    app.shutdown().await;

    // Not dev mode: the management API needs a token.
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.management_token = Some("ops-secret".into());
    })
    .await
    else {
        return;
    };
    assert_eq!(login(&app, json!({"userId": "alice"})).await.status, 404);
    assert_eq!(
        join(&app, Some(&app.token("alice")), "general")
            .await
            .status,
        404
    );
    // The page itself is still there, for a pasted token.
    let page = read(client().get(format!("{}/demo", app.client_url))).await;
    assert_eq!(page.status, 200);
    app.shutdown().await;
}

async fn joining_by_name_creates_once_then_adds(app: TestApp) {
    let (alice, bob, carol) = (app.token("alice"), app.token("bob"), app.token("carol"));
    let first = join(&app, Some(&alice), " general ").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["displayName"], "general");
    assert_eq!(first.json["created"], true);
    let id = first.json["id"].as_str().unwrap().to_owned();

    let second = join(&app, Some(&bob), "general").await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json["id"], id.as_str());
    assert_eq!(second.json["created"], false);
    // Joining twice is harmless.
    assert_eq!(
        join(&app, Some(&bob), "general").await.json["id"],
        id.as_str()
    );

    let channels = app
        .graphql(
            Some(&bob),
            "{ channels { id displayName members { userId } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        channels["data"]["channels"],
        json!([{"id": id, "displayName": "general",
                "members": [{"userId": "alice"}, {"userId": "bob"}]}])
    );

    // Two people joining a new name at once end up together.
    let (a, c) = tokio::join!(
        join(&app, Some(&alice), "lobby"),
        join(&app, Some(&carol), "lobby")
    );
    assert_eq!(a.json["id"], c.json["id"], "{} / {}", a.text, c.text);
    assert_ne!(a.json["created"], c.json["created"]);

    refused(&join(&app, None, "general").await, 401, "Bearer");
    refused(
        &join(&app, Some("not-a-token"), "general").await,
        401,
        "token",
    );
    refused(&join(&app, Some(&alice), "  ").await, 422, "display name");
    app.shutdown().await;
}
