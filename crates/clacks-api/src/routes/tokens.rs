//! `/jwt`: client tokens. The original `GET /jwt/{uid}` answers a bare JSON
//! string; query parameters and `POST /jwt` add a name, extra claims and a
//! lifetime.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use clacks_core::Error;
use clacks_service::TokenRequest;
use serde_json::{Map, Value};

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{TokenQuery, TokenRequestBody, TokenResponse};
use crate::openapi::{BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType};

/// A token for a user, as a JSON string (original endpoint). Extension:
/// `name`, `ttl` and `claims` query parameters.
#[utoipa::path(
    get,
    path = "/jwt/{uid}",
    tag = "tokens",
    operation_id = "getToken",
    params(("uid" = crate::model::UserIdSchema, Path, description = "The user the token speaks for"), TokenQuery),
    responses(
        (status = 200, description = "An HS256 JWT, as a JSON string", body = String, content_type = "application/json"),
        (status = 400, response = BadRequest),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn get_token(
    State(service): State<AppState>,
    PathParams(uid): PathParams<String>,
    QueryParams(query): QueryParams<TokenQuery>,
) -> Result<Json<String>, ApiError> {
    let extra_claims = match query.claims.as_deref() {
        None => Map::new(),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(claims)) => claims,
            _ => return Err(Error::invalid("claims", "must be a JSON object").into()),
        },
    };
    let minted = service.admin_mint_token(
        uid,
        TokenRequest {
            name: query.name,
            extra_claims,
            ttl: query.ttl.map(Duration::from_secs),
        },
    )?;
    Ok(Json(minted.token))
}

/// Mint a token with a name, extra claims and a lifetime (extension).
#[utoipa::path(
    post,
    path = "/jwt",
    tag = "tokens",
    operation_id = "mintToken",
    request_body = TokenRequestBody,
    responses(
        (status = 200, description = "The token and when it expires", body = TokenResponse),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn mint_token(
    State(service): State<AppState>,
    JsonBody(body): JsonBody<TokenRequestBody>,
) -> Result<Json<TokenResponse>, ApiError> {
    let minted = service.admin_mint_token(
        body.user_id,
        TokenRequest {
            name: body.name,
            extra_claims: body.claims.unwrap_or_default(),
            ttl: body.ttl.map(Duration::from_secs),
        },
    )?;
    Ok(Json(TokenResponse {
        token: minted.token,
        expires_at: minted.expires_at.saturating_mul(1000),
    }))
}
