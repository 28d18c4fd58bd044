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
