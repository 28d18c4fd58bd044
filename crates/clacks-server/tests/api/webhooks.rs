//! Webhooks (issue 13, item 6) end to end on each backend: the real server
//! POSTs to a real HTTP receiver (an axum server on 127.0.0.1:0 in the
//! test) that checks every signature; a receiver that fails first and then
//! recovers; filters by event type and channel; and deliveries pending
//! across restarts of the server on the same database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use clacks_server::{Config, RunningServer};
use clacks_testkit::{TestBackend, TestDatabase};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, test_config};
use crate::management::{Reply, call, create_channel, delete, get, patch, post, put};

const SECRET: &str = "test-webhook-secret-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// One test per backend for each named async fn taking a `TestBackend`.
macro_rules! webhook_tests {
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

webhook_tests!(
    registration_validates_and_round_trips,
    a_failing_receiver_gets_retries_until_it_recovers,
    webhooks_get_only_the_event_types_and_channels_they_ask_for,
    pending_deliveries_survive_restarts,
    unread_offline_goes_to_members_not_connected_who_did_not_read,
    two_nodes_on_one_database_send_each_delivery_once,
    a_bulk_membership_request_is_one_delivery_per_direction,
);

/// `PATCH /channel/{id}/users` adding 2,000 users and removing 3 is two
/// deliveries (`members.joined` with the count only, `members.left` with
/// the users), not 2,003.
async fn a_bulk_membership_request_is_one_delivery_per_direction(backend: TestBackend) {
    let receiver = Receiver::start().await;
    let Some(app) = TestApp::spawn_with(backend, quick).await else {
        return;
    };
    let id = create_channel(&app, "bulk", &["alice", "bob", "carol", "dave"]).await;
    create_webhook(
        &app,
        json!({"url": format!("{}/bulk", receiver.url), "secret": SECRET,
               "eventTypes": ["members.joined", "members.left"]}),
    )
    .await;
    let add: Vec<String> = (0..2_000).map(|n| format!("u{n:05}")).collect();
    patch(
        &app,
        &format!("/channel/{id}/users"),
        json!({"add": add, "remove": ["bob", "carol", "dave"], "role": "reader"}),
    )
    .await
    .ok(200);
    let delivered = receiver.wait_delivered("/bulk", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered("/bulk").len(), 2);
    let mut bodies: Vec<&Value> = delivered.iter().map(|r| &r.body).collect();
    bodies.sort_by_key(|b| b["seq"].as_i64());
    assert_eq!(bodies[0]["type"], "members.joined");
    assert_eq!(
        bodies[0]["data"],
        json!({"userIds": [], "count": 2_000, "truncated": true, "role": "reader"})
    );
    assert_eq!(bodies[1]["type"], "members.left");
    assert_eq!(bodies[1]["seq"], bodies[0]["seq"].as_i64().unwrap() + 1);
    assert_eq!(
        bodies[1]["data"],
        json!({"userIds": ["bob", "carol", "dave"], "count": 3, "truncated": false})
    );
    app.shutdown().await;
}

/// Fast retries for tests.
fn quick(config: &mut Config) {
    config.webhook_backoff_base_ms = 50;
    config.webhook_backoff_max = 1;
    config.webhook_poll_interval_ms = 50;
    config.webhook_max_attempts = 1000;
}

// ----- the receiver -------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    path: String,
    delivery_id: String,
    attempt: u32,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    /// Answer 500 to this many requests first.
    fail_first: AtomicI64,
    /// Answer 500 while set.
    failing: AtomicBool,
    bad_signatures: AtomicUsize,
    received: std::sync::Mutex<Vec<Received>>,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `Clacks-Signature: t=<secs>,v1=<hex HMAC-SHA256 over "t.body">`,
/// written from the README's description, not from Clacks' code.
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers
        .get("clacks-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signatures.contains(&expected)
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !signature_ok(&headers, &body) {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::BAD_REQUEST;
    }
    let fail =
        state.failing.load(Ordering::SeqCst) || state.fail_first.fetch_sub(1, Ordering::SeqCst) > 0;
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        delivery_id: header("clacks-delivery"),
        attempt: header("clacks-attempt").parse().unwrap_or(0),
        status: status.as_u16(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    status
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests answered 200 at `path`.
    fn delivered(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path && r.status == 200)
            .collect()
    }

    /// Waits until `path` has had `count` successful deliveries.
    async fn wait_delivered(&self, path: &str, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let delivered = self.delivered(path);
            if delivered.len() >= count {
                return delivered;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {} of {count} deliveries after {WAIT:?}: {:#?}",
                delivered.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn assert_signatures_valid(&self) {
        assert_eq!(self.state.bad_signatures.load(Ordering::SeqCst), 0);
    }
}

async fn create_webhook(app: &TestApp, body: Value) -> Value {
    post(app, "/webhooks", body).await.ok(201).clone()
}

// ----- tests ----------------------------------------------------------------

async fn registration_validates_and_round_trips(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Validation: problem+json 422 (and 400 for a body that is no JSON).
    for bad in [
        json!({"url": "ftp://example.com/hook"}),
        json!({"url": "not a url"}),
        json!({"url": "https://user:pw@example.com/"}),
        json!({"url": "https://example.com/", "secret": "short"}),
        json!({"url": "https://example.com/", "eventTypes": ["message.typed"]}),
        json!({"url": "https://example.com/", "channelIds": [0]}),
    ] {
        post(&app, "/webhooks", bad).await.problem(422);
    }
    post(&app, "/webhooks", json!({"secret": SECRET}))
        .await
        .problem(422);
    post(
        &app,
        "/webhooks",
        json!({"url": "https://example.com/", "channelIds": [1.5]}),
    )
    .await
    .problem(422);
    // Ids written with a zero fraction (as some encoders do) are ids.
    let whole = create_webhook(
        &app,
        json!({"url": "https://example.com/whole", "channelIds": [5.0, 2]}),
    )
    .await;
    assert_eq!(whole["channelIds"], json!([2, 5]));
    let deleted = delete(&app, &format!("/webhooks/{}", whole["id"])).await;
    assert_eq!(deleted.status, 204);
    let reply = app
        .http
        .post(app.api("/webhooks"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);

    // Created with a generated secret; every event type, every channel.
    let created = create_webhook(&app, json!({"url": "https://example.com/hooks"})).await;
    let id = created["id"].as_i64().unwrap();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_") && s.len() == 70),
        "{created}"
    );
    assert_eq!(created["eventTypes"], json!([]));
    assert_eq!(created["channelIds"], Value::Null);
    assert_eq!(created["enabled"], true);
    assert_eq!(
        get(&app, &format!("/webhooks/{id}")).await.ok(200),
        &created
    );

    // A second one with filters and its own secret.
    let second = create_webhook(
        &app,
        json!({"url": "http://127.0.0.1:9/x", "secret": SECRET,
               "eventTypes": ["message.deleted", "message.created", "message.created"],
               "channelIds": [3, 1, 3], "enabled": false}),
    )
    .await;
    assert_eq!(
        second["eventTypes"],
        json!(["message.created", "message.deleted"])
    );
    assert_eq!(second["channelIds"], json!([1, 3]));
    assert_eq!(second["secret"], SECRET);
    assert_eq!(second["enabled"], false);
    let listed = get(&app, "/webhooks").await.ok(200).clone();
    assert_eq!(listed, json!([created, second]));

    // PATCH: absent fields kept, channelIds null means every channel.
    let second_id = second["id"].as_i64().unwrap();
    let patched = patch(
        &app,
        &format!("/webhooks/{second_id}"),
        json!({"channelIds": null, "enabled": true}),
    )
    .await
    .ok(200)
    .clone();
    assert_eq!(patched["channelIds"], Value::Null);
    assert_eq!(patched["enabled"], true);
    assert_eq!(patched["url"], "http://127.0.0.1:9/x");
    assert_eq!(patched["eventTypes"], second["eventTypes"]);
    patch(
        &app,
        &format!("/webhooks/{second_id}"),
        json!({"url": "gopher://x"}),
    )
    .await
    .problem(422);

    // Deliveries of a webhook that never sent anything: none.
    assert_eq!(
        get(&app, &format!("/webhooks/{id}/deliveries"))
            .await
            .ok(200),
        &json!([])
    );

    // Delete, then everything about it is 404.
    let deleted = delete(&app, &format!("/webhooks/{id}")).await;
    assert_eq!(deleted.status, 204);
    get(&app, &format!("/webhooks/{id}")).await.problem(404);
    get(&app, &format!("/webhooks/{id}/deliveries"))
        .await
        .problem(404);
    delete(&app, &format!("/webhooks/{id}")).await.problem(404);
    patch(&app, &format!("/webhooks/{id}"), json!({"enabled": false}))
        .await
        .problem(404);
    get(&app, "/webhooks/abc").await.problem(400);
    app.shutdown().await;
}

async fn a_failing_receiver_gets_retries_until_it_recovers(backend: TestBackend) {
    let receiver = Receiver::start().await;
    receiver.state.fail_first.store(2, Ordering::SeqCst);
    let Some(app) = TestApp::spawn_with(backend, quick).await else {
        return;
    };
    let webhook = create_webhook(
        &app,
        json!({"url": format!("{}/hook", receiver.url), "secret": SECRET}),
    )
    .await;
    let id = webhook["id"].as_i64().unwrap();
    let channel = create_channel(&app, "general", &["alice"]).await;
    let message = post(
        &app,
        &format!("/channel/{channel}/messages"),
        json!({"content": "hello hooks", "senderId": "alice"}),
    )
    .await
    .ok(201)
    .clone();

    let delivered = receiver.wait_delivered("/hook", 1).await;
    receiver.assert_signatures_valid();
    let body = &delivered[0].body;
    assert_eq!(body["type"], "message.created", "{body}");
    assert_eq!(body["channelId"], channel);
    assert_eq!(body["seq"], message["seq"]);
    assert_eq!(body["id"], delivered[0].delivery_id);
    assert_eq!(body["data"]["message"]["content"], "hello hooks");
    assert_eq!(body["data"]["message"]["senderId"], "alice");
    assert_eq!(body["data"]["message"]["id"], message["id"]);
    // Three requests of one delivery: the same id, attempts 1, 2, 3.
    let all = receiver.received();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all.iter()
            .all(|r| r.delivery_id == delivered[0].delivery_id)
    );
    assert_eq!(
        all.iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        [(1, 500), (2, 500), (3, 200)]
    );

    // The API shows the attempts, newest first (the last one is recorded
    // just after the receiver answered).
    let attempts = wait_for_attempts(&app, id, 3).await;
    let summary: Vec<(i64, Value, String)> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["deliveryId"], delivered[0].delivery_id);
            assert_eq!(a["eventType"], "message.created");
            assert_eq!(a["channelId"], channel);
            assert!(a["attemptedAt"].as_i64().unwrap() > 0);
            (
                a["attempt"].as_i64().unwrap(),
                a["statusCode"].clone(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, json!(200), "delivered".to_owned()),
            (2, json!(500), "retrying".to_owned()),
            (1, json!(500), "retrying".to_owned()),
        ]
    );
    assert_eq!(attempts[1]["error"], "HTTP 500 Internal Server Error");
    assert_eq!(attempts[0]["error"], Value::Null);
    let limited = get(&app, &format!("/webhooks/{id}/deliveries?limit=1")).await;
    assert_eq!(limited.ok(200).as_array().unwrap().len(), 1);
    app.shutdown().await;
}

/// Polls the deliveries endpoint until it lists `count` attempts.
async fn wait_for_attempts(app: &TestApp, webhook: i64, count: usize) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = get(app, &format!("/webhooks/{webhook}/deliveries")).await;
        let attempts = reply.ok(200).clone();
        if attempts.as_array().is_some_and(|a| a.len() >= count) {
            return attempts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} attempts expected: {attempts}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn webhooks_get_only_the_event_types_and_channels_they_ask_for(backend: TestBackend) {
    let receiver = Receiver::start().await;
    let Some(app) = TestApp::spawn_with(backend, quick).await else {
        return;
    };
    let one = create_channel(&app, "one", &["alice", "bob"]).await;
    let two = create_channel(&app, "two", &["alice"]).await;
    create_webhook(
        &app,
        json!({"url": format!("{}/messages-in-one", receiver.url), "secret": SECRET,
               "eventTypes": ["message.created"], "channelIds": [one]}),
    )
    .await;
    create_webhook(
        &app,
        json!({"url": format!("{}/everything", receiver.url), "secret": SECRET}),
    )
    .await;
    create_webhook(
        &app,
        json!({"url": format!("{}/disabled", receiver.url), "secret": SECRET, "enabled": false}),
    )
    .await;
    create_webhook(
        &app,
        json!({"url": format!("{}/membership", receiver.url), "secret": SECRET,
               "eventTypes": ["member.joined", "member.left"]}),
    )
    .await;
    create_webhook(
        &app,
        json!({"url": format!("{}/reactions", receiver.url), "secret": SECRET,
               "eventTypes": ["reaction.added", "reaction.removed"], "channelIds": [one]}),
    )
    .await;

    let send = |channel: i64, content: &'static str| {
        let app = &app;
        async move {
            post(
                app,
                &format!("/channel/{channel}/messages"),
                json!({"content": content, "senderId": "alice"}),
            )
            .await
            .ok(201)
            .clone()
        }
    };
    let first = send(one, "in one").await;
    let bob = app.token("bob");
    for mutation in ["addReaction", "removeReaction"] {
        let reply = app
            .graphql(
                Some(&bob),
                &format!("mutation($m: ID!) {{ {mutation}(messageId: $m, key: \"👍\") {{ id }} }}"),
                json!({"m": first["id"].to_string()}),
            )
            .await;
        assert!(reply["errors"].is_null(), "{reply}");
    }
    let in_two = send(two, "in two").await;
    put(
        &app,
        &format!("/channel/{two}/users"),
        json!({"uid": "carol"}),
    )
    .await
    .ok(200);
    call(
        &app,
        Method::DELETE,
        &format!("/channel/{two}/users/carol"),
        None,
    )
    .await;
    patch(
        &app,
        &format!("/channel/{two}"),
        json!({"displayName": "deux"}),
    )
    .await
    .ok(200);
    let removed: Reply = call(
        &app,
        Method::DELETE,
        &format!("/channel/{two}/messages/{}", in_two["id"].as_i64().unwrap()),
        None,
    )
    .await;
    assert!(removed.status < 300, "{}", removed.text);
    delete(&app, &format!("/channel/{two}")).await.ok(200);
    send(one, "again in one").await;

    let everything = receiver.wait_delivered("/everything", 10).await;
    let types: Vec<(String, i64)> = everything
        .iter()
        .map(|r| {
            (
                r.body["type"].as_str().unwrap().to_owned(),
                r.body["channelId"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    let mut expected = vec![
        ("message.created".to_owned(), one),
        ("reaction.added".to_owned(), one),
        ("reaction.removed".to_owned(), one),
        ("message.created".to_owned(), two),
        ("member.joined".to_owned(), two),
        ("member.left".to_owned(), two),
        ("channel.updated".to_owned(), two),
        ("message.deleted".to_owned(), two),
        ("channel.deleted".to_owned(), two),
        ("message.created".to_owned(), one),
    ];
    expected.sort();
    assert_eq!(sorted, expected);
    let membership = receiver.wait_delivered("/membership", 2).await;
    let in_one = receiver.wait_delivered("/messages-in-one", 2).await;
    // Give stray deliveries time to arrive, then count exactly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered("/everything").len(), 10);
    let reactions = receiver.wait_delivered("/reactions", 2).await;
    let mut changes: Vec<(String, Value, Value, Value)> = reactions
        .iter()
        .map(|r| {
            let data = &r.body["data"];
            (
                r.body["type"].as_str().unwrap().to_owned(),
                data["messageId"].clone(),
                data["key"].clone(),
                data["count"].clone(),
            )
        })
        .collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changes,
        [
            (
                "reaction.added".to_owned(),
                first["id"].clone(),
                json!("👍"),
                json!(1)
            ),
            (
                "reaction.removed".to_owned(),
                first["id"].clone(),
                json!("👍"),
                json!(0)
            ),
        ]
    );
    assert_eq!(receiver.delivered("/membership").len(), 2);
    assert_eq!(
        membership
            .iter()
            .map(|r| r.body["data"]["userId"].clone())
            .collect::<Vec<_>>(),
        [json!("carol"), json!("carol")]
    );
    let contents: Vec<&str> = in_one
        .iter()
        .map(|r| r.body["data"]["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(receiver.delivered("/messages-in-one").len(), 2);
    assert!(contents.contains(&"in one") && contents.contains(&"again in one"));
    assert!(receiver.delivered("/disabled").is_empty());
    receiver.assert_signatures_valid();
    // A channel's events keep their seq order per channel.
    let seqs_two: Vec<i64> = everything
        .iter()
        .filter(|r| r.body["channelId"] == two && r.body["type"] != "channel.deleted")
        .map(|r| r.body["seq"].as_i64().unwrap())
        .collect();
    let mut sorted_seqs = seqs_two.clone();
    sorted_seqs.sort();
    sorted_seqs.dedup();
    assert_eq!(sorted_seqs.len(), 5, "{seqs_two:?}");
    app.shutdown().await;
}

async fn unread_offline_goes_to_members_not_connected_who_did_not_read(backend: TestBackend) {
    use crate::graphql::client::{MODERN, Ws};
    let receiver = Receiver::start().await;
    let Some(app) = TestApp::spawn_with(backend, |config| {
        quick(config);
        config.webhook_unread_delay_ms = 1500;
    })
    .await
    else {
        return;
    };
    let webhook = create_webhook(
        &app,
        json!({"url": format!("{}/unread", receiver.url), "secret": SECRET,
               "eventTypes": ["message.unread_offline"]}),
    )
    .await;
    let channel = create_channel(&app, "team", &["alice", "bob", "carol", "dave"]).await;
    // dave is connected; alice (the sender), carol (who reads it) and
    // dave get nothing, bob does.
    let _dave = Ws::open(&app.ws_url, MODERN, &app.token("dave")).await;
    let message = post(
        &app,
        &format!("/channel/{channel}/messages"),
        json!({"content": "are you there?", "senderId": "alice"}),
    )
    .await
    .ok(201)
    .clone();
    let read = app
        .graphql(
            Some(&app.token("carol")),
            "mutation($c: ID!, $s: Int!) { markRead(channel: $c, seq: $s) { lastReadSeq } }",
            json!({"c": channel.to_string(), "s": message["seq"]}),
        )
        .await;
    assert_eq!(
        read["data"]["markRead"]["lastReadSeq"], message["seq"],
        "{read}"
    );
    // A message deleted before the delay is not notified.
    let deleted = post(
        &app,
        &format!("/channel/{channel}/messages"),
        json!({"content": "never mind", "senderId": "alice"}),
    )
    .await
    .ok(201)
    .clone();
    let reply = call(
        &app,
        Method::DELETE,
        &format!("/channel/{channel}/messages/{}", deleted["id"]),
        None,
    )
    .await;
    assert!(reply.status < 300, "{}", reply.text);

    let delivered = receiver.wait_delivered("/unread", 1).await;
    let body = &delivered[0].body;
    assert_eq!(body["type"], "message.unread_offline", "{body}");
    assert_eq!(body["channelId"], channel);
    assert_eq!(body["seq"], message["seq"]);
    assert_eq!(body["data"]["userId"], "bob");
    assert_eq!(body["data"]["message"]["content"], "are you there?");
    assert_eq!(body["data"]["message"]["senderId"], "alice");
    // Not earlier than the delay.
    assert!(
        body["createdAt"].as_i64().unwrap() >= message["createdAt"].as_i64().unwrap() + 1500,
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        receiver.delivered("/unread").len(),
        1,
        "{:#?}",
        receiver.received()
    );
    receiver.assert_signatures_valid();
    let attempts = get(&app, &format!("/webhooks/{}/deliveries", webhook["id"])).await;
    assert_eq!(attempts.ok(200)[0]["eventType"], "message.unread_offline");
    app.shutdown().await;
}

// ----- restarts -------------------------------------------------------------

async fn start_node(database_url: &str, worker: bool) -> RunningServer {
    let mut config = test_config(database_url);
    quick(&mut config);
    config.webhook_worker = worker;
    let store = clacks_server::connect_store(&config, &Default::default())
        .await
        .expect("connect");
    clacks_server::start(&config, store).await.expect("start")
}

async fn admin(server: &RunningServer, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new().request(
        method,
        format!("http://{}/api/v1{path}", server.management_addr),
    );
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {response:?}");
    response.json().await.unwrap_or(Value::Null)
}

/// The outbox survives a restart before it was routed (first run without
/// a worker), and deliveries failing at a restart are sent after it, with
/// their attempts counted on.
async fn pending_deliveries_survive_restarts(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let receiver = Receiver::start().await;

    // 1. No worker: the events wait in the outbox.
    let first = start_node(&db.url, false).await;
    let webhook = admin(
        &first,
        Method::POST,
        "/webhooks",
        Some(json!({"url": format!("{}/hook", receiver.url), "secret": SECRET})),
    )
    .await;
    let id = webhook["id"].as_i64().unwrap();
    let channel = admin(
        &first,
        Method::POST,
        "/channel",
        Some(json!({"displayName": "c", "initialUsers": ["alice"]})),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    admin(
        &first,
        Method::POST,
        &format!("/channel/{channel}/messages"),
        Some(json!({"content": "before any worker", "senderId": "alice"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
    first.shutdown().await;

    // 2. A worker, but the receiver is down: attempts fail and are kept.
    receiver.state.failing.store(true, Ordering::SeqCst);
    let second = start_node(&db.url, true).await;
    admin(
        &second,
        Method::POST,
        &format!("/channel/{channel}/messages"),
        Some(json!({"content": "while failing", "senderId": "alice"})),
    )
    .await;
    // Until each delivery has a failed attempt recorded, and one retry.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempts = admin(
            &second,
            Method::GET,
            &format!("/webhooks/{id}/deliveries"),
            None,
        )
        .await;
        let ids: std::collections::HashSet<&str> = attempts
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["deliveryId"].as_str())
            .collect();
        if ids.len() == 2 && attempts.as_array().unwrap().len() >= 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{attempts}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    second.shutdown().await;
    let failed_attempts = receiver.received().len();
    assert!(receiver.delivered("/hook").is_empty());

    // 3. Restarted, with the receiver back: both are delivered.
    receiver.state.failing.store(false, Ordering::SeqCst);
    let third = start_node(&db.url, true).await;
    let delivered = receiver.wait_delivered("/hook", 2).await;
    receiver.assert_signatures_valid();
    let mut contents: Vec<&str> = delivered
        .iter()
        .map(|r| r.body["data"]["message"]["content"].as_str().unwrap())
        .collect();
    contents.sort();
    assert_eq!(contents, ["before any worker", "while failing"]);
    // Each delivered on a later attempt than its failed ones, same id.
    for done in &delivered {
        assert!(done.attempt >= 2, "{done:?}");
        assert!(
            receiver
                .received()
                .iter()
                .any(|r| r.delivery_id == done.delivery_id && r.status == 500)
        );
    }
    // The API lists every attempt made across the three runs (those the
    // shutdown interrupted were not recorded, and are not counted).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attempts = admin(
        &third,
        Method::GET,
        &format!("/webhooks/{id}/deliveries?limit=200"),
        None,
    )
    .await;
    let attempts = attempts.as_array().unwrap();
    assert!(attempts.len() <= failed_attempts + 2);
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a["outcome"] == "delivered")
            .count(),
        2
    );
    third.shutdown().await;
}

/// Two nodes on one database, both with a worker, events committed through
/// both: every event is delivered, each delivery once (one node claims it).
async fn two_nodes_on_one_database_send_each_delivery_once(backend: TestBackend) {
    const MESSAGES: usize = 40;
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let a = start_node(&db.url, true).await;
    let b = start_node(&db.url, true).await;
    admin(
        &a,
        Method::POST,
        "/webhooks",
        Some(json!({"url": format!("{}/hook", receiver.url), "secret": SECRET})),
    )
    .await;
    let channel = admin(
        &a,
        Method::POST,
        "/channel",
        Some(json!({"displayName": "c", "initialUsers": ["alice"]})),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/channel/{channel}/messages");
    let sends = (0..MESSAGES).map(|n| {
        let node = if n % 2 == 0 { &a } else { &b };
        admin(
            node,
            Method::POST,
            &path,
            Some(json!({"content": format!("m{n}"), "senderId": "alice"})),
        )
    });
    futures::future::join_all(sends).await;
    let delivered = receiver.wait_delivered("/hook", MESSAGES).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = receiver.received();
    assert_eq!(all.len(), MESSAGES, "each delivery sent once: {all:#?}");
    let mut seqs: Vec<i64> = delivered
        .iter()
        .map(|r| r.body["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=MESSAGES as i64).collect::<Vec<_>>());
    receiver.assert_signatures_valid();
    a.shutdown().await;
    b.shutdown().await;
}
