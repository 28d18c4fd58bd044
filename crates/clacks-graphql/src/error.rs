//! The one mapping from Clacks errors to GraphQL errors.
//!
//! Every error a client sees carries `extensions.code`:
//!
//! | code | when |
//! |---|---|
//! | `UNAUTHENTICATED` | no token, or a token that fails validation |
//! | `FORBIDDEN` | not a member, not the sender; a non-member learns nothing more |
//! | `NOT_FOUND` | the thing does not exist (only said to callers allowed to know) |
//! | `BAD_USER_INPUT` | invalid arguments, and every GraphQL parse or validation error |
//! | `LIMIT_EXCEEDED` | a request limit (see [`crate::guard`]); `extensions.limit` names it, `max` and `actual` say by how much |
//! | `CONFLICT` | the request conflicts with the current state |
//! | `PAYLOAD_TOO_LARGE` | message content over the configured limit |
//! | `RATE_LIMITED` | a per-user rate limit (sends, edits, deletes, read marks, typing, subscriptions, query cost); `extensions.retryAfterMs` says when to retry |
//! | `TOO_MANY_CONNECTIONS` | a WebSocket refused: too many from this address (HTTP 429) or for this user (`connection_error` of the legacy protocol); `extensions.limit` |
//! | `UNAVAILABLE` | the database is unreachable; retry later, nothing changed |
//! | `INTERNAL` | a bug; details are logged, never shown |
//!
//! Resolvers return [`clacks_core::Error`] and convert it with [`gql`];
//! errors produced by async-graphql itself (parse, validation) are given
//! `BAD_USER_INPUT` by [`finalize`].

use async_graphql::{ErrorExtensionValues, Response, ServerError, Value};
use clacks_core::Error;

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
pub const INTERNAL: &str = "INTERNAL";
pub const TOO_MANY_CONNECTIONS: &str = "TOO_MANY_CONNECTIONS";

/// The `extensions.code` of a service error.
pub fn code_of(error: &Error) -> &'static str {
    match error {
        Error::NotFound(_) => "NOT_FOUND",
        Error::Forbidden(_) | Error::NotMember { .. } => FORBIDDEN,
        Error::Unauthenticated(_) => UNAUTHENTICATED,
        Error::Conflict(_) => "CONFLICT",
        Error::InvalidInput { .. } => BAD_USER_INPUT,
        Error::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
        Error::RateLimited { .. } => "RATE_LIMITED",
        Error::Unavailable(_) => "UNAVAILABLE",
        Error::Internal(_) => INTERNAL,
    }
}

/// Converts a service error into a GraphQL error with `extensions.code`.
pub fn gql(error: Error) -> async_graphql::Error {
    if let Error::Internal(detail) | Error::Unavailable(detail) = &error {
        tracing::error!(error = %detail, "request failed");
    }
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code_of(&error));
    match &error {
        Error::RateLimited { retry_after_ms } => {
            extensions.set(
                "retryAfterMs",
                Value::from(i64::try_from(*retry_after_ms).unwrap_or(i64::MAX)),
            );
        }
        Error::InvalidInput { field, .. } => extensions.set("field", *field),
        Error::PayloadTooLarge { limit, .. } => {
            extensions.set("limit", Value::from(*limit as u64));
        }
        _ => {}
    }
    async_graphql::Error {
        message: error.public_message(),
        source: None,
        extensions: Some(extensions),
    }
}

/// A bare error with a code (for errors that are not service errors).
pub fn coded(code: &'static str, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// Gives every error that has no `extensions.code` yet (async-graphql's
/// own parse and validation errors) the code `BAD_USER_INPUT`.
pub fn finalize(mut response: Response) -> Response {
    for error in &mut response.errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !has_code {
            error
                .extensions
                .get_or_insert_with(ErrorExtensionValues::default)
                .set("code", BAD_USER_INPUT);
        }
    }
    response
}
