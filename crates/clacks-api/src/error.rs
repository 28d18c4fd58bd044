//! The one place where failures become HTTP responses.
//!
//! Policy: every error this API answers is `application/problem+json`
//! (RFC 9457) with `type`, `title`, `status` and `detail`. Handlers return
//! [`ApiError`], built from the service's [`clacks_core::Error`] (one
//! mapping, [`ApiError::from`]) or from an axum extractor rejection (the
//! status axum chose, our body). Nothing here inspects error messages.
//!
//! Status choices:
//! - `InvalidInput` and `PayloadTooLarge` are 422: both are a JSON field
//!   failing validation (an over-long display name, message content over the
//!   size limit). 413 is kept for a request *body* over the HTTP limit.
//! - `Internal` is 500 with a generic detail; the real one is logged here.
//! - `Unavailable` is 503 (the database did not answer; nothing changed).
//! - `NotMember` is 409: the application names the user, so posting as a
//!   user who is not a member conflicts with the channel's membership.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clacks_core::Error;
use serde::Serialize;
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:clacks:problem:not-found",
    "title": "Not Found",
    "status": 404,
    "detail": "channel not found"
}))]
pub struct Problem {
    /// A URI reference naming the kind of problem
    /// (`urn:clacks:problem:<kind>`); stable, safe to branch on.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem (the HTTP reason phrase).
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, for humans.
    pub detail: String,
}

/// An error response of the management API.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "this method is not allowed on this resource",
        )
    }

    /// A failure of an axum extractor: keep axum's status and message.
    fn rejection(status: StatusCode, text: String) -> Self {
        let kind = match status {
            StatusCode::BAD_REQUEST => "bad-request",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
            StatusCode::UNPROCESSABLE_ENTITY => "validation",
            s if s.is_server_error() => {
                tracing::error!(status = s.as_u16(), error = %text, "extractor failed");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                );
            }
            _ => "bad-request",
        };
        Self::new(status, kind, text)
    }

    fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:clacks:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let detail = error.public_message();
        match error {
            Error::NotFound(_) => Self::not_found(detail),
            Error::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", detail),
            Error::Unauthenticated(_) => Self::unauthorized(detail),
            Error::Conflict(_) | Error::NotMember { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", detail)
            }
            Error::InvalidInput { .. } | Error::PayloadTooLarge { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
            }
            Error::RateLimited { retry_after_ms } => ApiError {
                retry_after_secs: Some(retry_after_ms.div_ceil(1000).max(1)),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail)
            },
            Error::Unavailable(why) => {
                tracing::warn!(error = %why, "management request failed: dependency unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
            Error::Internal(why) => {
                tracing::error!(error = %why, "management request failed: internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::rejection(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejection(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::rejection(rejection.status(), rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="clacks-management""#),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The router's fallback: an unknown route.
pub async fn unknown_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// The fallback for a known route and an unsupported method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_stay_private() {
        let error = ApiError::from(Error::Internal("db said: secret".into()));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.problem().detail, "internal error");
    }

    #[test]
    fn oversize_content_is_a_validation_failure() {
        let error = ApiError::from(Error::PayloadTooLarge {
            what: "message content",
            actual: 20,
            limit: 10,
        });
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.problem().kind, "urn:clacks:problem:validation");
    }
}
