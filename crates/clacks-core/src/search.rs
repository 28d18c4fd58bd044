//! Full-text search input: the caller's query parsed into plain words, and
//! the opaque cursor of a result page.
//!
//! A query is never handed to a search engine as written. Every backend has
//! a query syntax of its own (FTS5: `"`, `*`, `NEAR(`, `AND`/`OR`/`NOT`;
//! MariaDB boolean mode: `+ - < > ( ) ~ * "`; PostgreSQL tsquery: `& | ! <->`)
//! where a stray character is an error or changes the meaning. Here the
//! query becomes a list of words (maximal runs of Unicode letters and
//! digits, lowercased), which the store quotes for its engine: operators
//! cannot survive the split, so no input reaches an engine as syntax.

use crate::error::{Error, Result};

/// Longest query, in characters.
pub const SEARCH_QUERY_MAX_CHARS: usize = 256;
/// Most words a query may hold (every one must match).
pub const SEARCH_MAX_WORDS: usize = 16;
/// How deep paging goes: hits past this many are not served (the engine
/// ranks every match to serve any page, so deep pages cost the most).
pub const SEARCH_MAX_DEPTH: u32 = 1_000;

/// A parsed search query: its words, lowercased, distinct, in order.
/// A message matches when it holds every word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    words: Vec<String>,
}

impl SearchQuery {
    /// Parses a caller's query. Refused (`InvalidInput` on `query`) when
    /// empty, longer than [`SEARCH_QUERY_MAX_CHARS`], without any letter or
    /// digit, or with more than [`SEARCH_MAX_WORDS`] words.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.trim().is_empty() {
            return Err(Error::invalid("query", "must not be empty"));
        }
        let chars = raw.chars().count();
        if chars > SEARCH_QUERY_MAX_CHARS {
            return Err(Error::invalid(
                "query",
                format!("is {chars} characters, the maximum is {SEARCH_QUERY_MAX_CHARS}"),
            ));
        }
        let mut words: Vec<String> = Vec::new();
        for word in raw.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() {
                continue;
            }
            let word = word.to_lowercase();
            if !words.contains(&word) {
                words.push(word);
            }
        }
        if words.is_empty() {
            return Err(Error::invalid(
                "query",
                "must contain a word (letters or digits)",
            ));
        }
        if words.len() > SEARCH_MAX_WORDS {
            return Err(Error::invalid(
                "query",
                format!(
                    "has {} words, the maximum is {SEARCH_MAX_WORDS}",
                    words.len()
                ),
            ));
        }
        Ok(SearchQuery { words })
    }

    /// The words, each a run of letters and digits only.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

/// Where a page of search hits starts: how many better hits came before.
/// Opaque to clients (`SearchCursor::encode` / `parse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchCursor {
    pub offset: u32,
}

impl SearchCursor {
    const PREFIX: &'static str = "s1.";

    /// The cursor of the hit at `offset` (0-based): a page asked `after` it
    /// starts with the next hit.
    pub fn after_hit(offset: u32) -> Self {
        SearchCursor {
            offset: offset.saturating_add(1),
        }
    }

    /// The text a client passes back as `after`.
    pub fn encode(self) -> String {
        format!("{}{:x}", Self::PREFIX, self.offset)
    }

    /// Reads a cursor given back by a client (`InvalidInput` on `after`
    /// when it is not one this server handed out).
    pub fn parse(raw: &str) -> Result<Self> {
        raw.strip_prefix(Self::PREFIX)
            .filter(|hex| !hex.is_empty() && hex.len() <= 8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .map(|offset| SearchCursor { offset })
            .ok_or_else(|| Error::invalid("after", "is not a search cursor"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn operators_never_survive() {
        let query =
            SearchQuery::parse(r#"NEAR("a" b*) -c +d (e OR f) 'g' x:y ~z <-> h&i|j !k"#).unwrap();
        for word in query.words() {
            assert!(word.chars().all(char::is_alphanumeric), "{word}");
        }
        assert_eq!(query.words()[0], "near");
    }

    #[test]
    fn words_are_lowercased_distinct_and_unicode() {
        let query = SearchQuery::parse("Café café CAFÉ 東京 don't").unwrap();
        assert_eq!(query.words(), ["café", "東京", "don", "t"]);
    }

    #[test]
    fn refusals() {
        assert!(SearchQuery::parse("").is_err());
        assert!(SearchQuery::parse("   ").is_err());
        assert!(SearchQuery::parse("*** \"\" ()").is_err());
        assert!(SearchQuery::parse(&"a".repeat(SEARCH_QUERY_MAX_CHARS + 1)).is_err());
        assert!(SearchQuery::parse(&"a ".repeat(SEARCH_MAX_WORDS + 1)).is_ok()); // one word, repeated
        let many: Vec<String> = (0..=SEARCH_MAX_WORDS).map(|i| format!("w{i}")).collect();
        assert!(SearchQuery::parse(&many.join(" ")).is_err());
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = SearchCursor::after_hit(41);
        assert_eq!(SearchCursor::parse(&cursor.encode()).unwrap().offset, 42);
        for bad in ["", "s1.", "42", "s1.zz", "s1.123456789", "s2.1"] {
            assert!(SearchCursor::parse(bad).is_err(), "{bad}");
        }
    }
}
