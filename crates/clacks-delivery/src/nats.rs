//! Fan-out between nodes over NATS.
//!
//! Subjects: `{prefix}.ch.{channel_id}`, one per channel. A subject per
//! channel keeps each channel's events in publish order on the wire and
//! lets a node later subscribe only to the channels it serves; today every
//! node subscribes to `{prefix}.ch.*` and receives every event, which is
//! the simple choice until one node's share of traffic becomes the limit.
//! The prefix separates deployments (and tests) sharing a NATS server.
//!
//! NATS core is at-most-once, and publishing after a database commit is a
//! dual write, so nothing here is trusted for completeness: the hub's
//! sequencer detects a gap when a later seq arrives and fills it from the
//! database, and after a reconnect or a slow-consumer report every channel
//! is caught up from the database. A NATS outage delays live delivery on
//! other nodes; it never loses an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use bytes::Bytes;
use clacks_core::{ChannelEvent, UserId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{CloseReason, Connections, Hub};

/// Events waiting for the NATS publisher; beyond this they are dropped
/// (other nodes then fill the gap from the database).
const PUBLISH_QUEUE: usize = 65_536;

#[derive(Deserialize)]
struct Envelope {
    node: u64,
    event: ChannelEvent,
}

#[derive(Serialize)]
struct OutgoingEnvelope<'a> {
    node: u64,
    event: &'a ChannelEvent,
}

#[derive(Serialize, Deserialize)]
struct DisconnectRequest {
    node: u64,
    user: UserId,
}

#[derive(Serialize, Deserialize)]
struct DisconnectReply {
    closed: usize,
}

/// The credentials a NATS URL carries.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword(String, String),
    /// `nats://TOKEN@host`, as every NATS client reads a lone user part.
    Token(String),
}

/// Splits the credentials off a NATS URL, to be handed to the client as
/// options: async-nats 0.51 ignores credentials in the URL (nats.rs issue
/// 1623), and prints the server address in its debug logs, where a password
/// must not be.
fn split_credentials(url: &str) -> Result<(ServerAddr, Credentials), String> {
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
    outbox: mpsc::Sender<(String, Bytes)>,
    connected: Arc<AtomicBool>,
}

