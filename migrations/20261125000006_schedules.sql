-- Recurring jobs: a job request plus a cron expression and its time zone. Every daemon ticks
-- over the due rows with SKIP LOCKED; each occurrence is submitted with an idempotency key
-- derived from it, so it becomes exactly one job however many daemons share the database.
CREATE TABLE upkeep.schedules (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL,
    -- Normalised and validated as POST /v1/jobs does, so it never holds a request that 400s.
    params          jsonb NOT NULL DEFAULT '{}'::jsonb,
    dry_run         boolean NOT NULL DEFAULT false,
    -- Five fields (minute hour day-of-month month day-of-week), read in `timezone`.
    cron            text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    enabled         boolean NOT NULL DEFAULT true,
    next_run_at     timestamptz NOT NULL,
    last_occurrence timestamptz,
    -- No foreign key: finished jobs are pruned after UPKEEP_JOB_TTL_DAYS.
    last_job_id     uuid,
    last_outcome    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX schedules_due ON upkeep.schedules (next_run_at) WHERE enabled;
