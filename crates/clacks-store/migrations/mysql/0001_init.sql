-- Clacks schema, MySQL 8 / MariaDB 10.6+. Times are milliseconds since the
-- Unix epoch. A system message has sender ''. Identifiers use utf8mb4_bin:
-- user ids are opaque and compared byte for byte, never case-folded.

CREATE TABLE settings (
    name VARCHAR(100) NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE channels (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    display_name VARCHAR(150) NOT NULL,
    metadata TEXT,
    -- The per-channel seq counter: bumped in the transaction that stores a
    -- message or durable event, so seqs are gap-free even across rollbacks.
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE members (
    channel_id BIGINT NOT NULL,
    user_id VARCHAR(200) NOT NULL,
    role VARCHAR(32) NOT NULL,
    joined_at BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    last_read_at BIGINT,
    PRIMARY KEY (channel_id, user_id),
    KEY members_by_user (user_id, channel_id),
    CONSTRAINT members_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sender VARCHAR(200) NOT NULL,
    client_message_id VARCHAR(100),
    content MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at BIGINT,
    deleted_at BIGINT,
    UNIQUE KEY messages_channel_seq (channel_id, seq),
    UNIQUE KEY messages_client_id (channel_id, sender, client_message_id),
    CONSTRAINT messages_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE channel_events (
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind VARCHAR(32) NOT NULL,
    user_id VARCHAR(200),
    message_id BIGINT,
    payload TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, seq),
    CONSTRAINT channel_events_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE read_marks (
    channel_id BIGINT NOT NULL,
    user_id VARCHAR(200) NOT NULL,
    up_to_seq BIGINT NOT NULL,
    read_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_id, up_to_seq),
    CONSTRAINT read_marks_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
