-- A queued task group whose backfill fails is tried again later, without holding
-- up the groups queued after it (ingest/backfill.py): a few attempts, each later
-- than the one before, then it is recorded as failed and tried again rarely.
ALTER TABLE mirror_groups ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE mirror_groups ADD COLUMN next_attempt timestamptz NOT NULL DEFAULT now();
ALTER TABLE mirror_groups ADD COLUMN failed timestamptz;   -- when its attempts ran out
ALTER TABLE mirror_groups ADD COLUMN problem text;         -- why the last attempt failed
-- The queued groups due for a walk, the longest due first.
CREATE INDEX mirror_groups_due ON mirror_groups (next_attempt, task_group_id)
    WHERE backfilled IS NULL;
