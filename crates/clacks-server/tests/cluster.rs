//! Two nodes sharing one database and the local NATS server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unused_macros)]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clacks_core::{ChannelId, EventPayload, Seq};
use clacks_delivery::Delivery;
use clacks_server::RunningServer;
use clacks_service::{Caller, ChatService};
use clacks_testkit::{TestBackend, TestDatabase};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

fn caller(service: &ChatService, user: &str) -> Caller {
    let token = service
        .admin_mint_token(user.into(), Default::default())
        .unwrap()
        .token;
    service.authenticate(&token).unwrap()
}

async fn created_seqs_until(
    stream: &mut clacks_service::EventStream,
    last: Seq,
    within: Duration,
) -> Vec<Seq> {
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while seqs.last().copied().unwrap_or(0) < last {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Delivery::Event(event))) => {
                if let EventPayload::MessageCreated { .. } = event.payload {
                    seqs.push(event.seq);
                }
            }
            Ok(other) => panic!("stream ended: {other:?}"),
            Err(_) => panic!("timed out at {:?} waiting for {last}", seqs.last()),
        }
    }
    seqs
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

async fn subscriber_on_b_gets_every_message_from_both_nodes_in_order(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let (a, b) = (cluster.a.service.clone(), cluster.b.service.clone());
    let channel: ChannelId = a
        .admin_create_channel(
            "two nodes".into(),
            vec!["ann".into(), "bob".into(), "eve".into()],
            None,
        )
        .await
        .unwrap()
        .id;
    let mut stream = b
        .subscribe_events(&caller(&b, "eve"), Some(channel), &[])
        .await
        .unwrap();
    let senders = [
        (a.clone(), caller(&a, "ann")),
        (b.clone(), caller(&b, "bob")),
    ];
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(service, who)| {
            tokio::spawn(async move {
                for i in 0..100 {
                    service
                        .send(&who, channel, format!("{i}"), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let got = created_seqs_until(&mut stream, 200, Duration::from_secs(20)).await;
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

async fn cutting_nats_loses_nothing(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let (a, b) = (cluster.a.service.clone(), cluster.b.service.clone());
    let channel: ChannelId = a
        .admin_create_channel("outage".into(), vec!["ann".into(), "eve".into()], None)
        .await
        .unwrap()
        .id;
    let ann = caller(&a, "ann");
    let mut stream = b
        .subscribe_events(&caller(&b, "eve"), Some(channel), &[])
        .await
        .unwrap();
    for i in 0..10 {
        a.send(&ann, channel, format!("before {i}"), None)
            .await
            .unwrap();
    }
    assert_eq!(
        created_seqs_until(&mut stream, 10, Duration::from_secs(10)).await,
        (1..=10).collect::<Vec<_>>()
    );

    cluster.b_proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..30 {
        a.send(&ann, channel, format!("during {i}"), None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.b_proxy.restore();
    // Nothing after the outage reveals the gap: the reconnect must.
    let got = created_seqs_until(&mut stream, 40, Duration::from_secs(30)).await;
    assert_eq!(got, (11..=40).collect::<Vec<_>>());
    // And live delivery resumes.
    a.send(&ann, channel, "after".into(), None).await.unwrap();
    assert_eq!(
        created_seqs_until(&mut stream, 41, Duration::from_secs(10)).await,
        vec![41]
    );
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}

async fn force_disconnect_reaches_every_node(backend: TestBackend) {
    let Some(cluster) = cluster(backend).await else {
        return;
    };
    let (a, b) = (cluster.a.service.clone(), cluster.b.service.clone());
    let mut on_a = a.register_connection(&caller(&a, "zoe"));
    let mut on_b = b.register_connection(&caller(&b, "zoe"));
    let _other = b.register_connection(&caller(&b, "ann"));
    let closed = a.admin_disconnect_user("zoe".into()).await.unwrap();
    assert_eq!(closed, 2);
    for guard in [&mut on_a, &mut on_b] {
        let reason = tokio::time::timeout(Duration::from_secs(2), guard.closed())
            .await
            .unwrap();
        assert_eq!(reason, clacks_delivery::CloseReason::ForcedDisconnect);
    }
    cluster.a.shutdown().await;
    cluster.b.shutdown().await;
}
