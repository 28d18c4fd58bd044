//! The webhook worker: routes the outbox into deliveries, claims due
//! deliveries (a lease, so one node sends each attempt), POSTs them signed,
//! and records each attempt with its outcome and the next retry.
//!
//! Durability comes from the database, not from this task: the outbox row
//! is committed with its event, a delivery is pending until an attempt
//! succeeds or gives up, and a lease that outlives its node expires. So a
//! restart (or a crash) loses nothing: the next worker on this database
//! sends what is pending. A receiver may see a delivery twice (a crash
//! after it answered, before the attempt was recorded): the
//! `Clacks-Delivery` header is the same on every attempt, for it to drop
//! repeats.
//!
//! Signature: `Clacks-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>`
//! is HMAC-SHA256 with the webhook's secret over `"<t>.<body>"`.
//!
//! What it must never do: block the send path (it only reads and writes
//! the webhook tables), or follow redirects (the URL is what the
//! application registered).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clacks_core::{AttemptOutcome, UserId, now_ms};
use clacks_delivery::Connections;
use clacks_store::{AttemptRecord, DueDelivery, Store};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How the worker sends and retries.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Attempts per delivery, the first included; then it is failed.
    pub max_attempts: u32,
    /// A delivery older than this is failed after its next failed attempt.
    pub max_age: Duration,
    /// Delay before the first retry; it doubles per attempt (with jitter).
    pub backoff_base: Duration,
    /// Longest delay between two attempts.
    pub backoff_max: Duration,
    /// Timeout of one HTTP request (connect included).
    pub timeout: Duration,
    /// Requests in flight at once, for all webhooks together.
    pub concurrency: usize,
    /// How often to look for work made by other nodes (work of this node
    /// wakes the worker at once).
    pub poll_interval: Duration,
    /// How long finished deliveries (and their attempts) are kept.
    pub retention: Duration,
    /// How long after a message `message.unread_offline` is considered
    /// for each member who has not read it.
    pub unread_delay: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            unread_delay: Duration::from_secs(60),
        }
    }
}

/// Outbox rows routed per transaction.
const ROUTE_BATCH: u32 = 200;
/// Unread checks taken per round.
const UNREAD_BATCH: u32 = 100;
/// Least time between two rounds started by this node's commits: under a
/// stream of sends, one round (a few reads) per this interval at most,
/// whatever the send rate.
const MIN_WAKE_GAP: Duration = Duration::from_millis(20);
/// How often finished deliveries older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 300;

