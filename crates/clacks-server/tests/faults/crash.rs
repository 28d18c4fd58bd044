//! kill -9 under concurrent sends: the server process dies at a random
//! moment with sends in flight and is started again on the same database.
//! Every acknowledged message is stored once with the seq of its ack, seqs
//! are gap-free, and a retry of each unanswered send (same client message
//! id) finds its message or stores it once.

use std::time::Duration;

use clacks_testkit::{TestBackend, TestDatabase};
use tokio_util::sync::CancellationToken;

use crate::harness::server::{Server, ServerOptions};
use crate::harness::traffic::{SendPlan, finish, start_senders};
use crate::harness::verify::{check_durable, check_retries, stored_messages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    killed_under_sends(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    killed_under_sends(TestBackend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    killed_under_sends(TestBackend::Postgres).await;
}

async fn killed_under_sends(backend: TestBackend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let options = ServerOptions::new(&db.url);
    let mut server = Server::start("crashing", &options).await;
    let users: Vec<String> = (0..4).map(|i| format!("sender{i}")).collect();
    let channel = server.create_channel("crash", &users).await;

    let stop = CancellationToken::new();
    let plans = users
        .iter()
        .map(|user| SendPlan::new(&server.ws_url(), user, channel));
    let senders = start_senders(plans, &stop).await;
    let at = Duration::from_millis(rand::random_range(300..1500));
    tokio::time::sleep(at).await;
    server.kill().await;
    stop.cancel();
    let logs = finish(senders).await;
    for log in &logs {
        assert_eq!(log.closes.len(), 1, "{}: {:?}", log.user, log.closes);
        assert!(
            log.acked().count() > 0,
            "{} got no ack before the kill",
            log.user
        );
    }

    let restarted = Server::start("restarted", &options).await;
    let stored = stored_messages(&db.url, channel).await;
    let by_id = check_durable(&stored, &logs);
    let acked: usize = logs.iter().map(|l| l.acked().count()).sum();
    let unanswered: usize = logs.iter().map(|l| l.never_acked().len()).sum();
    let stored_unanswered = stored.len() - acked;
    let retried = check_retries(&restarted, &db.url, channel, &logs, &by_id).await;
    println!(
        "kill -9 on {} after {at:?}: {acked} acked, {unanswered} unanswered \
         ({stored_unanswered} of them committed before the kill, {retried} stored by their retry)",
        backend.name()
    );
}
