//! What a browser finds on the client port besides `/graphql`:
//!
//! - [`assets`]: GraphiQL at `/graphiql` and the demo chat at `/demo` (`/`
//!   leads there), embedded in the binary. Both speak the public GraphQL
//!   API only, like any client. The libraries they load are bundled from
//!   npm by `web/build.sh` into `assets/vendor/` and checked in, so
//!   building Clacks never needs npm.
//! - [`dev`]: the demo's dev-mode login and join, the only endpoints here
//!   that go past GraphQL (to the service's admin operations), and only in
//!   dev mode for requests from this machine.
//! - [`cors`]: which other origins' pages may call the client port.
//!
//! Nothing here reads the database or the hub, or decides a chat rule.

pub mod assets;
pub mod cors;
mod dev;
mod loopback;

use std::sync::Arc;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use clacks_service::ChatService;

pub use cors::CorsOrigins;

/// Settings of the browser-facing routes.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Serve the demo chat page (`/`, `/demo`).
    pub demo: bool,
    /// The management API is on loopback and needs no token: the demo
    /// page may then log in as anyone and create channels (for requests
    /// from this machine), and loopback origins pass CORS.
    pub dev_mode: bool,
    /// Origins whose pages may call the client port.
    pub cors_origins: CorsOrigins,
}

pub fn router(service: Arc<ChatService>, config: &WebConfig) -> Router {
    let router = assets::routes(&assets::GRAPHIQL);
    if !config.demo {
        return router;
    }
    let router = router
        .merge(assets::routes(&assets::DEMO))
        .route("/", get(|| async { Redirect::temporary("/demo") }));
    if config.dev_mode {
        router.merge(dev::routes(service))
    } else {
        router
    }
}

/// The CORS policy of the client port; wrap every client route in it.
pub fn cors_layer(config: &WebConfig) -> tower_http::cors::CorsLayer {
    cors::layer(&config.cors_origins, config.dev_mode)
}
