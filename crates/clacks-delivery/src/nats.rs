//! Fan-out between nodes over NATS.
//!
//! Subjects, all under the deployment's prefix (so that one permission,
//! publish and subscribe on `{prefix}.>`, is all a node needs):
//! - `{prefix}.ch.{channel_id}`: committed events, a subject per channel,
//!   which keeps each channel's events in publish order on the wire. A
//!   node subscribes only to the channels its hub follows (a local
//!   subscription of the channel, or of all channels of a member), and
//!   unsubscribes [`LINGER`] after the last of them ends; so a node
//!   receives and sequences the events of its own subscribers' channels,
//!   not those of the whole deployment.
//! - `{prefix}.user.{token}`: the `member_joined` and `member_left` events
//!   of one user (the token is a keyed hash of the user id, see
//!   [`ClusterKey::user_token`]), also published on their channel's
//!   subject. A node subscribes to the users with an all-channels
//!   subscription here: a user added to a channel this node has no
//!   interest in is told by their own subject, and the hub starts
//!   following the channel (interest first, then the events since the
//!   join from the database).
//! - `{prefix}.members`: batched membership changes (one bulk request's
//!   `members_joined` / `members_left`), also published on their channel's
//!   subject, heard by every node: one message per request and node, where
//!   a message on each user's subject would be one per user. A node whose
//!   all-channels subscribers are among the users starts following the
//!   channel as for a single join. A batch too large to list its users
//!   (see [`clacks_core::MEMBER_BATCH_LISTED`]) is completed from the
//!   database by a node with anyone it could concern
//!   ([`Hub::publish_remote`]): one bounded read per request.
//! - `{prefix}.probe.{node}`: a node's own; see below.
//! - `{prefix}.tails`: every [`ANNOUNCE_INTERVAL`], each node's newest seq
//!   of every channel it published to recently, in one message.
//! - `{prefix}.ctl.disconnect`: close a user's connections everywhere;
//!   the replies come back on the asking node's inbox, `{prefix}.inbox.*`.
//! - `{prefix}.presence`: a node's users that came online or went offline,
//!   at once, and every third of the presence TTL a heartbeat listing all
//!   its online users (see [`crate::presence`]).
//!
//! Interest is proven live before it is relied on: one task subscribes and
//! unsubscribes (fed by the hub's coalescing [`Routing`]), and after its
//! subscribe commands publishes a probe to the node's probe subject. NATS
//! handles a connection's commands in order, so once the probe is back the
//! subscriptions are registered with the server, and a subscriber that
//! reads its channel's baseline from the database after that
//! ([`Hub::interest_ready`]) gets every later event live. (`flush()` is not
//! enough: it only writes the client's buffer to the socket.)
//!
//! The prefix separates deployments (and tests) sharing a NATS server.
//! Every payload is signed with the cluster key and dated (see
//! [`crate::signing`]); anything else is dropped and counted.
//!
//! NATS core is at-most-once, and publishing after a database commit is a
//! dual write, so nothing here is trusted for completeness: the hub's
//! sequencer detects a gap when a later seq arrives and fills it from the
//! database; after a reconnect (once a probe shows the client's
//! subscriptions are back) or a slow-consumer report every followed
//! channel is caught up from the database; and a lost publish of a
//! channel's *last* event, which no later seq reveals, is revealed by the
//! next announcement of its node (every node hears every announcement and
//! ignores the channels it does not follow). A NATS outage delays live
//! delivery on other nodes; it never loses an event.
//!
//! `clacks_nats_interest_channels` and `clacks_nats_interest_users` gauge
//! the subjects a node is subscribed to (lingering ones included);
//! [`NatsBus::interest`] gives the same per node.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use bytes::Bytes;
use clacks_core::{ChannelEvent, ChannelId, EventPayload, Seq, UserId, now_ms};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::presence::Outgoing;
use crate::routing::{Routing, Topic};
use crate::signing::{ClusterKey, Rejected, is_fresh};
use crate::{CloseReason, Connections, Hub};

