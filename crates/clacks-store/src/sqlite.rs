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
        if !in_memory {
            owner_only_file(options.get_filename());
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .after_release(|connection, _| Box::pin(not_left_in_a_transaction(connection)))
            .connect_with(options.clone())
            .await
            .map_err(crate::db_error)?;
        let read = if in_memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(settings.max_connections.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .after_release(|connection, _| Box::pin(not_left_in_a_transaction(connection)))
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

/// Whether a connection handed back to its pool may be kept: not when it is
/// still in a transaction that nothing can end. sqlx's SQLite `begin_with`
/// (ours: `BEGIN IMMEDIATE` for writes, `BEGIN` for reads) has the
/// transaction open before its last await; a future dropped there (a client
/// that went away mid-request, a subscription closed while it reads its
/// backlog) leaves no `Transaction` to roll back, and the connection would
/// go back to the pool still inside it: every later `begin_with` on it
/// fails ("non-zero transaction depth"), and on the one write connection
/// that stops every write and holds the write lock. Closed instead (the
/// pool opens another). The ping first lets the worker run what is queued,
/// such as the rollback of a `Transaction` dropped the usual way.
async fn not_left_in_a_transaction(
    connection: &mut sqlx::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    connection.ping().await?;
    let clean = !connection.is_in_transaction();
    if !clean {
        tracing::debug!(
            "a database connection was left in a transaction by a dropped request; closing it"
        );
    }
    Ok(clean)
}

/// The database file holds every message and the generated JWT secret, so
/// a new one is created owner-only (0600) before SQLite opens it (SQLite
/// would follow the umask, usually world-readable); its -wal and -shm files
/// take the database file's mode. An existing file readable by other users
/// is left as it is, with a warning. Any other failure is SQLite's to report
/// when it opens the file.
#[cfg(unix)]
fn owner_only_file(path: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    if !matches!(&created, Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists) {
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %std::path::Path::new(&file).display(),
                mode = format_args!("{mode:03o}"),
                "other users of this machine may read the SQLite database, which holds every \
                 message and the generated JWT secret: `chmod 600` it"
            );
        }
    }
}

#[cfg(not(unix))]
fn owner_only_file(_path: &std::path::Path) {}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    Backend::Sqlite,
    MIGRATOR,
    "BEGIN"
);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Store;
    use clacks_core::{DisplayName, UserId};

    /// A connection handed back inside a transaction, as a request dropped
    /// within sqlx's `begin_with` leaves it (begun, no `Transaction` to roll
    /// it back: here, one forgotten), is not used again: the next reads and
    /// writes on the one-connection pools work.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let settings = PoolSettings {
            max_connections: 1,
            ..PoolSettings::default()
        };
        let store = SqliteStore::connect(&url, &settings).await.unwrap();
        store.migrate().await.unwrap();
        let alice = UserId::parse("alice").unwrap();
        let channel = store
            .create_channel(
                &DisplayName::parse("c").unwrap(),
                None,
                std::slice::from_ref(&alice),
            )
            .await
            .unwrap()
            .id;
        for (pool, begin) in [(&store.read, "BEGIN"), (&store.write, "BEGIN IMMEDIATE")] {
            let mut connection = pool.acquire().await.unwrap();
            let transaction = sqlx::Connection::begin_with(&mut *connection, begin)
                .await
                .unwrap();
            std::mem::forget(transaction);
            drop(connection);
            store.events_after(channel, 0, 10).await.expect("a read");
            store.mark_read(channel, &alice, 0).await.expect("a write");
        }
    }
}

webhook_store!(SqliteStore, sqlx::Sqlite, Backend::Sqlite);
