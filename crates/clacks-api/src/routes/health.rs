//! `GET /api/v1/healthz`: open even when a management token is configured.

use axum::Json;

use crate::model::Health;

/// Liveness of the management API (original endpoint).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "The server is serving", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}
