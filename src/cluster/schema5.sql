-- muster's cluster schema, version 5: paused queues, unique tasks and
-- dependencies.
--
-- `muster_queues` holds a row per task type ever paused; every node's
-- claim skips the types paused there, so a pause holds cluster-wide from
-- its commit. `changed` lets each node read what changed since its look.
--
-- `idempotency_key` is a submission's `Idempotency-Key`: one task per key
-- (the leader clears keys past `idempotency_retention`). `unique_key` is
-- its body's `unique_key`: one task per key while it is waiting,
-- scheduled, queued or running. A second insert with either key is left
-- out by the writer (`ON CONFLICT DO NOTHING`) and answered with the
-- first. `depends_on` lists the tasks a `waiting` task waits for.

CREATE TABLE muster_queues (
    kind       text PRIMARY KEY,
    paused     boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    changed    xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TRIGGER muster_queues_changed AFTER INSERT OR UPDATE ON muster_queues
    FOR EACH STATEMENT EXECUTE FUNCTION muster_tasks_notify();

ALTER TABLE muster_tasks
    ADD COLUMN idempotency_key text,
    ADD COLUMN unique_key text,
    ADD COLUMN depends_on bigint[];

CREATE UNIQUE INDEX muster_tasks_idempotency ON muster_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX muster_tasks_unique ON muster_tasks (unique_key)
    WHERE unique_key IS NOT NULL
      AND state IN ('waiting', 'scheduled', 'queued', 'assigned', 'running');
CREATE INDEX muster_tasks_waiting ON muster_tasks (id) WHERE state = 'waiting';
