-- Webhooks (issue 13, item 6). Times are milliseconds since the Unix epoch.
--
-- webhook_outbox is written in the same transaction as the event it
-- carries, so a committed event always has its row and a rolled-back one
-- never does; a worker moves each row into one webhook_deliveries row per
-- matching webhook (and deletes it) in one transaction, then sends those.

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- JSON array of event type names; [] means every type.
    event_types TEXT NOT NULL,
    -- JSON array of channel ids; NULL means every channel.
    channel_ids TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    channel_id INTEGER,
    seq INTEGER,
    -- The body's `data` (JSON).
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    -- Sent as Clacks-Delivery: the same on every attempt.
    delivery_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    channel_id INTEGER,
    seq INTEGER,
    body TEXT NOT NULL,
    -- pending, delivered or failed
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- The node sending it now, until lease_until.
    lease_owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (state, updated_at);

CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    attempted_at INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, id);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery);

-- message.unread_offline: a message.created event routed while some
-- webhook wants unread_offline for its channel schedules one check, due
-- the configured delay after the message; when due, the members who have
-- not read it and have no live connection each get a delivery.
CREATE TABLE webhook_unread_checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    -- The message.created `data` (JSON).
    data TEXT NOT NULL,
    due_at INTEGER NOT NULL
);
CREATE INDEX webhook_unread_checks_due ON webhook_unread_checks (due_at);
