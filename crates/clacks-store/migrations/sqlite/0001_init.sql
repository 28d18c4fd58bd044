-- Clacks schema, SQLite. Times are milliseconds since the Unix epoch.
-- A system message has sender ''.

CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name TEXT NOT NULL,
    metadata TEXT,
    -- The per-channel seq counter: bumped in the transaction that stores a
    -- message or durable event, so seqs are gap-free even across rollbacks.
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE members (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_at INTEGER NOT NULL,
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    last_read_at INTEGER,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, channel_id);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    client_message_id TEXT,
    content TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    edited_at INTEGER,
    deleted_at INTEGER,
    UNIQUE (channel_id, seq),
    UNIQUE (channel_id, sender, client_message_id)
);

CREATE TABLE channel_events (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user_id TEXT,
    message_id INTEGER,
    payload TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq)
);

CREATE TABLE read_marks (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    up_to_seq INTEGER NOT NULL,
    read_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id, up_to_seq)
);
