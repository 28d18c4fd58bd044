//! Two nodes sharing one database and a NATS server: the local one, or
//! one the test owns when it must stop it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/graphql/client.rs"]
mod client;
#[allow(dead_code, unused_macros)]
#[path = "api/helpers.rs"]
mod helpers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use clacks_core::{ChannelEvent, ChannelId, EventPayload, Message, MessageId, Sender, Seq};
use clacks_server::RunningServer;
use clacks_testkit::{TestBackend, TestDatabase};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::client::{Frame, LEGACY, MODERN, Ws};
use crate::helpers::test_config;

const NATS_ADDR: &str = "127.0.0.1:4222";

/// A TCP proxy in front of NATS that can cut and restore one node's link.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl CuttableProxy {
    async fn start() -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accept_cut = cut.clone();
        let accept_generation = generation.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if accept_cut.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let mut killed = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(NATS_ADDR).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        CuttableProxy {
            port,
            cut,
            generation,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops the live connections and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

async fn nats_reachable() -> bool {
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(NATS_ADDR)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            clacks_testkit::skip_or_fail(&format!("NATS at {NATS_ADDR}"), &e.to_string());
            false
        }
        Err(_) => {
            clacks_testkit::skip_or_fail(&format!("NATS at {NATS_ADDR}"), "timed out");
            false
        }
    }
}

/// A `nats-server` of the test's own on a free port (never the shared one
/// on 4222), so that it can be stopped and started again.
struct OwnNats {
    port: u16,
    server: Option<tokio::process::Child>,
}

impl OwnNats {
    async fn start() -> Option<OwnNats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let mut nats = OwnNats { port, server: None };
        if let Err(why) = nats.run().await {
            clacks_testkit::skip_or_fail("a nats-server binary of the test's own", &why);
            return None;
        }
        Some(nats)
    }

    /// Starts the server (again) on its port, and waits until it answers.
    async fn run(&mut self) -> Result<(), String> {
        let server = tokio::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        self.server = Some(server);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("nats-server did not listen within 5 s".into())
    }

    async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill().await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Two nodes on one database, each on its own NATS URL, under one subject
/// prefix of their own.
async fn nodes(db: &TestDatabase, urls: [String; 2]) -> (RunningServer, RunningServer, String) {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut nodes = Vec::new();
    for nats_url in urls {
        let mut config = test_config(&db.url);
        config.nats_url = Some(nats_url);
        config.nats_subject_prefix = prefix.clone();
        config.presence_ttl = PRESENCE_TTL.as_secs();
        // The senders here write as fast as the node answers, for as long
        // as a test runs (tens of seconds with the NATS linger): at the
        // default query cost budget a fast machine's sender ran out of it
        // (`RATE_LIMITED`) mid-test. These tests are about delivery; the
        // budget has tests of its own.
        config.query_cost_rate = 1_000_000;
        config.query_cost_burst = 1_000_000;
        let store = clacks_server::connect_store(&config, &Default::default())
            .await
            .unwrap();
        nodes.push(clacks_server::start(&config, store).await.unwrap());
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    // Both subscriptions are live once each node answers a round trip.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (a, b, prefix)
}

struct Cluster {
    a: RunningServer,
    b: RunningServer,
    b_proxy: CuttableProxy,
    prefix: String,
    _db: TestDatabase,
}

async fn cluster(backend: TestBackend) -> Option<Cluster> {
    if !nats_reachable().await {
        return None;
    }
    let db = TestDatabase::create(backend).await?;
    let b_proxy = CuttableProxy::start().await;
    let (a, b, prefix) = nodes(&db, [format!("nats://{NATS_ADDR}"), b_proxy.url()]).await;
    Some(Cluster {
        a,
        b,
        b_proxy,
        prefix,
        _db: db,
    })
}

macro_rules! cluster_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::Sqlite).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::MySql).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(clacks_testkit::TestBackend::Postgres).await })*
        }
    };
}

