-- Full-text search over message content (issue 13 item 5): an FTS5 index
-- with external content (the text stays in `messages` only; the index holds
-- the tokens), kept in step with `messages` by triggers, so every way a
-- message is stored, edited, tombstoned or deleted (a channel's deletion
-- cascades here too: SQLite runs triggers for foreign key actions) updates
-- it in the same transaction.
--
-- Tokenizer unicode61: words are runs of Unicode letters and digits,
-- case-folded, diacritics removed ("café" matches "cafe"); no stemming and
-- no stopwords, any word length. Ranked by bm25().

CREATE VIRTUAL TABLE messages_search USING fts5(
    content,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_search (rowid, content) VALUES (new.id, new.content);
END;

CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content) VALUES ('delete', old.id, old.content);
END;

-- An edit replaces the tokens; a tombstone (content '') leaves none.
CREATE TRIGGER messages_search_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_search (rowid, content) VALUES (new.id, new.content);
END;

-- Messages stored before this migration.
INSERT INTO messages_search (messages_search) VALUES ('rebuild');
