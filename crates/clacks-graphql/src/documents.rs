//! Parsed GraphQL documents by query text. Clients send the same few
//! documents over and over with different variables (every `createMessage`
//! is the same text), and parsing one costs more than the rest of a send's
//! server CPU outside the database: parse once, hand each request a copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_graphql::ServerError;
use async_graphql::parser::types::ExecutableDocument;

/// Distinct query texts kept; a flood of distinct ones starts a cache over.
const CAPACITY: usize = 256;
/// Longer query texts are parsed every time rather than kept.
const LONGEST_CACHED: usize = 16 * 1024;

/// What was made of each query text (a parsed document, a render plan's
/// document), kept because clients send the same few texts over and over.
/// Bounded and simple: when full, it starts over.
pub(crate) struct ByQueryText<V> {
    entries: OnceLock<Mutex<HashMap<Arc<str>, V>>>,
}

impl<V: Clone> ByQueryText<V> {
    pub const fn new() -> Self {
        ByQueryText {
            entries: OnceLock::new(),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Arc<str>, V>> {
        self.entries
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The value kept for `query`, or the one `make` makes (kept unless it
    /// is an error).
    pub fn get_or_make<E>(&self, query: &str, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(found) = self.entries().get(query) {
            return Ok(found.clone());
        }
        let made = make()?;
        let mut entries = self.entries();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(query.into(), made.clone());
        Ok(made)
    }
}

/// The parsed document of `query` (only ever called by the guard, which
/// bounds the text's length, tokens and nesting first).
pub fn parsed(query: &str) -> Result<Arc<ExecutableDocument>, ServerError> {
    static PARSED: ByQueryText<Arc<ExecutableDocument>> = ByQueryText::new();
    let parse = || async_graphql::parser::parse_query(query).map(Arc::new);
    if query.len() > LONGEST_CACHED {
        return parse().map_err(Into::into);
    }
    PARSED.get_or_make(query, parse).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_text_is_parsed_once() {
        let query =
            "mutation Send($c: ID!) { createMessage(channelId: $c, content: \"x\") { id } }";
        let first = parsed(query).unwrap();
        let second = parsed(query).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn text_that_does_not_parse_says_why() {
        let error = parsed("mutation {").unwrap_err();
        assert!(error.message.contains("expected"), "{}", error.message);
    }
}
