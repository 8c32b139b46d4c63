-- tcgraph: no-transaction
-- The tasks reconciliation re-reads from the upstream (ingest/reconcile.py):
-- those not resolved. A small fraction of a large table, walked by task_id.
-- The predicate is repeated, literally, by the queries that use it
-- (store/queries/mirror.py unresolved_tasks), as a partial index requires.
-- Built concurrently: reads and writes of tasks go on during the build
-- (store/migrate.py).
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_unresolved ON tasks (task_id)
    WHERE state IN ('unscheduled', 'pending', 'running');
