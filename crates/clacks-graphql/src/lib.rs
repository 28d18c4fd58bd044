//! The GraphQL client API (port 8000): queries and mutations over HTTP,
//! subscriptions over WebSocket. Resolvers are thin and call the service.

use std::sync::Arc;

use axum::Router;
use clacks_service::ChatService;

/// Settings of the GraphQL API.
#[derive(Debug, Clone)]
pub struct GraphqlConfig {
    pub max_subscriptions_per_connection: usize,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            max_subscriptions_per_connection: 100,
        }
    }
}

pub fn router(service: Arc<ChatService>, config: GraphqlConfig) -> Router {
    let _ = (service, config);
    Router::new()
}
