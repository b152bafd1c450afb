-- Every datasets.index_struct a vector migration replaced, so `vector_rollback` can put it
-- back, and so a rerun knows what it already switched.
CREATE TABLE upkeep.vector_switches (
    job_id      uuid        NOT NULL,
    dataset_id  uuid        NOT NULL,
    previous    text,
    switched_to text        NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, dataset_id)
);
CREATE INDEX vector_switches_dataset ON upkeep.vector_switches (dataset_id, switched_at DESC);
