//! The ceiling of issue 14: a minimal broadcast server the scenarios can
//! be pointed at, so that Clacks' fan-out and memory per connection are
//! reported as ratios to it, measured in the same run.
//!
//! It speaks just what the bench's clients use, on the same two ports:
//!
//! - client port: `GET /healthz`; `GET /graphql` upgrades to a WebSocket
//!   speaking `graphql-transport-ws` (`connection_init` → `connection_ack`,
//!   `ping` → `pong`, `subscribe` to one channel's messages with the
//!   channel id in `variables.c` and an optional `variables.after`,
//!   `complete`); `POST /graphql` with `createMessage` (`variables.c`,
//!   `variables.t`) answers `{"data":{"createMessage":{"seq":N}}}`.
//! - management port: `GET /healthz`, `POST /api/v1/channel` (answers
//!   `{"id":N}`), `POST /api/v1/channel/{id}/messages` (answers
//!   `{"seq":N}`), `GET /api/v1/jwt/{uid}` (any string: tokens are not
//!   checked).
//!
//! What it leaves out, so that it is a ceiling: no storage, no GraphQL
//! engine (the query text is not parsed), no authentication or membership
//! checks, no rate limits, no metrics. What it keeps, so that it is a fair
//! one: the same WebSocket library (tungstenite, through axum like Clacks),
//! the same socket buffer sizes as Clacks (512 B read, 4 KiB write), the
//! same allocator (jemalloc, with Clacks' purge settings when spawned by
//! `--compare-ceiling`), the same frames byte for byte in shape
//! (`{"id":..,"type":"next","payload":{"data":{"message":{"seq":..,"content":..}}}}`),
//! a bounded queue per connection (1,024 frames, as Clacks' default;
//! a full queue closes the connection with 4008 "slow consumer" instead of
//! waiting), and a writer that flushes once per batch of up to 64 queued
//! frames, as Clacks' does. A send serializes its frame once per distinct
//! operation id and shares it among the subscribers that use that id (the
//! bench's clients all subscribe as "1": one serialization per send, as
//! cheap as a broadcast can be). Sequence numbers are per channel and assigned under the
//! channel's lock together with the enqueueing, so every subscriber sees
//! them in order. The last 16 payloads of a channel are kept so that
//! `afterSeq` closes the race between a `subscribe` and a send that the
//! bench's warm-up relies on (Clacks reads them from its database).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::report::{Report, TargetCheck};
use crate::target::{Node, Target};

/// Frames queued per connection before it counts as a slow consumer.
const QUEUE: usize = 1024;
/// Payloads kept per channel for `afterSeq`.
const HISTORY: usize = 16;
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 4 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;
const SLOW_CONSUMER: u16 = 4008;
/// Frames written before one flush (Clacks: 64).
const BATCH: usize = 64;

/// `clacks-bench ceiling`: where to listen.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct CeilingOpts {
    /// Client listener (WebSocket and POST /graphql).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub client_addr: SocketAddr,
    /// Management listener (channels, messages).
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub management_addr: SocketAddr,
}

struct Sub {
    conn: u64,
    /// The operation id, JSON-encoded.
    op: Arc<str>,
    tx: mpsc::Sender<Utf8Bytes>,
    kill: CancellationToken,
}

#[derive(Default)]
struct Channel {
    seq: i64,
    history: VecDeque<(i64, Arc<str>)>,
    subs: Vec<Sub>,
}

#[derive(Default)]
struct Hub {
    channels: RwLock<HashMap<i64, Arc<Mutex<Channel>>>>,
    next_channel: AtomicI64,
    next_conn: AtomicU64,
}

fn frame(op: &str, payload: &str) -> String {
    let mut s = String::with_capacity(op.len() + payload.len() + 32);
    s.push_str("{\"id\":");
    s.push_str(op);
    s.push_str(",\"type\":\"next\",\"payload\":");
    s.push_str(payload);
    s.push('}');
    s
}

