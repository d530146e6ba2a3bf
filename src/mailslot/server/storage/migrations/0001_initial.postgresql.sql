-- 0001 for PostgreSQL: the same logical schema as 0001_initial.sql (names, columns, keys,
-- indexes, and queue_depths kept equal to the number of entries per device), in PostgreSQL's
-- dialect: BYTEA for BLOB, an identity column for AUTOINCREMENT, and PL/pgSQL triggers.

CREATE TABLE accounts (
    handle          TEXT PRIMARY KEY,
    account_key     BYTEA NOT NULL,
    list_version    BIGINT NOT NULL,
    device_list     BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    disabled        BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE devices (
    device_id       BYTEA PRIMARY KEY,
    handle          TEXT NOT NULL REFERENCES accounts (handle),
    sign_key        BYTEA NOT NULL
);

CREATE INDEX devices_handle ON devices (handle);

-- The body is TOASTed out of line when large, so reading the other columns stays cheap.
CREATE TABLE messages (
    message_id      BYTEA PRIMARY KEY,
    sender          TEXT NOT NULL,
    sender_device   BYTEA NOT NULL,
    accepted_at_ms  BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    device_count    INTEGER NOT NULL,
    body            BYTEA NOT NULL
);

CREATE INDEX messages_expires ON messages (expires_at_ms);

-- seq comes from a sequence, which never hands out a value twice. A sequence value is taken
-- when a row is inserted, not when it commits; the store takes the device's queue_depths row
-- lock before inserting, so the entries of one device still commit in seq order and a client
-- paging with after_seq never skips one (see storage/postgres.py, store_message).
CREATE TABLE queue (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       BYTEA NOT NULL,
    message_id      BYTEA NOT NULL REFERENCES messages (message_id),
    wrapped_key     BYTEA NOT NULL,
    UNIQUE (device_id, message_id)
);

CREATE INDEX queue_device_seq ON queue (device_id, seq);
CREATE INDEX queue_message ON queue (message_id);

CREATE TABLE queue_depths (
    device_id       BYTEA PRIMARY KEY,
    depth           INTEGER NOT NULL
);

-- The triggers run once per statement over its transition table (not once per row), so a send
-- to N devices or an ack of N entries updates each device's depth once.
CREATE FUNCTION queue_depth_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO queue_depths (device_id, depth)
    SELECT device_id, count(*) FROM queue_added GROUP BY device_id ORDER BY device_id
    ON CONFLICT (device_id) DO UPDATE SET depth = queue_depths.depth + EXCLUDED.depth;
    RETURN NULL;
END;
$$;

CREATE TRIGGER queue_depth_up AFTER INSERT ON queue
    REFERENCING NEW TABLE AS queue_added
    FOR EACH STATEMENT EXECUTE FUNCTION queue_depth_up();

-- A deletion may span many devices (expiry, a device list change): lock their rows in id order
-- first, the order store_message takes them in, so the two wait for each other, not deadlock.
CREATE FUNCTION queue_depth_down() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM queue_depths
    WHERE device_id IN (SELECT device_id FROM queue_removed) ORDER BY device_id FOR UPDATE;
    UPDATE queue_depths SET depth = queue_depths.depth - gone.entries
    FROM (SELECT device_id, count(*) AS entries FROM queue_removed GROUP BY device_id) AS gone
    WHERE queue_depths.device_id = gone.device_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER queue_depth_down AFTER DELETE ON queue
    REFERENCING OLD TABLE AS queue_removed
    FOR EACH STATEMENT EXECUTE FUNCTION queue_depth_down();

CREATE TABLE links (
    link_id         BYTEA PRIMARY KEY,
    request         BYTEA NOT NULL,
    response        BYTEA,
    expires_at_ms   BIGINT NOT NULL
);

CREATE INDEX links_expires ON links (expires_at_ms);
