-- The plan of an orphan cleanup: every object (or row) the planning job found unreferenced.
-- A confirming job deletes exactly these, re-checked, and marks each one it handled.
CREATE TABLE upkeep.orphan_plan (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    item text NOT NULL,
    size bigint,
    last_modified timestamptz,
    -- Set by the confirming job: deleted, or kept because it became referenced or changed.
    outcome text CHECK (outcome IN ('deleted', 'referenced', 'changed', 'gone')),
    handled_by uuid,
    PRIMARY KEY (job_id, item)
);

-- File ids Dify's tables reference, gathered in the database by an orphan_records run (the
-- whole set never passes through the daemon's memory).
CREATE TABLE upkeep.orphan_refs (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    PRIMARY KEY (job_id, id)
);
