//! A TCP proxy the test controls, between a server and its database or
//! NATS: `cut` closes every relayed connection and stops listening (new
//! connections are refused, as by a host whose service is down), `restore`
//! listens again on the same port. An optional delay on the way back
//! stands for a slow or distant database.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub struct TcpProxy {
    pub addr: SocketAddr,
    /// Whether the link should be up (the test's wish).
    wanted: watch::Sender<bool>,
    /// Whether the proxy listens (the accept loop's report).
    listening: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Relays a new loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        TcpProxy::with_delay(upstream, Duration::ZERO).await
    }

    /// Like [`TcpProxy::start`], holding every chunk from `upstream` back
    /// for `delay` (each round trip takes that much longer).
    pub async fn with_delay(upstream: SocketAddr, delay: Duration) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (wanted, wanted_rx) = watch::channel(true);
        let (listening_tx, listening) = watch::channel(true);
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            delay,
            wanted_rx,
            listening_tx,
        ));
        TcpProxy {
            addr,
            wanted,
            listening,
            task,
        }
    }

    /// The address a database or NATS URL points to.
    pub fn upstream_of(url: &str) -> SocketAddr {
        let parsed = url::Url::parse(url).expect("a URL");
        let host = parsed.host_str().expect("a host");
        let port = parsed.port().expect("a port");
        format!("{host}:{port}").parse().expect("an IP host")
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("a URL");
        parsed.set_ip_host(self.addr.ip()).expect("an IP host");
        parsed.set_port(Some(self.addr.port())).expect("a port");
        parsed.to_string()
    }

    /// Closes every relayed connection and refuses new ones; returns once
    /// the port no longer listens.
    pub async fn cut(&self) {
        self.wanted.send_replace(false);
        let mut listening = self.listening.clone();
        listening.wait_for(|up| !*up).await.expect("proxy task");
    }

    /// Listens again on the same port; returns once it does.
    pub async fn restore(&self) {
        self.wanted.send_replace(true);
        let mut listening = self.listening.clone();
        listening.wait_for(|up| *up).await.expect("proxy task");
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Relayed connections end with the closed channel.
        self.wanted.send_replace(false);
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    delay: Duration,
    mut wanted: watch::Receiver<bool>,
    listening: watch::Sender<bool>,
) {
    let relays_wanted = wanted.clone();
    let mut listener = Some(listener);
    loop {
        let bound = match listener.take() {
            Some(bound) => bound,
            None => rebind(addr).await,
        };
        listening.send_replace(true);
        loop {
            tokio::select! {
                accepted = bound.accept() => {
                    if let Ok((inbound, _)) = accepted {
                        tokio::spawn(relay(inbound, upstream, delay, relays_wanted.clone()));
                    }
                }
                cut = wanted.wait_for(|up| !*up) => {
                    if cut.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
        drop(bound);
        listening.send_replace(false);
        if wanted.wait_for(|up| *up).await.is_err() {
            return;
        }
    }
}

/// Binds the port again (a connection of some other process could hold
/// it for a moment as its local port).
async fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the proxy cannot listen on {addr} again: {e}"),
        }
    }
}

/// Relays one connection until either side closes or the link is cut.
async fn relay(
    inbound: TcpStream,
    upstream: SocketAddr,
    delay: Duration,
    mut wanted: watch::Receiver<bool>,
) {
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut upstream_read, upstream_write) = outbound.into_split();
    let to_upstream = async {
        let mut upstream_write = upstream_write;
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
    };
    let from_upstream = async {
        if delay.is_zero() {
            let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        } else {
            delayed_copy(&mut upstream_read, &mut client_write, delay).await;
        }
    };
    tokio::select! {
        () = to_upstream => {}
        () = from_upstream => {}
        _ = wanted.wait_for(|up| !*up) => {}
    }
}

/// Copies chunks, each written `delay` after it was read: a fixed latency
/// however many chunks are in flight.
async fn delayed_copy(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let read = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0
                || chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    // The writer drains what was read before the upstream closed.
    tokio::join!(read, write);
}
