//! GraphQL over HTTP: `POST /graphql` with a JSON body (a request or a
//! batch), `GET /graphql?query=...` for queries only.
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
use axum::response::{IntoResponse, Redirect};
use clacks_core::Error;
use clacks_service::Caller;
use clacks_service::auth::{BearerScheme, bearer_token};
use futures::FutureExt;

use crate::AppState;
use crate::error::{BAD_USER_INPUT, INTERNAL, coded, finalize, gql};
use crate::guard::Admitted;
use crate::schema::RequestCaller;

/// The token of an `Authorization: Bearer <token>` header; `None` when
/// there is no such header.
pub fn bearer(headers: &HeaderMap) -> Option<Result<&str, Error>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| bearer_token(v, BearerScheme::Required))
            .ok_or_else(|| {
                Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
            }),
    )
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

/// Runs one request the guard admitted, as `caller`, turning a panic into
/// an `INTERNAL` error.
async fn execute(state: &AppState, request: Request, caller: Option<Arc<Caller>>) -> Response {
    let schema = match caller {
        Some(_) => &state.schema,
        None => &state.anonymous,
    };
    let run = AssertUnwindSafe(schema.execute(request.data(RequestCaller(caller)))).catch_unwind();
    match run.await {
        Ok(response) => finalize(response),
        Err(_) => {
            tracing::error!("a GraphQL request panicked");
            Response::from_errors(vec![coded(INTERNAL, "internal error")])
        }
    }
}

/// Guards, charges the caller for, then runs, one operation.
async fn run(state: &AppState, mut request: Request, caller: &Option<Arc<Caller>>) -> Response {
    match admit(state, &mut request, caller) {
        Ok(_) => execute(state, request, caller.clone()).await,
        Err(refused) => *refused,
    }
}

/// The guard, then the caller's query-cost budget (callers without a token
/// only reach fields that answer `UNAUTHENTICATED`, and no database).
fn admit(
    state: &AppState,
    request: &mut Request,
    caller: &Option<Arc<Caller>>,
) -> Result<Admitted, Box<Response>> {
    let admitted = state
        .guard
        .admit(request, caller.is_some())
        .map_err(|refusal| Box::new(refusal.into_response()))?;
    if let Some(caller) = caller {
        state
            .service
            .charge_query_cost(caller, admitted.cost)
            .map_err(|error| {
                Box::new(Response::from_errors(vec![
                    gql(error).into_server_error(Default::default()),
                ]))
            })?;
    }
    Ok(admitted)
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
        BatchRequest::Single(request) => json(run(&state, request, &caller).await),
        BatchRequest::Batch(requests) => {
            // Refused whole, before any of it runs.
            if let Err(refusal) = state.guard.admit_batch(requests.len()) {
                return json(refusal.into_response());
            }
            let mut responses = Vec::with_capacity(requests.len());
            for request in requests {
                responses.push(run(&state, request, &caller).await);
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

/// `GET /graphql`: a WebSocket upgrade, GraphiQL for a browser, or a
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
        return Redirect::temporary("/graphiql").into_response();
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
    let caller = match http_caller(&state, &headers) {
        Ok(caller) => caller,
        Err(error) => return refused(error),
    };
    let admitted = match admit(&state, &mut request, &caller) {
        Ok(admitted) => admitted,
        Err(refused) => return json(*refused),
    };
    let mutation = match &admitted.document.operations {
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
    json(execute(&state, request, caller).await)
}

/// The schema's SDL: like introspection, for callers with a token unless
/// introspection is public.
pub async fn schema_sdl(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    if !state.config.public_introspection {
        match http_caller(&state, &headers) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    "the schema needs a bearer token (Authorization: Bearer <JWT>)\n",
                )
                    .into_response();
            }
            Err(error) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    format!("{}\n", error.public_message()),
                )
                    .into_response();
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.sdl.to_string(),
    )
        .into_response()
}
