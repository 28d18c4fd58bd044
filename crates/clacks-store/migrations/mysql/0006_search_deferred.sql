-- Full-text search off the send path (issue 13): the FULLTEXT index moves
-- out of `messages` into a table of its own, kept up by an indexer that
-- runs after the send committed (a background task, and every search for
-- its own scope first), no longer by the send's transaction.
--
-- Why: InnoDB maintains a FULLTEXT index at commit, tokenizing the new rows
-- into its FTS cache and assigning each a hidden FTS_DOC_ID: +59% server
-- CPU per durable send, paid while a client waits. The indexer pays it
-- later, in batches.
--
-- Matching as before (see 0004): utf8mb4_unicode_ci, so case- and
-- accent-insensitive; the same minimum and maximum word lengths and
-- stopwords, which the store still drops from queries. `channel_id` is
-- copied here so a search of one channel and a channel's deletion need not
-- join `messages` to find its rows.
CREATE TABLE message_search (
    message_id BIGINT NOT NULL PRIMARY KEY,
    channel_id BIGINT NOT NULL,
    content MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    KEY message_search_channel (channel_id),
    FULLTEXT KEY message_search_words (content),
    CONSTRAINT message_search_message FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- How far each channel is indexed: every message and every edit or delete
-- with a seq at or below `indexed_seq` is reflected in `message_search`. A
-- channel without a row is indexed up to seq 0. The indexer locks a
-- channel's row while it works on it, so indexers on several nodes take
-- turns per channel (never the `channels` row, which every send locks).
CREATE TABLE search_progress (
    channel_id BIGINT NOT NULL PRIMARY KEY,
    indexed_seq BIGINT NOT NULL,
    CONSTRAINT search_progress_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB;

-- What 0004 indexed, copied over (tombstones have no words: left out), and
-- every existing channel marked indexed up to its last seq.
INSERT INTO message_search (message_id, channel_id, content)
    SELECT id, channel_id, content FROM messages WHERE deleted_at IS NULL AND content <> '';
INSERT INTO search_progress (channel_id, indexed_seq) SELECT id, last_seq FROM channels;

-- Dropping the index alone would leave InnoDB's hidden FTS_DOC_ID column
-- and its unique index on `messages`, still assigned and maintained on
-- every insert; rebuilding the table (FORCE, in the same statement) drops
-- them. On a large existing table this takes a while, once.
ALTER TABLE messages DROP INDEX messages_search, FORCE;
