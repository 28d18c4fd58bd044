//! Smoke run of every scenario at tiny sizes against an in-process server
//! (SQLite; two nodes over NATS when it is reachable). Checks only that
//! the tool runs and that its counts are consistent (every acked message
//! reached every subscriber, exactly once); no timing is asserted.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use clacks_bench::report::Report;
use clacks_bench::scenarios::{Ctx, durable, fanout, resume, rooms};
use clacks_bench::target::{Node, SendVia, Target};
use clacks_server::{Config, RunningServer};
use clacks_testkit::{TestBackend, TestDatabase};

const SECRET: &str = "clacks-bench-smoke-secret-0123456789abcdef";

struct Server {
    servers: Vec<RunningServer>,
    _db: TestDatabase,
    target: Target,
}

impl Server {
    async fn start(nodes: usize, nats: Option<&str>) -> Server {
        let db = TestDatabase::create(TestBackend::Sqlite)
            .await
            .expect("sqlite");
        let prefix = format!("clacks-bench-smoke-{}", uuid_like());
        let mut servers = Vec::new();
        let mut list = Vec::new();
        for _ in 0..nodes {
            let mut config = Config::defaults();
            config.database_url = db.url.clone();
            config.client_addr = "127.0.0.1:0".parse().unwrap();
            config.management_addr = "127.0.0.1:0".parse().unwrap();
            config.jwt_secret = Some(SECRET.to_owned());
            config.send_rate = 100_000;
            config.send_burst = 100_000;
            config.shutdown_grace = 2;
            if let Some(url) = nats {
                config.nats_url = Some(url.to_owned());
                config.nats_subject_prefix = prefix.clone();
            }
            let store = clacks_server::connect_store(&config, &Default::default())
                .await
                .expect("store");
            let server = clacks_server::start(&config, store).await.expect("start");
            list.push(Node {
                client_url: format!("http://{}", server.client_addr),
                management_url: format!("http://{}", server.management_addr),
                pid: None,
            });
            servers.push(server);
        }
        Server {
            servers,
            _db: db,
            target: Target {
                nodes: list,
                jwt_secret: Some(SECRET.to_owned()),
                management_token: None,
                ..Default::default()
            },
        }
    }

    fn ctx(&self) -> Ctx {
        let mut ctx = Ctx::new(self.target.clone()).expect("ctx");
        ctx.concurrency = 8;
        ctx.connect_concurrency = 8;
        ctx.drain_timeout = Duration::from_secs(20);
        ctx.progress = None;
        ctx
    }

