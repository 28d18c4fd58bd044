//! `/search`: full-text search of messages for the application (extension).

use axum::Json;
use axum::extract::State;
use clacks_core::ChannelId;
use clacks_service::SearchRequest;

use super::AppState;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::model::{SearchPage, SearchParams};
use crate::openapi::{BadRequest, Conflict, NotFound, Unprocessable};

/// Search messages by their words (extension): in one channel, in the
/// channels of one user (as that user would search), or everywhere. A
/// message matches when it holds every word of `q`; best match first,
/// equal matches newest first. Deleted messages are never found, edited
/// ones by their current content. Follow `next` until it is null (at most
/// 1,000 hits in all).
#[utoipa::path(
    get,
    path = "/search",
    tag = "search",
    operation_id = "searchMessages",
    params(SearchParams),
    responses(
        (status = 200, description = "A page of hits", body = SearchPage),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn search_messages(
    State(service): State<AppState>,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Json<SearchPage>, ApiError> {
    let request = SearchRequest {
        query: params.q,
        channel: params.channel.map(ChannelId),
        limit: params.limit,
        after: params.after,
    };
    let results = service.admin_search(&request, params.user).await?;
    Ok(Json(results.into()))
}
