-- Batched membership events (issue 14): one bulk request that adds or
-- removes more than one user is one `members_joined` / `members_left`
-- event. Its row lists at most 100 users; the full list of a larger one
-- lives here, read only by the delivery hub of a node that must learn
-- which of its own subscribers the change affects (never by a replay).
CREATE TABLE member_batches (
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    user_id VARCHAR(200) NOT NULL,
    PRIMARY KEY (channel_id, seq, user_id),
    CONSTRAINT member_batches_channel FOREIGN KEY (channel_id) REFERENCES channels (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
