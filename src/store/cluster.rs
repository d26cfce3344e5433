//! The fleet in the database (cluster mode): each node writes its own
//! workers to `muster_workers` and reads every other node's, so that every
//! node shows one fleet.
//!
//! - **fleet-writer**: every [`LOOK`] it compares this node's workers with
//!   what it last wrote. A transition (a new worker, a new session, a
//!   status or activity change, labels) is written at once; any other
//!   change waits until the worker's row is `cluster_refresh_interval` old
//!   (a compact refresh, spread over the interval by when each worker was
//!   first written); a forgotten worker's row is marked `gone`. Everything
//!   due in one look is one transaction of batched statements: heartbeats
//!   alone write nothing. A failed write is counted and tried again at the
//!   next look with whatever is due then.
//! - **fleet-mirror**: `LISTEN muster_workers` with a one-second look, reads
//!   the rows written since its last look (by the transactions its last
//!   snapshot could not see, [`Since`]) and the nodes whose leases hold,
//!   and hands the other
//!   nodes' workers to the registry ([`Registry::set_remote`]). A worker
//!   whose node's lease lapsed reads `inactive` until a node writes it
//!   again. As leader it deletes rows forgotten an hour ago and those of
//!   nodes that left the node list.
//!
//! A row is the registry file's per-worker record ([`Meta`]). A node that
//! lost a worker does not overwrite a row another node wrote with a live
//! one, so a worker that moved shows where it is now.

use super::format::Meta;
use crate::clock::unix_ms;
use crate::cluster::Cluster;
use crate::cluster::db::{Link, Since, Watch, describe};
use crate::cluster::lease::FENCE;
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::{HelloInfo, Snapshot};
use crate::proto::{Labels, Status, WorkerId};
use crate::stats::Counter;
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const CHANNEL: &str = "muster_workers";
/// How often the writer looks for transitions.
pub const LOOK: Duration = Duration::from_millis(100);
/// The mirror looks at least this often.
const POLL: Duration = Duration::from_secs(1);
/// Rows per statement.
const CHUNK: usize = 2000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows of forgotten workers are deleted this long after.
const KEEP_GONE: Duration = Duration::from_secs(3600);

/// The fleet's two threads; [`Fleet::stop`] ends them.
pub struct Fleet {
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Start both threads; the registry was told this node's id already
    /// ([`Registry::set_node`], before any worker).
    pub fn start(
        cluster: Arc<Cluster>,
        registry: Arc<Registry>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Fleet> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (c, r, sh, st) = (
            cluster.clone(),
            registry.clone(),
            shared.clone(),
            stopping.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name("fleet-writer".into())
                .spawn(move || write(&c, &r, &sh, &st))?,
        );
        let st = stopping.clone();
        threads.push(
            std::thread::Builder::new()
                .name("fleet-mirror".into())
                .spawn(move || mirror(&cluster, &registry, &st))?,
        );
        Ok(Fleet { stopping, threads })
    }

    /// End both threads and wait for them (each within a look, or a
    /// statement's timeout).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What makes a change a transition, written at once: the status, a new
/// session (each `hello` is one), other labels.
#[derive(Clone)]
struct Key {
    status: Status,
    session: Option<Arc<HelloInfo>>,
    labels: Arc<Labels>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        let same_session = match (&self.session, &other.session) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.status == other.status && same_session && self.labels == other.labels
    }
}

impl Key {
    fn of(s: &Snapshot) -> Key {
        Key {
            status: s.status(),
            session: s.hello.clone(),
            labels: s.labels.clone(),
        }
    }
}

struct Written {
    key: Key,
    at: Instant,
    last_update: u64,
}

/// Which of this node's workers are due: `(snapshot, transition)`.
fn due(
    snaps: &[Arc<Snapshot>],
    written: &HashMap<WorkerId, Written>,
    refresh: Duration,
    now: Instant,
) -> Vec<(Arc<Snapshot>, Key)> {
    snaps
        .iter()
        .filter_map(|s| {
            let key = Key::of(s);
            let due = match written.get(&s.id) {
                None => true,
                Some(w) if w.key != key => true,
                Some(w) => now.duration_since(w.at) >= refresh && w.last_update != s.last_update,
            };
            due.then(|| (s.clone(), key))
        })
        .collect()
}

