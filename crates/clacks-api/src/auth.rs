//! The management token check. With a token configured, every protected
//! route needs `Authorization: Bearer <token>` (scheme case-insensitive);
//! the token is compared in constant time. Health and the OpenAPI documents
//! are never behind it (they are routed outside this layer).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clacks_service::auth::{BearerScheme, bearer_token};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The expected token, shared by every request.
#[derive(Clone)]
pub struct ManagementToken(pub Arc<str>);

impl std::fmt::Debug for ManagementToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagementToken(..)")
    }
}

/// The bearer credentials of a request, if it carries any.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    bearer_token(value, BearerScheme::Required)
}

/// Middleware: lets the request through only with the right bearer token.
pub async fn require_token(
    State(expected): State<ManagementToken>,
    request: Request,
    next: Next,
) -> Response {
    let Some(given) = bearer(&request) else {
        return ApiError::unauthorized("this endpoint needs Authorization: Bearer <token>")
            .into_response();
    };
    // Only the length can leak through timing, never the content.
    if bool::from(given.as_bytes().ct_eq(expected.0.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized("the management token is not valid").into_response()
    }
}
