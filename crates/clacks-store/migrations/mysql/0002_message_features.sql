-- Reactions, replies and threads, mentions (issue 13). Additive only: the columns
-- added to `messages` have defaults, so rows and statements of 0001 stay
-- valid.

-- One row per (message, key, user): reacting twice is one reaction.
CREATE TABLE reactions (
    message_id BIGINT NOT NULL,
    reaction_key VARCHAR(64) NOT NULL,
    user_id VARCHAR(200) NOT NULL,
    channel_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, reaction_key, user_id),
    KEY reactions_by_channel (channel_id),
    CONSTRAINT reactions_message FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A reply names its parent (a top-level message of the same channel); the
-- parent keeps its thread's reply count and newest reply time, updated in
-- the transaction that stores the reply.
ALTER TABLE messages
    ADD COLUMN parent_id BIGINT NULL,
    ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN last_reply_at BIGINT NULL,
    ADD COLUMN mentions TEXT NULL,
    ADD KEY messages_by_parent (parent_id, seq);

-- The members a message mentions: a JSON array in `messages.mentions` (what
-- the message shows) and one row each here (what unread mention counts
-- count, by the member's read watermark).
CREATE TABLE mentions (
    message_id BIGINT NOT NULL,
    user_id VARCHAR(200) NOT NULL,
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id),
    KEY mentions_by_user (user_id, channel_id, seq),
    KEY mentions_by_channel (channel_id),
    CONSTRAINT mentions_message FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
