//! `/channel/{channelId}/messages`: history, posting as a member or as the
//! system, and deleting (extensions).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clacks_core::{ChannelId, MessageId};
use clacks_service::{HistoryRequest, SendOptions};

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{HistoryQuery, MessageDto, MessagePage, PostMessage};
use crate::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType,
};

/// A page of a channel's messages, by seq cursor (extension). Deleted
/// messages appear as tombstones, so seqs stay gap-free.
#[utoipa::path(
    get,
    path = "/channel/{channelId}/messages",
    tag = "messages",
    operation_id = "listMessages",
    params(("channelId" = i64, Path, description = "Numeric channel id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn list_messages(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limit = service.limits().page(query.limit);
    let messages = service
        .admin_history(
            ChannelId(channel_id),
            HistoryRequest {
                before: query.before,
                after: query.after,
                limit: Some(limit),
            },
        )
        .await?;
    let full = messages.len() >= limit as usize;
    let last_seq = messages.last().filter(|_| full).map(|m| m.seq);
    let (next_before, next_after) = if query.after.is_some() {
        (None, last_seq)
    } else {
        (last_seq, None)
    };
    Ok(Json(MessagePage {
        items: messages.into_iter().map(Into::into).collect(),
        next_before,
        next_after,
    }))
}

/// Post a message as a member, or as the system when `senderId` is absent
/// (extension). With a `clientMessageId`, a retry returns the original
/// message with status 200 instead of storing a duplicate. With a
/// `parentId`, the message is a reply in that message's thread.
#[utoipa::path(
    post,
    path = "/channel/{channelId}/messages",
    tag = "messages",
    operation_id = "postMessage",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "Stored and delivered", body = MessageDto,
            links(
                ("deleteMessage" = (operation_id = "deleteMessage", parameters(
                    ("channelId" = "$request.path.channelId"),
                    ("messageId" = "$response.body#/id"),
                ))),
            )
        ),
        (status = 200, description = "A retry: the message stored earlier with this clientMessageId", body = MessageDto),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn post_message(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    JsonBody(body): JsonBody<PostMessage>,
) -> Result<(StatusCode, Json<MessageDto>), ApiError> {
    let (message, created) = service
        .admin_post_message_with(
            ChannelId(channel_id),
            body.sender_id,
            body.content,
            SendOptions {
                client_message_id: body.client_message_id,
                parent_id: body.parent_id.map(MessageId),
                mentions: body.mentions,
            },
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message.into())))
}

/// Delete a message, leaving a tombstone (extension). Deleting it again
/// answers the same tombstone.
#[utoipa::path(
    delete,
    path = "/channel/{channelId}/messages/{messageId}",
    tag = "messages",
    operation_id = "deleteMessage",
    params(
        ("channelId" = i64, Path, description = "Numeric channel id"),
        ("messageId" = i64, Path, description = "Numeric message id"),
    ),
    responses(
        (status = 200, description = "The tombstone", body = MessageDto),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete_message(
    State(service): State<AppState>,
    PathParams((channel_id, message_id)): PathParams<(i64, i64)>,
) -> Result<Json<MessageDto>, ApiError> {
    let message = service
        .admin_delete_message(ChannelId(channel_id), MessageId(message_id))
        .await?;
    Ok(Json(message.into()))
}
