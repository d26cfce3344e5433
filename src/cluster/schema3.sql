-- muster's cluster schema, version 3: the fleet. Each node writes its
-- workers' transitions at once and a compact refresh now and then (never a
-- row per heartbeat); every node reads the others' rows to show one fleet.
--
-- `state` is the worker as the node that holds its session last wrote it
-- (the registry file's per-worker record). `active` says whether that node
-- saw it live: a node that has lost a worker may not overwrite a row
-- another node took with a live one. `gone` marks a worker its node
-- forgot, so that readers see the removal; such rows are deleted by the
-- leader later. `changed` is the transaction that last wrote the row.

CREATE TABLE muster_workers (
    worker_id  text PRIMARY KEY,
    node_id    text NOT NULL,
    active     boolean NOT NULL,
    gone       boolean NOT NULL DEFAULT false,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    changed    xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX muster_workers_changed ON muster_workers (changed);
CREATE INDEX muster_workers_node ON muster_workers (node_id);

CREATE FUNCTION muster_workers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('muster_workers', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER muster_workers_changed AFTER INSERT OR UPDATE ON muster_workers
    FOR EACH STATEMENT EXECUTE FUNCTION muster_workers_notify();
