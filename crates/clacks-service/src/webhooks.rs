//! Webhook registrations, for the application's server (the management
//! API): input is parsed into domain values here, once. The worker that
//! sends the deliveries is [`crate::webhook_worker`].

use std::collections::BTreeSet;

use clacks_core::{
    ChannelId, Error, Result, Webhook, WebhookAttempt, WebhookEventType, WebhookSecret, WebhookUrl,
    webhook::WEBHOOK_MAX_CHANNELS,
};
use clacks_store::{NewWebhook, WebhookPatch};

use crate::service::ChatService;

/// A webhook to register, as the management API received it.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub url: String,
    /// `None`: a random secret is generated (returned with the webhook).
    pub secret: Option<String>,
    /// `None` or empty: every event type.
    pub event_types: Option<Vec<String>>,
    /// `None`: every channel.
    pub channel_ids: Option<Vec<i64>>,
    /// `None`: enabled.
    pub enabled: Option<bool>,
}

/// Changes to a webhook; a field left `None` is kept.
#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)`: every channel.
    pub channel_ids: Option<Option<Vec<i64>>>,
    pub enabled: Option<bool>,
}

/// Recent attempts one read returns at most.
pub const MAX_ATTEMPTS_PAGE: u32 = 200;

fn event_types(raw: Vec<String>) -> Result<Vec<WebhookEventType>> {
    let parsed: BTreeSet<WebhookEventType> = raw
        .iter()
        .map(|t| WebhookEventType::parse(t))
        .collect::<Result<_>>()?;
    Ok(parsed.into_iter().collect())
}

fn channel_ids(raw: Vec<i64>) -> Result<Vec<ChannelId>> {
    if raw.len() > WEBHOOK_MAX_CHANNELS {
        return Err(Error::invalid(
            "channelIds",
            format!("at most {WEBHOOK_MAX_CHANNELS} channels (or null for every channel)"),
        ));
    }
    if raw.iter().any(|id| *id <= 0) {
        return Err(Error::invalid(
            "channelIds",
            "channel ids are positive integers",
        ));
    }
    let unique: BTreeSet<i64> = raw.into_iter().collect();
    Ok(unique.into_iter().map(ChannelId).collect())
}

/// A fresh secret: 32 random bytes, hex, with a recognizable prefix.
fn generated_secret() -> WebhookSecret {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    WebhookSecret::from_trusted(format!("whsec_{hex}"))
}

impl ChatService {
    pub async fn admin_create_webhook(&self, input: WebhookInput) -> Result<Webhook> {
        let new = NewWebhook {
            url: WebhookUrl::parse(&input.url)?,
            secret: match input.secret {
                Some(secret) => WebhookSecret::parse(&secret)?,
                None => generated_secret(),
            },
            event_types: event_types(input.event_types.unwrap_or_default())?,
            channel_ids: input.channel_ids.map(channel_ids).transpose()?,
            enabled: input.enabled.unwrap_or(true),
        };
        self.store().create_webhook(&new).await
    }

    pub async fn admin_webhooks(&self) -> Result<Vec<Webhook>> {
        self.store().webhooks().await
    }

    pub async fn admin_webhook(&self, id: i64) -> Result<Webhook> {
        self.store().webhook(id).await
    }

    pub async fn admin_update_webhook(&self, id: i64, changes: WebhookChanges) -> Result<Webhook> {
        let patch = WebhookPatch {
            url: changes.url.as_deref().map(WebhookUrl::parse).transpose()?,
            secret: changes
                .secret
                .as_deref()
                .map(WebhookSecret::parse)
                .transpose()?,
            event_types: changes.event_types.map(event_types).transpose()?,
            channel_ids: changes
                .channel_ids
                .map(|ids| ids.map(channel_ids).transpose())
                .transpose()?,
            enabled: changes.enabled,
        };
        self.store().update_webhook(id, &patch).await
    }

    pub async fn admin_delete_webhook(&self, id: i64) -> Result<()> {
        self.store().delete_webhook(id).await
    }

    /// The webhook's most recent delivery attempts, newest first.
    pub async fn admin_webhook_attempts(
        &self,
        id: i64,
        limit: Option<u32>,
    ) -> Result<Vec<WebhookAttempt>> {
        let limit = limit.unwrap_or(50).clamp(1, MAX_ATTEMPTS_PAGE);
        self.store().webhook_attempts(id, limit).await
    }
}
