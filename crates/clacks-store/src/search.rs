//! Full-text search: what each backend's engine is asked, written here
//! once per backend, and the statements of the indexer that keeps the
//! index up.
//!
//! The index (`message_search`, migrations `0006_search_deferred`) is not
//! written by the send path: [`crate::Store::index_search`] brings it up to
//! each channel's last seq afterwards, from a background task and, for its
//! own scope, before every search (so a search finds every message
//! committed before it began). `search_progress` holds how far each
//! channel is indexed.
//!
//! The query arrives as plain words ([`clacks_core::SearchQuery`]: runs of
//! letters and digits, so no engine operator can be among them); each word
//! is still quoted where the engine has keywords, and every word must
//! match.
//!
//! What a word is, per engine (see the migrations `0004_search` and
//! `0006_search_deferred`):
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
                "-bm25(message_search)".to_owned(),
                format!(
                    "FROM message_search JOIN messages m ON m.id = message_search.rowid \
                     WHERE message_search MATCH {q}"
                ),
            )
        }
        Backend::MySql => {
            let (q1, q2) = (param(), param());
            (
                format!("MATCH (s.content) AGAINST ({q1} IN BOOLEAN MODE)"),
                format!(
                    "FROM message_search s JOIN messages m ON m.id = s.message_id \
                     WHERE MATCH (s.content) AGAINST ({q2} IN BOOLEAN MODE)"
                ),
            )
        }
        Backend::Postgres => {
            let q = param();
            (
                // Normalization 1: divided by 1 + log(length), so a long
                // message does not outrank a short one by length alone.
                "ts_rank(s.search, tsq, 1)::float8".to_owned(),
                format!(
                    "FROM message_search s JOIN messages m ON m.id = s.message_id, \
                     plainto_tsquery('simple', {q}) AS tsq WHERE s.search @@ tsq"
                ),
            )
        }
    };
    // The index's own copy of the channel where it has one (an index on
    // it narrows a one-channel search before the join); SQLite's FTS5
    // table holds only the words.
    let channel = if backend == Backend::Sqlite {
        "m.channel_id"
    } else {
        "s.channel_id"
    };
    let scope = match scope {
        SearchScope::Channel(_) => format!(" AND {channel} = {}", param()),
        SearchScope::MemberOf(_) => format!(
            " AND {channel} IN (SELECT channel_id FROM members WHERE user_id = {})",
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

/// Most seqs one indexing transaction covers: a channel far behind is
/// indexed in several, so that none holds its locks (on SQLite, the one
/// write connection that sends wait for) for long.
pub(crate) const INDEX_TRANSACTION_SEQS: i64 = 500;

/// The channels of `scope` whose index is behind: `id, last_seq,
/// indexed_seq` (NULL without a `search_progress` row), by id. Parameters:
/// the scope's channel id or user id (none for `All`), the limit.
pub(crate) fn behind_statement(scope: &SearchScope) -> &'static str {
    match scope {
        SearchScope::Channel(_) => {
            "SELECT c.id, c.last_seq, p.indexed_seq FROM channels c \
             LEFT JOIN search_progress p ON p.channel_id = c.id \
             WHERE c.id = $1 AND c.last_seq > COALESCE(p.indexed_seq, 0) LIMIT $2"
        }
        SearchScope::MemberOf(_) => {
            "SELECT c.id, c.last_seq, p.indexed_seq FROM members mb \
             JOIN channels c ON c.id = mb.channel_id \
             LEFT JOIN search_progress p ON p.channel_id = c.id \
             WHERE mb.user_id = $1 AND c.last_seq > COALESCE(p.indexed_seq, 0) \
             ORDER BY c.id LIMIT $2"
        }
        SearchScope::All => {
            "SELECT c.id, c.last_seq, p.indexed_seq FROM channels c \
             LEFT JOIN search_progress p ON p.channel_id = c.id \
             WHERE c.last_seq > COALESCE(p.indexed_seq, 0) ORDER BY c.id LIMIT $1"
        }
    }
}

/// Creates a channel's `search_progress` row at 0 unless it exists; a
/// channel that no longer exists gets none (MySQL's IGNORE turns the
/// foreign key's refusal into a warning; elsewhere it is an error the
/// indexer reads as "gone"). Parameter: the channel id.
pub(crate) fn start_progress_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => {
            "INSERT IGNORE INTO search_progress (channel_id, indexed_seq) VALUES (?, 0)"
        }
        Backend::Sqlite | Backend::Postgres => {
            "INSERT INTO search_progress (channel_id, indexed_seq) VALUES ($1, 0) \
             ON CONFLICT (channel_id) DO NOTHING"
        }
    }
}

