//! What the fault tests are made of: server processes, a cuttable TCP
//! proxy, a NATS server and an HAProxy of the test's own, clients that send
//! and subscribe over WebSocket, and the durability checks against the
//! database itself.

pub mod haproxy;
pub mod nats;
pub mod proxy;
pub mod server;
pub mod traffic;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

/// A token for `user`, signed with the key every spawned server gets.
pub fn token(user: &str) -> String {
    let now = crate::client::now();
    crate::client::token_with(serde_json::json!({"sub": user, "nbf": now, "exp": now + 3600}))
}

/// An external program the test needs (`nats-server`, `haproxy`), looked up
/// on `PATH` and in the sbin directories Debian installs daemons to (a
/// non-root `PATH` often lacks them). `None` after a loud skip notice, or a
/// failure when backends are required (CI).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        clacks_testkit::skip_or_fail(
            name,
            "not installed (Debian: apt-get install nats-server haproxy)",
        );
    }
    found
}

/// Polls `check` every 50 ms until it holds or `within` passes; true when
/// it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nothing listens on right now, for a process that must
/// be told its port up front (NATS, HAProxy). Another process could take it
/// before the child binds it; the child then fails to start, loudly.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
