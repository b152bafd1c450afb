-- The ledger of storage_migrate: one row per object copied (or found identical) and verified on
-- the target. A resumed job skips these keys; the DB update and the cross-check join on them.
CREATE TABLE upkeep.storage_objects (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    -- NULL when the job verified sizes only.
    sha256 bytea CHECK (sha256 IS NULL OR length(sha256) = 32),
    outcome text NOT NULL CHECK (outcome IN ('copied', 'replaced', 'already_there')),
    verified_at timestamptz NOT NULL DEFAULT now(),
    source_deleted_at timestamptz,
    PRIMARY KEY (job_id, key)
);

-- The keys Dify's database references, gathered once per cross-check so the check pages through
-- them by key instead of holding one long query open while it asks the storage.
CREATE TABLE upkeep.storage_refs (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    source text NOT NULL,
    PRIMARY KEY (job_id, key)
);
