//! Delivery guarantees seen by a real WebSocket client (issue 5): a slow
//! consumer is cut off alone and resumes without loss; a connection whose
//! token expires is closed, and a reconnect with a fresh token resumes
//! without loss.

use std::time::Duration;

use clacks_testkit::TestBackend;
use serde_json::{Value, json};

use super::client::{Frame, LEGACY, MODERN, Ws, now, token_with};
use crate::helpers::TestApp;

const EVENTS: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after) { seq ... on MessageCreated { message { content } } } }";

fn event_seq(frame: &Value) -> Option<i64> {
    matches!(frame["type"].as_str(), Some("next" | "data"))
        .then(|| frame["payload"]["data"]["events"]["seq"].as_i64())?
}

/// Reads frames until `last` is seen; returns the seqs in arrival order.
async fn seqs_until(ws: &mut Ws, last: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < last {
        match ws.frame().await {
            Frame::Json(frame) => seqs.extend(event_seq(&frame)),
            Frame::Closed(code, reason) => panic!("closed {code} {reason} after {:?}", seqs.last()),
        }
    }
    seqs
}

async fn send_many(app: &TestApp, channel: i64, from: &str, count: usize, size: usize) {
    let caller = app.service.authenticate(&app.token(from)).unwrap();
    let body = "x".repeat(size);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let service = app.service.clone();
            let caller = caller.clone();
            let body = body.clone();
            tokio::spawn(async move {
                for i in (t..count).step_by(8) {
                    service
                        .send(
                            &caller,
                            clacks_core::ChannelId(channel),
                            format!("{i} {body}"),
                            None,
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn slow_consumer_is_closed_alone_and_resumes(backend: TestBackend) {
    let Some(app) = TestApp::spawn_with(backend, |config| {
        // Headroom for bursts, far less than what the slow client is sent.
        config.connection_queue = 256;
        config.subscription_queue = 256;
    })
    .await
    else {
        return;
    };
    // 30 MB: more than loopback socket buffers and the queues hold.
    const MESSAGES: i64 = 2000;
    let channel = app
        .channel_with("firehose", &["alice", "fast", "slow"])
        .await;
    let c = channel.to_string();
    let mut slow = Ws::open(&app.ws_url, MODERN, &app.token("slow")).await;
    slow.subscribe("s", EVENTS, json!({"c": c})).await;
    let mut fast = Ws::open(&app.ws_url, LEGACY, &app.token("fast")).await;
    fast.subscribe("f", EVENTS, json!({"c": c})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The fast client reads all along; the slow one reads nothing yet. The
    // sender goes in chunks the fast client has read, so "fast" holds even
    // on a busy machine, while the slow client falls further behind.
    let (progress, mut seen) = tokio::sync::watch::channel(0i64);
    let fast_reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.last().copied().unwrap_or(0) < MESSAGES {
            match fast.frame().await {
                Frame::Json(frame) => {
                    if let Some(seq) = event_seq(&frame) {
                        seqs.push(seq);
                        let _ = progress.send(seq);
                    }
                }
                Frame::Closed(code, reason) => panic!("fast client closed {code} {reason}"),
            }
        }
        seqs
    });
    const CHUNK: i64 = 100;
    for chunk in 1..=(MESSAGES / CHUNK) {
        send_many(&app, channel, "alice", CHUNK as usize, 15 * 1024).await;
        tokio::time::timeout(
            Duration::from_secs(30),
            seen.wait_for(|s| *s >= chunk * CHUNK),
        )
        .await
        .expect("the fast client keeps up")
        .unwrap();
    }
    let fast_seqs = tokio::time::timeout(Duration::from_secs(60), fast_reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fast_seqs,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "the fast client got everything, in order"
    );
    // A queue overflow alone puts a subscriber behind, to read at its own
    // pace; one still behind 5 s later, while the channel goes on, is too
    // slow for it (if its socket did not stall first).
    let mut total = MESSAGES;
    let keep_on_until = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < keep_on_until {
        send_many(&app, channel, "alice", 1, 100).await;
        total += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The slow client finds what was queued for it, then the close.
    let mut got = Vec::new();
    let (code, reason) = loop {
        match slow.frame().await {
            Frame::Json(frame) => got.extend(event_seq(&frame)),
            Frame::Closed(code, reason) => break (code, reason),
        }
    };
    assert_eq!(code, 4008, "slow consumer close code ({reason})");
    assert!((got.len() as i64) < total, "it was cut off before the end");
    assert_eq!(
        got,
        (1..=got.len() as i64).collect::<Vec<_>>(),
        "what it got is a gap-free prefix"
    );

    // It resumes from the last seq it saw and misses nothing.
    let last_seen = got.last().copied().unwrap_or(0);
    let mut again = Ws::open(&app.ws_url, MODERN, &app.token("slow")).await;
    again
        .subscribe("s", EVENTS, json!({"c": c, "after": last_seen}))
        .await;
    let rest = seqs_until(&mut again, total).await;
    assert_eq!(rest, ((last_seen + 1)..=total).collect::<Vec<_>>());
    app.shutdown().await;
}

/// A client that subscribes and then never reads again (a phone that
/// vanished without closing its socket) is let go: once the socket takes
/// nothing for the send timeout, the server stops writing, and the
/// connection is gone a short grace later, with its memory.
async fn client_that_never_reads_is_let_go(backend: TestBackend) {
    if backend != TestBackend::Sqlite {
        // Nothing here depends on the database.
        return;
    }
    let Some(app) = TestApp::spawn_with(backend, |config| {
        // Room for everything sent: the subscription never overflows, so
        // only the stalled socket can end it.
        config.subscription_queue = 4096;
        config.max_message_bytes = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let channel = app.channel_with("firehose", &["alice", "gone"]).await;
    let mut gone = Ws::open(&app.ws_url, MODERN, &app.token("gone")).await;
    gone.subscribe("s", EVENTS, json!({"c": channel.to_string()}))
        .await;
    assert_eq!(app.service.connections().count(), 1);
    // 30 MB: more than loopback socket buffers hold.
    send_many(&app, channel, "alice", 600, 50 * 1024).await;
    // The send timeout is 5 s; margin for a busy machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Gone with its subscription (hub registration and queued events).
    while app.service.connections().count() > 0 || app.service.hub_stats().subscriptions > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that reads nothing is still connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(gone);
    app.shutdown().await;
}

/// A client that resumes far behind and then reads nothing: its replay
/// goes at its pace, which is none, so the socket stalls and the client
/// is let go as any other that reads nothing (4008), holding no more than
/// a page meanwhile.
async fn a_resumed_client_that_never_reads_is_let_go(backend: TestBackend) {
    if backend != TestBackend::Sqlite {
        // The store is read the same way on every backend.
        return;
    }
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.max_message_bytes = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let channel = app.channel_with("backlog", &["alice", "gone"]).await;
    // 30 MB: more than loopback socket buffers hold.
    send_many(&app, channel, "alice", 600, 50 * 1024).await;
    let mut gone = Ws::open(&app.ws_url, MODERN, &app.token("gone")).await;
    gone.subscribe("s", EVENTS, json!({"c": channel.to_string(), "after": 0}))
        .await;
    // The send timeout is 5 s; margin for a busy machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.service.hub_stats().subscriptions == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while app.service.hub_stats().subscriptions > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that reads nothing is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its subscription is gone; the connection waits a while for the
    // client to read what the socket holds, then the close.
    let (code, reason) = gone.closed().await;
    assert_eq!(code, 4008, "{reason}");
    while app.service.connections().count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection outlived its close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// A resume names each channel once, and at most 1,000 of them.
async fn resume_lists_are_limited(backend: TestBackend) {
    if backend != TestBackend::Sqlite {
        // Refused before anything is read.
        return;
    }
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let channel = app.channel_with("general", &["alice"]).await;
    const RESUME: &str = "subscription($r: [ResumeInput!]) { events(resume: $r) { seq } }";
    let mut ws = Ws::open(&app.ws_url, MODERN, &app.token("alice")).await;
    let point = json!({"channel": channel.to_string(), "afterSeq": 0});
    let too_many: Vec<Value> = (0..1_001)
        .map(|i| json!({"channel": (i + 1_000_000).to_string(), "afterSeq": 0}))
        .collect();
    for (id, resume) in [("many", json!(too_many)), ("twice", json!([point, point]))] {
        ws.subscribe(id, RESUME, json!({"r": resume})).await;
        let error = ws.recv().await;
        assert_eq!(error["id"], id, "{error}");
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(
            error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{error}"
        );
    }
    // One point per channel is fine.
    ws.subscribe("once", RESUME, json!({"r": [point]})).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    app.shutdown().await;
}

/// Once the client completes an operation, nothing more is sent for its id,
/// even when the client reuses the id at once (graphql-transport-ws allows
/// it; subscriptions-transport-ws replaces an operation on `start`).
async fn a_completed_id_can_be_reused_at_once(backend: TestBackend) {
    if backend != TestBackend::Sqlite {
        // Nothing here depends on the database.
        return;
    }
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let old = app.channel_with("old", &["alice"]).await;
    let new = app.channel_with("new", &["alice"]).await;
    for protocol in [MODERN, LEGACY] {
        let mut ws = Ws::open(&app.ws_url, protocol, &app.token("alice")).await;
        ws.subscribe("a", EVENTS, json!({"c": old.to_string()}))
            .await;
        let stop = if protocol == MODERN {
            "complete"
        } else {
            "stop"
        };
        ws.send(json!({"type": stop, "id": "a"})).await;
        ws.subscribe("a", EVENTS, json!({"c": new.to_string()}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_many(&app, old, "alice", 20, 10).await;
        send_many(&app, new, "alice", 1, 10).await;
        // The first and only thing for "a": the new channel's message.
        let frame = ws.recv().await;
        assert_eq!(frame["id"], "a", "{frame}");
        let seq = event_seq(&frame).unwrap_or_else(|| panic!("an event, got {frame}"));
        let expected = app
            .graphql(
                Some(&app.token("alice")),
                "query($c: ID!) { channel(id: $c) { lastSeq } }",
                json!({"c": new.to_string()}),
            )
            .await;
        assert_eq!(
            Some(seq),
            expected["data"]["channel"]["lastSeq"].as_i64(),
            "the event is the new channel's ({frame})"
        );
        // Nothing else arrives: ping, and the pong comes next.
        ws.send(json!({"type": if protocol == MODERN { "ping" } else { "start" }, "id": "p", "payload": {"query": "{ me { id } }"}}))
            .await;
        let next = ws.recv().await;
        assert_ne!(
            next["id"], "a",
            "nothing more for the old operation: {next}"
        );
    }
    app.shutdown().await;
}

async fn expired_token_then_fresh_token_resumes_without_loss(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let channel = app.channel_with("expiry", &["alice", "bob"]).await;
    let c = channel.to_string();
    let short = token_with(json!({"sub": "bob", "nbf": now(), "exp": now() + 2}));
    let mut ws = Ws::open(&app.ws_url, MODERN, &short).await;
    ws.subscribe("e", EVENTS, json!({"c": c})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_many(&app, channel, "alice", 5, 10).await;
    let before = seqs_until(&mut ws, 5).await;
    assert_eq!(before, vec![1, 2, 3, 4, 5]);
    // Messages keep coming while the token runs out.
    let sender = {
        let service = app.service.clone();
        let alice = app.service.authenticate(&app.token("alice")).unwrap();
        tokio::spawn(async move {
            for i in 0..30 {
                service
                    .send(
                        &alice,
                        clacks_core::ChannelId(channel),
                        format!("during {i}"),
                        None,
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut seen = before;
    let code = loop {
        match ws.frame().await {
            Frame::Json(frame) => seen.extend(event_seq(&frame)),
            Frame::Closed(code, _) => break code,
        }
    };
    assert_eq!(code, 4401, "closed at expiry");
    sender.await.unwrap();
    let last_seen = *seen.last().unwrap();
    let mut fresh = Ws::open(&app.ws_url, MODERN, &app.token("bob")).await;
    fresh
        .subscribe("e", EVENTS, json!({"c": c, "after": last_seen}))
        .await;
    let rest = seqs_until(&mut fresh, 35).await;
    seen.extend(rest);
    assert_eq!(
        seen,
        (1..=35).collect::<Vec<_>>(),
        "nothing lost across the expiry"
    );
    app.shutdown().await;
}

macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })* }
    };
}

each_backend!(
    slow_consumer_is_closed_alone_and_resumes,
    client_that_never_reads_is_let_go,
    a_resumed_client_that_never_reads_is_let_go,
    resume_lists_are_limited,
    a_completed_id_can_be_reused_at_once,
    expired_token_then_fresh_token_resumes_without_loss,
    shared_rendering_respects_the_viewer,
    resume_seam_over_websocket,
);

/// Events are rendered once per distinct document and shared, but never
/// across viewers when the document asks for something viewer-specific
/// (a channel's unread count is the caller's own).
async fn shared_rendering_respects_the_viewer(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let channel = app.channel_with("render", &["alice", "bob", "carol"]).await;
    let c = channel.to_string();
    let token = |user: &str, name: &str| {
        app.service
            .admin_mint_token(
                user.into(),
                clacks_service::TokenRequest {
                    name: Some(name.into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .token
    };
    let personal = "subscription($c: ID) { message(channel: $c) { content sender { id } channel { unreadCount } } }";
    let plain = "subscription($c: ID) { message(channel: $c) { content sender { id } } }";
    let mut alice = Ws::open(&app.ws_url, MODERN, &token("alice", "Alice")).await;
    let mut bob = Ws::open(&app.ws_url, LEGACY, &token("bob", "Bob")).await;
    let mut carol = Ws::open(&app.ws_url, MODERN, &token("carol", "Carol")).await;
    alice.subscribe("p", personal, json!({"c": c})).await;
    bob.subscribe("p", personal, json!({"c": c})).await;
    alice.subscribe("q", plain, json!({"c": c})).await;
    carol.subscribe("q", plain, json!({"c": c})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_many(&app, channel, "alice", 1, 1).await;

    let mut alice_frames = std::collections::HashMap::new();
    for _ in 0..2 {
        let (id, payload) = alice.next_payload().await;
        alice_frames.insert(id, payload);
    }
    assert_eq!(
        alice_frames["p"]["data"]["message"]["channel"]["unreadCount"], 0,
        "her own message is not unread for her"
    );
    let (_, bob_view) = bob.next_payload().await;
    assert_eq!(bob_view["data"]["message"]["sender"]["id"], "alice");
    assert_eq!(
        bob_view["data"]["message"]["channel"]["unreadCount"], 1,
        "but it is for bob"
    );
    let (_, carol_view) = carol.next_payload().await;
    assert_eq!(
        carol_view, alice_frames["q"],
        "the plain document renders alike for all"
    );
    app.shutdown().await;
}

/// The replay/live seam as a WebSocket client meets it: while senders keep
/// going, clients resume from random seqs and must see exactly the seqs
/// after their point, in order, once each. (The service-level suite runs
/// the same check hundreds of times per backend.)
async fn resume_seam_over_websocket(backend: TestBackend) {
    const ROUNDS: usize = 25;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let channel = app.channel_with("seam", &["w1", "w2", "reader"]).await;
    let c = channel.to_string();
    send_many(&app, channel, "w1", 20, 10).await;
    for round in 0..ROUNDS {
        let current = app
            .service
            .admin_channel(clacks_core::ChannelId(channel))
            .await
            .unwrap()
            .last_seq;
        let resume_from = (round as i64 * 7919) % (current + 1);
        let writers = {
            let service = app.service.clone();
            let callers = ["w1", "w2"].map(|w| app.service.authenticate(&app.token(w)).unwrap());
            tokio::spawn(async move {
                for i in 0..6 {
                    let caller = &callers[i % 2];
                    service
                        .send(
                            caller,
                            clacks_core::ChannelId(channel),
                            format!("r{round}-{i}"),
                            None,
                        )
                        .await
                        .unwrap();
                }
            })
        };
        let protocol = if round % 2 == 0 { MODERN } else { LEGACY };
        let mut ws = Ws::open(&app.ws_url, protocol, &app.token("reader")).await;
        ws.subscribe("s", EVENTS, json!({"c": c, "after": resume_from}))
            .await;
        writers.await.unwrap();
        let last = app
            .service
            .admin_channel(clacks_core::ChannelId(channel))
            .await
            .unwrap()
            .last_seq;
        let got = seqs_until(&mut ws, last).await;
        assert_eq!(
            got,
            ((resume_from + 1)..=last).collect::<Vec<_>>(),
            "round {round}: resumed after {resume_from}"
        );
    }
    app.shutdown().await;
}
