//! A database outage mid-traffic, through a proxy the test cuts: sends
//! fail fast with `UNAVAILABLE` (never an ack for a message that was not
//! committed), `/readyz` answers 503, WebSockets stay open; once the link
//! is back the same process recovers, and nothing acknowledged is missing.

use std::time::Duration;

use clacks_testkit::{TestBackend, TestDatabase};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::LEGACY;
use crate::harness::eventually;
use crate::harness::proxy::TcpProxy;
use crate::harness::server::{Server, ServerOptions};
use crate::harness::traffic::{
    Outcome, SendPlan, SubscribePlan, finish, start_senders, start_subscribers,
};
use crate::harness::verify::{check_delivered, check_durable, stored_messages};

/// How long the database stays unreachable.
const OUTAGE: Duration = Duration::from_secs(3);
/// The longest a send may wait for its `UNAVAILABLE` during the outage: a
/// lookup of its client message id (given up after 0.5 s), the batch in
/// front of it and its own, each trying to connect for at most 1 s.
const FAIL_FAST: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    database_outage(TestBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    database_outage(TestBackend::Postgres).await;
}

async fn database_outage(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let link = TcpProxy::start(TcpProxy::upstream_of(&db.url)).await;
    let server = Server::start("outage", &ServerOptions::new(&link.url_through(&db.url))).await;
    let senders: Vec<String> = (0..3).map(|i| format!("sender{i}")).collect();
    let watchers = ["watcher0".to_owned(), "watcher1".to_owned()];
    let members: Vec<String> = senders.iter().chain(&watchers).cloned().collect();
    let channel = server.create_channel("outage", &members).await;

    let (last, until) = watch::channel(None);
    let subscribers = start_subscribers(
        [
            SubscribePlan::new(&server.ws_url(), &watchers[0], channel),
            SubscribePlan {
                protocol: LEGACY,
                ..SubscribePlan::new(&server.ws_url(), &watchers[1], channel)
            },
        ],
        &until,
    )
    .await;
    let stop = CancellationToken::new();
    let plans = senders.iter().map(|user| SendPlan {
        rate: Some(50.0),
        window: 4,
        ..SendPlan::new(&server.ws_url(), user, channel)
    });
    let sending = start_senders(plans, &stop).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    link.cut().await;
    let cut_at = Instant::now();
    let unready = eventually(OUTAGE, || async {
        server.readyz(Duration::from_secs(3)).await == Some(503)
    })
    .await;
    tokio::time::sleep_until(cut_at + OUTAGE).await;
    link.restore().await;
    let restored_at = Instant::now();
    let ready = eventually(Duration::from_secs(20), || async {
        server.readyz(Duration::from_secs(2)).await == Some(200)
    })
    .await;
    let ready_after = restored_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let logs = finish(sending).await;

    let stored = stored_messages(&db.url, channel).await;
    last.send_replace(Some(stored.len() as i64));
    let subscribers = tokio::time::timeout(Duration::from_secs(30), finish(subscribers))
        .await
        .expect("subscribers catch up within 30 s");
    for log in subscribers {
        assert!(log.closes().is_empty(), "{}: {:?}", log.user, log.closes());
        check_delivered(&log, stored.len() as i64);
    }
    check_durable(&stored, &logs);

    let attempts = || logs.iter().flat_map(|l| &l.attempts);
    let during = || attempts().filter(|a| a.sent_at >= cut_at && a.sent_at < restored_at);
    let sent_during = during().count();
    let refused = during()
        .filter(|a| matches!(a.outcome, Outcome::Refused(_)))
        .count();
    let slowest_refusal = during()
        .filter(|a| matches!(a.outcome, Outcome::Refused(_)))
        .map(|a| a.latency)
        .max()
        .unwrap_or_default();
    let first_ack_after = attempts()
        .filter(|a| a.sent_at >= restored_at && matches!(a.outcome, Outcome::Acked(_)))
        .map(|a| a.sent_at + a.latency - restored_at)
        .min();
    println!(
        "database outage on {}: of {sent_during} sends during {OUTAGE:?}, {refused} refused \
         (slowest in {slowest_refusal:?}), the rest acked once the link came back; recovered \
         (first ack) {first_ack_after:?} after the link came back, /readyz 200 after {ready_after:?}",
        backend.name()
    );
    for sender in &logs {
        assert!(
            sender.closes.is_empty(),
            "{}: {:?}",
            sender.user,
            sender.closes
        );
    }
    assert!(unready, "/readyz never answered 503 during the outage");
    assert!(
        ready,
        "/readyz did not answer 200 within 20 s of the link coming back"
    );
    assert!(refused > 0, "no send was refused during the outage");
    for attempt in during() {
        let id = &attempt.client_message_id;
        match &attempt.outcome {
            Outcome::Refused(code) => {
                assert_eq!(code, "UNAVAILABLE", "{id} sent during the outage");
                assert!(
                    attempt.latency <= FAIL_FAST,
                    "{id} waited {:?} for its UNAVAILABLE",
                    attempt.latency
                );
            }
            // Only a send still waiting for a connection when the link
            // came back can have been committed.
            Outcome::Acked(_) => assert!(
                attempt.sent_at + attempt.latency >= restored_at,
                "{id} was acknowledged while the database was unreachable"
            ),
            Outcome::Unanswered => panic!("{id} got no answer"),
        }
    }
    assert!(
        first_ack_after.is_some_and(|t| t < Duration::from_secs(5)),
        "sends are acknowledged again within 5 s of the link coming back: {first_ack_after:?}"
    );
}
