-- Tasks as the queue holds them: the definition exactly as queue.task returns
-- it, the status columns queue.status returns, and the columns lookups need.
CREATE TABLE tasks (
    task_id        text PRIMARY KEY,                 -- lookup by id: tasks_pkey
    task_group_id  text NOT NULL,
    scheduler_id   text NOT NULL,
    task_queue_id  text NOT NULL,                    -- provisionerId/workerType
    project_id     text NOT NULL,
    label          text,                             -- tags.label, else metadata.name
    priority       text NOT NULL,
    retries        integer NOT NULL,
    retries_left   integer NOT NULL,
    created        timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,
    expires        timestamptz NOT NULL,
    state          text NOT NULL CHECK (state IN
                     ('unscheduled', 'pending', 'running', 'completed', 'failed', 'exception')),
    runs           jsonb NOT NULL DEFAULT '[]',
    -- (number of runs, progress of the last run): an import only replaces a
    -- status whose rank is not higher, so an old dump never rolls a task back.
    status_rank    integer NOT NULL DEFAULT 0,
    definition     jsonb NOT NULL
);

-- label -> newest first (latest, history), and the same restricted to the
-- outcomes LabelHistory asks for, so lastSuccess/lastFailure stay key lookups.
CREATE INDEX tasks_label_created ON tasks (label, created DESC, task_id DESC);
CREATE INDEX tasks_label_completed ON tasks (label, created DESC, task_id DESC)
    WHERE state = 'completed';
CREATE INDEX tasks_label_failed ON tasks (label, created DESC, task_id DESC)
    WHERE state IN ('failed', 'exception');
-- task group pages, optionally by state.
CREATE INDEX tasks_group ON tasks (task_group_id, task_id);
CREATE INDEX tasks_group_state ON tasks (task_group_id, state, task_id);

-- task_id depends on dependency_id. The primary key answers "dependencies of",
-- the second index "dependents of".
CREATE TABLE task_dependencies (
    task_id        text NOT NULL,
    dependency_id  text NOT NULL,
    PRIMARY KEY (task_id, dependency_id)
);
CREATE INDEX task_dependencies_dependent ON task_dependencies (dependency_id, task_id);

-- Index entries as the index service holds them: namespace + name -> task.
CREATE TABLE index_entries (
    namespace  text NOT NULL,
    name       text NOT NULL,
    task_id    text NOT NULL,
    rank       double precision NOT NULL DEFAULT 0,
    data       jsonb NOT NULL DEFAULT '{}',
    expires    timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- Every namespace that holds an entry or another namespace, for browsing by
-- prefix: the children of a path are the rows whose parent is that path.
CREATE TABLE index_namespaces (
    parent   text NOT NULL,
    name     text NOT NULL,
    expires  timestamptz NOT NULL,
    PRIMARY KEY (parent, name)
);
