-- The ledger of a backup: one row per storage object (by its key in Dify's storage) and per vector
-- file (by its path in the repository) that is in the repository and verified. A resumed backup
-- skips what is here; the storage index and the manifest are made from it.
CREATE TABLE upkeep.backup_files (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    part text NOT NULL CHECK (part IN ('storage', 'vectors')),
    path text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    sha256 bytea NOT NULL CHECK (length(sha256) = 32),
    -- false: the repository already held these bytes (deduplicated).
    written boolean NOT NULL,
    -- As the storage reported them, for the next backup's unchanged-object check.
    mtime timestamptz,
    etag text,
    PRIMARY KEY (job_id, part, path)
);

-- The storage index of the repository's newest complete set from the same storage, loaded at the
-- start of a backup: an object listed with the same size and modification time (and ETag, where
-- the storage has them) is taken as unchanged and not read again.
CREATE TABLE upkeep.backup_prev (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    size bigint NOT NULL,
    sha256 bytea NOT NULL CHECK (length(sha256) = 32),
    mtime timestamptz,
    etag text,
    PRIMARY KEY (job_id, key)
);

-- The sets this database's daemons made and verified, for preflight's "is there a backup newer
-- than the last schema change". The repository's manifests stay the truth.
CREATE TABLE upkeep.backup_sets (
    repo text NOT NULL,
    set_id text NOT NULL,
    job_id uuid,
    label text,
    dify_revision text,
    created_at timestamptz NOT NULL,
    completed_at timestamptz NOT NULL,
    verified_at timestamptz,
    bytes bigint NOT NULL,
    PRIMARY KEY (repo, set_id)
);