impl NatsBus {
    /// Connects (retrying in the background while NATS is unreachable) and
    /// starts relaying events from other nodes into `hub`.
    pub async fn start(
        url: &str,
        prefix: &str,
        hub: Arc<Hub>,
        connections: Arc<Connections>,
    ) -> Result<Arc<NatsBus>, String> {
        let node: u64 = rand::random();
        let connected = Arc::new(AtomicBool::new(false));
        let events_hub = Arc::downgrade(&hub);
        let events_connected = connected.clone();
        let options = ConnectOptions::new()
            .name(format!("clacks-{node:016x}"))
            .retry_on_initial_connect()
            .subscription_capacity(PUBLISH_QUEUE)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
            })
            .event_callback(move |event| {
                let hub = events_hub.clone();
                let connected = events_connected.clone();
                async move {
                    match event {
                        Event::Connected => {
                            let was = connected.swap(true, Ordering::AcqRel);
                            metrics::gauge!("clacks_nats_connected").set(1.0);
                            tracing::info!("NATS connected");
                            if !was {
                                // Whatever was published while we were away
                                // is in the database.
                                if let Some(hub) = hub.upgrade() {
                                    hub.catch_up_all();
                                }
                            }
                        }
                        Event::Disconnected => {
                            connected.store(false, Ordering::Release);
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
        let unusable =
            |why: String| format!("cannot use NATS at {}: {why}", clacks_core::redact_url(url));
        let (server, credentials) = split_credentials(url).map_err(unusable)?;
        let options = match credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
        };
        let client = options
            .connect(server)
            .await
            .map_err(|e| unusable(e.to_string()))?;

        let events = client
            .subscribe(format!("{prefix}.ch.*"))
            .await
            .map_err(|e| format!("cannot subscribe on NATS: {e}"))?;
        let control = client
            .subscribe(format!("{prefix}.ctl.disconnect"))
            .await
            .map_err(|e| format!("cannot subscribe on NATS: {e}"))?;

        let (outbox, mut outbox_rx) = mpsc::channel::<(String, Bytes)>(PUBLISH_QUEUE);
        let publisher = client.clone();
        tokio::spawn(async move {
            // One task publishes, so a channel's events leave in order.
            while let Some((subject, payload)) = outbox_rx.recv().await {
                if let Err(e) = publisher.publish(subject, payload).await {
                    metrics::counter!("clacks_nats_publish_failed_total").increment(1);
                    tracing::warn!(error = %e, "NATS publish failed; other nodes will backfill");
                }
            }
        });

        let relay_hub = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let mut events = events;
            while let Some(message) = events.next().await {
                let Some(hub) = relay_hub.upgrade() else {
                    return;
                };
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(envelope) if envelope.node == node => {}
                    Ok(envelope) => {
                        metrics::counter!("clacks_nats_received_total").increment(1);
                        hub.publish(envelope.event);
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed event from NATS"),
                }
            }
        });

        let control_client = client.clone();
        let control_connections = Arc::downgrade(&connections);
        tokio::spawn(async move {
            let mut control = control;
            while let Some(message) = control.next().await {
                let Some(connections) = control_connections.upgrade() else {
                    return;
                };
                let Ok(request) = serde_json::from_slice::<DisconnectRequest>(&message.payload)
                else {
                    continue;
                };
                if request.node == node {
                    continue;
                }
                let closed =
                    connections.disconnect_user(&request.user, CloseReason::ForcedDisconnect);
                if let (Some(reply), Ok(body)) = (
                    message.reply,
                    serde_json::to_vec(&DisconnectReply { closed }),
                ) {
                    let _ = control_client.publish(reply, body.into()).await;
                }
            }
        });

        Ok(Arc::new(NatsBus {
            client,
            prefix: prefix.to_owned(),
            node,
            outbox,
            connected,
        }))
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sends a committed event to the other nodes (never blocks).
    pub fn publish(&self, event: &ChannelEvent) {
        let envelope = OutgoingEnvelope {
            node: self.node,
            event,
        };
        let Ok(payload) = serde_json::to_vec(&envelope) else {
            return;
        };
        let subject = format!("{}.ch.{}", self.prefix, event.channel_id);
        if self.outbox.try_send((subject, payload.into())).is_err() {
            metrics::counter!("clacks_nats_publish_dropped_total").increment(1);
        } else {
            metrics::counter!("clacks_nats_published_total").increment(1);
        }
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
            user: user.clone(),
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return 0;
        };
        if self
            .client
            .publish_with_reply(
                format!("{}.ctl.disconnect", self.prefix),
                inbox,
                body.into(),
            )
            .await
            .is_err()
        {
            return 0;
        }
        let mut closed = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
            if let Ok(reply) = serde_json::from_slice::<DisconnectReply>(&message.payload) {
                closed += reply.closed;
            }
        }
        closed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Credentials, split_credentials};

    #[test]
    fn credentials_leave_the_url_decoded() {
        for (url, bare, credentials) in [
            (
                "nats://127.0.0.1:4222",
                "nats://127.0.0.1:4222",
                Credentials::None,
            ),
            (
                "nats://alice:p%40ss%3Aw@nats.internal:4222",
                "nats://nats.internal:4222",
                Credentials::UserPassword("alice".into(), "p@ss:w".into()),
            ),
            (
                "tls://s3cr3t@nats.internal",
                "tls://nats.internal",
                Credentials::Token("s3cr3t".into()),
            ),
        ] {
            let (server, found) = split_credentials(url).unwrap();
            assert_eq!(server.as_url_str().trim_end_matches('/'), bare, "{url}");
            assert_eq!(found, credentials, "{url}");
        }
        assert!(split_credentials("nats://:lonely@h").is_err());
        assert!(split_credentials("http://h").is_err());
    }
}
