-- 0003 for PostgreSQL: the same tables as 0003_blob_chunks.sql, with BYTEA for BLOB and an
-- identity column for the rowid key.

CREATE TABLE blob_bytes (
    file_id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    blob_id         BYTEA UNIQUE,
    length          BIGINT NOT NULL,
    chunk_size      INTEGER NOT NULL,
    writer          BYTEA,
    writer_until_ms BIGINT NOT NULL DEFAULT 0,
    deleted_at_ms   BIGINT,
    CHECK (length >= 0 AND chunk_size > 0)
);

CREATE INDEX blob_bytes_deleted ON blob_bytes (deleted_at_ms) WHERE deleted_at_ms IS NOT NULL;

CREATE TABLE blob_chunks (
    file_id         BIGINT NOT NULL REFERENCES blob_bytes (file_id) ON DELETE CASCADE,
    chunk_no        INTEGER NOT NULL,
    data            BYTEA NOT NULL,
    PRIMARY KEY (file_id, chunk_no)
);

-- Ciphertext does not compress: store chunks out of line uncompressed, which also lets a range
-- read (substring) fetch only the TOAST pieces it needs instead of the whole chunk.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
