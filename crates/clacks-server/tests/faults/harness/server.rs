//! The `clacks` binary as a child process: started on ephemeral loopback
//! ports (read back from its "clacks is serving" log line), stopped with
//! SIGKILL or SIGTERM, its resident memory read from `/proc`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::helpers::TEST_JWT_SECRET;

/// How a server process is configured; the same options start it again
/// after a crash.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub database_url: String,
    /// `CLACKS_...` settings on top of [`ServerOptions::new`]'s.
    pub env: Vec<(String, String)>,
}

impl ServerOptions {
    /// Defaults for fault tests: JSON logs (the addresses are read from
    /// them), a send rate no test reaches unless it sets its own, and
    /// keep-alives every 2 s so an idle client's read never waits long.
    pub fn new(database_url: &str) -> ServerOptions {
        ServerOptions {
            database_url: database_url.to_owned(),
            env: Vec::new(),
        }
        .with("CLACKS_SEND_RATE", "100000")
        .with("CLACKS_SEND_BURST", "100000")
        .with("CLACKS_KEEPALIVE_INTERVAL", "2")
        .with("CLACKS_SHUTDOWN_GRACE", "5")
    }

    pub fn with(mut self, name: &str, value: impl ToString) -> ServerOptions {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_owned(), value.to_string()));
        self
    }
}

/// The last lines a server logged, for failure messages.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<VecDeque<String>>>);

impl Logs {
    const KEPT: usize = 300;

    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() == Self::KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self, count: usize) -> String {
        let lines = self.0.lock().unwrap();
        let skip = lines.len().saturating_sub(count);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub struct Server {
    pub name: String,
    pub client: SocketAddr,
    pub management: SocketAddr,
    child: Child,
    logs: Logs,
    http: reqwest::Client,
}

impl Server {
    /// Starts `clacks` and waits until it serves.
    pub async fn start(name: &str, options: &ServerOptions) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clacks"));
        command
            .env_clear()
            .env("DATABASE_URL", &options.database_url)
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("CLACKS_CLIENT_ADDR", "127.0.0.1:0")
            .env("CLACKS_MANAGEMENT_ADDR", "127.0.0.1:0")
            .env("CLACKS_LOG_FORMAT", "json")
            .env("CLACKS_LOG", "info")
            .envs(options.env.iter().map(|(n, v)| (n, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn clacks");
        let logs = Logs::default();
        let (serving, addresses) = oneshot::channel();
        tokio::spawn(collect(
            child.stdout.take().expect("stdout"),
            logs.clone(),
            Some(serving),
        ));
        tokio::spawn(collect(
            child.stderr.take().expect("stderr"),
            logs.clone(),
            None,
        ));
        let started = tokio::time::timeout(Duration::from_secs(60), addresses).await;
        let Ok(Ok((client, management))) = started else {
            let _ = child.start_kill();
            panic!(
                "server {name} did not serve within 60 s:\n{}",
                logs.tail(40)
            );
        };
        Server {
            name: name.to_owned(),
            client,
            management,
            child,
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.client)
    }

    pub fn logs(&self, lines: usize) -> String {
        self.logs.tail(lines)
    }

    /// SIGKILL: the process ends at once, with whatever it had in flight.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap the server");
    }

    /// SIGTERM, then waits for the exit (a graceful shutdown).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("reap the server"),
            Err(_) => panic!(
                "server {} still running {within:?} after SIGTERM:\n{}",
                self.name,
                self.logs(40)
            ),
        }
    }

    /// Sends a signal (by name, as `kill -s` takes it) without waiting.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Resident memory of the process, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Creates a channel over the management API; returns its id.
    pub async fn create_channel(&self, name: &str, members: &[String]) -> i64 {
        let response: Value = self
            .http
            .post(format!("http://{}/api/v1/channel", self.management))
            .json(&json!({"displayName": name, "initialUsers": members}))
            .send()
            .await
            .expect("create channel")
            .json()
            .await
            .expect("create channel: JSON");
        response["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("create channel: {response}"))
    }

    /// The status `/readyz` answers with, or `None` when it does not
    /// answer within `within`.
    pub async fn readyz(&self, within: Duration) -> Option<u16> {
        let request = self
            .http
            .get(format!("http://{}/readyz", self.management))
            .timeout(within)
            .send();
        request.await.ok().map(|r| r.status().as_u16())
    }

    /// Sends one message over HTTP as `user` with a client message id:
    /// its seq, or the error code.
    pub async fn send_once(
        &self,
        user: &str,
        channel: i64,
        client_message_id: &str,
    ) -> Result<i64, String> {
        let response: Value = self
            .http
            .post(format!("http://{}/graphql", self.client))
            .bearer_auth(super::token(user))
            .json(&json!({
                "query": super::traffic::CREATE_MESSAGE,
                "variables": {"c": channel.to_string(), "t": client_message_id, "k": client_message_id},
            }))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        super::traffic::mutation_outcome(&response)
    }
}

impl Drop for Server {
    /// A failing test shows what the server logged last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last log lines of server {} ---\n{}\n---",
                self.name,
                self.logs(60)
            );
        }
    }
}

/// Keeps a server's output lines; reports the addresses from the line
/// that announces them.
async fn collect(
    output: impl AsyncRead + Unpin,
    logs: Logs,
    mut serving: Option<oneshot::Sender<(SocketAddr, SocketAddr)>>,
) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if serving.is_some()
            && let Some(addresses) = serving_addresses(&line)
            && let Some(serving) = serving.take()
        {
            let _ = serving.send(addresses);
        }
        logs.push(line);
    }
}

fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let fields = &entry["fields"];
    if fields["message"] != "clacks is serving" {
        return None;
    }
    let client = fields["client"].as_str()?.parse().ok()?;
    let management = fields["management"].as_str()?.parse().ok()?;
    Some((client, management))
}
