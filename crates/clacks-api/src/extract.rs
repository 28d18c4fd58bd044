//! axum's extractors with problem+json rejections: a malformed body, path
//! or query string answers with the same error shape as everything else,
//! never axum's plain-text default.

use axum::extract::{FromRequest, FromRequestParts};

use crate::error::ApiError;

/// A JSON request body (`application/json`): 400 when malformed, 415
/// without the JSON content type, 413 over the body limit, 422 when it does
/// not fit the expected shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

/// Path parameters: 400 when one does not parse (e.g. a channel id that is
/// not a number).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParams<T>(pub T);

/// Query parameters: 400 when one does not parse.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);
