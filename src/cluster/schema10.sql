-- muster's cluster schema, version 10: who inserted a task.
--
-- `inserted_by` is the incarnation of the node whose writer inserted the
-- row. A node's mirror does not read back a row that its own incarnation
-- inserted and nothing changed since (`rev` still 1): its book made that
-- task before the writer stored it. Every other row, those of this
-- node's earlier runs included, is read as before.

ALTER TABLE muster_tasks ADD COLUMN inserted_by bigint;

-- The triggers stay quiet for a connection that set `muster.quiet` (a
-- node's task writer and its claims): a notifying transaction holds the
-- server's one notification lock from before its commit until after its
-- flush, so the writers of every node would commit one at a time. Such a
-- node sends `NOTIFY muster_tasks` from a connection of its own after its
-- commits instead, one for all that committed since the last.
CREATE OR REPLACE FUNCTION muster_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('muster.quiet', true) IS DISTINCT FROM 'on' THEN
        PERFORM pg_notify('muster_tasks', '');
    END IF;
    RETURN NULL;
END
$$;