cluster_tests!(
    subscriber_on_b_gets_every_message_from_both_nodes_in_order,
    cutting_nats_loses_nothing,
    force_disconnect_reaches_every_node,
    a_nats_restart_does_not_close_a_subscriber_that_reads,
    a_lost_publish_of_a_channels_last_message_arrives_within_a_second,
    forged_and_unsigned_nats_messages_are_dropped_and_counted,
    presence_crosses_nodes_and_a_silent_nodes_users_expire,
    a_subscriber_on_a_node_without_interest_gets_every_event_after_its_seq,
    a_channel_followed_only_on_a_reaches_only_a,
    an_all_channels_subscriber_follows_a_channel_it_is_added_to_on_the_other_node,
    a_subscription_starts_once_its_nats_interest_is_registered,
    bulk_changes_through_b_reach_subscribers_on_a
);

/// The nodes' presence TTL: short, so that a silent node's users expire
/// within the test.
const PRESENCE_TTL: Duration = Duration::from_secs(2);

const EVENTS: &str = "subscription($c: ID) { events(channel: $c) { seq ... on MessageCreated { message { content } } } }";

fn ws_url(node: &RunningServer) -> String {
    format!("ws://{}/graphql", node.client_addr)
}

fn token(user: &str) -> String {
    client::token_with(
        serde_json::json!({"sub": user, "nbf": client::now(), "exp": client::now() + 600}),
    )
}

/// Reads a subscriber's created-message seqs until `last`.
async fn ws_seqs_until(ws: &mut Ws, last: Seq) -> Vec<Seq> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < last {
        match ws.frame().await {
            Frame::Json(frame) => {
                let event = &frame["payload"]["data"]["events"];
                if event["message"].is_object() {
                    seqs.push(event["seq"].as_i64().unwrap());
                }
            }
            Frame::Closed(code, reason) => panic!("closed {code} {reason} after {:?}", seqs.last()),
        }
    }
    seqs
}

