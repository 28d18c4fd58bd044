//! MySQL 8 / MariaDB 10.6+ backend.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::PoolSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

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
        let _ = sqlx::Connection::close(probe).await;
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(crate::db_error)?;
        Ok(MySqlStore {
            batcher: Self::message_batcher(&pool, insert_returning),
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
