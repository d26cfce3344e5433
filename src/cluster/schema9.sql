-- muster's cluster schema, version 9: the audit log.
--
-- One row per change made through any node's API (who, what, the target,
-- the peer, the answer), as JSON; `at` (Unix ms) is what the leader
-- prunes by, after audit_retention.

CREATE TABLE muster_audit (
    id    bigserial PRIMARY KEY,
    at    bigint NOT NULL,
    entry jsonb NOT NULL
);

CREATE INDEX muster_audit_at ON muster_audit (at);
