//! The scenarios of issue 6 and what they share: creating channels and
//! users, connecting subscribers, generating traffic (bursts, open loop at
//! a rate, closed loop), draining, and turning counters into [`Phase`]s.
//!
//! Every loop here is bounded by a count and every wait by a timeout.

pub mod durable;
pub mod fanout;
pub mod resume;
pub mod rooms;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counters, ProcSample, sample_all};
use crate::report::{Consistency, Phase, Report};
use crate::target::{Api, Outgoing, SendVia, Target, stamped_content};
use crate::ws::{self, ConnState};

/// Settings every scenario shares.
#[derive(Clone)]
pub struct Ctx {
    pub target: Target,
    pub api: Api,
    pub via: SendVia,
    /// Most sends in flight at once.
    pub concurrency: usize,
    /// Most WebSocket handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Message content size in bytes (at least the stamp).
    pub size: usize,
    /// How long to wait for deliveries after the last send of a phase.
    pub drain_timeout: Duration,
    /// Print a progress line this often (None: quiet).
    pub progress: Option<Duration>,
    /// Prefix of user ids, unique per run.
    pub run_id: String,
    /// Node senders post to; node subscribers connect to.
    pub send_node: usize,
    pub recv_node: usize,
    /// Subscribe with `afterSeq: 0` (default) so that no message acked
    /// before the server registered the subscription is missed; false
    /// subscribes live only (the warm-up then waits for stragglers).
    pub subscribe_after_zero: bool,
    /// Subscribe under a random operation id per connection (graphql-ws
    /// clients) rather than "1" (subscriptions-transport-ws clients).
    pub random_operation_ids: bool,
}

impl Ctx {
    pub fn new(target: Target) -> anyhow::Result<Ctx> {
        let api = Api::new(target.clone(), 128)?;
        Ok(Ctx {
            target,
            api,
            via: SendVia::Graphql,
            concurrency: 64,
            connect_concurrency: 64,
            size: 64,
            drain_timeout: Duration::from_secs(20),
            progress: Some(Duration::from_secs(2)),
            run_id: format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            send_node: 0,
            recv_node: 0,
            subscribe_after_zero: true,
            random_operation_ids: false,
        })
    }

    fn log(&self, line: impl AsRef<str>) {
        if self.progress.is_some() {
            eprintln!("[clacks-bench] {}", line.as_ref());
        }
    }
}

/// A user with a token.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

/// A channel and its members; `acked` counts messages acked into it.
pub struct Room {
    pub channel: i64,
    pub members: Vec<User>,
    pub acked: AtomicU64,
}

/// Creates `channels` channels of `members` fresh users each, through the
/// management API, with a token per user.
pub async fn create_rooms(
    ctx: &Ctx,
    channels: usize,
    members: usize,
) -> anyhow::Result<Vec<Arc<Room>>> {
    let started = Instant::now();
    let created = AtomicU64::new(0);
    let results: Vec<anyhow::Result<Arc<Room>>> = futures::stream::iter(0..channels)
        .map(|c| {
            let created = &created;
            async move {
                let mut users = Vec::with_capacity(members);
                for m in 0..members {
                    let id = format!("{}-c{c}-u{m}", ctx.run_id);
                    let token = ctx.api.token(&id).await?;
                    users.push(User { id, token });
                }
                let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
                let channel = ctx
                    .api
                    .create_channel(&format!("{} {c}", ctx.run_id), &ids)
                    .await?;
                let n = created.fetch_add(1, Relaxed) + 1;
                if n.is_multiple_of(1000) {
                    ctx.log(format!("created {n}/{channels} channels"));
                }
                Ok(Arc::new(Room {
                    channel,
                    members: users,
                    acked: AtomicU64::new(0),
                }))
            }
        })
        .buffered(16)
        .collect()
        .await;
    let rooms = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    ctx.log(format!(
        "created {} channels x {} members in {:.1} s",
        channels,
        members,
        started.elapsed().as_secs_f64()
    ));
    Ok(rooms)
}

