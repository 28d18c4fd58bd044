//! Test clients: JWT signing and a small GraphQL-over-WebSocket client
//! speaking either protocol frame by frame.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TEST_JWT_SECRET;

pub const MODERN: &str = "graphql-transport-ws";
pub const LEGACY: &str = "graphql-ws";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn sign(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

pub fn token_with(claims: Value) -> String {
    sign(claims, TEST_JWT_SECRET.as_bytes())
}

/// Tokens every JWT rule must reject, by name.
pub fn bad_tokens(user: &str) -> Vec<(&'static str, String)> {
    let now = now();
    let b64 = |bytes: &[u8]| base64url(bytes);
    vec![
        (
            "expired",
            token_with(json!({"sub": user, "exp": now - 600, "nbf": now - 700})),
        ),
        (
            "nbf in the future",
            token_with(json!({"sub": user, "exp": now + 3600, "nbf": now + 600})),
        ),
        (
            "wrong key",
            sign(
                json!({"sub": user, "exp": now + 3600, "nbf": now}),
                b"some-other-secret-0123456789abcdef",
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(json!({"sub": user, "exp": now + 3600, "nbf": now})
                    .to_string()
                    .as_bytes())
            ),
        ),
        (
            "missing sub",
            token_with(json!({"exp": now + 3600, "nbf": now})),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ]
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: &'static str,
}

/// What the server sent: a JSON frame, or the close.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Closed(u16, String),
}

/// An upgrade the server refused: its HTTP status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with an HTTP error.
    Refused(Refused),
    /// No answer: the connection or the handshake failed.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(refused) => {
                write!(f, "upgrade refused: {} {}", refused.status, refused.body)
            }
            ConnectError::Failed(why) => f.write_str(why),
        }
    }
}

impl Ws {
    pub async fn connect(url: &str, protocol: &'static str, header: Option<&str>) -> Ws {
        let headers: Vec<(&str, &str)> = header.map(|h| ("Authorization", h)).into_iter().collect();
        Ws::try_connect(url, protocol, &headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Connects with extra request headers; an upgrade refused with an
    /// HTTP answer, or a handshake that failed (a node or a balancer going
    /// down), is an `Err`.
    pub async fn try_connect(
        url: &str,
        protocol: &'static str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, ConnectError> {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
            request.headers_mut().append(name, value.parse().unwrap());
        }
        let (stream, response) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                return Err(ConnectError::Refused(Refused {
                    status: response.status().as_u16(),
                    body: serde_json::from_slice(body).unwrap_or(Value::Null),
                }));
            }
            Err(other) => {
                return Err(ConnectError::Failed(format!(
                    "connecting to {url}: {other}"
                )));
            }
        };
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        Ok(Ws { stream, protocol })
    }

    /// Connects and completes `connection_init` with `token` in the payload.
    pub async fn open(url: &str, protocol: &'static str, token: &str) -> Ws {
        let ws = Ws::try_open(url, protocol, token).await;
        ws.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Ws::open`], with a failed handshake or a close before
    /// `connection_ack` as an error.
    pub async fn try_open(url: &str, protocol: &'static str, token: &str) -> Result<Ws, String> {
        let mut ws = Ws::try_connect(url, protocol, &[])
            .await
            .map_err(|e| e.to_string())?;
        ws.try_send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}))
            .await?;
        match ws.frame().await {
            Frame::Json(ack) if ack["type"] == "connection_ack" => Ok(ws),
            Frame::Json(other) => panic!("expected connection_ack, got {other}"),
            Frame::Closed(code, reason) => Err(format!("closed {code} {reason} before the ack")),
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Like [`Ws::send`], with a broken socket as an error.
    pub async fn try_send(&mut self, value: Value) -> Result<(), String> {
        self.stream
            .send(Message::text(value.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// The next frame, answering pings and skipping keep-alives.
    pub async fn frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("no frame within 10 s");
            match next {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap();
                    match value["type"].as_str() {
                        Some("ka") => continue,
                        Some("ping") => {
                            // A broken socket shows as the close on the next read.
                            let _ = self.try_send(json!({"type": "pong"})).await;
                            continue;
                        }
                        _ => return Frame::Json(value),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Frame::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Frame::Closed(1005, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(1006, String::new()),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.frame().await {
            Frame::Json(value) => value,
            Frame::Closed(code, reason) => panic!("closed {code} {reason}"),
        }
    }

    /// Waits for the close; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            if let Frame::Closed(code, reason) = self.frame().await {
                return (code, reason);
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == MODERN {
            "subscribe"
        } else {
            "start"
        };
        self.send(
            json!({"id": id, "type": kind, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// The next result payload (`next` / `data`) of any operation.
    pub async fn next_payload(&mut self) -> (String, Value) {
        let frame = self.recv().await;
        let kind = frame["type"].as_str().unwrap_or_default();
        assert!(
            kind == "next" || kind == "data",
            "expected a result, got {frame}"
        );
        (
            frame["id"].as_str().unwrap().to_owned(),
            frame["payload"].clone(),
        )
    }
}
