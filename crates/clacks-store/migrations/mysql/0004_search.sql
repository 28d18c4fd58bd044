-- Full-text search over message content (issue 13 item 5): an InnoDB
-- FULLTEXT index on `messages.content`, which InnoDB keeps in step with the
-- table itself (edits and tombstones included; changes become searchable
-- at commit).
--
-- The content column moves from utf8mb4_bin to utf8mb4_unicode_ci: a
-- full-text search is case-sensitive on a binary collation, and content
-- is never compared for equality anywhere (identifiers keep utf8mb4_bin).
-- With it, matching is case- and accent-insensitive ("Café" matches
-- "cafe").
--
-- What InnoDB leaves out of the index, and so can never match: words
-- shorter than innodb_ft_min_token_size (default 3 characters) or longer
-- than innodb_ft_max_token_size (84), and the stopwords of
-- INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD ("the", "and", "with",
-- ...). The store drops such words from a query (a required word that is
-- not indexed would make every search fail). Changing those server
-- variables needs the index rebuilt (OPTIMIZE TABLE messages, with
-- innodb_optimize_fulltext_only=OFF) and the store's copy of the rule
-- changed to match.
--
-- Rebuilds the table (the FULLTEXT index adds InnoDB's hidden FTS_DOC_ID
-- column): on a large existing table this takes a while, once.

ALTER TABLE messages
    MODIFY content MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
    ADD FULLTEXT INDEX messages_search (content);