/// Live subscriber connections.
pub struct Subscribers {
    /// (room index, state) per connection.
    pub conns: Vec<(usize, Arc<ConnState>)>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Subscribers {
    /// Stops every receiver and waits (bounded) for them to close.
    pub async fn close(self) {
        self.stop.cancel();
        let all = futures::future::join_all(self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
    }

    /// How many connections have ended (closed by the server or failed).
    pub fn ended(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, s)| s.ended.load(Relaxed))
            .count()
    }
}

/// Connects one WebSocket per member of every room (to the receive node)
/// and subscribes each to its room's messages.
pub async fn connect_subscribers(
    ctx: &Ctx,
    rooms: &[Arc<Room>],
    counters: &Arc<Counters>,
) -> anyhow::Result<Subscribers> {
    connect_members(ctx, rooms, counters, true).await
}

/// Connects one WebSocket per member of every room; subscribes each to
/// its room's messages when `subscribe` (else only `connection_init`).
pub async fn connect_members(
    ctx: &Ctx,
    rooms: &[Arc<Room>],
    counters: &Arc<Counters>,
    subscribe: bool,
) -> anyhow::Result<Subscribers> {
    let list: Vec<(usize, User, i64)> = rooms
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| r.members.iter().map(move |u| (ri, u.clone(), r.channel)))
        .collect();
    let total = list.len();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let done = AtomicU64::new(0);
    let after_zero = ctx.subscribe_after_zero;
    let random_ids = ctx.random_operation_ids;
    type Connected = (usize, Arc<ConnState>, tokio::task::JoinHandle<()>);
    let results: Vec<anyhow::Result<Connected>> =
        futures::stream::iter(list.into_iter().enumerate())
            .map(|(key, (ri, user, channel))| {
                let ws_url = ctx.target.ws_url_for(ctx.recv_node, channel);
                let stop = stop.clone();
                let counters = counters.clone();
                let done = &done;
                async move {
                    let mut sock = ws::connect(&ws_url, &user.token)
                        .await
                        .with_context(|| format!("connection {key} ({})", user.id))?;
                    if subscribe {
                        // `afterSeq: 0` on a fresh channel replays nothing,
                        // but makes delivery gap-free from the start: the
                        // protocol has no "subscribed" answer, so a message
                        // acked before the server registered the
                        // subscription would otherwise be missed.
                        let vars = if after_zero {
                            json!({"c": channel.to_string(), "after": 0})
                        } else {
                            json!({"c": channel.to_string()})
                        };
                        let id = if random_ids {
                            uuid::Uuid::new_v4().to_string()
                        } else {
                            "1".to_owned()
                        };
                        ws::subscribe(&mut sock, &id, ws::MESSAGE_SUBSCRIPTION, vars).await?;
                    }
                    let state = Arc::new(ConnState::default());
                    let task = tokio::spawn(ws::receive(sock, key, state.clone(), counters, stop));
                    let n = done.fetch_add(1, Relaxed) + 1;
                    if n.is_multiple_of(2000) {
                        ctx.log(format!("connected {n}/{total}"));
                    }
                    Ok((ri, state, task))
                }
            })
            .buffer_unordered(ctx.connect_concurrency.max(1))
            .collect()
            .await;
    let mut subs = Subscribers {
        conns: Vec::with_capacity(total),
        stop,
        tasks: Vec::with_capacity(total),
    };
    let mut first_error = None;
    for r in results {
        match r {
            Ok((ri, state, task)) => {
                subs.conns.push((ri, state));
                subs.tasks.push(task);
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_error {
        let connected = subs.conns.len();
        subs.close().await;
        return Err(e.context(format!("only {connected}/{total} subscribers connected")));
    }
    ctx.log(format!(
        "connected and subscribed {total} WebSockets in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(subs)
}

/// Sends one stamped message into `room` as member `member`.
pub async fn send_one(
    ctx: &Ctx,
    room: &Room,
    member: usize,
    counters: &Counters,
    key: usize,
) -> Option<i64> {
    let user = &room.members[member % room.members.len()];
    let content = stamped_content(key as u64, ctx.size);
    let outgoing = Outgoing {
        via: ctx.via,
        node: ctx.send_node,
        channel: room.channel,
        sender: &user.id,
        token: &user.token,
        content: &content,
    };
    let seq = ctx.api.send(&outgoing, counters, key).await;
    if seq.is_some() {
        room.acked.fetch_add(1, Relaxed);
    }
    seq
}

/// Sends one message into every room and waits until every subscriber
/// has received it: proves the subscriptions are live before measuring.
pub async fn warm_up(
    ctx: &Ctx,
    rooms: &[Arc<Room>],
    subs: &Subscribers,
    counters: &Arc<Counters>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let before = Counters::get(&counters.delivered);
    let sem = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    futures::stream::iter(rooms.iter().enumerate())
        .for_each_concurrent(ctx.concurrency.max(1), |(i, room)| {
            let sem = sem.clone();
            async move {
                let _permit = sem.acquire().await;
                send_one(ctx, room, 0, counters, i).await;
            }
        })
        .await;
    let expected: u64 = rooms.iter().map(|r| r.members.len() as u64).sum();
    let reached = wait_for(counters, before + expected, ctx.drain_timeout).await;
    if !reached {
        let silent = subs
            .conns
            .iter()
            .filter(|(_, s)| s.received.load(Relaxed) == 0)
            .count();
        bail!(
            "warm-up: {} of {expected} deliveries arrived within {:?} ({silent} connections received nothing; send errors: {:?}, receive errors: {:?} first: {:?})",
            Counters::get(&counters.delivered) - before,
            ctx.drain_timeout,
            counters.send_errors.snapshot(),
            counters.receive_errors.snapshot(),
            counters
                .receive_errors
                .first()
                .or(counters.send_errors.first()),
        );
    }
    ctx.log(format!(
        "warm-up: every subscriber live ({expected} deliveries in {:.2} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Waits until `delivered` reaches `target`, at most `timeout`.
pub async fn wait_for(counters: &Counters, target: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if Counters::get(&counters.delivered) >= target {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Measures one phase: counters, CPU and RSS from `begin` to `end`.
pub struct Meter {
    name: String,
    started: Instant,
    started_ns: u64,
    sent: u64,
    acked: u64,
    failed: u64,
    late: u64,
    delivered: u64,
    client: Option<ProcSample>,
    server: Option<ProcSample>,
    pids: Vec<u32>,
    progress: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Meter {
    /// Starts a phase; resets the latency histograms.
    pub fn begin(ctx: &Ctx, name: &str, counters: &Arc<Counters>) -> Meter {
        counters.latency.reset();
        counters.ack_latency.reset();
        let progress = ctx.progress.map(|every| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(progress_loop(
                name.to_owned(),
                every,
                counters.clone(),
                stop.clone(),
            ));
            (stop, task)
        });
        let pids = ctx.target.pids();
        Meter {
            name: name.to_owned(),
            started: Instant::now(),
            started_ns: crate::now_ns(),
            sent: Counters::get(&counters.sent),
            acked: Counters::get(&counters.acked),
            failed: Counters::get(&counters.send_failed),
            late: Counters::get(&counters.late_sends),
            delivered: Counters::get(&counters.delivered),
            client: ProcSample::read(None),
            server: sample_all(&pids),
            pids,
            progress,
        }
    }

    /// Ends the phase. `delivery_end_ns`, when given, is the time the last
    /// expected delivery arrived (rates are computed up to it).
    pub async fn end(
        mut self,
        counters: &Counters,
        expected_deliveries: u64,
        offered_rate: Option<f64>,
    ) -> Phase {
        if let Some((stop, task)) = self.progress.take() {
            stop.cancel();
            let _ = task.await;
        }
        let wall = self.started.elapsed().as_secs_f64();
        let delivered = Counters::get(&counters.delivered) - self.delivered;
        let last = Counters::get(&counters.last_delivery_ns);
        let delivery_span = if last > self.started_ns {
            (last - self.started_ns) as f64 / 1e9
        } else {
            wall
        };
        let acked = Counters::get(&counters.acked) - self.acked;
        let client = ProcSample::read(None);
        let server = sample_all(&self.pids);
        Phase {
            name: self.name,
            offered_rate,
            duration_s: wall,
            sent: Counters::get(&counters.sent) - self.sent,
            acked,
            send_failed: Counters::get(&counters.send_failed) - self.failed,
            late_sends: Counters::get(&counters.late_sends) - self.late,
            expected_deliveries,
            delivered,
            delivered_per_s: if delivery_span > 0.0 {
                delivered as f64 / delivery_span
            } else {
                0.0
            },
            acked_per_s: if wall > 0.0 { acked as f64 / wall } else { 0.0 },
            latency: counters.latency.summary(),
            ack_latency: counters.ack_latency.summary(),
            client_cpu_pct: match (self.client, client) {
                (Some(a), Some(b)) => ProcSample::cpu_percent(a, b, wall),
                _ => 0.0,
            },
            server_cpu_pct: match (self.server, server) {
                (Some(a), Some(b)) => Some(ProcSample::cpu_percent(a, b, wall)),
                _ => None,
            },
            server_rss_kib: server.map(|s| s.rss_kib),
            extra: Default::default(),
        }
    }
}

async fn progress_loop(
    name: String,
    every: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut last = (
        Counters::get(&counters.acked),
        Counters::get(&counters.delivered),
    );
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    // Bounded by the phase: the meter cancels it.
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let acked = Counters::get(&counters.acked);
        let delivered = Counters::get(&counters.delivered);
        let secs = every.as_secs_f64();
        eprintln!(
            "[clacks-bench] {name} t={:.0}s acked {} ({:.0}/s) delivered {} ({:.0}/s) send errors {} receive errors {}",
            started.elapsed().as_secs_f64(),
            acked,
            (acked - last.0) as f64 / secs,
            delivered,
            (delivered - last.1) as f64 / secs,
            counters.send_errors.total(),
            counters.receive_errors.total(),
        );
        last = (acked, delivered);
    }
}

/// Paces sends at `rate` per second for `duration` (open loop): message i
/// is due at `i / rate`. When `concurrency` sends are already in flight
/// the next one waits and counts as late. Room and sender rotate.
pub async fn open_loop(
    ctx: &Ctx,
    rooms: &[Arc<Room>],
    rate: f64,
    duration: Duration,
    counters: &Arc<Counters>,
) {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let sem = Arc::new(Semaphore::new(ctx.concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                counters.late_sends.fetch_add(1, Relaxed);
                match sem.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        // xorshift: spread sends over rooms and members without a lock.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let room = rooms[(rng_state % rooms.len() as u64) as usize].clone();
        let member = (rng_state >> 32) as usize;
        let ctx = ctx.clone();
        let counters = counters.clone();
        tasks.spawn(async move {
            send_one(&ctx, &room, member, &counters, i as usize).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Consistency over the whole run: each connection received exactly what
/// was acked into its room.
pub fn consistency(
    rooms: &[Arc<Room>],
    subs: Option<&Subscribers>,
    counters: &Counters,
) -> Consistency {
    let mut expected = 0u64;
    let mut short = 0u64;
    let mut extra = 0u64;
    if let Some(subs) = subs {
        for (ri, state) in &subs.conns {
            let want = rooms[*ri].acked.load(Relaxed);
            let got = state.received.load(Relaxed);
            expected += want;
            if got < want {
                short += 1;
            } else if got > want {
                extra += 1;
            }
        }
    }
    let c = Consistency {
        sent: Counters::get(&counters.sent),
        acked: Counters::get(&counters.acked),
        expected_deliveries: expected,
        delivered: Counters::get(&counters.delivered),
        out_of_order: Counters::get(&counters.out_of_order),
        send_errors: counters.send_errors.snapshot(),
        receive_errors: counters.receive_errors.snapshot(),
        first_send_error: counters.send_errors.first(),
        first_receive_error: counters.receive_errors.first(),
        ok: false,
    };
    let ok = short == 0
        && extra == 0
        && c.out_of_order == 0
        && c.send_errors.is_empty()
        && c.receive_errors.is_empty()
        && c.sent == c.acked;
    Consistency { ok, ..c }
}

/// Fills in what every report has: load after, nodes, connections.
pub fn finish(report: &mut Report, ctx: &Ctx, connections: u64) {
    report.load_after = crate::metrics::loadavg();
    report.nodes = ctx.target.nodes.len();
    report.connections = connections;
    if ctx.target.pids().is_empty() {
        report
            .notes
            .push("server pid unknown: no server CPU/RSS (pass --server-pid)".into());
    }
}
