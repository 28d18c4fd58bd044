//! GraphQL API over HTTP and WebSocket (issue 4).

#[path = "graphql/client.rs"]
mod client;
#[path = "graphql/connections.rs"]
mod connections;
mod delivery;
#[path = "graphql/http.rs"]
mod http;
#[path = "graphql/schema.rs"]
mod schema;
#[path = "graphql/ws.rs"]
mod ws;
