-- tcgraph: no-transaction
-- Expiry walks tasks oldest first, a batch at a time, and carries on after the last
-- (expires, task_id) it deleted (store/expiry.py), so that no batch scans again what
-- earlier batches deleted (dead index entries until VACUUM). Built concurrently:
-- reads and writes of tasks go on during the build (store/migrate.py).
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_expires_task_id ON tasks (expires, task_id);
