//! The `clacks` binary as an operator meets it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, started through `sh` under the usual umask (022) so the
/// modes of the files it creates are its own choice, without the calling
/// environment's configuration.
fn clacks() -> Command {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        r#"umask 022 && exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_clacks"),
    ]);
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
        "token",
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

/// A limit set under its old name is refused at startup rather than
/// silently dropped.
#[test]
fn a_renamed_variable_is_a_clear_error() {
    let output = clacks()
        .env("CLACKS_GRAPHQL_MAX_COMPLEXITY", "500")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLACKS_GRAPHQL_MAX_COST"), "{stderr}");
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
        Spawned::start_with(&[])
    }

    /// Started with extra environment variables.
    fn start_with(env: &[(&str, &str)]) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let (client, management) = (free_port(), free_port());
        let child = clacks()
            .current_dir(dir.path())
            .envs(env.iter().copied())
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

/// `clacks token ARGS` in `dir` with `env`: exit code, stdout, stderr.
fn mint(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = clacks()
        .current_dir(dir)
        .envs(env.iter().copied())
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `{ me { id name claims } }` over HTTP with `token`: the `me` object, or
/// the whole answer when there is none.
fn graphql_me(port: u16, token: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let body = r#"{"query":"{ me { id name claims } }"}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    let answer: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {response}");
    });
    match answer["data"]["me"] {
        serde_json::Value::Null => answer,
        ref me => me.clone(),
    }
}

/// `clacks token` prints only a token, signed with the secret the server
/// generated and keeps in the database (no `JWT_SECRET`), that the server
/// accepts with the name, claims and lifetime asked for; with a configured
/// secret and issuer, the token carries the issuer the server requires.
#[test]
fn token_subcommand_mints_what_the_server_accepts() {
    use jsonwebtoken::{DecodingKey, Validation};
    let server = Spawned::start();
    let (code, stdout, stderr) = mint(
        server.dir.path(),
        &[],
        &[
            "alice",
            "--name",
            "Alice",
            "--ttl",
            "90m",
            "--claim",
            r#"team={"id":3}"#,
            "--claim",
            "admin=true",
            "--claim",
            "plan=pro",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.strip_suffix('\n').unwrap();
    assert!(
        !token.contains(char::is_whitespace),
        "only the token: {stdout:?}"
    );
    let me = graphql_me(server.client, token);
    assert_eq!(me["id"], "alice", "{me}");
    assert_eq!(me["name"], "Alice", "{me}");
    let claims = &me["claims"];
    assert_eq!(claims["team"], serde_json::json!({"id": 3}), "{me}");
    assert_eq!(claims["admin"], true, "{me}");
    assert_eq!(claims["plan"], "pro", "{me}");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap();
    assert_eq!(lifetime, 90 * 60, "{me}");

    const SECRET: &str = "clacks-cli-token-secret-0123456789abcdef";
    let env = [
        ("JWT_SECRET", SECRET),
        ("CLACKS_JWT_ISSUER", "https://app.example"),
    ];
    let server = Spawned::start_with(&env);
    let (code, stdout, stderr) = mint(server.dir.path(), &env, &["bob"]);
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim_end();
    assert_eq!(graphql_me(server.client, token)["id"], "bob");
    let mut validation = Validation::default();
    validation.set_issuer(&["https://app.example"]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
    let claims = decoded.claims;
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 86_400, "CLACKS_TOKEN_TTL's default: {claims}");
}

/// What the management API refuses, `clacks token` refuses: reserved
/// claims, lifetimes out of range, an invalid user id; and a ttl that is
/// not a duration. Each is a message on stderr, nothing on stdout, exit 2.
#[test]
fn token_subcommand_refuses_reserved_claims_and_bad_ttls() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("JWT_SECRET", "clacks-cli-token-secret-0123456789abcdef")];
    for (args, expected) in [
        (&["alice", "--claim", "sub=bob"][..], "sub is set by Clacks"),
        (&["alice", "--claim", "exp=1"][..], "exp is set by Clacks"),
        (&["alice", "--claim", "aud=x"][..], "aud is set by Clacks"),
        (&["alice", "--ttl", "0"][..], "ttl"),
        (&["alice", "--ttl", "366d"][..], "ttl"),
        (&["alice", "--ttl", "soon"][..], "--ttl"),
        (&["alice", "--ttl", "5y"][..], "--ttl"),
        (&["alice", "--claim", "novalue"][..], "KEY=VALUE"),
        (&[" alice"][..], "user id"),
    ] {
        let (code, stdout, stderr) = mint(dir.path(), &env, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
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
/// directory (owner-only: it holds the generated JWT secret), serves health
/// on both ports, and stops cleanly on SIGTERM.
#[test]
fn runs_with_no_configuration_and_stops_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Spawned::start();
    for file in ["clacks.db", "clacks.db-wal", "clacks.db-shm"] {
        let metadata = std::fs::metadata(server.dir.path().join(file));
        let mode = metadata.map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600), "{file} is owner-only");
    }
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
        status.is_some_and(|s| s.success()),
        "SIGTERM stops it cleanly: {status:?}"
    );
}

