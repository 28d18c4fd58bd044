//! Operational endpoints (health, readiness, metrics) and the HTTP metrics
//! middleware shared by both listeners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clacks_api::auth::{ManagementToken, require_token};
use clacks_service::ChatService;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
struct OpsState {
    service: Arc<ChatService>,
    prometheus: PrometheusHandle,
}

/// `/healthz` alone, for the client listener.
pub fn health_routes() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// `/healthz`, `/readyz` and `/metrics`, for the management listener.
/// Health stays open for probes; metrics need the management token when
/// one is configured.
pub fn management_ops_routes(
    service: Arc<ChatService>,
    prometheus: PrometheusHandle,
    token: Option<&str>,
) -> Router {
    let state = OpsState {
        service,
        prometheus,
    };
    let mut metrics = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(state.clone());
    if let Some(token) = token {
        metrics = metrics.layer(axum::middleware::from_fn_with_state(
            ManagementToken(token.into()),
            require_token,
        ));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(metrics)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.service.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "reason": e.public_message()})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    let hub = state.service.hub_stats();
    metrics::gauge!("clacks_subscriptions").set(hub.subscriptions as f64);
    metrics::gauge!("clacks_subscribed_channels").set(hub.channels as f64);
    metrics::gauge!("clacks_connections").set(state.service.connections().count() as f64);
    metrics::gauge!("clacks_pending_events").set(hub.pending_events as f64);
    metrics::gauge!("clacks_subscriptions_behind").set(hub.behind as f64);
    metrics::gauge!("clacks_tail_events").set(hub.tail_events as f64);
    let pool = state.service.pool_stats();
    metrics::gauge!("clacks_db_connections_open").set(f64::from(pool.open));
    metrics::gauge!("clacks_db_connections_idle").set(pool.idle as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
        .into_response()
}

/// Counts requests by listener, route and status, and times them.
pub async fn track_http(listener: &'static str, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let handles = http_handles(listener, method, route, response.status());
    handles.requests.increment(1);
    handles.duration.record(started.elapsed().as_secs_f64());
    response
}

#[derive(Clone)]
struct HttpHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// The metric handles of one (listener, method, route, status), looked up
/// in the registry once: building the labels and looking them up on every
/// request was a few percent of the server's CPU per message sent.
fn http_handles(
    listener: &'static str,
    method: Method,
    route: String,
    status: StatusCode,
) -> HttpHandles {
    type Key = (&'static str, Method, String, u16);
    /// Methods are the client's choice: past this many label sets, handles
    /// are looked up per request as before instead of kept.
    const MOST_KEPT: usize = 1024;
    static KEPT: OnceLock<Mutex<HashMap<Key, HttpHandles>>> = OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    let key: Key = (listener, method, route, status.as_u16());
    if let Some(found) = kept.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return found.clone();
    }
    let labels = [
        ("listener", key.0.to_owned()),
        ("method", key.1.as_str().to_owned()),
        ("route", key.2.clone()),
        ("status", key.3.to_string()),
    ];
    let handles = HttpHandles {
        requests: metrics::counter!("clacks_http_requests_total", &labels),
        duration: metrics::histogram!("clacks_http_request_duration_seconds", &labels[..3]),
    };
    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() < MOST_KEPT {
        kept.insert(key, handles.clone());
    }
    handles
}
