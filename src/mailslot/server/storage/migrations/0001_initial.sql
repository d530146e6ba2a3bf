-- 0001: accounts, devices, message bodies, per-device queues and link sessions.
--
-- Standard SQL except where marked SQLITE: the BLOB type, the AUTOINCREMENT sequence and the
-- trigger syntax. PostgreSQL will ship 0001_initial.postgresql.sql with BYTEA, an identity
-- column and PL/pgSQL triggers; the logical schema (names, columns, keys, indexes, what the
-- triggers maintain) must stay the same.

CREATE TABLE accounts (
    handle          TEXT PRIMARY KEY,
    account_key     BLOB NOT NULL,
    list_version    BIGINT NOT NULL,
    device_list     BLOB NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    disabled        BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE devices (
    device_id       BLOB PRIMARY KEY,
    handle          TEXT NOT NULL REFERENCES accounts (handle),
    sign_key        BLOB NOT NULL
);

-- devices_of() and the accounts foreign key look devices up by handle.
CREATE INDEX devices_handle ON devices (handle);

-- One row per accepted message; device_count is what a replayed send reports back.
-- The body comes last so reading the other columns never touches its overflow pages.
CREATE TABLE messages (
    message_id      BLOB PRIMARY KEY,
    sender          TEXT NOT NULL,
    sender_device   BLOB NOT NULL,
    accepted_at_ms  BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    device_count    INTEGER NOT NULL,
    body            BLOB NOT NULL
);

CREATE INDEX messages_expires ON messages (expires_at_ms);

-- One row per (recipient device, message). seq only ever grows (SQLITE: AUTOINCREMENT never
-- reuses a deleted rowid), so a client paging with after_seq never skips a new entry.
CREATE TABLE queue (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id       BLOB NOT NULL,
    message_id      BLOB NOT NULL REFERENCES messages (message_id),
    wrapped_key     BLOB NOT NULL,
    UNIQUE (device_id, message_id)
);

-- fetch_queue() and queue_depth() read one device's entries in seq order.
CREATE INDEX queue_device_seq ON queue (device_id, seq);
-- Finding a body's remaining entries (orphan deletion, expiry, the foreign key) by message id.
CREATE INDEX queue_message ON queue (message_id);

-- How many entries each device holds, kept by the triggers below so that the QueueFull check
-- on every send reads one row instead of counting a backlog of up to max_queue entries.
CREATE TABLE queue_depths (
    device_id       BLOB PRIMARY KEY,
    depth           INTEGER NOT NULL
);

-- SQLITE: trigger syntax.
CREATE TRIGGER queue_depth_up AFTER INSERT ON queue
BEGIN
    INSERT INTO queue_depths (device_id, depth) VALUES (NEW.device_id, 1)
    ON CONFLICT (device_id) DO UPDATE SET depth = depth + 1;
END;

CREATE TRIGGER queue_depth_down AFTER DELETE ON queue
BEGIN
    UPDATE queue_depths SET depth = depth - 1 WHERE device_id = OLD.device_id;
END;

CREATE TABLE links (
    link_id         BLOB PRIMARY KEY,
    request         BLOB NOT NULL,
    response        BLOB,
    expires_at_ms   BIGINT NOT NULL
);

CREATE INDEX links_expires ON links (expires_at_ms);
