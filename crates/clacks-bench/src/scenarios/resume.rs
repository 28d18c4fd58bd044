//! Resume: a member is online, sees seq S, goes offline; K messages
//! arrive; it reconnects and subscribes with `afterSeq: S`. Measures the
//! time from starting to reconnect (and from sending `subscribe`) until
//! all K missed messages are received, and checks they came exactly once,
//! in order.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Ctx, Meter, consistency, create_rooms, finish, send_one};
use crate::metrics::{Counters, LatencyRecorder};
use crate::report::{Report, TargetCheck};
use crate::ws::{self, ConnState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Stream {
    /// `message(channel, afterSeq)`.
    Message,
    /// `events(channel, afterSeq, kinds: [MESSAGE_CREATED])`.
    Events,
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ResumeOpts {
    /// Messages that arrive while the member is offline.
    #[arg(long, default_value_t = 10_000)]
    pub missed: usize,
    /// How many offline/resume rounds.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Which subscription resumes.
    #[arg(long, value_enum, default_value_t = Stream::Message)]
    pub stream: Stream,
    /// Longest a resume may take before the round counts as failed (s).
    #[arg(long, default_value_t = 60)]
    pub resume_timeout: u64,
}

struct Online {
    state: Arc<ConnState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Online {
    async fn close(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn go_online(
    ctx: &Ctx,
    token: &str,
    channel: i64,
    after: Option<i64>,
    query: &str,
    counters: &Arc<Counters>,
) -> anyhow::Result<(Online, Instant)> {
    let mut sock = ws::connect(&ctx.target.node(ctx.recv_node).ws_url(), token).await?;
    let vars = match after {
        Some(s) => json!({"c": channel.to_string(), "after": s}),
        None => json!({"c": channel.to_string()}),
    };
    ws::subscribe(&mut sock, "1", query, vars).await?;
    let subscribed = Instant::now();
    let state = Arc::new(ConnState::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(ws::receive(
        sock,
        0,
        state.clone(),
        counters.clone(),
        stop.clone(),
    ));
    Ok((Online { state, stop, task }, subscribed))
}

async fn wait_received(state: &ConnState, n: u64, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if state.received.load(Relaxed) >= n {
            return Some(Instant::now());
        }
        if Instant::now() > deadline || state.ended.load(Relaxed) {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

pub async fn run(ctx: &Ctx, opts: &ResumeOpts) -> anyhow::Result<Report> {
    let mut report = Report::new("resume", json!(opts));
    let rooms = create_rooms(ctx, 1, 2).await?;
    let room = rooms[0].clone();
    let reader = room.members[0].clone();
    let counters = Arc::new(Counters::default());
    let query = match opts.stream {
        Stream::Message => ws::MESSAGE_SUBSCRIPTION,
        Stream::Events => ws::EVENTS_SUBSCRIPTION,
    };
    let timeout = Duration::from_secs(opts.resume_timeout);

    // Online: see one message, remember its seq.
    let (online, _) = go_online(ctx, &reader.token, room.channel, None, query, &counters).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_one(ctx, &room, 1, &counters, 0)
        .await
        .context("the first message was not acked")?;
    if wait_received(&online.state, 1, ctx.drain_timeout)
        .await
        .is_none()
    {
        bail!(
            "the online member did not receive the first message: {:?}",
            counters.receive_errors.first()
        );
    }
    let mut last_seq = online.state.last_seq.load(Relaxed);
    online.close().await;

    let total_times = LatencyRecorder::default();
    let replay_times = LatencyRecorder::default();
    let mut rounds = Vec::new();
    let mut failed_rounds = 0;
    for r in 0..opts.repeats.max(1) {
        // Offline: K messages arrive (from the other member).
        let fill = Meter::begin(
            ctx,
            &format!("round {r}: fill {} while offline", opts.missed),
            &counters,
        );
        futures::stream::iter(0..opts.missed)
            .for_each_concurrent(ctx.concurrency.max(1), |i| {
                let room = &room;
                let counters = &counters;
                async move {
                    send_one(ctx, room, 1, counters, i).await;
                }
            })
            .await;
        let fill_phase = fill.end(&counters, 0, None).await;
        let acked = fill_phase.acked;
        report.phases.push(fill_phase);

        // Resume from the last seq seen.
        let meter = Meter::begin(ctx, &format!("round {r}: resume"), &counters);
        let started = Instant::now();
        let (online, subscribed) = go_online(
            ctx,
            &reader.token,
            room.channel,
            Some(last_seq),
            query,
            &counters,
        )
        .await?;
        let done = wait_received(&online.state, acked, timeout).await;
        // Anything beyond K would be a duplicate: give it a moment to show.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let received = online.state.received.load(Relaxed);
        let new_last = online.state.last_seq.load(Relaxed);
        online.close().await;
        let mut phase = meter.end(&counters, acked, None).await;
        phase.expected_deliveries = acked;
        match done {
            Some(done) => {
                let total = done.duration_since(started);
                let replay = done.duration_since(subscribed);
                total_times.record(0, total.as_micros() as u64);
                replay_times.record(0, replay.as_micros() as u64);
                phase
                    .extra
                    .insert("resume_ms".into(), json!(total.as_secs_f64() * 1000.0));
                phase.extra.insert(
                    "after_subscribe_ms".into(),
                    json!(replay.as_secs_f64() * 1000.0),
                );
                phase.extra.insert(
                    "messages_per_s".into(),
                    json!((acked as f64 / total.as_secs_f64()).round()),
                );
                rounds.push(total.as_secs_f64() * 1000.0);
            }
            None => failed_rounds += 1,
        }
        phase.extra.insert("received".into(), json!(received));
        phase.extra.insert("expected".into(), json!(acked));
        phase
            .extra
            .insert("seq_range".into(), json!([last_seq + 1, new_last]));
        let gap_free = received == acked && new_last == last_seq + acked as i64;
        phase
            .extra
            .insert("exactly_once_in_order".into(), json!(gap_free));
        report.phases.push(phase);
        if received != acked || new_last != last_seq + acked as i64 {
            counters.receive_errors.add("resume mismatch", || {
                format!("round {r}: received {received} of {acked}, seqs up to {new_last} from {last_seq}")
            });
        }
        last_seq = new_last.max(last_seq);
    }

    let mut c = consistency(&rooms, None, &counters);
    c.ok = c.ok && failed_rounds == 0;
    report.consistency = c;
    let total = total_times.summary();
    let replay = replay_times.summary();
    report.notes.push(format!(
        "resume of {} messages over {} rounds: reconnect+replay {}; after subscribe {}",
        opts.missed,
        rounds.len(),
        total.line(),
        replay.line()
    ));
    if failed_rounds > 0 {
        report.notes.push(format!(
            "{failed_rounds} rounds did not catch up within {timeout:?}"
        ));
    }
    let median = if total.count > 0 {
        total.p50_ms
    } else {
        f64::INFINITY
    };
    report.targets.push(TargetCheck::at_most(
        &format!(
            "resume of {} missed messages (median of rounds, reconnect to caught up)",
            opts.missed
        ),
        median,
        200.0,
        "ms",
    ));
    finish(&mut report, ctx, 1);
    Ok(report)
}