/// Hands `frame` to a subscriber; false when it is gone or too slow.
fn offer(sub: &Sub, frame: Utf8Bytes) -> bool {
    match sub.tx.try_send(frame) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            sub.kill.cancel();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

impl Hub {
    fn create_channel(&self) -> i64 {
        let id = self.next_channel.fetch_add(1, Relaxed) + 1;
        if let Ok(mut map) = self.channels.write() {
            map.insert(id, Arc::default());
        }
        id
    }

    fn channel(&self, id: i64) -> Option<Arc<Mutex<Channel>>> {
        self.channels.read().ok()?.get(&id).cloned()
    }

    /// Assigns the next seq and enqueues the message to every subscriber.
    fn publish(&self, channel: i64, content: &str) -> Option<i64> {
        let ch = self.channel(channel)?;
        let mut ch = ch.lock().ok()?;
        ch.seq += 1;
        let seq = ch.seq;
        let payload: Arc<str> = json!({"data": {"message": {"seq": seq, "content": content}}})
            .to_string()
            .into();
        // One frame per distinct operation id, shared by its subscribers
        // (the bench's clients all subscribe as "1": one frame per send).
        let mut shared: Option<(Arc<str>, Utf8Bytes)> = None;
        ch.subs.retain(|s| {
            let f = match &shared {
                Some((op, f)) if *op == s.op => f.clone(),
                _ => {
                    let f = Utf8Bytes::from(frame(&s.op, &payload));
                    shared = Some((s.op.clone(), f.clone()));
                    f
                }
            };
            offer(s, f)
        });
        if ch.history.len() == HISTORY {
            ch.history.pop_front();
        }
        ch.history.push_back((seq, payload));
        Some(seq)
    }

    fn subscribe(&self, channel: i64, after: Option<i64>, sub: Sub) -> bool {
        let Some(ch) = self.channel(channel) else {
            return false;
        };
        let Ok(mut ch) = ch.lock() else {
            return false;
        };
        if let Some(after) = after {
            for (seq, payload) in &ch.history {
                if *seq > after && !offer(&sub, frame(&sub.op, payload).into()) {
                    return true;
                }
            }
        }
        ch.subs.push(sub);
        true
    }

    fn unsubscribe(&self, channel: i64, conn: u64, op: Option<&str>) {
        if let Some(ch) = self.channel(channel)
            && let Ok(mut ch) = ch.lock()
        {
            ch.subs
                .retain(|s| !(s.conn == conn && op.is_none_or(|op| &*s.op == op)));
        }
    }
}

/// A ceiling server running in this process.
pub struct Ceiling {
    pub client_addr: SocketAddr,
    pub management_addr: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ceiling {
    /// Binds both listeners (port 0: any free port) and serves.
    pub async fn start(opts: &CeilingOpts) -> anyhow::Result<Ceiling> {
        let hub = Arc::new(Hub::default());
        let client = TcpListener::bind(opts.client_addr)
            .await
            .with_context(|| format!("binding {}", opts.client_addr))?;
        let management = TcpListener::bind(opts.management_addr)
            .await
            .with_context(|| format!("binding {}", opts.management_addr))?;
        let client_addr = client.local_addr()?;
        let management_addr = management.local_addr()?;
        let client_app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/graphql", get(upgrade).post(create_message))
            .with_state(hub.clone());
        let management_app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/api/v1/channel", post(create_channel))
            .route("/api/v1/channel/{id}/messages", post(post_message))
            .route("/api/v1/jwt/{uid}", get(|| async { Json("ceiling") }))
            .with_state(hub);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (listener, app) in [(client, client_app), (management, management_app)] {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    eprintln!("[ceiling] server error: {e}");
                }
            }));
        }
        Ok(Ceiling {
            client_addr,
            management_addr,
            stop,
            tasks,
        })
    }

    /// A target for the scenarios (tokens are minted with a throwaway
    /// secret: the ceiling does not check them).
    pub fn target(&self) -> Target {
        Target {
            nodes: vec![Node {
                client_url: format!("http://{}", self.client_addr),
                management_url: format!("http://{}", self.management_addr),
                pid: None,
            }],
            jwt_secret: Some("ceiling-does-not-check-tokens-0123456789".into()),
            management_token: None,
            ..Default::default()
        }
    }

    /// Stops accepting; open WebSockets end with the process or runtime.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
        }
    }
}

