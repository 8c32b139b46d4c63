-- tcgraph: no-transaction
-- tasks_expires_task_id (0014) serves every expiry scan tasks_expires served; the old
-- index only cost space and write time. Dropped concurrently: reads and writes go on.
DROP INDEX CONCURRENTLY IF EXISTS tasks_expires;
-- Expiry deletes about 1/30 of a big deployment's tasks a day. With the default
-- scale factor (20%), autovacuum would wait for six days of deletes before it
-- cleaned tasks; 2% cleans them about every half day, so the table and its indexes
-- stay within a few percent of their live size. SHARE UPDATE EXCLUSIVE: reads
-- and writes go on.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE task_dependencies SET (autovacuum_vacuum_scale_factor = 0.02);