/// Events waiting for the NATS publisher; beyond this they are dropped
/// (other nodes then fill the gap from the database).
const PUBLISH_QUEUE: usize = 65_536;
/// How often a node announces the newest seqs it published: with the
/// receiving hub's short wait and one database read, a lost tail reaches
/// other nodes' subscribers well within a second.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(250);
/// Messages one NATS subscription holds before the node reads them (one
/// per followed channel and user, and the shared subjects): with interest
/// routing there are as many buffers as followed channels, so each is far
/// smaller than the one `ch.*` subscription's used to be. Beyond it NATS
/// reports a slow consumer and the node catches up from the database.
const SUBSCRIPTION_BUFFER: usize = 8_192;
/// How long a node's presence changes wait to leave together: every node
/// receives every change, so a reload storm of a thousand users would
/// otherwise be a thousand messages to each of them; this way it is a few.
const PRESENCE_COALESCE: Duration = Duration::from_millis(50);
/// Shortest interval between presence heartbeats, whatever the TTL.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Announcements a channel stays in after its last publish, so that one
/// lost announcement is covered by the next.
const ANNOUNCEMENTS_PER_PUBLISH: u8 = 3;
/// Most channels in one announcement message (about 20 bytes each); a node
/// publishing to more in one interval sends several.
const CHANNELS_PER_ANNOUNCEMENT: usize = 10_000;
/// How long a node stays subscribed to a channel (or user) after its last
/// local subscription ended. A client that reconnects (a page reload, a
/// network change, a resume after an overflow) subscribes again within
/// seconds; lingering spares it the wait for a new subscription to be
/// registered, and NATS the churn. Events received meanwhile are dropped
/// at once (no channel entry): a few seconds of one channel's traffic.
pub(crate) const LINGER: Duration = Duration::from_secs(3);
/// How long the catch-up after a reconnect waits for the probe that shows
/// the client's subscriptions registered again.
const RESUBSCRIBED_WAIT: Duration = Duration::from_secs(5);
/// A failed subscribe (the client's command queue closed or full) is tried
/// again after this.
const SUBSCRIBE_RETRY: Duration = Duration::from_secs(1);

/// Everything a node sends carries its node id and when it was sent.
trait Dated {
    fn sent_at(&self) -> i64;
}

#[derive(Serialize, Deserialize)]
struct EventMessage<E> {
    node: u64,
    at: i64,
    event: E,
}

#[derive(Serialize, Deserialize)]
struct Announcement {
    node: u64,
    at: i64,
    tails: Vec<(ChannelId, Seq)>,
}

/// A node's presence news: users it now holds (a change or a heartbeat)
/// and users it no longer holds, since `at`.
#[derive(Serialize, Deserialize)]
struct PresenceMessage {
    node: u64,
    at: i64,
    #[serde(default)]
    online: Vec<UserId>,
    #[serde(default)]
    offline: Vec<UserId>,
}

impl Dated for PresenceMessage {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

/// This node's presence changes on their way to the other nodes, each
/// user's latest only, sent every [`PRESENCE_COALESCE`] and before each
/// heartbeat.
struct PresenceSender {
    node: u64,
    subject: String,
    key: ClusterKey,
    outbox: mpsc::Sender<(String, Bytes)>,
    /// Each user's latest change: online (`None`) or offline since (ms).
    /// As large as the users whose connections came or went within one
    /// interval, which the connection limits bound.
    pending: Mutex<HashMap<UserId, Option<i64>>>,
}

impl PresenceSender {
    fn pend(&self, user: UserId, offline_since: Option<i64>) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user, offline_since);
    }

    /// Sends what waits, in messages of at most
    /// [`crate::presence::USERS_PER_HEARTBEAT`] users. Offline users of one
    /// message share its time, the latest of theirs: a last-seen time may
    /// read up to one interval late.
    fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return;
        }
        let mut online = Vec::new();
        let mut offline = Vec::new();
        let mut at = 0;
        for (user, offline_since) in pending {
            match offline_since {
                None => online.push(user),
                Some(since) => {
                    at = at.max(since);
                    offline.push(user);
                }
            }
        }
        let at = if offline.is_empty() { now_ms() } else { at };
        let per_message = crate::presence::USERS_PER_HEARTBEAT;
        while !online.is_empty() || !offline.is_empty() {
            let online_part: Vec<UserId> = online.drain(..online.len().min(per_message)).collect();
            let room = per_message - online_part.len();
            let offline_part: Vec<UserId> = offline.drain(..offline.len().min(room)).collect();
            self.send(PresenceMessage {
                node: self.node,
                at,
                online: online_part,
                offline: offline_part,
            });
        }
    }

    fn send(&self, message: PresenceMessage) {
        let Ok(body) = serde_json::to_vec(&message) else {
            return;
        };
        queue_sealed(&self.key, &self.outbox, self.subject.clone(), &body);
    }
}