fn write(cluster: &Cluster, registry: &Registry, shared: &Shared, stopping: &AtomicBool) {
    let mut link = cluster.link("fleet");
    let mut written: HashMap<WorkerId, Written> = HashMap::new();
    // The first write also marks `gone` what an earlier run of this node
    // left behind.
    let mut first = true;
    let node = cluster.node_id().to_string();
    while !stopping.load(Ordering::Acquire) {
        std::thread::sleep(LOOK);
        let refresh = shared.config.get().cluster.refresh_interval;
        let now = Instant::now();
        let snaps = registry.shown_unsorted();
        let up = due(&snaps, &written, refresh, now);
        let here: HashSet<&str> = snaps.iter().map(|s| &*s.id).collect();
        let gone: Vec<String> = written
            .keys()
            .filter(|id| !here.contains(&***id))
            .map(|id| id.to_string())
            .collect();
        if up.is_empty() && gone.is_empty() && !first {
            continue;
        }
        let Ok(c) = link.get() else {
            continue;
        };
        let rows: Vec<(String, bool, String)> = up
            .iter()
            .map(|(s, _)| {
                let state = serde_json::to_string(&Meta::of(s)).unwrap_or_default();
                (s.id.to_string(), s.is_active(), state)
            })
            .collect();
        let all: Option<Vec<String>> = first.then(|| here.iter().map(|s| s.to_string()).collect());
        match store(c, &node, &rows, &gone, all.as_deref()) {
            Ok(()) => {
                first = false;
                shared
                    .stats
                    .add(Counter::FleetRowsWritten, (rows.len() + gone.len()) as u64);
                for id in &gone {
                    written.remove(id.as_str());
                }
                for (s, key) in up {
                    written.insert(
                        s.id.clone(),
                        Written {
                            key,
                            at: now,
                            last_update: s.last_update,
                        },
                    );
                }
            }
            Err(e) => {
                shared.stats.incr(Counter::FleetWriteErrors);
                let d = link.failed(&e);
                log::warn!("cluster: cannot write this node's workers: {d}");
            }
        }
    }
}

/// One transaction: the rows due, the forgotten, and on a first write
/// every row of this node not among `all`.
fn store(
    c: &mut Client,
    node: &str,
    rows: &[(String, bool, String)],
    gone: &[String],
    all: Option<&[String]>,
) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    for chunk in rows.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
        let active: Vec<bool> = chunk.iter().map(|r| r.1).collect();
        let states: Vec<&str> = chunk.iter().map(|r| r.2.as_str()).collect();
        tx.execute(
            "INSERT INTO muster_workers AS w (worker_id, node_id, active, state)
             SELECT id, $1, a, s::jsonb FROM unnest($2::text[], $3::bool[], $4::text[]) AS u(id, a, s)
             ON CONFLICT (worker_id) DO UPDATE
                SET node_id = excluded.node_id, active = excluded.active, gone = false,
                    state = excluded.state, updated_at = now(), changed = pg_current_xact_id()
                WHERE w.node_id = excluded.node_id OR excluded.active OR NOT w.active OR w.gone",
            &[&node, &ids, &active, &states],
        )?;
    }
    let mark_gone = "UPDATE muster_workers
         SET gone = true, active = false, updated_at = now(), changed = pg_current_xact_id()";
    for chunk in gone.chunks(CHUNK) {
        tx.execute(
            &format!("{mark_gone} WHERE node_id = $1 AND worker_id = ANY($2) AND NOT gone"),
            &[&node, &chunk],
        )?;
    }
    if let Some(all) = all {
        tx.execute(
            &format!("{mark_gone} WHERE node_id = $1 AND NOT gone AND NOT (worker_id = ANY($2))"),
            &[&node, &all],
        )?;
    }
    tx.commit()
}

/// A worker of another node, as last read.
struct Known {
    node: String,
    snap: Arc<Snapshot>,
}

