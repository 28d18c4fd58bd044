//! `clacks-bench`: one subcommand per scenario of issue 6. See the crate
//! docs and BENCHMARKS.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clacks_bench::balancer;
use clacks_bench::ceiling::{self, CeilingOpts};
use clacks_bench::report::Report;
use clacks_bench::scenarios::{Ctx, durable, fanout, resume, rooms};
use clacks_bench::spawn::{Db, SpawnOptions, Spawned};
use clacks_bench::target::{Node, SendVia, Target};
use clap::{Parser, Subcommand};

// The allocator Clacks runs with (crates/clacks-server/src/main.rs), so
// that the ceiling's memory per connection compares like for like. The
// ceiling child gets Clacks' purge settings through `_RJEM_MALLOC_CONF`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "clacks-bench",
    version,
    about = "Load tool for Clacks: fan-out, durable send, latency, memory per connection, resume"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    global: Global,
}

#[derive(clap::Args, Debug)]
struct Global {
    /// Spawn this `clacks` binary (fresh database, free loopback ports,
    /// random JWT secret, send rate limit raised) instead of targeting a
    /// running server.
    #[arg(long, global = true)]
    spawn: Option<PathBuf>,
    /// Database of a spawned server.
    #[arg(long, value_enum, default_value_t = Db::Sqlite, global = true)]
    db: Db,
    /// DATABASE_URL for spawned servers instead of a fresh database.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// NATS for spawned multi-node runs.
    #[arg(long, default_value = "nats://127.0.0.1:4222", global = true)]
    nats_url: String,
    /// Extra environment for spawned servers, KEY=VALUE (repeatable).
    #[arg(long = "server-env", value_parser = parse_kv, global = true)]
    server_env: Vec<(String, String)>,
    /// Keep spawned servers' logs in this directory.
    #[arg(long, global = true)]
    server_log_dir: Option<PathBuf>,
    /// Spawned nodes sharing the database, over NATS (two-nodes: 2).
    #[arg(long, default_value_t = 1, global = true)]
    nodes: usize,
    /// Put the spawned nodes behind HAProxy (routing WebSockets by room)
    /// over a NATS server of the run's own, and report what each node
    /// received from NATS (its `/connz`). Needs haproxy and nats-server.
    #[arg(long, global = true)]
    balancer: bool,

