//! Two nodes sharing one database and the local NATS server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/graphql/client.rs"]
mod client;
#[allow(dead_code, unused_macros)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clacks_core::{ChannelId, Seq};
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

struct Cluster {
    a: RunningServer,
    b: RunningServer,
    b_proxy: CuttableProxy,
    _db: TestDatabase,
}

async fn cluster(backend: TestBackend) -> Option<Cluster> {
    if !nats_reachable().await {
        return None;
    }
    let db = TestDatabase::create(backend).await?;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let b_proxy = CuttableProxy::start().await;
    let mut nodes = Vec::new();
    for nats_url in [format!("nats://{NATS_ADDR}"), b_proxy.url()] {
        let mut config = test_config(&db.url);
        config.nats_url = Some(nats_url);
        config.nats_subject_prefix = prefix.clone();
        let store = clacks_server::connect_store(&config, &Default::default())
            .await
            .unwrap();
        nodes.push(clacks_server::start(&config, store).await.unwrap());
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    // Both subscriptions are live once each node answers a round trip.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Some(Cluster {
        a,
        b,
        b_proxy,
        _db: db,
    })
}

macro_rules! cluster_tests {
    ($($name:ident),* $(,)?) => {
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
    force_disconnect_reaches_every_node
);

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
