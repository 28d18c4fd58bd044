//! The demo's dev-mode endpoints, so that two people can chat on a fresh
//! server with nothing but a browser:
//!
//! - `POST /demo/login` `{"userId", "name"?}` → `{"token", "userId",
//!   "expiresAt"}`: a token for any user id, minted by the same service
//!   call as the management API's `/jwt`.
//! - `POST /demo/join` `{"channel": "<display name>"}` with
//!   `Authorization: Bearer <token>` → `{"id", "displayName", "created"}`:
//!   the token's user joins the channel of that name, which is created
//!   when there is none.
//!
//! They exist only in dev mode (the management API on loopback without a
//! token: whoever can reach this machine's loopback could mint tokens there
//! anyway), and answer only requests from this machine, naming it in
//! `Host` (a public name resolving to 127.0.0.1, DNS rebinding, does not
//! pass) and, when a browser sends an `Origin`, coming from a page served
//! from it. Anything else gets the 404 of a route that does not exist.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clacks_core::Error;
use clacks_service::{ChatService, TokenRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::loopback::{is_loopback_host, is_loopback_origin};

#[derive(Clone)]
struct DevState {
    service: Arc<ChatService>,
    /// Serializes "find the channel by name, else create it", so two
    /// people joining the same new name at once end up together.
    joining: Arc<Mutex<()>>,
}

pub fn routes(service: Arc<ChatService>) -> Router {
    Router::new()
        .route("/demo/login", post(login))
        .route("/demo/join", post(join))
        .with_state(DevState {
            service,
            joining: Arc::new(Mutex::new(())),
        })
}

/// A request from this machine (see the module documentation); rejects
/// anything else with 404.
struct FromThisMachine;

impl<S: Send + Sync> FromRequestParts<S> for FromThisMachine {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        let host = match parts.headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            // HTTP/2 names the host in the request target instead.
            None => parts.uri.authority().map(|authority| authority.as_str()),
        };
        if from_this_machine(peer, host, &parts.headers) {
            Ok(FromThisMachine)
        } else {
            Err(StatusCode::NOT_FOUND)
        }
    }
}

fn from_this_machine(peer: Option<SocketAddr>, host: Option<&str>, headers: &HeaderMap) -> bool {
    let peer_is_local = peer.is_some_and(|peer| peer.ip().to_canonical().is_loopback());
    let host_is_local = host.is_some_and(is_loopback_host);
    let page_is_local = headers
        .get(header::ORIGIN)
        .is_none_or(|origin| origin.to_str().is_ok_and(is_loopback_origin));
    peer_is_local && host_is_local && page_is_local
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoginRequest {
    user_id: String,
    /// Shown as `me { name }`.
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    token: String,
    user_id: String,
    /// Milliseconds since the epoch, like the management API's `/jwt`.
    expires_at: i64,
}

async fn login(
    _: FromThisMachine,
    State(state): State<DevState>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return refused(rejection.status(), rejection.body_text()),
    };
    let name = request
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    let user_id = request.user_id.trim().to_owned();
    match state.service.admin_mint_token(
        user_id.clone(),
        TokenRequest {
            name,
            ..TokenRequest::default()
        },
    ) {
        Ok(minted) => Json(LoginResponse {
            token: minted.token,
            user_id,
            expires_at: minted.expires_at.saturating_mul(1000),
        })
        .into_response(),
        Err(error) => failed(&error),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinRequest {
    /// The channel's display name.
    channel: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinResponse {
    /// As GraphQL writes channel ids.
    id: String,
    display_name: String,
    /// Whether the channel was created by this call.
    created: bool,
}

async fn join(
    _: FromThisMachine,
    State(state): State<DevState>,
    headers: HeaderMap,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return refused(rejection.status(), rejection.body_text()),
    };
    let caller = match clacks_graphql::http::bearer(&headers) {
        Some(token) => token.and_then(|token| state.service.authenticate(token)),
        None => Err(Error::Unauthenticated(
            "send the token as `Authorization: Bearer <token>`".into(),
        )),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(error) => return failed(&error),
    };
    let wanted = request.channel.trim().to_owned();
    let user = caller.user_id.into_string();
    let service = &state.service;
    let _one_at_a_time = state.joining.lock().await;
    let existing = match service.admin_all_channels().await {
        Ok(channels) => channels.into_iter().find(|c| c.display_name == wanted),
        Err(error) => return failed(&error),
    };
    let joined = match existing {
        Some(channel) => service
            .admin_add_member(channel.id, user, None)
            .await
            .map(|_| (channel, false)),
        None => service
            .admin_create_channel(wanted, vec![user], None)
            .await
            .map(|channel| (channel, true)),
    };
    match joined {
        Ok((channel, created)) => Json(JoinResponse {
            id: channel.id.0.to_string(),
            display_name: channel.display_name,
            created,
        })
        .into_response(),
        Err(error) => failed(&error),
    }
}

fn failed(error: &Error) -> Response {
    let status = match error {
        Error::InvalidInput { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) | Error::NotMember { .. } => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refused(status, error.public_message())
}

fn refused(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn origin(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_this_machine_passes() {
        let local: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let local_v6: SocketAddr = "[::1]:50000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:50000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let none = HeaderMap::new();
        let host = Some("localhost:8000");

        for peer in [local, local_v6, mapped] {
            assert!(from_this_machine(Some(peer), host, &none), "{peer}");
        }
        assert!(from_this_machine(
            Some(local),
            host,
            &origin("http://localhost:8000")
        ));
        // A page on another machine, even reached through this one.
        assert!(!from_this_machine(Some(remote), host, &none));
        assert!(!from_this_machine(None, host, &none));
        // DNS rebinding: a public name resolved to 127.0.0.1.
        assert!(!from_this_machine(
            Some(local),
            Some("evil.example:8000"),
            &none
        ));
        assert!(!from_this_machine(Some(local), None, &none));
        // A public page calling this machine's loopback from the browser.
        assert!(!from_this_machine(
            Some(local),
            host,
            &origin("https://evil.example")
        ));
        assert!(!from_this_machine(Some(local), host, &origin("null")));
    }
}
