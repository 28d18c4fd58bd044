//! A fresh, isolated database per test, so tests run in parallel.
//!
//! - SQLite: a file in a new temporary directory.
//! - MySQL/MariaDB: a new database on `CLACKS_TEST_MYSQL_URL`
//!   (default `mysql://root@127.0.0.1:3306`).
//! - PostgreSQL: a new schema in `CLACKS_TEST_POSTGRES_URL`
//!   (default `postgres://postgres@127.0.0.1:5432/test`), selected through
//!   the connection's `search_path`.
//!
//! When a server is unreachable the test prints a loud SKIPPED line and
//! returns early, unless `CLACKS_TEST_REQUIRE_BACKENDS=1`, which turns the
//! skip into a failure (CI sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    MySql,
    Postgres,
}

impl TestBackend {
    pub fn name(self) -> &'static str {
        match self {
            TestBackend::Sqlite => "sqlite",
            TestBackend::MySql => "mysql",
            TestBackend::Postgres => "postgres",
        }
    }
}

pub fn mysql_base_url() -> String {
    std::env::var("CLACKS_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn postgres_base_url() -> String {
    std::env::var("CLACKS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn backends_required() -> bool {
    std::env::var("CLACKS_TEST_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v == "true")
}

/// Reports an unreachable service: a loud skip, or a failure in CI.
///
/// The skip banner goes straight to the process's standard error: libtest
/// captures `eprintln!` (and shows it only for failing tests), so a plain
/// `cargo test` would never show it.
pub fn skip_or_fail(what: &str, why: &str) {
    let (what, why) = (clacks_core::redact_url(what), clacks_core::redact_url(why));
    if backends_required() {
        panic!("{what} is required (CLACKS_TEST_REQUIRE_BACKENDS=1) but unreachable: {why}");
    }
    let banner = format!(
        "\n*** SKIPPED: {what} unreachable ({why}); set CLACKS_TEST_REQUIRE_BACKENDS=1 to fail instead ***\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), banner.as_bytes());
}

/// An isolated database that is dropped with this value.
pub struct TestDatabase {
    pub backend: TestBackend,
    /// The `DATABASE_URL` a store or server should use.
    pub url: String,
    cleanup: Option<Cleanup>,
    _dir: Option<tempfile::TempDir>,
}

enum Cleanup {
    MySql { admin_url: String, name: String },
    Postgres { admin_url: String, schema: String },
}

fn unique_name() -> String {
    format!("clacks_t_{}", uuid::Uuid::new_v4().simple())
}

impl TestDatabase {
    /// A fresh database, or `None` (after a loud skip message) when the
    /// server is unreachable and backends are not required.
    pub async fn create(backend: TestBackend) -> Option<TestDatabase> {
        match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("clacks.db").display());
                Some(TestDatabase {
                    backend,
                    url,
                    cleanup: None,
                    _dir: Some(dir),
                })
            }
            TestBackend::MySql => {
                let admin_url = mysql_base_url();
                let mut conn = match connect::<sqlx::MySqlConnection>(&admin_url).await {
                    Ok(conn) => conn,
                    Err(why) => {
                        skip_or_fail(&format!("MySQL/MariaDB at {admin_url}"), &why);
                        return None;
                    }
                };
                let name = unique_name();
                sqlx::raw_sql(&format!(
                    "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                ))
                .execute(&mut conn)
                .await
                .expect("create test database");
                let _ = conn.close().await;
                let url = format!("{}/{name}", admin_url.trim_end_matches('/'));
                Some(TestDatabase {
                    backend,
                    url,
                    cleanup: Some(Cleanup::MySql { admin_url, name }),
                    _dir: None,
                })
            }
            TestBackend::Postgres => {
                let admin_url = postgres_base_url();
                let mut conn = match connect::<sqlx::PgConnection>(&admin_url).await {
                    Ok(conn) => conn,
                    Err(why) => {
                        skip_or_fail(&format!("PostgreSQL at {admin_url}"), &why);
                        return None;
                    }
                };
                let schema = unique_name();
                sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test schema");
                let _ = conn.close().await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
                Some(TestDatabase {
                    backend,
                    url,
                    cleanup: Some(Cleanup::Postgres { admin_url, schema }),
                    _dir: None,
                })
            }
        }
    }
}

async fn connect<C: Connection>(url: &str) -> Result<C, String> {
    match tokio::time::timeout(Duration::from_secs(5), C::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5 s".into()),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        // Drop may run inside a runtime; do the async cleanup on a thread of
        // its own, and wait so the next test starts from a tidy server.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                match cleanup {
                    Cleanup::MySql { admin_url, name } => {
                        if let Ok(mut conn) = connect::<sqlx::MySqlConnection>(&admin_url).await {
                            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name}"))
                                .execute(&mut conn)
                                .await;
                        }
                    }
                    Cleanup::Postgres { admin_url, schema } => {
                        if let Ok(mut conn) = connect::<sqlx::PgConnection>(&admin_url).await {
                            let _ =
                                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                                    .execute(&mut conn)
                                    .await;
                        }
                    }
                }
            });
        })
        .join();
    }
}
