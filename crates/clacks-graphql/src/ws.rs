//! GraphQL over WebSocket, Clacks' own protocol layer (SPEC section 10:
//! async-graphql's lacks the init timeout, the right close codes, the
//! legacy keep-alive and per-connection back-pressure).
//!
//! Both protocols, chosen by `Sec-WebSocket-Protocol`:
//! - `graphql-transport-ws` (the graphql-ws library): 4400 malformed
//!   message, 4401 subscribe before `connection_ack`, 4403 rejected
//!   `connection_init`, 4408 no `connection_init` in time, 4409 duplicate
//!   active id, 4429 second `connection_init`; `ping` → `pong`, and the
//!   server pings every keep-alive interval.
//! - `graphql-ws` (subscriptions-transport-ws, legacy): `connection_ack`
//!   then `ka` every keep-alive interval, `connection_error` (then close
//!   4403) on a rejected init, `start`/`stop`/`data`/`error`/`complete`.
//!
//! Either protocol also closes with 4401 "token expired" when the JWT's
//! `exp` passes, 4001 "disconnected" on a forced disconnect, 1001 on
//! server shutdown, and 4008 "slow consumer" when the client does not keep
//! up: a subscription's bounded event queue overflowed, or a frame found no
//! room in the connection's queue for 5 s (the client resumes with its last
//! seq and loses nothing).
//!
//! Shape of a connection: the reader loop (this module's `run`) owns the
//! protocol state; every operation runs as its own task and queues
//! serialized frames into ONE bounded queue, waiting for room (so a replay
//! goes at the client's pace); one writer task drains the queue into the
//! socket. Nothing but the writer awaits the socket, and nothing on the
//! publishing side awaits a connection, so a slow client only ever stalls
//! itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::{Request, Response, Value};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use clacks_core::Error;
use clacks_delivery::{CloseReason, ConnectionGuard, Delivery, EndReason};
use clacks_service::Caller;
use futures::stream::SplitSink;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::AppState;
use crate::error::{BAD_USER_INPUT, FORBIDDEN, INTERNAL, coded, finalize};
use crate::render::{FeedHandoff, FeedSlot, RenderPlan};
use crate::schema::{ConnectionControl, Control, RequestCaller};

/// Close code for a connection whose outgoing queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
pub const TOKEN_EXPIRED: u16 = 4401;
pub const FORCED_DISCONNECT: u16 = 4001;
pub const GOING_AWAY: u16 = 1001;

/// Tungstenite buffers (SPEC section 9: the 128 KiB defaults cost 1.3 GB
/// for 10,000 idle sockets). Clients send little, so reads are small; a
/// larger message is still read whole, in more calls.
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 4 * 1024;
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// How long an operation's frame may wait for room in the connection's
/// queue before the client counts as a slow consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long the writer may take to flush and close at the end.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a slow consumer has to read through what its socket already
/// holds and receive the 4008 close frame. Nothing more is queued for it
/// meanwhile, so this costs one idle task, not memory.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

/// Accepts the upgrade with the subprotocol the client asked for
/// (`graphql-transport-ws` preferred; without the header, it is assumed).
pub fn upgrade(
    state: AppState,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    let requested: Vec<String> = upgrade
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(',').map(|s| s.trim().to_owned()))
        .collect();
    let protocol = if requested.iter().any(|p| p == "graphql-transport-ws") || requested.is_empty()
    {
        Protocol::TransportWs
    } else if requested.iter().any(|p| p == "graphql-ws") {
        Protocol::Legacy
    } else {
        Protocol::TransportWs
    };
    let header_token = crate::http::bearer(headers).map(|t| t.map(str::to_owned));
    let max_message = state.config.max_ws_message_bytes;
    upgrade
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER.max(max_message * 2))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run(state, socket, protocol, header_token))
}

#[derive(Debug, Clone)]
struct Close {
    code: u16,
    reason: Cow<'static, str>,
}

/// What operations share with the connection: the outgoing queue and the
/// close signal.
struct Outbox {
    frames: mpsc::Sender<Utf8Bytes>,
    close: watch::Sender<Option<Close>>,
}

