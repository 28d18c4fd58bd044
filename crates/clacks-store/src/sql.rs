//! The storage implementation, written once and instantiated for each sqlx
//! driver by [`sql_store!`]. A macro rather than generics: sqlx's generic
//! executor bounds would obscure every statement, while each instantiation
//! here is ordinary concrete code, type-checked per backend.
//!
//! Statements use `$n` placeholders in order (see `Backend::sql`). Strings
//! are read with `try_get_unchecked` because MySQL flags `utf8mb4_bin`
//! columns as binary, which sqlx's checked decode refuses for `String`.

/// Columns of `messages m`, in the order `message_row` reads them.
macro_rules! message_columns {
    () => {
        "m.id, m.channel_id, m.seq, m.sender, m.client_message_id, m.content, m.created_at, m.edited_at, m.deleted_at, \
         m.parent_id, m.reply_count, m.last_reply_at, m.mentions"
    };
}

/// Columns of `channels c`, in the order `channel_row` reads them.
macro_rules! channel_columns {
    () => {
        "c.id, c.display_name, c.metadata, c.last_seq, c.created_at, c.updated_at"
    };
}

/// Columns of `members mb`, in the order `member_row` reads them.
macro_rules! member_columns {
    () => {
        "mb.channel_id, mb.user_id, mb.role, mb.joined_at, mb.last_read_seq, mb.last_read_at"
    };
}

/// The two statements of a page of messages by seq where `m.$column = $1`,
/// newest first and oldest first, for `message_page`.
macro_rules! seq_page_statements {
    ($column:literal) => {
        [
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m WHERE m.",
                $column,
                " = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq DESC LIMIT $4"
            ),
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m WHERE m.",
                $column,
                " = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq ASC LIMIT $4"
            ),
        ]
    };
}

/// How long a read mark keeps absorbing later moves of the same member's
/// watermark. "Seen at" is then exact to within this window (never earlier
/// than the truth), and a member reading message by message adds one row
/// per window instead of one per message.
pub(crate) const READ_MARK_WINDOW_MS: i64 = 60_000;

/// MySQL/MariaDB: held while migrating, so that nodes starting together
/// on a fresh database apply the migrations once. sqlx takes a lock of its
/// own with `GET_LOCK(name, -1)`, which MariaDB answers at once with NULL
/// instead of waiting; this one waits up to 10 minutes. One lock per
/// database; its name hashed, as lock names are at most 64 characters.
pub(crate) const MYSQL_MIGRATION_LOCK: &str =
    "SELECT GET_LOCK(CONCAT('clacks-migrate:', SHA1(DATABASE())), 600)";
pub(crate) const MYSQL_MIGRATION_UNLOCK: &str =
    "SELECT RELEASE_LOCK(CONCAT('clacks-migrate:', SHA1(DATABASE())))";

/// The longest `Store::ping` (the readiness probe) waits for the database.
pub(crate) const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a send waits for the lookup of an earlier message with its
/// client message id before leaving that to its batch.
pub(crate) const CLIENT_ID_LOOKUP: std::time::Duration = std::time::Duration::from_millis(500);

