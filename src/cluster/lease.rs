//! The statements of the leases: this node's, the leader's, and the list of
//! nodes. Every expiry is the database's `now()` plus the lease's length,
//! and every judgement of one (`expires_at < now()`) is the database's too,
//! so the nodes' clocks never have to agree.
//!
//! The leader lease is river's: one row, taken by an upsert that succeeds
//! only for its holder or once it has lapsed. A new holder raises the
//! fencing epoch; a leader that stops hands the lease back by letting it
//! lapse at once (the row, and so the epoch, stays).

use postgres::Client;
use serde::Serialize;
use std::time::Duration;

/// Who this node is, as its lease row says.
#[derive(Clone, Debug)]
pub struct Me {
    pub node_id: String,
    pub http: String,
    pub heartbeat: String,
    /// Different at each start: two processes given one `node_id` cannot
    /// both hold it, and a restarted node's leases are not its old ones.
    pub incarnation: i64,
}

/// One node, as `/api/nodes` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub node_id: String,
    pub http: String,
    pub heartbeat: String,
    pub version: String,
    /// Unix ms.
    pub started_at: i64,
    pub renewed_at: i64,
    pub lease_expires_at: i64,
    /// Its lease holds now.
    pub alive: bool,
    pub leader: bool,
}

/// The leader lease, as the database has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leader {
    pub node_id: String,
    pub epoch: i64,
    /// Unix ms.
    pub elected_at: i64,
    pub expires_at: i64,
    /// It has not lapsed.
    pub held: bool,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Take or renew this node's lease. `false`: another live process holds
