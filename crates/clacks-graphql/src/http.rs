//! GraphQL over HTTP: `POST /graphql` with a JSON body (a request or a
//! batch), `GET /graphql?query=...` for queries only, the explorer page.
//!
//! Every answer is HTTP 200 with a GraphQL response (errors carry
//! `extensions.code`), except a body that is not JSON at all (400).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, BatchResponse, Request, Response};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use clacks_core::Error;
use clacks_service::Caller;
use futures::FutureExt;

use crate::AppState;
use crate::documents::with_parsed_query;
use crate::error::{BAD_USER_INPUT, INTERNAL, coded, finalize, gql};
use crate::schema::RequestCaller;

const EXPLORER: &str = include_str!("explorer.html");

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive); `None` when there is no such header.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, Error>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(value.to_str().ok().and_then(strip_bearer).ok_or_else(|| {
        Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
    }))
}

/// `Bearer xyz` (any casing of the scheme) → `xyz`.
pub fn strip_bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    match value.split_once(char::is_whitespace) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        _ => None,
    }
}

/// The caller of an HTTP request: `Ok(None)` without a token.
fn http_caller(state: &AppState, headers: &HeaderMap) -> Result<Option<Arc<Caller>>, Error> {
    match bearer(headers) {
        None => Ok(None),
        Some(token) => state
            .service
            .authenticate(token?)
            .map(|caller| Some(Arc::new(caller))),
    }
}

fn refused(error: Error) -> axum::response::Response {
    json(Response::from_errors(vec![
        gql(error).into_server_error(Default::default()),
    ]))
}

fn json(response: impl serde::Serialize) -> axum::response::Response {
    axum::Json(response).into_response()
}

/// Runs one request, turning a panic into an `INTERNAL` error.
pub async fn execute(state: &AppState, request: Request) -> Response {
    let run = AssertUnwindSafe(state.schema.execute(request)).catch_unwind();
    match run.await {
        Ok(response) => finalize(response),
        Err(_) => {
            tracing::error!("a GraphQL request panicked");
            Response::from_errors(vec![coded(INTERNAL, "internal error")])
        }
    }
}

pub async fn post_graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(e) => {
            let error = coded(
                BAD_USER_INPUT,
                format!("the body is not a GraphQL request: {e}"),
            );
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(Response::from_errors(vec![error])),
            )
                .into_response();
        }
    };
    let caller = match http_caller(&state, &headers) {
        Ok(caller) => caller,
        Err(error) => return refused(error),
    };
    match batch {
        BatchRequest::Single(request) => {
            let request = with_parsed_query(request);
            json(execute(&state, request.data(RequestCaller(caller))).await)
        }
        BatchRequest::Batch(requests) => {
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                let request = with_parsed_query(request);
                responses.push(execute(&state, request.data(RequestCaller(caller.clone()))).await);
            }
            json(BatchResponse::Batch(responses))
        }
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `GET /graphql`: a WebSocket upgrade, the explorer for a browser, or a
/// query given in the query string (mutations are refused over GET).
pub async fn get_graphql(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> axum::response::Response {
    if let Ok(upgrade) = upgrade {
        return crate::ws::upgrade(state, peer, &headers, upgrade);
    }
    let query = query.unwrap_or_default();
    if query.is_empty() && wants_html(&headers) {
        return Html(EXPLORER).into_response();
    }
    let mut request = match async_graphql::http::parse_query_string(&query) {
        Ok(request) => request,
        Err(e) => {
            return json(Response::from_errors(vec![coded(
                BAD_USER_INPUT,
                format!("invalid GraphQL GET request: {e}"),
            )]));
        }
    };
    if let Ok(document) = request.parsed_query() {
        let mutation = match &document.operations {
            DocumentOperations::Single(op) => op.node.ty != OperationType::Query,
            DocumentOperations::Multiple(ops) => {
                ops.values().any(|op| op.node.ty != OperationType::Query)
            }
        };
        if mutation {
            return json(Response::from_errors(vec![coded(
                BAD_USER_INPUT,
                "only queries may be sent with GET; use POST",
            )]));
        }
    }
    let caller = match http_caller(&state, &headers) {
        Ok(caller) => caller,
        Err(error) => return refused(error),
    };
    json(execute(&state, request.data(RequestCaller(caller))).await)
}

pub async fn explorer() -> Html<&'static str> {
    Html(EXPLORER)
}

pub async fn schema_sdl(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.schema.sdl(),
    )
}
