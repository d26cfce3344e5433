-- muster's cluster schema, version 6: deleted tasks.
--
-- `POST /api/tasks/bulk` with `delete` removes ended tasks. A row deleted
-- at once would leave the other nodes' copies behind (they read what
-- changed, and a deleted row is not there to read), so the task is marked
-- `deleted_at` (Unix ms) instead, which each node reads and forgets it
-- by; its `Idempotency-Key` is let go of with it. The leader deletes the
-- marked rows a minute later, with the expired ones.

ALTER TABLE muster_tasks ADD COLUMN deleted_at bigint;
CREATE INDEX muster_tasks_deleted ON muster_tasks (deleted_at)
    WHERE deleted_at IS NOT NULL;
