-- muster's cluster schema, version 1: the nodes and the leader. Applied
-- once, under an advisory lock, by the first node to start. Leases are
-- judged by the database's clock alone, so the nodes' clocks may disagree.

CREATE TABLE muster_nodes (
    node_id        text PRIMARY KEY,
    http_addr      text NOT NULL,
    heartbeat_addr text NOT NULL,
    version        text NOT NULL,
    -- A new number each time the node starts: a restarted node is a new
    -- incarnation, and two processes given one node_id cannot both hold it.
    incarnation    bigint NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    renewed_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);

CREATE TABLE muster_leader (
    name        text PRIMARY KEY DEFAULT 'leader' CHECK (name = 'leader'),
    node_id     text NOT NULL,
    incarnation bigint NOT NULL,
    -- Fencing: a new leader has a higher epoch, and every leader-only
    -- write checks that the epoch it was elected in still holds.
    epoch       bigint NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
