//! Webhook storage: the registrations, the outbox, the deliveries and their
//! attempts ([`WebhookStore`]), written once for every backend by
//! [`webhook_store!`], expanded next to `sql_store!` in each backend module
//! (it uses that module's row helpers and statement rewriting).
//!
//! Why an outbox written in the event's own transaction, and not a worker
//! reading the event log behind a cursor: the event log has no global
//! order to keep a cursor in (seqs are per channel; an AUTO_INCREMENT or
//! sequence id commits out of order on MySQL and PostgreSQL, so a cursor
//! would skip a row that commits late), and deleting a channel deletes its
//! log, while `channel.deleted` itself is never stored there. A row in the
//! same transaction commits exactly when the event does: a crash before the
//! commit loses both, a crash after keeps both. Its cost on the send path
//! is one small indexed read per transaction when no webhook is enabled
//! (a group-committed batch of messages pays it once), and one multi-row
//! INSERT per transaction when some are; matching events to webhooks,
//! signing and sending all happen later, in the worker.
//!
//! Several nodes share the work safely: the outbox is routed with `SELECT
//! ... FOR UPDATE SKIP LOCKED` (SQLite has one writer), and a delivery is
//! claimed by a conditional `UPDATE` that sets a lease (owner and expiry)
//! only if no other lease is live, so one node sends a given attempt; a
//! node that dies mid-attempt leaves a lease that expires, and another
//! node retries it.

use async_trait::async_trait;
use clacks_core::{
    AttemptOutcome, ChannelId, Result, Webhook, WebhookAttempt, WebhookEventType, WebhookSecret,
    WebhookUrl,
};

/// A webhook to register.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: WebhookUrl,
    pub secret: WebhookSecret,
    /// Empty: every event type.
    pub event_types: Vec<WebhookEventType>,
    /// `None`: every channel.
    pub channel_ids: Option<Vec<ChannelId>>,
    pub enabled: bool,
}

/// Changes to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<WebhookUrl>,
    pub secret: Option<WebhookSecret>,
    pub event_types: Option<Vec<WebhookEventType>>,
    /// `Some(None)`: every channel.
    pub channel_ids: Option<Option<Vec<ChannelId>>>,
    pub enabled: Option<bool>,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The row id (for [`WebhookStore::finish_webhook_attempt`]).
    pub id: i64,
    pub webhook_id: i64,
    /// The `Clacks-Delivery` header: the same on every attempt.
    pub delivery_id: String,
    /// The webhook's URL and secret as they are now.
    pub url: String,
    pub secret: WebhookSecret,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: i64,
}

/// What one attempt did, and what happens next.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    /// When to try again (with [`AttemptOutcome::Retrying`]).
    pub next_attempt_at: i64,
}

