-- 0004: device list history, when each device was last seen, removed devices, invite tokens.
--
-- Standard SQL except the BLOB type (SQLITE); 0004_device_history.postgresql.sql says BYTEA
-- and nothing else differs. No foreign key cascades: accounts are disabled, never deleted, and
-- these rows live as long as their account.

-- Every signed device list an account has published, exactly as published, so a device (or a
-- contact) can walk the changes it missed from the version it last verified.
CREATE TABLE device_list_history (
    handle          TEXT NOT NULL REFERENCES accounts (handle),
    version         BIGINT NOT NULL,
    device_list     BLOB NOT NULL,
    published_at_ms BIGINT NOT NULL,
    PRIMARY KEY (handle, version)
);

-- The lists in use before this version: their publication time is not known, so each gets its
-- account's creation time (the earliest it can have been published).
INSERT INTO device_list_history (handle, version, device_list, published_at_ms)
SELECT handle, list_version, device_list, created_at_ms FROM accounts;

-- When the device last called, in ms (NULL: not since this column exists). Written at most
-- about once a minute per device and node, so it costs far less than the requests themselves.
ALTER TABLE devices ADD COLUMN last_seen_ms BIGINT;

-- Devices a published list (or a recovery) dropped: a removed device that calls again is told
-- it was removed, by which version and when, instead of that it is unknown. A device id is in
-- at most one of devices and removed_devices.
CREATE TABLE removed_devices (
    device_id       BLOB PRIMARY KEY,
    handle          TEXT NOT NULL REFERENCES accounts (handle),
    version         BIGINT NOT NULL,
    removed_at_ms   BIGINT NOT NULL
);

-- Registration invites, kept only as the SHA-256 of the token.
CREATE TABLE invites (
    token_hash      BLOB PRIMARY KEY,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    uses_left       INTEGER NOT NULL,
    note            TEXT NOT NULL DEFAULT '',
    CHECK (uses_left >= 0)
);
