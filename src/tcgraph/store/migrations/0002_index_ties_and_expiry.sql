-- The completing run's resolved time of the task an entry points at: it breaks
-- rank ties, so that redelivered or reordered completions give the same index
-- (the later completion wins). NULL when unknown (an imported index dump): an
-- entry with no time loses a tie to one that has one, and an entry without a
-- time wins ties, as the index service's insertTask lets the latest call win.
ALTER TABLE index_entries ADD COLUMN resolved timestamptz;

-- Expiry deletes in bounded batches, oldest first (ingest/expire.py).
CREATE INDEX tasks_expires ON tasks (expires);
CREATE INDEX index_entries_expires ON index_entries (expires);
CREATE INDEX index_namespaces_expires ON index_namespaces (expires);
