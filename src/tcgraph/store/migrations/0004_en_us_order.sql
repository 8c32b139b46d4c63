-- Taskcluster lists task groups, dependents and the index in PostgreSQL's en-US
-- collation (ICU root order: case-insensitive first, `a` < `A` < `b`, and the
-- punctuation of ids and names, `_` < `-` < ... , before digits and letters).
-- tcgraph's PostgreSQL may have neither ICU nor an en_US locale (the embedded one
-- has neither), so this key gives that order in any build: bytewise ("C") order
-- of the key is the en-US order of the text for the characters of slugids and
-- index names. The primary part maps each character, ignoring case, to a code that
-- sorts in collation order; chr(1) ends it (a shorter primary sorts first); the
-- tertiary part then tells case apart, position by position (lower before upper).
CREATE FUNCTION en_us_sort_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
SELECT translate(lower(value),
                 '_-!''()*%~0123456789abcdefghijklmnopqrstuvwxyz',
                 'ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklm')
       || chr(1)
       || translate(value, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ',
                    '0000000000000000000000000011111111111111111111111111')
$$;

-- listTaskGroup pages, in en-US order of task id.
CREATE INDEX tasks_group_en_us
    ON tasks (task_group_id, (en_us_sort_key(task_id) COLLATE "C"), task_id);
-- listTaskGroup's and getTaskGroup's group: its first task (schedulerId, expires).
CREATE INDEX tasks_group_created ON tasks (task_group_id, created, task_id);
-- listDependentTasks pages.
CREATE INDEX task_dependencies_dependent_en_us
    ON task_dependencies (dependency_id, (en_us_sort_key(task_id) COLLATE "C"), task_id);
-- index.listNamespaces and index.listTasks pages.
CREATE INDEX index_namespaces_en_us
    ON index_namespaces (parent, (en_us_sort_key(name) COLLATE "C"), name);
CREATE INDEX index_entries_en_us
    ON index_entries (namespace, (en_us_sort_key(name) COLLATE "C"), name);