/// Locks a channel's `search_progress` row and reads its watermark
/// (SQLite: its write transaction holds the database's one write lock
/// already). Parameter: the channel id.
pub(crate) fn lock_progress_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SELECT indexed_seq FROM search_progress WHERE channel_id = $1",
        Backend::MySql | Backend::Postgres => {
            "SELECT indexed_seq FROM search_progress WHERE channel_id = $1 FOR UPDATE"
        }
    }
}

/// The start of the statement that removes index rows by message id; the
/// ids follow, comma-separated, then `)`.
pub(crate) fn delete_rows_prefix(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "DELETE FROM message_search WHERE rowid IN (",
        Backend::MySql | Backend::Postgres => "DELETE FROM message_search WHERE message_id IN (",
    }
}

/// The start of the statement that adds index rows; then one
/// row per message: SQLite `(id, content)`, MySQL `(id, channel,
/// content)`, PostgreSQL `(id, channel, to_tsvector('simple', content))`.
pub(crate) fn insert_rows_prefix(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INSERT INTO message_search (rowid, content) ",
        Backend::MySql => "INSERT INTO message_search (message_id, channel_id, content) ",
        Backend::Postgres => "INSERT INTO message_search (message_id, channel_id, search) ",
    }
}

/// The condition for channel `$1`'s messages of seqs in (`$2`, `$3`] that
/// belong in the index (not deleted, not empty), written once for every
/// statement that reads them. A macro so that `concat!` builds the
/// statements at compile time.
macro_rules! new_messages_condition {
    () => {
        "channel_id = $1 AND seq > $2 AND seq <= $3 AND deleted_at IS NULL AND content <> ''"
    };
}

/// The statement that indexes a channel's messages of a seq range
/// straight from `messages`, where the engine allows it (parameters: the
/// channel id, the range's exclusive start and inclusive end). One text
/// whatever the number of messages, so it is prepared once per
/// connection: rows bound one by one into a statement of varying length
/// were a new statement to parse and plan on nearly every call, which
/// cost PostgreSQL more than the index itself. `None` on MySQL, where
/// `INSERT ... SELECT` would hold shared next-key locks on the messages
/// read, and so block the channel's next send until the indexing
/// transaction commits.
pub(crate) fn insert_range_statement(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Sqlite => Some(concat!(
            "INSERT INTO message_search (rowid, content) SELECT id, content FROM messages WHERE ",
            new_messages_condition!()
        )),
        Backend::Postgres => Some(concat!(
            "INSERT INTO message_search (message_id, channel_id, search) \
             SELECT id, channel_id, to_tsvector('simple', content) FROM messages WHERE ",
            new_messages_condition!()
        )),
        Backend::MySql => None,
    }
}

/// The messages of `$1`'s seqs in (`$2`, `$3`] that the index holds: for
/// backends that read them and write the index rows themselves.
pub(crate) const SELECT_NEW_MESSAGES: &str = concat!(
    "SELECT id, content FROM messages WHERE ",
    new_messages_condition!()
);

/// `items` in chunks of at most `max` whose lengths are `max` or powers
/// of two, so that a statement with one bound row per item has one of a
/// few texts, each prepared once per connection, rather than a new one for
/// nearly every length.
pub(crate) fn fixed_size_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = if rest.len() >= max {
            max
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chunks_have_few_lengths_and_cover_everything_once() {
        let items: Vec<u32> = (0..1000).collect();
        for n in [0, 1, 2, 3, 7, 200, 201, 455, 1000] {
            let chunks: Vec<&[u32]> = fixed_size_chunks(&items[..n], 200).collect();
            assert_eq!(chunks.concat(), items[..n].to_vec());
            for chunk in &chunks {
                assert!(
                    chunk.len() == 200 || chunk.len().is_power_of_two(),
                    "{n}: {}",
                    chunk.len()
                );
            }
        }
    }

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
