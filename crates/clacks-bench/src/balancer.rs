//! Several nodes as a deployment runs them: a NATS server of the run's own
//! (with its monitoring port, so that what each node received can be read
//! from `/connz`) and HAProxy in front of the nodes' client ports.
//!
//! HAProxy routes a WebSocket by its `room` query parameter (consistent
//! hashing), so every subscriber of a channel lands on one node, as an
//! application that shards rooms over nodes would arrange; requests without
//! it (the sends) go round robin, so most sends cross NATS.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// A started helper process and its log.
pub struct Helper {
    pub child: tokio::process::Child,
    pub log: std::path::PathBuf,
}

fn start(program: &str, args: &[String], log: &Path) -> anyhow::Result<Helper> {
    let file = std::fs::File::create(log).with_context(|| format!("{} log", program))?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program} (apt-get install it)"))?;
    Ok(Helper {
        child,
        log: log.to_owned(),
    })
}

async fn wait_for_port(port: u16, what: &str, helper: &mut Helper) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(Some(status)) = helper.child.try_wait() {
            let log = std::fs::read_to_string(&helper.log).unwrap_or_default();
            bail!("{what} exited ({status}):\n{log}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within 10 s")
}

/// `nats-server` on `port`, monitoring on `monitor`, no persistence.
pub async fn start_nats(port: u16, monitor: u16, dir: &Path) -> anyhow::Result<Helper> {
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor.to_string(),
    ]
    .map(String::from);
    let mut helper = start("nats-server", &args, &dir.join("nats-server.log"))?;
    wait_for_port(port, "nats-server", &mut helper).await?;
    wait_for_port(monitor, "nats-server monitoring", &mut helper).await?;
    Ok(helper)
}

/// HAProxy on `port` in front of `backends` (client ports).
pub async fn start_haproxy(port: u16, backends: &[u16], dir: &Path) -> anyhow::Result<Helper> {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server node{i} 127.0.0.1:{p}\n"))
        .collect();
    // Two descriptors per proxied connection, within what this process may
    // grant (HAProxy refuses to start when its maxconn needs more).
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(4096);
    let maxconn = (hard.saturating_sub(200) / 2).clamp(100, 60_000);
    // `timeout tunnel` governs upgraded WebSockets; the nodes ping every
    // 15 s, so an hour only bounds sockets nobody closed.
    let config = format!(
        "global\n  maxconn {maxconn}\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n\
         frontend clients\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
         backend nodes\n  balance url_param room\n  hash-type consistent\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).context("writing haproxy.cfg")?;
    let program = if Path::new("/usr/sbin/haproxy").is_file() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    };
    let args = [
        "-db".to_owned(),
        "-f".to_owned(),
        path.display().to_string(),
    ];
    let mut helper = start(program, &args, &dir.join("haproxy.log"))?;
    wait_for_port(port, "haproxy", &mut helper).await?;
    Ok(helper)
}

/// What one client connection of the NATS server carried.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NatsTraffic {
    /// The client's connection name (`clacks-<node id>`).
    pub name: String,
    /// Messages the server sent to it: what the node received.
    pub received: u64,
    /// Messages it published.
    pub published: u64,
    /// What it received, by the subject's first token after the prefix
    /// (`ch`, `user`, `tails`, `presence`, `probe`, `ctl`, `inbox`): the
    /// per-subscription counts of `/connz?subs=detail`. A subscription
    /// dropped during the run takes its count with it, so these can add up
    /// to less than `received`.
    pub received_by_subject: BTreeMap<String, u64>,
}

/// Every named client connection's counters, from `/connz`.
pub async fn nats_traffic(monitor: u16) -> anyhow::Result<Vec<NatsTraffic>> {
    let body: serde_json::Value = reqwest::get(format!(
        "http://127.0.0.1:{monitor}/connz?limit=1024&subs=detail"
    ))
    .await
    .context("reading /connz")?
    .json()
    .await
    .context("decoding /connz")?;
    let mut out: Vec<NatsTraffic> = body["connections"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    Some(NatsTraffic {
                        name: c["name"].as_str()?.to_owned(),
                        received: c["out_msgs"].as_u64().unwrap_or(0),
                        published: c["in_msgs"].as_u64().unwrap_or(0),
                        received_by_subject: by_subject(c),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Messages delivered to a connection's subscriptions, summed by the
/// subject's kind (`{prefix}.{kind}...`).
fn by_subject(connection: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sub in connection["subscriptions_list_detail"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let subject = sub["subject"].as_str().unwrap_or_default();
        let kind = subject.split('.').nth(1).unwrap_or(subject).to_owned();
        *out.entry(kind).or_insert(0) += sub["msgs"].as_u64().unwrap_or(0);
    }
    out
}

/// `after - before` per connection name (connections that appeared in
/// between count from zero).
pub fn traffic_between(before: &[NatsTraffic], after: &[NatsTraffic]) -> Vec<NatsTraffic> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.name == a.name);
            NatsTraffic {
                name: a.name.clone(),
                received: a.received - b.map_or(0, |b| b.received.min(a.received)),
                published: a.published - b.map_or(0, |b| b.published.min(a.published)),
                received_by_subject: a
                    .received_by_subject
                    .iter()
                    .map(|(kind, after)| {
                        let before = b
                            .and_then(|b| b.received_by_subject.get(kind))
                            .copied()
                            .unwrap_or(0);
                        (kind.clone(), after.saturating_sub(before))
                    })
                    .collect(),
            }
        })
        .collect()
}
