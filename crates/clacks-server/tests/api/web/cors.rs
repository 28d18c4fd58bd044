//! CORS on the client port: preflights answered, the configured origins
//! (and loopback ones in dev mode) allowed, `Authorization` allowed,
//! credentials never.

use clacks_testkit::TestBackend;
use serde_json::json;

use super::client;
use crate::helpers::TestApp;
use crate::management::{Reply, read};

async fn preflight(app: &TestApp, origin: &str) -> Reply {
    read(
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/graphql", app.client_url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
    )
    .await
}

fn allowed_origin(reply: &Reply) -> Option<&str> {
    reply
        .headers
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
}

#[track_caller]
fn assert_allowed(reply: &Reply, origin: &str) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(allowed_origin(reply), Some(origin), "{:?}", reply.headers);
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert!(header("access-control-allow-methods").contains("post"));
    let headers = header("access-control-allow-headers");
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(header("access-control-max-age").parse::<u32>().is_ok());
    assert!(
        reply
            .headers
            .get("access-control-allow-credentials")
            .is_none()
    );
}

#[track_caller]
fn assert_refused(reply: &Reply) {
    // Answered (not 405), but without the header a browser needs.
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(allowed_origin(reply), None, "{:?}", reply.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_allows_loopback_origins() {
    let Some(app) = TestApp::spawn(TestBackend::Sqlite).await else {
        return;
    };
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
    ] {
        assert_allowed(&preflight(&app, origin).await, origin);
    }
    for origin in [
        "https://app.example",
        "http://localhost.example:3000",
        "null",
    ] {
        assert_refused(&preflight(&app, origin).await);
    }

    // The request itself carries the header too, and works.
    let token = app.token("alice");
    let reply = read(
        client()
            .post(format!("{}/graphql", app.client_url))
            .header("origin", "http://localhost:5173")
            .bearer_auth(&token)
            .json(&json!({"query": "{ me { id } }"})),
    )
    .await;
    assert_eq!(allowed_origin(&reply), Some("http://localhost:5173"));
    assert_eq!(reply.json["data"]["me"]["id"], "alice");
    let vary: Vec<&str> = reply
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_origins_only_outside_dev_mode() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.management_token = Some("ops-secret".into());
        config.cors_origins = "https://app.example, http://localhost:3000"
            .parse()
            .unwrap();
    })
    .await
    else {
        return;
    };
    for origin in ["https://app.example", "http://localhost:3000"] {
        assert_allowed(&preflight(&app, origin).await, origin);
    }
    for origin in [
        "http://localhost:5173",
        "https://evil.example",
        "http://app.example",
    ] {
        assert_refused(&preflight(&app, origin).await);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_allows_every_origin_without_credentials() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.management_token = Some("ops-secret".into());
        config.cors_origins = "*".parse().unwrap();
    })
    .await
    else {
        return;
    };
    assert_allowed(&preflight(&app, "https://anyone.example").await, "*");
    app.shutdown().await;
}
