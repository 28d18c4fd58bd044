//! Fan-out: one channel, many subscribers, bursts of messages. Measures
//! delivered events per second (deliveries of a burst over the time from
//! its first send to its last delivery). With two nodes, senders post to
//! node A and subscribers listen on node B (NATS in between).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, Meter, connect_subscribers, consistency, create_rooms, finish, send_one, wait_for, warm_up,
};
use crate::metrics::Counters;
use crate::report::{Report, TargetCheck};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FanoutOpts {
    /// Members of the channel, each with its own WebSocket subscription.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages per burst (sent concurrently, up to --concurrency in flight).
    #[arg(long, default_value_t = 200)]
    pub burst: usize,
    /// Number of bursts.
    #[arg(long, default_value_t = 10)]
    pub bursts: usize,
    /// How many distinct members send (round robin).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Pause between bursts, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub pause_ms: u64,
}

pub async fn run(ctx: &Ctx, opts: &FanoutOpts, scenario: &str) -> anyhow::Result<Report> {
    let mut report = Report::new(scenario, json!(opts));
    let rooms = create_rooms(ctx, 1, opts.subscribers.max(1)).await?;
    let room = rooms[0].clone();
    let counters = Arc::new(Counters::default());
    let subs = connect_subscribers(ctx, &rooms, &counters).await?;
    warm_up(ctx, &rooms, &subs, &counters).await?;
    let members = room.members.len() as u64;
    let senders = opts.senders.clamp(1, room.members.len());

    let meter = Meter::begin(ctx, "bursts", &counters);
    let mut span_total = 0.0f64;
    let mut delivered_total = 0u64;
    let mut burst_rates = Vec::new();
    let mut incomplete = 0;
    for b in 0..opts.bursts {
        let t0 = crate::now_ns();
        let acked_before = Counters::get(&counters.acked);
        let delivered_before = Counters::get(&counters.delivered);
        futures::stream::iter(0..opts.burst)
            .for_each_concurrent(ctx.concurrency.max(1), |i| {
                let room = &room;
                let counters = &counters;
                async move {
                    send_one(ctx, room, i % senders, counters, b * opts.burst + i).await;
                }
            })
            .await;
        let acked = Counters::get(&counters.acked) - acked_before;
        let expected = acked * members;
        let complete = wait_for(&counters, delivered_before + expected, ctx.drain_timeout).await;
        if !complete {
            incomplete += 1;
        }
        let delivered = Counters::get(&counters.delivered) - delivered_before;
        let last = Counters::get(&counters.last_delivery_ns);
        let span = last.saturating_sub(t0) as f64 / 1e9;
        if span > 0.0 {
            span_total += span;
            delivered_total += delivered;
            burst_rates.push((delivered as f64 / span).round());
        }
        if opts.pause_ms > 0 && b + 1 < opts.bursts {
            tokio::time::sleep(Duration::from_millis(opts.pause_ms)).await;
        }
    }
    let mut phase = meter.end(&counters, 0, None).await;
    phase.expected_deliveries = phase.acked * members;
    phase.delivered_per_s = if span_total > 0.0 {
        delivered_total as f64 / span_total
    } else {
        0.0
    };
    phase
        .extra
        .insert("burst_delivered_per_s".into(), json!(burst_rates));
    phase
        .extra
        .insert("burst_time_total_s".into(), json!(span_total));
    phase
        .extra
        .insert("incomplete_bursts".into(), json!(incomplete));
    let rate = phase.delivered_per_s;
    report.phases.push(phase);
    report.consistency = consistency(&rooms, Some(&subs), &counters);
    report.targets.push(TargetCheck::at_least(
        "fan-out delivered events/s (1 channel, 1,000 subscribers, bursts of 200)",
        rate,
        200_000.0,
        "events/s",
    ));
    let connections = subs.conns.len() as u64;
    let closed_started = Instant::now();
    subs.close().await;
    ctx.log(format!(
        "closed connections in {:.1} s",
        closed_started.elapsed().as_secs_f64()
    ));
    finish(&mut report, ctx, connections);
    Ok(report)
}
