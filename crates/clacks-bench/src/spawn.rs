//! Starts `clacks` server processes for a run: free loopback ports, a
//! fresh database (SQLite file in a temp dir, or a new MariaDB database /
//! PostgreSQL schema through `clacks-testkit`), a random JWT secret the
//! tool shares, a send rate limit high enough for throughput runs, and
//! optionally NATS for several nodes. Processes are killed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clacks_testkit::{TestBackend, TestDatabase};

use crate::target::{Api, Node, Target};

/// Which database a spawned server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Db {
    Sqlite,
    Mysql,
    Postgres,
}

/// What to spawn.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    pub binary: PathBuf,
    pub db: Db,
    /// Use this `DATABASE_URL` instead of creating a fresh database.
    pub database_url: Option<String>,
    pub nodes: usize,
    /// NATS for more than one node.
    pub nats_url: Option<String>,
    /// Extra `KEY=VALUE` environment for the servers (tuning knobs).
    pub env: Vec<(String, String)>,
    /// Where server logs go (default: a file in the run's temp dir).
    pub log_dir: Option<PathBuf>,
    /// Run the nodes behind HAProxy, over a NATS server of this run's own
    /// (see [`crate::balancer`]).
    pub balancer: bool,
}

/// Running server processes and what they need to stay alive.
pub struct Spawned {
    pub target: Target,
    pub database: String,
    children: Vec<tokio::process::Child>,
    logs: Vec<PathBuf>,
    /// Monitoring port of the run's own NATS server, if it has one.
    pub nats_monitor: Option<u16>,
    _db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Spawned {
    pub async fn start(opts: &SpawnOptions) -> anyhow::Result<Spawned> {
        if !opts.binary.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p clacks-server`",
                opts.binary.display()
            );
        }
        let dir = tempfile::tempdir().context("temp dir")?;
        let (url, db) = match (&opts.database_url, opts.db) {
            (Some(url), _) => (url.clone(), None),
            (None, Db::Sqlite) => (
                format!("sqlite://{}", dir.path().join("bench.db").display()),
                None,
            ),
            (None, other) => {
                let backend = if other == Db::Mysql {
                    TestBackend::MySql
                } else {
                    TestBackend::Postgres
                };
                let db = TestDatabase::create(backend)
                    .await
                    .ok_or_else(|| anyhow!("{} is unreachable", backend.name()))?;
                (db.url.clone(), Some(db))
            }
        };
        let jwt_secret = secret();
        let nats_prefix = format!("clacks-bench-{}", uuid::Uuid::new_v4().simple());
        let mut nodes = Vec::new();
        let mut children = Vec::new();
        let mut logs = Vec::new();
        let log_dir = opts
            .log_dir
            .clone()
            .unwrap_or_else(|| dir.path().to_owned());
        let mut nats_url = opts
            .nats_url
            .clone()
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        let mut nats_monitor = None;
        let mut client_ports = Vec::new();
        if opts.balancer && opts.nodes > 1 {
            let (port, monitor) = (free_port()?, free_port()?);
            let nats = crate::balancer::start_nats(port, monitor, &log_dir).await?;
            children.push(nats.child);
            logs.push(nats.log);
            nats_url = format!("nats://127.0.0.1:{port}");
            nats_monitor = Some(monitor);
        }
        let first_node = children.len();
        for i in 0..opts.nodes.max(1) {
            let client = free_port()?;
            let management = free_port()?;
            let log = log_dir.join(format!("clacks-node{i}.log"));
            let log_file = std::fs::File::create(&log).context("server log file")?;
            let mut cmd = tokio::process::Command::new(&opts.binary);
            cmd.env("DATABASE_URL", &url)
                .env("JWT_SECRET", &jwt_secret)
                .env("CLACKS_CLIENT_ADDR", format!("127.0.0.1:{client}"))
                .env("CLACKS_MANAGEMENT_ADDR", format!("127.0.0.1:{management}"))
                .env("CLACKS_SEND_RATE", "1000000")
                .env("CLACKS_SEND_BURST", "1000000")
                // A send also spends its operation's cost from the sender's
                // query-cost budget: the one-sender scenarios (resume's
                // 10,000-message fill) would be metered by it instead.
                .env("CLACKS_QUERY_COST_RATE", "100000000")
                .env("CLACKS_QUERY_COST_BURST", "100000000")
                .env("CLACKS_LOG", "warn")
                .env_remove("CLACKS_MANAGEMENT_TOKEN")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .kill_on_drop(true);
            if opts.nodes > 1 {
                cmd.env("CLACKS_NATS_URL", &nats_url)
                    .env("CLACKS_NATS_SUBJECT_PREFIX", &nats_prefix);
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", opts.binary.display()))?;
            nodes.push(Node {
                client_url: format!("http://127.0.0.1:{client}"),
                management_url: format!("http://127.0.0.1:{management}"),
                pid: child.id(),
            });
            children.push(child);
            logs.push(log);
            client_ports.push(client);
            // Nodes migrate the shared database one after the other.
            let spawned_one = Target {
                nodes: vec![nodes[i].clone()],
                jwt_secret: None,
                management_token: None,
                ..Default::default()
            };
            let api = Api::new(spawned_one, 2)?;
            if let Err(e) = api.wait_ready(Duration::from_secs(60)).await {
                let tail = log_tail(&logs[first_node + i]);
                bail!("server node {i} did not become ready: {e}\n--- log ---\n{tail}");
            }
        }
        let mut target = Target {
            nodes,
            jwt_secret: Some(jwt_secret),
            management_token: None,
            ..Default::default()
        };
        if opts.balancer {
            let port = free_port()?;
            let haproxy = crate::balancer::start_haproxy(port, &client_ports, &log_dir).await?;
            children.push(haproxy.child);
            logs.push(haproxy.log);
            target = Target {
                nodes: vec![Node {
                    client_url: format!("http://127.0.0.1:{port}"),
                    // The management API is not balanced: any node will do.
                    management_url: target.nodes[0].management_url.clone(),
                    pid: None,
                }],
                backend_pids: target.nodes.iter().filter_map(|n| n.pid).collect(),
                room_affinity: true,
                ..target
            };
        }
        Ok(Spawned {
            target,
            database: clacks_core::redact_url(&url),
            children,
            logs,
            nats_monitor,
            _db: db,
            _dir: dir,
        })
    }

    /// Starts the ceiling (`clacks-bench ceiling`, from the `binary` of
    /// this tool) on free loopback ports, with Clacks' allocator settings.
    pub async fn start_ceiling(binary: &Path, log_dir: Option<&Path>) -> anyhow::Result<Spawned> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let client = free_port()?;
        let management = free_port()?;
        let log = log_dir.unwrap_or(dir.path()).join("ceiling.log");
        let log_file = std::fs::File::create(&log).context("ceiling log file")?;
        let child = tokio::process::Command::new(binary)
            .arg("ceiling")
            .arg("--client-addr")
            .arg(format!("127.0.0.1:{client}"))
            .arg("--management-addr")
            .arg(format!("127.0.0.1:{management}"))
            // As crates/clacks-server/src/main.rs configures jemalloc.
            .env(
                "_RJEM_MALLOC_CONF",
                "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0",
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ceiling", binary.display()))?;
        let node = Node {
            client_url: format!("http://127.0.0.1:{client}"),
            management_url: format!("http://127.0.0.1:{management}"),
            pid: child.id(),
        };
        let target = Target {
            nodes: vec![node],
            jwt_secret: Some(secret()),
            management_token: None,
            ..Default::default()
        };
        let api = Api::new(target.clone(), 2)?;
        if let Err(e) = api.wait_ready(Duration::from_secs(20)).await {
            bail!(
                "the ceiling did not become ready: {e}\n--- log ---\n{}",
                log_tail(&log)
            );
        }
        Ok(Spawned {
            target,
            database: "none (ceiling)".into(),
            children: vec![child],
            logs: vec![log],
            nats_monitor: None,
            _db: None,
            _dir: dir,
        })
    }

    /// Whether every server process is still running; the log tail of
    /// the first that exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "process {i} ({}) exited ({status})\n--- log ---\n{}",
                    self.logs[i].display(),
                    log_tail(&self.logs[i])
                ));
            }
        }
        Ok(())
    }

    pub fn log_paths(&self) -> &[PathBuf] {
        &self.logs
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