fn mirror(cluster: &Cluster, registry: &Registry, stopping: &AtomicBool) {
    let mut watch = Watch::new(cluster.link("fleet-mirror"), CHANNEL);
    let me = cluster.node_id().to_string();
    let mut since = Since::default();
    let mut known: HashMap<WorkerId, Known> = HashMap::new();
    let mut live: HashSet<String> = HashSet::new();
    let mut last_prune: Option<Instant> = None;
    while !stopping.load(Ordering::Acquire) {
        let Ok(c) = watch.get() else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        match look(c, &since) {
            Ok((next, rows, now_live)) => {
                since = next;
                let (changed, gone) = apply(&me, &mut known, &mut live, rows, now_live);
                registry.set_remote(changed, gone);
            }
            Err(e) => {
                let d = watch.link.failed(&e);
                log::warn!("cluster: cannot read the other nodes' workers: {d}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        if let Some(epoch) = cluster.leading()
            && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY)
        {
            last_prune = Some(Instant::now());
            prune(&mut watch.link, cluster, epoch);
        }
        watch.wait(POLL, 0);
    }
}

/// A row as read: worker, node, gone, state.
type Row = (String, String, bool, String);

/// The rows written since the last look and the nodes whose leases
/// hold, in one snapshot; what the next look starts from.
fn look(
    c: &mut Client,
    since: &Since,
) -> Result<(Since, Vec<Row>, HashSet<String>), postgres::Error> {
    let (mut tx, next) = crate::cluster::db::look(c)?;
    let (xmax, running) = since.params();
    let rows = tx.query(
        &format!(
            "SELECT worker_id, node_id, gone, state::text FROM muster_workers WHERE {}",
            Since::filter(1)
        ),
        &[&xmax, &running],
    )?;
    let live = tx.query(
        "SELECT node_id FROM muster_nodes WHERE expires_at > now()",
        &[],
    )?;
    tx.commit()?;
    let rows = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok((next, rows, live.iter().map(|r| r.get(0)).collect()))
}

/// What a look changes in the fleet: the other nodes' workers to show
/// anew, and those to forget (gone, or now this node's own).
fn apply(
    me: &str,
    known: &mut HashMap<WorkerId, Known>,
    live: &mut HashSet<String>,
    rows: Vec<Row>,
    now_live: HashSet<String>,
) -> (Vec<Arc<Snapshot>>, Vec<WorkerId>) {
    let mut changed: HashMap<WorkerId, Arc<Snapshot>> = HashMap::new();
    let mut gone = Vec::new();
    let now_ms = unix_ms();
    for (id, node, is_gone, state) in rows {
        let id = WorkerId::from(id.as_str());
        if is_gone || node == me {
            if known.remove(&id).is_some() {
                changed.remove(&id);
                gone.push(id);
            }
            continue;
        }
        let Ok(meta) = serde_json::from_str::<Meta>(&state) else {
            continue;
        };
        let snap = Arc::new(remote(meta, &node, now_ms));
        let shown = if now_live.contains(&node) {
            snap.clone()
        } else {
            Arc::new(snap.as_lost())
        };
        changed.insert(id.clone(), shown);
        known.insert(id, Known { node, snap });
    }
    // Nodes whose leases lapsed, or came back, since the last look.
    if *live != now_live {
        for (id, k) in known.iter() {
            let (was, is) = (live.contains(&k.node), now_live.contains(&k.node));
            if was != is && !changed.contains_key(id) {
                let shown = if is {
                    k.snap.clone()
                } else {
                    Arc::new(k.snap.as_lost())
                };
                changed.insert(id.clone(), shown);
            }
        }
        *live = now_live;
    }
    (changed.into_values().collect(), gone)
}

/// The snapshot of another node's worker: as written, last seen as long
/// ago as its last frame.
fn remote(meta: Meta, node: &str, now_ms: u64) -> Snapshot {
    let ago = Duration::from_millis(now_ms.saturating_sub(meta.last_update));
    let now = Instant::now();
    let mut s = meta.into_snapshot(now.checked_sub(ago).unwrap_or(now));
    s.restored = false;
    s.remote = true;
    s.node = Some(Arc::from(node));
    s
}

/// Leader duty: delete rows of workers forgotten long ago, and of nodes
/// that left the node list.
fn prune(link: &mut Link, cluster: &Cluster, epoch: i64) {
    let me = cluster.me();
    let Ok(c) = link.get() else { return };
    let r = c.execute(
        &format!(
            "DELETE FROM muster_workers w
             WHERE ((gone AND updated_at < now() - make_interval(secs => $4))
                    OR NOT EXISTS (SELECT 1 FROM muster_nodes n WHERE n.node_id = w.node_id))
               AND {FENCE}"
        ),
        &[
            &me.node_id,
            &me.incarnation,
            &epoch,
            &KEEP_GONE.as_secs_f64(),
        ],
    );
    if let Err(e) = r {
        link.failed(&e);
        log::warn!("cluster: cannot delete forgotten workers: {}", describe(&e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::tests::queued;

    fn row(id: &str, node: &str, gone: bool, queue: u64) -> Row {
        let s = queued(id, queue);
        (
            id.into(),
            node.into(),
            gone,
            serde_json::to_string(&Meta::of(&s)).unwrap(),
        )
    }

    fn set(nodes: &[&str]) -> HashSet<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn other_nodes_workers_are_shown_with_their_node_and_lost_with_it() {
        let (mut known, mut live) = (HashMap::new(), HashSet::new());
        let rows = vec![row("a", "n2", false, 3), row("b", "n1", false, 1)];
        let (changed, gone) = apply("n1", &mut known, &mut live, rows, set(&["n1", "n2"]));
        assert!(gone.is_empty());
        assert_eq!(changed.len(), 1, "this node's own row is not remote");
        let a = &changed[0];
        assert_eq!(
            (&*a.id, a.node.as_deref(), a.queue_depth),
            ("a", Some("n2"), 3)
        );
        assert!(a.remote && !a.restored && a.is_active());
        assert!(a.telemetry_json().contains("\"node\":\"n2\""));

        // n2's lease lapses: its worker reads inactive with no new row.
        let (changed, _) = apply("n1", &mut known, &mut live, vec![], set(&["n1"]));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].status(), Status::Inactive);
        // It comes back: as written.
        let (changed, _) = apply("n1", &mut known, &mut live, vec![], set(&["n1", "n2"]));
        assert!(changed[0].is_active());
        // Nothing new: nothing to show.
        let (changed, gone) = apply("n1", &mut known, &mut live, vec![], set(&["n1", "n2"]));
        assert!(changed.is_empty() && gone.is_empty());
    }

    #[test]
    fn a_worker_forgotten_or_moved_here_leaves_the_remote_set() {
        let (mut known, mut live) = (HashMap::new(), HashSet::new());
        let nodes = set(&["n1", "n2"]);
        let rows = vec![row("a", "n2", false, 0), row("b", "n2", false, 0)];
        apply("n1", &mut known, &mut live, rows, nodes.clone());
        let rows = vec![row("a", "n2", true, 0), row("b", "n1", false, 0)];
        let (changed, mut gone) = apply("n1", &mut known, &mut live, rows, nodes);
        gone.sort();
        assert!(changed.is_empty());
        assert_eq!(gone, vec![WorkerId::from("a"), WorkerId::from("b")]);
        assert!(known.is_empty());
    }

    #[test]
    fn heartbeats_alone_wait_for_the_refresh_and_transitions_do_not() {
        let now = Instant::now();
        let refresh = Duration::from_secs(10);
        let a = queued("a", 1);
        let mut written = HashMap::new();
        assert_eq!(
            due(std::slice::from_ref(&a), &written, refresh, now).len(),
            1,
            "new"
        );
        written.insert(
            a.id.clone(),
            Written {
                key: Key::of(&a),
                at: now,
                last_update: a.last_update,
            },
        );
        let mut beat = (*a).clone();
        beat.last_update += 1000;
        beat.queue_depth = 7;
        // Each heartbeat that carries labels brings its own copy of them.
        beat.labels = Arc::new((*a.labels).clone());
        let beat = Arc::new(beat);
        assert!(due(std::slice::from_ref(&beat), &written, refresh, now).is_empty());
        assert_eq!(
            due(
                std::slice::from_ref(&beat),
                &written,
                refresh,
                now + refresh
            )
            .len(),
            1
        );
        let mut lost = (*beat).clone();
        lost.inactive = true;
        assert_eq!(due(&[Arc::new(lost)], &written, refresh, now).len(), 1);
        // Unchanged since its last write: no refresh either.
        assert!(due(&[a], &written, refresh, now + refresh).is_empty());
    }
}
