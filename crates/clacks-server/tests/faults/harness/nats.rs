//! A `nats-server` of the test's own (random port, its own JetStream store
//! directory), which the test may kill and start again on the same port.
//! The shared NATS on 4222 is never touched.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub struct NatsServer {
    pub addr: SocketAddr,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts one, or `None` (after a loud skip) when `nats-server` is not
    /// installed.
    pub async fn start() -> Option<NatsServer> {
        let binary = super::tool("nats-server")?;
        let mut nats = NatsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], super::free_port())),
            binary,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        nats.run().await;
        Some(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Kills the server (SIGKILL: connected clients see the link drop).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL nats-server");
            child.wait().await.expect("reap nats-server");
        }
    }

    /// Starts it again on the same port and store directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }

    async fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let up = super::eventually(Duration::from_secs(20), || async {
            TcpStream::connect(self.addr).await.is_ok()
        })
        .await;
        assert!(
            up,
            "nats-server did not listen on {} within 20 s",
            self.addr
        );
    }
}
