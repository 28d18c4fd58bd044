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
//! Shape of a connection (two tasks, whatever it subscribes to): the
//! reader loop (this module's `run`) owns the protocol state; an operation
//! runs as its own task until it is done, queueing its frames into ONE
//! bounded outbox and waiting for room; a subscription's task ends as soon
//! as its resolver hands the event stream over, and the writer task, which
//! drains the outbox into the socket, polls the handed-over streams itself
//! and renders their events (`feed`), so a replay goes at the client's
//! pace and a live subscription costs no task. Nothing but the writer
//! awaits the socket, and nothing on the publishing side awaits a
//! connection, so a slow client only ever stalls itself.

mod feed;
mod frames;
mod operation;
mod outbox;
mod stop;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use clacks_core::Error;
use clacks_delivery::{CloseReason, ConnectionGuard};
use clacks_service::Caller;
use clacks_service::auth::{BearerScheme, bearer_token};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use self::frames::Frames;
use self::outbox::{Outbox, Writer};
use self::stop::StopSwitch;
use crate::AppState;
use crate::error::{BAD_USER_INPUT, coded};
use crate::schema::{ConnectionControl, Control, RequestCaller};

/// Close code for a connection whose outgoing queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
pub const TOKEN_EXPIRED: u16 = 4401;
pub const FORCED_DISCONNECT: u16 = 4001;
pub const GOING_AWAY: u16 = 1001;

/// Tungstenite buffers (SPEC section 9: the 128 KiB defaults cost 1.3 GB
/// for 10,000 idle sockets). Clients send little, so reads are small; a
/// larger message is still read whole, in more calls. The write buffer has
/// no upper limit: a frame larger than the limit could never be sent (a
/// history page can be megabytes), and the writer flushes at most 64
/// frames at a time anyway.
const READ_BUFFER: usize = 512;
const WRITE_BUFFER: usize = 4 * 1024;
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
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run(state, socket, protocol, header_token))
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
        if key.eq_ignore_ascii_case("authorization") || key == "token" {
            // Kept as given when malformed, for the token check to refuse.
            let token = bearer_token(text, BearerScheme::Optional).unwrap_or(text);
            return Some(token.to_owned());
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
    operations: HashMap<String, StopSwitch>,
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

/// Sets the connection up, then returns its reader loop. Not an `async fn`:
/// that would keep room for the socket (and every other argument) in the
/// loop's state for the connection's whole life, though it is split at once.
fn run(
    state: AppState,
    socket: WebSocket,
    protocol: Protocol,
    header_token: Option<Result<String, Error>>,
) -> impl Future<Output = ()> + Send {
    metrics::gauge!("clacks_ws_connections").increment(1.0);
    let (sink, incoming) = socket.split();
    let outbox = Outbox::new(state.config.connection_queue);
    let writer = tokio::spawn(Writer::new(sink, outbox.clone(), state.render.clone()).run());
    let init_deadline = Instant::now() + state.config.connection_init_timeout;
    let keepalive = {
        let mut keepalive = tokio::time::interval(state.config.keepalive_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        keepalive
    };
    let conn = Connection {
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
    read_loop(conn, incoming, writer, init_deadline, keepalive)
}

async fn read_loop(
    mut conn: Connection,
    mut incoming: futures::stream::SplitStream<WebSocket>,
    writer: tokio::task::JoinHandle<()>,
    init_deadline: Instant,
    mut keepalive: tokio::time::Interval,
) {
    loop {
        let acked = conn.caller.is_some();
        let expires = conn.expires;
        let step = tokio::select! {
            biased;
            () = conn.outbox.close_requested() => Step::CloseRequested,
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
        operation.stop();
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
                        operation.stop();
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
                    self.outbox.push(
                        json!({
                            "type": "connection_error",
                            "payload": {"message": error.public_message(),
                                        "extensions": {"code": crate::error::code_of(&error)}},
                        })
                        .to_string(),
                    );
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
        self.operations.retain(|_, op| op.is_running());
        if let Some(existing) = self.operations.remove(&id) {
            match self.protocol {
                Protocol::TransportWs => {
                    self.outbox
                        .request_close(4409, format!("Subscriber for {id} already exists"));
                    return false;
                }
                // subscriptions-transport-ws replaces the old operation.
                Protocol::Legacy => existing.stop(),
            }
        }
        let max = self.state.config.max_subscriptions_per_connection;
        if self.operations.len() >= max {
            let error = coded(
                BAD_USER_INPUT,
                format!("at most {max} operations may run at once on one connection"),
            );
            let frames = Frames::new(self.protocol, &id, StopSwitch::default());
            self.outbox.push(frames.error(&[error]));
            return true;
        }
        let control: Arc<dyn ConnectionControl> = self.outbox.clone();
        let request = request
            .data(RequestCaller(Some(caller.clone())))
            .data(Control(control));
        let stop = StopSwitch::default();
        tokio::spawn(operation::operation(
            self.state.clone(),
            request,
            caller,
            self.outbox.clone(),
            Frames::new(self.protocol, &id, stop.clone()),
        ));
        self.operations.insert(id, stop);
        true
    }
}
