-- 0002 for PostgreSQL: the same blob metadata table as 0002_blobs.sql, with BYTEA for BLOB.

CREATE TABLE blobs (
    blob_id         BYTEA PRIMARY KEY,
    owner           TEXT NOT NULL,
    size            BIGINT NOT NULL,
    upload_offset   BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    CHECK (upload_offset >= 0 AND upload_offset <= size)
);

CREATE INDEX blobs_owner_expires ON blobs (owner, expires_at_ms);
CREATE INDEX blobs_expires ON blobs (expires_at_ms);
