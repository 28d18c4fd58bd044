//! SIGTERM during sends. The server exits cleanly; every ack a client got
//! is stored, and every send it got no ack for is either stored once (its
//! retry, same client message id, on the restarted server finds it) or
//! absent. Graceful shutdown (issue 11) promises more: every socket is
//! closed with 1001, and a send the server committed is acknowledged
//! before the close.

use std::collections::HashSet;
use std::process::ExitStatus;
use std::time::Duration;

use clacks_core::Message;
use clacks_testkit::{TestBackend, TestDatabase};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::harness::server::{Server, ServerOptions};
use crate::harness::traffic::{
    SendLog, SendPlan, SubscribePlan, SubscriberLog, finish, start_senders, start_subscriber,
};
use crate::harness::verify::{check_durable, check_retries, stored_messages};

/// `CLACKS_SHUTDOWN_GRACE` of the server under test (seconds).
const GRACE: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_acknowledged_message() {
    let Some(run) = SigtermRun::new().await else {
        return;
    };
    assert!(run.exit.success(), "exit after SIGTERM: {:?}", run.exit);
    let restarted = Server::start("restarted", &run.options).await;
    let by_id = check_durable(&run.stored, &run.senders);
    let retried = check_retries(&restarted, &run.db.url, run.channel, &run.senders, &by_id).await;
    let acked: usize = run.senders.iter().map(|l| l.acked().count()).sum();
    println!(
        "SIGTERM: {acked} acked, {} stored without an ack reaching its sender, {retried} \
         stored by their retry; closes seen: {:?}",
        run.stored.len() - acked,
        run.closes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1001_after_acknowledging_every_committed_send() {
    let Some(run) = SigtermRun::new().await else {
        return;
    };
    for (who, close) in run.closes() {
        assert_eq!(close.map(|(code, _)| code), Some(1001), "{who}");
    }
    let acked: HashSet<&str> = run
        .senders
        .iter()
        .flat_map(|l| l.acked().map(|(id, _)| id))
        .collect();
    for message in &run.stored {
        let id = message.client_message_id.as_deref().unwrap_or_default();
        assert!(
            acked.contains(id),
            "{id} (seq {}) was committed, but its sender never got the ack",
            message.seq
        );
    }
}

/// Senders and a subscriber on one server that gets SIGTERM at a random
/// moment.
struct SigtermRun {
    db: TestDatabase,
    options: ServerOptions,
    channel: i64,
    exit: ExitStatus,
    senders: Vec<SendLog>,
    subscriber: SubscriberLog,
    stored: Vec<Message>,
}

impl SigtermRun {
    async fn new() -> Option<SigtermRun> {
        let db = TestDatabase::create(TestBackend::Sqlite).await?;
        let options = ServerOptions::new(&db.url).with("CLACKS_SHUTDOWN_GRACE", GRACE);
        let mut server = Server::start("terminated", &options).await;
        let users: Vec<String> = (0..3).map(|i| format!("sender{i}")).collect();
        let members: Vec<String> = users.iter().cloned().chain(["watcher".into()]).collect();
        let channel = server.create_channel("sigterm", &members).await;

        // Never told a last seq: it reads until the server closes it.
        let (_last, until) = watch::channel(None);
        let subscriber = start_subscriber(
            SubscribePlan::new(&server.ws_url(), "watcher", channel),
            until,
        )
        .await;
        let stop = CancellationToken::new();
        let plans = users
            .iter()
            .map(|user| SendPlan::new(&server.ws_url(), user, channel));
        let sending = start_senders(plans, &stop).await;
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..1000))).await;
        let exit = server.terminate(Duration::from_secs(GRACE + 10)).await;
        stop.cancel();
        let senders = finish(sending).await;
        let subscriber = subscriber.await.unwrap();
        let stored = stored_messages(&db.url, channel).await;
        Some(SigtermRun {
            db,
            options,
            channel,
            exit,
            senders,
            subscriber,
            stored,
        })
    }

    /// How each client's socket ended.
    fn closes(&self) -> Vec<(String, Option<(u16, String)>)> {
        let mut closes: Vec<_> = self
            .senders
            .iter()
            .map(|l| (l.user.clone(), l.closes.first().cloned()))
            .collect();
        let subscriber_close = self.subscriber.runs.last().and_then(|r| r.close.clone());
        closes.push((self.subscriber.user.clone(), subscriber_close));
        closes
    }
}
