//! Durable send: N concurrent senders in a closed loop (each sends, waits
//! for the ack, sends again) for a fixed time: acked messages/s and ack
//! latency at saturation. Then an open-loop phase at half the measured
//! rate: p99 ack there is the latency target. An ack means the
//! message is committed, so this is the storage write path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, Meter, connect_subscribers, consistency, create_rooms, finish, open_loop, send_one,
    wait_for,
};
use crate::metrics::Counters;
use crate::report::{Report, TargetCheck};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct DurableOpts {
    /// Concurrent senders (distinct users), each with one send in flight.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Channels the senders spread over (sender i posts to channel i mod N).
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Seconds of the closed-loop phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop the closed-loop phase after this many messages.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_messages: u64,
    /// Seconds of the open-loop phase at half the measured rate (0: skip).
    #[arg(long, default_value_t = 10)]
    pub half_rate_duration: u64,
    /// Also subscribe every member over WebSocket and check deliveries.
    #[arg(long)]
    pub subscribe: bool,
}

pub async fn run(ctx: &Ctx, opts: &DurableOpts, database: Option<&str>) -> anyhow::Result<Report> {
    let mut report = Report::new("durable-send", json!(opts));
    let channels = opts.channels.clamp(1, opts.senders.max(1));
    let per_room = opts.senders.max(1).div_ceil(channels);
    let rooms = create_rooms(ctx, channels, per_room).await?;
    let counters = Arc::new(Counters::default());
    let subs = if opts.subscribe {
        Some(connect_subscribers(ctx, &rooms, &counters).await?)
    } else {
        None
    };

    // Closed loop at saturation.
    let metrics_before = ctx.api.metric_sums(ctx.send_node).await;
    let meter = Meter::begin(ctx, "closed loop", &counters);
    let deadline = Instant::now() + Duration::from_secs(opts.duration);
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(opts.max_messages));
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..opts.senders.max(1) {
        let ctx = ctx.clone();
        let room = rooms[s % channels].clone();
        let counters = counters.clone();
        let budget = budget.clone();
        tasks.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                let left = budget.fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |b| b.checked_sub(1),
                );
                if left.is_err() {
                    break;
                }
                send_one(&ctx, &room, s / channels, &counters, s * 1_000_000 + n).await;
                n += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let members = per_room as u64;
    let expected = Counters::get(&counters.acked) * members;
    if subs.is_some() {
        wait_for(&counters, expected, ctx.drain_timeout).await;
    }
    let mut closed = meter
        .end(&counters, if subs.is_some() { expected } else { 0 }, None)
        .await;
    let metrics_after = ctx.api.metric_sums(ctx.send_node).await;
    batch_stats(&mut closed, &metrics_before, &metrics_after);
    let max_rate = closed.acked_per_s;
    let closed_p99 = closed.ack_latency.p99_ms;
    report.phases.push(closed);

    // Open loop at half the saturation rate.
    let mut half_p99 = None;
    if opts.half_rate_duration > 0 && max_rate > 1.0 {
        let rate = (max_rate / 2.0).max(1.0);
        let metrics_before = ctx.api.metric_sums(ctx.send_node).await;
        let meter = Meter::begin(ctx, "half rate", &counters);
        let before = Counters::get(&counters.acked);
        let delivered_before = Counters::get(&counters.delivered);
        open_loop(
            ctx,
            &rooms,
            rate,
            Duration::from_secs(opts.half_rate_duration),
            &counters,
        )
        .await;
        let expected = (Counters::get(&counters.acked) - before) * members;
        if subs.is_some() {
            wait_for(&counters, delivered_before + expected, ctx.drain_timeout).await;
        }
        let mut phase = meter
            .end(
                &counters,
                if subs.is_some() { expected } else { 0 },
                Some(rate),
            )
            .await;
        let metrics_after = ctx.api.metric_sums(ctx.send_node).await;
        batch_stats(&mut phase, &metrics_before, &metrics_after);
        half_p99 = Some(phase.ack_latency.p99_ms);
        report.phases.push(phase);
    }

    report.consistency = consistency(&rooms, subs.as_ref(), &counters);
    let db = database.unwrap_or("unknown database");
    report.targets.push(TargetCheck::at_least(
        &format!(
            "acked msgs/s with {} concurrent senders ({db})",
            opts.senders
        ),
        max_rate,
        10_000.0,
        "msg/s",
    ));
    if let Some(p99) = half_p99 {
        report.targets.push(TargetCheck::at_most(
            &format!("p99 ack at half the saturation rate ({db})"),
            p99,
            20.0,
            "ms",
        ));
    }
    report.notes.push(format!(
        "p99 ack at saturation (closed loop): {closed_p99:.2} ms"
    ));
    let conns = subs.as_ref().map(|s| s.conns.len() as u64).unwrap_or(0);
    if let Some(subs) = subs {
        subs.close().await;
    }
    finish(&mut report, ctx, conns);
    Ok(report)
}

/// Group-commit evidence from the server's `/metrics`: mean batch size and
/// mean commit time over the phase (absent when metrics are unavailable).
fn batch_stats(
    phase: &mut crate::report::Phase,
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) {
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let batches = delta("clacks_store_batch_size_count");
    if batches > 0.0 {
        phase.extra.insert("batches".into(), json!(batches));
        phase.extra.insert(
            "mean_batch_size".into(),
            json!((delta("clacks_store_batch_size_sum") / batches * 10.0).round() / 10.0),
        );
    }
    let commits = delta("clacks_store_batch_commit_seconds_count");
    if commits > 0.0 {
        phase.extra.insert(
            "mean_batch_commit_ms".into(),
            json!((delta("clacks_store_batch_commit_seconds_sum") / commits * 1e4).round() / 10.0),
        );
    }
}
