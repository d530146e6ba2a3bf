-- 0002: blob metadata. The bytes live in the blob store (server/blobs/), named by blob_id.
--
-- Standard SQL except the BLOB type (SQLITE); 0002_blobs.postgresql.sql says BYTEA and
-- nothing else differs. "offset" is a reserved word in both dialects, hence
-- upload_offset. owner has no foreign key: a blob row goes by its own expiry, whatever
-- becomes of the account.

CREATE TABLE blobs (
    blob_id         BLOB PRIMARY KEY,
    owner           TEXT NOT NULL,
    size            BIGINT NOT NULL,
    upload_offset   BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    CHECK (upload_offset >= 0 AND upload_offset <= size)
);

-- blob_usage() and the quota check in create_blob() sum one owner's live blobs.
CREATE INDEX blobs_owner_expires ON blobs (owner, expires_at_ms);
-- expire_blobs() finds expired blobs by time.
CREATE INDEX blobs_expires ON blobs (expires_at_ms);
