-- tcgraph: no-transaction
-- tasks_expires_task_id (0014) serves every expiry scan tasks_expires served; the old
-- index only cost space and write time. Dropped concurrently: reads and writes go on.
DROP INDEX CONCURRENTLY IF EXISTS tasks_expires;