/// A due `message.unread_offline` check of one message.
#[derive(Debug, Clone)]
pub struct UnreadCheck {
    pub id: i64,
    pub channel_id: ChannelId,
    pub seq: i64,
    pub message_id: i64,
    /// The sender's id, `""` for a system message.
    pub sender: String,
    /// The `message.created` data (`{"message": ...}`).
    pub data: String,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, new: &NewWebhook) -> Result<Webhook>;
    /// Every webhook, by id.
    async fn webhooks(&self) -> Result<Vec<Webhook>>;
    /// `NotFound(Webhook)` when there is none with this id.
    async fn webhook(&self, id: i64) -> Result<Webhook>;
    async fn update_webhook(&self, id: i64, patch: &WebhookPatch) -> Result<Webhook>;
    /// Deletes the webhook with its deliveries and attempts.
    async fn delete_webhook(&self, id: i64) -> Result<()>;
    /// The webhook's newest attempts first, at most `limit`.
    async fn webhook_attempts(&self, id: i64, limit: u32) -> Result<Vec<WebhookAttempt>>;

    /// Moves up to `limit` outbox rows into one delivery per webhook that
    /// wants the event (none: the row is dropped); returns how many rows
    /// it took. Safe to run on several nodes at once. A `message.created`
    /// that some webhook wants `message.unread_offline` of also schedules
    /// an [`UnreadCheck`], due `unread_delay_ms` after the message.
    async fn route_webhook_outbox(&self, limit: u32, unread_delay_ms: i64) -> Result<usize>;
    /// Up to `limit` unread checks due at `now`, oldest first.
    async fn due_unread_checks(&self, now: i64, limit: u32) -> Result<Vec<UnreadCheck>>;
    /// The members who have not read the check's message (its sender
    /// excepted); none once the message is deleted.
    async fn unread_members(&self, check: &UnreadCheck) -> Result<Vec<clacks_core::UserId>>;
    /// Deletes the check and, in the same transaction, records a
    /// `message.unread_offline` delivery for each of `users` to each
    /// webhook that wants it; returns how many, 0 when another node
    /// completed it first.
    async fn complete_unread_check(
        &self,
        check: &UnreadCheck,
        users: &[clacks_core::UserId],
    ) -> Result<usize>;
    /// Claims up to `limit` pending deliveries that are due at `now` and
    /// leased by nobody, leasing them to `owner` until `lease_until`.
    async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>>;
    /// Records an attempt on a delivery `owner` holds the lease of, and
    /// releases it; false (nothing recorded) when the lease was lost.
    async fn finish_webhook_attempt(
        &self,
        delivery: i64,
        owner: &str,
        record: &AttemptRecord,
    ) -> Result<bool>;
    /// Gives up `owner`'s leases (a worker stopping), so the deliveries
    /// are due again at once rather than when the leases expire.
    async fn release_webhook_leases(&self, owner: &str) -> Result<()>;
    /// Deletes finished (delivered or failed) deliveries last changed
    /// before `before`, with their attempts; returns how many.
    async fn prune_webhook_deliveries(&self, before: i64) -> Result<u64>;
}

/// Columns of `webhooks w`, in the order `webhook_row` reads them.
macro_rules! webhook_columns {
    () => {
        "w.id, w.url, w.secret, w.event_types, w.channel_ids, w.enabled, w.created_at, w.updated_at"
    };
}

