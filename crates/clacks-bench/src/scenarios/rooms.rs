//! Steady traffic over many rooms: `latency` (one 1,000-member channel at
//! 100 msg/s; or 5,000 two-member channels at 2,000 msg/s) and
//! `many-channels` (5,000 channels of 2, 10,000 connections: server RSS per
//! connection, then p99 under steady traffic). Each offered rate in
//! `--rates` is one phase on the same connections, so a run gives the
//! latency-vs-rate curve for the plot.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::{
    Ctx, Meter, connect_members, consistency, create_rooms, finish, open_loop, wait_for, warm_up,
};
use crate::metrics::{Counters, sample_all};
use crate::report::{Report, TargetCheck};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct LatencyOpts {
    /// Number of channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Members (subscribed connections) per channel.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Offered send rates in messages/s, one phase each (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rates: Vec<f64>,
    /// Seconds of traffic per rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ManyChannelsOpts {
    /// Number of channels.
    #[arg(long, default_value_t = 5000)]
    pub channels: usize,
    /// Members (subscribed connections) per channel.
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    /// Offered send rates in messages/s over all channels, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rates: Vec<f64>,
    /// Seconds of traffic per rate.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds to let the server settle before reading its idle RSS.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Only connect (`connection_init`, no subscription), read RSS and
    /// stop: with a normal run, separates the cost of a connection from
    /// the cost of its subscription.
    #[arg(long)]
    pub no_subscribe: bool,
}

/// Shared by both commands.
struct RoomsPlan {
    channels: usize,
    members: usize,
    rates: Vec<f64>,
    duration: Duration,
    settle: Option<Duration>,
    subscribe: bool,
}

pub async fn latency(ctx: &Ctx, opts: &LatencyOpts) -> anyhow::Result<Report> {
    let mut report = Report::new("latency", json!(opts));
    let plan = RoomsPlan {
        channels: opts.channels,
        members: opts.members,
        rates: opts.rates.clone(),
        duration: Duration::from_secs(opts.duration),
        settle: None,
        subscribe: true,
    };
    run(ctx, &plan, &mut report).await?;
    Ok(report)
}

pub async fn many_channels(ctx: &Ctx, opts: &ManyChannelsOpts) -> anyhow::Result<Report> {
    let mut report = Report::new("many-channels", json!(opts));
    let plan = RoomsPlan {
        channels: opts.channels,
        members: opts.members,
        rates: opts.rates.clone(),
        duration: Duration::from_secs(opts.duration),
        settle: Some(Duration::from_secs(opts.settle)),
        subscribe: !opts.no_subscribe,
    };
    run(ctx, &plan, &mut report).await?;
    Ok(report)
}

async fn run(ctx: &Ctx, plan: &RoomsPlan, report: &mut Report) -> anyhow::Result<()> {
    let pids = ctx.target.pids();
    let rooms = create_rooms(ctx, plan.channels.max(1), plan.members.max(1)).await?;
    let counters = Arc::new(Counters::default());
    if let Some(settle) = plan.settle {
        tokio::time::sleep(settle).await;
    }
    let rss_before = sample_all(&pids).map(|s| s.rss_kib);
    let subs = connect_members(ctx, &rooms, &counters, plan.subscribe).await?;
    let conns = subs.conns.len() as u64;
    if let Some(settle) = plan.settle {
        tokio::time::sleep(settle).await;
    }
    let rss_idle = sample_all(&pids).map(|s| s.rss_kib);
    if plan.subscribe {
        warm_up(ctx, &rooms, &subs, &counters).await?;
    } else {
        for room in &rooms {
            room.acked.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let rss_warm = sample_all(&pids).map(|s| s.rss_kib);
    let client_rss = crate::metrics::ProcSample::read(None).map(|s| s.rss_kib);
    let per_conn = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if conns > 0 => Some(a.saturating_sub(b) as f64 / conns as f64),
        _ => None,
    };
    let idle_per_conn = per_conn(rss_idle);
    let warm_per_conn = per_conn(rss_warm);

    let members = plan.members.max(1) as u64;
    for &rate in &plan.rates {
        if rate <= 0.0 || !plan.subscribe {
            continue;
        }
        let meter = Meter::begin(ctx, &format!("rate {rate}"), &counters);
        let acked_before = Counters::get(&counters.acked);
        let delivered_before = Counters::get(&counters.delivered);
        open_loop(ctx, &rooms, rate, plan.duration, &counters).await;
        let expected = (Counters::get(&counters.acked) - acked_before) * members;
        let complete = wait_for(&counters, delivered_before + expected, ctx.drain_timeout).await;
        let mut phase = meter.end(&counters, expected, Some(rate)).await;
        phase.delivered_per_s = phase.delivered as f64 / phase.duration_s.max(1e-9);
        phase.extra.insert("drained".into(), json!(complete));
        report.phases.push(phase);
    }

    let mut extra = serde_json::Map::new();
    extra.insert("server_rss_before_kib".into(), json!(rss_before));
    extra.insert("server_rss_idle_kib".into(), json!(rss_idle));
    extra.insert("server_rss_after_warmup_kib".into(), json!(rss_warm));
    extra.insert(
        "server_rss_per_connection_idle_kib".into(),
        json!(idle_per_conn),
    );
    extra.insert(
        "server_rss_per_connection_after_warmup_kib".into(),
        json!(warm_per_conn),
    );
    extra.insert("client_rss_kib".into(), json!(client_rss));
    // Without traffic (`--no-subscribe`) the readings get a phase of their own.
    if report.phases.is_empty() {
        report.phases.push(crate::report::Phase {
            name: "connections".into(),
            server_rss_kib: rss_warm,
            ..Default::default()
        });
    }
    if let Some(first) = report.phases.first_mut() {
        first.extra.extend(extra);
    }
    report.consistency = consistency(&rooms, Some(&subs), &counters);

    // Targets of issue 6 that this shape of run measures.
    // The p99 of the phase at exactly the target's rate.
    let p99_at = |rate: f64| {
        report
            .phases
            .iter()
            .find(|p| {
                p.offered_rate
                    .is_some_and(|r| (r - rate).abs() < rate * 0.01)
            })
            .map(|p| p.latency.p99_ms)
    };
    if plan.channels == 1
        && plan.members >= 1000
        && let Some(p99) = p99_at(100.0)
    {
        report.targets.push(TargetCheck::at_most(
            "p99 send-to-receive, one 1,000-member channel at 100 msg/s",
            p99,
            25.0,
            "ms",
        ));
    }
    if plan.members == 2
        && plan.channels >= 5000
        && let Some(p99) = p99_at(2000.0)
    {
        report.targets.push(TargetCheck::at_most(
            "p99 send-to-receive, 5,000 two-member channels at 2,000 msg/s",
            p99,
            10.0,
            "ms",
        ));
    }
    if plan.settle.is_some()
        && let Some(v) = idle_per_conn
    {
        report.targets.push(TargetCheck::at_most(
            if plan.subscribe {
                "server RSS per idle subscribed connection"
            } else {
                "server RSS per idle connection (no subscription)"
            },
            v,
            12.0,
            "KiB",
        ));
    }
    subs.close().await;
    finish(report, ctx, conns);
    Ok(())
}
