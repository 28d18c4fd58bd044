//! Where the server under test is, and the two HTTP clients the tool
//! needs: the management API (channels, tokens, posting as a user) and
//! GraphQL mutations on the client port.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::metrics::Counters;

/// One server node.
#[derive(Debug, Clone)]
pub struct Node {
    /// `http://host:port` of the client listener.
    pub client_url: String,
    /// `http://host:port` of the management listener.
    pub management_url: String,
    /// Its process id, to read RSS and CPU from `/proc` (unknown when the
    /// server runs elsewhere or in-process).
    pub pid: Option<u32>,
}

impl Node {
    /// `ws://host:port/graphql`.
    pub fn ws_url(&self) -> String {
        let rest = self
            .client_url
            .strip_prefix("http://")
            .unwrap_or(&self.client_url);
        format!("ws://{}/graphql", rest.trim_end_matches('/'))
    }

    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.client_url.trim_end_matches('/'))
    }
}

/// The deployment under test: one node, or several sharing a database.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub nodes: Vec<Node>,
    /// HS256 key shared with the server, to mint tokens locally. Without
    /// it, tokens come from `GET /api/v1/jwt/{uid}` (slower).
    pub jwt_secret: Option<String>,
    /// Bearer token for the management API, if the server requires one.
    pub management_token: Option<String>,
    /// Behind a balancer that routes by room: subscribers of a channel add
    /// `?room={channel}` to the WebSocket URL.
    pub room_affinity: bool,
    /// Server processes behind a balancer (`nodes` is then the balancer).
    pub backend_pids: Vec<u32>,
}

impl Target {
    /// The WebSocket URL for a subscriber of `channel` on node `i`.
    pub fn ws_url_for(&self, i: usize, channel: i64) -> String {
        let url = self.node(i).ws_url();
        if self.room_affinity {
            format!("{url}?room={channel}")
        } else {
            url
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i.min(self.nodes.len().saturating_sub(1))]
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.pid)
            .chain(self.backend_pids.iter().copied())
            .collect()
    }
}

/// How messages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum SendVia {
    /// `createMessage` over HTTP POST /graphql with the sender's JWT.
    Graphql,
    /// `POST /api/v1/channel/{id}/messages` with `senderId` (management).
    Api,
}

/// One message to send.
pub struct Outgoing<'a> {
    pub via: SendVia,
    /// Index of the node to send through.
    pub node: usize,
    pub channel: i64,
    /// The sending user's id (management API) and token (GraphQL).
    pub sender: &'a str,
    pub token: &'a str,
    pub content: &'a str,
}

/// HTTP access to a target.
#[derive(Clone)]
pub struct Api {
    pub target: Target,
    http: reqwest::Client,
}

const CREATE_MESSAGE: &str =
    "mutation($c: ID!, $t: String!) { createMessage(input: {channel: $c, content: $t}) { seq } }";

