-- muster's cluster schema, version 7: periodic schedules.
--
-- One row per schedule: its definition and, kept by the leader in the
-- transaction that inserts each tick's task, the last tick it handled,
-- so a tick fires once however leaders change. A schedule deleted is
-- marked `deleted_at` (Unix ms) so that every node reads that it is gone;
-- the leader removes the row a minute later.

CREATE TABLE muster_schedules (
    name       text PRIMARY KEY,
    schedule   jsonb NOT NULL,
    deleted_at bigint,
    changed    xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TRIGGER muster_schedules_changed AFTER INSERT OR UPDATE OR DELETE ON muster_schedules
    FOR EACH STATEMENT EXECUTE FUNCTION muster_tasks_notify();
