//! Clients that make the traffic: senders that post messages over
//! WebSocket with a client message id each (optionally paced, several in
//! flight, reconnecting and resending what was not answered), and
//! subscribers that record every message seq they receive (optionally
//! reconnecting and resuming after the last one).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Frame, MODERN, Ws};

pub const CREATE_MESSAGE: &str = "mutation($c: ID!, $t: String!, $k: String) { createMessage(input: {channel: $c, content: $t, clientMessageId: $k}) { seq } }";

pub const MESSAGES: &str = "subscription($c: ID, $after: Int) { events(channel: $c, afterSeq: $after, kinds: [MESSAGE_CREATED]) { seq ... on MessageCreated { message { content } } } }";

/// How long a client waits for a frame before it calls the server hung:
/// keep-alives arrive every 2 s, so silence this long is not idleness (and
/// it is shorter than the test client's own limit, so this message, with
/// its context, is the one a hang shows).
const SILENCE: Duration = Duration::from_secs(8);

/// How far behind its rate a paced sender may fall and still catch up.
const CATCH_UP: Duration = Duration::from_millis(100);

/// The content a sender gives a message: its client message id, then the
/// filler.
fn content_of(client_message_id: &str, filler: usize) -> String {
    if filler == 0 {
        return client_message_id.to_owned();
    }
    format!("{client_message_id}|{}", ".".repeat(filler))
}

/// The seq of a `createMessage` response, or its error code.
pub fn mutation_outcome(response: &Value) -> Result<i64, String> {
    if let Some(seq) = response["data"]["createMessage"]["seq"].as_i64() {
        return Ok(seq);
    }
    Err(error_code(&response["errors"]))
}

fn error_code(errors: &Value) -> String {
    errors[0]["extensions"]["code"]
        .as_str()
        .map_or_else(|| format!("no code in {errors}"), str::to_owned)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged with this seq.
    Acked(i64),
    /// Refused with this error code.
    Refused(String),
    /// No answer: the connection closed first.
    Unanswered,
}

/// One send of one client message id.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub client_message_id: String,
    pub outcome: Outcome,
    /// From the send to its answer (or to the close).
    pub latency: Duration,
    pub sent_at: Instant,
}

#[derive(Debug, Default)]
pub struct SendLog {
    pub user: String,
    pub attempts: Vec<Attempt>,
    /// Every close the sender saw (code, reason).
    pub closes: Vec<(u16, String)>,
    /// Sends its rate called for by the stop that it did not make, its
    /// window being full of sends the server had not answered
    /// (back-pressure).
    pub held_back: u64,
}

impl SendLog {
    pub fn acked(&self) -> impl Iterator<Item = (&str, i64)> {
        self.attempts.iter().filter_map(|a| match a.outcome {
            Outcome::Acked(seq) => Some((a.client_message_id.as_str(), seq)),
            _ => None,
        })
    }

    pub fn refused(&self, code: &str) -> usize {
        self.attempts
            .iter()
            .filter(|a| matches!(&a.outcome, Outcome::Refused(c) if c == code))
            .count()
    }

