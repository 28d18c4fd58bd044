-- Full-text search off the send path (issue 13): the index moves out of
-- `messages` into a table of its own, kept up by an indexer that runs after
-- the send committed (a background task, and every search for its own
-- scope first), no longer by the send's transaction.
--
-- Why: the stored generated column of 0004 made every send parse its
-- content into a tsvector and insert it into a GIN index, inside the
-- transaction a client waits for (+28% server CPU per durable send). The
-- indexer does the same work in batches, where GIN's insert cost is shared
-- and no client waits.
--
-- Still the 'simple' configuration (see 0004 for why): the exact word,
-- lowercased, no stemming, no stopwords. `channel_id` is copied here so a
-- search of one channel and a channel's deletion need not join `messages`
-- to find its rows.
CREATE TABLE message_search (
    message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    channel_id BIGINT NOT NULL,
    search tsvector NOT NULL
);
CREATE INDEX message_search_words ON message_search USING GIN (search);
CREATE INDEX message_search_channel ON message_search (channel_id);

-- How far each channel is indexed: every message and every edit or delete
-- with a seq at or below `indexed_seq` is reflected in `message_search`. A
-- channel without a row is indexed up to seq 0. The indexer locks a
-- channel's row while it works on it, so indexers on several nodes take
-- turns per channel (never the `channels` row, which every send locks).
CREATE TABLE search_progress (
    channel_id BIGINT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    indexed_seq BIGINT NOT NULL
);

-- What 0004 indexed, moved over (tombstones have no words: left out), and
-- every existing channel marked indexed up to its last seq.
INSERT INTO message_search (message_id, channel_id, search)
    SELECT id, channel_id, search FROM messages WHERE deleted_at IS NULL AND content <> '';
INSERT INTO search_progress (channel_id, indexed_seq) SELECT id, last_seq FROM channels;

-- Dropping the column drops its GIN index; no rewrite (the space is
-- reclaimed as rows are updated or by VACUUM FULL).
ALTER TABLE messages DROP COLUMN search;
