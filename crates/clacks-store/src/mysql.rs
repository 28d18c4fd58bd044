//! MySQL 8 / MariaDB 10.6+ backend.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::PoolSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Message batches in flight: InnoDB releases a transaction's row locks
/// before its log flush, so the next batch runs its statements while the
/// previous one's commit waits for the disk.
const PIPELINE: usize = 2;

pub struct MySqlStore {
    write: MySqlPool,
    batcher: crate::batch::Batcher,
    read: MySqlPool,
}

impl MySqlStore {
    pub async fn connect(url: &str, settings: &PoolSettings) -> clacks_core::Result<Self> {
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| clacks_core::Error::invalid("DATABASE_URL", e.to_string()))?;
        // One direct connection first: an unreachable server then fails at
        // once with its real reason, not a pool timeout seconds later.
        let probe = tokio::time::timeout(
            settings.acquire_timeout,
            <sqlx::mysql::MySqlConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| clacks_core::Error::Unavailable("connecting timed out".into()))?
        .map_err(crate::db_error)?;
        // MariaDB has `INSERT ... RETURNING` (10.5+), MySQL 8 does not.
        let mut probe = probe;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut probe)
            .await
            .map_err(crate::db_error)?;
        let insert_returning =
            version.to_ascii_lowercase().contains("mariadb") && !settings.mysql8_statements;
        // MariaDB 11.6+ by default refuses to lock or update a row changed
        // since the transaction's snapshot (taken at its first plain read),
        // which a batch meets by design: with the MySQL 8 statements it reads
        // its new seqs, then locks the senders' memberships, which others
        // may have changed meanwhile. A batch relies on its locks, not on a
        // snapshot, so its connections turn that check off.
        let snapshot_check = sqlx::query("SHOW VARIABLES LIKE 'innodb_snapshot_isolation'")
            .fetch_optional(&mut probe)
            .await
            .map_err(crate::db_error)?
            .is_some();
        let _ = sqlx::Connection::close(probe).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(crate::db_error)?;
        let depth = settings.batch_pipeline.unwrap_or(PIPELINE).max(1);
        let batches = MySqlPoolOptions::new()
            .max_connections(depth as u32)
            .acquire_timeout(
                settings
                    .acquire_timeout
                    .min(crate::batch::BATCH_CONNECT_TIMEOUT),
            )
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if snapshot_check {
                        sqlx::Executor::execute(
                            &mut *conn,
                            "SET SESSION innodb_snapshot_isolation = OFF",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.statement_cache_capacity(crate::BATCH_STATEMENT_CACHE));
        Ok(MySqlStore {
            batcher: Self::message_batcher(&batches, &pool, depth, insert_returning),
            write: pool.clone(),
            read: pool,
        })
    }
}

sql_store!(
    MySqlStore,
    sqlx::MySql,
    Backend::MySql,
    MIGRATOR,
    "START TRANSACTION READ ONLY"
);

webhook_store!(MySqlStore, sqlx::MySql, Backend::MySql);
