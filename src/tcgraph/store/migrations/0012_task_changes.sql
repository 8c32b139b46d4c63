-- The change log that GraphQL subscriptions read (api/subscriptions/): one row per
-- task whose stored status or definition changed, written by the triggers below in
-- the writer's own transaction, whichever writer it is (import, follow, backfill,
-- reconciliation, expiry), so no write path can forget it.
--
-- A row's position is (xid, seq): the writing transaction's id, then the order of
-- writing. Readers deliver only rows whose xid is below their snapshot's xmin:
-- every transaction below it has ended and no new one can get a lower id, so a
-- row can never appear behind a position already read (a plain sequence would
-- let a slow transaction commit a number lower than one already delivered).
CREATE TABLE task_changes (
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    task_id        text NOT NULL,
    task_group_id  text NOT NULL,
    changed        timestamptz NOT NULL DEFAULT now(),
    -- every new change in order (the hub's read, expiry oldest first)
    PRIMARY KEY (xid, seq)
);
-- a task group's changes after a cursor (resuming taskGroupChanges)
CREATE INDEX task_changes_group ON task_changes (task_group_id, xid, seq);
-- a task's changes after a cursor (resuming taskChanges)
CREATE INDEX task_changes_task ON task_changes (task_id, xid, seq);

-- The newest position expiry has deleted (one row): a cursor at or before it
-- may have missed changes, and is refused.
CREATE TABLE task_changes_expired (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    xid   xid8 NOT NULL,
    seq   bigint NOT NULL
);
INSERT INTO task_changes_expired (xid, seq) VALUES ('0', 0);

-- Statement-level triggers with transition tables: one INSERT per statement,
-- however many rows it wrote. A task is logged once per transaction (the
-- others see the transaction's changes together, never a step in between;
-- task_changes_task finds an earlier row). The notification's payload is
-- constant, so PostgreSQL folds a transaction's notifications into one,
-- delivered at commit.
CREATE FUNCTION task_changes_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_changes (task_id, task_group_id)
    SELECT n.task_id, n.task_group_id FROM new_tasks n
    WHERE NOT EXISTS (SELECT 1 FROM task_changes c
                      WHERE c.task_id = n.task_id AND c.xid = pg_current_xact_id())
    ORDER BY n.task_id;
    IF FOUND THEN
        PERFORM pg_notify('tcgraph_changes', '');
    END IF;
    RETURN NULL;
END $$;

-- Only rows whose status or definition really changed (an upsert that rewrote
-- the same values, or moved only label or expiry columns, logs nothing new).
CREATE FUNCTION task_changes_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_changes (task_id, task_group_id)
    SELECT n.task_id, n.task_group_id
    FROM new_tasks n JOIN old_tasks o ON o.task_id = n.task_id
    WHERE (n.state, n.runs, n.retries_left, n.definition)
          IS DISTINCT FROM (o.state, o.runs, o.retries_left, o.definition)
      AND NOT EXISTS (SELECT 1 FROM task_changes c
                      WHERE c.task_id = n.task_id AND c.xid = pg_current_xact_id())
    ORDER BY n.task_id;
    IF FOUND THEN
        PERFORM pg_notify('tcgraph_changes', '');
    END IF;
    RETURN NULL;
END $$;

-- A deleted task (expiry, label retention) is a change too: its subscribers
-- learn that it is gone (`task: null`).
CREATE FUNCTION task_changes_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_changes (task_id, task_group_id)
    SELECT o.task_id, o.task_group_id FROM old_tasks o
    WHERE NOT EXISTS (SELECT 1 FROM task_changes c
                      WHERE c.task_id = o.task_id AND c.xid = pg_current_xact_id())
    ORDER BY o.task_id;
    IF FOUND THEN
        PERFORM pg_notify('tcgraph_changes', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_changes_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_changes_inserted();
CREATE TRIGGER tasks_changes_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_changes_updated();
CREATE TRIGGER tasks_changes_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_changes_deleted();
