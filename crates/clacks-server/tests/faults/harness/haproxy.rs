//! HAProxy (Debian's package) in front of several nodes' client ports, as
//! an operator would run it for Clacks: WebSocket-aware (`timeout tunnel`
//! for upgraded connections), `/healthz` checks that take a dead node out
//! within about a second, and a connection to a dead node redispatched to
//! a live one.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Haproxy {
    pub addr: SocketAddr,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy balancing over `nodes`, or `None` (after a loud skip)
    /// when it is not installed.
    pub async fn start(nodes: &[SocketAddr]) -> Option<Haproxy> {
        let binary = super::tool("haproxy")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, configuration(addr, nodes)).expect("write haproxy.cfg");
        let child = Command::new(binary)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn haproxy");
        let http = reqwest::Client::new();
        let healthz = format!("http://{addr}/healthz");
        let up = super::eventually(Duration::from_secs(20), || async {
            let response = http.get(&healthz).send().await;
            response.is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up, "HAProxy did not serve /healthz on {addr} within 20 s");
        Some(Haproxy {
            addr,
            _child: child,
            _dir: dir,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }
}

fn configuration(addr: SocketAddr, nodes: &[SocketAddr]) -> String {
    let mut servers = String::new();
    for (i, node) in nodes.iter().enumerate() {
        servers.push_str(&format!("    server node{i} {node} check\n"));
    }
    format!(
        "global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # An upgraded WebSocket is a tunnel: idle up to the keep-alive interval.
    timeout tunnel 1h
    timeout client-fin 5s
    # A connection refused by a dead node is tried on another.
    retries 3
    option redispatch 1

frontend clients
    bind {addr}
    default_backend clacks

backend clacks
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}"
    )
}
