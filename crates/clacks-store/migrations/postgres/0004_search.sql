-- Full-text search over message content (issue 13 item 5): a stored
-- generated tsvector column with a GIN index. Stored rather than an
-- expression index so that ranking (ts_rank) reads the tsvector instead of
-- parsing every matching message's content again; PostgreSQL keeps it in
-- step on every insert and update (edits re-index, a tombstone's empty
-- content leaves no lexemes).
--
-- The 'simple' configuration: lowercases and splits words, with no
-- stemming and no stopwords. Messages come in every language, and a
-- language configuration ('english') would stem and drop words by the
-- rules of one language, mangling the others; 'simple' matches the same
-- way whatever the language (the exact word, case-insensitively; accents
-- are kept: "café" does not match "cafe").
--
-- Rewrites the table once, on a large existing table a while.

ALTER TABLE messages
    ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
CREATE INDEX messages_search ON messages USING GIN (search);
