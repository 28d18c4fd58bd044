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

/// Counts requests by listener, method, route and status class, and times
/// them. Every label value comes from a fixed set (see [`method_label`],
/// the route templates, [`status_class`]): requests are the client's
/// choice, so a label copied from one (an invented method, a random path)
/// would let anyone without a token add series to `/metrics` for good.
pub async fn track_http(listener: &'static str, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let handles = http_handles(listener, method, route, status_class(response.status()));
    handles.requests.increment(1);
    handles.duration.record(started.elapsed().as_secs_f64());
    response
}

/// The methods HTTP defines keep their name; any other is `other`.
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Clone)]
struct HttpHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// The metric handles of one (listener, method, route, status class),
/// looked up in the registry once: building the labels and looking them up
/// on every request was a few percent of the server's CPU per message sent.
/// Every part of the key comes from a fixed set, so the map is bounded.
fn http_handles(
    listener: &'static str,
    method: &'static str,
    route: String,
    status: &'static str,
) -> HttpHandles {
    type Key = (&'static str, &'static str, String, &'static str);
    static KEPT: OnceLock<Mutex<HashMap<Key, HttpHandles>>> = OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    let key: Key = (listener, method, route, status);
    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
    kept.entry(key)
        .or_insert_with_key(|(listener, method, route, status)| {
            let labels = [
                ("listener", (*listener).to_owned()),
                ("method", (*method).to_owned()),
                ("route", route.clone()),
                ("status", (*status).to_owned()),
            ];
            HttpHandles {
                requests: metrics::counter!("clacks_http_requests_total", &labels),
                duration: metrics::histogram!("clacks_http_request_duration_seconds", &labels[..3]),
            }
        })
        .clone()
}