/// Signs `body` for `subject` and queues it for the publisher task,
/// never waiting: a full queue drops it (counted), and the other nodes
/// recover what it carried (backfill for events, the next heartbeat for
/// presence).
fn queue_sealed(
    key: &ClusterKey,
    outbox: &mpsc::Sender<(String, Bytes)>,
    subject: String,
    body: &[u8],
) {
    let payload = key.seal(&subject, body);
    if outbox.try_send((subject, payload)).is_err() {
        metrics::counter!("clacks_nats_publish_dropped_total").increment(1);
    } else {
        metrics::counter!("clacks_nats_published_total").increment(1);
    }
}

/// Published to the node's own probe subject after subscribe commands:
/// back, it shows every change up to `number` registered with the server.
#[derive(Serialize, Deserialize)]
struct Probe {
    node: u64,
    at: i64,
    number: u64,
}

impl Dated for Probe {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

/// The subjects a node is subscribed to for its hub (lingering ones
/// included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InterestStats {
    pub channels: usize,
    pub users: usize,
}

#[derive(Serialize, Deserialize)]
struct DisconnectRequest {
    node: u64,
    at: i64,
    user: UserId,
}

#[derive(Serialize, Deserialize)]
struct DisconnectReply {
    at: i64,
    closed: usize,
}

impl<E> Dated for EventMessage<E> {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

impl Dated for Announcement {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

impl Dated for DisconnectRequest {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

impl Dated for DisconnectReply {
    fn sent_at(&self) -> i64 {
        self.at
    }
}

/// Where and how a node reaches NATS.
pub struct NatsSettings<'a> {
    /// `nats://[USER:PASSWORD@ | TOKEN@]HOST:PORT`, several separated by
    /// commas.
    pub url: &'a str,
    pub prefix: &'a str,
    /// A `.creds` file (a user JWT and its nkey seed).
    pub credentials: Option<&'a Path>,
    pub key: ClusterKey,
    /// How long another node's user counts as online without news of
    /// them from that node (heartbeats are sent every third of it).
    pub presence_ttl: Duration,
}

/// Faults a test can switch on to show that nothing depends on NATS.
#[derive(Default)]
struct Faults {
    drop_outgoing_events: AtomicBool,
}

/// What a node published recently, for its announcements.
#[derive(Default)]
struct Recent(Mutex<HashMap<ChannelId, (Seq, u8)>>);

impl Recent {
    fn record(&self, channel: ChannelId, seq: Seq) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = recent.entry(channel).or_insert((seq, 0));
        entry.0 = entry.0.max(seq);
        entry.1 = ANNOUNCEMENTS_PER_PUBLISH;
    }

    /// The tails to announce now; each channel leaves after its last one.
    fn take_round(&self) -> Vec<(ChannelId, Seq)> {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let tails = recent
            .iter()
            .map(|(channel, (seq, _))| (*channel, *seq))
            .collect();
        recent.retain(|_, (_, left)| {
            *left -= 1;
            *left > 0
        });
        tails
    }
}

/// The credentials a NATS URL carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword(String, String),
    /// `nats://TOKEN@host`, as every NATS client reads a lone user part.
    Token(String),
}

/// Splits the credentials off a NATS URL (several servers separated by
/// commas, all with the same credentials or none), to be handed to the
/// client as options: async-nats 0.51 ignores credentials in the URL
/// (nats.rs issue 1623), and prints the server address in its debug logs,
/// where a password must not be.
fn split_credentials(urls: &str) -> Result<(Vec<ServerAddr>, Credentials), String> {
    let mut servers = Vec::new();
    let mut found = Credentials::None;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (server, credentials) = split_one(url)?;
        servers.push(server);
        match (&found, credentials) {
            (_, Credentials::None) => {}
            (Credentials::None, credentials) => found = credentials,
            (same, credentials) if *same == credentials => {}
            _ => return Err("the servers carry different credentials".into()),
        }
    }
    if servers.is_empty() {
        return Err("no server given".into());
    }
    Ok((servers, found))
}

fn split_one(url: &str) -> Result<(ServerAddr, Credentials), String> {
    let server: ServerAddr = url.parse().map_err(|e: std::io::Error| e.to_string())?;
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| "the credentials are not UTF-8 once percent-decoded".to_owned())
    };
    let credentials = match (server.username(), server.password()) {
        (None, None) => return Ok((server, Credentials::None)),
        (Some(user), Some(password)) => Credentials::UserPassword(decode(user)?, decode(password)?),
        (Some(token), None) => Credentials::Token(decode(token)?),
        (None, Some(_)) => return Err("a password needs a user name before it".into()),
    };
    let mut bare = server.into_inner();
    // Only URLs that cannot have credentials refuse these; this one had some.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let server = ServerAddr::from_url(bare).map_err(|e| e.to_string())?;
    Ok((server, credentials))
}

