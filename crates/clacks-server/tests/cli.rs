//! The `clacks` binary as an operator meets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn clacks() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clacks"));
    for var in [
        "DATABASE_URL",
        "JWT_SECRET",
        "CLACKS_CLIENT_ADDR",
        "CLACKS_MANAGEMENT_ADDR",
        "CLACKS_MANAGEMENT_TOKEN",
        "CLACKS_NATS_URL",
    ] {
        command.env_remove(var);
    }
    command
}

#[test]
fn help_documents_every_option() {
    let output = clacks().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "DATABASE_URL",
        "JWT_SECRET",
        "CLACKS_CLIENT_ADDR",
        "CLACKS_MANAGEMENT_ADDR",
        "CLACKS_MANAGEMENT_TOKEN",
        "CLACKS_NATS_URL",
        "CLACKS_LOG_FORMAT",
        "CLACKS_LOG",
        "serve",
        "migrate",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let output = clacks().env("DATABASE_URL", "nonsense").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_public_management_port_needs_a_token() {
    let output = clacks()
        .env("CLACKS_MANAGEMENT_ADDR", "0.0.0.0:7999")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLACKS_MANAGEMENT_TOKEN"), "{stderr}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 exchange written by hand (any method, any path): the
/// response's status and body, or `None` when nothing answered.
fn raw_http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn wait_for_health(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if raw_http(port, "GET", "/healthz").is_some_and(|(status, _)| status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A `clacks` process on free loopback ports over a fresh SQLite file,
/// killed when dropped.
struct Spawned {
    child: std::process::Child,
    client: u16,
    management: u16,
    dir: tempfile::TempDir,
}

impl Spawned {
    fn start() -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let (client, management) = (free_port(), free_port());
        let child = clacks()
            .current_dir(dir.path())
            .env("CLACKS_CLIENT_ADDR", format!("127.0.0.1:{client}"))
            .env("CLACKS_MANAGEMENT_ADDR", format!("127.0.0.1:{management}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Spawned {
            child,
            client,
            management,
            dir,
        };
        assert!(
            wait_for_health(client) && wait_for_health(management),
            "the server answers /healthz on both ports"
        );
        spawned
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The series `/metrics` shows: each sample line without its value.
fn metric_series(management: u16) -> std::collections::BTreeSet<String> {
    let (status, text) = raw_http(management, "GET", "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

/// Requests are the client's choice; metric labels are not: invented
/// methods and random paths, on either port, add no series to `/metrics`.
#[test]
fn invented_methods_and_paths_add_no_metric_series() {
    let server = Spawned::start();
    let ports = [server.client, server.management];
    let attack = |round: &str| {
        for port in ports {
            for (method, path) in [
                (format!("BREW{round}"), "/healthz".to_owned()),
                (format!("X-{round}"), format!("/{round}/x")),
                ("GET".to_owned(), format!("/random-{round}")),
                ("POST".to_owned(), format!("/api/v1/{round}")),
            ] {
                let (status, _) = raw_http(port, &method, &path).unwrap();
                assert!((400..500).contains(&status), "{method} {path}: {status}");
            }
        }
    };
    // The first of each kind adds its fixed series (method `other`, route
    // `unmatched`, status `4xx`); scraping twice records the scrape itself.
    attack("warmup");
    metric_series(server.management);
    let before = metric_series(server.management);
    let rounds: Vec<String> = (0..25)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for round in &rounds {
        attack(round);
    }
    let after = metric_series(server.management);
    assert_eq!(
        before.symmetric_difference(&after).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "series appeared or vanished"
    );
    for series in &after {
        assert!(
            !series.contains("warmup") && !rounds.iter().any(|r| series.contains(r.as_str())),
            "a client's method or path became a label: {series}"
        );
    }
    assert!(
        after
            .iter()
            .any(|s| s.contains(r#"method="other""#) && s.contains(r#"route="unmatched""#)),
        "invented methods are counted as `other`: {after:#?}"
    );
}

/// With no configuration the server runs on `clacks.db` in the working
/// directory, serves health on both ports, and stops cleanly on SIGTERM.
#[test]
fn runs_with_no_configuration_and_stops_on_sigterm() {
    let mut server = Spawned::start();
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        server.dir.path().join("clacks.db").exists(),
        "clacks.db created in the working directory"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM stops it cleanly: {status:?}"
    );
}

#[test]
fn migrate_subcommand_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let output = clacks()
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("m.db").exists());
}

/// An unreachable database is retried with backoff (and each attempt
/// logged) instead of crashing in a loop.
#[test]
fn an_unreachable_database_is_retried() {
    let mut child = clacks()
        .env("DATABASE_URL", "mysql://root@127.0.0.1:1/clacks")
        .env("CLACKS_CLIENT_ADDR", "127.0.0.1:0")
        .env("CLACKS_MANAGEMENT_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(still_running, "it keeps retrying: {logs}");
    assert!(
        logs.matches("database unreachable, retrying").count() >= 2,
        "{logs}"
    );
}

/// `clacks migrate` creates the schema on MySQL/MariaDB and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_tables_on_server_databases() {
    use clacks_testkit::{TestBackend, TestDatabase};
    use sqlx::Connection;
    for backend in [TestBackend::MySql, TestBackend::Postgres] {
        let Some(db) = TestDatabase::create(backend).await else {
            continue;
        };
        let url = db.url.clone();
        let output = tokio::task::spawn_blocking(move || {
            clacks().arg("migrate").env("DATABASE_URL", url).output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let count_query = "SELECT COUNT(*) FROM channels";
        let count: i64 = match backend {
            TestBackend::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(count_query)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            _ => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(count_query)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count, 0, "{} has the channels table", backend.name());
    }
}

/// The README's configuration table names every option `--help` shows.
#[test]
fn readme_documents_every_option() {
    let output = clacks().arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut checked = 0;
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        assert!(
            readme.contains(&format!("`{name}`")),
            "README's configuration table lacks {name}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "found only {checked} options in --help");
}