    /// Client message ids whose last send got no ack.
    pub fn never_acked(&self) -> Vec<String> {
        let mut last: HashMap<&str, &Outcome> = HashMap::new();
        for attempt in &self.attempts {
            last.insert(&attempt.client_message_id, &attempt.outcome);
        }
        let mut ids: Vec<String> = last
            .into_iter()
            .filter(|(_, outcome)| !matches!(outcome, Outcome::Acked(_)))
            .map(|(id, _)| id.to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// What a sender does.
#[derive(Debug, Clone)]
pub struct SendPlan {
    pub ws_url: String,
    pub user: String,
    pub channel: i64,
    /// Messages per second; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// Sends awaiting their answer at once.
    pub window: usize,
    /// After a close: reconnect and send the unanswered ones again, with
    /// the same client message ids. Otherwise the sender stops.
    pub reconnect: bool,
    /// Bytes of filler after the client message id in each message's
    /// content (`{id}|{filler}`).
    pub filler: usize,
}

impl SendPlan {
    pub fn new(ws_url: &str, user: &str, channel: i64) -> SendPlan {
        SendPlan {
            ws_url: ws_url.to_owned(),
            user: user.to_owned(),
            channel,
            rate: None,
            window: 8,
            reconnect: false,
            filler: 0,
        }
    }
}

/// Connects, then sends until `stop` and waits for the answers still due.
/// Returns once connected, so that clients started one after the other
/// connect in that order (a balancer's round robin places them).
pub async fn start_sender(plan: SendPlan, stop: CancellationToken) -> JoinHandle<SendLog> {
    let token = super::token(&plan.user);
    let first = connect(&plan.ws_url, MODERN, &token, plan.reconnect, &stop).await;
    tokio::spawn(run_sender(plan, token, first, stop))
}

async fn run_sender(
    plan: SendPlan,
    token: String,
    mut first: Option<Ws>,
    stop: CancellationToken,
) -> SendLog {
    let mut log = SendLog {
        user: plan.user.clone(),
        ..SendLog::default()
    };
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let started = Instant::now();
    let mut next_due = started;
    let mut numbered = 0u64;
    let mut resend: VecDeque<String> = VecDeque::new();
    let mut counted_held_back = false;
    'connections: loop {
        let next = match first.take() {
            Some(ws) => Some(ws),
            None => connect(&plan.ws_url, MODERN, &token, plan.reconnect, &stop).await,
        };
        let Some(mut ws) = next else {
            break;
        };
        let mut in_flight: HashMap<String, Instant> = HashMap::new();
        loop {
            let sending = !stop.is_cancelled();
            if !sending && !counted_held_back {
                counted_held_back = true;
                if let Some(rate) = plan.rate {
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    log.held_back = due.saturating_sub(numbered);
                }
            }
            while sending && in_flight.len() < plan.window && Instant::now() >= next_due {
                let id = resend.pop_front().unwrap_or_else(|| {
                    numbered += 1;
                    format!("{}-{numbered}", plan.user)
                });
                let content = content_of(&id, plan.filler);
                let frame = json!({"id": id, "type": "subscribe", "payload": {
                    "query": CREATE_MESSAGE,
                    "variables": {"c": plan.channel.to_string(), "t": content, "k": id},
                }});
                let sent_at = Instant::now();
                in_flight.insert(id.clone(), sent_at);
                if ws.try_send(frame).await.is_err() {
                    break;
                }
                if let Some(interval) = interval {
                    // A sender held back by its window catches up by at
                    // most 100 ms' worth, not with one burst.
                    next_due = (next_due + interval).max(Instant::now() - CATCH_UP);
                }
            }
            if stop.is_cancelled() && in_flight.is_empty() {
                break 'connections;
            }
            let can_send_later = sending && in_flight.len() < plan.window;
            let frame = tokio::select! {
                frame = tokio::time::timeout(SILENCE, ws.frame()) => frame,
                () = tokio::time::sleep_until(next_due), if can_send_later => continue,
                () = stop.cancelled(), if sending => continue,
            };
            let Ok(frame) = frame else {
                panic!(
                    "sender {}: no frame for {SILENCE:?} with {} sends unanswered",
                    plan.user,
                    in_flight.len()
                );
            };
            match frame {
                Frame::Json(frame) => {
                    let id = frame["id"].as_str().unwrap_or_default();
                    let outcome = match frame["type"].as_str() {
                        Some("next") => match mutation_outcome(&frame["payload"]) {
                            Ok(seq) => Outcome::Acked(seq),
                            Err(code) => Outcome::Refused(code),
                        },
                        Some("error") => Outcome::Refused(error_code(&frame["payload"])),
                        _ => continue,
                    };
                    if let Some(sent_at) = in_flight.remove(id) {
                        log.attempts.push(Attempt {
                            client_message_id: id.to_owned(),
                            outcome,
                            latency: sent_at.elapsed(),
                            sent_at,
                        });
                    }
                }
                Frame::Closed(code, reason) => {
                    log.closes.push((code, reason));
                    let mut unanswered: Vec<(String, Instant)> = in_flight.drain().collect();
                    unanswered.sort_by_key(|(_, sent_at)| *sent_at);
                    for (id, sent_at) in unanswered {
                        log.attempts.push(Attempt {
                            client_message_id: id.clone(),
                            outcome: Outcome::Unanswered,
                            latency: sent_at.elapsed(),
                            sent_at,
                        });
                        resend.push_back(id);
                    }
                    if plan.reconnect {
                        continue 'connections;
                    }
                    break 'connections;
                }
            }
        }
    }
    log
}

/// Opens a socket; with `retry`, keeps trying (a node going down behind a
/// balancer) for up to 20 s unless stopped.
async fn connect(
    url: &str,
    protocol: &'static str,
    token: &str,
    retry: bool,
    stop: &CancellationToken,
) -> Option<Ws> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Ws::try_open(url, protocol, token).await {
            Ok(ws) => return Some(ws),
            Err(e) if !retry || Instant::now() >= deadline => {
                panic!("cannot open a WebSocket to {url}: {e}")
            }
            Err(_) if stop.is_cancelled() => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One connection of a subscriber: where it resumed, what it received,
/// how it ended.
#[derive(Debug, Clone)]
pub struct Run {
    pub after: i64,
    pub seqs: Vec<i64>,
    /// The close code and reason, or `None` when the subscriber stopped
    /// with the socket open.
    pub close: Option<(u16, String)>,
}

#[derive(Debug, Default)]
pub struct SubscriberLog {
    pub user: String,
    pub runs: Vec<Run>,
}

impl SubscriberLog {
    pub fn closes(&self) -> Vec<(u16, String)> {
        self.runs.iter().filter_map(|r| r.close.clone()).collect()
    }
}

/// What a subscriber does.
#[derive(Debug, Clone)]
pub struct SubscribePlan {
    pub ws_url: String,
    pub user: String,
    pub channel: i64,
    pub protocol: &'static str,
    /// After a close: reconnect and resume after the last seq received.
    /// Otherwise the subscriber stops at the first close.
    pub reconnect: bool,
}

impl SubscribePlan {
    pub fn new(ws_url: &str, user: &str, channel: i64) -> SubscribePlan {
        SubscribePlan {
            ws_url: ws_url.to_owned(),
            user: user.to_owned(),
            channel,
            protocol: MODERN,
            reconnect: false,
        }
    }
}

/// Subscribes, then receives the channel's messages from seq 1 on until
/// the seq `until` names (set once the senders are done) has arrived, or
/// the subscriber stops at a close. Returns once subscribed (see
/// [`start_sender`]).
pub async fn start_subscriber(
    plan: SubscribePlan,
    until: watch::Receiver<Option<i64>>,
) -> JoinHandle<SubscriberLog> {
    let token = super::token(&plan.user);
    let first = subscribe(&plan, &token, 0).await;
    tokio::spawn(run_subscriber(plan, token, Some(first), until))
}

/// Opens a socket (retrying if the plan reconnects) and subscribes to the
/// channel's messages after `after`.
async fn subscribe(plan: &SubscribePlan, token: &str, after: i64) -> Ws {
    let never = CancellationToken::new();
    let mut ws = connect(&plan.ws_url, plan.protocol, token, plan.reconnect, &never)
        .await
        .expect("connect retries until it succeeds or panics");
    ws.subscribe(
        "messages",
        MESSAGES,
        json!({"c": plan.channel.to_string(), "after": after}),
    )
    .await;
    ws
}

async fn run_subscriber(
    plan: SubscribePlan,
    token: String,
    mut first: Option<Ws>,
    mut until: watch::Receiver<Option<i64>>,
) -> SubscriberLog {
    let mut log = SubscriberLog {
        user: plan.user.clone(),
        runs: Vec::new(),
    };
    let mut last = 0i64;
    loop {
        let mut ws = match first.take() {
            Some(ws) => ws,
            None => subscribe(&plan, &token, last).await,
        };
        let mut run = Run {
            after: last,
            seqs: Vec::new(),
            close: None,
        };
        loop {
            if until.borrow().is_some_and(|target| last >= target) {
                log.runs.push(run);
                return log;
            }
            let frame = tokio::select! {
                frame = tokio::time::timeout(SILENCE, ws.frame()) => frame,
                changed = until.changed() => {
                    assert!(changed.is_ok(), "the test dropped its target");
                    continue;
                }
            };
            let Ok(frame) = frame else {
                panic!(
                    "subscriber {}: nothing for {SILENCE:?} after seq {last} (target {:?})",
                    plan.user,
                    *until.borrow()
                );
            };
            match frame {
                Frame::Json(frame) => match frame["type"].as_str() {
                    Some("next" | "data") => {
                        let seq = frame["payload"]["data"]["events"]["seq"]
                            .as_i64()
                            .unwrap_or_else(|| panic!("subscriber {}: {frame}", plan.user));
                        run.seqs.push(seq);
                        last = last.max(seq);
                    }
                    _ => panic!("subscriber {}: unexpected {frame}", plan.user),
                },
                Frame::Closed(code, reason) => {
                    run.close = Some((code, reason));
                    log.runs.push(run);
                    if plan.reconnect {
                        break;
                    }
                    return log;
                }
            }
        }
    }
}

/// Starts senders one after the other (see [`start_sender`]).
pub async fn start_senders(
    plans: impl IntoIterator<Item = SendPlan>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<SendLog>> {
    let mut started = Vec::new();
    for plan in plans {
        started.push(start_sender(plan, stop.clone()).await);
    }
    started
}

/// Starts subscribers one after the other (see [`start_subscriber`]).
pub async fn start_subscribers(
    plans: impl IntoIterator<Item = SubscribePlan>,
    until: &watch::Receiver<Option<i64>>,
) -> Vec<JoinHandle<SubscriberLog>> {
    let mut started = Vec::new();
    for plan in plans {
        started.push(start_subscriber(plan, until.clone()).await);
    }
    started
}

/// What each client recorded, once it is done.
pub async fn finish<T>(clients: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut logs = Vec::with_capacity(clients.len());
    for client in clients {
        logs.push(client.await.expect("a client task panicked"));
    }
    logs
}