pub struct NatsBus {
    client: Client,
    prefix: String,
    node: u64,
    key: ClusterKey,
    outbox: mpsc::Sender<(String, Bytes)>,
    connected: Arc<AtomicBool>,
    recent: Arc<Recent>,
    faults: Faults,
    interest: Arc<InterestCounts>,
}

/// Counts of the node's own, for tests and `/metrics`.
#[derive(Default)]
struct InterestCounts {
    channels: AtomicUsize,
    users: AtomicUsize,
    /// Events received from other nodes (the `clacks_nats_received_total`
    /// of this node alone: metrics are per process).
    received: AtomicU64,
}

/// The body of a signed, dated message, or why it was dropped (counted).
fn open<T: DeserializeOwned + Dated>(key: &ClusterKey, subject: &str, payload: &[u8]) -> Option<T> {
    let opened = key
        .open(subject, payload)
        .and_then(|body| serde_json::from_slice::<T>(body).map_err(|_| Rejected::Malformed))
        .and_then(|message| {
            if is_fresh(message.sent_at()) {
                Ok(message)
            } else {
                Err(Rejected::Stale)
            }
        });
    match opened {
        Ok(message) => Some(message),
        Err(rejected) => {
            rejected.count();
            tracing::debug!(subject, ?rejected, "dropped a NATS message");
            None
        }
    }
}

