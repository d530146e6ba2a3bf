-- 0003: blob bytes kept in the database, for the PostgreSQL blob store
-- (server/blobs/postgres.py, chosen with blob_url = "postgresql://..."), so that several
-- nodes with no shared disk serve the same blobs.
--
-- Only PostgreSQL uses these tables; SQLite creates them too, empty, because the migration
-- policy keeps one logical schema for every engine (migrations.py). Standard SQL except the
-- BLOB type and the rowid primary key (SQLITE); 0003_blob_chunks.postgresql.sql says BYTEA and
-- an identity column.
--
-- blob_bytes: one row per stored byte sequence. blob_id is the server's random id while the
-- bytes are live, and NULL once deleted: the row and its chunks stay until deleted_at_ms is
-- older than a grace period, so a download already under way can finish. file_id, not
-- blob_id, names the chunks, so an id deleted and created again never mixes two generations.
-- writer and writer_until_ms are the upload lease that keeps two nodes from cutting each
-- other's bytes (see the module docstring of server/blobs/postgres.py).
CREATE TABLE blob_bytes (
    file_id         INTEGER PRIMARY KEY,
    blob_id         BLOB UNIQUE,
    length          BIGINT NOT NULL,
    chunk_size      INTEGER NOT NULL,
    writer          BLOB,
    writer_until_ms BIGINT NOT NULL DEFAULT 0,
    deleted_at_ms   BIGINT,
    CHECK (length >= 0 AND chunk_size > 0)
);

-- Finding deleted byte sequences whose grace period is over.
CREATE INDEX blob_bytes_deleted ON blob_bytes (deleted_at_ms) WHERE deleted_at_ms IS NOT NULL;

-- chunk_no counts from 0; every chunk holds chunk_size bytes except the last, which holds the
-- rest (1 to chunk_size bytes). A blob of length n has exactly ceil(n / chunk_size) chunks.
CREATE TABLE blob_chunks (
    file_id         BIGINT NOT NULL REFERENCES blob_bytes (file_id) ON DELETE CASCADE,
    chunk_no        INTEGER NOT NULL,
    data            BLOB NOT NULL,
    PRIMARY KEY (file_id, chunk_no)
);
