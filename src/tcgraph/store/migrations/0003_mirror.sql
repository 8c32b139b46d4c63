-- What `tcgraph follow` keeps besides the tasks and the index (ingest/pulse.py).

-- The follower's progress, one row: how fresh a mirror's answers are.
CREATE TABLE mirror_state (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),   -- a single row
    queue_name       text NOT NULL,
    started          timestamptz NOT NULL,     -- when the current follower started
    last_message     timestamptz,              -- commit time of the newest batch
    last_exchange    text,
    last_routing_key text,
    -- The newest time in the statuses written (a run's scheduled, started or
    -- resolved): how far the mirror has caught up with the queue.
    last_status_time timestamptz,
    lag_ms           double precision,         -- commit time - that status time, last batch
    messages         bigint NOT NULL DEFAULT 0,
    errors           bigint NOT NULL DEFAULT 0, -- messages set aside as invalid
    batches          bigint NOT NULL DEFAULT 0
);

-- Statuses of tasks whose definition is not stored yet (the upstream has not
-- answered). The same rank rule as tasks.status_rank keeps the newest; a row
-- moves into tasks with its definition (store/writes.py promote_waiting).
CREATE TABLE mirror_waiting (
    task_id        text PRIMARY KEY,
    task_group_id  text NOT NULL,
    state          text NOT NULL,
    runs           jsonb NOT NULL,
    retries_left   integer NOT NULL,
    status_rank    integer NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now()
);
-- The definitions to fetch next, oldest first.
CREATE INDEX mirror_waiting_first_seen ON mirror_waiting (first_seen, task_id);

-- Messages that did not match their exchange's schema, set aside (and acknowledged).
CREATE TABLE mirror_rejected (
    id           bigserial PRIMARY KEY,
    received     timestamptz NOT NULL DEFAULT now(),
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    problem      text NOT NULL,
    body         bytea NOT NULL
);

-- Task groups the follower has backfilled (or queued for it), so each is walked once.
CREATE TABLE mirror_groups (
    task_group_id  text PRIMARY KEY,
    backfilled     timestamptz,              -- NULL while queued
    tasks          integer NOT NULL DEFAULT 0
);
