//! The WebSocket connection lifecycle (issues 10 and 11): connection limits
//! refused with their documented answers, the forwarded-for header trusted
//! only from a declared proxy, the outgoing byte bound, operation id and
//! frame size limits, and mutations that answer before any close.

use std::time::Duration;

use clacks_testkit::TestBackend;
use serde_json::{Value, json};
use sqlx::Connection;

use super::client::{ConnectError, LEGACY, MODERN, Ws, now, token_with};
use crate::helpers::TestApp;

macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })* }
    };
}

each_backend!(
    a_mutation_in_flight_answers_before_a_forced_disconnect,
    a_mutation_in_flight_answers_before_the_token_expiry_close,
    a_mutation_in_flight_answers_before_the_shutdown_close,
    a_mutation_outlives_the_client_that_sent_it,
);

const SEND: &str = "mutation($c: ID!, $t: String!, $m: String) {
    createMessage(input: {channel: $c, content: $t, clientMessageId: $m}) { seq content }
}";

/// A server on SQLite (what these tests check does not depend on the
/// database) whose sockets may stay uninitialised for the whole test.
async fn spawn(adjust: impl FnOnce(&mut clacks_server::Config)) -> TestApp {
    TestApp::spawn_with(TestBackend::Sqlite, |config| {
        config.connection_init_timeout = 120;
        adjust(config);
    })
    .await
    .expect("SQLite needs no server")
}

/// A server whose close grace leaves a held send all the time it needs.
async fn spawn_patient(backend: TestBackend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |config| {
        config.shutdown_grace = 60;
        config.connection_init_timeout = 120;
    })
    .await
}