/// A database file others can read is used as it is, with a warning.
#[test]
fn a_world_readable_database_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = clacks()
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", path.display()))
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");
    assert!(logs.contains("chmod 600"), "{logs}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "an operator's file keeps its mode");
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

/// `--help` names the variables it reads, never the values of those that
/// may hold a secret.
#[test]
fn help_never_prints_secrets_from_the_environment() {
    let secrets = [
        (
            "DATABASE_URL",
            "mysql://app:db-pass-4f1c@127.0.0.1/chat",
            "db-pass-4f1c",
        ),
        (
            "CLACKS_NATS_URL",
            "nats://n:nats-pass-9c2e@127.0.0.1:4222",
            "nats-pass-9c2e",
        ),
        ("JWT_SECRET", "jwt-secret-77ab", "jwt-secret-77ab"),
        (
            "CLACKS_MANAGEMENT_TOKEN",
            "mgmt-token-31bd",
            "mgmt-token-31bd",
        ),
    ];
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
    ] {
        let output = clacks()
            .args(args)
            .envs(secrets.iter().map(|(name, value, _)| (name, value)))
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let printed = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        for (name, _, secret) in secrets {
            assert!(printed.contains(name), "{args:?} names {name}");
            assert!(
                !printed.contains(secret),
                "{args:?} prints {name}:\n{printed}"
            );
        }
    }
}

/// Credentials in `CLACKS_NATS_URL` (user and password, or a token)
/// authenticate against a NATS server that requires them, and no log line
/// prints them, even at debug level.
#[test]
fn nats_url_credentials_authenticate_and_stay_out_of_the_logs() {
    if Command::new("nats-server")
        .arg("--version")
        .output()
        .is_err()
    {
        clacks_testkit::skip_or_fail("the nats-server binary", "not on PATH");
        return;
    }
    for (auth_args, url_credentials, secret) in [
        (
            &["--user", "alice", "--pass", "nats-pw-5e1d"][..],
            "alice:nats-pw-5e1d",
            "nats-pw-5e1d",
        ),
        (
            &["--auth", "nats-token-8a3f"][..],
            "nats-token-8a3f",
            "nats-token-8a3f",
        ),
    ] {
        let nats_port = free_port();
        let mut nats = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .args(auth_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("clacks.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let (client, management) = (free_port(), free_port());
        let mut server = clacks()
            .current_dir(dir.path())
            .env("CLACKS_CLIENT_ADDR", format!("127.0.0.1:{client}"))
            .env("CLACKS_MANAGEMENT_ADDR", format!("127.0.0.1:{management}"))
            .env(
                "CLACKS_NATS_URL",
                format!("nats://{url_credentials}@127.0.0.1:{nats_port}"),
            )
            .env("CLACKS_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connected = false;
        while !connected && Instant::now() < deadline {
            connected = raw_http(management, "GET", "/metrics")
                .is_some_and(|(_, text)| text.lines().any(|l| l == "clacks_nats_connected 1"));
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
        let _ = nats.kill();
        let _ = nats.wait();
        let logs = std::fs::read_to_string(&log_path).unwrap();
        assert!(connected, "{auth_args:?}: connected to NATS:\n{logs}");
        assert!(
            !logs.contains(secret),
            "{auth_args:?}: a log line prints the secret:\n{logs}"
        );
    }
}
