-- Batched membership events (issue 14): one bulk request that adds or
-- removes more than one user is one `members_joined` / `members_left`
-- event. Its row lists at most 100 users; the full list of a larger one
-- lives here, read only by the delivery hub of a node that must learn
-- which of its own subscribers the change affects (never by a replay).
CREATE TABLE member_batches (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (channel_id, seq, user_id)
);