    /// Client port of a running server (http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:8000", global = true)]
    client_url: String,
    /// Client port of a second node (two-nodes: receivers connect here).
    #[arg(long, global = true)]
    client_url_b: Option<String>,
    /// Management port of a running server.
    #[arg(long, default_value = "http://127.0.0.1:7999", global = true)]
    management_url: String,
    /// Management port of the second node.
    #[arg(long, global = true)]
    management_url_b: Option<String>,
    /// Bearer token of the management API, if the server requires one.
    #[arg(
        long,
        env = "CLACKS_MANAGEMENT_TOKEN",
        hide_env_values = true,
        global = true
    )]
    management_token: Option<String>,
    /// The server's JWT_SECRET, to mint tokens locally (else GET /api/v1/jwt).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    jwt_secret: Option<String>,
    /// Pid(s) of running server process(es), for RSS and CPU (repeatable).
    #[arg(long, global = true)]
    server_pid: Vec<u32>,

    /// How messages are sent.
    #[arg(long, value_enum, default_value_t = SendVia::Graphql, global = true)]
    send_via: SendVia,
    /// Most sends in flight at once.
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,
    /// Most WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 64, global = true)]
    connect_concurrency: usize,
    /// Message content size in bytes.
    #[arg(long, default_value_t = 64, global = true)]
    size: usize,
    /// Seconds to wait for deliveries after a phase's last send.
    #[arg(long, default_value_t = 20, global = true)]
    drain_timeout: u64,
    /// Hard limit for the whole run, in seconds.
    #[arg(long, default_value_t = 900, global = true)]
    timeout: u64,
    /// Seconds between progress lines (0: quiet).
    #[arg(long, default_value_t = 2, global = true)]
    progress: u64,
    /// Write the JSON report here ("-": stdout, after the summary).
    #[arg(long, global = true)]
    json: Option<String>,
    /// Subscribe live only, without `afterSeq: 0` (a message acked before
    /// the server registers a subscription can then be missed).
    #[arg(long, global = true)]
    no_after_seq: bool,
    /// Give each subscription a random operation id, as graphql-ws clients
    /// do (by default every subscription is "1", as subscriptions-transport-ws
    /// clients number theirs; a server can then share one frame per event).
    #[arg(long, global = true)]
    random_operation_ids: bool,
    /// Worker threads of the tool's runtime (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Run the scenario (fanout, many-channels) against Clacks, then the
    /// same against the ceiling (`clacks-bench ceiling`, a minimal
    /// broadcast server spawned from this binary), and report the ratios.
    #[arg(long, global = true)]
    compare_ceiling: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// One channel, many subscribers, bursts: delivered events/s.
    Fanout(fanout::FanoutOpts),
    /// Many two-member channels: server RSS per connection, p99 under traffic.
    ManyChannels(rooms::ManyChannelsOpts),
    /// Concurrent senders, closed loop then half rate: acked msgs/s, p99 ack.
    DurableSend(durable::DurableOpts),
    /// Steady traffic at given rates: send-to-receive percentiles per rate.
    Latency(rooms::LatencyOpts),
    /// Offline while K messages arrive, then resume with afterSeq.
    Resume(resume::ResumeOpts),
    /// Fan-out with senders on node A and subscribers on node B (NATS).
    TwoNodes(fanout::FanoutOpts),
    /// Serve the ceiling: a minimal broadcast server speaking what the
    /// scenarios use (see `--compare-ceiling`).
    Ceiling(CeilingOpts),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = clacks_bench::raise_nofile_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.global.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder.build().context("tokio runtime")?;
    if let Scenario::Ceiling(opts) = &cli.scenario {
        return runtime.block_on(ceiling::serve(opts));
    }
    let timeout = Duration::from_secs(cli.global.timeout.max(1));
    let report = runtime.block_on(async {
        match tokio::time::timeout(timeout, run(&cli, nofile)).await {
            Ok(r) => r,
            Err(_) => bail!("the run exceeded --timeout {}s", timeout.as_secs()),
        }
    })?;
    println!("{}", report.human());
    match cli.global.json.as_deref() {
        Some("-") => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(path) => {
            std::fs::write(path, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("writing {path}"))?;
            eprintln!("[clacks-bench] JSON report written to {path}");
        }
        None => {}
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    let ceiling_ok = report.ceiling.as_ref().is_none_or(|c| c.consistency.ok);
    if !report.consistency.ok || !ceiling_ok {
        eprintln!("[clacks-bench] consistency problems: see the summary");
        std::process::exit(2);
    }
    Ok(())
}

