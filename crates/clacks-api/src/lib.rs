//! The management API (port 7999, prefix `/api/v1`): the application's own
//! server configures channels, members and tokens here. Handlers are thin:
//! they parse input, call the service, and map errors to problem+json.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use clacks_service::ChatService;

/// Settings of the management API.
#[derive(Debug, Clone, Default)]
pub struct ManagementConfig {
    /// When set, every request except health and the OpenAPI documents
    /// needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

pub fn router(service: Arc<ChatService>, config: ManagementConfig) -> Router {
    let _ = (service, config);
    Router::new().route("/api/v1/healthz", get(|| async { "ok" }))
}
