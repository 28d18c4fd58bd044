-- Webhooks (issue 13, item 6). Times are milliseconds since the Unix epoch.
--
-- webhook_outbox is written in the same transaction as the event it
-- carries, so a committed event always has its row and a rolled-back one
-- never does; a worker moves each row into one webhook_deliveries row per
-- matching webhook (and deletes it) in one transaction, then sends those.

CREATE TABLE webhooks (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    url VARCHAR(2048) NOT NULL,
    secret VARCHAR(256) NOT NULL,
    -- JSON array of event type names; [] means every type.
    event_types TEXT NOT NULL,
    -- JSON array of channel ids; NULL means every channel.
    channel_ids MEDIUMTEXT,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_outbox (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_type VARCHAR(64) NOT NULL,
    channel_id BIGINT,
    seq BIGINT,
    -- The body's `data` (JSON).
    data MEDIUMTEXT NOT NULL,
    created_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_deliveries (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    webhook_id BIGINT NOT NULL,
    -- Sent as Clacks-Delivery: the same on every attempt.
    delivery_id VARCHAR(64) NOT NULL,
    event_type VARCHAR(64) NOT NULL,
    channel_id BIGINT,
    seq BIGINT,
    body MEDIUMTEXT NOT NULL,
    -- pending, delivered or failed
    state VARCHAR(16) NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- The node sending it now, until lease_until.
    lease_owner VARCHAR(64),
    lease_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE KEY webhook_deliveries_delivery_id (delivery_id),
    KEY webhook_deliveries_due (state, next_attempt_at),
    KEY webhook_deliveries_done (state, updated_at),
    CONSTRAINT webhook_deliveries_webhook FOREIGN KEY (webhook_id) REFERENCES webhooks (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhook_attempts (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    delivery BIGINT NOT NULL,
    webhook_id BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    KEY webhook_attempts_by_webhook (webhook_id, id),
    CONSTRAINT webhook_attempts_delivery FOREIGN KEY (delivery) REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    CONSTRAINT webhook_attempts_webhook FOREIGN KEY (webhook_id) REFERENCES webhooks (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- message.unread_offline: a message.created event routed while some
-- webhook wants unread_offline for its channel schedules one check, due
-- the configured delay after the message; when due, the members who have
-- not read it and have no live connection each get a delivery.
CREATE TABLE webhook_unread_checks (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    sender VARCHAR(200) NOT NULL,
    -- The message.created `data` (JSON).
    data MEDIUMTEXT NOT NULL,
    due_at BIGINT NOT NULL,
    KEY webhook_unread_checks_due (due_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
