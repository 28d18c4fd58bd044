//! GraphQL API over HTTP and WebSocket (issue 4).