impl Outbox {
    /// Queues a control frame (ack, pong, keep-alive, a refused
    /// operation's error). A full queue means data is flowing to the client
    /// anyway, so the frame is dropped rather than the connection.
    fn push(&self, frame: String) -> bool {
        match self.frames.try_send(Utf8Bytes::from(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("clacks_ws_control_frames_dropped_total").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues an operation's frame, waiting for room: a client that reads
    /// slowly slows its own operations down (replays go at its pace), and
    /// the live events behind them wait in their bounded subscription
    /// queue, which ends the subscription when it overflows. A client that
    /// takes no frame at all for [`SEND_TIMEOUT`] is closed with 4008.
    async fn send(&self, frame: String) -> bool {
        match tokio::time::timeout(SEND_TIMEOUT, self.frames.send(Utf8Bytes::from(frame))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
                self.request_close(SLOW_CONSUMER, "slow consumer");
                false
            }
        }
    }

    fn push_json(&self, value: &serde_json::Value) -> bool {
        self.push(value.to_string())
    }

    fn request_close(&self, code: u16, reason: impl Into<Cow<'static, str>>) {
        let reason = reason.into();
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(Close { code, reason });
                true
            } else {
                false
            }
        });
    }
}

impl ConnectionControl for Outbox {
    fn close(&self, code: u16, reason: &'static str) {
        self.request_close(code, reason);
    }
}

/// Drains the queue into the socket, flushing once per batch; on a close
/// request flushes what is queued (unless the client is the slow one) and
/// sends the close frame.
async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Utf8Bytes>,
    mut close: watch::Receiver<Option<Close>>,
) {
    loop {
        let frame = tokio::select! {
            biased;
            _ = close.changed() => break,
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let write = async {
            sink.feed(Message::Text(frame)).await?;
            for _ in 1..WRITE_BATCH {
                match frames.try_recv() {
                    Ok(more) => sink.feed(Message::Text(more)).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await
        };
        tokio::select! {
            written = write => if written.is_err() { return },
            _ = close.changed() => break,
        }
    }
    let requested = close.borrow().clone();
    let Some(requested) = requested else { return };
    let finish = async {
        if requested.code != SLOW_CONSUMER {
            while let Ok(frame) = frames.try_recv() {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: requested.code,
                reason: Utf8Bytes::from(requested.reason.into_owned()),
            })))
            .await;
    };
    let grace = if requested.code == SLOW_CONSUMER {
        SLOW_CLOSE_GRACE
    } else {
        CLOSE_GRACE
    };
    let _ = tokio::time::timeout(grace, finish).await;
}

/// A client message of either protocol.
#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
}

/// The token of a `connection_init` payload: `authorization` (any
/// casing, `Bearer ` optional) or `token`.
fn init_token(payload: Option<&serde_json::Value>) -> Option<String> {
    let object = payload?.as_object()?;
    for (key, value) in object {
        let Some(text) = value.as_str() else { continue };
        if key.eq_ignore_ascii_case("authorization") {
            return Some(
                crate::http::strip_bearer(text)
                    .unwrap_or(text)
                    .trim()
                    .to_owned(),
            );
        }
        if key == "token" {
            return Some(text.trim().to_owned());
        }
    }
    None
}

fn expiry_instant(expires_at: i64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let left = (expires_at as f64 - now).max(0.0);
    Instant::now() + Duration::from_secs_f64(left.min(10.0 * 365.0 * 86_400.0))
}

struct Connection {
    state: AppState,
    protocol: Protocol,
    outbox: Arc<Outbox>,
    header_token: Option<Result<String, Error>>,
    caller: Option<Arc<Caller>>,
    guard: Option<ConnectionGuard>,
    init_seen: bool,
    expires: Option<Instant>,
    operations: HashMap<String, AbortHandle>,
}

enum Step {
    Closed,
    Incoming(Message),
    Keepalive,
    InitTimeout,
    Expired,
    Server(CloseReason),
    CloseRequested,
}

