//! Full-text search: what each backend's engine is asked, written here
//! once per backend. The query arrives as plain words
//! ([`clacks_core::SearchQuery`]: runs of letters and digits, so no engine
//! operator can be among them); each word is still quoted where the
//! engine has keywords, and every word must match.
//!
//! What a word is, per engine (see the migrations `0004_search`):
//! - SQLite, FTS5 `unicode61`: runs of Unicode letters and digits,
//!   case-folded, diacritics removed; any length, no stopwords. Ranked by
//!   bm25.
//! - MariaDB/MySQL, InnoDB FULLTEXT: words split at spaces and
//!   punctuation, compared case- and accent-insensitively
//!   (utf8mb4_unicode_ci); words shorter than 3 characters or longer than
//!   84, and InnoDB's default stopwords, are not indexed. Those words are
//!   dropped from the query here (a required word InnoDB never indexed
//!   would fail every search); a query of nothing else finds nothing.
//!   Ranked by InnoDB's relevance (TF-IDF).
//! - PostgreSQL, `to_tsvector('simple', content)`: the default parser's
//!   words, lowercased, accents kept, no stemming, no stopwords. Ranked by
//!   `ts_rank` with length normalization.
//!
//! Ties (equal scores) go newest first, by message id.

use clacks_core::SearchQuery;

use crate::{Backend, SearchScope};

/// InnoDB's `innodb_ft_min_token_size` default: shorter words are not
/// indexed.
const INNODB_MIN_TOKEN_CHARS: usize = 3;
/// InnoDB's `innodb_ft_max_token_size` default: longer words are not
/// indexed.
const INNODB_MAX_TOKEN_CHARS: usize = 84;
/// InnoDB's default stopwords (INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD)
/// of at least [`INNODB_MIN_TOKEN_CHARS`] characters.
const INNODB_STOPWORDS: &[&str] = &[
    "about", "are", "com", "for", "from", "how", "that", "the", "this", "und", "was", "what",
    "when", "where", "who", "will", "with", "www",
];

/// The search expression handed to the engine (bound as a parameter, never
/// spliced into SQL), or `None` when nothing of the query can match.
pub(crate) fn engine_query(backend: Backend, query: &SearchQuery) -> Option<String> {
    let words = query.words();
    match backend {
        // A quoted string is a phrase of its tokens: keywords such as NEAR,
        // AND, OR, NOT are then plain words. Words hold no `"` to escape.
        Backend::Sqlite => Some(
            words
                .iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        // Boolean mode: `+` makes each word required (every word must
        // match, as on the other engines); quoted as a phrase.
        Backend::MySql => {
            let required: Vec<String> = words
                .iter()
                .filter(|w| {
                    let chars = w.chars().count();
                    (INNODB_MIN_TOKEN_CHARS..=INNODB_MAX_TOKEN_CHARS).contains(&chars)
                        && !INNODB_STOPWORDS.contains(&w.as_str())
                })
                .map(|w| format!("+\"{w}\""))
                .collect();
            (!required.is_empty()).then(|| required.join(" "))
        }
        // plainto_tsquery: the words ANDed, whatever characters they hold.
        Backend::Postgres => Some(words.join(" ")),
    }
}

/// The search statement for `scope`. Its parameters, in order: the engine
/// query (twice on MySQL), the scope's channel id or user id (none for
/// `All`), the limit, the offset. Columns: `message_columns!()`, then the
/// score (a float8, higher is better).
pub(crate) fn statement(backend: Backend, scope: &SearchScope) -> String {
    let mut n = 0;
    let mut param = || {
        n += 1;
        if backend == Backend::MySql {
            "?".to_owned()
        } else {
            format!("${n}")
        }
    };
    let (select, from_where) = match backend {
        Backend::Sqlite => {
            let q = param();
            (
                "-bm25(messages_search)".to_owned(),
                format!(
                    "FROM messages_search JOIN messages m ON m.id = messages_search.rowid \
                     WHERE messages_search MATCH {q}"
                ),
            )
        }
        Backend::MySql => {
            let (q1, q2) = (param(), param());
            (
                format!("MATCH (m.content) AGAINST ({q1} IN BOOLEAN MODE)"),
                format!("FROM messages m WHERE MATCH (m.content) AGAINST ({q2} IN BOOLEAN MODE)"),
            )
        }
        Backend::Postgres => {
            let q = param();
            (
                // Normalization 1: divided by 1 + log(length), so a long
                // message does not outrank a short one by length alone.
                "ts_rank(m.search, tsq, 1)::float8".to_owned(),
                format!(
                    "FROM messages m, plainto_tsquery('simple', {q}) AS tsq WHERE m.search @@ tsq"
                ),
            )
        }
    };
    let scope = match scope {
        SearchScope::Channel(_) => format!(" AND m.channel_id = {}", param()),
        SearchScope::MemberOf(_) => format!(
            " AND m.channel_id IN (SELECT channel_id FROM members WHERE user_id = {})",
            param()
        ),
        SearchScope::All => String::new(),
    };
    let (limit, offset) = (param(), param());
    format!(
        concat!(
            "SELECT ",
            message_columns!(),
            ", {select} AS score {from_where} AND m.deleted_at IS NULL{scope} \
             ORDER BY score DESC, m.id DESC LIMIT {limit} OFFSET {offset}"
        ),
        select = select,
        from_where = from_where,
        scope = scope,
        limit = limit,
        offset = offset,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn engine_queries_quote_every_word() {
        let query = SearchQuery::parse(r#"NEAR("the" cat*) -ab OR"#).unwrap();
        assert_eq!(
            engine_query(Backend::Sqlite, &query).unwrap(),
            r#""near" "the" "cat" "ab" "or""#
        );
        assert_eq!(
            engine_query(Backend::MySql, &query).unwrap(),
            r#"+"near" +"cat""#
        );
        assert_eq!(
            engine_query(Backend::Postgres, &query).unwrap(),
            "near the cat ab or"
        );
        let unindexed = SearchQuery::parse("the a to").unwrap();
        assert_eq!(engine_query(Backend::MySql, &unindexed), None);
    }

    #[test]
    fn placeholders_in_order() {
        let user = clacks_core::UserId::parse("u").unwrap();
        let sql = statement(Backend::Postgres, &SearchScope::MemberOf(user));
        assert!(sql.contains("$1") && sql.contains("user_id = $2"));
        assert!(sql.ends_with("LIMIT $3 OFFSET $4"));
        let sql = statement(Backend::MySql, &SearchScope::All);
        assert_eq!(sql.matches('?').count(), 4);
    }
}
