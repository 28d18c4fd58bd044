//! `/channel/{channelId}/users`: the original membership endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clacks_core::ChannelId;

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{
    AddMember, BulkMembers, BulkMembersResult, MemberList, MemberListQuery, MemberPage,
};
use crate::openapi::{BadRequest, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType};

/// A channel's members.
///
/// Original endpoint: without paging parameters, every member's id as a
/// bare array. Extension: with `limit` and/or `after`, a page of members
/// ordered by user id (follow `nextAfter` to list a large channel).
#[utoipa::path(
    get,
    path = "/channel/{channelId}/users",
    tag = "members",
    operation_id = "listMembers",
    params(("channelId" = i64, Path, description = "Numeric channel id"), MemberListQuery),
    responses(
        (status = 200, description = "Ids of all members (no paging parameter), or one page", body = MemberList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn list_members(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    QueryParams(query): QueryParams<MemberListQuery>,
) -> Result<Json<MemberList>, ApiError> {
    if !query.is_paged() {
        let members = service.admin_members(ChannelId(channel_id)).await?;
        return Ok(Json(MemberList::All(
            members
                .into_iter()
                .map(|m| m.user_id.into_string())
                .collect(),
        )));
    }
    let limit = service.limits().page(query.limit);
    let members = service
        .admin_members_page(ChannelId(channel_id), query.after, Some(limit))
        .await?;
    let full = members.len() >= limit as usize;
    let next_after = members
        .last()
        .filter(|_| full)
        .map(|m| m.user_id.as_str().to_owned());
    Ok(Json(MemberList::Page(MemberPage {
        items: members.into_iter().map(Into::into).collect(),
        next_after,
    })))
}

/// Add and remove many members in one request (extension).
///
/// PATCH of the member collection (a path of its own under `users/` would
/// shadow a user of that name in `DELETE /channel/{channelId}/users/{uid}`).
/// One transaction: either every change is made or none. Idempotent: users
/// already members (in `add`) or not members (in `remove`) are counted, not
/// refused. The users added are one event and the users removed another,
/// each with its own seq (additions first): `member_joined` /
/// `member_left` when one user, `members_joined` / `members_left`
/// (GraphQL `MembersJoined` / `MembersLeft`, webhook `members.joined` /
/// `members.left`, one delivery) when more, listing the users up to 100
/// and otherwise only their count with `truncated: true`. Live
/// subscriptions follow it as they follow single adds and removals. At most `CLACKS_MAX_BULK_MEMBERS`
/// users (default 10,000) in `add` and `remove` together: more, an invalid
/// user id, or a user in both lists is a 422 and changes nothing.
#[utoipa::path(
    patch,
    path = "/channel/{channelId}/users",
    tag = "members",
    operation_id = "changeMembers",
    params(("channelId" = i64, Path, description = "Numeric channel id")),
    request_body = BulkMembers,
    responses(
        (status = 200, description = "What changed", body = BulkMembersResult),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn change_members(
    State(service): State<AppState>,
    PathParams(channel_id): PathParams<i64>,
    JsonBody(body): JsonBody<BulkMembers>,
) -> Result<Json<BulkMembersResult>, ApiError> {
    let change = service
        .admin_change_members(ChannelId(channel_id), body.add, body.remove, body.role)
        .await?;
    Ok(Json(change.into()))
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