macro_rules! webhook_store {
    ($store:ident, $db:ty, $backend:expr) => {
        fn webhook_row(row: &DbRow) -> clacks_core::Result<clacks_core::Webhook> {
            let event_types: Vec<String> = serde_json::from_str(&text(row, 3)?).unwrap_or_default();
            let channel_ids = opt_text(row, 4)?
                .map(|raw| serde_json::from_str::<Vec<i64>>(&raw).unwrap_or_default())
                .map(|ids| ids.into_iter().map(clacks_core::ChannelId).collect());
            Ok(clacks_core::Webhook {
                id: int(row, 0)?,
                url: text(row, 1)?,
                secret: clacks_core::WebhookSecret::from_trusted(text(row, 2)?),
                event_types: event_types
                    .iter()
                    .filter_map(|t| clacks_core::WebhookEventType::parse(t).ok())
                    .collect(),
                channel_ids,
                enabled: int(row, 5)? != 0,
                created_at: int(row, 6)?,
                updated_at: int(row, 7)?,
            })
        }

        fn event_types_text(types: &[clacks_core::WebhookEventType]) -> String {
            serde_json::Value::from(types.iter().map(|t| t.as_str()).collect::<Vec<_>>()).to_string()
        }

        fn channel_ids_text(channels: Option<&[clacks_core::ChannelId]>) -> Option<String> {
            channels.map(|ids| serde_json::Value::from(ids.iter().map(|c| c.0).collect::<Vec<_>>()).to_string())
        }

        impl $store {
            /// Writes the outbox rows of `events` in the transaction that
            /// commits them (see the module documentation of `webhooks`):
            /// nothing, after one indexed read, when no webhook is enabled.
            async fn webhook_outbox(
                tx: &mut sqlx::Transaction<'_, $db>,
                events: &[clacks_core::ChannelEvent],
            ) -> clacks_core::Result<()> {
                if events.is_empty() || !Self::any_webhook_enabled(tx).await? {
                    return Ok(());
                }
                Self::webhook_outbox_rows(tx, events).await
            }

            /// Whether the outbox has anyone to feed, read in the
            /// transaction that would write to it (so a webhook enabled on
            /// another node is seen by the next commit).
            async fn any_webhook_enabled(tx: &mut sqlx::Transaction<'_, $db>) -> clacks_core::Result<bool> {
                let any = sqlx::query("SELECT id FROM webhooks WHERE enabled = 1 LIMIT 1")
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(any.is_some())
            }

            /// The outbox rows of `events`, written unconditionally: for a
            /// caller that checked [`Self::any_webhook_enabled`] first
            /// because building the events costs something.
            async fn webhook_outbox_rows(
                tx: &mut sqlx::Transaction<'_, $db>,
                events: &[clacks_core::ChannelEvent],
            ) -> clacks_core::Result<()> {
                let rows: Vec<(&'static str, &clacks_core::ChannelEvent, String)> = events
                    .iter()
                    .filter_map(|event| {
                        clacks_core::webhook::webhook_data(event).map(|(t, data)| (t.as_str(), event, data.to_string()))
                    })
                    .collect();
                for chunk in rows.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO webhook_outbox (event_type, channel_id, seq, data, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, (event_type, event, data)| {
                        row.push_bind(*event_type)
                            .push_bind(event.channel_id.0)
                            .push_bind(event.seq)
                            .push_bind(data.clone())
                            .push_bind(event.at);
                    });
                    insert.build().execute(&mut **tx).await.map_err(db_error)?;
                }
                Ok(())
            }

            async fn webhook_in<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                id: i64,
            ) -> clacks_core::Result<clacks_core::Webhook> {
                let row = sqlx::query(&q(concat!("SELECT ", webhook_columns!(), " FROM webhooks w WHERE w.id = $1")))
                    .bind(id)
                    .fetch_optional(executor)
                    .await
                    .map_err(db_error)?
                    .ok_or(clacks_core::Error::NotFound(clacks_core::Entity::Webhook))?;
                webhook_row(&row)
            }
        }

        #[async_trait::async_trait]
        impl crate::webhooks::WebhookStore for $store {
            async fn create_webhook(&self, new: &crate::webhooks::NewWebhook) -> clacks_core::Result<clacks_core::Webhook> {
                let now = clacks_core::now_ms();
                let mut tx = self.begin_write().await?;
                let sql = if $backend.has_returning() {
                    q("INSERT INTO webhooks (url, secret, event_types, channel_ids, enabled, created_at, updated_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
                } else {
                    q("INSERT INTO webhooks (url, secret, event_types, channel_ids, enabled, created_at, updated_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7)")
                };
                let query = sqlx::query(&sql)
                    .bind(new.url.as_str())
                    .bind(new.secret.as_str())
                    .bind(event_types_text(&new.event_types))
                    .bind(channel_ids_text(new.channel_ids.as_deref()))
                    .bind(i64::from(new.enabled))
                    .bind(now)
                    .bind(now);
                let id = if $backend.has_returning() {
                    let row = query.fetch_one(&mut *tx).await.map_err(db_error)?;
                    int(&row, 0)?
                } else {
                    query.execute(&mut *tx).await.map_err(db_error)?;
                    Self::last_insert_id(&mut tx).await?
                };
                let webhook = Self::webhook_in(&mut *tx, id).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(webhook)
            }

            async fn webhooks(&self) -> clacks_core::Result<Vec<clacks_core::Webhook>> {
                let rows = sqlx::query(concat!("SELECT ", webhook_columns!(), " FROM webhooks w ORDER BY w.id")).fetch_all(&self.read).await.map_err(db_error)?;
                rows.iter().map(webhook_row).collect()
            }

            async fn webhook(&self, id: i64) -> clacks_core::Result<clacks_core::Webhook> {
                Self::webhook_in(&self.read, id).await
            }

            async fn update_webhook(
                &self,
                id: i64,
                patch: &crate::webhooks::WebhookPatch,
            ) -> clacks_core::Result<clacks_core::Webhook> {
                let mut tx = self.begin_write().await?;
                let before = Self::webhook_in(&mut *tx, id).await?;
                let url = patch.url.as_ref().map_or(before.url.as_str(), |u| u.as_str());
                let secret = patch.secret.as_ref().unwrap_or(&before.secret);
                let event_types = patch.event_types.as_deref().unwrap_or(&before.event_types);
                let channel_ids = match &patch.channel_ids {
                    Some(ids) => ids.as_deref(),
                    None => before.channel_ids.as_deref(),
                };
                sqlx::query(&q(
                    "UPDATE webhooks SET url = $1, secret = $2, event_types = $3, channel_ids = $4, \
                     enabled = $5, updated_at = $6 WHERE id = $7",
                ))
                .bind(url)
                .bind(secret.as_str())
                .bind(event_types_text(event_types))
                .bind(channel_ids_text(channel_ids))
                .bind(i64::from(patch.enabled.unwrap_or(before.enabled)))
                .bind(clacks_core::now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                let webhook = Self::webhook_in(&mut *tx, id).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(webhook)
            }

            async fn delete_webhook(&self, id: i64) -> clacks_core::Result<()> {
                let mut tx = self.begin_write().await?;
                // Children first: MySQL checks foreign keys per statement.
                for statement in [
                    "DELETE FROM webhook_attempts WHERE webhook_id = $1",
                    "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
                ] {
                    sqlx::query(&q(statement)).bind(id).execute(&mut *tx).await.map_err(db_error)?;
                }
                let deleted = sqlx::query(&q("DELETE FROM webhooks WHERE id = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Err(clacks_core::Error::NotFound(clacks_core::Entity::Webhook));
                }
                tx.commit().await.map_err(db_error)?;
                Ok(())
            }

            async fn webhook_attempts(&self, id: i64, limit: u32) -> clacks_core::Result<Vec<clacks_core::WebhookAttempt>> {
                Self::webhook_in(&self.read, id).await?;
                let rows = sqlx::query(&q(
                    "SELECT d.delivery_id, d.event_type, d.channel_id, d.seq, a.attempt, a.attempted_at, \
                     a.status_code, a.error, a.duration_ms, a.outcome \
                     FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery \
                     WHERE a.webhook_id = $1 ORDER BY a.id DESC LIMIT $2",
                ))
                .bind(id)
                .bind(i64::from(limit.clamp(1, crate::MAX_PAGE)))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(clacks_core::WebhookAttempt {
                            delivery_id: text(row, 0)?,
                            event_type: text(row, 1)?,
                            channel_id: opt_int(row, 2)?.map(clacks_core::ChannelId),
                            seq: opt_int(row, 3)?,
                            attempt: u32::try_from(int(row, 4)?).unwrap_or(u32::MAX),
                            attempted_at: int(row, 5)?,
                            status_code: opt_int(row, 6)?.and_then(|s| u16::try_from(s).ok()),
                            error: opt_text(row, 7)?,
                            duration_ms: int(row, 8)?,
                            outcome: clacks_core::AttemptOutcome::from_stored(&text(row, 9)?),
                        })
                    })
                    .collect()
            }

            async fn route_webhook_outbox(&self, limit: u32, unread_delay_ms: i64) -> clacks_core::Result<usize> {
                // Looked at first without a write transaction: on SQLite
                // that would take the one write lock every send needs.
                let any = sqlx::query("SELECT id FROM webhook_outbox LIMIT 1")
                    .fetch_optional(&self.read)
                    .await
                    .map_err(db_error)?;
                if any.is_none() {
                    return Ok(0);
                }
                let mut connection = self.write.acquire().await.map_err(db_error)?;
                if $backend == crate::Backend::MySql {
                    // READ COMMITTED: InnoDB then locks only the rows it
                    // returns, not the gap after the last one, which would
                    // hold up the INSERT of every new outbox row (the send
                    // path) until this transaction ends.
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(&mut *connection)
                        .await
                        .map_err(db_error)?;
                }
                let mut tx = Self::begin_batch_on(&mut connection).await?;
                // SKIP LOCKED: another node routing at the same time takes
                // other rows instead of waiting for these (SQLite has one
                // writer, and no such clause).
                let select = match $backend {
                    crate::Backend::Sqlite => {
                        "SELECT id, event_type, channel_id, seq, data, created_at FROM webhook_outbox ORDER BY id LIMIT $1"
                    }
                    crate::Backend::MySql | crate::Backend::Postgres => {
                        "SELECT id, event_type, channel_id, seq, data, created_at FROM webhook_outbox ORDER BY id LIMIT $1 \
                         FOR UPDATE SKIP LOCKED"
                    }
                };
                let rows = sqlx::query(&q(select))
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if rows.is_empty() {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok(0);
                }
                let webhooks = sqlx::query(concat!("SELECT ", webhook_columns!(), " FROM webhooks w WHERE w.enabled = 1 ORDER BY w.id"))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(webhook_row)
                    .collect::<clacks_core::Result<Vec<_>>>()?;
                let now = clacks_core::now_ms();
                // (webhook, delivery id, type, channel, seq, body)
                let mut deliveries: Vec<(i64, String, String, Option<i64>, Option<i64>, String)> = Vec::new();
                let mut ids = Vec::with_capacity(rows.len());
                // (channel, seq, message id, sender, data, due at)
                let mut checks: Vec<(i64, i64, i64, String, String, i64)> = Vec::new();
                for row in &rows {
                    ids.push(int(row, 0)?);
                    let event_type = text(row, 1)?;
                    let channel = opt_int(row, 2)?;
                    let seq = opt_int(row, 3)?;
                    let data: serde_json::Value = serde_json::from_str(&text(row, 4)?).unwrap_or_default();
                    let created_at = int(row, 5)?;
                    let Ok(parsed) = clacks_core::WebhookEventType::parse(&event_type) else {
                        continue;
                    };
                    if parsed == clacks_core::WebhookEventType::MessageCreated
                        && webhooks.iter().any(|w| {
                            w.wants(clacks_core::WebhookEventType::MessageUnreadOffline, clacks_core::ChannelId(channel.unwrap_or(0)))
                        })
                    {
                        let message = &data["message"];
                        if let (Some(channel), Some(seq), Some(message_id)) = (channel, seq, message["id"].as_i64()) {
                            let sender = message["senderId"].as_str().unwrap_or_default().to_owned();
                            checks.push((channel, seq, message_id, sender, data.to_string(), created_at + unread_delay_ms));
                        }
                    }
                    for webhook in &webhooks {
                        if !webhook.wants(parsed, clacks_core::ChannelId(channel.unwrap_or(0))) {
                            continue;
                        }
                        let delivery_id = uuid::Uuid::new_v4().to_string();
                        let body = clacks_core::webhook::webhook_body(
                            &delivery_id,
                            &event_type,
                            created_at,
                            channel.map(clacks_core::ChannelId),
                            seq,
                            data.clone(),
                        );
                        deliveries.push((webhook.id, delivery_id, event_type.clone(), channel, seq, body));
                    }
                }
                for chunk in deliveries.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO webhook_deliveries (webhook_id, delivery_id, event_type, channel_id, seq, body, \
                         state, attempts, next_attempt_at, lease_until, created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, (webhook, delivery_id, event_type, channel, seq, body)| {
                        row.push_bind(*webhook)
                            .push_bind(delivery_id.clone())
                            .push_bind(event_type.clone())
                            .push_bind(*channel)
                            .push_bind(*seq)
                            .push_bind(body.clone())
                            .push_bind("pending")
                            .push_bind(0_i64)
                            .push_bind(now)
                            .push_bind(0_i64)
                            .push_bind(now)
                            .push_bind(now);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                for chunk in checks.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO webhook_unread_checks (channel_id, seq, message_id, sender, data, due_at) ",
                    );
                    insert.push_values(chunk, |mut row, (channel, seq, message_id, sender, data, due_at)| {
                        row.push_bind(*channel)
                            .push_bind(*seq)
                            .push_bind(*message_id)
                            .push_bind(sender.clone())
                            .push_bind(data.clone())
                            .push_bind(*due_at);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                for chunk in ids.chunks(500) {
                    let mut delete = sqlx::QueryBuilder::<$db>::new("DELETE FROM webhook_outbox WHERE id IN (");
                    let mut list = delete.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    delete.push(")");
                    delete.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(ids.len())
            }

            async fn due_unread_checks(&self, now: i64, limit: u32) -> clacks_core::Result<Vec<crate::webhooks::UnreadCheck>> {
                let rows = sqlx::query(&q(
                    "SELECT id, channel_id, seq, message_id, sender, data FROM webhook_unread_checks \
                     WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2",
                ))
                .bind(now)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(crate::webhooks::UnreadCheck {
                            id: int(row, 0)?,
                            channel_id: clacks_core::ChannelId(int(row, 1)?),
                            seq: int(row, 2)?,
                            message_id: int(row, 3)?,
                            sender: text(row, 4)?,
                            data: text(row, 5)?,
                        })
                    })
                    .collect()
            }

            async fn unread_members(&self, check: &crate::webhooks::UnreadCheck) -> clacks_core::Result<Vec<clacks_core::UserId>> {
                let rows = sqlx::query(&q(
                    "SELECT mb.user_id FROM members mb JOIN messages m ON m.channel_id = mb.channel_id \
                     WHERE m.id = $1 AND m.deleted_at IS NULL AND mb.channel_id = $2 AND mb.last_read_seq < $3 \
                     AND mb.user_id <> $4 ORDER BY mb.user_id",
                ))
                .bind(check.message_id)
                .bind(check.channel_id.0)
                .bind(check.seq)
                .bind(check.sender.as_str())
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter().map(|row| text(row, 0).map(clacks_core::UserId::from_trusted)).collect()
            }

            async fn complete_unread_check(
                &self,
                check: &crate::webhooks::UnreadCheck,
                users: &[clacks_core::UserId],
            ) -> clacks_core::Result<usize> {
                let mut tx = self.begin_write().await?;
                // Whoever deletes the check sends it: another node that
                // read it too finds nothing to delete.
                let taken = sqlx::query(&q("DELETE FROM webhook_unread_checks WHERE id = $1"))
                    .bind(check.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if taken.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok(0);
                }
                let webhooks = sqlx::query(concat!("SELECT ", webhook_columns!(), " FROM webhooks w WHERE w.enabled = 1 ORDER BY w.id"))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .iter()
                    .map(webhook_row)
                    .collect::<clacks_core::Result<Vec<_>>>()?;
                let event_type = clacks_core::WebhookEventType::MessageUnreadOffline;
                let wanting: Vec<i64> = webhooks
                    .iter()
                    .filter(|w| w.wants(event_type, check.channel_id))
                    .map(|w| w.id)
                    .collect();
                let data: serde_json::Value = serde_json::from_str(&check.data).unwrap_or_default();
                let now = clacks_core::now_ms();
                let mut deliveries: Vec<(i64, String, String)> = Vec::new();
                for user in users {
                    let mut user_data = data.clone();
                    if let Some(object) = user_data.as_object_mut() {
                        object.insert("userId".to_owned(), serde_json::Value::from(user.as_str()));
                    }
                    for webhook in &wanting {
                        let delivery_id = uuid::Uuid::new_v4().to_string();
                        let body = clacks_core::webhook::webhook_body(
                            &delivery_id,
                            event_type.as_str(),
                            now,
                            Some(check.channel_id),
                            Some(check.seq),
                            user_data.clone(),
                        );
                        deliveries.push((*webhook, delivery_id, body));
                    }
                }
                for chunk in deliveries.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO webhook_deliveries (webhook_id, delivery_id, event_type, channel_id, seq, body, \
                         state, attempts, next_attempt_at, lease_until, created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, (webhook, delivery_id, body)| {
                        row.push_bind(*webhook)
                            .push_bind(delivery_id.clone())
                            .push_bind(event_type.as_str())
                            .push_bind(check.channel_id.0)
                            .push_bind(check.seq)
                            .push_bind(body.clone())
                            .push_bind("pending")
                            .push_bind(0_i64)
                            .push_bind(now)
                            .push_bind(0_i64)
                            .push_bind(now)
                            .push_bind(now);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(deliveries.len())
            }

            async fn claim_webhook_deliveries(
                &self,
                owner: &str,
                now: i64,
                lease_until: i64,
                limit: u32,
            ) -> clacks_core::Result<Vec<crate::webhooks::DueDelivery>> {
                let candidates = sqlx::query(&q(
                    "SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND d.lease_until <= $2 AND w.enabled = 1 \
                     ORDER BY d.next_attempt_at, d.id LIMIT $3",
                ))
                .bind(now)
                .bind(now)
                .bind(i64::from(limit.max(1)))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                let mut claimed = Vec::with_capacity(candidates.len());
                for row in &candidates {
                    let id = int(row, 0)?;
                    // Only one node's UPDATE finds the lease expired.
                    let taken = sqlx::query(&q(
                        "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
                         WHERE id = $3 AND state = 'pending' AND lease_until <= $4",
                    ))
                    .bind(owner)
                    .bind(lease_until)
                    .bind(id)
                    .bind(now)
                    .execute(&self.write)
                    .await
                    .map_err(db_error)?;
                    if taken.rows_affected() == 1 {
                        claimed.push(id);
                    }
                }
                let mut due = Vec::with_capacity(claimed.len());
                for id in claimed {
                    let row = sqlx::query(&q(
                        "SELECT d.id, d.webhook_id, d.delivery_id, w.url, w.secret, d.body, d.attempts, d.created_at \
                         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1",
                    ))
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(db_error)?;
                    // Gone: its webhook was deleted meanwhile.
                    let Some(row) = row else { continue };
                    due.push(crate::webhooks::DueDelivery {
                        id: int(&row, 0)?,
                        webhook_id: int(&row, 1)?,
                        delivery_id: text(&row, 2)?,
                        url: text(&row, 3)?,
                        secret: clacks_core::WebhookSecret::from_trusted(text(&row, 4)?),
                        body: text(&row, 5)?,
                        attempts: u32::try_from(int(&row, 6)?).unwrap_or(u32::MAX),
                        created_at: int(&row, 7)?,
                    });
                }
                Ok(due)
            }

            async fn finish_webhook_attempt(
                &self,
                delivery: i64,
                owner: &str,
                record: &crate::webhooks::AttemptRecord,
            ) -> clacks_core::Result<bool> {
                let state = match record.outcome {
                    clacks_core::AttemptOutcome::Delivered => "delivered",
                    clacks_core::AttemptOutcome::Retrying => "pending",
                    clacks_core::AttemptOutcome::Failed => "failed",
                };
                let mut tx = self.begin_write().await?;
                let updated = sqlx::query(&q(
                    "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, \
                     lease_owner = NULL, lease_until = 0, updated_at = $4 WHERE id = $5 AND lease_owner = $6",
                ))
                .bind(state)
                .bind(i64::from(record.attempt))
                .bind(record.next_attempt_at)
                .bind(clacks_core::now_ms())
                .bind(delivery)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if updated.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok(false);
                }
                sqlx::query(&q(
                    "INSERT INTO webhook_attempts (delivery, webhook_id, attempt, attempted_at, status_code, error, duration_ms, outcome) \
                     SELECT id, webhook_id, $1, $2, $3, $4, $5, $6 FROM webhook_deliveries WHERE id = $7",
                ))
                .bind(i64::from(record.attempt))
                .bind(record.attempted_at)
                .bind(record.status_code.map(i64::from))
                .bind(record.error.as_deref())
                .bind(record.duration_ms)
                .bind(record.outcome.as_str())
                .bind(delivery)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(true)
            }

            async fn release_webhook_leases(&self, owner: &str) -> clacks_core::Result<()> {
                sqlx::query(&q("UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1"))
                    .bind(owner)
                    .execute(&self.write)
                    .await
                    .map_err(db_error)?;
                Ok(())
            }

            async fn prune_webhook_deliveries(&self, before: i64) -> clacks_core::Result<u64> {
                let mut tx = self.begin_write().await?;
                sqlx::query(&q(
                    "DELETE FROM webhook_attempts WHERE delivery IN \
                     (SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND updated_at < $1)",
                ))
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                let pruned = sqlx::query(&q("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND updated_at < $1"))
                    .bind(before)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                tx.commit().await.map_err(db_error)?;
                Ok(pruned)
            }
        }
    };
}
