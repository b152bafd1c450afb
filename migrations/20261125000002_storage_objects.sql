-- The ledger of storage_migrate: one row per object copied (or found identical) and verified on
-- the target. A resumed job skips these keys; the DB update and the cross-check join on them.
CREATE TABLE upkeep.storage_objects (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    -- Of the source bytes, computed while they streamed.
    sha256 bytea NOT NULL CHECK (length(sha256) = 32),
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

-- The target's listing at the start of a copy, so an object the target lacks is written without
-- asking the target about it first (one LIST per thousand keys instead of one HEAD per key).
CREATE TABLE upkeep.storage_target (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    key text NOT NULL,
    -- 0 when the listing did not say.
    size bigint NOT NULL,
    PRIMARY KEY (job_id, key)
);
