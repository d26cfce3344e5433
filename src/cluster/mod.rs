//! Cluster mode: several musterd nodes on one PostgreSQL. Without
//! `cluster_database` nothing here runs and the daemon is the single node
//! it always was.
//!
//! - `db`: one connection, kept by the thread that uses it, reconnected
//!   with backoff, every statement under a server-side timeout.
//! - `schema`: the versioned migrations, applied at start.
//! - `lease`: the statements of the node and leader leases.
//!
//! [`Cluster`] is this node's membership: a `lease` thread renews the
//! node's lease every third of `node_ttl`, takes or renews the leader
//! lease, and reads the list of nodes, which `/health`, `/api/nodes` and
//! `muster nodes` show. The node judges its own leases by its monotonic
//! clock from the moment it sent each renewal, which is never later than
//! the moment the database stamped it: a node that cannot renew believes
//! its lease lapsed no later than the database does.

pub mod db;
pub mod lease;
pub mod schema;
pub mod tls;

use crate::clock::unix_ms;
use crate::config::Config;
use db::{Link, is_misconfigured};
use lease::{Leader, Me, Node};
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Nodes whose leases lapsed this long ago leave the list (leader duty).
const FORGET_NODES_AFTER: Duration = Duration::from_secs(3600);

/// What `/health` and `/api/nodes` say about the cluster.
#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    /// Unix ms of the last reading of the node list.
    pub as_of: u64,
    /// Why the database cannot be used, since when (Unix ms); `None`
    /// while it answers.
    pub database_error: Option<String>,
    pub database_down_since: Option<u64>,
    /// The schema version the database is at.
    pub schema: i32,
    pub nodes: Vec<Node>,
    pub leader: Option<Leader>,
    /// Another running process holds this node's `node_id`.
    pub conflict: bool,
}

/// The database as `/health` and `/api/nodes` show it.
#[derive(Serialize)]
pub struct Database<'a> {
    /// `up` or `down`.
    pub status: &'static str,
    pub error: Option<&'a str>,
    pub down_since: Option<u64>,
    pub schema_version: i32,
}

impl View {
    pub fn database(&self) -> Database<'_> {
        Database {
            status: if self.database_error.is_some() {
                "down"
            } else {
                "up"
            },
            error: self.database_error.as_deref(),
            down_since: self.database_down_since,
            schema_version: self.schema,
        }
    }
}

/// Membership state the lease thread keeps, judged by this node's clock.
#[derive(Default)]
struct Held {
    view: View,
    /// When this node's lease, and its leader lease, lapse at the latest.
    lease_until: Option<Instant>,
    leader: Option<(i64, Instant)>,
    /// Bumped at every change of `view`, for `/health`'s cache.
    version: u64,
    /// The number this node's task ids carry, once the database gave one.
    ordinal: Option<u8>,
}

pub struct Cluster {
    me: Me,
    ttl: Duration,
    /// Where the database is, for the other threads' connections.
    url: crate::config::cluster::Database,
    password: Option<crate::config::Secret>,
    held: Mutex<Held>,
    stop: (Mutex<bool>, Condvar),
}

/// A node in the cluster, and its lease thread.
pub type Joined = (Arc<Cluster>, std::thread::JoinHandle<()>);

/// Why the daemon may not start in cluster mode (exit status 2): errors
/// an operator must fix, not a database that is away for a while.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host name, as a node id (`/proc/sys/kernel/hostname`).
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if name.is_empty() {
        "musterd".into()
    } else {
        name
    }
}

/// This node's name: `node_id`, or the host name.
pub fn node_id(cfg: &Config) -> String {
    cfg.cluster.node_id.clone().unwrap_or_else(host_name)
}

/// An address peers can reach: a wildcard bind is advertised under the
/// host name.
fn reachable(bound: &str, host: &str) -> String {
    match bound.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("{host}:{}", a.port()),
        _ => bound.to_string(),
    }
}

/// What `--check-config` found in the cluster's database.
pub enum Checked {
    /// It answers, at this schema version (0: muster never ran there).
    Schema(i32),
    /// It does not answer now: a node would start degraded and keep
    /// trying, so this is a warning, not an error.
    Away(String),
}

