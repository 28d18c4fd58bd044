//! The GraphQL client API (port 8000): queries and mutations over HTTP,
//! subscriptions (and everything else) over WebSocket.
//!
//! - [`schema`]: types and resolvers (async-graphql); thin, call the service.
//! - [`http`]: `POST /graphql` (JSON), `GET /graphql` (queries only), the
//!   SDL at `/schema.graphql`. (GraphiQL is served by `clacks-web`.)
//! - [`ws`]: Clacks' own WebSocket layer for both `graphql-transport-ws`
//!   and the legacy `graphql-ws` protocol: one writer task and one bounded
//!   queue per connection; streams never await the socket.
//! - [`guard`]: the limits every document meets before the engine parses,
//!   validates or runs it (size, nesting, fragments, cost, batches).
//! - [`error`]: the one mapping to `extensions.code`.
//!
//! HTTP requests always answer 200 with GraphQL errors (as GraphQL clients
//! expect). Without a token, only `__typename` answers (and introspection,
//! if configured public), with no "Did you mean" suggestions; an invalid
//! token fails the whole request with `UNAUTHENTICATED`.
//!
//! This crate never talks to the database or the hub directly.

pub mod compat;
pub mod documents;
pub mod error;
pub mod guard;
pub mod http;
pub mod render;
pub mod schema;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clacks_service::ChatService;

pub use guard::RequestLimits;
pub use schema::{ClacksSchema, sdl};

/// Settings of the GraphQL API.
#[derive(Debug, Clone)]
pub struct GraphqlConfig {
    /// Most concurrent operations on one WebSocket connection; the next
    /// one fails with `BAD_USER_INPUT`.
    pub max_subscriptions_per_connection: usize,
    /// Limits on each request's documents, batches and database fetches.
    pub limits: RequestLimits,
    /// Lets callers without a token introspect the schema (and read
    /// `/schema.graphql`).
    pub public_introspection: bool,
    /// Frames queued for one WebSocket before it is closed with 4008
    /// ("slow consumer").
    pub connection_queue: usize,
    /// Bytes of frames queued for one WebSocket, bounded like the frames
    /// (a single larger frame is still sent, alone).
    pub connection_queue_bytes: usize,
    /// How long a closing WebSocket waits for its mutations in flight to
    /// answer before its close frame.
    pub close_grace: Duration,
    /// Reverse proxies whose forwarded header names the client address
    /// (for the per-address connection limit).
    pub trusted_proxies: ws::TrustedProxies,
    /// Which header those proxies write.
    pub forwarded_header: ws::ForwardedHeader,
    /// How long a WebSocket may wait before `connection_init` (then 4408).
    pub connection_init_timeout: Duration,
    /// Interval of `ka` (legacy) and `ping` (graphql-transport-ws) frames.
    pub keepalive_interval: Duration,
    /// Largest incoming WebSocket message, in bytes.
    pub max_ws_message_bytes: usize,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            max_subscriptions_per_connection: 100,
            limits: RequestLimits::DEFAULT,
            public_introspection: false,
            connection_queue: 1024,
            connection_queue_bytes: 1024 * 1024,
            close_grace: Duration::from_secs(10),
            trusted_proxies: ws::TrustedProxies::default(),
            forwarded_header: ws::ForwardedHeader::default(),
            connection_init_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(15),
            max_ws_message_bytes: 256 * 1024,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// For callers with a token.
    pub schema: ClacksSchema,
    /// For callers without one: no field suggestions.
    pub anonymous: ClacksSchema,
    /// Renders subscription events once for every subscriber alike.
    pub render: render::RenderSchema,
    /// Checks every document before the engine sees it.
    pub guard: Arc<guard::Guard>,
    /// The schema as SDL, made once.
    pub sdl: Arc<str>,
    pub service: Arc<ChatService>,
    pub config: Arc<GraphqlConfig>,
}

pub fn router(service: Arc<ChatService>, config: GraphqlConfig) -> Router {
    let schema = schema::build(service.clone());
    let sdl: Arc<str> = schema.sdl().into();
    let pages = guard::Pages {
        default: u64::from(service.limits().default_page),
        max: u64::from(service.limits().max_page),
    };
    let guard = guard::Guard::new(&sdl, config.limits, config.public_introspection, pages);
    let state = AppState {
        schema,
        anonymous: schema::build_anonymous(service.clone()),
        render: render::render_schema(service.clone()),
        guard: Arc::new(guard),
        sdl,
        service,
        config: Arc::new(config),
    };
    Router::new()
        .route("/graphql", get(http::get_graphql).post(http::post_graphql))
        .route("/schema.graphql", get(http::schema_sdl))
        .with_state(state)
}
