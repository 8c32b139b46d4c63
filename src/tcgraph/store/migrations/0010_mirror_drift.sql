-- What a mirror knows about its own completeness (ingest/gaps.py, ingest/reconcile.py,
-- ingest/verify.py): the periods in which messages may have been lost, each
-- follower's liveness, the reconciliation's progress and the last verification.

-- A period in which the mirror may have missed messages, and why; written when
-- the follower consumes again (`ended`, the database's time then), and repaired
-- once a reconciliation pass that started after `ended` has re-read everything
-- that could have changed.
CREATE TABLE mirror_gaps (
    id               bigserial PRIMARY KEY,
    started          timestamptz NOT NULL,
    ended            timestamptz NOT NULL,
    reason           text NOT NULL,            -- gaps.py's reason codes
    follower         text NOT NULL,
    detail           text NOT NULL DEFAULT '',
    repaired_at      timestamptz,
    tasks_repaired   integer NOT NULL DEFAULT 0
);
-- The gaps still to repair (few rows), and the newest first for `mirror.gaps`.
CREATE INDEX mirror_gaps_unrepaired ON mirror_gaps (ended) WHERE repaired_at IS NULL;
CREATE INDEX mirror_gaps_started ON mirror_gaps (started DESC, id DESC);

-- Task groups that had messages, and when the newest came (any follower's): the
-- groups reconciliation walks, those active since its last pass, and after a
-- gap those active in the day before it (a task's deadline is a day by default).
-- Rows older than that horizon are deleted as they are written.
CREATE TABLE mirror_active_groups (
    task_group_id    text PRIMARY KEY,
    last_message     timestamptz NOT NULL
);
CREATE INDEX mirror_active_groups_last_message ON mirror_active_groups (last_message);

-- Labels and index paths the API was asked about lately (api/recent_reads.py):
-- reconciliation re-reads what decision tasks ask about first. Bounded: rows
-- older than an hour are deleted as new ones are written.
CREATE TABLE mirror_recent_reads (
    kind             text NOT NULL,            -- label, index-path
    key              text NOT NULL,
    read_at          timestamptz NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX mirror_recent_reads_read_at ON mirror_recent_reads (read_at);

-- One row per follower process name: a heartbeat, so that a follower starting
-- knows how long nobody consumed the queue, and `mirror.followers` shows who runs.
CREATE TABLE mirror_followers (
    name             text PRIMARY KEY,
    queue_name       text NOT NULL,
    started          timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    consuming        boolean NOT NULL DEFAULT false,
    messages         bigint NOT NULL DEFAULT 0,   -- since this follower started
    batches          bigint NOT NULL DEFAULT 0
);

-- The reconciliation's progress, one row: a lease (one follower reconciles at a
-- time, whichever holds it), and what the passes cost and repaired.
CREATE TABLE mirror_reconcile (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),   -- a single row
    holder           text,
    lease_until      timestamptz,
    passes           bigint NOT NULL DEFAULT 0,
    last_pass_started timestamptz,
    last_pass_ended  timestamptz,
    calls            bigint NOT NULL DEFAULT 0,     -- upstream calls, every pass
    tasks_repaired   bigint NOT NULL DEFAULT 0,     -- tasks whose stored status changed
    tasks_unknown    bigint NOT NULL DEFAULT 0      -- tasks the upstream no longer knows
);

-- The last verification (tcgraph verify, or the follower's periodic sample), one row.
CREATE TABLE mirror_verification (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),   -- a single row
    verified_at      timestamptz NOT NULL,
    tasks            integer NOT NULL,
    index_entries    integer NOT NULL,
    drift            integer NOT NULL,              -- differences that persisted
    differences      jsonb NOT NULL DEFAULT '[]'     -- the first few, described
);
