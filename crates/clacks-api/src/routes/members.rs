//! `/channel/{channelId}/users`: the original membership endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clacks_core::ChannelId;

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams};
use crate::model::AddMember;
use crate::openapi::{BadRequest, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType};

/// A channel's member ids (original endpoint).
#[utoipa::path(
    get,
    path = "/channel/{channelId}/users",
    tag = "members",
    operation_id = "listMembers",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    responses(
        (status = 200, description = "Ids of the members", body = Vec<String>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn list_members(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
) -> Result<Json<Vec<String>>, ApiError> {
    let members = service.admin_members(ChannelId(channel_id)).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|m| m.user_id.into_string())
            .collect(),
    ))
}

/// Add a member (original endpoint). Idempotent: adding a member again
/// changes nothing and answers 200 too.
#[utoipa::path(
    put,
    path = "/channel/{channelId}/users",
    tag = "members",
    operation_id = "addMember",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    request_body = AddMember,
    responses(
        (status = 200, description = "The user is a member (empty body)",
            links(
                ("removeMember" = (operation_id = "removeMember", parameters(
                    ("channelId" = "$request.path.channelId"),
                    ("uid" = "$request.body#/uid"),
                ))),
                ("userChannels" = (operation_id = "userChannels", parameters(("uid" = "$request.body#/uid")))),
                ("disconnectUser" = (operation_id = "disconnectUser", parameters(("uid" = "$request.body#/uid")))),
                ("getToken" = (operation_id = "getToken", parameters(("uid" = "$request.body#/uid")))),
                ("mintToken" = (operation_id = "mintToken", request_body = json!({"userId": "$request.body#/uid"}))),
                ("postMessageAsMember" = (operation_id = "postMessage",
                    parameters(("channelId" = "$request.path.channelId")),
                    request_body = json!({"senderId": "$request.body#/uid", "content": "hello"}),
                )),
            )
        ),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn add_member(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<StatusCode, ApiError> {
    service
        .admin_add_member(ChannelId(channel_id), body.uid, body.role)
        .await?;
    Ok(StatusCode::OK)
}

/// Remove a member (original endpoint). Their live subscriptions to the
/// channel end at once.
#[utoipa::path(
    delete,
    path = "/channel/{channelId}/users/{uid}",
    tag = "members",
    operation_id = "removeMember",
    params(
        ("channelId" = i64, Path, description = "Numeric channel id"),
        ("uid" = crate::model::UserIdSchema, Path, description = "The member's user id"),
    ),
    responses(
        (status = 200, description = "Removed (empty body)"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn remove_member(
    State(service): State<AppState>,
    PathParams((channel_id, uid)): PathParams<(i64, String)>,
) -> Result<StatusCode, ApiError> {
    service
        .admin_remove_member(ChannelId(channel_id), uid)
        .await?;
    Ok(StatusCode::OK)
}