/// The `Clacks-Signature` header value of `body` sent at `timestamp`
/// (Unix seconds).
pub fn signature_header(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Hex HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    #[allow(clippy::expect_used)] // HMAC takes a key of any length.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The delay before attempt `attempts + 1`, after `attempts` failed:
/// `base * 2^(attempts-1)`, capped, with "equal jitter" (half fixed, half
/// random) so that many deliveries failing together do not retry together.
pub fn backoff(settings: &WebhookSettings, attempts: u32) -> Duration {
    use rand::Rng;
    let exponent = attempts.saturating_sub(1).min(30);
    let full = settings
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
}

/// The worker of one node. Several nodes may run one on a shared database.
pub struct WebhookWorker {
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    client: reqwest::Client,
    wake: Arc<Notify>,
    /// Who is connected to this node, for `message.unread_offline`.
    connections: Arc<Connections>,
    /// This worker's lease owner name: unique per start.
    owner: String,
}

impl WebhookWorker {
    /// `wake` is notified when this node commits an event
    /// ([`crate::ChatService::webhook_wake`]); `connections` are this
    /// node's, whose users count as online for `message.unread_offline`.
    pub fn new(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        wake: Arc<Notify>,
        connections: Arc<Connections>,
    ) -> clacks_core::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Clacks-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(settings.concurrency.max(1))
            .build()
            .map_err(|e| clacks_core::Error::Internal(format!("webhook HTTP client: {e}")))?;
        let owner = {
            use rand::Rng;
            let bytes: [u8; 12] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(WebhookWorker {
            store,
            settings,
            client,
            wake,
            connections,
            owner,
        })
    }

    /// Runs until `stop` completes; then abandons the requests in flight
    /// and releases their leases (they are retried, by this node after a
    /// restart or by another node).
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut last_prune: Option<Instant> = None;
        let concurrency = this.settings.concurrency.max(1);
        tokio::pin!(stop);
        loop {
            let round = tokio::time::Instant::now();
            if let Err(e) = this.route().await {
                tracing::warn!(error = %e, "routing webhook events failed; retrying");
            }
            if let Err(e) = this.unread_checks().await {
                tracing::warn!(error = %e, "checking unread messages for webhooks failed; retrying");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let before = now_ms()
                    - i64::try_from(this.settings.retention.as_millis()).unwrap_or(i64::MAX);
                if let Err(e) = this.store.prune_webhook_deliveries(before).await {
                    tracing::warn!(error = %e, "pruning old webhook deliveries failed");
                }
            }
            let free = concurrency.saturating_sub(in_flight.len());
            if free > 0 {
                match this.claim(free).await {
                    Ok(due) => {
                        for delivery in due {
                            let worker = this.clone();
                            in_flight.spawn(async move { worker.attempt(delivery).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            tokio::select! {
                () = &mut stop => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = this.wake.notified() => {
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep_until(round + MIN_WAKE_GAP) => {}
                    }
                }
                () = tokio::time::sleep(this.settings.poll_interval) => {}
            }
        }
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        if let Err(e) = this.store.release_webhook_leases(&this.owner).await {
            tracing::warn!(error = %e, "releasing webhook leases failed; they expire by themselves");
        }
    }

    async fn route(&self) -> clacks_core::Result<()> {
        let delay = i64::try_from(self.settings.unread_delay.as_millis()).unwrap_or(i64::MAX / 2);
        while self.store.route_webhook_outbox(ROUTE_BATCH, delay).await? >= ROUTE_BATCH as usize {}
        Ok(())
    }

    /// `message.unread_offline`: for each due check, the members who have
    /// not read the message and are not online on any node (presence, as
    /// this node sees it).
    async fn unread_checks(&self) -> clacks_core::Result<()> {
        loop {
            let due = self.store.due_unread_checks(now_ms(), UNREAD_BATCH).await?;
            for check in &due {
                let offline: Vec<UserId> = self
                    .store
                    .unread_members(check)
                    .await?
                    .into_iter()
                    .filter(|user| !self.connections.presence().is_online(user))
                    .collect();
                self.store.complete_unread_check(check, &offline).await?;
            }
            if due.len() < UNREAD_BATCH as usize {
                return Ok(());
            }
        }
    }

    async fn claim(&self, limit: usize) -> clacks_core::Result<Vec<DueDelivery>> {
        let now = now_ms();
        // Longer than one request can take, so a live attempt keeps it.
        let lease = self.settings.timeout + Duration::from_secs(30);
        let lease_until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.store
            .claim_webhook_deliveries(
                &self.owner,
                now,
                lease_until,
                u32::try_from(limit).unwrap_or(u32::MAX),
            )
            .await
    }

    /// Sends one delivery once and records what happened.
    async fn attempt(&self, delivery: DueDelivery) {
        let attempt = delivery.attempts.saturating_add(1);
        let attempted_at = now_ms();
        let timestamp = attempted_at / 1000;
        let started = Instant::now();
        let sent = self
            .client
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("clacks-delivery", &delivery.delivery_id)
            .header("clacks-attempt", attempt.to_string())
            .header(
                "clacks-signature",
                signature_header(delivery.secret.as_str(), timestamp, &delivery.body),
            )
            .body(delivery.body.clone())
            .send()
            .await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status_code, error) = match sent {
            Ok(response) => {
                let status = response.status();
                let error = (!status.is_success()).then(|| format!("HTTP {status}"));
                (Some(status.as_u16()), error)
            }
            Err(e) => (e.status().map(|s| s.as_u16()), Some(request_error(&e))),
        };
        let delivered = error.is_none();
        let age_ms = attempted_at - delivery.created_at;
        let too_old =
            age_ms >= i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX);
        let outcome = if delivered {
            AttemptOutcome::Delivered
        } else if attempt >= self.settings.max_attempts || too_old {
            AttemptOutcome::Failed
        } else {
            AttemptOutcome::Retrying
        };
        let delay = backoff(&self.settings, attempt);
        let record = AttemptRecord {
            attempt,
            attempted_at,
            status_code,
            error,
            duration_ms,
            outcome,
            next_attempt_at: now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
        };
        static SENT: std::sync::OnceLock<[metrics::Counter; 3]> = std::sync::OnceLock::new();
        let counters = SENT.get_or_init(|| {
            [
                AttemptOutcome::Delivered,
                AttemptOutcome::Retrying,
                AttemptOutcome::Failed,
            ]
            .map(|o| metrics::counter!("clacks_webhook_attempts_total", "outcome" => o.as_str()))
        });
        counters[outcome as usize].increment(1);
        match self
            .store
            .finish_webhook_attempt(delivery.id, &self.owner, &record)
            .await
        {
            Ok(true) => {
                if outcome == AttemptOutcome::Failed {
                    tracing::warn!(
                        webhook = delivery.webhook_id,
                        delivery = %delivery.delivery_id,
                        attempts = attempt,
                        "webhook delivery failed for good"
                    );
                }
            }
            Ok(false) => tracing::info!(
                delivery = %delivery.delivery_id,
                "webhook attempt not recorded: the webhook was deleted meanwhile, or the attempt \
                 outlived its lease (another node retries it)"
            ),
            Err(e) => tracing::warn!(
                delivery = %delivery.delivery_id,
                error = %e,
                "recording a webhook attempt failed; its lease expires and it is retried"
            ),
        }
    }
}

/// A short reason for a request that got no answer.
fn request_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect not followed"
    } else {
        "request failed"
    };
    // The source chain says why (refused, DNS, TLS); the URL is known.
    let mut why = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        why = inner.to_string();
        source = inner.source();
    }
    let text = if why.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {why}")
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign("secret", 1_700_000_000, r#"{"a":1}"#),
            "49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let settings = WebhookSettings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..WebhookSettings::default()
        };
        for (attempts, full) in [(1u32, 1u64), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let delay = backoff(&settings, attempts);
            assert!(
                delay >= Duration::from_millis(full * 500),
                "{attempts}: {delay:?}"
            );
            assert!(delay <= Duration::from_secs(full), "{attempts}: {delay:?}");
        }
    }
}
