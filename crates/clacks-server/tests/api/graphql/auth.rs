//! Token rules a configured server adds (a required issuer and audience),
//! and the one way every port reads bearer credentials.

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::client::{MODERN, Ws, now, token_with};
use crate::helpers::TestApp;
use crate::management::{Reply, read};

const ISSUER: &str = "https://app.example";
const AUDIENCE: &str = "clacks";

async fn me(app: &TestApp, authorization: &str) -> Value {
    app.http
        .post(format!("{}/graphql", app.client_url))
        .header("Authorization", authorization)
        .json(&json!({"query": "{ me { id } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// With `CLACKS_JWT_ISSUER` and `CLACKS_JWT_AUDIENCE` set, a token without
/// them, or with them of the wrong type, is refused over HTTP and WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_issuer_and_audience_are_required() {
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.jwt_issuer = Some(ISSUER.into());
        config.jwt_audience = Some(AUDIENCE.into());
    })
    .await
    else {
        return;
    };
    let claims = |extra: Value| {
        let mut claims = json!({"sub": "alice", "exp": now() + 600, "nbf": now()});
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        token_with(claims)
    };
    let refused = [
        ("no iss nor aud", claims(json!({}))),
        ("no iss", claims(json!({"aud": AUDIENCE}))),
        ("no aud", claims(json!({"iss": ISSUER}))),
        ("numeric aud", claims(json!({"iss": ISSUER, "aud": 1}))),
        ("numeric iss", claims(json!({"iss": 5, "aud": AUDIENCE}))),
        (
            "iss list",
            claims(json!({"iss": [ISSUER], "aud": AUDIENCE})),
        ),
        ("other issuer", claims(json!({"iss": "x", "aud": AUDIENCE}))),
        ("other audience", claims(json!({"iss": ISSUER, "aud": "x"}))),
    ];
    for (why, token) in &refused {
        let r = me(&app, &format!("Bearer {token}")).await;
        assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{why}: {r}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
        ws.send(json!({"type": "connection_init", "payload": {"token": token}}))
            .await;
        assert_eq!(ws.closed().await.0, 4403, "{why} over WebSocket");
    }
    for token in [
        claims(json!({"iss": ISSUER, "aud": AUDIENCE})),
        claims(json!({"iss": ISSUER, "aud": ["other", AUDIENCE]})),
        app.token("alice"),
    ] {
        let r = me(&app, &format!("Bearer {token}")).await;
        assert_eq!(r["data"]["me"]["id"], "alice", "{r}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
        ws.send(json!({"type": "connection_init", "payload": {"token": token}}))
            .await;
        assert_eq!(ws.recv().await["type"], "connection_ack");
    }
    app.shutdown().await;
}

/// HTTP, the WebSocket header and init payload, and the management port
/// read credentials the same way: any scheme casing, spaces or tabs around
/// and between, nothing inside the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_reads_bearer_credentials_alike() {
    const MANAGEMENT_TOKEN: &str = "management-secret-0123456789";
    let Some(app) = TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.management_token = Some(MANAGEMENT_TOKEN.into());
    })
    .await
    else {
        return;
    };
    let token = app.token("alice");
    let accepted = |t: &str| {
        [
            format!("Bearer {t}"),
            format!("bearer\t{t}"),
            format!("  BEARER   {t}\t"),
        ]
    };
    let refused = |t: &str| {
        [
            t.to_owned(),
            format!("Basic {t}"),
            format!("Bearer {t} extra"),
            "Bearer".to_owned(),
            format!("Bearer{t}"),
        ]
    };
    for header in accepted(&token) {
        let r = me(&app, &header).await;
        assert_eq!(r["data"]["me"]["id"], "alice", "{header:?}: {r}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, Some(&header)).await;
        ws.send(json!({"type": "connection_init"})).await;
        assert_eq!(ws.recv().await["type"], "connection_ack", "{header:?}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, None).await;
        ws.send(json!({"type": "connection_init", "payload": {"authorization": header}}))
            .await;
        assert_eq!(ws.recv().await["type"], "connection_ack", "{header:?}");
    }
    for header in refused(&token) {
        let r = me(&app, &header).await;
        assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{header:?}: {r}");
        let mut ws = Ws::connect(&app.ws_url, MODERN, Some(&header)).await;
        ws.send(json!({"type": "connection_init"})).await;
        assert_eq!(ws.closed().await.0, 4403, "{header:?}");
    }
    let channels = |header: String| {
        let request = app
            .http
            .get(app.api("/channel"))
            .header("Authorization", header);
        async move { read(request).await }
    };
    for header in accepted(MANAGEMENT_TOKEN) {
        let reply: Reply = channels(header.clone()).await;
        assert_eq!(reply.status, 200, "{header:?}: {}", reply.text);
    }
    for header in refused(MANAGEMENT_TOKEN) {
        let reply = channels(header.clone()).await;
        reply.problem(401);
    }
    app.shutdown().await;
}
