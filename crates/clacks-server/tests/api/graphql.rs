//! GraphQL API over HTTP and WebSocket (issue 4).

mod auth;
#[path = "graphql/batched.rs"]
mod batched;
#[path = "graphql/client.rs"]
pub mod client;
#[path = "graphql/connections.rs"]
mod connections;
mod delivery;
#[path = "graphql/http.rs"]
mod http;
#[path = "graphql/limits.rs"]
mod limits;
mod message_features;
mod presence;
mod races;
mod rate_limits;
#[path = "graphql/schema.rs"]
mod schema;
#[path = "graphql/ws.rs"]
mod ws;
