//! A minimal `graphql-transport-ws` client: connect with the subprotocol,
//! `connection_init` with the bearer token, wait for `connection_ack`,
//! `subscribe`, then a receiver loop.
//!
//! The receiver is the hot loop of the tool (hundreds of thousands of
//! frames per second on the same cores as the server), so it does not
//! parse JSON for message events: it finds the send stamp (`cb1:<ns>`) and
//! the `"seq":` in the frame text. Anything else (errors, `complete`,
//! `ping`) is parsed properly. Socket buffers are small so that 10,000
//! client connections stay cheap.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::metrics::Counters;
use crate::target::{number_after, stamp_of};

pub type Socket = WebSocketStream<TcpStream>;

/// Subscription to one channel's messages, with `seq` and the content
/// carrying the stamp.
pub const MESSAGE_SUBSCRIPTION: &str =
    "subscription($c: ID, $after: Int) { message(channel: $c, afterSeq: $after) { seq content } }";

/// The same through the richer `events` stream (message events only).
pub const EVENTS_SUBSCRIPTION: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after, kinds: [MESSAGE_CREATED]) { seq ... on MessageCreated { message { content } } } }";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024))
}

/// Opens a WebSocket to `ws_url` speaking `graphql-transport-ws` and
/// completes `connection_init` → `connection_ack`.
pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<Socket> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_inner(ws_url, token))
        .await
        .map_err(|_| anyhow!("WebSocket handshake to {ws_url} took over {HANDSHAKE_TIMEOUT:?}"))?
}

async fn connect_inner(ws_url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = ws_url.into_client_request().context("WebSocket URL")?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| anyhow!("no host in {ws_url}"))?;
    let tcp = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config()))
        .await
        .context("WebSocket upgrade")?;
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await?;
    loop {
        let Some(msg) = ws.next().await else {
            bail!("connection closed before connection_ack")
        };
        match msg? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                match v.get("type").and_then(Value::as_str) {
                    Some("connection_ack") => return Ok(ws),
                    Some("ping") => {
                        ws.send(Message::text(r#"{"type":"pong"}"#)).await?;
                    }
                    _ => bail!("unexpected frame before connection_ack: {t}"),
                }
            }
            Message::Close(frame) => bail!("closed before connection_ack: {frame:?}"),
            _ => {}
        }
    }
}

/// Sends `subscribe` for `query` with `variables` under operation `id`.
pub async fn subscribe(
    ws: &mut Socket,
    id: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<()> {
    let frame =
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}});
    ws.send(Message::text(frame.to_string()))
        .await
        .context("sending subscribe")
}

/// Per-connection state, readable while the receiver runs.
#[derive(Default)]
pub struct ConnState {
    pub received: AtomicU64,
    pub last_seq: AtomicI64,
    /// Close code from the server (0: none yet).
    pub close_code: AtomicU32,
    pub ended: std::sync::atomic::AtomicBool,
}

/// Reads frames until `stop` fires, the socket closes or the server
/// completes every operation. Message events are counted in `state` and
/// `counters`, with their send-to-receive latency.
pub async fn receive(
    mut ws: Socket,
    key: usize,
    state: Arc<ConnState>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                state.close_code.store(u32::from(code), Relaxed);
                if code != 1000 && code != 1001 {
                    counters
                        .receive_errors
                        .add(&format!("close {code}"), || format!("{frame:?}"));
                }
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                counters.receive_errors.add("socket", || e.to_string());
                break;
            }
            None => break,
        };
        if let Some(sent) = stamp_of(&text) {
            let now = crate::now_ns();
            counters
                .latency
                .record(key, now.saturating_sub(sent) / 1000);
            state.received.fetch_add(1, Relaxed);
            counters.delivered.fetch_add(1, Relaxed);
            counters.last_delivery_ns.fetch_max(now, Relaxed);
            if let Some(seq) = number_after(&text, "\"seq\":") {
                let seq = seq as i64;
                let prev = state.last_seq.swap(seq, Relaxed);
                if seq <= prev {
                    counters.out_of_order.fetch_add(1, Relaxed);
                }
            }
            continue;
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v.get("type").and_then(Value::as_str) {
            Some("ping") => {
                if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    break;
                }
            }
            Some("pong") => {}
            Some("complete") => {
                counters.receive_errors.add("complete", || text.to_string());
            }
            Some("error") => {
                let code = v
                    .pointer("/payload/0/extensions/code")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                counters
                    .receive_errors
                    .add(&format!("error {code}"), || text.to_string());
            }
            Some("next") => {
                // A message event without a stamp (not ours) or errors.
                if v.pointer("/payload/errors").is_some() {
                    counters
                        .receive_errors
                        .add("next with errors", || text.to_string());
                }
            }
            _ => counters
                .receive_errors
                .add("unexpected frame", || text.to_string()),
        }
    }
    state.ended.store(true, Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}
