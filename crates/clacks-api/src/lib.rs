//! The management API (port 7999, prefix `/api/v1`): the application's own
//! server configures channels, members and tokens here.
//!
//! - [`routes`]: the handlers, one module per resource. They are thin: parse
//!   input, call one `ChatService::admin_*` method, map the answer. They
//!   never touch the store or decide a rule.
//! - [`error`]: the one mapping from failures to problem+json responses.
//! - [`auth`]: the management token check.
//! - [`host`]: the `Host` allowlist (DNS rebinding protection), applied to
//!   the whole listener by the server.
//! - [`openapi`]: the OpenAPI 3.1 document, derived from the handlers and
//!   served at `/openapi.json` and `/openapi.yml`.

pub mod auth;
pub mod error;
pub mod extract;
pub mod host;
pub mod model;
pub mod openapi;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use clacks_service::ChatService;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ManagementToken, require_token};
use crate::openapi::{ApiDoc, Documents};
use crate::routes::AppState;
use crate::routes::{
    channels, health, members, messages, presence, search, tokens, users, webhooks,
};

/// The prefix of every management endpoint.
pub const API_PREFIX: &str = "/api/v1";

/// Smallest request body limit (the limit grows with the configured maximum
/// message size so a maximal message always fits).
pub const MIN_BODY_LIMIT: usize = 1024 * 1024;

/// Request body room per user of a bulk membership change: a user id of
/// the longest kind (200 characters of up to 4 bytes) quoted, with a comma.
pub const BULK_BYTES_PER_USER: usize = 803;

/// Settings of the management API.
#[derive(Debug, Clone, Default)]
pub struct ManagementConfig {
    /// When set, every request except health and the OpenAPI documents
    /// needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// The routes, with their OpenAPI description, before state is attached.
/// `token` puts the protected routes behind the bearer check;
/// `bulk_body_limit` bounds the body of a bulk membership change, which
/// alone may be larger than every other request.
fn api_routes(token: Option<ManagementToken>, bulk_body_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, change_members) = routes!(members::change_members);
    let change_members = change_members.layer(DefaultBodyLimit::max(bulk_body_limit));
    let mut protected = OpenApiRouter::new()
        .routes(routes!(channels::list_channels, channels::create_channel))
        .routes(routes!(
            channels::get_channel,
            channels::update_channel,
            channels::delete_channel
        ))
        .routes(routes!(members::list_members, members::add_member))
        .routes((schemas, paths, change_members))
        .routes(routes!(members::remove_member))
        .routes(routes!(messages::list_messages, messages::post_message))
        .routes(routes!(messages::delete_message))
        .routes(routes!(search::search_messages))
        .routes(routes!(users::user_channels))
        .routes(routes!(users::disconnect_user))
        .routes(routes!(presence::user_presence))
        .routes(routes!(presence::channel_presence))
        .routes(routes!(tokens::get_token))
        .routes(routes!(tokens::mint_token))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_webhook_deliveries));
    if let Some(token) = token {
        protected =
            protected.route_layer(axum::middleware::from_fn_with_state(token, require_token));
    }
    let api = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .merge(protected);
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(API_PREFIX, api)
}

/// The OpenAPI document of the management API, as served (JSON) by a
/// server with a management token (`secured`) or without one.
pub fn openapi(secured: bool) -> serde_json::Value {
    let mut openapi = api_routes(None, MIN_BODY_LIMIT).into_openapi();
    openapi::finish(&mut openapi, secured);
    openapi::to_value(&openapi)
}

/// The management router: `/api/v1/...`, `/openapi.json`, `/openapi.yml`,
/// and problem+json for unknown routes (404) and methods (405).
pub fn router(service: Arc<ChatService>, config: ManagementConfig) -> Router {
    let token = config
        .token
        .filter(|t| !t.is_empty())
        .map(|t| ManagementToken(t.into()));
    let limits = service.limits();
    let body_limit = MIN_BODY_LIMIT.max(limits.max_message_bytes.saturating_mul(2));
    let bulk_body_limit =
        body_limit.max(limits.max_bulk_members.saturating_mul(BULK_BYTES_PER_USER));
    let secured = token.is_some();
    let (api, mut document) = api_routes(token, bulk_body_limit).split_for_parts();
    openapi::finish(&mut document, secured);
    let documents = Documents::render(&document);
    let json = documents.clone();
    Router::new()
        .merge(api.with_state(service))
        .route(
            "/openapi.json",
            get(move || async move { json.json_response() }),
        )
        .route(
            "/openapi.yml",
            get(move || async move { documents.yaml_response() }),
        )
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::unknown_route)
        .layer(DefaultBodyLimit::max(body_limit))
}
