//! Management API over HTTP (issue 3): every endpoint, every error status
//! and the auth rules on each backend, the original API's exact shapes, and
//! the OpenAPI snapshot.

mod auth;
mod bulk;
mod conformance;
mod endpoints;
mod errors;
mod host;
mod openapi;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::helpers::TestApp;

/// One HTTP exchange, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status; returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "content type of a {status}; body: {}",
            self.text
        );
        let body = &self.json;
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:clacks:problem:")),
            "{body}"
        );
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        body
    }

    /// Asserts a 2xx JSON answer with this status; returns its body.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        if !self.text.is_empty() {
            assert_eq!(self.content_type(), "application/json", "{}", self.text);
        }
        &self.json
    }
}

/// Sends `method path` under `/api/v1` with an optional JSON body.
pub async fn call(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Reply {
    let mut request = app.http.request(method, app.api(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request).await
}

/// Sends a prepared request.
pub async fn read(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

pub async fn get(app: &TestApp, path: &str) -> Reply {
    call(app, Method::GET, path, None).await
}

pub async fn post(app: &TestApp, path: &str, body: Value) -> Reply {
    call(app, Method::POST, path, Some(body)).await
}

pub async fn put(app: &TestApp, path: &str, body: Value) -> Reply {
    call(app, Method::PUT, path, Some(body)).await
}

pub async fn patch(app: &TestApp, path: &str, body: Value) -> Reply {
    call(app, Method::PATCH, path, Some(body)).await
}

pub async fn delete(app: &TestApp, path: &str) -> Reply {
    call(app, Method::DELETE, path, None).await
}

/// Creates a channel over HTTP, returns its id.
pub async fn create_channel(app: &TestApp, name: &str, users: &[&str]) -> i64 {
    let reply = post(
        app,
        "/channel",
        serde_json::json!({"displayName": name, "initialUsers": users}),
    )
    .await;
    reply.ok(200)["id"].as_i64().expect("id")
}