/// Waits (bounded) until the server counts `expected` open connections:
/// a closed socket gives its place back once its tasks have ended.
async fn wait_for_connections(app: &TestApp, expected: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.service.connections().count() != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections open, expected {expected}",
            app.service.connections().count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_refused(refused: Result<Ws, ConnectError>, status: u16, code: &str, limit: u64) {
    let refused = match refused {
        Err(ConnectError::Refused(refused)) => refused,
        Err(failed) => panic!("{failed}; expected {status} {code}"),
        Ok(_) => panic!("the upgrade was accepted; expected {status} {code}"),
    };
    assert_eq!(refused.status, status, "{:?}", refused.body);
    let error = &refused.body["errors"][0];
    assert_eq!(error["extensions"]["code"], code, "{error}");
    assert_eq!(error["extensions"]["limit"], limit, "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_limit_refuses_upgrades_with_503() {
    let app = spawn(|config| config.max_connections = 2).await;
    let mut alice = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    // Not initialised yet, and counted all the same.
    let _idle = Ws::connect(&app.ws_url, MODERN, None).await;
    wait_for_connections(&app, 2).await;
    let refused = Ws::try_connect(&app.ws_url, LEGACY, &[]).await;
    assert_refused(refused, 503, "UNAVAILABLE", 2);
    // Closing one gives its place back.
    alice.send(json!({"type": "ping"})).await;
    assert_eq!(alice.recv().await["type"], "pong");
    drop(alice);
    wait_for_connections(&app, 1).await;
    Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_limit_closes_the_extra_init_with_4029() {
    let app = spawn(|config| config.max_connections_per_user = 2).await;
    let token = app.token("alice");
    let mut first = Ws::open(&app.ws_url, MODERN, &token).await;
    let _second = Ws::open(&app.ws_url, LEGACY, &token).await;
    // The upgrade is accepted (the user is known only at init) ...
    let mut third = Ws::connect(&app.ws_url, MODERN, None).await;
    third
        .send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}))
        .await;
    let (code, reason) = third.closed().await;
    assert_eq!(code, 4029, "{reason}");
    // ... and the legacy protocol hears why first.
    let mut legacy = Ws::connect(&app.ws_url, LEGACY, None).await;
    legacy
        .send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    let error = legacy.recv().await;
    assert_eq!(error["type"], "connection_error", "{error}");
    assert_eq!(
        error["payload"]["extensions"]["code"],
        "TOO_MANY_CONNECTIONS"
    );
    assert_eq!(error["payload"]["extensions"]["limit"], 2);
    assert_eq!(legacy.closed().await.0, 4029);
    // Other users are not affected; a closed connection frees its place.
    let _bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    drop((third, legacy));
    first.send(json!({"type": "ping"})).await;
    assert_eq!(first.recv().await["type"], "pong");
    drop(first);
    wait_for_connections(&app, 2).await;
    let _again = Ws::open(&app.ws_url, MODERN, &token).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_limit_counts_the_forwarded_client_behind_a_trusted_proxy() {
    // The tests connect from loopback: declared as the proxy, its
    // X-Forwarded-For names the client.
    let app = spawn(|config| {
        config.max_connections_per_address = 2;
        config.trusted_proxies = Some("127.0.0.1".parse().unwrap());
    })
    .await;
    let from = |address: &'static str| [("X-Forwarded-For", address)];
    let _a1 = Ws::try_connect(&app.ws_url, MODERN, &from("203.0.113.7"))
        .await
        .unwrap();
    let _a2 = Ws::try_connect(&app.ws_url, MODERN, &from("203.0.113.7"))
        .await
        .unwrap();
    let refused = Ws::try_connect(&app.ws_url, MODERN, &from("203.0.113.7")).await;
    assert_refused(refused, 429, "TOO_MANY_CONNECTIONS", 2);
    // Only the rightmost hop (the one the proxy appended) counts: what the
    // client wrote before it proves nothing.
    let spoofed = [("X-Forwarded-For", "198.51.100.1, 203.0.113.7")];
    let refused = Ws::try_connect(&app.ws_url, MODERN, &spoofed).await;
    assert_refused(refused, 429, "TOO_MANY_CONNECTIONS", 2);
    let _b = Ws::try_connect(&app.ws_url, MODERN, &from("203.0.113.8"))
        .await
        .unwrap();
    // IPv6 clients count by /64.
    let _v6 = Ws::try_connect(&app.ws_url, MODERN, &from("2001:db8:1:2::1"))
        .await
        .unwrap();
    let _v6b = Ws::try_connect(&app.ws_url, MODERN, &from("2001:db8:1:2::ff"))
        .await
        .unwrap();
    let refused = Ws::try_connect(&app.ws_url, MODERN, &from("2001:db8:1:2:3::9")).await;
    assert_refused(refused, 429, "TOO_MANY_CONNECTIONS", 2);
    // The proxy's own connections (no header) are loopback: not counted.
    let mut direct = Vec::new();
    for _ in 0..3 {
        direct.push(Ws::open(&app.ws_url, MODERN, &app.token("alice")).await);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_undeclared_peer_is_ignored() {
    let app = spawn(|config| {
        config.max_connections_per_address = 1;
        config.trusted_proxies = Some("10.0.0.0/8".parse().unwrap());
    })
    .await;
    // The peer (loopback) is no declared proxy: the header is not believed,
    // and the loopback peer itself is not counted per address.
    let header = [("X-Forwarded-For", "203.0.113.7")];
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(Ws::try_connect(&app.ws_url, MODERN, &header).await.unwrap());
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_operation_ids_and_oversized_messages_close_the_socket() {
    let app = spawn(|_| {}).await;
    let token = app.token("alice");
    let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
    let longest = "i".repeat(128);
    ws.subscribe(&longest, "{ me { id } }", json!({})).await;
    let (id, me) = ws.next_payload().await;
    assert_eq!(id, longest);
    assert_eq!(me["data"]["me"]["id"], "alice");
    assert_eq!(ws.recv().await["type"], "complete");
    ws.subscribe(&"i".repeat(129), "{ me { id } }", json!({}))
        .await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4400, "{reason}");

    for protocol in [MODERN, LEGACY] {
        let mut ws = Ws::open(&app.ws_url, protocol, &token).await;
        // Over the 256 KiB incoming limit.
        let padding = "x".repeat(300 * 1024);
        ws.send_text(json!({"type": "ping", "payload": {"padding": padding}}).to_string())
            .await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 1009, "{protocol}: {reason}");
    }
    app.shutdown().await;
}

/// The byte bound keeps a connection's queue small, yet a frame larger than
/// the whole bound (a big history page) still goes through, alone, and
/// several of them in a row each wait their turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_byte_bound_still_reach_the_client() {
    let app = spawn(|config| {
        config.connection_queue_bytes = 16 * 1024;
        config.max_message_bytes = 64 * 1024;
    })
    .await;
    let channel = app.channel_with("big", &["alice"]).await;
    let token = app.token("alice");
    let content = "y".repeat(60 * 1024);
    for _ in 0..5 {
        let sent = app
            .graphql(
                Some(&token),
                SEND,
                json!({"c": channel.to_string(), "t": content}),
            )
            .await;
        assert!(sent.get("errors").is_none(), "{sent}");
    }
    let mut ws = Ws::open(&app.ws_url, MODERN, &token).await;
    let history = "query($c: ID!) { channel(id: $c) { history(limit: 5) { seq content } } }";
    for id in ["h1", "h2", "h3", "h4"] {
        ws.subscribe(id, history, json!({"c": channel.to_string()}))
            .await;
    }
    let mut answered = Vec::new();
    while answered.len() < 4 {
        let frame = ws.recv().await;
        match frame["type"].as_str() {
            Some("next") => {
                let page = frame["payload"]["data"]["channel"]["history"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{frame}"));
                assert_eq!(page.len(), 5);
                assert!(page.iter().all(|m| m["content"] == content.as_str()));
                answered.push(frame["id"].as_str().unwrap().to_owned());
            }
            Some("complete") => {}
            _ => panic!("unexpected {frame}"),
        }
    }
    answered.sort();
    assert_eq!(answered, ["h1", "h2", "h3", "h4"]);
    app.shutdown().await;
}

/// Holds the lock a send on a channel needs, so a send stays in flight for
/// as long as the test wants.
enum SendLock {
    Sqlite(sqlx::SqliteConnection),
    MySql(sqlx::MySqlConnection),
    Postgres(sqlx::PgConnection),
}

impl SendLock {
    async fn hold(app: &TestApp, channel: i64) -> SendLock {
        let url = &app.database_url;
        match app.backend {
            TestBackend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                SendLock::Sqlite(conn)
            }
            TestBackend::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("SELECT last_seq FROM channels WHERE id = ? FOR UPDATE")
                    .bind(channel)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                SendLock::MySql(conn)
            }
            TestBackend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("SELECT last_seq FROM channels WHERE id = $1 FOR UPDATE")
                    .bind(channel)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                SendLock::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        let rollback = sqlx::raw_sql("ROLLBACK");
        match self {
            SendLock::Sqlite(mut conn) => rollback.execute(&mut conn).await.map(drop),
            SendLock::MySql(mut conn) => rollback.execute(&mut conn).await.map(drop),
            SendLock::Postgres(mut conn) => rollback.execute(&mut conn).await.map(drop),
        }
        .unwrap();
    }
}

/// Sends a message over `ws` while the channel is locked, and returns once
/// the server has read it (a `ping` sent after it has been answered: the
/// server handles a connection's frames in order).
async fn send_in_flight(ws: &mut Ws, channel: i64, client_message_id: &str) {
    ws.subscribe(
        "send",
        SEND,
        json!({"c": channel.to_string(), "t": "in flight", "m": client_message_id}),
    )
    .await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

/// The ack of the in-flight send, its `complete`, then the close.
async fn ack_then_close(ws: &mut Ws) -> (i64, u16) {
    let (id, payload) = ws.next_payload().await;
    assert_eq!(id, "send");
    let message = &payload["data"]["createMessage"];
    assert_eq!(message["content"], "in flight", "{payload}");
    assert_eq!(ws.recv().await, json!({"id": "send", "type": "complete"}));
    let (code, _) = ws.closed().await;
    (message["seq"].as_i64().unwrap(), code)
}

/// What a later retry of the send finds: the stored message's seq.
async fn stored_seq(app: &TestApp, channel: i64, client_message_id: &str) -> Value {
    let retry = app
        .graphql(
            Some(&app.token("alice")),
            SEND,
            json!({"c": channel.to_string(), "t": "in flight", "m": client_message_id}),
        )
        .await;
    retry["data"]["createMessage"]["seq"].clone()
}

/// A pause that lets the server act on what it was told while the send is
/// still held (not an assertion: without it the test only proves less).
async fn let_it_act() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn a_mutation_in_flight_answers_before_a_forced_disconnect(backend: TestBackend) {
    let Some(app) = spawn_patient(backend).await else {
        return;
    };
    let channel = app.channel_with("general", &["alice"]).await;
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    let lock = SendLock::hold(&app, channel).await;
    send_in_flight(&mut ws, channel, "forced-1").await;
    let closed = app
        .service
        .admin_disconnect_user("alice".into())
        .await
        .unwrap();
    assert_eq!(closed, 1);
    let_it_act().await;
    lock.release().await;
    let (seq, code) = ack_then_close(&mut ws).await;
    assert_eq!(code, 4001);
    assert_eq!(stored_seq(&app, channel, "forced-1").await, seq);
    app.shutdown().await;
}

async fn a_mutation_in_flight_answers_before_the_token_expiry_close(backend: TestBackend) {
    let Some(app) = spawn_patient(backend).await else {
        return;
    };
    let channel = app.channel_with("general", &["alice"]).await;
    let expires = now() + 2;
    let short = token_with(json!({"sub": "alice", "nbf": now(), "exp": expires}));
    let mut ws = Ws::open(&app.ws_url, MODERN, &short).await;
    let lock = SendLock::hold(&app, channel).await;
    send_in_flight(&mut ws, channel, "expiry-1").await;
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let_it_act().await;
    lock.release().await;
    let (seq, code) = ack_then_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert_eq!(stored_seq(&app, channel, "expiry-1").await, seq);
    app.shutdown().await;
}

/// A client that leaves with its send in flight gets no answer, but the
/// send is not cancelled half way: it completes, and a live subscriber
/// receives the message (published by the finished send, not replayed).
async fn a_mutation_outlives_the_client_that_sent_it(backend: TestBackend) {
    let Some(app) = spawn_patient(backend).await else {
        return;
    };
    let channel = app.channel_with("general", &["alice", "bob"]).await;
    let c = channel.to_string();
    let mut bob = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    let live = "subscription($c: ID) { message(channel: $c) { content } }";
    bob.subscribe("live", live, json!({"c": c})).await;
    // Once a probe arrives, the subscription is live.
    loop {
        let probe = app
            .graphql(
                Some(&app.token("alice")),
                SEND,
                json!({"c": c, "t": "probe"}),
            )
            .await;
        assert!(probe.get("errors").is_none(), "{probe}");
        let delivered = tokio::time::timeout(Duration::from_millis(500), bob.next_payload()).await;
        if let Ok((_, payload)) = delivered {
            assert_eq!(payload["data"]["message"]["content"], "probe");
            break;
        }
    }
    let mut alice = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    let lock = SendLock::hold(&app, channel).await;
    send_in_flight(&mut alice, channel, "gone-1").await;
    drop(alice);
    let_it_act().await;
    lock.release().await;
    loop {
        let (_, payload) = bob.next_payload().await;
        match payload["data"]["message"]["content"].as_str() {
            Some("in flight") => break,
            Some("probe") => continue,
            _ => panic!("unexpected {payload}"),
        }
    }
    app.shutdown().await;
}

/// Shutdown while a send is in flight: the send answers, then the socket
/// gets 1001; a socket that never sent `connection_init` gets 1001 too.
async fn a_mutation_in_flight_answers_before_the_shutdown_close(backend: TestBackend) {
    let Some(app) = spawn_patient(backend).await else {
        return;
    };
    let channel = app.channel_with("general", &["alice"]).await;
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    let mut idle = Ws::connect(&app.ws_url, MODERN, None).await;
    let lock = SendLock::hold(&app, channel).await;
    send_in_flight(&mut ws, channel, "shutdown-1").await;
    let ws_url = app.ws_url.clone();
    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn(app.shutdown());
    // The shutdown has begun once new sockets are refused.
    while tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .is_ok()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still accepting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(idle.closed().await.0, 1001);
    let_it_act().await;
    assert!(!shutdown.is_finished(), "the shutdown waits for the send");
    lock.release().await;
    let (_, code) = ack_then_close(&mut ws).await;
    assert_eq!(code, 1001);
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .expect("the shutdown ends once every socket is closed")
        .unwrap();
}