async fn run(
    state: AppState,
    socket: WebSocket,
    protocol: Protocol,
    header_token: Option<Result<String, Error>>,
) {
    metrics::gauge!("clacks_ws_connections").increment(1.0);
    let (sink, mut incoming) = socket.split();
    let (frames_tx, frames_rx) = mpsc::channel(state.config.connection_queue.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    let outbox = Arc::new(Outbox {
        frames: frames_tx,
        close: close_tx,
    });
    let writer = tokio::spawn(writer(sink, frames_rx, close_rx.clone()));
    let mut close_rx = close_rx;
    let init_deadline = Instant::now() + state.config.connection_init_timeout;
    let mut keepalive = tokio::time::interval(state.config.keepalive_interval);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.reset();
    let mut conn = Connection {
        state,
        protocol,
        outbox,
        header_token,
        caller: None,
        guard: None,
        init_seen: false,
        expires: None,
        operations: HashMap::new(),
    };
    loop {
        let acked = conn.caller.is_some();
        let expires = conn.expires;
        let step = tokio::select! {
            biased;
            _ = close_rx.changed() => Step::CloseRequested,
            reason = async {
                match conn.guard.as_mut() {
                    Some(guard) => guard.closed().await,
                    None => std::future::pending().await,
                }
            } => Step::Server(reason),
            () = async {
                match expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Step::Expired,
            () = tokio::time::sleep_until(init_deadline), if !conn.init_seen => Step::InitTimeout,
            _ = keepalive.tick(), if acked => Step::Keepalive,
            message = incoming.next() => match message {
                Some(Ok(message)) => Step::Incoming(message),
                _ => Step::Closed,
            },
        };
        match step {
            Step::Closed | Step::CloseRequested => break,
            Step::Server(CloseReason::ForcedDisconnect) => {
                conn.outbox.request_close(FORCED_DISCONNECT, "disconnected");
                break;
            }
            Step::Server(CloseReason::ShuttingDown) => {
                conn.outbox
                    .request_close(GOING_AWAY, "server shutting down");
                break;
            }
            Step::Expired => {
                conn.outbox.request_close(TOKEN_EXPIRED, "token expired");
                break;
            }
            Step::InitTimeout => {
                conn.outbox
                    .request_close(4408, "Connection initialisation timeout");
                break;
            }
            Step::Keepalive => {
                let frame = match conn.protocol {
                    Protocol::Legacy => r#"{"type":"ka"}"#,
                    Protocol::TransportWs => r#"{"type":"ping"}"#,
                };
                conn.outbox.push(frame.to_owned());
            }
            Step::Incoming(message) => {
                if !conn.handle(message) {
                    break;
                }
            }
        }
    }
    for (_, operation) in conn.operations.drain() {
        operation.abort();
    }
    conn.outbox.request_close(1000, "");
    drop(conn);
    let _ = writer.await;
    metrics::gauge!("clacks_ws_connections").decrement(1.0);
}

impl Connection {
    /// Handles one client frame; false when the connection must close.
    fn handle(&mut self, message: Message) -> bool {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => return self.malformed("binary frames are not GraphQL messages"),
            Message::Close(_) => return false,
            Message::Ping(_) | Message::Pong(_) => return true,
        };
        let message: ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(message) => message,
            Err(_) => return self.malformed("Invalid message received"),
        };
        match (self.protocol, message.kind.as_str()) {
            (_, "connection_init") => self.init(message.payload.as_ref()),
            (Protocol::TransportWs, "ping") => {
                self.outbox.push(r#"{"type":"pong"}"#.to_owned());
                true
            }
            (Protocol::TransportWs, "pong") => true,
            (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
                self.start(message.id, message.payload)
            }
            (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
                if let Some(id) = message.id {
                    if let Some(operation) = self.operations.remove(&id) {
                        operation.abort();
                    }
                    true
                } else {
                    self.malformed("Invalid message received")
                }
            }
            (Protocol::Legacy, "connection_terminate") => {
                self.outbox.request_close(1000, "");
                false
            }
            _ => self.malformed("Invalid message received"),
        }
    }

    fn malformed(&self, reason: &'static str) -> bool {
        self.outbox.request_close(4400, reason);
        false
    }

    fn init(&mut self, payload: Option<&serde_json::Value>) -> bool {
        if self.init_seen {
            self.outbox
                .request_close(4429, "Too many initialisation requests");
            return false;
        }
        self.init_seen = true;
        let token = match init_token(payload) {
            Some(token) => Ok(token),
            None => match &self.header_token {
                Some(Ok(token)) => Ok(token.clone()),
                Some(Err(error)) => Err(error.clone()),
                None => Err(Error::Unauthenticated("a bearer token is required".into())),
            },
        };
        match token.and_then(|t| self.state.service.authenticate(&t)) {
            Ok(caller) => {
                self.expires = Some(expiry_instant(caller.expires_at));
                self.guard = Some(self.state.service.register_connection(&caller));
                self.caller = Some(Arc::new(caller));
                self.outbox.push(r#"{"type":"connection_ack"}"#.to_owned());
                if self.protocol == Protocol::Legacy {
                    self.outbox.push(r#"{"type":"ka"}"#.to_owned());
                }
                true
            }
            Err(error) => {
                if self.protocol == Protocol::Legacy {
                    self.outbox.push_json(&json!({
                        "type": "connection_error",
                        "payload": {"message": error.public_message(),
                                    "extensions": {"code": crate::error::code_of(&error)}},
                    }));
                }
                self.outbox.request_close(4403, "Forbidden");
                false
            }
        }
    }

    fn start(&mut self, id: Option<String>, payload: Option<serde_json::Value>) -> bool {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return self.malformed("Invalid message received");
        };
        let request: Request = match payload.map(serde_json::from_value) {
            Some(Ok(request)) => request,
            _ => return self.malformed("Invalid message received"),
        };
        let Some(caller) = self.caller.clone() else {
            self.outbox.request_close(4401, "Unauthorized");
            return false;
        };
        self.operations.retain(|_, op| !op.is_finished());
        if let Some(existing) = self.operations.remove(&id) {
            match self.protocol {
                Protocol::TransportWs => {
                    self.outbox
                        .request_close(4409, format!("Subscriber for {id} already exists"));
                    return false;
                }
                // subscriptions-transport-ws replaces the old operation.
                Protocol::Legacy => existing.abort(),
            }
        }
        let max = self.state.config.max_subscriptions_per_connection;
        if self.operations.len() >= max {
            let error = coded(
                BAD_USER_INPUT,
                format!("at most {max} operations may run at once on one connection"),
            );
            let frames = Frames::new(self.protocol, &id);
            self.outbox.push(frames.error(&[error]));
            return true;
        }
        let control: Arc<dyn ConnectionControl> = self.outbox.clone();
        let request = request
            .data(RequestCaller(Some(caller.clone())))
            .data(Control(control));
        let task = tokio::spawn(operation(
            self.state.clone(),
            request,
            caller,
            self.outbox.clone(),
            Frames::new(self.protocol, &id),
        ));
        self.operations.insert(id, task.abort_handle());
        true
    }
}

/// Frame templates of one operation.
struct Frames {
    protocol: Protocol,
    id: String,
}

impl Frames {
    fn new(protocol: Protocol, id: &str) -> Self {
        Frames {
            protocol,
            id: id.to_owned(),
        }
    }

    fn next(&self, response: &Response) -> String {
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        #[derive(serde::Serialize)]
        struct Frame<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            payload: &'a Response,
        }
        serde_json::to_string(&Frame {
            id: &self.id,
            kind,
            payload: response,
        })
        .unwrap_or_else(|_| self.error(&[coded(INTERNAL, "internal error")]))
    }

    /// An operation-level failure (`error` in graphql-transport-ws; a
    /// `data` frame with errors in the legacy protocol, as its server did).
    fn error(&self, errors: &[async_graphql::ServerError]) -> String {
        match self.protocol {
            Protocol::TransportWs => {
                json!({"id": self.id, "type": "error", "payload": errors}).to_string()
            }
            Protocol::Legacy => {
                json!({"id": self.id, "type": "data", "payload": {"data": null, "errors": errors}})
                    .to_string()
            }
        }
    }

    /// A result frame around an already serialized response payload.
    fn next_raw(&self, payload: &str) -> String {
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let id = serde_json::to_string(&self.id).unwrap_or_else(|_| "\"\"".to_owned());
        let mut frame = String::with_capacity(payload.len() + id.len() + 32);
        frame.push_str("{\"id\":");
        frame.push_str(&id);
        frame.push_str(",\"type\":\"");
        frame.push_str(kind);
        frame.push_str("\",\"payload\":");
        frame.push_str(payload);
        frame.push('}');
        frame
    }

    fn complete(&self) -> String {
        json!({"id": self.id, "type": "complete"}).to_string()
    }
}

/// Runs one operation, pushing its results into the connection's queue.
async fn operation(
    state: AppState,
    request: Request,
    caller: Arc<Caller>,
    outbox: Arc<Outbox>,
    frames: Frames,
) {
    metrics::gauge!("clacks_ws_operations").increment(1.0);
    let _gauge = scopeguard(|| metrics::gauge!("clacks_ws_operations").decrement(1.0));
    // The executor's state is large and only needed until a subscription is
    // handed over; boxed, it does not weigh on every long-lived operation.
    let handed_over = Box::pin(execute(&state, request, caller, &outbox, &frames)).await;
    if let Some((handoff, plan)) = handed_over {
        feed(&state, handoff, plan, &outbox, &frames).await;
    }
}

/// Runs an operation through the executor, sending its results, unless a
/// subscription resolver hands its stream over (returned for [`feed`]).
async fn execute(
    state: &AppState,
    request: Request,
    caller: Arc<Caller>,
    outbox: &Outbox,
    frames: &Frames,
) -> Option<(FeedHandoff, RenderPlan)> {
    // A subscription resolver hands its event stream over through this slot
    // instead of letting the executor render every event per subscriber.
    let slot = FeedSlot::default();
    let plan_source = (
        request.query.clone(),
        request.operation_name.clone(),
        request.variables.clone(),
    );
    let mut stream = state.schema.execute_stream(request.data(slot.clone()));
    let mut first = true;
    loop {
        let next = AssertUnwindSafe(stream.next()).catch_unwind().await;
        let response = match next {
            Ok(Some(response)) => finalize(response),
            Ok(None) => {
                if let Some(handoff) = slot.take() {
                    let (query, operation_name, variables) = plan_source;
                    if let Some(plan) =
                        RenderPlan::new(&query, operation_name.as_deref(), &variables, caller)
                    {
                        return Some((handoff, plan));
                    }
                }
                break;
            }
            Err(_) => {
                tracing::error!("a GraphQL operation panicked");
                outbox
                    .send(frames.error(&[coded(INTERNAL, "internal error")]))
                    .await;
                return None;
            }
        };
        if first && response.data == Value::Null && !response.errors.is_empty() {
            if outbox.send(frames.error(&response.errors)).await
                && frames.protocol == Protocol::Legacy
            {
                outbox.send(frames.complete()).await;
            }
            return None;
        }
        first = false;
        if !outbox.send(frames.next(&response)).await {
            return None;
        }
    }
    outbox.send(frames.complete()).await;
    None
}

/// Drives a subscription handed over by its resolver: each event is
/// rendered once for every subscriber with the same document and shared.
async fn feed(
    state: &AppState,
    mut handoff: FeedHandoff,
    plan: RenderPlan,
    outbox: &Outbox,
    frames: &Frames,
) {
    while let Some(delivery) = handoff.events.next().await {
        match delivery {
            Delivery::Event(event) => {
                if !(handoff.accept)(&event) {
                    continue;
                }
                let payload = plan.payload(&state.render, &event).await;
                if event.is_live() {
                    let age_ms = clacks_core::now_ms().saturating_sub(event.at).max(0);
                    metrics::histogram!("clacks_delivery_latency_seconds")
                        .record(age_ms as f64 / 1000.0);
                }
                metrics::counter!("clacks_events_delivered_total").increment(1);
                if !outbox.send(frames.next_raw(&payload)).await {
                    return;
                }
            }
            Delivery::End(EndReason::Removed) => {
                let removed = async_graphql::Response::from_errors(vec![coded(
                    FORBIDDEN,
                    "no longer a member of this channel",
                )]);
                if !outbox.send(frames.next(&removed)).await {
                    return;
                }
                break;
            }
            Delivery::End(EndReason::ChannelDeleted) => break,
            Delivery::End(EndReason::Overflow) => {
                metrics::counter!("clacks_ws_slow_consumer_closes_total").increment(1);
                outbox.request_close(SLOW_CONSUMER, "slow consumer");
                return;
            }
        }
    }
    outbox.send(frames.complete()).await;
}

/// Runs `f` when dropped (an operation ends however it ends).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
