-- muster's cluster schema, version 8: dispatch limits.
--
-- `muster_limits` holds a row per limit scope (`type:NAME`, `key:NAME`):
-- `spec` names it, `rule` is the limit (NULL once removed, so that every
-- node reads the removal). Each node's claim takes a transaction-level
-- advisory lock while limits exist, counts the cluster's held tasks under
-- each, and takes tokens from `muster_limit_buckets`: claims that a limit
-- governs run one at a time, cluster-wide.

CREATE TABLE muster_limits (
    scope   text PRIMARY KEY,
    spec    jsonb NOT NULL,
    rule    jsonb,
    changed xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE TABLE muster_limit_buckets (
    scope  text PRIMARY KEY,
    tokens double precision NOT NULL,
    at     bigint NOT NULL
);

CREATE INDEX muster_tasks_held_kind ON muster_tasks (kind) WHERE state IN ('assigned', 'running');

CREATE TRIGGER muster_limits_changed AFTER INSERT OR UPDATE ON muster_limits
    FOR EACH STATEMENT EXECUTE FUNCTION muster_tasks_notify();
