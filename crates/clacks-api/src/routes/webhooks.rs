//! `/webhooks`: the application's server registers where Clacks POSTs
//! channel events, and reads the recent delivery attempts (extension).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clacks_service::{WebhookChanges, WebhookInput};

use super::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::model::{AttemptsQuery, CreateWebhook, UpdateWebhook, WebhookAttemptDto, WebhookDto};
use crate::openapi::{BadRequest, NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType};

/// List the webhooks, by id.
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    responses(
        (status = 200, description = "Every webhook", body = Vec<WebhookDto>),
    )
)]
pub async fn list_webhooks(
    State(service): State<AppState>,
) -> Result<Json<Vec<WebhookDto>>, ApiError> {
    let webhooks = service.admin_webhooks().await?;
    Ok(Json(webhooks.into_iter().map(Into::into).collect()))
}

/// Register a webhook.
///
/// Every channel event committed from now on that matches its event types
/// and channels is POSTed to its URL as JSON, signed (`Clacks-Signature`),
/// and retried with exponential backoff until the receiver answers 2xx.
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created, with its secret", body = WebhookDto,
            links(
                ("getWebhook" = (operation_id = "getWebhook", parameters(("webhookId" = "$response.body#/id")))),
                ("updateWebhook" = (operation_id = "updateWebhook", parameters(("webhookId" = "$response.body#/id")))),
                ("deleteWebhook" = (operation_id = "deleteWebhook", parameters(("webhookId" = "$response.body#/id")))),
                ("listWebhookDeliveries" = (operation_id = "listWebhookDeliveries", parameters(("webhookId" = "$response.body#/id")))),
            )
        ),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn create_webhook(
    State(service): State<AppState>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookDto>), ApiError> {
    let webhook = service
        .admin_create_webhook(WebhookInput {
            url: body.url,
            secret: body.secret,
            event_types: Some(body.event_types),
            channel_ids: body.channel_ids,
            enabled: body.enabled,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(webhook.into())))
}

/// A webhook.
#[utoipa::path(
    get,
    path = "/webhooks/{webhookId}",
    tag = "webhooks",
    operation_id = "getWebhook",
    params(("webhookId" = i64, Path, description = "Numeric webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookDto),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn get_webhook(
    State(service): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<WebhookDto>, ApiError> {
    Ok(Json(service.admin_webhook(id).await?.into()))
}

/// Change a webhook: a field left out is kept. Deliveries still pending go
/// to the new URL, signed with the new secret.
#[utoipa::path(
    patch,
    path = "/webhooks/{webhookId}",
    tag = "webhooks",
    operation_id = "updateWebhook",
    params(("webhookId" = i64, Path, description = "Numeric webhook id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookDto),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    )
)]
pub async fn update_webhook(
    State(service): State<AppState>,
    PathParams(id): PathParams<i64>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> Result<Json<WebhookDto>, ApiError> {
    let webhook = service
        .admin_update_webhook(
            id,
            WebhookChanges {
                url: body.url,
                secret: body.secret,
                event_types: body.event_types,
                channel_ids: body.channel_ids,
                enabled: body.enabled,
            },
        )
        .await?;
    Ok(Json(webhook.into()))
}

/// Delete a webhook, with its pending deliveries and its attempts.
#[utoipa::path(
    delete,
    path = "/webhooks/{webhookId}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    params(("webhookId" = i64, Path, description = "Numeric webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete_webhook(
    State(service): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> Result<StatusCode, ApiError> {
    service.admin_delete_webhook(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's recent delivery attempts, newest first: which delivery,
/// the attempt number, when, the receiver's status or the error, and what
/// happens next.
#[utoipa::path(
    get,
    path = "/webhooks/{webhookId}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    params(("webhookId" = i64, Path, description = "Numeric webhook id"), AttemptsQuery),
    responses(
        (status = 200, description = "Recent attempts, newest first", body = Vec<WebhookAttemptDto>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn list_webhook_deliveries(
    State(service): State<AppState>,
    PathParams(id): PathParams<i64>,
    QueryParams(query): QueryParams<AttemptsQuery>,
) -> Result<Json<Vec<WebhookAttemptDto>>, ApiError> {
    let attempts = service.admin_webhook_attempts(id, query.limit).await?;
    Ok(Json(attempts.into_iter().map(Into::into).collect()))
}
