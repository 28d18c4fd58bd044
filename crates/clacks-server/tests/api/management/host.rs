//! The management port's `Host` allowlist (DNS rebinding): a request naming
//! a host the port does not answer to gets 421 problem+json on every route,
//! over a real socket with a forged `Host` header.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// An HTTP/1.1 exchange written by hand, so the request line and headers
/// are exactly the ones given (a client library would fix up `Host`).
struct RawReply {
    status: u16,
    content_type: String,
    body: Value,
}

async fn raw_get(app: &TestApp, target: &str, hosts: &[&str]) -> RawReply {
    let addr = app.management_url.trim_start_matches("http://");
    let mut request = format!("GET {target} HTTP/1.1\r\n");
    for host in hosts {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    RawReply {
        status,
        content_type,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

#[track_caller]
fn assert_misdirected(reply: &RawReply, what: &str) {
    assert_eq!(reply.status, 421, "{what}: {}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json", "{what}");
    assert_eq!(
        reply.body["type"], "urn:clacks:problem:misdirected-request",
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.body["status"], 421, "{what}");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("CLACKS_MANAGEMENT_ALLOWED_HOSTS")),
        "{what}: {}",
        reply.body
    );
}

/// The original `GET /jwt/{uid}` answers a JSON string: a token.
#[track_caller]
fn assert_token(reply: &RawReply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.body);
    assert!(
        reply
            .body
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{what}: {}",
        reply.body
    );
}

fn port(app: &TestApp) -> &str {
    app.management_url.rsplit(':').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_on_every_route() {
    let Some(app) = TestApp::spawn(clacks_testkit::TestBackend::Sqlite).await else {
        return;
    };
    let port = port(&app).to_owned();
    let evil = format!("evil.example:{port}");
    for target in [
        "/api/v1/jwt/alice",
        "/api/v1/channel",
        "/api/v1/healthz",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/no/such/route",
    ] {
        assert_misdirected(&raw_get(&app, target, &[&evil]).await, target);
    }
    // A name that merely starts like a loopback one, and an address
    // outside the allowlist.
    for host in [
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.2:{port}"),
    ] {
        assert_misdirected(&raw_get(&app, "/api/v1/jwt/alice", &[&host]).await, &host);
    }
    // Every authority a request carries must be allowed: a second Host
    // header, or an absolute-form target, cannot smuggle a foreign name.
    let smuggled = raw_get(
        &app,
        "/api/v1/jwt/alice",
        &[&format!("127.0.0.1:{port}"), &evil],
    )
    .await;
    assert!(
        smuggled.status == 421 || smuggled.status == 400,
        "two Host headers: {} {}",
        smuggled.status,
        smuggled.body
    );
    let absolute = raw_get(
        &app,
        &format!("http://{evil}/api/v1/jwt/alice"),
        &[&format!("127.0.0.1:{port}")],
    )
    .await;
    assert_misdirected(&absolute, "absolute-form target");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_hosts_keep_the_original_token_endpoint() {
    let Some(app) = TestApp::spawn(clacks_testkit::TestBackend::Sqlite).await else {
        return;
    };
    let port = port(&app).to_owned();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
        "LOCALHOST:1".to_owned(),
    ] {
        assert_token(&raw_get(&app, "/api/v1/jwt/alice", &[&host]).await, &host);
    }
    for target in ["/healthz", "/readyz"] {
        let reply = raw_get(&app, target, &[&format!("localhost:{port}")]).await;
        assert_eq!(reply.status, 200, "{target}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_hosts_are_answered() {
    let Some(app) = TestApp::spawn_with(clacks_testkit::TestBackend::Sqlite, |config| {
        config.management_allowed_hosts = vec![
            "clacks.internal".parse().unwrap(),
            "ops.internal:9999".parse().unwrap(),
        ];
    })
    .await
    else {
        return;
    };
    let port = port(&app).to_owned();
    for host in [
        format!("clacks.internal:{port}"),
        "ops.internal:9999".into(),
    ] {
        assert_token(&raw_get(&app, "/api/v1/jwt/alice", &[&host]).await, &host);
    }
    for host in [
        format!("ops.internal:{port}"),
        format!("other.internal:{port}"),
    ] {
        assert_misdirected(&raw_get(&app, "/api/v1/jwt/alice", &[&host]).await, &host);
    }
    assert_token(
        &raw_get(&app, "/api/v1/jwt/alice", &[&format!("localhost:{port}")]).await,
        "loopback stays allowed",
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_answers_any_host() {
    let Some(app) = TestApp::spawn_with(clacks_testkit::TestBackend::Sqlite, |config| {
        config.management_allowed_hosts = vec!["*".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let reply = raw_get(&app, "/api/v1/jwt/alice", &["anything.example"]).await;
    assert_token(&reply, "*");
    app.shutdown().await;
}