/// `node_id` (with another incarnation), and this one may not.
pub fn renew_node(c: &mut Client, me: &Me, ttl: Duration) -> Result<bool, postgres::Error> {
    let rows = c.query(
        "INSERT INTO muster_nodes AS n
             (node_id, http_addr, heartbeat_addr, version, incarnation, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
         ON CONFLICT (node_id) DO UPDATE SET
             http_addr = EXCLUDED.http_addr,
             heartbeat_addr = EXCLUDED.heartbeat_addr,
             version = EXCLUDED.version,
             started_at = CASE WHEN n.incarnation = EXCLUDED.incarnation
                               THEN n.started_at ELSE now() END,
             incarnation = EXCLUDED.incarnation,
             renewed_at = now(),
             expires_at = EXCLUDED.expires_at
         WHERE n.incarnation = EXCLUDED.incarnation OR n.expires_at < now()
         RETURNING 1",
        &[
            &me.node_id,
            &me.http,
            &me.heartbeat,
            &crate::VERSION,
            &me.incarnation,
            &secs(ttl),
        ],
    )?;
    Ok(!rows.is_empty())
}

/// Take or renew the leader lease; the epoch when this node holds it.
pub fn renew_leader(
    c: &mut Client,
    me: &Me,
    ttl: Duration,
) -> Result<Option<i64>, postgres::Error> {
    let row = c.query_opt(
        "INSERT INTO muster_leader AS l (name, node_id, incarnation, epoch, expires_at)
         VALUES ('leader', $1, $2, 1, now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET
             epoch = CASE WHEN l.node_id = EXCLUDED.node_id AND l.incarnation = EXCLUDED.incarnation
                          THEN l.epoch ELSE l.epoch + 1 END,
             elected_at = CASE WHEN l.node_id = EXCLUDED.node_id AND l.incarnation = EXCLUDED.incarnation
                               THEN l.elected_at ELSE now() END,
             node_id = EXCLUDED.node_id,
             incarnation = EXCLUDED.incarnation,
             expires_at = EXCLUDED.expires_at
         WHERE (l.node_id = EXCLUDED.node_id AND l.incarnation = EXCLUDED.incarnation)
            OR l.expires_at < now()
         RETURNING epoch",
        &[&me.node_id, &me.incarnation, &secs(ttl)],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// This node's ordinal (0 to 255), the number its task ids carry so that
/// two nodes never make the same one: kept from an earlier run of the same
/// `node_id`, else the lowest that no node in the list has. `None` when
/// all are taken (nodes gone for an hour leave the list) or another node
/// took the same one at the same moment (the next turn tries again).
pub fn ordinal(c: &mut Client, me: &Me) -> Result<Option<u8>, postgres::Error> {
    let row = c.query_opt(
        "UPDATE muster_nodes SET ordinal = coalesce(ordinal,
             (SELECT min(o) FROM generate_series(0, 255) o
              WHERE o NOT IN (SELECT ordinal FROM muster_nodes WHERE ordinal IS NOT NULL)))
         WHERE node_id = $1 AND incarnation = $2
         RETURNING ordinal",
        &[&me.node_id, &me.incarnation],
    );
    match row {
        Ok(r) => Ok(r
            .and_then(|r| r.get::<_, Option<i32>>(0))
            .and_then(|o| u8::try_from(o).ok())),
        // 23505: another node took it first.
        Err(e) if e.code().is_some_and(|c| c.code() == "23505") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A leader-only write's guard: whether `epoch` is still this node's and
/// unexpired, checked in the transaction that writes.
pub const FENCE: &str = "EXISTS (SELECT 1 FROM muster_leader
    WHERE node_id = $1 AND incarnation = $2 AND epoch = $3 AND expires_at > now())";

/// Leader duty: forget nodes whose leases lapsed more than `after` ago.
pub fn prune_nodes(
    c: &mut Client,
    me: &Me,
    epoch: i64,
    after: Duration,
) -> Result<u64, postgres::Error> {
    c.execute(
        &format!(
            "DELETE FROM muster_nodes
             WHERE expires_at < now() - make_interval(secs => $4) AND {FENCE}"
        ),
        &[&me.node_id, &me.incarnation, &epoch, &secs(after)],
    )
}

/// Every node the database knows, by name, and the leader lease.
pub fn list(c: &mut Client) -> Result<(Vec<Node>, Option<Leader>), postgres::Error> {
    let ms = |col: &str| format!("(extract(epoch FROM {col}) * 1000)::bigint");
    let leader = c
        .query_opt(
            &format!(
                "SELECT node_id, incarnation, epoch, {}, {}, expires_at > now() FROM muster_leader",
                ms("elected_at"),
                ms("expires_at")
            ),
            &[],
        )?
        .map(|r| {
            (
                r.get::<_, i64>(1),
                Leader {
                    node_id: r.get(0),
                    epoch: r.get(2),
                    elected_at: r.get(3),
                    expires_at: r.get(4),
                    held: r.get(5),
                },
            )
        });
    let rows = c.query(
        &format!(
            "SELECT node_id, http_addr, heartbeat_addr, version, incarnation, {}, {}, {},
                    expires_at > now()
             FROM muster_nodes ORDER BY node_id",
            ms("started_at"),
            ms("renewed_at"),
            ms("expires_at")
        ),
        &[],
    )?;
    let nodes = rows
        .iter()
        .map(|r| {
            let (node_id, incarnation): (String, i64) = (r.get(0), r.get(4));
            let leader = leader
                .as_ref()
                .is_some_and(|(inc, l)| l.held && l.node_id == node_id && *inc == incarnation);
            Node {
                node_id,
                http: r.get(1),
                heartbeat: r.get(2),
                version: r.get(3),
                started_at: r.get(5),
                renewed_at: r.get(6),
                lease_expires_at: r.get(7),
                alive: r.get(8),
                leader,
            }
        })
        .collect();
    Ok((nodes, leader.map(|(_, l)| l)))
}

/// A clean stop: the leader lease lapses now (its epoch stays for the
/// next holder to raise), and the node's lease with it.
pub fn resign(c: &mut Client, me: &Me) -> Result<(), postgres::Error> {
    c.execute(
        "UPDATE muster_leader SET expires_at = now() - interval '1 millisecond'
         WHERE node_id = $1 AND incarnation = $2",
        &[&me.node_id, &me.incarnation],
    )?;
    c.execute(
        "UPDATE muster_nodes SET expires_at = now() - interval '1 millisecond'
         WHERE node_id = $1 AND incarnation = $2",
        &[&me.node_id, &me.incarnation],
    )?;
    Ok(())
}
