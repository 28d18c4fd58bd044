//! Presence (extension): whether a user is online (holds a live connection
//! to any node) and when they were last seen, and a channel's online
//! members.

use axum::Json;
use axum::extract::State;
use clacks_core::ChannelId;

use super::AppState;
use crate::error::ApiError;
use crate::extract::{PathParams, QueryParams};
use crate::model::{OnlinePage, PresenceDto, PresenceQuery};
use crate::openapi::{BadRequest, NotFound, Unprocessable};

/// A user's presence (extension): online while any node holds an
/// authenticated WebSocket connection of theirs.
#[utoipa::path(
    get,
    path = "/users/{uid}/presence",
    tag = "users",
    operation_id = "userPresence",
    params(("uid" = crate::model::UserIdSchema, Path, description = "The user id")),
    responses(
        (status = 200, description = "The user's presence", body = PresenceDto),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn user_presence(
    State(service): State<AppState>,
    PathParams(uid): PathParams<String>,
) -> Result<Json<PresenceDto>, ApiError> {
    Ok(Json(service.admin_user_presence(uid)?.into()))
}

/// A page of a channel's online members, ordered by user id (extension):
/// follow `nextAfter` until it is null.
#[utoipa::path(
    get,
    path = "/channel/{channelId}/presence",
    tag = "members",
    operation_id = "channelPresence",
    params(("channelId" = i64, Path, description = "Numeric channel id"), PresenceQuery),
    responses(
        (status = 200, description = "A page of the online members' ids", body = OnlinePage),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn channel_presence(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    QueryParams(query): QueryParams<PresenceQuery>,
) -> Result<Json<OnlinePage>, ApiError> {
    let limit = service.limits().page(query.limit);
    let online = service
        .admin_online_members(ChannelId(channel_id), query.after, Some(limit))
        .await?;
    let next_after = online
        .last()
        .filter(|_| online.len() >= limit as usize)
        .map(|u| u.as_str().to_owned());
    Ok(Json(OnlinePage {
        items: online.into_iter().map(|u| u.into_string()).collect(),
        next_after,
    }))
}