async fn run(cli: &Cli, nofile: u64) -> anyhow::Result<Report> {
    let g = &cli.global;
    let nodes = if matches!(cli.scenario, Scenario::TwoNodes(_)) {
        2
    } else {
        g.nodes.max(1)
    };
    if matches!(cli.scenario, Scenario::TwoNodes(_)) {
        if g.balancer || g.nodes > 1 {
            bail!(
                "two-nodes picks its two nodes itself; use fanout or latency with --nodes N --balancer"
            );
        }
    } else if g.nodes > 1 && !g.balancer {
        bail!("--nodes above 1 needs --balancer (or the two-nodes scenario)");
    }
    if g.balancer && (g.spawn.is_none() || g.compare_ceiling) {
        bail!(
            "--balancer starts the nodes itself (it needs --spawn) and has no ceiling to compare with"
        );
    }
    let mut spawned = None;
    let (target, database) = match &g.spawn {
        Some(binary) => {
            let s = Spawned::start(&SpawnOptions {
                binary: binary.clone(),
                db: g.db,
                database_url: g.database_url.clone(),
                nodes,
                nats_url: Some(g.nats_url.clone()),
                env: g.server_env.clone(),
                log_dir: g.server_log_dir.clone(),
                balancer: g.balancer,
            })
            .await?;
            let t = s.target.clone();
            let db = s.database.clone();
            spawned = Some(s);
            (t, Some(db))
        }
        None => {
            let mut list = vec![Node {
                client_url: g.client_url.clone(),
                management_url: g.management_url.clone(),
                pid: g.server_pid.first().copied(),
            }];
            if let Some(b) = &g.client_url_b {
                list.push(Node {
                    client_url: b.clone(),
                    management_url: g
                        .management_url_b
                        .clone()
                        .unwrap_or_else(|| g.management_url.clone()),
                    pid: g.server_pid.get(1).copied(),
                });
            }
            let t = Target {
                nodes: list,
                jwt_secret: g.jwt_secret.clone(),
                management_token: g.management_token.clone(),
                ..Default::default()
            };
            (t, g.database_url.clone())
        }
    };
    if matches!(cli.scenario, Scenario::TwoNodes(_)) && target.nodes.len() < 2 {
        bail!("two-nodes needs --spawn or --client-url-b/--management-url-b");
    }
    if g.compare_ceiling
        && !matches!(
            cli.scenario,
            Scenario::Fanout(_) | Scenario::ManyChannels(_)
        )
    {
        bail!("--compare-ceiling applies to fanout and many-channels");
    }
    let monitor = spawned.as_ref().and_then(|s| s.nats_monitor);
    let nats_before = match monitor {
        Some(port) => Some(balancer::nats_traffic(port).await?),
        None => None,
    };
    // Only two-nodes splits senders from receivers by node index; behind
    // the balancer every client goes through its one address.
    let node_roles = if g.balancer { 1 } else { nodes };
    let result = scenario(cli, target, node_roles, database.as_deref(), nofile).await;
    let nats_traffic = match (monitor, &nats_before) {
        (Some(port), Some(before)) => match balancer::nats_traffic(port).await {
            Ok(after) => balancer::traffic_between(before, &after),
            Err(e) => {
                eprintln!("[clacks-bench] {e:#}");
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    if let Some(s) = spawned.as_mut()
        && let Err(why) = s.check_alive()
    {
        eprintln!("[clacks-bench] {why}");
    }
    let mut report = result?;
    report.nodes = nodes;
    report.nats_traffic = nats_traffic;
    // Clacks is stopped before the ceiling starts: each runs alone.
    drop(spawned);
    if g.compare_ceiling {
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut ceiling = Spawned::start_ceiling(&exe, g.server_log_dir.as_deref()).await?;
        eprintln!("[clacks-bench] the same scenario against the ceiling");
        let result = scenario(cli, ceiling.target.clone(), 1, None, nofile).await;
        if let Err(why) = ceiling.check_alive() {
            eprintln!("[clacks-bench] ceiling: {why}");
        }
        let mut other = result.context("the ceiling's run")?;
        other.database = Some(ceiling.database.clone());
        ceiling::compare(&mut report, other);
    }
    report.database = database;
    Ok(report)
}

/// Runs the chosen scenario against `target`.
async fn scenario(
    cli: &Cli,
    target: Target,
    nodes: usize,
    database: Option<&str>,
    nofile: u64,
) -> anyhow::Result<Report> {
    let g = &cli.global;
    let mut ctx = Ctx::new(target)?;
    ctx.api.wait_ready(Duration::from_secs(10)).await?;
    ctx.via = g.send_via;
    ctx.concurrency = g.concurrency.max(1);
    ctx.connect_concurrency = g.connect_concurrency.max(1);
    ctx.size = g.size;
    ctx.drain_timeout = Duration::from_secs(g.drain_timeout);
    ctx.progress = (g.progress > 0).then(|| Duration::from_secs(g.progress));
    ctx.subscribe_after_zero = !g.no_after_seq;
    ctx.random_operation_ids = g.random_operation_ids;
    if nodes == 2 {
        ctx.send_node = 0;
        ctx.recv_node = 1;
    }
    eprintln!(
        "[clacks-bench] target {:?}; open-file limit {nofile}; database {}",
        ctx.target
            .nodes
            .iter()
            .map(|n| &n.client_url)
            .collect::<Vec<_>>(),
        database.unwrap_or("(not given)")
    );
    match &cli.scenario {
        Scenario::Fanout(o) => fanout::run(&ctx, o, "fanout").await,
        Scenario::TwoNodes(o) => fanout::run(&ctx, o, "two-nodes").await,
        Scenario::ManyChannels(o) => rooms::many_channels(&ctx, o).await,
        Scenario::Latency(o) => rooms::latency(&ctx, o).await,
        Scenario::DurableSend(o) => durable::run(&ctx, o, database).await,
        Scenario::Resume(o) => resume::run(&ctx, o).await,
        Scenario::Ceiling(_) => bail!("the ceiling is a server, not a scenario"),
    }
    .map(|mut report| {
        report.params["send_via"] = serde_json::json!(g.send_via);
        report.params["concurrency"] = serde_json::json!(g.concurrency);
        report.params["size"] = serde_json::json!(g.size);
        report.params["random_operation_ids"] = serde_json::json!(g.random_operation_ids);
        report
    })
}
