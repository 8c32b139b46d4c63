-- A status whose definition the upstream did not give (unknown to it, not
-- asked for in its answer, inconsistent with the status, or refused by the
-- store) is asked for again later, each time later still (ingest/mirror.py),
-- so that a definition that never comes costs a bounded number of calls.
ALTER TABLE mirror_waiting ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE mirror_waiting ADD COLUMN next_attempt timestamptz NOT NULL DEFAULT now();
ALTER TABLE mirror_waiting ADD COLUMN problem text;   -- why the last attempt failed
-- The statuses due for another attempt, the longest due first.
CREATE INDEX mirror_waiting_next_attempt ON mirror_waiting (next_attempt, task_id);
