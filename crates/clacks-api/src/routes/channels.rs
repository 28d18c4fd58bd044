//! `/channel` and `/channel/{channelId}`: the original list, create, read
//! and delete, plus paging and PATCH.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clacks_core::ChannelId;

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{
    ChannelDetail, ChannelDto, ChannelList, ChannelListItem, ChannelListQuery, ChannelPage,
    CreateChannel, CreatedChannel, UpdateChannel,
};
use crate::openapi::{BadRequest, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType};

/// List channels.
///
/// Original endpoint: without paging parameters, every channel as a bare
/// array of `{id, displayName}`. Extension: with `limit` and/or `after`, a
/// page of full channel objects ordered by id.
#[utoipa::path(
    get,
    path = "/channel",
    tag = "channels",
    operation_id = "listChannels",
    params(ChannelListQuery),
    responses(
        (status = 200, description = "All channels (no paging parameter), or one page", body = ChannelList),
        (status = 400, response = BadRequest),
    )
)]
pub async fn list_channels(
    State(service): State<AppState>,
    QueryParams(query): QueryParams<ChannelListQuery>,
) -> Result<Json<ChannelList>, ApiError> {
    if !query.is_paged() {
        let all = service.admin_all_channels().await?;
        return Ok(Json(ChannelList::All(
            all.into_iter()
                .map(|c| ChannelListItem {
                    id: c.id.0,
                    display_name: c.display_name,
                })
                .collect(),
        )));
    }
    let limit = service.limits().page(query.limit);
    let channels = service
        .admin_list_channels(query.after.map(ChannelId), Some(limit))
        .await?;
    let full = channels.len() >= limit as usize;
    let next_after = channels.last().filter(|_| full).map(|c| c.id.0);
    Ok(Json(ChannelList::Page(ChannelPage {
        items: channels.into_iter().map(Into::into).collect(),
        next_after,
    })))
}

/// Create a channel (original endpoint).
#[utoipa::path(
    post,
    path = "/channel",
    tag = "channels",
    operation_id = "createChannel",
    request_body = CreateChannel,
    responses(
        (status = 200, description = "Created; the new channel's id", body = CreatedChannel,
            links(
                ("getChannel" = (operation_id = "getChannel", parameters(("channelId" = "$response.body#/id")))),
                ("updateChannel" = (operation_id = "updateChannel", parameters(("channelId" = "$response.body#/id")))),
                ("deleteChannel" = (operation_id = "deleteChannel", parameters(("channelId" = "$response.body#/id")))),
                ("listMembers" = (operation_id = "listMembers", parameters(("channelId" = "$response.body#/id")))),
                ("addMember" = (operation_id = "addMember", parameters(("channelId" = "$response.body#/id")))),
                ("listMessages" = (operation_id = "listMessages", parameters(("channelId" = "$response.body#/id")))),
                ("postMessage" = (operation_id = "postMessage", parameters(("channelId" = "$response.body#/id")))),
            )
        ),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn create_channel(
    State(service): State<AppState>,
    JsonBody(body): JsonBody<CreateChannel>,
) -> Result<Json<CreatedChannel>, ApiError> {
    let channel = service
        .admin_create_channel(body.display_name, body.initial_users, body.metadata)
        .await?;
    Ok(Json(CreatedChannel { id: channel.id.0 }))
}

/// A channel's display name and members (original endpoint).
#[utoipa::path(
    get,
    path = "/channel/{channelId}",
    tag = "channels",
    operation_id = "getChannel",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    responses(
        (status = 200, description = "The channel", body = ChannelDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn get_channel(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
) -> Result<Json<ChannelDetail>, ApiError> {
    let channel = service.admin_channel(ChannelId(channel_id)).await?;
    let members = service.admin_members(channel.id).await?;
    Ok(Json(ChannelDetail {
        display_name: channel.display_name,
        users: members
            .into_iter()
            .map(|m| m.user_id.into_string())
            .collect(),
    }))
}

/// Rename a channel and/or replace its metadata (extension).
///
/// A field left out is left unchanged; an empty object changes nothing and
/// answers the channel as it is.
#[utoipa::path(
    patch,
    path = "/channel/{channelId}",
    tag = "channels",
    operation_id = "updateChannel",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    request_body = UpdateChannel,
    responses(
        (status = 200, description = "The updated channel", body = ChannelDto),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn update_channel(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    JsonBody(body): JsonBody<UpdateChannel>,
) -> Result<Json<ChannelDto>, ApiError> {
    let channel = service
        .admin_update_channel(ChannelId(channel_id), body.display_name, body.metadata)
        .await?;
    Ok(Json(channel.into()))
}

/// Delete a channel with its members and messages (original endpoint).
#[utoipa::path(
    delete,
    path = "/channel/{channelId}",
    tag = "channels",
    operation_id = "deleteChannel",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    responses(
        (status = 200, description = "Deleted (empty body)"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete_channel(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
) -> Result<StatusCode, ApiError> {
    service.admin_delete_channel(ChannelId(channel_id)).await?;
    Ok(StatusCode::OK)
}
