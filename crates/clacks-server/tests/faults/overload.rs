//! Overload: many more sends than the server can commit (its database
//! slowed down by a proxy), with subscribers that stop reading their
//! socket among the subscribers. The excess is refused (`RATE_LIMITED`) or
//! held back (sends stay unanswered, so clients cannot send more); the
//! server's memory stays bounded; well-behaved clients keep sending and
//! receiving; a subscriber that stopped reading is closed with 4008 or
//! still has every message; and once the load drops, acks are prompt
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clacks_testkit::{TestBackend, TestDatabase};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Frame, MODERN, Ws};
use crate::harness::proxy::TcpProxy;
use crate::harness::server::{Server, ServerOptions};
use crate::harness::token;
use crate::harness::traffic::{
    MESSAGES, Outcome, SendLog, SendPlan, SubscribePlan, finish, start_senders, start_subscribers,
};
use crate::harness::verify::{check_delivered, check_durable, quantile, stored_messages};

/// Added to every database round trip (a batch takes five), so that
/// commits, not the test's clients, are what runs out. The test checks the
/// flood offered at least ten times what the server committed.
const DB_DELAY: Duration = Duration::from_millis(20);
const FLOOD_SENDERS: usize = 16;
/// Together 10,000 sends a second.
const FLOOD_RATE: f64 = 10_000.0 / FLOOD_SENDERS as f64;
/// The per-user send limit: generous (the default is 10/s), below the
/// flood's rate.
const SEND_RATE: u32 = 200;
const OVERLOAD_FOR: Duration = Duration::from_secs(5);
/// Sends in flight per flood sender: 256 in all, about one commit batch
/// (whose events are published at once into each subscription's queue of
/// 1,024).
const FLOOD_WINDOW: usize = 16;
/// Bytes of filler per flood message, so that the subscribers that stopped
/// reading hold megabytes. (The kernel takes 4 MB into a socket's send
/// buffer before the server's own queue fills: the test may not produce
/// enough to see them closed with 4008.)
const FILLER: usize = 1024;
/// Growth of the server's resident memory allowed under the overload:
/// every queue is bounded, so it must not grow with the excess. (Measured:
/// 15 to 35 MiB in a debug build.)
const RSS_GROWTH_BOUND_KIB: u64 = 128 * 1024;
/// Well-behaved senders' p99 ack latency under the overload: only "does
/// not hang" (a send waits behind the queued excess).
const OVERLOADED_P99_BOUND: Duration = Duration::from_secs(15);
/// Their p99 once the load is gone: back to a few round trips.
const RECOVERED_P99_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_or_held_back_within_bounded_memory() {
    let Some(db) = TestDatabase::create(TestBackend::MySql).await else {
        return;
    };
    let link = TcpProxy::with_delay(TcpProxy::upstream_of(&db.url), DB_DELAY).await;
    let options = ServerOptions::new(&link.url_through(&db.url))
        .with("CLACKS_SEND_RATE", SEND_RATE)
        .with("CLACKS_SEND_BURST", SEND_RATE);
    let server = Server::start("overloaded", &options).await;
    let flooders: Vec<String> = (0..FLOOD_SENDERS).map(|i| format!("flood{i}")).collect();
    let steady = ["steady0".to_owned(), "steady1".to_owned()];
    let watchers: Vec<String> = (0..3).map(|i| format!("watcher{i}")).collect();
    let stuck: Vec<String> = (0..3).map(|i| format!("stuck{i}")).collect();
    let members: Vec<String> = [&flooders[..], &steady[..], &watchers[..], &stuck[..]].concat();
    let channel = server.create_channel("overload", &members).await;

    let (last, until) = watch::channel(None);
    let plans = watchers
        .iter()
        .map(|user| SubscribePlan::new(&server.ws_url(), user, channel));
    let subscribers = start_subscribers(plans, &until).await;
    // Subscribed, then never read until the end.
    let mut stuck_sockets = Vec::new();
    for user in &stuck {
        let mut ws = Ws::open(&server.ws_url(), MODERN, &token(user)).await;
        ws.subscribe(
            "messages",
            MESSAGES,
            json!({"c": channel.to_string(), "after": 0}),
        )
        .await;
        stuck_sockets.push(ws);
    }
    let steady_stop = CancellationToken::new();
    let plans = steady.iter().map(|user| SendPlan {
        rate: Some(10.0),
        window: 1,
        ..SendPlan::new(&server.ws_url(), user, channel)
    });
    let steady_senders = start_senders(plans, &steady_stop).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline_kib = server.rss_kib();

    let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
    let sampling = CancellationToken::new();
    let sampler = {
        let (pid, peak, sampling) = (server.pid(), peak_kib.clone(), sampling.clone());
        tokio::spawn(async move {
            while !sampling.is_cancelled() {
                peak.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let flood_stop = CancellationToken::new();
    let flood_started = Instant::now();
    let plans = flooders.iter().map(|user| SendPlan {
        rate: Some(FLOOD_RATE),
        window: FLOOD_WINDOW,
        filler: FILLER,
        ..SendPlan::new(&server.ws_url(), user, channel)
    });
    let flood = start_senders(plans, &flood_stop).await;
    tokio::time::sleep(OVERLOAD_FOR).await;
    flood_stop.cancel();
    let flood_stopped = Instant::now();
    let flood_logs = finish(flood).await;
    let drained = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    steady_stop.cancel();
    let steady_logs = finish(steady_senders).await;
    sampling.cancel();
    sampler.await.unwrap();
    let peak_kib = peak_kib.load(Ordering::Relaxed);

    let all_logs: Vec<&SendLog> = flood_logs.iter().chain(&steady_logs).collect();
    let stored = stored_messages(&db.url, channel).await;
    check_durable(&stored, &flood_logs);
    check_durable(&stored, &steady_logs);
    let target = stored.len() as i64;
    last.send_replace(Some(target));
    let subscribers = tokio::time::timeout(Duration::from_secs(60), finish(subscribers))
        .await
        .expect("well-behaved subscribers catch up within 60 s");
    for log in subscribers {
        assert!(log.closes().is_empty(), "{}: {:?}", log.user, log.closes());
        check_delivered(&log, target);
    }
    let mut stuck_outcomes = Vec::new();
    for (user, ws) in stuck.iter().zip(&mut stuck_sockets) {
        stuck_outcomes.push(drain_stuck(user, ws, target).await);
    }

    let flood_acked: usize = flood_logs.iter().map(|l| l.acked().count()).sum();
    let flood_sent: usize = flood_logs.iter().map(|l| l.attempts.len()).sum();
    let held_back: u64 = flood_logs.iter().map(|l| l.held_back).sum();
    let rate_limited: usize = flood_logs.iter().map(|l| l.refused("RATE_LIMITED")).sum();
    let flood_for = (flood_stopped - flood_started).as_secs_f64();
    let offered = flood_sent as f64 + held_back as f64;
    let steady_latencies = |during: &dyn Fn(Instant) -> bool| {
        let mut latencies: Vec<Duration> = steady_logs
            .iter()
            .flat_map(|l| &l.attempts)
            .filter(|a| during(a.sent_at))
            .map(|a| a.latency)
            .collect();
        quantile(&mut latencies, 0.99)
    };
    let overloaded_p99 = steady_latencies(&|at| at >= flood_started && at < flood_stopped);
    let recovered_p99 = steady_latencies(&|at| at >= drained);
    println!(
        "overload: {:.0} sends/s offered for {flood_for:.1} s, {:.0}/s committed \
         ({:.1}x); of the offered: {flood_acked} acked, {rate_limited} RATE_LIMITED, {held_back} \
         held back by unanswered sends; the flood drained {:?} after it stopped. Well-behaved \
         senders' p99 ack: {overloaded_p99:?} under the overload, {recovered_p99:?} after. \
         RSS {} -> peak {} MiB. Stuck subscribers: {stuck_outcomes:?}",
        offered / flood_for,
        flood_acked as f64 / flood_for,
        offered / flood_acked.max(1) as f64,
        drained - flood_stopped,
        baseline_kib / 1024,
        peak_kib / 1024,
    );

    assert!(
        offered >= 10.0 * flood_acked as f64,
        "the flood offered ten times what the server committed"
    );
    assert!(
        peak_kib.saturating_sub(baseline_kib) < RSS_GROWTH_BOUND_KIB,
        "RSS grew from {baseline_kib} KiB to {peak_kib} KiB"
    );
    for log in &all_logs {
        assert!(log.closes.is_empty(), "{}: {:?}", log.user, log.closes);
        for attempt in &log.attempts {
            match &attempt.outcome {
                Outcome::Acked(_) => {}
                Outcome::Refused(code) if code == "RATE_LIMITED" => {}
                other => panic!("{}: {other:?}", attempt.client_message_id),
            }
        }
    }
    for log in &steady_logs {
        assert!(
            log.acked().count() == log.attempts.len(),
            "{} is within its rate and gets every send through",
            log.user
        );
    }
    assert!(
        overloaded_p99 < OVERLOADED_P99_BOUND,
        "well-behaved p99 under overload: {overloaded_p99:?}"
    );
    assert!(
        recovered_p99 < RECOVERED_P99_BOUND,
        "well-behaved p99 after the overload: {recovered_p99:?}"
    );
    assert_eq!(
        server.readyz(Duration::from_secs(5)).await,
        Some(200),
        "ready once the load is gone"
    );
}

fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Reads what a stuck subscriber was sent: a gap-free run of seqs that
/// either reaches `target` or ends with the slow-consumer close (4008).
/// Says which.
async fn drain_stuck(user: &str, ws: &mut Ws, target: i64) -> String {
    let mut seen = 0i64;
    loop {
        match ws.frame().await {
            Frame::Json(frame) if matches!(frame["type"].as_str(), Some("next")) => {
                let seq = frame["payload"]["data"]["events"]["seq"].as_i64();
                assert_eq!(seq, Some(seen + 1), "{user} after seq {seen}: {frame}");
                seen += 1;
                if seen == target {
                    return format!("{user}: every message");
                }
            }
            Frame::Json(frame) => panic!("{user}: unexpected {frame}"),
            Frame::Closed(code, reason) => {
                assert_eq!(code, 4008, "{user} closed after seq {seen}: {reason}");
                return format!("{user}: closed 4008 after seq {seen}");
            }
        }
    }
}
