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
//! server shutdown, 4008 "slow consumer" when the client does not keep
//! up (a subscription still behind 5 s after its bounded event queue
//! overflowed with live events, or a frame found no
//! room in the connection's queue, bounded in frames and bytes, for 5 s;
//! the client resumes with its last seq and loses nothing), 1009 on an
//! incoming message over the size limit, 4029 when `connection_init`
//! authenticates a user who already holds the most connections allowed
//! (the legacy protocol gets `connection_error` first), and 4400 on an
//! operation id longer than [`MAX_OPERATION_ID_BYTES`]. An upgrade over
//! the node's connection limit, or over the limit of the client's address,
//! is refused before it happens: HTTP 503 / 429 with a JSON error body
//! (`admission`).
//!
//! Closing never cancels a mutation: one already received runs to its end
//! and its answer is written before the close frame (within the close
//! grace), whoever closes; queries and subscriptions are stopped. When the
//! client itself went away, the mutation still completes unanswered.
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

mod admission;
mod feed;
mod frames;
mod operation;
mod outbox;
mod stop;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Request;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use clacks_core::Error;
use clacks_delivery::{CloseReason, ConnectionGuard};
use clacks_service::Caller;
use clacks_service::auth::{BearerScheme, bearer_token};
use futures::StreamExt;
use futures::stream::SplitStream;
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::admission::{ForwardedHeader, TrustedProxies};
use self::frames::Frames;
use self::outbox::{Outbox, Writer};
use self::stop::StopSwitch;
use crate::AppState;
use crate::error::{BAD_USER_INPUT, coded, gql};
use crate::schema::{ConnectionControl, Control, RequestCaller};

/// Close code for a connection whose outgoing queue overflowed.
pub const SLOW_CONSUMER: u16 = 4008;
pub const TOKEN_EXPIRED: u16 = 4401;
pub const FORCED_DISCONNECT: u16 = 4001;
pub const GOING_AWAY: u16 = 1001;
/// An incoming message over the size limit (RFC 6455 "message too big").
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The user holds the most connections allowed (outside the 44xx codes
/// graphql-transport-ws gives meanings to).
pub const TOO_MANY_USER_CONNECTIONS: u16 = 4029;
/// Longest operation id accepted (graphql-ws sends UUIDs, 36 bytes).
pub const MAX_OPERATION_ID_BYTES: usize = 128;
/// How long the reader waits, after the close frame is flushed, for the
/// client's answer to it.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);

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
/// (`graphql-transport-ws` preferred; without the header, it is assumed),
/// unless the connection limits refuse the client at `peer`.
pub fn upgrade(
    state: AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    let address = admission::client_address(
        peer,
        headers,
        &state.config.trusted_proxies,
        state.config.forwarded_header,
    );
    // Taken now, not once upgraded: the refusal is a plain HTTP answer,
    // and the place is held from here on.
    let admitted = match state.service.admit_connection(address) {
        Ok(admitted) => admitted,
        Err(refusal) => return admission::refused(refusal),
    };
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
    let upgraded = Box::new(Upgraded {
        state,
        header_token,
        admitted,
    });
    upgrade
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| run(*upgraded, socket, protocol))
}

/// What the upgrade hands the connection. Boxed: axum keeps its callback
/// in the connection's task for as long as the connection lives, so what
/// the callback captures is paid for by every connection.
struct Upgraded {
    state: AppState,
    header_token: Option<Result<String, Error>>,
    admitted: ConnectionGuard,
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
    /// Its place in the connection counts, and the server's close requests.
    admitted: ConnectionGuard,
    init_seen: bool,
    expires: Option<Instant>,
    operations: Operations,
}

/// An operation the connection started.
struct Running {
    id: String,
    stop: StopSwitch,
    /// Never cancelled: see [`Connection::close`].
    mutation: bool,
}

/// The operations a connection runs, by id. A connection runs a few (at
/// most `max_subscriptions_per_connection`), most often one: a vector
/// sized to its content costs one small allocation, where a hash map's
/// first table costs several times that on every subscribed connection.
#[derive(Default)]
struct Operations(Vec<Running>);

impl Operations {
    fn remove(&mut self, id: &str) -> Option<Running> {
        let at = self.0.iter().position(|running| running.id == id)?;
        Some(self.0.swap_remove(at))
    }

