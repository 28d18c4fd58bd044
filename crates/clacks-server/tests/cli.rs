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

fn wait_for_health(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ =
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// With no configuration the server runs on `clacks.db` in the working
/// directory, serves health on both ports, and stops cleanly on SIGTERM.
#[test]
fn runs_with_no_configuration_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (client, management) = (free_port(), free_port());
    let mut child = clacks()
        .current_dir(dir.path())
        .env("CLACKS_CLIENT_ADDR", format!("127.0.0.1:{client}"))
        .env("CLACKS_MANAGEMENT_ADDR", format!("127.0.0.1:{management}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = wait_for_health(client) && wait_for_health(management);
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(healthy, "both listeners answered /healthz");
    assert!(
        dir.path().join("clacks.db").exists(),
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

/// SIGTERM while clients are sending: every client is closed with 1001,
/// every send that was acknowledged is stored with the seq it was
/// acknowledged with (and seqs stay gap-free), and the process exits
/// cleanly within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_sends_acks_what_it_stored_then_closes_with_1001() {
    use futures::{SinkExt, StreamExt};
    use serde_json::{Value, json};
    use sqlx::Connection;
    use tokio_tungstenite::tungstenite::Message;

    const SECRET: &str = "clacks-cli-test-secret-0123456789abcdef";
    const USERS: usize = 6;
    const GRACE: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("clacks.db").display());
    let (client, management) = (free_port(), free_port());
    let mut child = clacks()
        .env("DATABASE_URL", &database_url)
        .env("JWT_SECRET", SECRET)
        .env("CLACKS_CLIENT_ADDR", format!("127.0.0.1:{client}"))
        .env("CLACKS_MANAGEMENT_ADDR", format!("127.0.0.1:{management}"))
        .env("CLACKS_SHUTDOWN_GRACE", GRACE.to_string())
        .env("CLACKS_SEND_RATE", "100000")
        .env("CLACKS_SEND_BURST", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy =
        tokio::task::spawn_blocking(move || wait_for_health(client) && wait_for_health(management))
            .await
            .unwrap();
    assert!(healthy, "the server came up");

    let users: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();
    let created: Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{management}/api/v1/channel"))
        .json(&json!({"displayName": "busy", "initialUsers": users}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channel = created["id"].as_i64().unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let acked_total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for user in users {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": user, "nbf": now, "exp": now + 3600}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let url = format!("ws://127.0.0.1:{client}/graphql");
        let acked_total = acked_total.clone();
        // Sends one message after another until the server closes the
        // socket; returns the acknowledged (clientMessageId, seq) pairs and
        // the close code.
        clients.push(tokio::spawn(async move {
            let mut request =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    url.as_str(),
                )
                .unwrap();
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let init = json!({"type": "connection_init", "payload": {"token": token}});
            ws.send(Message::text(init.to_string())).await.unwrap();
            let mut acked = Vec::new();
            let mut sent = 0;
            let mut in_flight = false;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .expect("the server answers or closes");
                let value: Value = match frame {
                    Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
                    Some(Ok(Message::Close(close))) => {
                        return (acked, close.map(|c| u16::from(c.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return (acked, None),
                };
                match value["type"].as_str() {
                    Some("connection_ack") => {}
                    Some("next") => {
                        let message = &value["payload"]["data"]["createMessage"];
                        let seq = message["seq"].as_i64().expect("an acknowledged send");
                        acked.push((format!("{user}-{sent}"), seq));
                        acked_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    Some("complete") => in_flight = false,
                    Some("ping") => {
                        let pong = json!({"type": "pong"}).to_string();
                        let _ = ws.send(Message::text(pong)).await;
                        continue;
                    }
                    _ => panic!("unexpected {value}"),
                }
                if !in_flight {
                    sent += 1;
                    let send = json!({"id": sent.to_string(), "type": "subscribe", "payload": {
                        "query": "mutation($c: ID!, $t: String!, $m: String) { createMessage(input: {channel: $c, content: $t, clientMessageId: $m}) { seq } }",
                        "variables": {"c": channel.to_string(), "t": "hi", "m": format!("{user}-{sent}")},
                    }});
                    if ws.send(Message::text(send.to_string())).await.is_err() {
                        return (acked, None);
                    }
                    in_flight = true;
                }
            }
        }));
    }

    // Traffic flows: every client has had a few acks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_total.load(std::sync::atomic::Ordering::Relaxed) < USERS * 5 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().to_string();
    let terminated = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();

    let mut acked = Vec::new();
    for client in clients {
        let (acks, close) = client.await.unwrap();
        assert_eq!(close, Some(1001), "every client sees the shutdown close");
        acked.extend(acks);
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(GRACE + 5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "exits cleanly within the grace period: {status:?} after {:?}",
        terminated.elapsed()
    );

    let mut db = sqlx::SqliteConnection::connect(&database_url)
        .await
        .unwrap();
    for (client_message_id, seq) in &acked {
        let stored: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM messages WHERE channel_id = ? AND client_message_id = ?",
        )
        .bind(channel)
        .bind(client_message_id)
        .fetch_all(&mut db)
        .await
        .unwrap();
        assert_eq!(
            stored,
            [*seq],
            "{client_message_id} is stored once, as acknowledged"
        );
    }
    let (count, last): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM messages WHERE channel_id = ?")
            .bind(channel)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(count, last, "seqs are gap-free");
    assert!(acked.len() >= USERS * 5);
}
