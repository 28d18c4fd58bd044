//! Handlers, one module per resource. Each handler parses its input (the
//! extractors), calls one `ChatService::admin_*` method, and maps the answer
//! to the JSON of [`crate::model`]; errors go through [`crate::error`].

pub mod channels;
pub mod health;
pub mod members;
pub mod messages;
pub mod presence;
pub mod search;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use clacks_service::ChatService;

/// The state every handler gets.
pub type AppState = Arc<ChatService>;