/// `clacks-bench ceiling`: serves until SIGINT/SIGTERM.
pub async fn serve(opts: &CeilingOpts) -> anyhow::Result<()> {
    let ceiling = Ceiling::start(opts).await?;
    eprintln!(
        "[ceiling] client {} management {}",
        ceiling.client_addr, ceiling.management_addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ceiling.stop().await;
    Ok(())
}

fn graphql_error(code: &str, message: &str) -> Response {
    Json(json!({"errors": [{"message": message, "extensions": {"code": code}}]})).into_response()
}

/// A channel id given as a string or a number.
fn id_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

async fn create_message(State(hub): State<Arc<Hub>>, Json(body): Json<Value>) -> Response {
    let query = body.get("query").and_then(Value::as_str).unwrap_or("");
    if !query.contains("createMessage") {
        return graphql_error("BAD_REQUEST", "the ceiling only knows createMessage");
    }
    let vars = body.get("variables");
    let channel = id_of(vars.and_then(|v| v.get("c")));
    let content = vars.and_then(|v| v.get("t")).and_then(Value::as_str);
    let (Some(channel), Some(content)) = (channel, content) else {
        return graphql_error("BAD_USER_INPUT", "variables c (channel) and t (content)");
    };
    match hub.publish(channel, content) {
        Some(seq) => Json(json!({"data": {"createMessage": {"seq": seq}}})).into_response(),
        None => graphql_error("NOT_FOUND", "no such channel"),
    }
}

async fn create_channel(State(hub): State<Arc<Hub>>) -> Response {
    let id = hub.create_channel();
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn post_message(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<i64>,
    Json(body): Json<Value>,
) -> Response {
    let Some(content) = body.get("content").and_then(Value::as_str) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"title": "content is required"})),
        )
            .into_response();
    };
    match hub.publish(id, content) {
        Some(seq) => (
            StatusCode::CREATED,
            Json(json!({"seq": seq, "content": content})),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"title": "no such channel"})),
        )
            .into_response(),
    }
}

async fn upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["graphql-transport-ws"])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(hub, socket))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// One WebSocket: reads control frames, writes queued events.
async fn connection(hub: Arc<Hub>, socket: WebSocket) {
    let conn = hub.next_conn.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let kill = CancellationToken::new();
    let (mut sink, mut stream) = socket.split();
    let mut acked = false;
    // (operation id as JSON, channel)
    let mut ops: Vec<(Arc<str>, i64)> = Vec::new();
    loop {
        let incoming = tokio::select! {
            biased;
            () = kill.cancelled() => {
                let _ = sink.send(close(SLOW_CONSUMER, "slow consumer")).await;
                break;
            }
            out = rx.recv() => {
                // `tx` lives here, so the queue never closes.
                let Some(out) = out else { break };
                // What is queued goes out in one flush, as Clacks' writer does.
                let mut written = sink.feed(Message::Text(out)).await.is_ok();
                for _ in 1..BATCH {
                    let Ok(more) = rx.try_recv() else { break };
                    written = written && sink.feed(Message::Text(more)).await.is_ok();
                }
                if !written || sink.flush().await.is_err() {
                    break;
                }
                continue;
            }
            incoming = stream.next() => incoming,
        };
        let text = match incoming {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            let _ = sink.send(close(4400, "malformed message")).await;
            break;
        };
        let reply = match v.get("type").and_then(Value::as_str) {
            Some("connection_init") if acked => {
                let _ = sink
                    .send(close(4429, "too many initialisation requests"))
                    .await;
                break;
            }
            Some("connection_init") => {
                acked = true;
                Some(r#"{"type":"connection_ack"}"#.to_owned())
            }
            Some("ping") => Some(r#"{"type":"pong"}"#.to_owned()),
            Some("pong") => None,
            Some("subscribe") if !acked => {
                let _ = sink.send(close(4401, "unauthorized")).await;
                break;
            }
            Some("subscribe") => {
                let Some(id) = v.get("id").and_then(Value::as_str) else {
                    let _ = sink.send(close(4400, "subscribe without id")).await;
                    break;
                };
                let op: Arc<str> = Value::from(id).to_string().into();
                if ops.iter().any(|(o, _)| *o == op) {
                    let _ = sink.send(close(4409, "subscriber already exists")).await;
                    break;
                }
                let vars = v.pointer("/payload/variables");
                let channel = id_of(vars.and_then(|v| v.get("c")));
                let after = vars.and_then(|v| v.get("after")).and_then(Value::as_i64);
                let subscribed = channel.filter(|&channel| {
                    let sub = Sub {
                        conn,
                        op: op.clone(),
                        tx: tx.clone(),
                        kill: kill.clone(),
                    };
                    hub.subscribe(channel, after, sub)
                });
                match subscribed {
                    Some(channel) => {
                        ops.push((op, channel));
                        None
                    }
                    None => Some(format!(
                        r#"{{"id":{op},"type":"error","payload":[{{"message":"no such channel","extensions":{{"code":"NOT_FOUND"}}}}]}}"#
                    )),
                }
            }
            Some("complete") => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    let op = Value::from(id).to_string();
                    if let Some(at) = ops.iter().position(|(o, _)| **o == op) {
                        let (_, channel) = ops.swap_remove(at);
                        hub.unsubscribe(channel, conn, Some(&op));
                    }
                }
                None
            }
            _ => {
                let _ = sink.send(close(4400, "unknown message type")).await;
                break;
            }
        };
        if let Some(reply) = reply
            && sink.send(Message::Text(reply.into())).await.is_err()
        {
            break;
        }
    }
    for (_, channel) in ops {
        hub.unsubscribe(channel, conn, None);
    }
}