    async fn stop(self) {
        for s in self.servers {
            s.shutdown().await;
        }
    }
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn assert_consistent(report: &Report) {
    let c = &report.consistency;
    assert!(c.ok, "inconsistent run:\n{}", report.human());
    assert_eq!(c.sent, c.acked, "{}", report.human());
    assert_eq!(c.delivered, c.expected_deliveries, "{}", report.human());
    // The JSON document is produced for every run.
    serde_json::to_string(report).expect("json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_small() {
    let server = Server::start(1, None).await;
    let ctx = server.ctx();
    let opts = fanout::FanoutOpts {
        subscribers: 5,
        burst: 4,
        bursts: 2,
        senders: 2,
        pause_ms: 0,
    };
    let report = fanout::run(&ctx, &opts, "fanout").await.expect("fanout");
    assert_consistent(&report);
    // Warm-up (1 message) and 2 bursts of 4, each to 5 subscribers.
    assert_eq!(report.consistency.acked, 9);
    assert_eq!(report.consistency.delivered, 45);
    assert_eq!(report.phases[0].delivered, 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_many_channels_small() {
    let server = Server::start(1, None).await;
    let ctx = server.ctx();
    let opts = rooms::LatencyOpts {
        channels: 3,
        members: 3,
        rates: vec![20.0, 40.0],
        duration: 1,
    };
    let report = rooms::latency(&ctx, &opts).await.expect("latency");
    assert_consistent(&report);
    assert_eq!(report.phases.len(), 2);
    assert_eq!(report.phases[0].acked, 20);
    assert_eq!(report.phases[0].delivered, 60);

    let opts = rooms::ManyChannelsOpts {
        channels: 4,
        members: 2,
        rates: vec![20.0],
        duration: 1,
        settle: 0,
        no_subscribe: false,
    };
    let report = rooms::many_channels(&ctx, &opts)
        .await
        .expect("many-channels");
    assert_consistent(&report);
    assert_eq!(report.connections, 8);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_send_small_both_ways() {
    let server = Server::start(1, None).await;
    let mut ctx = server.ctx();
    let opts = durable::DurableOpts {
        senders: 4,
        channels: 2,
        duration: 1,
        max_messages: 40,
        half_rate_duration: 1,
        subscribe: true,
    };
    let report = durable::run(&ctx, &opts, Some("sqlite"))
        .await
        .expect("durable");
    assert_consistent(&report);
    assert_eq!(report.phases[0].acked, 40);

    ctx.via = SendVia::Api;
    let opts = durable::DurableOpts {
        subscribe: false,
        half_rate_duration: 0,
        ..opts
    };
    let report = durable::run(&ctx, &opts, Some("sqlite"))
        .await
        .expect("durable api");
    assert_consistent(&report);
    assert_eq!(report.phases[0].acked, 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_small() {
    let server = Server::start(1, None).await;
    let ctx = server.ctx();
    for stream in [resume::Stream::Message, resume::Stream::Events] {
        let opts = resume::ResumeOpts {
            missed: 30,
            repeats: 2,
            stream,
            resume_timeout: 20,
        };
        let report = resume::run(&ctx, &opts).await.expect("resume");
        assert!(report.consistency.ok, "{}", report.human());
        let rounds: Vec<_> = report
            .phases
            .iter()
            .filter(|p| p.name.ends_with("resume"))
            .collect();
        assert_eq!(rounds.len(), 2);
        for r in rounds {
            assert_eq!(r.extra["received"], 30, "{}", report.human());
            assert_eq!(r.extra["exactly_once_in_order"], true, "{}", report.human());
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_small() {
    let nats =
        std::env::var("CLACKS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    if std::net::TcpStream::connect(nats.trim_start_matches("nats://")).is_err() {
        clacks_testkit::skip_or_fail(&format!("NATS at {nats}"), "connection refused");
        return;
    }
    let server = Server::start(2, Some(&nats)).await;
    let mut ctx = server.ctx();
    ctx.send_node = 0;
    ctx.recv_node = 1;
    let opts = fanout::FanoutOpts {
        subscribers: 4,
        burst: 5,
        bursts: 2,
        senders: 2,
        pause_ms: 0,
    };
    let report = fanout::run(&ctx, &opts, "two-nodes")
        .await
        .expect("two nodes");
    assert_consistent(&report);
    assert_eq!(report.consistency.delivered, 11 * 4);
    server.stop().await;
}

/// The ceiling of issue 14 runs the same scenarios with the same counts,
/// and `compare` turns two reports into ratios (values not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_small() {
    use clacks_bench::ceiling::{Ceiling, CeilingOpts, compare};
    let ceiling = Ceiling::start(&CeilingOpts {
        client_addr: "127.0.0.1:0".parse().unwrap(),
        management_addr: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .expect("ceiling");
    let mut ctx = Ctx::new(ceiling.target()).expect("ctx");
    ctx.concurrency = 8;
    ctx.connect_concurrency = 8;
    ctx.progress = None;
    let opts = fanout::FanoutOpts {
        subscribers: 5,
        burst: 4,
        bursts: 2,
        senders: 2,
        pause_ms: 0,
    };
    let on_ceiling = fanout::run(&ctx, &opts, "fanout")
        .await
        .expect("fanout on the ceiling");
    assert_consistent(&on_ceiling);
    assert_eq!(on_ceiling.consistency.acked, 9);
    assert_eq!(on_ceiling.consistency.delivered, 45);
    assert_eq!(on_ceiling.phases[0].delivered, 40);

    // The management API's send path and many-channels, both ways.
    ctx.via = SendVia::Api;
    for no_subscribe in [false, true] {
        let opts = rooms::ManyChannelsOpts {
            channels: 4,
            members: 2,
            rates: vec![20.0],
            duration: 1,
            settle: 0,
            no_subscribe,
        };
        let report = rooms::many_channels(&ctx, &opts)
            .await
            .expect("many-channels on the ceiling");
        assert_consistent(&report);
        assert_eq!(report.connections, 8);
        if !no_subscribe {
            // Warm-up (4) and 20 messages, each to both members.
            assert_eq!(report.consistency.delivered, 48, "{}", report.human());
        }
    }

    let server = Server::start(1, None).await;
    let on_clacks = fanout::run(&server.ctx(), &opts, "fanout")
        .await
        .expect("fanout on Clacks");
    assert_consistent(&on_clacks);
    let mut report = on_clacks;
    compare(&mut report, on_ceiling);
    assert!(report.ratios.contains_key("delivered_events_per_s"));
    assert!(report.ceiling.is_some());
    assert!(report.human().contains("against the ceiling"));
    server.stop().await;
    ceiling.stop().await;
}
