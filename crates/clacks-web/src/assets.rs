//! The pages, scripts and styles embedded in the binary (`assets/`).
//!
//! Every answer carries an `ETag` (a hash of the bytes) and
//! `Cache-Control: no-cache`: a browser revalidates and gets a 304 until
//! the binary changes, and a new binary never serves a page with a stale
//! script, although the names carry no hash. Pages also carry a Content
//! Security Policy that keeps them to their own origin: the GraphiQL token
//! sits in localStorage, and nothing here needs another origin.

use std::hash::{DefaultHasher, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Styles may be inline (React sets `style` attributes, GraphiQL's
/// libraries add `<style>` elements); fonts and icons come as `data:` URLs
/// inside the bundled CSS.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: OnceLock<HeaderValue>,
}

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $file)),
            etag: OnceLock::new(),
        }
    };
}

/// GraphiQL and what it loads; `LICENSES.txt` covers every bundled
/// package (GraphiQL, React, graphql-ws, ...).
pub static GRAPHIQL: [Asset; 5] = [
    asset!("/graphiql", "graphiql/index.html", HTML),
    asset!("/assets/graphiql/main.js", "graphiql/main.js", JS),
    asset!("/assets/vendor/graphiql.js", "vendor/graphiql.js", JS),
    asset!("/assets/vendor/graphiql.css", "vendor/graphiql.css", CSS),
    asset!("/assets/vendor/LICENSES.txt", "vendor/LICENSES.txt", TEXT),
];

/// The demo chat page and what it loads.
pub static DEMO: [Asset; 4] = [
    asset!("/demo", "demo/index.html", HTML),
    asset!("/assets/demo/app.js", "demo/app.js", JS),
    asset!("/assets/demo/app.css", "demo/app.css", CSS),
    asset!("/assets/vendor/graphql-ws.js", "vendor/graphql-ws.js", JS),
];

/// A `GET` route for each asset.
pub fn routes(assets: &'static [Asset]) -> Router {
    assets.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { asset.respond(&headers) }),
        )
    })
}

impl Asset {
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let mut hasher = DefaultHasher::new();
            hasher.write(self.body);
            HeaderValue::try_from(format!("\"{:016x}\"", hasher.finish()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let mut response = if already_has(request, etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Body::from(Bytes::from_static(self.body)).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.content_type == HTML {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        }
        response
    }
}

/// Whether `If-None-Match` names this version (or `*`).
fn already_has(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}
