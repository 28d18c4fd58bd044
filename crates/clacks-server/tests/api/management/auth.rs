//! The management token: with `CLACKS_MANAGEMENT_TOKEN` set, everything but
//! health, readiness and the OpenAPI documents needs the bearer token.

use clacks_testkit::TestBackend;
use serde_json::json;

use super::{Reply, read};
use crate::helpers::TestApp;

const TOKEN: &str = "s3cret-management-token";

macro_rules! token_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })*
        }
    };
}

token_tests!(token_required_when_configured);

async fn spawn(backend: TestBackend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |config| {
        config.management_token = Some(TOKEN.to_owned());
    })
    .await
}

#[track_caller]
fn unauthorized(reply: &Reply) {
    reply.problem(401);
    let challenge = reply
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge:?}"
    );
}

async fn token_required_when_configured(backend: TestBackend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let protected = [
        ("GET", app.api("/channel")),
        ("GET", app.api("/channel/1")),
        ("DELETE", app.api("/channel/1")),
        ("GET", app.api("/channel/1/users")),
        ("GET", app.api("/channel/1/messages")),
        ("GET", app.api("/jwt/alice")),
        ("GET", app.api("/users/alice/channels")),
        ("POST", app.api("/users/alice/disconnect")),
    ];
    for (method, url) in &protected {
        let method: reqwest::Method = method.parse().expect("method");
        // Missing, wrong, wrong scheme, wrong length: 401 with a challenge.
        unauthorized(&read(app.http.request(method.clone(), url)).await);
        for header in [
            "Bearer wrong".to_owned(),
            format!("Bearer {TOKEN}x"),
            format!("Basic {TOKEN}"),
            TOKEN.to_owned(),
            "Bearer ".to_owned(),
        ] {
            let reply = read(
                app.http
                    .request(method.clone(), url)
                    .header("authorization", header),
            )
            .await;
            unauthorized(&reply);
        }
    }
    // Bodies are not even parsed without the token.
    let reply = read(
        app.http
            .post(app.api("/channel"))
            .json(&json!({"displayName": "x"})),
    )
    .await;
    unauthorized(&reply);
    assert_eq!(
        app.service.admin_all_channels().await.map(|c| c.len()),
        Ok(0)
    );

    // With the token (scheme case-insensitive).
    let created = read(
        app.http
            .post(app.api("/channel"))
            .bearer_auth(TOKEN)
            .json(&json!({"displayName": "x", "initialUsers": ["alice"]})),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let listed = read(
        app.http
            .get(app.api("/channel"))
            .header("authorization", format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json.as_array().map(Vec::len), Some(1));

    // Open: health, readiness and the OpenAPI documents.
    for url in [
        app.api("/healthz"),
        format!("{}/healthz", app.management_url),
        format!("{}/readyz", app.management_url),
        format!("{}/openapi.json", app.management_url),
        format!("{}/openapi.yml", app.management_url),
    ] {
        let reply = read(app.http.get(&url)).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text);
    }
    app.shutdown().await;
}