impl NatsBus {
    /// Connects (retrying in the background while NATS is unreachable) and
    /// starts relaying events from other nodes into `hub`.
    pub async fn start(
        settings: NatsSettings<'_>,
        hub: Arc<Hub>,
        connections: Arc<Connections>,
    ) -> Result<Arc<NatsBus>, String> {
        let NatsSettings {
            url,
            prefix,
            credentials,
            key,
            presence_ttl,
        } = settings;
        let node: u64 = rand::random();
        let connected = Arc::new(AtomicBool::new(false));
        let routing = hub.routing().clone();
        routing.enable();
        let events_hub = Arc::downgrade(&hub);
        let events_connected = connected.clone();
        let events_routing = routing.clone();
        let mut options = match credentials {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| format!("cannot read the NATS credentials {}: {e}", path.display()))?,
            None => ConnectOptions::new(),
        };
        let unusable =
            |why: String| format!("cannot use NATS at {}: {why}", clacks_core::redact_url(url));
        let (servers, credentials) = split_credentials(url).map_err(unusable)?;
        options = match credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
        };
        let options = options
            .name(format!("clacks-{node:016x}"))
            .custom_inbox_prefix(format!("{prefix}.inbox"))
            .retry_on_initial_connect()
            .subscription_capacity(SUBSCRIPTION_BUFFER)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
            })
            .event_callback(move |event| {
                let hub = events_hub.clone();
                let connected = events_connected.clone();
                let routing = events_routing.clone();
                async move {
                    match event {
                        Event::Connected => {
                            let was = connected.swap(true, Ordering::AcqRel);
                            routing.set_connected(true);
                            metrics::gauge!("clacks_nats_connected").set(1.0);
                            tracing::info!("NATS connected");
                            if !was {
                                // Whatever was published while we were away
                                // is in the database. The client sends its
                                // subscriptions again only after this event:
                                // read once a probe shows them registered,
                                // or an event published between the read
                                // and the registration would be lost.
                                let probe = routing.request_probe();
                                tokio::spawn(async move {
                                    routing.wait_for(probe, RESUBSCRIBED_WAIT).await;
                                    if let Some(hub) = hub.upgrade() {
                                        hub.catch_up_all();
                                    }
                                });
                            }
                        }
                        Event::Disconnected => {
                            connected.store(false, Ordering::Release);
                            routing.set_connected(false);
                            metrics::gauge!("clacks_nats_connected").set(0.0);
                            tracing::warn!("NATS disconnected; live delivery from other nodes is paused");
                        }
                        Event::SlowConsumer(_) => {
                            metrics::counter!("clacks_nats_slow_consumer_total").increment(1);
                            tracing::warn!("NATS dropped messages for this node (slow consumer); catching up from the database");
                            if let Some(hub) = hub.upgrade() {
                                hub.catch_up_all();
                            }
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        let client = options
            .connect(servers)
            .await
            .map_err(|e| unusable(e.to_string()))?;

        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| format!("cannot subscribe on NATS: {e}"))
            }
        };
        let probe_subject = format!("{prefix}.probe.{node:016x}");
        let mut probes = subscribe(probe_subject.clone()).await?;
        let mut tails = subscribe(format!("{prefix}.tails")).await?;
        let mut control = subscribe(format!("{prefix}.ctl.disconnect")).await?;
        let mut presence_news = subscribe(format!("{prefix}.presence")).await?;
        let batches = subscribe(format!("{prefix}.members")).await?;

        let recent = Arc::new(Recent::default());
        let (outbox, mut outbox_rx) = mpsc::channel::<(String, Bytes)>(PUBLISH_QUEUE);
        let publisher = client.clone();
        let announcer = Announcer {
            subject: format!("{prefix}.tails"),
            node,
            key: key.clone(),
            recent: recent.clone(),
            connected: connected.clone(),
        };
        tokio::spawn(async move {
            // One task publishes, so a channel's events leave in order, and
            // an announcement leaves after the events it covers.
            let mut round = tokio::time::interval(ANNOUNCE_INTERVAL);
            round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let messages = tokio::select! {
                    next = outbox_rx.recv() => match next {
                        Some(message) => vec![message],
                        None => return,
                    },
                    _ = round.tick() => announcer.round(),
                };
                for (subject, payload) in messages {
                    if let Err(e) = publisher.publish(subject, payload).await {
                        metrics::counter!("clacks_nats_publish_failed_total").increment(1);
                        tracing::warn!(error = %e, "NATS publish failed; other nodes will backfill");
                    }
                }
            }
        });

        let presence = connections.presence().clone();
        let presence_sender = Arc::new(PresenceSender {
            node,
            subject: format!("{prefix}.presence"),
            key: key.clone(),
            outbox: outbox.clone(),
            pending: Mutex::default(),
        });
        let sink = presence_sender.clone();
        presence.send_to(Box::new(move |news| match news {
            Outgoing::Online(user) => sink.pend(user, None),
            Outgoing::Offline(user, at) => sink.pend(user, Some(at)),
            Outgoing::Heartbeat(users) => {
                // What waits is older than the heartbeat: it goes first.
                sink.flush();
                sink.send(PresenceMessage {
                    node,
                    at: now_ms(),
                    online: users,
                    offline: Vec::new(),
                });
            }
        }));
        let flushing = Arc::downgrade(&presence_sender);
        drop(presence_sender);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRESENCE_COALESCE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sender) = flushing.upgrade() else {
                    return;
                };
                sender.flush();
            }
        });
        let beating = Arc::downgrade(&presence);
        let beat_connected = connected.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval((presence_ttl / 3).max(MIN_HEARTBEAT));
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                beat.tick().await;
                let Some(presence) = beating.upgrade() else {
                    return;
                };
                if beat_connected.load(Ordering::Acquire) {
                    presence.heartbeat();
                }
                presence.expire();
            }
        });
        let news_presence = Arc::downgrade(&presence);
        let news_key = key.clone();
        tokio::spawn(async move {
            while let Some(message) = presence_news.next().await {
                let Some(presence) = news_presence.upgrade() else {
                    return;
                };
                let Some(news) =
                    open::<PresenceMessage>(&news_key, &message.subject, &message.payload)
                else {
                    continue;
                };
                if news.node == node {
                    continue;
                }
                presence.remote_online(news.node, &news.online, presence_ttl);
                for user in &news.offline {
                    presence.remote_offline(news.node, user, news.at);
                }
            }
        });

        let interest = Arc::new(InterestCounts::default());
        let probed = routing.clone();
        let probe_key = key.clone();
        tokio::spawn(async move {
            while let Some(message) = probes.next().await {
                if let Some(probe) = open::<Probe>(&probe_key, &message.subject, &message.payload)
                    && probe.node == node
                {
                    probed.probed(probe.number);
                }
            }
        });
        let router = Router {
            client: client.clone(),
            prefix: prefix.to_owned(),
            node,
            key: key.clone(),
            hub: Arc::downgrade(&hub),
            routing,
            interest: interest.clone(),
            probe_subject,
            active: HashMap::new(),
            lingering: HashMap::new(),
        };
        tokio::spawn(router.run());

        tokio::spawn(relay(
            batches,
            Arc::downgrade(&hub),
            key.clone(),
            node,
            interest.clone(),
        ));

        let tails_hub = Arc::downgrade(&hub);
        let tails_key = key.clone();
        tokio::spawn(async move {
            while let Some(message) = tails.next().await {
                let Some(hub) = tails_hub.upgrade() else {
                    return;
                };
                if let Some(announcement) =
                    open::<Announcement>(&tails_key, &message.subject, &message.payload)
                    && announcement.node != node
                {
                    hub.announced(&announcement.tails);
                }
            }
        });

        let control_client = client.clone();
        let control_connections = Arc::downgrade(&connections);
        let control_key = key.clone();
        tokio::spawn(async move {
            while let Some(message) = control.next().await {
                let Some(connections) = control_connections.upgrade() else {
                    return;
                };
                let Some(request) =
                    open::<DisconnectRequest>(&control_key, &message.subject, &message.payload)
                else {
                    continue;
                };
                if request.node == node {
                    continue;
                }
                let closed =
                    connections.disconnect_user(&request.user, CloseReason::ForcedDisconnect);
                let reply = DisconnectReply {
                    at: now_ms(),
                    closed,
                };
                if let (Some(inbox), Ok(body)) = (message.reply, serde_json::to_vec(&reply)) {
                    let payload = control_key.seal(&inbox, &body);
                    let _ = control_client.publish(inbox, payload).await;
                }
            }
        });

        Ok(Arc::new(NatsBus {
            client,
            prefix: prefix.to_owned(),
            node,
            key,
            outbox,
            connected,
            recent,
            faults: Faults::default(),
            interest,
        }))
    }

    /// The channels and users this node is subscribed to on NATS.
    pub fn interest(&self) -> InterestStats {
        InterestStats {
            channels: self.interest.channels.load(Ordering::Relaxed),
            users: self.interest.users.load(Ordering::Relaxed),
        }
    }

    /// Events this node received from other nodes since it started.
    pub fn received(&self) -> u64 {
        self.interest.received.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sends a committed event to the other nodes (never blocks).
    pub fn publish(&self, event: &ChannelEvent) {
        if event.durable {
            self.recent.record(event.channel_id, event.seq);
        }
        if self.faults.drop_outgoing_events.load(Ordering::Relaxed) {
            metrics::counter!("clacks_nats_publish_dropped_total").increment(1);
            return;
        }
        let message = EventMessage {
            node: self.node,
            at: now_ms(),
            event,
        };
        let Ok(body) = serde_json::to_vec(&message) else {
            return;
        };
        let subject = format!("{}.ch.{}", self.prefix, event.channel_id);
        // Also on the member's subject: a node following the user but not
        // the channel learns of the join. One following both gets two
        // copies; the sequencer drops the second by seq, and the hub a
        // channel creation's unstored join by user.
        let member = match &event.payload {
            EventPayload::MemberJoined { user_id, .. } | EventPayload::MemberLeft { user_id } => {
                Some(user_id)
            }
            _ => None,
        };
        self.send(subject, &body);
        if event.payload.member_batch().is_some() {
            self.send(format!("{}.members", self.prefix), &body);
        }
        if let Some(user) = member {
            let subject = format!(
                "{}.user.{}",
                self.prefix,
                self.key.user_token(user.as_str())
            );
            self.send(subject, &body);
        }
    }

    fn send(&self, subject: String, body: &[u8]) {
        queue_sealed(&self.key, &self.outbox, subject, body);
    }

    /// Test fault: events are no longer sent to other nodes (as if NATS
    /// lost every one), though still announced.
    #[doc(hidden)]
    pub fn drop_outgoing_events(&self, drop: bool) {
        self.faults
            .drop_outgoing_events
            .store(drop, Ordering::Relaxed);
    }

    /// Asks the other nodes to close `user`'s connections; returns how many
    /// they closed (the replies that arrive within a short window).
    pub async fn disconnect_user(&self, user: &UserId) -> usize {
        let inbox = self.client.new_inbox();
        let Ok(mut replies) = self.client.subscribe(inbox.clone()).await else {
            return 0;
        };
        let request = DisconnectRequest {
            node: self.node,
            at: now_ms(),
            user: user.clone(),
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return 0;
        };
        let subject = format!("{}.ctl.disconnect", self.prefix);
        let payload = self.key.seal(&subject, &body);
        if self
            .client
            .publish_with_reply(subject, inbox, payload)
            .await
            .is_err()
        {
            return 0;
        }
        let mut closed = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
            if let Some(reply) =
                open::<DisconnectReply>(&self.key, &message.subject, &message.payload)
            {
                closed += reply.closed;
            }
        }
        closed
    }
}

