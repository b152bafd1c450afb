-- Upkeep's job queue. Postgres is the engine: several daemons on one database share it.
CREATE TABLE upkeep.jobs (
    id                  uuid PRIMARY KEY,
    kind                text NOT NULL,
    params              jsonb NOT NULL DEFAULT '{}'::jsonb,
    dry_run             boolean NOT NULL DEFAULT false,
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Big jobs fan out into child jobs that any daemon can claim.
    parent_id           uuid REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    -- Jobs touching the same thing never run at once: see jobs_one_active_per_resource.
    resource_key        text,
    idempotency_key     text UNIQUE,
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after           timestamptz NOT NULL DEFAULT now(),
    locked_by           text,
    lease_expires_at    timestamptz,
    heartbeat_at        timestamptz,
    cancel_requested_at timestamptz,
    progress            jsonb,
    checkpoint          jsonb,
    result              jsonb,
    error               jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

CREATE UNIQUE INDEX jobs_one_active_per_resource ON upkeep.jobs (resource_key)
    WHERE state IN ('queued', 'running') AND resource_key IS NOT NULL;
CREATE INDEX jobs_claimable ON upkeep.jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_leases ON upkeep.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON upkeep.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_parent ON upkeep.jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_kind_state ON upkeep.jobs (kind, state, id);

CREATE TABLE upkeep.job_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  uuid NOT NULL REFERENCES upkeep.jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    type    text NOT NULL CHECK (type IN ('state', 'progress', 'log', 'warning')),
    attempt integer,
    data    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_by_job ON upkeep.job_events (job_id, id);

-- Wake-ups: workers LISTEN on upkeep_jobs, SSE streams on upkeep_events; both also poll.
CREATE FUNCTION upkeep.notify_job_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('upkeep_jobs', NEW.kind);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify_queued AFTER INSERT OR UPDATE OF state ON upkeep.jobs
    FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION upkeep.notify_job_queued();

CREATE FUNCTION upkeep.notify_cancel_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('upkeep_cancel', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify_cancel AFTER UPDATE OF cancel_requested_at ON upkeep.jobs
    FOR EACH ROW WHEN (NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL)
    EXECUTE FUNCTION upkeep.notify_cancel_requested();

CREATE FUNCTION upkeep.notify_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('upkeep_events', NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_notify AFTER INSERT ON upkeep.job_events
    FOR EACH ROW EXECUTE FUNCTION upkeep.notify_job_event();