/// Attaches the ceiling's run to Clacks' and adds the ratios of issue 14:
/// delivered events/s (fan-out) and server RSS per connection
/// (many-channels), Clacks over the ceiling.
pub fn compare(clacks: &mut Report, mut ceiling: Report) {
    // The ceiling's own absolute targets (issue 6) would only confuse.
    ceiling.targets.clear();
    let ratio = |a: f64, b: f64| (b > 0.0 && a.is_finite()).then(|| a / b);
    let extra = |r: &Report, key: &str| {
        r.phases
            .first()
            .and_then(|p| p.extra.get(key))
            .and_then(Value::as_f64)
    };
    let mut ratios = std::collections::BTreeMap::new();
    match clacks.scenario.as_str() {
        "fanout" | "two-nodes" => {
            if let (Some(a), Some(b)) = (clacks.phases.first(), ceiling.phases.first()) {
                if let Some(r) = ratio(a.delivered_per_s, b.delivered_per_s) {
                    ratios.insert("delivered_events_per_s".to_owned(), r);
                    clacks.targets.push(TargetCheck::at_least(
                        "fan-out delivered events/s, Clacks / ceiling (issue 14)",
                        r,
                        0.85,
                        "x",
                    ));
                }
                if let Some(r) = ratio(a.latency.p99_ms, b.latency.p99_ms) {
                    ratios.insert("p99_send_to_receive".to_owned(), r);
                }
            }
        }
        _ => {
            let subscribed = clacks
                .params
                .get("no_subscribe")
                .and_then(Value::as_bool)
                .is_some_and(|n| !n);
            for (key, name) in [
                (
                    "server_rss_per_connection_idle_kib",
                    "rss_per_connection_idle",
                ),
                (
                    "server_rss_per_connection_after_warmup_kib",
                    "rss_per_connection_after_warmup",
                ),
            ] {
                if let (Some(a), Some(b)) = (extra(clacks, key), extra(&ceiling, key))
                    && let Some(r) = ratio(a, b)
                {
                    ratios.insert(name.to_owned(), r);
                }
            }
            if subscribed && let Some(r) = ratios.get("rss_per_connection_idle") {
                clacks.targets.push(TargetCheck::at_most(
                    "server RSS per idle subscribed connection, Clacks / ceiling (issue 14)",
                    *r,
                    0.8,
                    "x",
                ));
            }
            for (a, b) in clacks.phases.iter().zip(&ceiling.phases) {
                if a.offered_rate.is_some()
                    && let Some(r) = ratio(a.latency.p99_ms, b.latency.p99_ms)
                {
                    ratios.insert(format!("p99_send_to_receive {}", a.name), r);
                }
            }
        }
    }
    clacks.ratios = ratios;
    clacks.ceiling = Some(Box::new(ceiling));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_shape_clacks_sends() {
        let f = frame("\"1\"", r#"{"data":{"message":{"seq":3,"content":"x"}}}"#);
        let v: Value = serde_json::from_str(&f).expect("json");
        assert_eq!(v["id"], "1");
        assert_eq!(v["type"], "next");
        assert_eq!(v["payload"]["data"]["message"]["seq"], 3);
    }

    #[test]
    fn publish_orders_and_replays() {
        let hub = Hub::default();
        let c = hub.create_channel();
        assert_eq!(hub.publish(c, "a"), Some(1));
        assert_eq!(hub.publish(c, "b"), Some(2));
        assert_eq!(hub.publish(c + 1, "x"), None);
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let sub = Sub {
            conn: 1,
            op: "\"1\"".into(),
            tx,
            kill: CancellationToken::new(),
        };
        assert!(hub.subscribe(c, Some(1), sub));
        assert_eq!(hub.publish(c, "c"), Some(3));
        let a = rx.try_recv().expect("replayed").to_string();
        let b = rx.try_recv().expect("live").to_string();
        assert!(a.contains("\"seq\":2") && a.contains("\"content\":\"b\""));
        assert!(b.contains("\"seq\":3"));
        assert!(rx.try_recv().is_err());
    }
}
