-- Reactions, replies and threads, mentions (issue 13). Additive only: the columns
-- added to `messages` have defaults, so rows and statements of 0001 stay
-- valid.

-- One row per (message, key, user): reacting twice is one reaction.
CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    reaction_key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, reaction_key, user_id)
);
CREATE INDEX reactions_by_channel ON reactions (channel_id);

-- A reply names its parent (a top-level message of the same channel); the
-- parent keeps its thread's reply count and newest reply time, updated in
-- the transaction that stores the reply.
ALTER TABLE messages ADD COLUMN parent_id BIGINT;
ALTER TABLE messages ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at BIGINT;
ALTER TABLE messages ADD COLUMN mentions TEXT;
CREATE INDEX messages_by_parent ON messages (parent_id, seq);

-- The members a message mentions: a JSON array in `messages.mentions` (what
-- the message shows) and one row each here (what unread mention counts
-- count, by the member's read watermark).
CREATE TABLE mentions (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX mentions_by_user ON mentions (user_id, channel_id, seq);
CREATE INDEX mentions_by_channel ON mentions (channel_id);
