//! Parsed GraphQL documents by query text. Clients send the same few
//! documents over and over with different variables (every `createMessage`
//! is the same text), and parsing one costs more than the rest of a send's
//! server CPU outside the database: parse once, hand each request a copy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::Request;
use async_graphql::parser::types::ExecutableDocument;

/// Distinct documents kept; a flood of distinct ones starts the cache over.
const CAPACITY: usize = 256;
/// Longer query texts are parsed every time rather than kept.
const LONGEST_CACHED: usize = 16 * 1024;

/// The parsed document of `query`, or `None` when it does not parse (the
/// executor then parses it again and reports the error as usual).
pub fn parsed(query: &str) -> Option<Arc<ExecutableDocument>> {
    static CACHE: OnceLock<Mutex<HashMap<Arc<str>, Arc<ExecutableDocument>>>> = OnceLock::new();
    if query.len() > LONGEST_CACHED {
        return async_graphql::parser::parse_query(query).ok().map(Arc::new);
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(query) {
        return Some(found.clone());
    }
    let document = Arc::new(async_graphql::parser::parse_query(query).ok()?);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CAPACITY {
        cache.clear();
    }
    cache.insert(query.into(), document.clone());
    Some(document)
}

/// `request` with its document taken from the cache (the executor still
/// checks depth, complexity and validity as for any request).
pub fn with_parsed_query(mut request: Request) -> Request {
    if let Some(document) = parsed(&request.query) {
        request.set_parsed_query(ExecutableDocument::clone(&document));
    }
    request
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
    fn text_that_does_not_parse_is_left_to_the_executor() {
        assert!(parsed("mutation {").is_none());
        let request = with_parsed_query(Request::new("mutation {"));
        assert_eq!(request.query, "mutation {");
    }
}