    fn insert(&mut self, running: Running) {
        self.0.reserve_exact(1);
        self.0.push(running);
    }

    /// Forgets the operations that ended by themselves.
    fn forget_finished(&mut self) {
        self.0.retain(|running| running.stop.is_running());
        if self.0.capacity() > self.0.len() * 2 {
            self.0.shrink_to_fit();
        }
    }
}

enum Step {
    Closed,
    TooBig,
    Incoming(Message),
    Keepalive,
    Deadline,
    Server(CloseReason),
    CloseRequested,
}

/// Why the reader stops reading.
enum Ending {
    /// The client closed the socket, or it failed.
    ClientGone,
    /// The writer or an operation requested the close already.
    Requested,
    /// Close with this code and reason.
    Close(u16, Cow<'static, str>),
}

/// Sets the connection up, then returns its reader loop. Not an `async fn`:
/// that would keep room for the socket (and every other argument) in the
/// loop's state for the connection's whole life, though it is split at once.
///
/// The loop's future is the largest thing a connection holds, for as long
/// as it lives, so it is kept small: it is an `async` block whose captures
/// are used in place (an `async fn` copies its arguments into locals and
/// keeps both), one timer serves the init deadline and then the token's
/// expiry, and the close, which is large and runs once, is boxed.
fn run(
    upgraded: Upgraded,
    socket: WebSocket,
    protocol: Protocol,
) -> impl Future<Output = ()> + Send {
    let Upgraded {
        state,
        header_token,
        admitted,
    } = upgraded;
    metrics::gauge!("clacks_ws_connections").increment(1.0);
    let (sink, incoming) = socket.split();
    let outbox = Outbox::new(
        state.config.connection_queue,
        state.config.connection_queue_bytes,
    );
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
        admitted,
        init_seen: false,
        expires: None,
        operations: Operations::default(),
    };
    read_loop(conn, incoming, writer, init_deadline, keepalive)
}

#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep a second copy of every argument"
)]
fn read_loop(
    mut conn: Connection,
    mut incoming: SplitStream<WebSocket>,
    writer: JoinHandle<()>,
    init_deadline: Instant,
    mut keepalive: tokio::time::Interval,
) -> impl Future<Output = ()> + Send {
    async move {
        // The init deadline until `connection_init`, then the token's
        // expiry (`conn.expires`, set by a successful init).
        let deadline = tokio::time::sleep_until(init_deadline);
        tokio::pin!(deadline);
        let ending = loop {
            let acked = conn.caller.is_some();
            let step = tokio::select! {
                biased;
                () = conn.outbox.close_requested() => Step::CloseRequested,
                reason = conn.admitted.closed() => Step::Server(reason),
                () = deadline.as_mut() => Step::Deadline,
                _ = keepalive.tick(), if acked => Step::Keepalive,
                message = incoming.next() => match message {
                    Some(Ok(message)) => Step::Incoming(message),
                    Some(Err(error)) if too_big(&error) => Step::TooBig,
                    _ => Step::Closed,
                },
            };
            match step {
                Step::Closed => break Ending::ClientGone,
                Step::CloseRequested => break Ending::Requested,
                Step::TooBig => break close(MESSAGE_TOO_BIG, "message too big"),
                Step::Server(CloseReason::ForcedDisconnect) => {
                    break close(FORCED_DISCONNECT, "disconnected");
                }
                Step::Server(CloseReason::ShuttingDown) => {
                    break close(GOING_AWAY, "server shutting down");
                }
                Step::Deadline if conn.init_seen => break close(TOKEN_EXPIRED, "token expired"),
                Step::Deadline => break close(4408, "Connection initialisation timeout"),
                Step::Keepalive => {
                    let frame = match conn.protocol {
                        Protocol::Legacy => r#"{"type":"ka"}"#,
                        Protocol::TransportWs => r#"{"type":"ping"}"#,
                    };
                    conn.outbox.push(frame.to_owned());
                }
                Step::Incoming(message) => {
                    if let Some(ending) = conn.handle(message) {
                        break ending;
                    }
                    // A successful `connection_init` sets the token's
                    // expiry: from then on it is the deadline (a refused
                    // one has closed the connection above).
                    if let Some(at) = conn.expires
                        && at != deadline.deadline()
                    {
                        deadline.as_mut().reset(at);
                    }
                }
            }
        };
        Box::pin(conn.close(ending, incoming, writer)).await;
        metrics::gauge!("clacks_ws_connections").decrement(1.0);
    }
}

