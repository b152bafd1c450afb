-- Recording a plan checked orphan_plan's foreign key on job_id once per row: a third of the
-- time of a large plan (333,333 items: 2 s of 5). Only the running job ever writes its own
-- items, and a running job is never pruned, so the check guarded nothing.
--
-- Pruning finds what hangs off a job through the foreign keys in the catalogue and deletes it
-- in bounded batches, through the table that holds the key. So the key moves to an empty
-- parent that orphan_plan inherits from: the catalogue still leads pruning to job_id, and a
-- DELETE on the parent reaches orphan_plan's rows (a foreign key is never inherited, so
-- inserting into orphan_plan checks nothing). The parent holds no rows of its own (CHECK
-- false, not inherited) and orphan_plan is its only child, so the ctids pruning collects
-- through the parent name orphan_plan's rows alone.
CREATE TABLE upkeep.orphan_plan_jobs (
    job_id uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    CONSTRAINT orphan_plan_jobs_no_rows CHECK (false) NO INHERIT
);

ALTER TABLE upkeep.orphan_plan INHERIT upkeep.orphan_plan_jobs;
ALTER TABLE upkeep.orphan_plan DROP CONSTRAINT orphan_plan_job_id_fkey;
