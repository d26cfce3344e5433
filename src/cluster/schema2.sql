-- muster's cluster schema, version 2: tasks and their logs, and a small
-- number per node that its task ids carry.
--
-- `task` is the whole task as musterd keeps it (its progress nested); the
-- columns beside it are what claims, guards and the leader's duties read.
-- `lease` is the token of the claim that holds the task (0 when none):
-- every change after a claim says which token it was made under and is
-- refused when the token moved on. `changed` is the transaction that last
-- wrote the row, so that a node reads what changed since its last look;
-- `rev` counts the changes, so that it never applies an older one.

ALTER TABLE muster_nodes ADD COLUMN ordinal integer UNIQUE
    CHECK (ordinal BETWEEN 0 AND 255);

CREATE SEQUENCE muster_task_lease;

CREATE TABLE muster_tasks (
    id                  bigint PRIMARY KEY,
    kind                text NOT NULL,
    priority            bigint NOT NULL,
    target_worker       text,
    target_labels       jsonb NOT NULL DEFAULT '{}',
    state               text NOT NULL,
    task                jsonb NOT NULL,
    holder_node         text,
    holder_incarnation  bigint,
    lease               bigint NOT NULL DEFAULT 0,
    finished_at         bigint,
    cancel_requested_at bigint,
    rev                 bigint NOT NULL DEFAULT 1,
    changed             xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX muster_tasks_queued ON muster_tasks (priority DESC, id)
    WHERE state = 'queued';
CREATE INDEX muster_tasks_held ON muster_tasks (holder_incarnation)
    WHERE state IN ('assigned', 'running');
CREATE INDEX muster_tasks_finished ON muster_tasks (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX muster_tasks_changed ON muster_tasks (changed);

CREATE TABLE muster_task_logs (
    seq     bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES muster_tasks (id) ON DELETE CASCADE,
    lines   jsonb NOT NULL,
    changed xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX muster_task_logs_task ON muster_task_logs (task_id);
CREATE INDEX muster_task_logs_changed ON muster_task_logs (changed);

-- Every transaction that changes tasks or adds log lines wakes the nodes
-- listening on muster_tasks, once: PostgreSQL delivers one notification
-- per channel and payload per transaction.
CREATE FUNCTION muster_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('muster_tasks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER muster_tasks_changed AFTER INSERT OR UPDATE OR DELETE ON muster_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION muster_tasks_notify();
CREATE TRIGGER muster_task_logs_added AFTER INSERT ON muster_task_logs
    FOR EACH STATEMENT EXECUTE FUNCTION muster_tasks_notify();