fn close(code: u16, reason: impl Into<Cow<'static, str>>) -> Ending {
    Ending::Close(code, reason.into())
}

/// Whether the socket failed on a message over the size limit.
fn too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        error
            .source()
            .and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// A protocol error: graphql-transport-ws's 4400.
fn malformed(reason: impl Into<Cow<'static, str>>) -> Option<Ending> {
    Some(close(4400, reason))
}

impl Connection {
    /// Ends the connection. Queries and subscriptions stop at once; a
    /// mutation already received finishes (it is never cancelled: half
    /// way, it could commit without anyone being told) and its answer is
    /// queued before the close frame, for at most the close grace. Then
    /// the writer flushes what is queued and the close frame, and the
    /// connection gives its place back, so "every connection closed" means
    /// every close frame flushed. Until then, and briefly after, what the
    /// client sends is read and dropped: a socket closed with unread input
    /// is reset, and a reset can destroy the close frame before the
    /// client reads it.
    async fn close(
        self,
        ending: Ending,
        mut incoming: SplitStream<WebSocket>,
        writer: JoinHandle<()>,
    ) {
        for operation in &self.operations.0 {
            if !operation.mutation {
                operation.stop.stop();
            }
        }
        let outbox = &self.outbox;
        let grace = self.state.config.close_grace;
        let closing = async {
            let _ = tokio::time::timeout(grace, outbox.mutations_answered()).await;
            let (code, reason) = match ending {
                Ending::Close(code, reason) => (code, reason),
                Ending::ClientGone | Ending::Requested => (1000, Cow::Borrowed("")),
            };
            outbox.request_close(code, reason);
            let _ = writer.await;
        };
        let mut closing = std::pin::pin!(closing);
        let client_closed = async { while let Some(Ok(_)) = incoming.next().await {} };
        let mut client_closed = std::pin::pin!(client_closed);
        tokio::select! {
            () = closing.as_mut() => {
                let _ = tokio::time::timeout(CLOSE_ANSWER_WAIT, client_closed).await;
            }
            () = client_closed.as_mut() => closing.await,
        }
    }

