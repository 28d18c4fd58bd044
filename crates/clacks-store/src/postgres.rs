//! PostgreSQL 13+ backend.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::PoolSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Message batches in flight (see the MySQL store). PostgreSQL keeps row
/// locks until the commit is flushed, so a second batch overlaps only its
/// statements that do not touch the previous batch's channels.
const PIPELINE: usize = 2;

pub struct PgStore {
    write: PgPool,
    batcher: crate::batch::Batcher,
    read: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, settings: &PoolSettings) -> clacks_core::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| clacks_core::Error::invalid("DATABASE_URL", e.to_string()))?;
        // One direct connection first: an unreachable server then fails at
        // once with its real reason, not a pool timeout seconds later.
        let probe = tokio::time::timeout(
            settings.acquire_timeout,
            <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| clacks_core::Error::Unavailable("connecting timed out".into()))?
        .map_err(crate::db_error)?;
        let _ = sqlx::Connection::close(probe).await;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(crate::db_error)?;
        let depth = settings.batch_pipeline.unwrap_or(PIPELINE).max(1);
        let batches = PgPoolOptions::new()
            .max_connections(depth as u32)
            .acquire_timeout(
                settings
                    .acquire_timeout
                    .min(crate::batch::BATCH_CONNECT_TIMEOUT),
            )
            .connect_lazy_with(options.statement_cache_capacity(crate::BATCH_STATEMENT_CACHE));
        Ok(PgStore {
            batcher: Self::message_batcher(&batches, &pool, depth, true),
            write: pool.clone(),
            read: pool,
        })
    }
}

sql_store!(
    PgStore,
    sqlx::Postgres,
    Backend::Postgres,
    MIGRATOR,
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
);

webhook_store!(PgStore, sqlx::Postgres, Backend::Postgres);