macro_rules! sql_store {
    ($store:ident, $db:ty, $backend:expr, $migrator:expr, $read_begin:expr) => {
        use std::borrow::Cow;
        use std::collections::HashMap;

        use async_trait::async_trait;
        use clacks_core::{
            now_ms, Channel, ChannelEvent, ChannelId, ChannelPage, ChannelSummary, Entity, Error,
            EventPayload, MemberBatch, HistoryPage, MAX_REACTION_KEYS_PER_MESSAGE, Member, Message, MessageBody, MessageId, Metadata,
            Reaction, ReactionKey, ReadMark, Result, Role, SearchQuery, SeenBy, Sender, Seq, UserId,
        };
        use sqlx::{Row, Transaction};

        use crate::sql::READ_MARK_WINDOW_MS;
        use crate::{
            db_error, is_foreign_key_violation, is_unique_violation, Actor, AddedMember, Backend, ChannelPatch, DeletedChannel,
            MarkedRead, MembershipChange, MessageExtras, NewMessage, SearchHit, SearchIndexed, SearchPageRequest, SearchScope,
            Store, StoredMessage, BULK_CHUNK, MAX_PAGE,
        };

        type DbRow = <$db as sqlx::Database>::Row;
        type Pool = sqlx::Pool<$db>;

        /// Why a batch as a whole did not commit.
        enum BatchFailure {
            /// A client message id was stored concurrently elsewhere.
            Duplicate,
            /// The transaction could not even begin (nothing ran).
            NotBegun(Error),
            Failed(Error),
        }
        type Tx = Transaction<'static, $db>;

        fn int(row: &DbRow, i: usize) -> Result<i64> {
            row.try_get::<i64, _>(i).map_err(db_error)
        }

        fn opt_int(row: &DbRow, i: usize) -> Result<Option<i64>> {
            row.try_get::<Option<i64>, _>(i).map_err(db_error)
        }

        fn text(row: &DbRow, i: usize) -> Result<String> {
            row.try_get_unchecked::<String, _>(i).map_err(db_error)
        }

        fn opt_text(row: &DbRow, i: usize) -> Result<Option<String>> {
            row.try_get_unchecked::<Option<String>, _>(i).map_err(db_error)
        }

        fn sender_from(raw: String) -> Sender {
            if raw.is_empty() {
                Sender::System
            } else {
                Sender::User(UserId::from_trusted(raw))
            }
        }

        /// Reads `message_columns!()` starting at column `at`.
        fn message_row(row: &DbRow, at: usize) -> Result<Message> {
            Ok(Message {
                id: MessageId(int(row, at)?),
                channel_id: ChannelId(int(row, at + 1)?),
                seq: int(row, at + 2)?,
                sender: sender_from(text(row, at + 3)?),
                client_message_id: opt_text(row, at + 4)?,
                content: text(row, at + 5)?,
                created_at: int(row, at + 6)?,
                edited_at: opt_int(row, at + 7)?,
                deleted_at: opt_int(row, at + 8)?,
                parent_id: opt_int(row, at + 9)?.map(MessageId),
                reply_count: int(row, at + 10)?,
                last_reply_at: opt_int(row, at + 11)?,
                mentions: opt_text(row, at + 12)?
                    .and_then(|list| serde_json::from_str::<Vec<String>>(&list).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .map(UserId::from_trusted)
                    .collect(),
            })
        }

        /// Reads `channel_columns!()` starting at column `at`.
        fn channel_row(row: &DbRow, at: usize) -> Result<Channel> {
            Ok(Channel {
                id: ChannelId(int(row, at)?),
                display_name: text(row, at + 1)?,
                metadata: opt_text(row, at + 2)?.as_deref().and_then(Metadata::from_stored),
                last_seq: int(row, at + 3)?,
                created_at: int(row, at + 4)?,
                updated_at: int(row, at + 5)?,
            })
        }

        /// Reads `member_columns!()` starting at column `at`.
        fn member_row(row: &DbRow, at: usize) -> Result<Member> {
            Ok(Member {
                channel_id: ChannelId(int(row, at)?),
                user_id: UserId::from_trusted(text(row, at + 1)?),
                role: Role::from_trusted(text(row, at + 2)?),
                joined_at: int(row, at + 3)?,
                last_read_seq: int(row, at + 4)?,
                last_read_at: opt_int(row, at + 5)?,
            })
        }

        fn q(statement: &'static str) -> Cow<'static, str> {
            $backend.sql(statement)
        }

        /// What a stored `channel_updated` event keeps of the channel.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct ChannelSnapshot {
            display_name: String,
            metadata: Option<serde_json::Value>,
            created_at: i64,
        }

        /// The payload of a stored `members_joined` / `members_left`: the
        /// users only up to `MEMBER_BATCH_LISTED` (a larger list is in
        /// `member_batches`), so a replay reads one small row per request.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct StoredBatch {
            #[serde(default)]
            users: Vec<String>,
            count: u64,
            #[serde(default)]
            truncated: bool,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            role: Option<String>,
        }

        impl $store {
            /// One page, by seq, of the messages that `seq_page_statements!`
            /// selects by `key` (a channel's history, a parent's thread): the
            /// newest before a seq, or the oldest after one.
            async fn message_page(&self, [newest_first, oldest_first]: [&'static str; 2], key: i64, page: HistoryPage, limit: u32) -> Result<Vec<Message>> {
                let (statement, above, below) = match page {
                    HistoryPage::Before(before) => (newest_first, Seq::MIN, before.unwrap_or(Seq::MAX)),
                    HistoryPage::After(after) => (oldest_first, after, Seq::MAX),
                    HistoryPage::Between(after, before) => (oldest_first, after, before),
                };
                let rows = sqlx::query(&q(statement))
                    .bind(key)
                    .bind(above)
                    .bind(below)
                    .bind(page_limit(limit))
                    .fetch_all(&self.read)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(|r| message_row(r, 0)).collect()
            }

            async fn begin_write(&self) -> Result<Tx> {
                Self::begin_write_on(&self.write).await
            }

            async fn begin_write_on(pool: &Pool) -> Result<Tx> {
                // SQLite: a deferred transaction that later needs the write
                // lock fails at once with SQLITE_BUSY; take it up front.
                let tx = if $backend == Backend::Sqlite {
                    pool.begin_with("BEGIN IMMEDIATE").await
                } else {
                    pool.begin().await
                };
                tx.map_err(db_error)
            }

            /// A message batch's transaction. PostgreSQL: READ COMMITTED
            /// whatever the server's default, because a pipelined batch
            /// updates counter rows the previous batch committed after this
            /// one's first read, which REPEATABLE READ would refuse. (MySQL
            /// locking statements read the latest rows at any level.)
            async fn begin_batch_on(connection: &mut sqlx::pool::PoolConnection<$db>) -> Result<Transaction<'_, $db>> {
                let begin = match $backend {
                    Backend::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
                    Backend::Sqlite => "BEGIN IMMEDIATE",
                    Backend::MySql => "BEGIN",
                };
                sqlx::Connection::begin_with(&mut **connection, begin).await.map_err(db_error)
            }

            /// Starts the group-commit writer for messages: batches run on
            /// `batches` (at most `depth` at once), the rare one-by-one
            /// fallback on `pool`.
            fn message_batcher(batches: &Pool, pool: &Pool, depth: usize, insert_returning: bool) -> crate::batch::Batcher {
                // SQLite's batches share the one write connection with every
                // other write: taken per batch, not kept.
                let reachability = std::sync::Arc::new(crate::batch::Reachability::default());
                let batches = std::sync::Arc::new(crate::batch::KeptConnections::new(batches.clone(), $backend != Backend::Sqlite, reachability.clone()));
                let pool = pool.clone();
                crate::batch::Batcher::spawn(depth, reachability, move |batch, stage| {
                    Self::write_batch(batches.clone(), pool.clone(), insert_returning, batch, stage)
                })
            }

            /// A read-only transaction with one snapshot for all its reads.
            async fn begin_read(&self) -> Result<Tx> {
                self.read.begin_with($read_begin).await.map_err(db_error)
            }

            /// Takes the channel's next `count` seqs and returns the first.
            /// The update locks the channel row until commit, which is what
            /// serializes concurrent writers of one channel.
            async fn take_seqs(tx: &mut Tx, channel: ChannelId, count: i64) -> Result<Seq> {
                Self::take_seqs_of_many(tx, &[(channel, count)])
                    .await?
                    .get(&channel)
                    .copied()
                    .ok_or(Error::NotFound(Entity::Channel))
            }

            /// Which of `pairs` are memberships, as committed now. This is
            /// the read of the membership rule: run it while holding the
            /// channels' seq locks, which a removal takes too, so that the
            /// removal either committed before (and is seen here) or waits
            /// for this transaction (and its `member_left` takes a later seq).
            async fn memberships(
                tx: &mut Transaction<'_, $db>,
                pairs: &[(ChannelId, &UserId)],
            ) -> Result<std::collections::HashSet<(ChannelId, UserId)>> {
                let mut found = std::collections::HashSet::with_capacity(pairs.len());
                for chunk in pairs.chunks(200) {
                    let mut select = sqlx::QueryBuilder::<$db>::new("SELECT channel_id, user_id FROM members WHERE ");
                    for (n, (channel, user)) in chunk.iter().enumerate() {
                        if n > 0 {
                            select.push(" OR ");
                        }
                        select.push("(channel_id = ").push_bind(channel.0);
                        select.push(" AND user_id = ").push_bind(user.as_str().to_owned()).push(")");
                    }
                    select.push($backend.latest_rows());
                    for row in select.build().fetch_all(&mut **tx).await.map_err(db_error)? {
                        found.insert((ChannelId(int(&row, 0)?), UserId::from_trusted(text(&row, 1)?)));
                    }
                }
                Ok(found)
            }

            /// Refuses (`NotMember`) unless `user` is a member of `channel`;
            /// see [`Self::memberships`] for when to call it.
            async fn require_member_in(tx: &mut Tx, channel: ChannelId, user: &UserId) -> Result<()> {
                if Self::memberships(tx, &[(channel, user)]).await?.is_empty() {
                    return Err(Error::NotMember { user: user.clone(), channel });
                }
                Ok(())
            }

            /// Refuses a user's change to `message` unless they are a
            /// member of its channel (`NotMember`, checked first so that a
            /// non-member learns nothing about the message) and its sender.
            async fn require_author(tx: &mut Tx, message: &Message, by: Actor<'_>, verb: &str) -> Result<()> {
                let Actor::User(user) = by else { return Ok(()) };
                Self::require_member_in(tx, message.channel_id, user).await?;
                if message.sender.user_id() != Some(user) {
                    return Err(Error::forbidden(format!("only the sender may {verb} a message")));
                }
                Ok(())
            }

            /// The batch's messages whose sender is a user who is not a
            /// member of their channel (read under the seq locks).
            async fn non_members(
                tx: &mut Transaction<'_, $db>,
                batch: &[crate::batch::Pending],
                by_channel: &[(ChannelId, Vec<usize>)],
            ) -> Result<std::collections::HashSet<usize>> {
                let senders: Vec<(usize, ChannelId, &UserId)> = by_channel
                    .iter()
                    .flat_map(|(channel, members)| {
                        members.iter().filter_map(move |i| batch[*i].new.sender.user_id().map(|user| (*i, *channel, user)))
                    })
                    .collect();
                let mut pairs: Vec<(ChannelId, &UserId)> = senders.iter().map(|(_, channel, user)| (*channel, *user)).collect();
                pairs.sort_unstable();
                pairs.dedup();
                let found = Self::memberships(tx, &pairs).await?;
                Ok(senders
                    .into_iter()
                    .filter(|(_, channel, user)| !found.contains(&(*channel, (*user).clone())))
                    .map(|(i, _, _)| i)
                    .collect())
            }
            /// `UPDATE` that adds each channel's count to its seq counter
            /// (callers add `RETURNING` where the backend has it).
            fn bump_seqs(chunk: &[(ChannelId, i64)]) -> sqlx::QueryBuilder<'_, $db> {
                let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE channels SET last_seq = last_seq + CASE id");
                for (channel, count) in chunk {
                    update.push(" WHEN ").push_bind(channel.0).push(" THEN ").push_bind(*count);
                }
                update.push(" ELSE 0 END WHERE id IN (");
                let mut ids = update.separated(", ");
                for (channel, _) in chunk {
                    ids.push_bind(channel.0);
                }
                update.push(")");
                update
            }

            /// Runs a batch's multi-row message INSERT; returns the
            /// `(id, channel, seq)` rows of its `RETURNING id, channel_id,
            /// seq` (none without one). A duplicate client message id is
            /// told apart.
            async fn insert_messages(
                tx: &mut Transaction<'_, $db>,
                mut insert: sqlx::QueryBuilder<'_, $db>,
            ) -> std::result::Result<Vec<(i64, ChannelId, Seq)>, BatchFailure> {
                let rows = match insert.build().fetch_all(&mut **tx).await {
                    Ok(rows) => rows,
                    Err(e) if is_unique_violation(&e) => return Err(BatchFailure::Duplicate),
                    Err(e) => return Err(BatchFailure::Failed(db_error(e))),
                };
                rows.iter()
                    .map(|row| Ok((int(row, 0)?, ChannelId(int(row, 1)?), int(row, 2)?)))
                    .collect::<Result<Vec<_>>>()
                    .map_err(BatchFailure::Failed)
            }

            /// Takes the next seqs of several channels in one statement;
            /// returns each existing channel's first new seq (a missing
            /// channel is absent from the map).
            async fn take_seqs_of_many(tx: &mut Transaction<'_, $db>, wanted: &[(ChannelId, i64)]) -> Result<HashMap<ChannelId, Seq>> {
                let mut firsts = HashMap::with_capacity(wanted.len());
                for chunk in wanted.chunks(200) {
                    let mut update = Self::bump_seqs(chunk);
                    let rows = if $backend.has_returning() {
                        update.push(" RETURNING id, last_seq");
                        update.build().fetch_all(&mut **tx).await.map_err(db_error)?
                    } else {
                        update.build().execute(&mut **tx).await.map_err(db_error)?;
                        let mut select = sqlx::QueryBuilder::<$db>::new("SELECT id, last_seq FROM channels WHERE id IN (");
                        let mut ids = select.separated(", ");
                        for (channel, _) in chunk {
                            ids.push_bind(channel.0);
                        }
                        select.push(")");
                        select.build().fetch_all(&mut **tx).await.map_err(db_error)?
                    };
                    for row in &rows {
                        let channel = ChannelId(int(row, 0)?);
                        let last = int(row, 1)?;
                        if let Some((_, count)) = chunk.iter().find(|(c, _)| *c == channel) {
                            firsts.insert(channel, last - count + 1);
                        }
                    }
                }
                Ok(firsts)
            }

            /// The id of the row the previous INSERT created, for backends
            /// without `RETURNING`.
            async fn last_insert_id(tx: &mut Tx) -> Result<i64> {
                let row = sqlx::query("SELECT CAST(LAST_INSERT_ID() AS SIGNED)")
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db_error)?;
                int(&row, 0)
            }

            /// Records a durable event with the channel's next seq.
            async fn append_event(
                tx: &mut Tx,
                channel: ChannelId,
                kind: &'static str,
                user: Option<&UserId>,
                message: Option<MessageId>,
                payload: Option<String>,
                now: i64,
            ) -> Result<Seq> {
                let seq = Self::take_seqs(tx, channel, 1).await?;
                Self::insert_event(tx, channel, seq, kind, user, message, payload, now).await?;
                Ok(seq)
            }

            /// Stores a durable event under a seq already taken.
            #[allow(clippy::too_many_arguments)]
            async fn insert_event(
                tx: &mut Tx,
                channel: ChannelId,
                seq: Seq,
                kind: &'static str,
                user: Option<&UserId>,
                message: Option<MessageId>,
                payload: Option<String>,
                now: i64,
            ) -> Result<()> {
                sqlx::query(&q(
                    "INSERT INTO channel_events (channel_id, seq, kind, user_id, message_id, payload, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                ))
                .bind(channel.0)
                .bind(seq)
                .bind(kind)
                .bind(user.map(UserId::as_str))
                .bind(message.map(|m| m.0))
                .bind(payload)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                Ok(())
            }

            /// Adds (`add`) or takes back `user`'s reaction `key` to a
            /// message and records the event, with the key's new count.
            /// Idempotent: a change that is already so records nothing.
            /// Whether `key` would be a new key on the message when it has
            /// [`MAX_REACTION_KEYS_PER_MESSAGE`] already. Read under the
            /// channel's seq lock, so racing adds cannot pass the cap.
            async fn reaction_key_is_new_and_over_cap(tx: &mut Tx, id: MessageId, key: &ReactionKey) -> Result<bool> {
                let used = sqlx::query(&q("SELECT 1 FROM reactions WHERE message_id = $1 AND reaction_key = $2 LIMIT 1"))
                    .bind(id.0)
                    .bind(key.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?
                    .is_some();
                if used {
                    return Ok(false);
                }
                let row = sqlx::query(&q("SELECT COUNT(DISTINCT reaction_key) FROM reactions WHERE message_id = $1"))
                    .bind(id.0)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(int(&row, 0)? >= MAX_REACTION_KEYS_PER_MESSAGE)
            }

            async fn change_reaction(&self, id: MessageId, user: &UserId, key: &ReactionKey, add: bool) -> Result<(Message, Option<ChannelEvent>)> {
                let now = now_ms();
                // Only its channel is read here (it never changes); the rest
                // is read in the transaction, after the channel's lock.
                let channel = Self::message_in(&self.read, id).await?.channel_id;
                let mut tx = self.begin_write().await?;
                // The seq first: it locks the channel row, which serializes
                // every reaction change of the channel (so each event's count
                // is exact), orders this change with a removal of the user
                // (as for messages), and with a delete of the message. The
                // reads below come after it, so they see every change
                // committed before the lock was granted (MySQL takes its
                // snapshot at a transaction's first plain read). Refused or
                // idempotent, the rollback gives the seq back.
                let seq = Self::take_seqs(&mut tx, channel, 1).await?;
                Self::require_member_in(&mut tx, channel, user).await?;
                let message = Self::message_in(&mut *tx, id).await?;
                if message.is_deleted() {
                    return Err(Error::Conflict("the message was deleted".into()));
                }
                let exists = sqlx::query(&q(
                    "SELECT 1 FROM reactions WHERE message_id = $1 AND reaction_key = $2 AND user_id = $3",
                ))
                .bind(id.0)
                .bind(key.as_str())
                .bind(user.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
                .is_some();
                if exists == add {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok((message, None));
                }
                if add && Self::reaction_key_is_new_and_over_cap(&mut tx, id, key).await? {
                    tx.rollback().await.map_err(db_error)?;
                    return Err(Error::Conflict(format!(
                        "the message already has {MAX_REACTION_KEYS_PER_MESSAGE} different reactions; \
                         add one of those instead"
                    )));
                }
                let change = if add {
                    q("INSERT INTO reactions (message_id, reaction_key, user_id, channel_id, created_at) \
                       VALUES ($1, $2, $3, $4, $5)")
                } else {
                    q("DELETE FROM reactions WHERE message_id = $1 AND reaction_key = $2 AND user_id = $3")
                };
                let mut change = sqlx::query(&change).bind(id.0).bind(key.as_str()).bind(user.as_str());
                if add {
                    change = change.bind(channel.0).bind(now);
                }
                change.execute(&mut *tx).await.map_err(db_error)?;
                let row = sqlx::query(&q("SELECT COUNT(*) FROM reactions WHERE message_id = $1 AND reaction_key = $2"))
                    .bind(id.0)
                    .bind(key.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let count = int(&row, 0)?;
                let (kind, payload) = if add {
                    let payload = EventPayload::ReactionAdded { message_id: id, parent_id: message.parent_id, user_id: user.clone(), key: key.as_str().to_owned(), count };
                    ("reaction_added", payload)
                } else {
                    let payload = EventPayload::ReactionRemoved { message_id: id, parent_id: message.parent_id, user_id: user.clone(), key: key.as_str().to_owned(), count };
                    ("reaction_removed", payload)
                };
                let stored = serde_json::json!({ "key": key.as_str(), "count": count, "parent": message.parent_id.map(|p| p.0) }).to_string();
                Self::insert_event(&mut tx, channel, seq, kind, Some(user), Some(id), Some(stored), now).await?;
                let event = durable_event(channel, seq, now, payload);
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok((message, Some(event)))
            }

            async fn message_in<'e>(executor: impl sqlx::Executor<'e, Database = $db>, id: MessageId) -> Result<Message> {
                let row = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.id = $1"
                )))
                .bind(id.0)
                .fetch_optional(executor)
                .await
                .map_err(db_error)?
                .ok_or(Error::NotFound(Entity::Message))?;
                message_row(&row, 0)
            }

            async fn channel_in<'e>(executor: impl sqlx::Executor<'e, Database = $db>, id: ChannelId) -> Result<Channel> {
                let row = sqlx::query(&q(concat!(
                    "SELECT ",
                    channel_columns!(),
                    " FROM channels c WHERE c.id = $1"
                )))
                .bind(id.0)
                .fetch_optional(executor)
                .await
                .map_err(db_error)?
                .ok_or(Error::NotFound(Entity::Channel))?;
                channel_row(&row, 0)
            }

            async fn member_in<'e>(
                executor: impl sqlx::Executor<'e, Database = $db>,
                id: ChannelId,
                user: &UserId,
            ) -> Result<Option<Member>> {
                let row = sqlx::query(&q(concat!(
                    "SELECT ",
                    member_columns!(),
                    " FROM members mb WHERE mb.channel_id = $1 AND mb.user_id = $2"
                )))
                .bind(id.0)
                .bind(user.as_str())
                .fetch_optional(executor)
                .await
                .map_err(db_error)?;
                row.as_ref().map(|r| member_row(r, 0)).transpose()
            }

            async fn message_by_client_id(pool: &Pool, new: &NewMessage, client_id: &str) -> Result<Option<Message>> {
                let row = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.channel_id = $1 AND m.sender = $2 AND m.client_message_id = $3"
                )))
                .bind(new.channel_id.0)
                .bind(new.sender.display_id())
                .bind(client_id)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
                row.as_ref().map(|r| message_row(r, 0)).transpose()
            }

            /// Stores a batch of messages in one transaction (group commit).
            async fn write_batch(
                batches: std::sync::Arc<crate::batch::KeptConnections<$db>>,
                pool: Pool,
                insert_returning: bool,
                batch: Vec<crate::batch::Pending>,
                mut stage: crate::batch::Stage,
            ) {
                // Retries of one client message id within the batch share
                // the first one's outcome.
                let mut first_of: HashMap<(ChannelId, String, String), usize> = HashMap::new();
                let mut repeat_of: Vec<Option<usize>> = vec![None; batch.len()];
                for (i, pending) in batch.iter().enumerate() {
                    if let Some(client_id) = &pending.new.client_message_id {
                        let key = (
                            pending.new.channel_id,
                            pending.new.sender.display_id().to_owned(),
                            client_id.as_str().to_owned(),
                        );
                        match first_of.get(&key) {
                            Some(first) => repeat_of[i] = Some(*first),
                            None => {
                                first_of.insert(key, i);
                            }
                        }
                    }
                }
                let started = std::time::Instant::now();
                let stored = Self::store_batch(&batches, insert_returning, &batch, &repeat_of, &mut stage).await;
                static COMMIT_SECONDS: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
                COMMIT_SECONDS
                    .get_or_init(|| metrics::histogram!("clacks_store_batch_commit_seconds"))
                    .record(started.elapsed().as_secs_f64());
                let results: Vec<Result<StoredMessage>> = match stored {
                    Ok(results) => results,
                    Err(BatchFailure::Duplicate) => {
                        // A concurrent writer (another node) stored one of
                        // these client ids first: one by one, each finds it.
                        let mut results = Vec::with_capacity(batch.len());
                        for pending in &batch {
                            results.push(Self::create_message_direct(&pool, &pending.new, &MessageExtras::default()).await);
                        }
                        results
                    }
                    Err(BatchFailure::Failed(e) | BatchFailure::NotBegun(e)) => batch.iter().map(|_| Err(e.clone())).collect(),
                };
                stage.committing();
                stage.previous_answered().await;
                for ((pending, result), repeat) in batch.into_iter().zip(results.iter().cloned()).zip(&repeat_of) {
                    let result = match repeat {
                        Some(first) => results[*first].clone().map(|s| StoredMessage { created: false, ..s }),
                        None => result,
                    };
                    pending.answer(result);
                }
            }

            async fn store_batch(
                batches: &crate::batch::KeptConnections<$db>,
                insert_returning: bool,
                batch: &[crate::batch::Pending],
                repeat_of: &[Option<usize>],
                stage: &mut crate::batch::Stage,
            ) -> std::result::Result<Vec<Result<StoredMessage>>, BatchFailure> {
                let (mut connection, kept) = batches.take().await.map_err(BatchFailure::Failed)?;
                let mut stored = Self::store_batch_on(&mut connection, insert_returning, batch, repeat_of, stage).await;
                if kept && matches!(stored, Err(BatchFailure::NotBegun(_))) {
                    // A kept connection is not checked by the pool: after a
                    // database restart it is dead. Nothing ran on it, so the
                    // batch goes once more on a connection the pool checks.
                    drop(connection);
                    connection = batches.fresh().await.map_err(BatchFailure::Failed)?;
                    stored = Self::store_batch_on(&mut connection, insert_returning, batch, repeat_of, stage).await;
                }
                batches.observe(match &stored {
                    Err(BatchFailure::NotBegun(e) | BatchFailure::Failed(e)) => Some(e),
                    Ok(_) | Err(BatchFailure::Duplicate) => None,
                });
                let reusable = match &stored {
                    Ok(_) => true,
                    // Rolled back; keep the connection only if it still answers.
                    Err(BatchFailure::Duplicate) => sqlx::Connection::ping(&mut *connection).await.is_ok(),
                    Err(_) => false,
                };
                if reusable {
                    batches.put_back(connection);
                }
                stored
            }

            async fn store_batch_on(
                connection: &mut sqlx::pool::PoolConnection<$db>,
                insert_returning: bool,
                batch: &[crate::batch::Pending],
                repeat_of: &[Option<usize>],
                stage: &mut crate::batch::Stage,
            ) -> std::result::Result<Vec<Result<StoredMessage>>, BatchFailure> {
                let now = now_ms();
                let mut tx = Self::begin_batch_on(connection).await.map_err(BatchFailure::NotBegun)?;
                let mut results: Vec<Option<Result<StoredMessage>>> = vec![None; batch.len()];
                let stored = match Self::batch_statements(&mut tx, insert_returning, batch, repeat_of, now, &mut results).await {
                    Ok(stored) => stored,
                    Err(failure) => {
                        let _ = tx.rollback().await;
                        return Err(failure);
                    }
                };
                let messages: Vec<(usize, Message)> = stored
                    .into_iter()
                    .map(|(i, seq, id)| {
                        let new = &batch[i].new;
                        let message = Message {
                            id: MessageId(id),
                            channel_id: new.channel_id,
                            seq,
                            sender: new.sender.clone(),
                            client_message_id: new.client_message_id.as_ref().map(|c| c.as_str().to_owned()),
                            content: new.content.as_str().to_owned(),
                            created_at: now,
                            edited_at: None,
                            deleted_at: None,
                            parent_id: None,
                            reply_count: 0,
                            last_reply_at: None,
                            mentions: Vec::new(),
                        };
                        (i, message)
                    })
                    .collect();
                // The events are copies of every message: built only when
                // a webhook will read them.
                let outbox = match Self::any_webhook_enabled(&mut tx).await {
                    Ok(false) => Ok(()),
                    Ok(true) => {
                        let events: Vec<ChannelEvent> = messages
                            .iter()
                            .map(|(_, m)| durable_event(m.channel_id, m.seq, now, EventPayload::MessageCreated { message: m.clone() }))
                            .collect();
                        Self::webhook_outbox_rows(&mut tx, &events).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = outbox {
                    let _ = tx.rollback().await;
                    return Err(BatchFailure::Failed(e));
                }
                stage.committing();
                tx.commit().await.map_err(|e| BatchFailure::Failed(db_error(e)))?;
                for (i, message) in messages {
                    results[i] = Some(Ok(StoredMessage { message, created: true }));
                }
                Ok(results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a batched message got no result".into()))))
                    .collect())
            }

            /// A batch's statements: takes every channel's seqs (locking
            /// the channel rows), checks the senders' memberships under
            /// those locks, gives back the seqs of refused messages, and
            /// inserts the rest. Returns `(batch index, seq, id)` of every
            /// stored message; refusals go to `results`.
            async fn batch_statements(
                tx: &mut Transaction<'_, $db>,
                insert_returning: bool,
                batch: &[crate::batch::Pending],
                repeat_of: &[Option<usize>],
                now: i64,
                results: &mut [Option<Result<StoredMessage>>],
            ) -> std::result::Result<Vec<(usize, Seq, i64)>, BatchFailure> {
                let mut by_channel: Vec<(ChannelId, Vec<usize>)> = Vec::new();
                for (i, pending) in batch.iter().enumerate() {
                    if repeat_of[i].is_some() {
                        continue;
                    }
                    let channel = pending.new.channel_id;
                    match by_channel.iter_mut().find(|(c, _)| *c == channel) {
                        Some((_, members)) => members.push(i),
                        None => by_channel.push((channel, vec![i])),
                    }
                }
                // Every channel's seqs in one statement (rows locked in id
                // order, like any other writer of several channels).
                by_channel.sort_by_key(|(channel, _)| *channel);
                let wanted = Self::seq_counts(&by_channel);
                // MariaDB (`INSERT ... RETURNING` but no `UPDATE ...
                // RETURNING`) computes each seq in the INSERT from the new
                // counter; the others read the first new seqs back.
                let known_seqs = $backend.has_returning() || !insert_returning;
                let firsts = if known_seqs {
                    Some(Self::take_seqs_of_many(tx, &wanted).await.map_err(BatchFailure::Failed)?)
                } else {
                    None
                };
                let existing = match &firsts {
                    Some(firsts) => firsts.keys().copied().collect(),
                    None => Self::bump_existing(tx, &wanted).await.map_err(BatchFailure::Failed)?,
                };
                by_channel.retain(|(channel, members)| {
                    let exists = existing.contains(channel);
                    if !exists {
                        for i in members {
                            results[*i] = Some(Err(Error::NotFound(Entity::Channel)));
                        }
                    }
                    exists
                });
                let refused = Self::non_members(tx, batch, &by_channel).await.map_err(BatchFailure::Failed)?;
                if !refused.is_empty() {
                    // Refused messages give their seqs back, so the counter
                    // stays gap-free; a channel's first new seq is unchanged
                    // (its messages keep their order), and the lock is still
                    // held, so nobody took a seq meanwhile.
                    let mut given_back = Vec::new();
                    for (channel, members) in by_channel.iter_mut() {
                        let before = members.len();
                        members.retain(|i| {
                            if !refused.contains(i) {
                                return true;
                            }
                            if let Some(user) = batch[*i].new.sender.user_id() {
                                results[*i] = Some(Err(Error::NotMember { user: user.clone(), channel: *channel }));
                            }
                            false
                        });
                        let refused_here = i64::try_from(before - members.len()).unwrap_or(i64::MAX);
                        if refused_here > 0 {
                            given_back.push((*channel, -refused_here));
                        }
                    }
                    for chunk in given_back.chunks(200) {
                        Self::bump_seqs(chunk).build().execute(&mut **tx).await.map_err(|e| BatchFailure::Failed(db_error(e)))?;
                    }
                    by_channel.retain(|(_, members)| !members.is_empty());
                }
                match firsts {
                    Some(firsts) => Self::insert_with_known_seqs(tx, batch, &by_channel, &firsts, now, results).await,
                    None => Self::insert_returning_seqs(tx, batch, &by_channel, now).await,
                }
            }

            /// How many seqs each channel of a grouped batch takes.
            fn seq_counts(by_channel: &[(ChannelId, Vec<usize>)]) -> Vec<(ChannelId, i64)> {
                by_channel
                    .iter()
                    .map(|(channel, members)| (*channel, i64::try_from(members.len()).unwrap_or(i64::MAX)))
                    .collect()
            }

            /// Bumps the counters without reading them back (MariaDB);
            /// returns which channels exist.
            async fn bump_existing(
                tx: &mut Transaction<'_, $db>,
                wanted: &[(ChannelId, i64)],
            ) -> Result<std::collections::HashSet<ChannelId>> {
                let mut updated = 0u64;
                for chunk in wanted.chunks(200) {
                    updated += Self::bump_seqs(chunk).build().execute(&mut **tx).await.map_err(db_error)?.rows_affected();
                }
                if updated == wanted.len() as u64 {
                    return Ok(wanted.iter().map(|(channel, _)| *channel).collect());
                }
                // Some channel is gone (rare): find out which.
                let mut existing = std::collections::HashSet::new();
                for chunk in wanted.chunks(200) {
                    let mut select = sqlx::QueryBuilder::<$db>::new("SELECT id FROM channels WHERE id IN (");
                    let mut ids = select.separated(", ");
                    for (channel, _) in chunk {
                        ids.push_bind(channel.0);
                    }
                    select.push(")");
                    for row in select.build().fetch_all(&mut **tx).await.map_err(db_error)? {
                        existing.insert(ChannelId(int(&row, 0)?));
                    }
                }
                Ok(existing)
            }

            /// Inserts the messages with the seqs taken (each channel's
            /// from its first new seq on); ids come back by `RETURNING` or,
            /// on MySQL 8, a second SELECT.
            async fn insert_with_known_seqs(
                tx: &mut Transaction<'_, $db>,
                batch: &[crate::batch::Pending],
                by_channel: &[(ChannelId, Vec<usize>)],
                firsts: &HashMap<ChannelId, Seq>,
                now: i64,
                results: &mut [Option<Result<StoredMessage>>],
            ) -> std::result::Result<Vec<(usize, Seq, i64)>, BatchFailure> {
                let mut rows: Vec<(usize, Seq)> = Vec::with_capacity(batch.len());
                for (channel, members) in by_channel {
                    let Some(first) = firsts.get(channel) else { continue };
                    for (offset, i) in members.iter().enumerate() {
                        rows.push((*i, first + offset as i64));
                    }
                }
                let mut ids: HashMap<(ChannelId, Seq), i64> = HashMap::with_capacity(rows.len());
                for chunk in rows.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO messages (channel_id, seq, sender, client_message_id, content, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, (i, seq)| {
                        let new = &batch[*i].new;
                        row.push_bind(new.channel_id.0)
                            .push_bind(*seq)
                            .push_bind(new.sender.display_id().to_owned())
                            .push_bind(new.client_message_id.as_ref().map(|c| c.as_str().to_owned()))
                            .push_bind(new.content.as_str().to_owned())
                            .push_bind(now);
                    });
                    if $backend.has_returning() {
                        // RETURNING's row order is unspecified: match by key.
                        insert.push(" RETURNING id, channel_id, seq");
                    }
                    for (id, channel, seq) in Self::insert_messages(tx, insert).await? {
                        ids.insert((channel, seq), id);
                    }
                }
                if !$backend.has_returning() {
                    // MySQL 8: read the ids back by (channel, seq range), all
                    // channels in one statement.
                    for channels in by_channel.chunks(100) {
                        let mut select = sqlx::QueryBuilder::<$db>::new("SELECT id, channel_id, seq FROM messages WHERE ");
                        let mut any = false;
                        for (channel, members) in channels {
                            let Some(first) = firsts.get(channel) else { continue };
                            if any {
                                select.push(" OR ");
                            }
                            any = true;
                            select.push("(channel_id = ").push_bind(channel.0);
                            select.push(" AND seq >= ").push_bind(*first);
                            select.push(" AND seq < ").push_bind(first + members.len() as i64).push(")");
                        }
                        if !any {
                            continue;
                        }
                        let found = select.build().fetch_all(&mut **tx).await.map_err(|e| BatchFailure::Failed(db_error(e)))?;
                        for row in &found {
                            let id = int(row, 0).map_err(BatchFailure::Failed)?;
                            let channel = ChannelId(int(row, 1).map_err(BatchFailure::Failed)?);
                            let seq = int(row, 2).map_err(BatchFailure::Failed)?;
                            ids.insert((channel, seq), id);
                        }
                    }
                }
                let mut stored = Vec::with_capacity(rows.len());
                for (i, seq) in rows {
                    match ids.get(&(batch[i].new.channel_id, seq)) {
                        Some(id) => stored.push((i, seq, *id)),
                        None => results[i] = Some(Err(Error::Internal("a stored message was not read back".into()))),
                    }
                }
                Ok(stored)
            }

            /// MariaDB: inserts with each seq computed from its channel's
            /// new `last_seq` in the INSERT itself and returned with the
            /// ids, two statements with the counter update instead of four
            /// (update, read seqs, insert, read ids).
            async fn insert_returning_seqs(
                tx: &mut Transaction<'_, $db>,
                batch: &[crate::batch::Pending],
                by_channel: &[(ChannelId, Vec<usize>)],
                now: i64,
            ) -> std::result::Result<Vec<(usize, Seq, i64)>, BatchFailure> {
                // (batch index, channel, how far below the channel's new
                // last_seq its seq is)
                let mut rows: Vec<(usize, ChannelId, i64)> = Vec::with_capacity(batch.len());
                for (channel, members) in by_channel {
                    let count = members.len() as i64;
                    for (offset, i) in members.iter().enumerate() {
                        rows.push((*i, *channel, count - 1 - offset as i64));
                    }
                }
                let mut returned: HashMap<ChannelId, Vec<(Seq, i64)>> = HashMap::with_capacity(by_channel.len());
                for chunk in rows.chunks(128) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO messages (channel_id, seq, sender, client_message_id, content, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, (i, channel, below)| {
                        let new = &batch[*i].new;
                        row.push_bind(channel.0)
                            .push("(SELECT last_seq FROM channels WHERE id = ")
                            .push_bind_unseparated(channel.0)
                            .push_unseparated(") - ")
                            .push_bind_unseparated(*below)
                            .push_bind(new.sender.display_id().to_owned())
                            .push_bind(new.client_message_id.as_ref().map(|c| c.as_str().to_owned()))
                            .push_bind(new.content.as_str().to_owned())
                            .push_bind(now);
                    });
                    insert.push(" RETURNING id, channel_id, seq");
                    for (id, channel, seq) in Self::insert_messages(tx, insert).await? {
                        returned.entry(channel).or_default().push((seq, id));
                    }
                }
                // A channel's messages got consecutive seqs in batch order,
                // so its returned rows sorted by seq are its members in order.
                let mut stored = Vec::with_capacity(rows.len());
                for (channel, members) in by_channel {
                    let mut got = returned.remove(channel).unwrap_or_default();
                    got.sort_unstable();
                    let consecutive = got.windows(2).all(|w| w[1].0 == w[0].0 + 1);
                    if got.len() != members.len() || !consecutive {
                        return Err(BatchFailure::Failed(Error::Internal(
                            "the stored messages' seqs were not read back".into(),
                        )));
                    }
                    for (i, (seq, id)) in members.iter().zip(got) {
                        stored.push((*i, seq, id));
                    }
                }
                Ok(stored)
            }
            /// Stores one message in a transaction of its own: the fallback
            /// when a batch hits a concurrent duplicate, and replies (with
            /// `parent`), which count themselves in their parent's row.
            async fn create_message_direct(pool: &Pool, new: &NewMessage, extras: &MessageExtras) -> Result<StoredMessage> {
                let parent = extras.parent_id;
                let client_id = new.client_message_id.as_ref().map(|c| c.as_str());
                if let Some(client_id) = client_id {
                    if let Some(message) = Self::message_by_client_id(pool, new, client_id).await? {
                        return Ok(StoredMessage { message, created: false });
                    }
                }
                let now = now_ms();
                let mut tx = Self::begin_write_on(pool).await?;
                let seq = Self::take_seqs(&mut tx, new.channel_id, 1).await?;
                if let Some(user) = new.sender.user_id() {
                    // Refused: the rollback gives the seq back.
                    Self::require_member_in(&mut tx, new.channel_id, user).await?;
                }
                if let Some(parent) = parent {
                    // Read under the channel's lock, which a delete of the
                    // parent takes too.
                    Self::require_thread_root(&mut tx, new.channel_id, parent).await?;
                }
                if !extras.mentions.is_empty() {
                    let pairs: Vec<(ChannelId, &UserId)> = extras.mentions.iter().map(|u| (new.channel_id, u)).collect();
                    let found = Self::memberships(&mut tx, &pairs).await?;
                    if let Some(stranger) = extras.mentions.iter().find(|u| !found.contains(&(new.channel_id, (*u).clone()))) {
                        return Err(Error::invalid("mentions", format!("{stranger} is not a member of the channel")));
                    }
                }
                let mentions = (!extras.mentions.is_empty())
                    .then(|| serde_json::to_string(&extras.mentions).unwrap_or_default());
                let sql = if $backend.has_returning() {
                    q("INSERT INTO messages (channel_id, seq, sender, client_message_id, content, created_at, parent_id, mentions) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id")
                } else {
                    q("INSERT INTO messages (channel_id, seq, sender, client_message_id, content, created_at, parent_id, mentions) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                };
                let insert = sqlx::query(&sql)
                    .bind(new.channel_id.0)
                    .bind(seq)
                    .bind(new.sender.display_id())
                    .bind(client_id)
                    .bind(new.content.as_str())
                    .bind(now)
                    .bind(parent.map(|p| p.0))
                    .bind(mentions);
                let inserted = if $backend.has_returning() {
                    insert.fetch_one(&mut *tx).await.map(|row| int(&row, 0))
                } else {
                    match insert.execute(&mut *tx).await {
                        Ok(_) => Ok(Self::last_insert_id(&mut tx).await),
                        Err(e) => Err(e),
                    }
                };
                let id = match inserted {
                    Ok(id) => id?,
                    Err(e) if is_unique_violation(&e) && client_id.is_some() => {
                        // A concurrent retry stored it first; return that one.
                        tx.rollback().await.map_err(db_error)?;
                        let message = Self::message_by_client_id(pool, new, client_id.unwrap_or_default())
                            .await?
                            .ok_or_else(|| Error::Internal("idempotent message vanished".into()))?;
                        return Ok(StoredMessage { message, created: false });
                    }
                    Err(e) => return Err(db_error(e)),
                };
                // One row per mention to count unread ones by, none for the
                // sender (their own message is never unread to them).
                let counted: Vec<&UserId> = extras.mentions.iter().filter(|u| new.sender.user_id() != Some(*u)).collect();
                if !counted.is_empty() {
                    let mut insert = sqlx::QueryBuilder::<$db>::new("INSERT INTO mentions (message_id, user_id, channel_id, seq) ");
                    insert.push_values(&counted, |mut row, user| {
                        row.push_bind(id).push_bind(user.as_str().to_owned()).push_bind(new.channel_id.0).push_bind(seq);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                if let Some(parent) = parent {
                    sqlx::query(&q(
                        "UPDATE messages SET reply_count = reply_count + 1, last_reply_at = $1 WHERE id = $2",
                    ))
                    .bind(now)
                    .bind(parent.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                let message = Message {
                    id: MessageId(id),
                    channel_id: new.channel_id,
                    seq,
                    sender: new.sender.clone(),
                    client_message_id: client_id.map(str::to_owned),
                    content: new.content.as_str().to_owned(),
                    created_at: now,
                    edited_at: None,
                    deleted_at: None,
                    parent_id: parent,
                    reply_count: 0,
                    last_reply_at: None,
                    mentions: extras.mentions.clone(),
                };
                let event = durable_event(new.channel_id, seq, now, EventPayload::MessageCreated { message: message.clone() });
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(StoredMessage { message, created: true })
            }

            /// The thread rule, read under the channel's seq lock: a reply's
            /// parent is a message of the same channel (a message elsewhere
            /// is refused as one that does not exist, telling nothing about
            /// it), not itself a reply (threads are one level deep), and not
            /// a tombstone.
            async fn require_thread_root(tx: &mut Tx, channel: ChannelId, parent: MessageId) -> Result<()> {
                let found = match Self::message_in(&mut **tx, parent).await {
                    Ok(found) if found.channel_id == channel => found,
                    Ok(_) | Err(Error::NotFound(_)) => {
                        return Err(Error::invalid("parentId", "must be a message of the same channel"));
                    }
                    Err(other) => return Err(other),
                };
                if found.parent_id.is_some() {
                    return Err(Error::invalid(
                        "parentId",
                        "is a reply: threads are one level deep, reply to its parent instead",
                    ));
                }
                if found.is_deleted() {
                    return Err(Error::Conflict("the parent message was deleted".into()));
                }
                Ok(())
            }


            fn snapshot_payload(channel: &Channel) -> Option<String> {
                serde_json::to_string(&ChannelSnapshot {
                    display_name: channel.display_name.clone(),
                    metadata: channel.metadata.as_ref().map(|m| m.as_value().clone()),
                    created_at: channel.created_at,
                })
                .ok()
            }

            /// Rebuilds a stored event (a `channel_events` row joined with
            /// its message, if any).
            fn stored_event(channel: ChannelId, row: &DbRow) -> Result<ChannelEvent> {
                let seq = int(row, 0)?;
                let kind = text(row, 1)?;
                let user = opt_text(row, 2)?.map(UserId::from_trusted);
                let payload = opt_text(row, 3)?;
                let at = int(row, 4)?;
                let message = || -> Result<Message> {
                    if opt_int(row, 5)?.is_none() {
                        return Err(Error::Internal(format!("event {seq} lost its message")));
                    }
                    message_row(row, 5)
                };
                let missing_user = || Error::Internal(format!("event {seq} has no user"));
                let payload = match kind.as_str() {
                    "message_edited" => EventPayload::MessageEdited { message: message()? },
                    "message_deleted" => EventPayload::MessageDeleted { message: message()? },
                    "member_joined" => {
                        let role = payload
                            .as_deref()
                            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                            .and_then(|v| v.get("role").and_then(|r| r.as_str()).map(str::to_owned))
                            .map(Role::from_trusted)
                            .unwrap_or_default();
                        EventPayload::MemberJoined { user_id: user.ok_or_else(missing_user)?, role }
                    }
                    "member_left" => EventPayload::MemberLeft { user_id: user.ok_or_else(missing_user)? },
                    "members_joined" | "members_left" => {
                        let stored: StoredBatch = payload
                            .as_deref()
                            .and_then(|p| serde_json::from_str(p).ok())
                            .ok_or_else(|| Error::Internal(format!("event {seq} has a bad payload")))?;
                        let batch = MemberBatch {
                            user_ids: stored.users.into_iter().map(UserId::from_trusted).collect(),
                            count: stored.count,
                            truncated: stored.truncated,
                            affected: Vec::new(),
                        };
                        if kind == "members_joined" {
                            EventPayload::MembersJoined { batch, role: stored.role.map(Role::from_trusted).unwrap_or_default() }
                        } else {
                            EventPayload::MembersLeft { batch }
                        }
                    }
                    "reaction_added" | "reaction_removed" => {
                        let message_id = MessageId(opt_int(row, 5)?.ok_or_else(|| Error::Internal(format!("event {seq} lost its message")))?);
                        let user_id = user.ok_or_else(missing_user)?;
                        let stored: serde_json::Value = payload
                            .as_deref()
                            .and_then(|p| serde_json::from_str(p).ok())
                            .ok_or_else(|| Error::Internal(format!("event {seq} has a bad payload")))?;
                        let key = stored.get("key").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
                        let count = stored.get("count").and_then(|c| c.as_i64()).unwrap_or_default();
                        let parent_id = stored.get("parent").and_then(|p| p.as_i64()).map(MessageId);
                        if kind == "reaction_added" {
                            EventPayload::ReactionAdded { message_id, parent_id, user_id, key, count }
                        } else {
                            EventPayload::ReactionRemoved { message_id, parent_id, user_id, key, count }
                        }
                    }
                    "channel_updated" => {
                        let snapshot: ChannelSnapshot = payload
                            .as_deref()
                            .and_then(|p| serde_json::from_str(p).ok())
                            .ok_or_else(|| Error::Internal(format!("event {seq} has a bad payload")))?;
                        EventPayload::ChannelUpdated {
                            channel: Channel {
                                id: channel,
                                display_name: snapshot.display_name,
                                metadata: snapshot.metadata.and_then(|m| Metadata::parse(m).ok()),
                                last_seq: seq,
                                created_at: snapshot.created_at,
                                updated_at: at,
                            },
                        }
                    }
                    other => return Err(Error::Internal(format!("unknown event kind {other}"))),
                };
                Ok(ChannelEvent { channel_id: channel, seq, durable: true, at, payload })
            }
        }

        fn durable_event(channel: ChannelId, seq: Seq, at: i64, payload: EventPayload) -> ChannelEvent {
            ChannelEvent { channel_id: channel, seq, durable: true, at, payload }
        }

        fn page_limit(limit: u32) -> i64 {
            i64::from(limit.clamp(1, MAX_PAGE))
        }

        /// What one channel's turn of the indexer did.
        struct ChannelIndexed {
            /// Messages whose index rows were written or removed.
            messages: u64,
            /// Seqs covered (charged to the budget).
            seqs: i64,
            /// Whether the channel is indexed up to the last seq read (or
            /// gone).
            caught_up: bool,
        }

        impl $store {
            /// Creates `channel`'s `search_progress` row unless it exists,
            /// in a statement of its own, so that the foreign key's lock on
            /// the channel row (which sends take) is not held for the
            /// indexing transaction. `false`: the channel is gone.
            async fn start_progress(pool: &Pool, channel: ChannelId) -> Result<bool> {
                match sqlx::query(&q(crate::search::start_progress_statement($backend))).bind(channel.0).execute(pool).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_foreign_key_violation(&e) => Ok(false),
                    Err(e) => Err(db_error(e)),
                }
            }

            /// Indexes the channels at the front of `channels` (whose
            /// progress rows exist, in id order, so that concurrent
            /// indexers lock them in one order) from their watermarks, at
            /// most `budget` seqs in all, in one transaction: one commit
            /// (one FTS5 segment, one log flush) for many channels' new
            /// messages rather than one each. A channel caught up (or gone)
            /// is taken off the front. Returns the messages indexed and the
            /// seqs charged.
            async fn index_channels(pool: &Pool, channels: &mut std::collections::VecDeque<ChannelId>, budget: i64) -> Result<(u64, i64)> {
                let mut tx = Self::begin_write_on(pool).await?;
                let (mut messages, mut charged) = (0u64, 0i64);
                while let Some(&channel) = channels.front() {
                    if charged >= budget {
                        break;
                    }
                    match Self::index_channel_in(&mut tx, channel, budget - charged).await? {
                        Some(done) => {
                            messages += done.messages;
                            // A channel found caught up still costs a turn,
                            // so a call always ends.
                            charged += done.seqs.max(1);
                            if !done.caught_up {
                                break;
                            }
                        }
                        // Gone: its deletion removes whatever index rows
                        // this transaction writes for it, after waiting on
                        // its progress row.
                        None => {}
                    }
                    channels.pop_front();
                }
                tx.commit().await.map_err(db_error)?;
                Ok((messages, charged))
            }

            /// One channel's part of [`Self::index_channels`]' transaction,
            /// at most `budget` seqs; `None` when the channel is gone.
            async fn index_channel_in(tx: &mut Tx, channel: ChannelId, budget: i64) -> Result<Option<ChannelIndexed>> {
                // The lock first, then every read: on MySQL the first plain
                // read takes the transaction's snapshot, which must come
                // after the previous holder's commit.
                let Some(row) = sqlx::query(&q(crate::search::lock_progress_statement($backend)))
                    .bind(channel.0)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let from = int(&row, 0)?;
                let Some(row) = sqlx::query(&q("SELECT last_seq FROM channels WHERE id = $1"))
                    .bind(channel.0)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db_error)?
                else {
                    return Ok(None);
                };
                let last = int(&row, 0)?;
                // Every seq up to `last` is committed: a channel's seqs
                // commit in order, under its row lock.
                let to = last.min(from.saturating_add(budget.max(1)));
                if to <= from {
                    return Ok(Some(ChannelIndexed { messages: 0, seqs: 0, caught_up: true }));
                }
                // Earlier messages edited or deleted in (from, to]: their
                // index rows are rewritten from the current content, or
                // removed. (Messages of (from, to] are new to the index, an
                // edit of theirs included.)
                let rows = sqlx::query(&q(
                    "SELECT DISTINCT message_id FROM channel_events \
                     WHERE channel_id = $1 AND seq > $2 AND seq <= $3 \
                     AND kind IN ('message_edited', 'message_deleted') AND message_id IS NOT NULL",
                ))
                .bind(channel.0)
                .bind(from)
                .bind(to)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
                let changed = rows.iter().map(|r| int(r, 0)).collect::<Result<Vec<i64>>>()?;
                let mut contents: Vec<(i64, String)> = Vec::new();
                let mut inserted = 0u64;
                let insert_range = crate::search::insert_range_statement($backend);
                if insert_range.is_none() {
                    let new = sqlx::query(&q(crate::search::SELECT_NEW_MESSAGES))
                    .bind(channel.0)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut **tx)
                    .await
                    .map_err(db_error)?;
                    for row in &new {
                        contents.push((int(row, 0)?, text(row, 1)?));
                    }
                }
                let mut removed = 0u64;
                for chunk in changed.chunks(crate::BULK_CHUNK) {
                    let mut delete = sqlx::QueryBuilder::<$db>::new(crate::search::delete_rows_prefix($backend));
                    let mut ids = delete.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    delete.push(")");
                    delete.build().execute(&mut **tx).await.map_err(db_error)?;
                    let mut select = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id, content FROM messages WHERE deleted_at IS NULL AND content <> '' AND seq <= ",
                    );
                    select.push_bind(from).push(" AND id IN (");
                    let mut ids = select.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    select.push(")");
                    let current = select.build().fetch_all(&mut **tx).await.map_err(db_error)?;
                    removed += (chunk.len() - current.len()) as u64;
                    for row in &current {
                        contents.push((int(row, 0)?, text(row, 1)?));
                    }
                }
                for chunk in crate::search::fixed_size_chunks(&contents, INDEX_CHUNK) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(crate::search::insert_rows_prefix($backend));
                    insert.push_values(chunk, |mut row, (id, content)| {
                        row.push_bind(*id);
                        match $backend {
                            Backend::Sqlite => {
                                row.push_bind(content.as_str());
                            }
                            Backend::MySql => {
                                row.push_bind(channel.0).push_bind(content.as_str());
                            }
                            Backend::Postgres => {
                                row.push_bind(channel.0)
                                    .push("to_tsvector('simple', ")
                                    .push_bind_unseparated(content.as_str())
                                    .push_unseparated(")");
                            }
                        }
                    });
                    insert.build().execute(&mut **tx).await.map_err(db_error)?;
                }
                if let Some(statement) = insert_range {
                    inserted = sqlx::query(&q(statement))
                        .bind(channel.0)
                        .bind(from)
                        .bind(to)
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                }
                sqlx::query(&q("UPDATE search_progress SET indexed_seq = $1 WHERE channel_id = $2"))
                    .bind(to)
                    .bind(channel.0)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                Ok(Some(ChannelIndexed {
                    messages: contents.len() as u64 + inserted + removed,
                    seqs: to - from,
                    caught_up: to == last,
                }))
            }
        }

        /// Index rows per insert statement: well under every backend's
        /// parameter limit (3 a row) and MySQL's packet size for messages of
        /// the largest size.
        const INDEX_CHUNK: usize = 200;

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn migrate(&self) -> Result<()> {
                let mut conn = self.write.acquire().await.map_err(db_error)?;
                if $backend == Backend::MySql {
                    let locked: Option<i64> = sqlx::query_scalar(crate::sql::MYSQL_MIGRATION_LOCK)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_error)?;
                    if locked != Some(1) {
                        return Err(Error::Unavailable(
                            "another node has been migrating the database for 10 minutes".into(),
                        ));
                    }
                }
                let applied = $migrator.run_direct(&mut *conn).await;
                if $backend == Backend::MySql
                    && sqlx::query(crate::sql::MYSQL_MIGRATION_UNLOCK).execute(&mut *conn).await.is_err()
                {
                    // Its session holds the lock still: end it.
                    conn.close_on_drop();
                }
                applied.map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(inner) => db_error(inner),
                    other => Error::Internal(format!("migration failed: {other}")),
                })
            }

            async fn ping(&self) -> Result<()> {
                // Bounded well below the pool's acquire timeout, which a
                // database refusing connections would otherwise take in
                // full: a readiness probe gets its 503 before it gives up.
                let ping = sqlx::query("SELECT 1").execute(&self.read);
                match tokio::time::timeout(crate::sql::PING_TIMEOUT, ping).await {
                    Ok(done) => done.map(|_| ()).map_err(db_error),
                    Err(_) => Err(Error::Unavailable(format!("the database did not answer within {:?}", crate::sql::PING_TIMEOUT))),
                }
            }

            fn message_writer_busy(&self) -> std::time::Duration {
                self.batcher.busy()
            }

            fn pool_stats(&self) -> crate::PoolStats {
                let mut stats = crate::PoolStats {
                    open: self.write.size(),
                    idle: self.write.num_idle(),
                };
                // SQLite reads through a pool of their own; elsewhere `read`
                // is the same pool as `write`.
                if $backend == Backend::Sqlite {
                    stats.open += self.read.size();
                    stats.idle += self.read.num_idle();
                }
                stats
            }

            async fn close(&self) {
                self.write.close().await;
                self.read.close().await;
            }

            async fn setting(&self, name: &str) -> Result<Option<String>> {
                let row = sqlx::query(&q("SELECT value FROM settings WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.write)
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(|r| text(r, 0)).transpose()
            }

            async fn init_setting(&self, name: &str, value: &str) -> Result<String> {
                let inserted = sqlx::query(&q("INSERT INTO settings (name, value) VALUES ($1, $2)"))
                    .bind(name)
                    .bind(value)
                    .execute(&self.write)
                    .await;
                match inserted {
                    Ok(_) => Ok(value.to_owned()),
                    Err(e) if is_unique_violation(&e) => self
                        .setting(name)
                        .await?
                        .ok_or_else(|| Error::Internal(format!("setting {name} vanished"))),
                    Err(e) => Err(db_error(e)),
                }
            }

            async fn create_channel(
                &self,
                display_name: &clacks_core::DisplayName,
                metadata: Option<&Metadata>,
                initial_members: &[UserId],
            ) -> Result<Channel> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let metadata_text = metadata.map(Metadata::to_json_string);
                let id = if $backend.has_returning() {
                    let row = sqlx::query(&q(
                        "INSERT INTO channels (display_name, metadata, last_seq, created_at, updated_at) \
                         VALUES ($1, $2, 0, $3, $4) RETURNING id",
                    ))
                    .bind(display_name.as_str())
                    .bind(metadata_text.as_deref())
                    .bind(now)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    int(&row, 0)?
                } else {
                    sqlx::query(&q(
                        "INSERT INTO channels (display_name, metadata, last_seq, created_at, updated_at) \
                         VALUES ($1, $2, 0, $3, $4)",
                    ))
                    .bind(display_name.as_str())
                    .bind(metadata_text.as_deref())
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    Self::last_insert_id(&mut tx).await?
                };
                let mut seen = std::collections::HashSet::new();
                for user in initial_members.iter().filter(|u| seen.insert(u.as_str())) {
                    sqlx::query(&q(
                        "INSERT INTO members (channel_id, user_id, role, joined_at, last_read_seq) \
                         VALUES ($1, $2, $3, $4, 0)",
                    ))
                    .bind(id)
                    .bind(user.as_str())
                    .bind(Role::member().as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                let channel = Self::channel_in(&mut *tx, ChannelId(id)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(channel)
            }

            async fn update_channel(&self, id: ChannelId, patch: &ChannelPatch) -> Result<(Channel, ChannelEvent)> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                // Lock the row (and learn it exists) before changing it.
                Self::channel_in(&mut *tx, id).await?;
                if let Some(name) = &patch.display_name {
                    sqlx::query(&q("UPDATE channels SET display_name = $1, updated_at = $2 WHERE id = $3"))
                        .bind(name.as_str())
                        .bind(now)
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                if let Some(metadata) = &patch.metadata {
                    sqlx::query(&q("UPDATE channels SET metadata = $1, updated_at = $2 WHERE id = $3"))
                        .bind(metadata.as_ref().map(Metadata::to_json_string))
                        .bind(now)
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                let before = Self::channel_in(&mut *tx, id).await?;
                let seq = Self::append_event(
                    &mut tx,
                    id,
                    "channel_updated",
                    None,
                    None,
                    Self::snapshot_payload(&before),
                    now,
                )
                .await?;
                let channel = Channel { last_seq: seq, ..before };
                let event = durable_event(id, seq, now, EventPayload::ChannelUpdated { channel: channel.clone() });
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok((channel, event))
            }

            async fn delete_channel(&self, id: ChannelId) -> Result<DeletedChannel> {
                let mut tx = self.begin_write().await?;
                // Taking the row lock first makes concurrent writers to this
                // channel wait, then find it gone.
                let locked = sqlx::query(&q("UPDATE channels SET updated_at = $1 WHERE id = $2"))
                    .bind(now_ms())
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if locked.rows_affected() == 0 {
                    return Err(Error::NotFound(Entity::Channel));
                }
                let channel = Self::channel_in(&mut *tx, id).await?;
                let rows = sqlx::query(&q("SELECT user_id FROM members WHERE channel_id = $1 ORDER BY user_id"))
                    .bind(id.0)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let members = rows
                    .iter()
                    .map(|r| text(r, 0).map(UserId::from_trusted))
                    .collect::<Result<Vec<_>>>()?;
                // `search_progress` first: an indexer working on this
                // channel holds its row until it commits, so once this
                // statement has waited for it, the index rows deleted next
                // include what that indexer wrote, and no later indexer
                // finds the channel.
                for statement in [
                    Some("DELETE FROM search_progress WHERE channel_id = $1"),
                    // SQLite: a trigger on `messages` does it (its index
                    // holds no channel id).
                    ($backend != Backend::Sqlite).then_some("DELETE FROM message_search WHERE channel_id = $1"),
                    Some("DELETE FROM read_marks WHERE channel_id = $1"),
                    Some("DELETE FROM reactions WHERE channel_id = $1"),
                    Some("DELETE FROM mentions WHERE channel_id = $1"),
                    Some("DELETE FROM channel_events WHERE channel_id = $1"),
                    Some("DELETE FROM member_batches WHERE channel_id = $1"),
                    Some("DELETE FROM messages WHERE channel_id = $1"),
                    Some("DELETE FROM members WHERE channel_id = $1"),
                    Some("DELETE FROM channels WHERE id = $1"),
                ]
                .into_iter()
                .flatten()
                {
                    sqlx::query(&q(statement))
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                // Not a stored event (the channel's log is gone with it),
                // but the application hears of it, at the channel's last seq.
                let deleted = ChannelEvent {
                    channel_id: id,
                    seq: channel.last_seq,
                    durable: false,
                    at: now_ms(),
                    payload: EventPayload::ChannelDeleted,
                };
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&deleted)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(DeletedChannel { channel, members })
            }

            async fn channel(&self, id: ChannelId) -> Result<Channel> {
                Self::channel_in(&self.read, id).await
            }

            async fn list_channels(&self, page: ChannelPage) -> Result<Vec<Channel>> {
                let rows = sqlx::query(&q(concat!(
                    "SELECT ",
                    channel_columns!(),
                    " FROM channels c WHERE c.id > $1 ORDER BY c.id LIMIT $2"
                )))
                .bind(page.after_id.map_or(0, |c| c.0))
                .bind(page_limit(page.limit))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter().map(|r| channel_row(r, 0)).collect()
            }

            async fn add_member(&self, id: ChannelId, user: &UserId, role: &Role) -> Result<AddedMember> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                if let Some(member) = Self::member_in(&mut *tx, id, user).await? {
                    return Ok(AddedMember { member, event: None });
                }
                let payload = serde_json::json!({ "role": role.as_str() }).to_string();
                // The event's seq comes first: taking it locks the channel
                // row, so concurrent adds of one user queue up behind it.
                let seq = Self::append_event(&mut tx, id, "member_joined", Some(user), None, Some(payload), now).await?;
                let inserted = sqlx::query(&q(
                    "INSERT INTO members (channel_id, user_id, role, joined_at, last_read_seq) \
                     VALUES ($1, $2, $3, $4, $5)",
                ))
                .bind(id.0)
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(now)
                .bind(seq)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        // Added concurrently: the other call wins, this one
                        // is the idempotent repeat (its seq is rolled back).
                        tx.rollback().await.map_err(db_error)?;
                        let member = self.member(id, user).await?.ok_or(Error::NotFound(Entity::Member))?;
                        return Ok(AddedMember { member, event: None });
                    }
                    Err(e) => return Err(db_error(e)),
                }
                let member = Self::member_in(&mut *tx, id, user).await?.ok_or(Error::NotFound(Entity::Member))?;
                let event = durable_event(
                    id,
                    seq,
                    now,
                    EventPayload::MemberJoined { user_id: user.clone(), role: role.clone() },
                );
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(AddedMember { member, event: Some(event) })
            }

            async fn remove_member(&self, id: ChannelId, user: &UserId) -> Result<ChannelEvent> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let seq = Self::append_event(&mut tx, id, "member_left", Some(user), None, None, now).await?;
                let removed = sqlx::query(&q("DELETE FROM members WHERE channel_id = $1 AND user_id = $2"))
                    .bind(id.0)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if removed.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Err(Error::NotFound(Entity::Member));
                }
                sqlx::query(&q("DELETE FROM read_marks WHERE channel_id = $1 AND user_id = $2"))
                    .bind(id.0)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                let event = durable_event(id, seq, now, EventPayload::MemberLeft { user_id: user.clone() });
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok(event)
            }

            async fn change_members(
                &self,
                id: ChannelId,
                add: &[UserId],
                remove: &[UserId],
                role: &Role,
            ) -> Result<MembershipChange> {
                let now = now_ms();
                let mut seen = std::collections::HashSet::with_capacity(add.len() + remove.len());
                let add: Vec<&UserId> = add.iter().filter(|u| seen.insert(u.as_str())).collect();
                let remove: Vec<&UserId> = remove.iter().filter(|u| seen.insert(u.as_str())).collect();
                let mut tx = self.begin_write().await?;
                // Taking no seq still locks the channel row (and finds it):
                // every membership writer queues behind it from here on, so
                // the memberships read next stay true until commit.
                Self::take_seqs(&mut tx, id, 0).await?;
                let mut members = std::collections::HashSet::new();
                let candidates: Vec<&UserId> = add.iter().chain(remove.iter()).copied().collect();
                // PostgreSQL: one statement joining a JSON array of the ids.
                // The chunked `IN (...)` lists get a generic plan once
                // prepared, and while the members table grows unanalyzed
                // that plan scans it whole for every chunk: measured,
                // 100,000 members in 10 requests took 94 s instead of 1 s.
                let by_json = $backend == Backend::Postgres;
                let ids_json = |users: &[&UserId]| {
                    serde_json::to_string(&users.iter().map(|u| u.as_str()).collect::<Vec<_>>())
                        .map_err(|e| Error::Internal(e.to_string()))
                };
                if by_json {
                    let rows = sqlx::query(&q(
                        "SELECT m.user_id FROM json_array_elements_text($2::json) AS u(id) \
                         JOIN members m ON m.channel_id = $1 AND m.user_id = u.id",
                    ))
                    .bind(id.0)
                    .bind(ids_json(&candidates)?)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    for row in rows {
                        members.insert(text(&row, 0)?);
                    }
                }
                for chunk in candidates.chunks(BULK_CHUNK).filter(|_| !by_json) {
                    let mut select = sqlx::QueryBuilder::<$db>::new("SELECT user_id FROM members WHERE channel_id = ");
                    select.push_bind(id.0).push(" AND user_id IN (");
                    let mut ids = select.separated(", ");
                    for user in chunk {
                        ids.push_bind(user.as_str().to_owned());
                    }
                    select.push(")").push($backend.latest_rows());
                    for row in select.build().fetch_all(&mut *tx).await.map_err(db_error)? {
                        members.insert(text(&row, 0)?);
                    }
                }
                let joining: Vec<&UserId> = add.iter().copied().filter(|u| !members.contains(u.as_str())).collect();
                let leaving: Vec<&UserId> = remove.iter().copied().filter(|u| members.contains(u.as_str())).collect();
                let mut change = MembershipChange {
                    added: joining.len(),
                    already_members: add.len() - joining.len(),
                    removed: leaving.len(),
                    not_members: remove.len() - leaving.len(),
                    events: Vec::with_capacity(joining.len() + leaving.len()),
                };
                let count = joining.len() + leaving.len();
                if count == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok(change);
                }
                // One event per direction: a user alone keeps the single
                // kind (what clients of the original schema know); several
                // are one batched event, whatever their number.
                let directions = usize::from(!joining.is_empty()) + usize::from(!leaving.is_empty());
                let first = Self::take_seqs(&mut tx, id, directions as i64).await?;
                let join_seq = first;
                let leave_seq = if joining.is_empty() { first } else { first + 1 };
                let mut events = Vec::with_capacity(directions);
                for (seq, users, joins) in [(join_seq, &joining, true), (leave_seq, &leaving, false)] {
                    if users.is_empty() {
                        continue;
                    }
                    let (kind, user, payload, event) = if let [single] = users.as_slice() {
                        if joins {
                            let payload = serde_json::json!({ "role": role.as_str() }).to_string();
                            let event = EventPayload::MemberJoined { user_id: (*single).clone(), role: role.clone() };
                            ("member_joined", Some(*single), Some(payload), event)
                        } else {
                            ("member_left", Some(*single), None, EventPayload::MemberLeft { user_id: (*single).clone() })
                        }
                    } else {
                        let batch = MemberBatch::of(users.iter().map(|u| (*u).clone()).collect());
                        let stored = StoredBatch {
                            users: batch.user_ids.iter().map(|u| u.as_str().to_owned()).collect(),
                            count: batch.count,
                            truncated: batch.truncated,
                            role: joins.then(|| role.as_str().to_owned()),
                        };
                        let payload = serde_json::to_string(&stored).map_err(|e| Error::Internal(e.to_string()))?;
                        if batch.truncated {
                            for chunk in users.chunks(BULK_CHUNK) {
                                let mut insert = sqlx::QueryBuilder::<$db>::new(
                                    "INSERT INTO member_batches (channel_id, seq, user_id) ",
                                );
                                insert.push_values(chunk, |mut row, user| {
                                    row.push_bind(id.0).push_bind(seq).push_bind(user.as_str().to_owned());
                                });
                                insert.build().execute(&mut *tx).await.map_err(db_error)?;
                            }
                        }
                        let event = if joins {
                            EventPayload::MembersJoined { batch, role: role.clone() }
                        } else {
                            EventPayload::MembersLeft { batch }
                        };
                        (if joins { "members_joined" } else { "members_left" }, None, Some(payload), event)
                    };
                    Self::insert_event(&mut tx, id, seq, kind, user, None, payload, now).await?;
                    events.push(durable_event(id, seq, now, event));
                }
                // The joiners' watermarks start at the join: nothing before
                // it counts as unread for them.
                let changes: Vec<(Seq, &UserId, bool)> = joining.iter().map(|u| (join_seq, *u, true)).collect();
                let joins: Vec<(Seq, &UserId)> = changes.iter().filter(|c| c.2).map(|c| (c.0, c.1)).collect();
                for chunk in joins.chunks(BULK_CHUNK) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO members (channel_id, user_id, role, joined_at, last_read_seq) ",
                    );
                    insert.push_values(chunk, |mut row, (seq, user)| {
                        row.push_bind(id.0)
                            .push_bind(user.as_str().to_owned())
                            .push_bind(role.as_str().to_owned())
                            .push_bind(now)
                            .push_bind(*seq);
                    });
                    insert.build().execute(&mut *tx).await.map_err(db_error)?;
                }
                if by_json && !leaving.is_empty() {
                    let ids = ids_json(&leaving)?;
                    for statement in [
                        "DELETE FROM members m USING json_array_elements_text($2::json) AS u(id) \
                         WHERE m.channel_id = $1 AND m.user_id = u.id",
                        "DELETE FROM read_marks r USING json_array_elements_text($2::json) AS u(id) \
                         WHERE r.channel_id = $1 AND r.user_id = u.id",
                    ] {
                        sqlx::query(&q(statement))
                            .bind(id.0)
                            .bind(ids.as_str())
                            .execute(&mut *tx)
                            .await
                            .map_err(db_error)?;
                    }
                }
                for chunk in leaving.chunks(BULK_CHUNK).filter(|_| !by_json) {
                    for table in ["DELETE FROM members WHERE channel_id = ", "DELETE FROM read_marks WHERE channel_id = "] {
                        let mut delete = sqlx::QueryBuilder::<$db>::new(table);
                        delete.push_bind(id.0).push(" AND user_id IN (");
                        let mut ids = delete.separated(", ");
                        for user in chunk {
                            ids.push_bind(user.as_str().to_owned());
                        }
                        delete.push(")");
                        delete.build().execute(&mut *tx).await.map_err(db_error)?;
                    }
                }
                Self::webhook_outbox(&mut tx, &events).await?;
                tx.commit().await.map_err(db_error)?;
                change.events = events;
                Ok(change)
            }

            async fn batch_users(&self, id: ChannelId, seq: Seq, only: Option<&UserId>) -> Result<Vec<UserId>> {
                let rows = match only {
                    Some(user) => sqlx::query(&q(
                        "SELECT user_id FROM member_batches WHERE channel_id = $1 AND seq = $2 AND user_id = $3",
                    ))
                    .bind(id.0)
                    .bind(seq)
                    .bind(user.as_str())
                    .fetch_all(&self.read)
                    .await,
                    None => sqlx::query(&q("SELECT user_id FROM member_batches WHERE channel_id = $1 AND seq = $2"))
                        .bind(id.0)
                        .bind(seq)
                        .fetch_all(&self.read)
                        .await,
                }
                .map_err(db_error)?;
                rows.iter().map(|r| text(r, 0).map(UserId::from_trusted)).collect()
            }

            async fn members_page(&self, id: ChannelId, after: Option<&UserId>, limit: u32) -> Result<Vec<Member>> {
                let mut tx = self.begin_read().await?;
                Self::channel_in(&mut *tx, id).await?;
                let rows = sqlx::query(&q(concat!(
                    "SELECT ",
                    member_columns!(),
                    " FROM members mb WHERE mb.channel_id = $1 AND mb.user_id > $2 ORDER BY mb.user_id LIMIT $3"
                )))
                .bind(id.0)
                // No user id is empty: "" sorts before every one.
                .bind(after.map_or("", UserId::as_str))
                .bind(page_limit(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                rows.iter().map(|r| member_row(r, 0)).collect()
            }

            async fn members(&self, id: ChannelId) -> Result<Vec<Member>> {
                let mut tx = self.begin_read().await?;
                Self::channel_in(&mut *tx, id).await?;
                let rows = sqlx::query(&q(concat!(
                    "SELECT ",
                    member_columns!(),
                    " FROM members mb WHERE mb.channel_id = $1 ORDER BY mb.user_id"
                )))
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                rows.iter().map(|r| member_row(r, 0)).collect()
            }

            async fn member(&self, id: ChannelId, user: &UserId) -> Result<Option<Member>> {
                Self::member_in(&self.read, id, user).await
            }

            async fn user_channel_seqs(&self, user: &UserId) -> Result<Vec<(ChannelId, Seq)>> {
                let rows = sqlx::query(&q(
                    "SELECT c.id, c.last_seq FROM members mb JOIN channels c ON c.id = mb.channel_id \
                     WHERE mb.user_id = $1 ORDER BY c.id",
                ))
                .bind(user.as_str())
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter().map(|row| Ok((ChannelId(int(row, 0)?), int(row, 1)?))).collect()
            }

            async fn small_channels_of(&self, user: &UserId, max_members: u32, limit: u32) -> Result<Vec<ChannelId>> {
                // A channel is small when it has no (max_members + 1)-th
                // member: the scalar subquery reads at most that many
                // index entries (MySQL refuses LIMIT only in IN subqueries).
                let rows = sqlx::query(&q(
                    "SELECT mb.channel_id FROM members mb WHERE mb.user_id = $1 AND \
                     (SELECT m2.user_id FROM members m2 WHERE m2.channel_id = mb.channel_id \
                      ORDER BY m2.user_id LIMIT 1 OFFSET $2) IS NULL \
                     ORDER BY mb.channel_id LIMIT $3",
                ))
                .bind(user.as_str())
                .bind(i64::from(max_members))
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter().map(|row| Ok(ChannelId(int(row, 0)?))).collect()
            }

            async fn last_seqs(&self, channels: &[ChannelId]) -> Result<Vec<(ChannelId, Seq)>> {
                let mut seqs = Vec::with_capacity(channels.len());
                for chunk in channels.chunks(500) {
                    let mut select = sqlx::QueryBuilder::<$db>::new("SELECT id, last_seq FROM channels WHERE id IN (");
                    let mut ids = select.separated(", ");
                    for channel in chunk {
                        ids.push_bind(channel.0);
                    }
                    select.push(")");
                    for row in select.build().fetch_all(&self.read).await.map_err(db_error)? {
                        seqs.push((ChannelId(int(&row, 0)?), int(&row, 1)?));
                    }
                }
                Ok(seqs)
            }

            async fn user_channels(&self, user: &UserId) -> Result<Vec<ChannelSummary>> {
                let mut tx = self.begin_read().await?;
                let rows = sqlx::query(&q(concat!(
                    "SELECT ",
                    channel_columns!(),
                    ", ",
                    member_columns!(),
                    " FROM members mb JOIN channels c ON c.id = mb.channel_id WHERE mb.user_id = $1 ORDER BY c.id"
                )))
                .bind(user.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                let counts = sqlx::query(&q(
                    "SELECT m.channel_id, COUNT(*) FROM members mb \
                     JOIN messages m ON m.channel_id = mb.channel_id AND m.seq > mb.last_read_seq \
                     WHERE mb.user_id = $1 AND m.sender <> $2 AND m.deleted_at IS NULL \
                     GROUP BY m.channel_id",
                ))
                .bind(user.as_str())
                .bind(user.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                // One grouped read for every channel's mention badge: asked
                // per channel, a user in many channels made one query each.
                let mention_counts = sqlx::query(&q(
                    "SELECT mn.channel_id, COUNT(*) FROM members mb \
                     JOIN mentions mn ON mn.channel_id = mb.channel_id AND mn.user_id = mb.user_id \
                     AND mn.seq > mb.last_read_seq \
                     WHERE mb.user_id = $1 GROUP BY mn.channel_id",
                ))
                .bind(user.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                let last = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM members mb JOIN messages m ON m.channel_id = mb.channel_id \
                     WHERE mb.user_id = $1 \
                     AND m.seq = (SELECT MAX(m2.seq) FROM messages m2 WHERE m2.channel_id = mb.channel_id)"
                )))
                .bind(user.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;

                let mut unread = std::collections::HashMap::new();
                for row in &counts {
                    unread.insert(int(row, 0)?, int(row, 1)?);
                }
                let mut mentions = std::collections::HashMap::new();
                for row in &mention_counts {
                    mentions.insert(int(row, 0)?, int(row, 1)?);
                }
                let mut last_messages = std::collections::HashMap::new();
                for row in &last {
                    let message = message_row(row, 0)?;
                    last_messages.insert(message.channel_id, message);
                }
                rows.iter()
                    .map(|row| {
                        let channel = channel_row(row, 0)?;
                        let member = member_row(row, 6)?;
                        Ok(ChannelSummary {
                            unread_count: unread.get(&channel.id.0).copied().unwrap_or(0),
                            unread_mention_count: mentions.get(&channel.id.0).copied().unwrap_or(0),
                            last_message: last_messages.remove(&channel.id),
                            channel,
                            member,
                        })
                    })
                    .collect()
            }

            async fn create_message(&self, new: &NewMessage) -> Result<StoredMessage> {
                // A retry is answered here, without a batch. This lookup is
                // only a shortcut: the batch finds an earlier message with
                // the same id by its unique index too. So while the
                // database is unreachable the send goes straight to the
                // batch writer, which refuses it at once, and a lookup
                // still waiting for a connection after `CLIENT_ID_LOOKUP`
                // (the pool would wait 5 s) leaves the answer to the batch.
                if let Some(client_id) = new.client_message_id.as_ref().filter(|_| !self.batcher.database_down()) {
                    let lookup = Self::message_by_client_id(&self.write, new, client_id.as_str());
                    match tokio::time::timeout(crate::sql::CLIENT_ID_LOOKUP, lookup).await {
                        Ok(Ok(Some(message))) => return Ok(StoredMessage { message, created: false }),
                        Ok(Ok(None)) | Ok(Err(Error::Unavailable(_))) | Err(_) => {}
                        Ok(Err(other)) => return Err(other),
                    }
                }
                self.batcher.submit(new.clone()).await
            }

            async fn edit_message(&self, id: MessageId, editor: &UserId, content: &MessageBody) -> Result<(Message, ChannelEvent)> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let before = Self::message_in(&mut *tx, id).await?;
                let seq = Self::append_event(&mut tx, before.channel_id, "message_edited", before.sender.user_id(), Some(id), None, now).await?;
                // Under the channel lock; refused, the rollback gives the seq back.
                Self::require_author(&mut tx, &before, Actor::User(editor), "edit").await?;
                // Checked after the channel lock: a concurrent delete wins.
                let edited = sqlx::query(&q(
                    "UPDATE messages SET content = $1, edited_at = $2 WHERE id = $3 AND deleted_at IS NULL",
                ))
                .bind(content.as_str())
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if edited.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Err(Error::Conflict("the message was deleted".into()));
                }
                let message = Self::message_in(&mut *tx, id).await?;
                let event = durable_event(message.channel_id, seq, now, EventPayload::MessageEdited { message: message.clone() });
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok((message, event))
            }

            async fn delete_message(&self, id: MessageId, by: Actor<'_>) -> Result<(Message, Option<ChannelEvent>)> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let before = Self::message_in(&mut *tx, id).await?;
                if before.is_deleted() {
                    // No event to order after a removal: any read will do.
                    Self::require_author(&mut tx, &before, by, "delete").await?;
                    return Ok((before, None));
                }
                let seq = Self::append_event(&mut tx, before.channel_id, "message_deleted", before.sender.user_id(), Some(id), None, now).await?;
                // Under the channel lock; refused, the rollback gives the seq back.
                Self::require_author(&mut tx, &before, by, "delete").await?;
                let deleted = sqlx::query(&q(
                    "UPDATE messages SET content = $1, deleted_at = $2, mentions = NULL WHERE id = $3 AND deleted_at IS NULL",
                ))
                .bind("")
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if deleted.rows_affected() == 0 {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok((self.message(id).await?, None));
                }
                // A tombstone keeps no content, reactions and mentions
                // included.
                for statement in ["DELETE FROM reactions WHERE message_id = $1", "DELETE FROM mentions WHERE message_id = $1"] {
                    sqlx::query(&q(statement)).bind(id.0).execute(&mut *tx).await.map_err(db_error)?;
                }
                let message = Self::message_in(&mut *tx, id).await?;
                let event = durable_event(message.channel_id, seq, now, EventPayload::MessageDeleted { message: message.clone() });
                Self::webhook_outbox(&mut tx, std::slice::from_ref(&event)).await?;
                tx.commit().await.map_err(db_error)?;
                Ok((message, Some(event)))
            }

            async fn create_message_with(&self, new: &NewMessage, extras: &MessageExtras) -> Result<StoredMessage> {
                Self::create_message_direct(&self.write, new, extras).await
            }

            async fn unread_mention_count(&self, channel: ChannelId, user: &UserId) -> Result<i64> {
                let row = sqlx::query(&q(
                    "SELECT COUNT(*) FROM mentions mn \
                     JOIN members mb ON mb.channel_id = mn.channel_id AND mb.user_id = mn.user_id \
                     WHERE mn.channel_id = $1 AND mn.user_id = $2 AND mn.seq > mb.last_read_seq",
                ))
                .bind(channel.0)
                .bind(user.as_str())
                .fetch_one(&self.read)
                .await
                .map_err(db_error)?;
                int(&row, 0)
            }

            async fn thread(&self, parent: MessageId, page: HistoryPage, limit: u32) -> Result<Vec<Message>> {
                self.message_page(seq_page_statements!("parent_id"), parent.0, page, limit).await
            }

            async fn add_reaction(&self, id: MessageId, user: &UserId, key: &ReactionKey) -> Result<(Message, Option<ChannelEvent>)> {
                self.change_reaction(id, user, key, true).await
            }

            async fn remove_reaction(&self, id: MessageId, user: &UserId, key: &ReactionKey) -> Result<(Message, Option<ChannelEvent>)> {
                self.change_reaction(id, user, key, false).await
            }

            async fn reactions(&self, id: MessageId, viewer: &UserId) -> Result<Vec<Reaction>> {
                let mut tx = self.begin_read().await?;
                let counts = sqlx::query(&q(
                    "SELECT reaction_key, COUNT(*), MIN(created_at) FROM reactions WHERE message_id = $1 \
                     GROUP BY reaction_key ORDER BY 3, 1",
                ))
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                let mine = sqlx::query(&q("SELECT reaction_key FROM reactions WHERE message_id = $1 AND user_id = $2"))
                    .bind(id.0)
                    .bind(viewer.as_str())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                let mine = mine.iter().map(|r| text(r, 0)).collect::<Result<std::collections::HashSet<_>>>()?;
                counts
                    .iter()
                    .map(|r| {
                        let key = text(r, 0)?;
                        Ok(Reaction { reacted_by_me: mine.contains(&key), count: int(r, 1)?, key })
                    })
                    .collect()
            }

            async fn message(&self, id: MessageId) -> Result<Message> {
                Self::message_in(&self.read, id).await
            }

            async fn message_by_seq(&self, channel: ChannelId, seq: Seq) -> Result<Message> {
                let row = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.channel_id = $1 AND m.seq = $2"
                )))
                .bind(channel.0)
                .bind(seq)
                .fetch_optional(&self.read)
                .await
                .map_err(db_error)?
                .ok_or(Error::NotFound(Entity::Message))?;
                message_row(&row, 0)
            }

            async fn history(&self, channel: ChannelId, page: HistoryPage, limit: u32) -> Result<Vec<Message>> {
                self.message_page(seq_page_statements!("channel_id"), channel.0, page, limit).await
            }

            async fn search_messages(&self, query: &SearchQuery, scope: &SearchScope, page: SearchPageRequest) -> Result<Vec<SearchHit>> {
                let Some(terms) = crate::search::engine_query($backend, query) else {
                    return Ok(Vec::new());
                };
                let sql = crate::search::statement($backend, scope);
                let mut statement = sqlx::query(&sql).bind(terms.clone());
                if $backend == Backend::MySql {
                    statement = statement.bind(terms);
                }
                statement = match scope {
                    SearchScope::Channel(channel) => statement.bind(channel.0),
                    SearchScope::MemberOf(user) => statement.bind(user.as_str()),
                    SearchScope::All => statement,
                };
                let rows = statement
                    .bind(page_limit(page.limit))
                    .bind(i64::from(page.offset))
                    .fetch_all(&self.read)
                    .await
                    .map_err(db_error)?;
                rows.iter()
                    .map(|row| {
                        Ok(SearchHit {
                            message: message_row(row, 0)?,
                            score: row.try_get::<f64, _>(13).map_err(db_error)?,
                        })
                    })
                    .collect()
            }

            async fn events_after(&self, channel: ChannelId, after: Seq, limit: u32) -> Result<Vec<ChannelEvent>> {
                let limit = page_limit(limit);
                let mut tx = self.begin_read().await?;
                let messages = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.channel_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3"
                )))
                .bind(channel.0)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                let events = sqlx::query(&q(concat!(
                    "SELECT e.seq, e.kind, e.user_id, e.payload, e.created_at, ",
                    message_columns!(),
                    " FROM channel_events e LEFT JOIN messages m ON m.id = e.message_id \
                     WHERE e.channel_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
                )))
                .bind(channel.0)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;

                let mut merged = Vec::with_capacity(messages.len() + events.len());
                for row in &messages {
                    let message = message_row(row, 0)?;
                    merged.push(durable_event(channel, message.seq, message.created_at, EventPayload::MessageCreated { message }));
                }
                for row in &events {
                    merged.push(Self::stored_event(channel, row)?);
                }
                // Each list holds the `limit` lowest seqs of its kind, so the
                // `limit` lowest of the union are all here.
                merged.sort_by_key(|e| e.seq);
                merged.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                Ok(merged)
            }

            async fn mark_read(&self, channel: ChannelId, user: &UserId, seq: Seq) -> Result<MarkedRead> {
                if seq < 0 {
                    return Err(Error::invalid("seq", "must not be negative"));
                }
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let last_seq = Self::channel_in(&mut *tx, channel).await?.last_seq;
                let target = seq.min(last_seq);
                let moved = sqlx::query(&q(
                    "UPDATE members SET last_read_seq = $1, last_read_at = $2 \
                     WHERE channel_id = $3 AND user_id = $4 AND last_read_seq < $5",
                ))
                .bind(target)
                .bind(now)
                .bind(channel.0)
                .bind(user.as_str())
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected()
                    > 0;
                let member = Self::member_in(&mut *tx, channel, user)
                    .await?
                    .ok_or_else(|| Error::NotMember { user: user.clone(), channel })?;
                if moved {
                    let latest = sqlx::query(&q(
                        "SELECT up_to_seq, read_at FROM read_marks WHERE channel_id = $1 AND user_id = $2 \
                         ORDER BY up_to_seq DESC LIMIT 1",
                    ))
                    .bind(channel.0)
                    .bind(user.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let recent = match &latest {
                        Some(row) if int(row, 1)? > now - READ_MARK_WINDOW_MS => Some(int(row, 0)?),
                        _ => None,
                    };
                    let statement = if recent.is_some() {
                        "UPDATE read_marks SET up_to_seq = $1, read_at = $2 \
                         WHERE channel_id = $3 AND user_id = $4 AND up_to_seq = $5"
                    } else {
                        "INSERT INTO read_marks (up_to_seq, read_at, channel_id, user_id) VALUES ($1, $2, $3, $4)"
                    };
                    let statement = q(statement);
                    let mut query = sqlx::query(&statement)
                        .bind(target)
                        .bind(now)
                        .bind(channel.0)
                        .bind(user.as_str());
                    if let Some(previous) = recent {
                        query = query.bind(previous);
                    }
                    query.execute(&mut *tx).await.map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(MarkedRead { member, moved })
            }

            async fn unread_count(&self, channel: ChannelId, user: &UserId) -> Result<i64> {
                let row = sqlx::query(&q(
                    "SELECT COUNT(*) FROM messages m \
                     JOIN members mb ON mb.channel_id = m.channel_id AND mb.user_id = $1 \
                     WHERE m.channel_id = $2 AND m.seq > mb.last_read_seq AND m.sender <> $3 AND m.deleted_at IS NULL",
                ))
                .bind(user.as_str())
                .bind(channel.0)
                .bind(user.as_str())
                .fetch_one(&self.read)
                .await
                .map_err(db_error)?;
                int(&row, 0)
            }

            async fn unread_messages(&self, user: &UserId, limit: u32) -> Result<Vec<Message>> {
                let rows = sqlx::query(&q(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM members mb JOIN messages m ON m.channel_id = mb.channel_id AND m.seq > mb.last_read_seq \
                     WHERE mb.user_id = $1 AND m.sender <> $2 AND m.deleted_at IS NULL \
                     ORDER BY m.channel_id, m.seq LIMIT $3"
                )))
                .bind(user.as_str())
                .bind(user.as_str())
                .bind(page_limit(limit))
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter().map(|r| message_row(r, 0)).collect()
            }

            async fn seen_by(&self, channel: ChannelId, seq: Seq) -> Result<Vec<SeenBy>> {
                let rows = sqlx::query(&q(
                    "SELECT r.user_id, MIN(r.read_at) FROM read_marks r \
                     WHERE r.channel_id = $1 AND r.up_to_seq >= $2 \
                     GROUP BY r.user_id ORDER BY 2, 1",
                ))
                .bind(channel.0)
                .bind(seq)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|r| {
                        Ok(SeenBy {
                            user_id: UserId::from_trusted(text(r, 0)?),
                            seen_at: int(r, 1)?,
                        })
                    })
                    .collect()
            }

            async fn read_marks(&self, channel: ChannelId, user: &UserId) -> Result<Vec<ReadMark>> {
                let rows = sqlx::query(&q(
                    "SELECT up_to_seq, read_at FROM read_marks WHERE channel_id = $1 AND user_id = $2 ORDER BY up_to_seq",
                ))
                .bind(channel.0)
                .bind(user.as_str())
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
                rows.iter()
                    .map(|r| Ok(ReadMark { up_to_seq: int(r, 0)?, read_at: int(r, 1)? }))
                    .collect()
            }

            async fn index_search(&self, scope: &SearchScope, budget: u32) -> Result<SearchIndexed> {
                let budget = i64::from(budget.max(1));
                let statement = q(crate::search::behind_statement(scope));
                let mut behind = sqlx::query(&statement);
                behind = match scope {
                    SearchScope::Channel(channel) => behind.bind(channel.0),
                    SearchScope::MemberOf(user) => behind.bind(user.as_str()),
                    SearchScope::All => behind,
                };
                // One more than can be handled: whether any is left over.
                let rows = behind.bind(budget + 1).fetch_all(&self.read).await.map_err(db_error)?;
                let mut indexed = SearchIndexed { messages: 0, done: true };
                let mut channels = std::collections::VecDeque::new();
                for row in rows.iter() {
                    if channels.len() as i64 >= budget {
                        indexed.done = false;
                        break;
                    }
                    let channel = ChannelId(int(row, 0)?);
                    if opt_int(row, 2)?.is_some() || Self::start_progress(&self.write, channel).await? {
                        channels.push_back(channel);
                    }
                }
                let mut left = budget;
                while !channels.is_empty() {
                    if left <= 0 {
                        indexed.done = false;
                        break;
                    }
                    let part = left.min(crate::search::INDEX_TRANSACTION_SEQS);
                    let (messages, charged) = Self::index_channels(&self.write, &mut channels, part).await?;
                    indexed.messages += messages;
                    left -= charged;
                }
                Ok(indexed)
            }

            async fn rows_referencing(&self, channel: ChannelId) -> Result<i64> {
                let mut total = 0;
                for statement in [
                    "SELECT COUNT(*) FROM channels WHERE id = $1",
                    "SELECT COUNT(*) FROM members WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM messages WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM channel_events WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM read_marks WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM reactions WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM mentions WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM member_batches WHERE channel_id = $1",
                    "SELECT COUNT(*) FROM search_progress WHERE channel_id = $1",
                    // SQLite's index holds no channel id: index rows of
                    // messages that are gone, whichever channel (the
                    // parameter is bound but unused).
                    if $backend == Backend::Sqlite {
                        "SELECT COUNT(*) FROM message_search WHERE rowid NOT IN (SELECT id FROM messages) AND $1 IS NOT NULL"
                    } else {
                        "SELECT COUNT(*) FROM message_search WHERE channel_id = $1"
                    },
                ] {
                    let row = sqlx::query(&q(statement))
                        .bind(channel.0)
                        .fetch_one(&self.write)
                        .await
                        .map_err(db_error)?;
                    total += int(&row, 0)?;
                }
                Ok(total)
            }
        }
    };
}