    /// Handles one client frame; `Some` when the connection must close.
    fn handle(&mut self, message: Message) -> Option<Ending> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => return malformed("binary frames are not GraphQL messages"),
            Message::Close(_) => return Some(Ending::ClientGone),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        let message: ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(message) => message,
            Err(_) => return malformed("Invalid message received"),
        };
        if message
            .id
            .as_ref()
            .is_some_and(|id| id.len() > MAX_OPERATION_ID_BYTES)
        {
            return malformed(format!(
                "operation ids are at most {MAX_OPERATION_ID_BYTES} bytes"
            ));
        }
        match (self.protocol, message.kind.as_str()) {
            (_, "connection_init") => self.init(message.payload.as_ref()),
            (Protocol::TransportWs, "ping") => {
                self.outbox.push(r#"{"type":"pong"}"#.to_owned());
                None
            }
            (Protocol::TransportWs, "pong") => None,
            (Protocol::TransportWs, "subscribe") | (Protocol::Legacy, "start") => {
                self.start(message.id, message.payload)
            }
            (Protocol::TransportWs, "complete") | (Protocol::Legacy, "stop") => {
                let Some(id) = message.id else {
                    return malformed("Invalid message received");
                };
                // A stopped mutation still runs to its end; only its
                // answer is dropped.
                if let Some(operation) = self.operations.remove(&id) {
                    operation.stop.stop();
                }
                None
            }
            (Protocol::Legacy, "connection_terminate") => Some(close(1000, "")),
            _ => malformed("Invalid message received"),
        }
    }

    fn init(&mut self, payload: Option<&serde_json::Value>) -> Option<Ending> {
        if self.init_seen {
            return Some(close(4429, "Too many initialisation requests"));
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
        let caller = match token.and_then(|t| self.state.service.authenticate(&t)) {
            Ok(caller) => caller,
            Err(error) => {
                self.connection_error(
                    error.public_message(),
                    json!({"code": crate::error::code_of(&error)}),
                );
                return Some(close(4403, "Forbidden"));
            }
        };
        if let Err(refusal) = self
            .state
            .service
            .register_connection(&mut self.admitted, &caller)
        {
            let (_, extensions) = admission::describe(refusal);
            self.connection_error(refusal.to_string(), extensions);
            return Some(close(TOO_MANY_USER_CONNECTIONS, refusal.to_string()));
        }
        self.expires = Some(expiry_instant(caller.expires_at));
        self.caller = Some(Arc::new(caller));
        self.outbox.push(r#"{"type":"connection_ack"}"#.to_owned());
        if self.protocol == Protocol::Legacy {
            self.outbox.push(r#"{"type":"ka"}"#.to_owned());
        }
        None
    }

    /// The legacy protocol's answer to a rejected `connection_init`, sent
    /// before the close (graphql-transport-ws has only the close code).
    fn connection_error(&self, message: String, extensions: serde_json::Value) {
        if self.protocol == Protocol::Legacy {
            self.outbox.push(
                json!({
                    "type": "connection_error",
                    "payload": {"message": message, "extensions": extensions},
                })
                .to_string(),
            );
        }
    }

    fn start(&mut self, id: Option<String>, payload: Option<serde_json::Value>) -> Option<Ending> {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return malformed("Invalid message received");
        };
        let mut request: Request = match payload.map(serde_json::from_value) {
            Some(Ok(request)) => request,
            _ => return malformed("Invalid message received"),
        };
        let Some(caller) = self.caller.clone() else {
            return Some(close(4401, "Unauthorized"));
        };
        self.operations.forget_finished();
        if let Some(existing) = self.operations.remove(&id) {
            match self.protocol {
                Protocol::TransportWs => {
                    return Some(close(4409, format!("Subscriber for {id} already exists")));
                }
                // subscriptions-transport-ws replaces the old operation.
                Protocol::Legacy => existing.stop.stop(),
            }
        }
        let max = self.state.config.max_subscriptions_per_connection;
        if self.operations.0.len() >= max {
            let error = coded(
                BAD_USER_INPUT,
                format!("at most {max} operations may run at once on one connection"),
            );
            self.refuse(&id, &[error]);
            return None;
        }
        // The guard runs before anything else parses the document, and
        // here rather than in the operation's task: whether it is a
        // mutation must be known before anything can close the connection.
        let admitted = match self.state.guard.admit(&mut request, true) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.refuse(&id, &[refusal.into_server_error()]);
                return None;
            }
        };
        if let Err(error) = self.state.service.charge_query_cost(&caller, admitted.cost) {
            self.refuse(&id, &[gql(error).into_server_error(Default::default())]);
            return None;
        }
        let kind = operation_type(&admitted.document, request.operation_name.as_deref());
        // Charged here, not in the resolver: a subscription completed right
        // after it is sent never reaches its resolver, yet costs a parse,
        // a task and a registration.
        if kind == Some(OperationType::Subscription)
            && let Err(error) = self.state.service.admit_subscription(&caller)
        {
            self.refuse(&id, &[gql(error).into_server_error(Default::default())]);
            return None;
        }
        let mutation = kind == Some(OperationType::Mutation);
        let in_flight = mutation.then(|| self.outbox.mutation_started());
        let control: Arc<dyn ConnectionControl> = self.outbox.clone();
        let request = request
            .data(RequestCaller(Some(caller.clone())))
            .data(Control(control));
        let stop = StopSwitch::default();
        tokio::spawn(operation::operation(
            self.state.clone(),
            request,
            admitted.document,
            caller,
            self.outbox.clone(),
            Frames::new(self.protocol, &id, stop.clone()),
            in_flight,
        ));
        self.operations.insert(Running { id, stop, mutation });
        None
    }
}

impl Connection {
    /// Ends an operation refused before it ran with its errors, without
    /// waiting (the legacy protocol wants a `complete` after them).
    fn refuse(&self, id: &str, errors: &[async_graphql::ServerError]) {
        let frames = Frames::new(self.protocol, id, StopSwitch::default());
        self.outbox.push(frames.error(errors));
        if self.protocol == Protocol::Legacy {
            self.outbox.push(frames.complete());
        }
    }
}

/// The type of the operation a request runs (`None` when the document does
/// not say which operation: the executor refuses it anyway).
fn operation_type(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.map(|operation| operation.node.ty)
}
