//! Node loss behind a balancer: two nodes (one database, a NATS server of
//! the test's own) behind HAProxy, every client connected through it; one
//! node is killed with SIGKILL during traffic. Its clients reconnect
//! through the balancer to the other node: subscribers resume after the
//! last seq they saw and miss nothing, with nothing delivered twice;
//! senders send what was not answered again with the same client message
//! id, and nothing is stored twice.

use std::time::Duration;

use clacks_testkit::{TestBackend, TestDatabase};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::LEGACY;
use crate::harness::haproxy::Haproxy;
use crate::harness::nats::NatsServer;
use crate::harness::server::{Server, ServerOptions};
use crate::harness::traffic::{SendPlan, SubscribePlan, finish, start_senders, start_subscribers};
use crate::harness::verify::{check_delivered, check_durable, check_retries, stored_messages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_on_the_other() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(db) = TestDatabase::create(TestBackend::Postgres).await else {
        return;
    };
    let options = ServerOptions::new(&db.url).with("CLACKS_NATS_URL", nats.url());
    let mut doomed = Server::start("doomed", &options).await;
    let survivor = Server::start("survivor", &options).await;
    let Some(balancer) = Haproxy::start(&[doomed.client, survivor.client]).await else {
        return;
    };
    let senders = ["sender0".to_owned(), "sender1".to_owned()];
    let watchers: Vec<String> = (0..4).map(|i| format!("watcher{i}")).collect();
    let members: Vec<String> = senders.iter().chain(&watchers).cloned().collect();
    let channel = survivor.create_channel("node loss", &members).await;

    // Connected one after the other, so the balancer's round robin puts
    // every other subscriber and one sender on each node.
    let (last, until) = watch::channel(None);
    let plans = watchers.iter().enumerate().map(|(i, user)| SubscribePlan {
        reconnect: true,
        protocol: if i < 2 { crate::client::MODERN } else { LEGACY },
        ..SubscribePlan::new(&balancer.ws_url(), user, channel)
    });
    let subscribers = start_subscribers(plans, &until).await;
    let stop = CancellationToken::new();
    let plans = senders.iter().map(|user| SendPlan {
        rate: Some(100.0),
        window: 4,
        reconnect: true,
        ..SendPlan::new(&balancer.ws_url(), user, channel)
    });
    let sending = start_senders(plans, &stop).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    doomed.kill().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    let logs = finish(sending).await;

    let stored = stored_messages(&db.url, channel).await;
    let by_id = check_durable(&stored, &logs);
    last.send_replace(Some(stored.len() as i64));
    let mut reconnects = 0;
    let subscribers = tokio::time::timeout(Duration::from_secs(30), finish(subscribers))
        .await
        .expect("subscribers catch up within 30 s");
    for log in &subscribers {
        reconnects += check_delivered(log, stored.len() as i64);
    }
    let senders_reconnected = logs.iter().filter(|l| !l.closes.is_empty()).count();
    let acked: usize = logs.iter().map(|l| l.acked().count()).sum();
    let retried = check_retries(&survivor, &db.url, channel, &logs, &by_id).await;
    println!(
        "node loss: {} messages stored ({acked} acked, {retried} more stored by a retry after \
         the senders stopped); {reconnects} subscriber and {senders_reconnected} sender \
         reconnects through HAProxy",
        stored.len()
    );
    assert!(
        reconnects >= 1 && senders_reconnected >= 1,
        "the killed node had clients ({reconnects} subscriber, {senders_reconnected} sender reconnects)"
    );
}