/// Connect once and check the schema, for `--check-config`. An error is
/// what the operator must fix: a refused password, a missing database or
/// role, a schema newer than this build.
pub fn check(cfg: &Config) -> Result<Option<Checked>, String> {
    let Some(url) = &cfg.cluster.database else {
        return Ok(None);
    };
    let mut link = Link::new(url, cfg.cluster.password.as_ref(), &node_id(cfg), "check");
    let c = match link.get() {
        Ok(c) => c,
        Err(d) if d.misconfigured => {
            return Err(format!("cluster_database {}: {d}", url.shown()));
        }
        Err(d) => return Ok(Some(Checked::Away(d.why))),
    };
    let v = schema::version(c).map_err(|e| format!("cluster_database: {}", db::describe(&e)))?;
    if v > schema::VERSION {
        return Err(schema::SchemaError::Newer { found: v }.to_string());
    }
    Ok(Some(Checked::Schema(v)))
}

impl Cluster {
    /// Join the cluster: connect, migrate the schema, and check that no
    /// other running process is this node; then the lease thread takes
    /// over. A database that cannot be reached now is not a refusal (the
    /// node starts degraded and keeps trying); a refused password, a
    /// database that does not exist, a newer schema, or a `node_id` in use
    /// is.
    pub fn join(cfg: &Config, http: &str, heartbeat: &str) -> Result<Option<Joined>, Refused> {
        let Some(url) = &cfg.cluster.database else {
            return Ok(None);
        };
        let node = node_id(cfg);
        let host = host_name();
        let (http, heartbeat) = match &cfg.cluster.advertise {
            Some((h, b)) => (h.clone(), b.clone()),
            None => (reachable(http, &host), reachable(heartbeat, &host)),
        };
        let me = Me {
            node_id: node.clone(),
            http,
            heartbeat,
            incarnation: ((unix_ms() as i64) << 20) ^ i64::from(std::process::id() & 0xF_FFFF),
        };
        let cluster = Arc::new(Cluster {
            me,
            ttl: cfg.cluster.node_ttl,
            url: url.clone(),
            password: cfg.cluster.password.clone(),
            held: Mutex::new(Held::default()),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let mut link = Link::new(url, cfg.cluster.password.as_ref(), &node, "lease");
        let mut migrated = false;
        match link.get() {
            Ok(_) => migrated = cluster.first_turn(&mut link)?,
            Err(d) if d.misconfigured => {
                return Err(Refused(format!("cluster_database {}: {d}", url.shown())));
            }
            Err(d) => {
                log::warn!(
                    "cluster: cannot reach {} ({d}): starting without it, trying again",
                    url.shown()
                );
                cluster.down(d.why);
            }
        }
        log::info!(
            "cluster: node {} (http {}, heartbeat {}), node_ttl {}",
            cluster.me.node_id,
            cluster.me.http,
            cluster.me.heartbeat,
            crate::config::fmt_duration(cluster.ttl)
        );
        let c = cluster.clone();
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || c.run(link, migrated))
            .map_err(|e| Refused(format!("cannot start the lease thread: {e}")))?;
        Ok(Some((cluster, thread)))
    }

    /// The first turn, at start: errors that will not mend by waiting
    /// refuse the start. A `node_id` held by another live process is waited
    /// for (a crashed predecessor's lease lapses within `node_ttl`); still
    /// held after that, it is another running node. Whether the schema
    /// was migrated.
    fn first_turn(&self, link: &mut Link) -> Result<bool, Refused> {
        let c = link.get().map_err(|d| Refused(d.why))?;
        match schema::migrate(c) {
            Ok(_) => {}
            Err(schema::SchemaError::Db(e)) if !is_misconfigured(&e) => {
                let d = link.failed(&e);
                self.down(d.why);
                return Ok(false);
            }
            Err(e) => return Err(Refused(format!("cluster_database: {e}"))),
        }
        let deadline = Instant::now() + self.ttl + self.ttl / 3;
        loop {
            let sent = Instant::now();
            let c = link.get().map_err(|d| Refused(d.why))?;
            match lease::renew_node(c, &self.me, self.ttl) {
                Ok(true) => {
                    self.update(|h| h.lease_until = Some(sent + self.ttl));
                    if let Err(e) = self.take_ordinal(c) {
                        let d = link.failed(&e);
                        self.down(d.why);
                    }
                    break;
                }
                Ok(false) if Instant::now() < deadline => {
                    log::warn!(
                        "cluster: node_id {} is held by another process; waiting for its lease to lapse",
                        self.me.node_id
                    );
                    std::thread::sleep(self.ttl / 3);
                }
                Ok(false) => {
                    return Err(Refused(format!(
                        "node_id {} is in use by another running musterd: give each node its own node_id",
                        self.me.node_id
                    )));
                }
                Err(e) if is_misconfigured(&e) => {
                    return Err(Refused(format!("cluster_database: {}", db::describe(&e))));
                }
                Err(e) => {
                    let d = link.failed(&e);
                    self.down(d.why);
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change what the node holds; `/health` renders again.
    fn update(&self, f: impl FnOnce(&mut Held)) {
        let mut h = self.lock();
        f(&mut h);
        h.version += 1;
    }

    fn down(&self, why: String) {
        self.update(|h| {
            if h.view.database_error.is_none() {
                h.view.database_down_since = Some(unix_ms());
            }
            h.view.database_error = Some(why);
        });
    }

    /// The lease thread: a turn every third of `node_ttl` until stopped;
    /// the first migrates the schema when the start could not.
    fn run(self: Arc<Cluster>, mut link: Link, mut migrated: bool) {
        let every = self.ttl / 3;
        loop {
            let started = Instant::now();
            if let Err(why) = self.turn(&mut link, &mut migrated, started) {
                self.down(why);
            }
            let (m, c) = &self.stop;
            let mut stop = m.lock().unwrap_or_else(|p| p.into_inner());
            let until = started + every;
            while !*stop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                stop = c
                    .wait_timeout(stop, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if *stop {
                drop(stop);
                // Only over a connection that is up: a stop must not wait
                // for a database that is away.
                if !link.is_up() {
                    return;
                }
                if let Ok(c) = link.get() {
                    match lease::resign(c, &self.me) {
                        Ok(()) => log::info!("cluster: node {} left", self.me.node_id),
                        Err(e) => log::warn!("cluster: cannot resign: {}", db::describe(&e)),
                    }
                }
                return;
            }
        }
    }

    /// One turn: the node lease, the leader lease, the leader's duties,
    /// the node list. `started` is when it began, before any statement.
    fn turn(&self, link: &mut Link, migrated: &mut bool, started: Instant) -> Result<(), String> {
        let fail = |link: &mut Link, e: postgres::Error| link.failed(&e).why;
        let c = link.get().map_err(|d| d.why)?;
        if !*migrated {
            match schema::migrate(c) {
                Ok(_) => *migrated = true,
                Err(schema::SchemaError::Db(e)) => return Err(fail(link, e)),
                Err(e) => return Err(e.to_string()),
            }
        }
        let c = link.get().map_err(|d| d.why)?;
        let mine = match lease::renew_node(c, &self.me, self.ttl) {
            Ok(m) => m,
            Err(e) => return Err(fail(link, e)),
        };
        if !mine {
            log::error!(
                "cluster: node_id {} is held by another running musterd: give each node its own node_id",
                self.me.node_id
            );
        }
        if mine {
            if let Err(e) = self.take_ordinal(c) {
                return Err(fail(link, e));
            }
        }
        let epoch = if mine {
            match lease::renew_leader(c, &self.me, self.ttl) {
                Ok(e) => e,
                Err(e) => return Err(fail(link, e)),
            }
        } else {
            None
        };
        let was = self.lock().leader.map(|(e, _)| e);
        match (was, epoch) {
            (None, Some(e)) => log::info!("cluster: this node leads (epoch {e})"),
            (Some(a), Some(b)) if a != b => log::info!("cluster: this node leads (epoch {b})"),
            (Some(_), None) => log::info!("cluster: this node no longer leads"),
            _ => {}
        }
        if let Some(e) = epoch {
            match lease::prune_nodes(c, &self.me, e, FORGET_NODES_AFTER) {
                Ok(n) if n > 0 => log::info!("cluster: forgot {n} nodes gone for an hour"),
                Ok(_) => {}
                Err(e) => return Err(fail(link, e)),
            }
        }
        let (nodes, leader) = match lease::list(c) {
            Ok(l) => l,
            Err(e) => return Err(fail(link, e)),
        };
        let until = started + self.ttl;
        self.update(|h| {
            if h.view.database_error.take().is_some() {
                log::info!("cluster: the database answers again");
            }
            h.view.database_down_since = None;
            h.view.schema = schema::VERSION;
            h.view.conflict = !mine;
            h.view.nodes = nodes;
            h.view.leader = leader;
            h.view.as_of = unix_ms();
            h.lease_until = mine.then_some(until);
            h.leader = epoch.map(|e| (e, until));
        });
        Ok(())
    }

    /// Ask the database for this node's ordinal until it has one.
    fn take_ordinal(&self, c: &mut postgres::Client) -> Result<(), postgres::Error> {
        if self.lock().ordinal.is_some() {
            return Ok(());
        }
        match lease::ordinal(c, &self.me)? {
            Some(o) => {
                log::info!("cluster: node {} has ordinal {o}", self.me.node_id);
                self.update(|h| h.ordinal = Some(o));
            }
            None => log::warn!(
                "cluster: no ordinal free for node {} yet: it takes no submissions until one is",
                self.me.node_id
            ),
        }
        Ok(())
    }

    /// The number this node's task ids carry; `None` until the database
    /// gave it one.
    pub fn ordinal(&self) -> Option<u8> {
        self.lock().ordinal
    }

    /// Who this node is.
    pub fn me(&self) -> &Me {
        &self.me
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A connection of this node's own for `what` (a thread's).
    pub fn link(&self, what: &str) -> Link {
        Link::new(&self.url, self.password.as_ref(), &self.me.node_id, what)
    }

    /// The view as of the last turn.
    pub fn view(&self) -> View {
        self.lock().view.clone()
    }

    /// The version of the view: it changes whenever the view does.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    pub fn node_id(&self) -> &str {
        &self.me.node_id
    }

    /// Whether this node's lease holds now, by its own clock.
    pub fn lease_holds(&self) -> bool {
        self.lock().lease_until.is_some_and(|t| Instant::now() < t)
    }

    /// The epoch this node leads in, while its leader lease holds.
    pub fn leading(&self) -> Option<i64> {
        self.lock()
            .leader
            .filter(|(_, t)| Instant::now() < *t)
            .map(|(e, _)| e)
    }

    /// Why the daemon is degraded on the cluster's account.
    pub fn troubles(&self) -> Vec<String> {
        let h = self.lock();
        let mut out = Vec::new();
        if let Some(e) = &h.view.database_error {
            out.push(format!("cannot reach its database: {e}"));
        }
        if h.view.conflict {
            out.push(format!(
                "node_id {} is held by another running musterd",
                self.me.node_id
            ));
        } else if h.lease_until.is_none_or(|t| Instant::now() >= t) {
            out.push("its node lease has lapsed".into());
        }
        out
    }

    /// Stop the lease thread; it hands its leases back first.
    pub fn stop(&self) {
        let (m, c) = &self.stop;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        c.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_advertised_under_the_host_name() {
        assert_eq!(reachable("0.0.0.0:8080", "node1"), "node1:8080");
        assert_eq!(reachable("[::]:8090", "node1"), "node1:8090");
        assert_eq!(reachable("10.0.0.5:8080", "node1"), "10.0.0.5:8080");
        assert_eq!(reachable("off", "node1"), "off");
        let h = host_name();
        assert!(!h.is_empty() && h.len() <= 64);
    }
}
