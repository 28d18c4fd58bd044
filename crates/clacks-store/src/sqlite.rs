//! SQLite backend: the embedded default. WAL mode, one writer connection
//! (SQLite has a single write lock anyway; queueing in the pool is cheaper
//! than busy-waiting on it) and a pool of readers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::PoolSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    write: SqlitePool,
    batcher: crate::batch::Batcher,
    read: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, settings: &PoolSettings) -> clacks_core::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| clacks_core::Error::invalid("DATABASE_URL", e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged message survives power loss, not only a
            // process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(crate::db_error)?;
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(options.read_only(true))
                .await
                .map_err(crate::db_error)?
        };
        Ok(SqliteStore {
            // One writer connection: a second batch could only wait for it.
            batcher: Self::message_batcher(&write, &write, 1, true),
            write,
            read,
        })
    }
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    Backend::Sqlite,
    MIGRATOR,
    "BEGIN"
);