/// Sends `count` messages as `user` through a node's GraphQL endpoint.
async fn send_over_http(node: &RunningServer, user: &str, channel: ChannelId, count: usize) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", node.client_addr);
    let bearer = token(user);
    for i in 0..count {
        let response: serde_json::Value = http
            .post(&url)
            .bearer_auth(&bearer)
            .json(&serde_json::json!({
                "query": "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }",
                "variables": {"c": channel.to_string(), "t": format!("{user} {i}")},
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            response["data"]["createMessage"]["seq"].is_i64(),
            "{response}"
        );
    }
}

async fn subscriber_on_b_gets_every_message_from_both_nodes_in_order(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel(
            "two nodes".into(),
            vec!["ann".into(), "bob".into(), "eve".into()],
            None,
        )
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.b), MODERN, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::join!(
        send_over_http(&cluster.a, "ann", channel, 100),
        send_over_http(&cluster.b, "bob", channel, 100),
    );
    let got = tokio::time::timeout(Duration::from_secs(30), ws_seqs_until(&mut eve, 200))
        .await
        .unwrap();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

async fn cutting_nats_loses_nothing(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("outage".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.b), LEGACY, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_over_http(&cluster.a, "ann", channel, 10).await;
    assert_eq!(
        ws_seqs_until(&mut eve, 10).await,
        (1..=10).collect::<Vec<_>>()
    );

    cluster.b_proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_over_http(&cluster.a, "ann", channel, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.b_proxy.restore();
    // Nothing after the outage reveals the gap: the reconnect must.
    let got = tokio::time::timeout(Duration::from_secs(30), ws_seqs_until(&mut eve, 40))
        .await
        .unwrap();
    assert_eq!(got, (11..=40).collect::<Vec<_>>());
    // And live delivery resumes.
    send_over_http(&cluster.a, "ann", channel, 1).await;
    assert_eq!(ws_seqs_until(&mut eve, 41).await, vec![41]);
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

async fn force_disconnect_reaches_every_node(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let mut on_a = Ws::open(&ws_url(&cluster.a), MODERN, &token("zoe")).await;
    let mut on_b = Ws::open(&ws_url(&cluster.b), LEGACY, &token("zoe")).await;
    let mut other = Ws::open(&ws_url(&cluster.b), MODERN, &token("ann")).await;
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/users/zoe/disconnect",
            cluster.a.management_addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["closed"], 2, "{response}");
    for ws in [&mut on_a, &mut on_b] {
        let (code, _) = ws.closed().await;
        assert_eq!(code, 4001);
    }
    // Another user's connection stays open.
    other.send(serde_json::json!({"type": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// Posts `count` messages as `user` through a node's service, `writers` at
/// a time.
async fn post_many(node: &RunningServer, user: &str, channel: ChannelId, count: usize) {
    const WRITERS: usize = 16;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let service = node.service.clone();
            let user = user.to_owned();
            tokio::spawn(async move {
                for i in (w..count).step_by(WRITERS) {
                    service
                        .admin_post_message(
                            channel,
                            Some(user.clone()),
                            format!("{user} {i}"),
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

/// The reproduction of a NATS restart under load: thousands of events
/// committed while the server is down reach the subscriber on the other
/// node as a backlog (its node catches up from the database, and the
/// sending node flushes what it queued), and it is not closed as a slow
/// consumer for it: it reads it at its pace, then live events, every one
/// once and in order.
async fn a_nats_restart_does_not_close_a_subscriber_that_reads(backend: TestBackend) {
    const BEFORE: usize = 100;
    const DURING: usize = 3_000;
    const AFTER: usize = 500;
    let Some(mut nats) = OwnNats::start().await else {
        return;
    };
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let (a, b, _) = nodes(&db, [nats.url(), nats.url()]).await;
    let channel: ChannelId = a
        .service
        .admin_create_channel("restart".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&b), MODERN, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_many(&a, "ann", channel, BEFORE).await;
    assert_eq!(
        ws_seqs_until(&mut eve, BEFORE as Seq).await,
        (1..=BEFORE as Seq).collect::<Vec<_>>()
    );

    nats.stop().await;
    post_many(&a, "ann", channel, DURING).await;
    nats.run().await.unwrap();
    let live = {
        let a_service = a.service.clone();
        tokio::spawn(async move {
            for i in 0..AFTER {
                a_service
                    .admin_post_message(channel, Some("ann".into()), format!("after {i}"), None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let last = (BEFORE + DURING + AFTER) as Seq;
    let got = tokio::time::timeout(Duration::from_secs(120), ws_seqs_until(&mut eve, last))
        .await
        .unwrap();
    live.await.unwrap();
    assert_eq!(got, (BEFORE as Seq + 1..=last).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
    nats.stop().await;
}

/// The NATS message of a channel's last message is lost (a fault switch
/// on the sending node): no later seq reveals the gap, and the sending
/// node's next announcement does, so the other node fills it from the
/// database within a second.
async fn a_lost_publish_of_a_channels_last_message_arrives_within_a_second(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("tail".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.b), MODERN, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_over_http(&cluster.a, "ann", channel, 1).await;
    assert_eq!(ws_seqs_until(&mut eve, 1).await, vec![1]);
    let fills_before = metric(&cluster.b, "clacks_tail_fills_total").await;

    cluster.a.service.bus().unwrap().drop_outgoing_events(true);
    send_over_http(&cluster.a, "ann", channel, 1).await;
    let sent = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), ws_seqs_until(&mut eve, 2))
        .await
        .expect("the lost tail never arrived");
    let took = sent.elapsed();
    assert_eq!(got, vec![2]);
    assert!(took < Duration::from_secs(1), "the tail took {took:?}");
    assert!(metric(&cluster.b, "clacks_tail_fills_total").await > fills_before);
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// Someone who can publish on the deployment's subjects but has not the
/// cluster key: a forged message, an unsigned event and an unsigned
/// disconnect request are dropped and counted, and nothing of them reaches
/// anyone.
async fn forged_and_unsigned_nats_messages_are_dropped_and_counted(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("forgery".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.b), MODERN, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unsigned_before = rejected(&cluster.b, "unsigned").await;
    let forged_before = rejected(&cluster.b, "forged").await;

    let forged_event = ChannelEvent {
        channel_id: channel,
        seq: 1,
        durable: true,
        at: clacks_core::now_ms(),
        payload: EventPayload::MessageCreated {
            message: Message {
                id: MessageId(1),
                channel_id: channel,
                seq: 1,
                sender: Sender::System,
                client_message_id: None,
                content: "forged".into(),
                created_at: clacks_core::now_ms(),
                edited_at: None,
                deleted_at: None,
                parent_id: None,
                reply_count: 0,
                last_reply_at: None,
                mentions: Vec::new(),
            },
        },
    };
    let envelope =
        serde_json::json!({"node": 1, "at": clacks_core::now_ms(), "event": forged_event});
    let attacker = async_nats::connect(NATS_ADDR).await.unwrap();
    let events = format!("{}.ch.{channel}", cluster.prefix);
    let disconnect = format!("{}.ctl.disconnect", cluster.prefix);
    attacker
        .publish(
            events.clone(),
            serde_json::to_vec(&envelope).unwrap().into(),
        )
        .await
        .unwrap();
    let mut tagged = vec![0x5a_u8; 32];
    tagged.extend(serde_json::to_vec(&envelope).unwrap());
    attacker.publish(events, tagged.into()).await.unwrap();
    let request = serde_json::json!({"node": 1, "at": clacks_core::now_ms(), "user": "eve"});
    attacker
        .publish(disconnect, serde_json::to_vec(&request).unwrap().into())
        .await
        .unwrap();
    attacker.flush().await.unwrap();

    // Both nodes count what they dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rejected(&cluster.b, "unsigned").await < unsigned_before + 2.0
        || rejected(&cluster.b, "forged").await < forged_before + 1.0
    {
        assert!(Instant::now() < deadline, "the forgeries were not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The real first message is the first stored event eve gets, and she
    // is still connected. The channel's creation may still reach her as
    // unstored (seq 0) member_joined events: its publish from node A races
    // her subscription on node B.
    send_over_http(&cluster.a, "ann", channel, 1).await;
    let frame = loop {
        let Frame::Json(frame) = eve.frame().await else {
            panic!("eve was disconnected");
        };
        if frame["payload"]["data"]["events"]["seq"] != 0 {
            break frame;
        }
    };
    assert_eq!(frame["payload"]["data"]["events"]["seq"], 1, "{frame}");
    assert_eq!(
        frame["payload"]["data"]["events"]["message"]["content"], "ann 0",
        "{frame}"
    );
    eve.send(serde_json::json!({"type": "ping"})).await;
    assert_eq!(eve.recv().await["type"], "pong");
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// A counter's value in a node's `/metrics` (0 when absent). Shared by
/// every node of the test process: compare before and after.
const PRESENCE_EVENTS: &str =
    "subscription($c: ID) { events(channel: $c, kinds: [PRESENCE_CHANGED]) {
    ... on PresenceChanged { userId online lastSeenAt }
} }";

/// The next presence event of `ws` about `user`: (online, lastSeenAt).
async fn presence_of(ws: &mut Ws, user: &str) -> (bool, serde_json::Value) {
    loop {
        let (_, payload) = ws.next_payload().await;
        let event = &payload["data"]["events"];
        if event["userId"] == user {
            return (
                event["online"].as_bool().unwrap(),
                event["lastSeenAt"].clone(),
            );
        }
    }
}

/// Waits until `check` holds, for at most `within`.
async fn eventually(within: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ann connects to B: A sees her online, and A's subscriber of their small
/// channel is told. Her socket on A closing keeps her online (B holds
/// her). B's NATS link cut, with no goodbye: A forgets her within the TTL
/// (B still has her); restored, B's heartbeat brings her back; her socket
/// on B closing makes her offline on A at once.
async fn presence_crosses_nodes_and_a_silent_nodes_users_expire(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("presence".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let ann = clacks_core::UserId::parse("ann").unwrap();
    let mut eve = Ws::open(&ws_url(&cluster.a), MODERN, &token("eve")).await;
    eve.subscribe(
        "p",
        PRESENCE_EVENTS,
        serde_json::json!({"c": channel.to_string()}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ann_on_b = Ws::open(&ws_url(&cluster.b), MODERN, &token("ann")).await;
    assert_eq!(
        presence_of(&mut eve, "ann").await,
        (true, serde_json::Value::Null)
    );
    assert!(cluster.a.service.presence_of(&ann).online);

    let ann_on_a = Ws::open(&ws_url(&cluster.a), MODERN, &token("ann")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ann_on_a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster.a.service.presence_of(&ann).online,
        "B still holds her"
    );

    let cut_at = Instant::now();
    cluster.b_proxy.cut();
    let (online, last_seen) = presence_of(&mut eve, "ann").await;
    assert!(!online);
    assert!(last_seen.is_i64(), "{last_seen}");
    let took = cut_at.elapsed();
    assert!(
        took <= PRESENCE_TTL + Duration::from_secs(1),
        "offline {took:?} after the cut"
    );
    assert!(!cluster.a.service.presence_of(&ann).online);
    assert!(cluster.b.service.presence_of(&ann).online, "B holds her");

    cluster.b_proxy.restore();
    eventually(Duration::from_secs(15), "ann online on A again", || {
        cluster.a.service.presence_of(&ann).online
    })
    .await;
    assert!(presence_of(&mut eve, "ann").await.0);

    drop(ann_on_b);
    let closed_at = Instant::now();
    assert!(!presence_of(&mut eve, "ann").await.0);
    assert!(
        closed_at.elapsed() < PRESENCE_TTL,
        "a close is sent at once, not left to expire"
    );
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

async fn metric(node: &RunningServer, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", node.management_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .sum()
}

async fn rejected(node: &RunningServer, reason: &str) -> f64 {
    metric(
        node,
        &format!("clacks_nats_rejected_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// Sends messages as `user` through `node` one after the other until
/// stopped; `last` is the newest seq sent.
struct Writer {
    last: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(node: SocketAddr, user: &str, channel: ChannelId) -> Writer {
        let last = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (task_last, task_stop) = (last.clone(), stop.clone());
        let bearer = token(user);
        let user = user.to_owned();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://{node}/graphql");
            let mut i = 0;
            while !task_stop.load(Ordering::Acquire) {
                let response: serde_json::Value = http
                    .post(&url)
                    .bearer_auth(&bearer)
                    .json(&serde_json::json!({
                        "query": "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }",
                        "variables": {"c": channel.to_string(), "t": format!("{user} {i}")},
                    }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let seq = response["data"]["createMessage"]["seq"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{response}"));
                task_last.fetch_max(seq, Ordering::AcqRel);
                i += 1;
            }
        });
        Writer { last, stop, task }
    }

    fn last(&self) -> Seq {
        self.last.load(Ordering::Acquire)
    }

    /// Waits until at least `seq` was sent.
    async fn past(&self, seq: Seq) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.last() < seq {
            assert!(Instant::now() < deadline, "the sender did not reach {seq}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> Seq {
        self.stop.store(true, Ordering::Release);
        let last = self.last.clone();
        self.task.await.unwrap();
        last.load(Ordering::Acquire)
    }
}

fn bus(node: &RunningServer) -> &Arc<clacks_delivery::NatsBus> {
    node.service.bus().expect("the nodes run with NATS")
}

/// Waits until `node` has NATS interest in exactly `channels` channels.
async fn interest_settles(node: &RunningServer, channels: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus(node).interest().channels != channels {
        assert!(
            Instant::now() < deadline,
            "interest in {:?} channels, not {channels}",
            bus(node).interest()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const EVENTS_AFTER: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after) { seq ... on MessageCreated { message { content } } } }";

/// B has no interest in a channel A's sender keeps writing to. Subscribers
/// appear on B, each resuming a little behind: each gets every message
/// from its `afterSeq` on, in order, while the writes go on; when the last
/// one leaves, B drops its interest (after the linger), in its own count
/// and on `/metrics`; and the next one starts from no interest again.
async fn a_subscriber_on_a_node_without_interest_gets_every_event_after_its_seq(
    backend: TestBackend,
) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("late".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    assert_eq!(bus(&cluster.b).interest().channels, 0);
    let sender = Writer::start(cluster.a.client_addr, "ann", channel);
    for round in 0..3 {
        sender.past(sender.last() + 20).await;
        let after = sender.last() - 5;
        let mut eve = Ws::open(&ws_url(&cluster.b), MODERN, &token("eve")).await;
        eve.subscribe(
            "e",
            EVENTS_AFTER,
            serde_json::json!({"c": channel.to_string(), "after": after}),
        )
        .await;
        let until = sender.last() + 60;
        let got = tokio::time::timeout(Duration::from_secs(30), ws_seqs_until(&mut eve, until))
            .await
            .unwrap_or_else(|_| panic!("round {round}: not every message reached eve"));
        assert_eq!(
            got,
            (after + 1..=until).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(bus(&cluster.b).interest().channels, 1, "round {round}");
        drop(eve);
        interest_settles(&cluster.b, 0).await;
    }
    sender.stop().await;
    // The gauge of the process (every node of this test process sets it;
    // the exact value per node is `interest()` above).
    let metrics = reqwest::get(format!("http://{}/metrics", cluster.b.management_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for gauge in [
        "clacks_nats_interest_channels",
        "clacks_nats_interest_users",
    ] {
        assert!(metrics.contains(gauge), "{gauge} on /metrics");
    }
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// The point of interest-based routing: B, with nobody following the
/// channel, receives none of its events.
async fn a_channel_followed_only_on_a_reaches_only_a(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let channel: ChannelId = cluster
        .a
        .service
        .admin_create_channel("only a".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.a), MODERN, &token("eve")).await;
    eve.subscribe("e", EVENTS, serde_json::json!({"c": channel.to_string()}))
        .await;
    interest_settles(&cluster.a, 1).await;
    let received_before = bus(&cluster.b).received();
    tokio::join!(
        send_over_http(&cluster.a, "ann", channel, 50),
        send_over_http(&cluster.b, "ann", channel, 50),
    );
    let got = tokio::time::timeout(Duration::from_secs(30), ws_seqs_until(&mut eve, 100))
        .await
        .unwrap();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    // Whatever was on its way to B has arrived by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bus(&cluster.b).received(),
        received_before,
        "B received events of a channel nobody follows there"
    );
    assert_eq!(bus(&cluster.b).interest().channels, 0);
    assert_eq!(bus(&cluster.a).interest().channels, 1);
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

const ALL_EVENTS: &str =
    "subscription { events { __typename channelId seq ... on MemberJoined { userId } } }";

/// Eve's all-channels stream is on A. Channels she is not in are written
/// to through B; she is added to each through B's management API while
/// the writes go on. A had no interest in them: her stream gets her join,
/// then every message after it, in order.
async fn an_all_channels_subscriber_follows_a_channel_it_is_added_to_on_the_other_node(
    backend: TestBackend,
) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let lobby: ChannelId = cluster
        .a
        .service
        .admin_create_channel("lobby".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.a), MODERN, &token("eve")).await;
    eve.subscribe("e", ALL_EVENTS, serde_json::json!({})).await;
    // Her stream is live once a lobby message comes through.
    let lobby_id = lobby.to_string();
    'live: for _ in 0..50 {
        send_over_http(&cluster.a, "ann", lobby, 1).await;
        let deadline = Instant::now() + Duration::from_millis(200);
        while let Ok(Frame::Json(frame)) =
            tokio::time::timeout_at(deadline.into(), eve.frame()).await
        {
            if frame["payload"]["data"]["events"]["channelId"] == lobby_id.as_str() {
                break 'live;
            }
        }
    }
    assert_eq!(bus(&cluster.a).interest().users, 1, "eve's user subject");
    let http = reqwest::Client::new();
    for round in 0..3 {
        let channel: ChannelId = cluster
            .b
            .service
            .admin_create_channel(format!("room {round}"), vec!["ann".into()], None)
            .await
            .unwrap()
            .id;
        let channel_id = channel.to_string();
        let sender = Writer::start(cluster.b.client_addr, "ann", channel);
        sender.past(10).await;
        let added = http
            .put(format!(
                "http://{}/api/v1/channel/{channel}/users",
                cluster.b.management_addr
            ))
            .json(&serde_json::json!({"uid": "eve"}))
            .send()
            .await
            .unwrap();
        assert!(added.status().is_success(), "{}", added.status());
        sender.past(sender.last() + 30).await;
        let last = sender.stop().await;
        read_from_join(
            &mut eve,
            &channel_id,
            last,
            &format!("round {round}"),
            |event| event["__typename"] == "MemberJoined" && event["userId"] == "eve",
        )
        .await;
    }
    assert_eq!(
        bus(&cluster.a).interest().channels,
        4,
        "the lobby and the three rooms"
    );
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// The ordering the gap-free start rests on, without the safety nets that
/// would hide a mistake: B subscribes to a channel it had no interest in,
/// and right after the subscription is returned, A publishes an event that
/// is in no database (so no gap fill or announcement could bring it). It
/// reaches B only if B's NATS subscription was registered with the server
/// before the subscription returned, which is what B's probe shows.
async fn a_subscription_starts_once_its_nats_interest_is_registered(backend: TestBackend) {
    use futures::StreamExt;
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let eve = cluster.b.service.authenticate(&token("eve")).unwrap();
    for round in 0..20 {
        let channel: ChannelId = cluster
            .a
            .service
            .admin_create_channel(format!("probe {round}"), vec!["eve".into()], None)
            .await
            .unwrap()
            .id;
        let mut stream = cluster
            .b
            .service
            .subscribe_events(&eve, Some(channel), &[])
            .await
            .unwrap();
        bus(&cluster.a).publish(&ChannelEvent {
            channel_id: channel,
            seq: 1,
            durable: true,
            at: clacks_core::now_ms(),
            payload: EventPayload::MessageCreated {
                message: Message {
                    id: MessageId(1),
                    channel_id: channel,
                    seq: 1,
                    sender: Sender::System,
                    client_message_id: None,
                    content: "only on the wire".into(),
                    created_at: clacks_core::now_ms(),
                    edited_at: None,
                    deleted_at: None,
                    parent_id: None,
                    reply_count: 0,
                    last_reply_at: None,
                    mentions: Vec::new(),
                },
            },
        });
        let delivered = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match stream.next().await {
                    Some(clacks_delivery::Delivery::Event(event)) if event.durable => {
                        break event.seq;
                    }
                    Some(clacks_delivery::Delivery::Event(_)) => {}
                    other => panic!("round {round}: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: published before B's interest was live"));
        assert_eq!(delivered, 1, "round {round}");
    }
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

const BATCH_EVENTS: &str = "subscription($c: ID) { events(channel: $c) { __typename channelId seq
    ... on MembersJoined { count truncated }
    ... on MembersLeft { count truncated } } }";

/// Bulk requests through B's management API, too large for the events to
/// list their users, while messages are sent through B: eve's all-channels
/// stream on A (no interest in the channel before) gets the batched join
/// and every message after it in order; bob's subscription of the channel
/// on A ends right after the batched removal that includes him.
async fn bulk_changes_through_b_reach_subscribers_on_a(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let lobby: ChannelId = cluster
        .a
        .service
        .admin_create_channel("lobby".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let mut eve = Ws::open(&ws_url(&cluster.a), MODERN, &token("eve")).await;
    eve.subscribe("e", BATCH_EVENTS, serde_json::json!({}))
        .await;
    let lobby_id = lobby.to_string();
    'live: for _ in 0..50 {
        send_over_http(&cluster.a, "ann", lobby, 1).await;
        let deadline = Instant::now() + Duration::from_millis(200);
        while let Ok(Frame::Json(frame)) =
            tokio::time::timeout_at(deadline.into(), eve.frame()).await
        {
            if frame["payload"]["data"]["events"]["channelId"] == lobby_id.as_str() {
                break 'live;
            }
        }
    }
    let channel: ChannelId = cluster
        .b
        .service
        .admin_create_channel("room".into(), vec!["ann".into(), "bob".into()], None)
        .await
        .unwrap()
        .id;
    let channel_id = channel.to_string();
    let mut bob = Ws::open(&ws_url(&cluster.a), MODERN, &token("bob")).await;
    bob.subscribe("b", BATCH_EVENTS, serde_json::json!({"c": channel_id}))
        .await;
    let http = reqwest::Client::new();
    let bulk = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!(
            "http://{}/api/v1/channel/{channel}/users",
            cluster.b.management_addr
        );
        async move {
            let reply = http.patch(url).json(&body).send().await.unwrap();
            assert!(reply.status().is_success(), "{}", reply.status());
        }
    };
    let sender = Writer::start(cluster.b.client_addr, "ann", channel);
    sender.past(10).await;
    let mut add: Vec<String> = (0..300).map(|n| format!("u{n:05}")).collect();
    add.push("eve".into());
    bulk(serde_json::json!({"add": add})).await;
    sender.past(sender.last() + 20).await;
    let mut remove: Vec<String> = (0..200).map(|n| format!("u{n:05}")).collect();
    remove.push("bob".into());
    bulk(serde_json::json!({"remove": remove})).await;
    sender.past(sender.last() + 20).await;
    let last = sender.stop().await;

    read_from_join(&mut eve, &channel_id, last, "eve", |event| {
        let batched = event["__typename"] == "MembersJoined";
        if batched {
            assert_eq!(
                (event["count"].clone(), event["truncated"].clone()),
                (serde_json::json!(301), serde_json::json!(true))
            );
        }
        batched
    })
    .await;

    // Bob: events until the batched removal, then FORBIDDEN and the end.
    let read = async {
        loop {
            let Frame::Json(frame) = bob.frame().await else {
                panic!("bob's stream closed without its end");
            };
            let event = &frame["payload"]["data"]["events"];
            if event["__typename"] == "MembersLeft" {
                assert_eq!(event["count"], 201, "{event}");
                break event["seq"].as_i64().unwrap();
            }
        }
    };
    let left_at = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("bob's batched removal");
    let Frame::Json(end) = bob.frame().await else {
        panic!("closed");
    };
    assert_eq!(
        end["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{end} after seq {left_at}"
    );
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

/// Reads an all-channels stream's events of `channel_id` until its seq
/// `last`: first the join that `is_join` recognises, then every seq after
/// it, each once and in order (messages, and batched leaves of others).
async fn read_from_join(
    stream: &mut Ws,
    channel_id: &str,
    last: i64,
    what: &str,
    is_join: impl Fn(&serde_json::Value) -> bool,
) {
    let mut joined_at = None;
    let mut seqs = Vec::new();
    let read = async {
        while seqs.last().copied().unwrap_or(0) < last {
            let Frame::Json(frame) = stream.frame().await else {
                panic!("{what}: the stream closed");
            };
            let event = &frame["payload"]["data"]["events"];
            if event["channelId"] != channel_id {
                continue;
            }
            let seq = event["seq"].as_i64().unwrap();
            if is_join(event) {
                assert!(joined_at.is_none() && seqs.is_empty(), "{what}: {event}");
                joined_at = Some(seq);
                continue;
            }
            match event["__typename"].as_str() {
                Some("MessageCreated" | "MembersLeft") => seqs.push(seq),
                _ => panic!("{what}: {event}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("{what}: got {seqs:?} after {joined_at:?}"));
    let joined_at = joined_at.expect("the join first");
    assert_eq!(seqs, (joined_at + 1..=last).collect::<Vec<_>>(), "{what}");
}
