//! `/users/{uid}/...`: a user's channels with read state, and forcing their
//! live sessions to disconnect (extensions).

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::error::ApiError;
use crate::extract::PathParams;
use crate::model::{Disconnected, UserChannel};
use crate::openapi::Unprocessable;

/// The channels a user belongs to, with unread counts, read watermark and
/// last message (extension). A user Clacks never saw has no channels.
#[utoipa::path(
    get,
    path = "/users/{uid}/channels",
    tag = "users",
    operation_id = "userChannels",
    params(("uid" = crate::model::UserIdSchema, Path, description = "The user id")),
    responses(
        (status = 200, description = "The user's channels, by channel id", body = Vec<UserChannel>),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn user_channels(
    State(service): State<AppState>,
    PathParams(uid): PathParams<String>,
) -> Result<Json<Vec<UserChannel>>, ApiError> {
    let channels = service.admin_user_channels(uid).await?;
    Ok(Json(channels.into_iter().map(Into::into).collect()))
}

/// Close every live connection of a user on this node (extension), e.g.
/// after revoking their access. Clients reconnect with a fresh token.
#[utoipa::path(
    post,
    path = "/users/{uid}/disconnect",
    tag = "users",
    operation_id = "disconnectUser",
    params(("uid" = crate::model::UserIdSchema, Path, description = "The user id")),
    responses(
        (status = 200, description = "How many connections were closed", body = Disconnected),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn disconnect_user(
    State(service): State<AppState>,
    PathParams(uid): PathParams<String>,
) -> Result<Json<Disconnected>, ApiError> {
    let closed = service.admin_disconnect_user(uid).await?;
    Ok(Json(Disconnected {
        closed: u64::try_from(closed).unwrap_or(u64::MAX),
    }))
}