impl Api {
    pub fn new(target: Target, pool: usize) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool.max(8))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { target, http })
    }

    fn management(
        &self,
        method: reqwest::Method,
        node: usize,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/api/v1{path}",
            self.target.node(node).management_url.trim_end_matches('/')
        );
        let req = self.http.request(method, url);
        match &self.target.management_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Waits until every node answers `/healthz` on both ports.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for node in &self.target.nodes {
            for base in [&node.client_url, &node.management_url] {
                let url = format!("{}/healthz", base.trim_end_matches('/'));
                loop {
                    match self.http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => break,
                        _ if tokio::time::Instant::now() > deadline => {
                            bail!("{url} not healthy within {timeout:?}")
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
        Ok(())
    }

    /// `_sum` and `_count` of every histogram/summary in `/metrics` of
    /// node `node` (empty when the endpoint is unavailable).
    pub async fn metric_sums(&self, node: usize) -> std::collections::BTreeMap<String, f64> {
        let url = format!(
            "{}/metrics",
            self.target.node(node).management_url.trim_end_matches('/')
        );
        let mut req = self.http.get(url);
        if let Some(t) = &self.target.management_token {
            req = req.bearer_auth(t);
        }
        let text = match req.send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => return Default::default(),
        };
        parse_metric_sums(&text)
    }

    /// `POST /api/v1/channel`, returns the channel id.
    pub async fn create_channel(&self, name: &str, users: &[String]) -> anyhow::Result<i64> {
        // A channel is created with at most 1,000 users; the rest join
        // through bulk membership changes.
        let (initial, rest) = users.split_at(users.len().min(1_000));
        let channel = self.create_channel_with(name, initial).await?;
        for chunk in rest.chunks(10_000) {
            let resp = self
                .management(
                    reqwest::Method::PATCH,
                    0,
                    &format!("/channel/{channel}/users"),
                )
                .json(&json!({ "add": chunk }))
                .send()
                .await
                .context("PATCH /api/v1/channel/{id}/users")?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                bail!("PATCH /api/v1/channel/{channel}/users: {status} {body}");
            }
        }
        Ok(channel)
    }

    async fn create_channel_with(&self, name: &str, users: &[String]) -> anyhow::Result<i64> {
        let resp = self
            .management(reqwest::Method::POST, 0, "/channel")
            .json(&json!({"displayName": name, "initialUsers": users}))
            .send()
            .await
            .context("POST /api/v1/channel")?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST /api/v1/channel: {status} {body}");
        }
        body.get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("POST /api/v1/channel: no id in {body}"))
    }

    /// A token for `user`: minted locally when the secret is known, else
    /// from `GET /api/v1/jwt/{uid}`.
    pub async fn token(&self, user: &str) -> anyhow::Result<String> {
        if let Some(secret) = &self.target.jwt_secret {
            return mint_token(secret, user, Duration::from_secs(6 * 3600));
        }
        let resp = self
            .management(reqwest::Method::GET, 0, &format!("/jwt/{user}"))
            .send()
            .await
            .context("GET /api/v1/jwt")?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match body.as_str() {
            Some(t) if status.is_success() => Ok(t.to_owned()),
            _ => bail!("GET /api/v1/jwt/{user}: {status} {body}"),
        }
    }

    /// Sends one message and waits for the ack (the server acks after the
    /// commit). Records ack latency and errors in `counters`. Returns the
    /// message's seq when acked.
    pub async fn send(&self, msg: &Outgoing<'_>, counters: &Counters, key: usize) -> Option<i64> {
        use std::sync::atomic::Ordering::Relaxed;
        counters.sent.fetch_add(1, Relaxed);
        let start = crate::now_ns();
        let result = match msg.via {
            SendVia::Graphql => {
                self.send_graphql(msg.node, msg.channel, msg.token, msg.content)
                    .await
            }
            SendVia::Api => {
                self.send_api(msg.node, msg.channel, msg.sender, msg.content)
                    .await
            }
        };
        match result {
            Ok(seq) => {
                counters
                    .ack_latency
                    .record(key, (crate::now_ns() - start) / 1000);
                counters.acked.fetch_add(1, Relaxed);
                Some(seq)
            }
            Err((kind, detail)) => {
                counters.send_failed.fetch_add(1, Relaxed);
                counters.send_errors.add(&kind, || detail);
                None
            }
        }
    }

    async fn send_graphql(
        &self,
        node: usize,
        channel: i64,
        token: &str,
        content: &str,
    ) -> Result<i64, (String, String)> {
        let body = json!({
            "query": CREATE_MESSAGE,
            "variables": {"c": channel.to_string(), "t": content},
        });
        let resp = self
            .http
            .post(self.target.node(node).graphql_url())
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .map_err(|e| ("http".to_owned(), e.to_string()))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| (format!("http {status}"), e.to_string()))?;
        if let Some(seq) = value
            .pointer("/data/createMessage/seq")
            .and_then(Value::as_i64)
        {
            return Ok(seq);
        }
        let code = value
            .pointer("/errors/0/extensions/code")
            .and_then(Value::as_str)
            .unwrap_or("no data");
        Err((format!("graphql {code}"), value.to_string()))
    }

    async fn send_api(
        &self,
        node: usize,
        channel: i64,
        sender: &str,
        content: &str,
    ) -> Result<i64, (String, String)> {
        let resp = self
            .management(
                reqwest::Method::POST,
                node,
                &format!("/channel/{channel}/messages"),
            )
            .json(&json!({"content": content, "senderId": sender}))
            .send()
            .await
            .map_err(|e| ("http".to_owned(), e.to_string()))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| (format!("http {status}"), e.to_string()))?;
        if status.is_success()
            && let Some(seq) = value.get("seq").and_then(Value::as_i64)
        {
            return Ok(seq);
        }
        Err((format!("api {}", status.as_u16()), value.to_string()))
    }
}

/// Sums `_sum`/`_count` samples of the Prometheus text format by metric
/// name (labels ignored).
pub fn parse_metric_sums(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if !(name.ends_with("_sum") || name.ends_with("_count")) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// An HS256 token for `user` with `sub`, `iat`, `nbf` (a minute back, for
/// clock skew) and `exp`.
pub fn mint_token(secret: &str, user: &str, ttl: Duration) -> anyhow::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "sub": user,
        "iat": now,
        "nbf": now.saturating_sub(60),
        "exp": now + ttl.as_secs(),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("signing a token")
}

/// Message content carrying the send time: `cb1:<now_ns>:<tag>` padded
/// with `.` to `size` bytes.
pub fn stamped_content(tag: u64, size: usize) -> String {
    let mut s = format!("cb1:{}:{tag}:", crate::now_ns());
    while s.len() < size {
        s.push('.');
    }
    s
}

/// The send time stamped into a message, if `text` (a whole WebSocket
/// frame) carries one.
pub fn stamp_of(text: &str) -> Option<u64> {
    number_after(text, "cb1:")
}

/// The unsigned integer right after the first `marker` in `text`.
pub fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let c = stamped_content(7, 64);
        assert_eq!(c.len(), 64);
        let frame = format!(
            r#"{{"id":"1","type":"next","payload":{{"data":{{"message":{{"seq":42,"content":"{c}"}}}}}}}}"#
        );
        assert!(stamp_of(&frame).is_some());
        assert_eq!(number_after(&frame, "\"seq\":"), Some(42));
        assert_eq!(stamp_of("{\"type\":\"ping\"}"), None);
    }

    #[test]
    fn metric_sums() {
        let text = "# HELP x\nclacks_store_batch_size_sum 120\nclacks_store_batch_size_count 4\nclacks_x_count{a=\"b\"} 2\nclacks_x_count{a=\"c\"} 3\nother 1\n";
        let m = parse_metric_sums(text);
        assert_eq!(m["clacks_store_batch_size_sum"], 120.0);
        assert_eq!(m["clacks_x_count"], 5.0);
        assert!(!m.contains_key("other"));
    }

    #[test]
    fn tokens_are_hs256() {
        let t =
            mint_token("k".repeat(32).as_str(), "alice", Duration::from_secs(60)).expect("token");
        assert_eq!(t.split('.').count(), 3);
    }

    #[test]
    fn ws_url_of_node() {
        let n = Node {
            client_url: "http://127.0.0.1:8000".into(),
            management_url: String::new(),
            pid: None,
        };
        assert_eq!(n.ws_url(), "ws://127.0.0.1:8000/graphql");
    }
}