/// Subscribes and unsubscribes as the hub's interests change: the one task
/// that does, so NATS sees each topic's changes in order, and a burst of
/// churn costs one pass over the topics that changed.
struct Router {
    client: Client,
    prefix: String,
    node: u64,
    key: ClusterKey,
    hub: Weak<Hub>,
    routing: Arc<Routing>,
    interest: Arc<InterestCounts>,
    probe_subject: String,
    /// Subscribed topics; aborting the relay drops its subscriber, which
    /// unsubscribes.
    active: HashMap<Topic, tokio::task::AbortHandle>,
    /// Subscribed topics nobody here needs any more, until when.
    lingering: HashMap<Topic, tokio::time::Instant>,
}

impl Router {
    fn subject(&self, topic: &Topic) -> String {
        match topic {
            Topic::Channel(channel) => format!("{}.ch.{channel}", self.prefix),
            Topic::User(user) => {
                format!(
                    "{}.user.{}",
                    self.prefix,
                    self.key.user_token(user.as_str())
                )
            }
        }
    }

    async fn run(mut self) {
        let mut probed = 0;
        loop {
            let next_expiry = self.lingering.values().min().copied();
            tokio::select! {
                _ = self.routing.changed() => {}
                _ = async {
                    match next_expiry {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            if self.hub.strong_count() == 0 {
                return;
            }
            let (changes, number) = self.routing.take();
            let mut failed = Vec::new();
            for (topic, on) in changes {
                if !on {
                    if self.active.contains_key(&topic) {
                        self.lingering
                            .insert(topic, tokio::time::Instant::now() + LINGER);
                    }
                    continue;
                }
                self.lingering.remove(&topic);
                if self.active.contains_key(&topic) {
                    continue;
                }
                match self.client.subscribe(self.subject(&topic)).await {
                    Ok(subscriber) => {
                        let relay = tokio::spawn(relay(
                            subscriber,
                            self.hub.clone(),
                            self.key.clone(),
                            self.node,
                            self.interest.clone(),
                        ));
                        self.active.insert(topic, relay.abort_handle());
                    }
                    Err(e) => {
                        metrics::counter!("clacks_nats_subscribe_failed_total").increment(1);
                        tracing::warn!(error = %e, ?topic, "NATS subscribe failed; trying again");
                        failed.push(topic);
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let expired: Vec<Topic> = self
                .lingering
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(topic, _)| topic.clone())
                .collect();
            for topic in expired {
                self.lingering.remove(&topic);
                if let Some(relay) = self.active.remove(&topic) {
                    relay.abort();
                }
            }
            self.count();
            if !failed.is_empty() {
                // Their waiters time out rather than being told a failed
                // subscription is live: no probe until it succeeds.
                tokio::time::sleep(SUBSCRIBE_RETRY).await;
                for topic in failed {
                    self.routing.want(topic, true);
                }
                continue;
            }
            if number > probed {
                let probe = Probe {
                    node: self.node,
                    at: now_ms(),
                    number,
                };
                if let Ok(body) = serde_json::to_vec(&probe) {
                    let payload = self.key.seal(&self.probe_subject, &body);
                    match self
                        .client
                        .publish(self.probe_subject.clone(), payload)
                        .await
                    {
                        Ok(()) => probed = number,
                        Err(e) => tracing::warn!(error = %e, "NATS probe not sent"),
                    }
                }
            }
        }
    }

    fn count(&self) {
        let users = self
            .active
            .keys()
            .filter(|topic| matches!(topic, Topic::User(_)))
            .count();
        let channels = self.active.len() - users;
        self.interest.channels.store(channels, Ordering::Relaxed);
        self.interest.users.store(users, Ordering::Relaxed);
        metrics::gauge!("clacks_nats_interest_channels").set(channels as f64);
        metrics::gauge!("clacks_nats_interest_users").set(users as f64);
    }
}

/// Hands the events of one subscribed topic to the hub, until aborted.
async fn relay(
    mut subscriber: Subscriber,
    hub: Weak<Hub>,
    key: ClusterKey,
    node: u64,
    interest: Arc<InterestCounts>,
) {
    while let Some(message) = subscriber.next().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let Some(envelope) =
            open::<EventMessage<ChannelEvent>>(&key, &message.subject, &message.payload)
        else {
            continue;
        };
        if envelope.node != node {
            metrics::counter!("clacks_nats_received_total").increment(1);
            interest.received.fetch_add(1, Ordering::Relaxed);
            hub.publish_remote(envelope.event).await;
        }
    }
}

/// Builds a node's announcements.
struct Announcer {
    subject: String,
    node: u64,
    key: ClusterKey,
    recent: Arc<Recent>,
    connected: Arc<AtomicBool>,
}

impl Announcer {
    /// This interval's announcement messages (none while disconnected: the
    /// channels wait for the next round, and other nodes catch up anyway
    /// when NATS comes back).
    fn round(&self) -> Vec<(String, Bytes)> {
        if !self.connected.load(Ordering::Acquire) {
            return Vec::new();
        }
        let tails = self.recent.take_round();
        tails
            .chunks(CHANNELS_PER_ANNOUNCEMENT)
            .filter_map(|chunk| {
                let announcement = Announcement {
                    node: self.node,
                    at: now_ms(),
                    tails: chunk.to_vec(),
                };
                let body = serde_json::to_vec(&announcement).ok()?;
                Some((self.subject.clone(), self.key.seal(&self.subject, &body)))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id.to_owned()).unwrap()
    }

    #[test]
    fn presence_changes_leave_together_each_users_latest_only() {
        let key = ClusterKey::from_secret(b"shared by every node");
        let (outbox, mut sent) = mpsc::channel(16);
        let sender = PresenceSender {
            node: 7,
            subject: "clacks.presence".into(),
            key: key.clone(),
            outbox,
            pending: Mutex::default(),
        };
        let now = now_ms();
        for i in 0..1_000 {
            sender.pend(user(&format!("u{i}")), None);
        }
        // Came and went within the interval: only the leaving is told.
        sender.pend(user("u1"), Some(now - 5));
        sender.pend(user("gone"), Some(now));
        sender.flush();
        let (subject, payload) = sent.try_recv().unwrap();
        assert!(sent.try_recv().is_err(), "one message for 1,001 changes");
        let message: PresenceMessage = open(&key, &subject, &payload).unwrap();
        assert_eq!(message.node, 7);
        assert_eq!(message.online.len(), 999);
        assert!(!message.online.contains(&user("u1")));
        let mut offline = message.offline.clone();
        offline.sort();
        assert_eq!(offline, [user("gone"), user("u1")]);
        assert_eq!(message.at, now, "the latest leaving time");
        sender.flush();
        assert!(sent.try_recv().is_err(), "nothing waits after a flush");

        // More users than one message holds: several messages, none lost.
        let many = crate::presence::USERS_PER_HEARTBEAT * 2 + 1;
        for i in 0..many {
            sender.pend(user(&format!("m{i}")), None);
        }
        sender.flush();
        let mut told = 0;
        while let Ok((subject, payload)) = sent.try_recv() {
            let message: PresenceMessage = open(&key, &subject, &payload).unwrap();
            assert!(message.online.len() <= crate::presence::USERS_PER_HEARTBEAT);
            told += message.online.len();
        }
        assert_eq!(told, many);
    }

    #[test]
    fn credentials_leave_the_url_decoded() {
        for (url, bare, credentials) in [
            (
                "nats://127.0.0.1:4222",
                vec!["nats://127.0.0.1:4222"],
                Credentials::None,
            ),
            (
                "nats://alice:p%40ss%3Aw@nats.internal:4222",
                vec!["nats://nats.internal:4222"],
                Credentials::UserPassword("alice".into(), "p@ss:w".into()),
            ),
            (
                "tls://s3cr3t@nats.internal",
                vec!["tls://nats.internal"],
                Credentials::Token("s3cr3t".into()),
            ),
            (
                "nats://tok@a:4222, nats://b:4222",
                vec!["nats://a:4222", "nats://b:4222"],
                Credentials::Token("tok".into()),
            ),
        ] {
            let (servers, found) = split_credentials(url).unwrap();
            let servers: Vec<&str> = servers
                .iter()
                .map(|s| s.as_url_str().trim_end_matches('/'))
                .collect();
            assert_eq!(servers, bare, "{url}");
            assert_eq!(found, credentials, "{url}");
        }
        assert!(split_credentials("nats://:lonely@h").is_err());
        assert!(split_credentials("http://h").is_err());
        assert!(split_credentials("nats://a:1@h1,nats://b:2@h2").is_err());
        assert!(split_credentials("").is_err());
    }

    #[test]
    fn a_channel_is_announced_a_few_times_after_its_last_publish() {
        let recent = Recent::default();
        recent.record(ChannelId(1), 5);
        recent.record(ChannelId(1), 4);
        for _ in 0..ANNOUNCEMENTS_PER_PUBLISH {
            assert_eq!(recent.take_round(), vec![(ChannelId(1), 5)]);
        }
        assert!(recent.take_round().is_empty());
    }
}
