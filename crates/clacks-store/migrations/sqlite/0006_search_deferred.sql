-- Full-text search off the send path (issue 13): the index is no longer
-- kept up by triggers inside the send's transaction but by an indexer that
-- runs after the send committed (a background task, and every search for
-- its own scope first).
--
-- Why: the triggers of 0004 tokenized every message and wrote the FTS5
-- index in the transaction a client waits for (+30% instructions per
-- durable send). The indexer does the same work in batches, later.
--
-- The index is contentless with `contentless_delete=1` (SQLite 3.43+): it
-- keeps only tokens, like the external-content table of 0004, but a row can
-- be deleted by rowid alone. The external-content table needed the old
-- content to delete a row, which an indexer running after an edit no
-- longer has. Still tokenizer unicode61 (see 0004): case-folded,
-- diacritics removed, no stemming, no stopwords; rowid = the message id.
-- Ranked by bm25(), which reads only the index.
DROP TRIGGER messages_search_insert;
DROP TRIGGER messages_search_delete;
DROP TRIGGER messages_search_update;
DROP TABLE messages_search;

CREATE VIRTUAL TABLE message_search USING fts5(
    content,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- How far each channel is indexed: every message and every edit or delete
-- with a seq at or below `indexed_seq` is reflected in `message_search`. A
-- channel without a row is indexed up to seq 0.
CREATE TABLE search_progress (
    channel_id INTEGER PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    indexed_seq INTEGER NOT NULL
);

-- Messages stored before this migration (tombstones have no words: left
-- out), and every existing channel marked indexed up to its last seq.
INSERT INTO message_search (rowid, content)
    SELECT id, content FROM messages WHERE deleted_at IS NULL AND content <> '';
INSERT INTO search_progress (channel_id, indexed_seq) SELECT id, last_seq FROM channels;

-- A message row deleted (only with its channel) takes its index row along:
-- FTS5 tables cannot be the child of a foreign key. Deletes are rare; the
-- send path only inserts.
CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.id;
END;
