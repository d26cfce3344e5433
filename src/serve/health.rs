//! `GET /health`: the daemon's own health, the fleet's beside it, and the
//! readings it shares with `/metrics` (worker counts, the kernel's UDP drop
//! count).
//!
//! `status` is musterd's own: `healthy`, or `degraded` with `reasons` when
//! musterd itself is impaired: it dropped frames (its inboxes, or the
//! kernel's buffer for its socket), failed to save its state, or failed to
//! write its task journal, within [`DEGRADED_WINDOW`] (or since the
//! previous poll when that was longer ago). What workers do is the fleet's
//! condition, in `fleet` with its own `status` and `reasons`: a worker
//! reporting `error`, inactive workers, frames refused from peers. In a
//! real fleet some worker is always inactive, so the fleet's condition
//! never makes the daemon degraded. Either way the answer is a 200: the
//! daemon serves, a load balancer must not take it out; monitors read
//! `status` (`muster health` exits 3, and with `--fleet` also on the
//! fleet's reasons).
//!
//! The counters come from the one table in [`crate::stats`]: each sits in
//! the group and under the key its row names. The body is rendered again
//! only when a value in it changed, so a monitor polling a quiet daemon
//! costs a comparison, not a serialisation. Counting workers by state
//! reads every snapshot, so it is redone only when the fleet's version
//! moved; /proc/net/udp is the kernel writing out every UDP socket, too
//! dear to read on every poll (it capped `/health` at 9,000 req/s), so a
//! reading is reused for [`UDP_DROPS_TTL`].

use crate::VERSION;
use crate::clock::unix_ms;
use crate::cluster::Cluster;
use crate::fleet::Shared;
use crate::fleet::registry::{Counts, Registry};
use crate::proto::RejectReason;
use crate::stats::{COUNTERS, Counter, DropReason, Group, Stats};
use crate::sys::procfs;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reading of /proc/net/udp is reused.
const UDP_DROPS_TTL: Duration = Duration::from_secs(1);

/// Troubles this recent make the daemon (or the fleet) `degraded`.
pub const DEGRADED_WINDOW: Duration = Duration::from_secs(60);

/// The running totals whose recent growth is a trouble, and whose it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// Frames musterd dropped (a worker's inbox full, shutting down).
    Dropped,
    /// Datagrams the kernel dropped on the heartbeat socket.
    KernelDropped,
    SaveFailed,
    JournalFailed,
    /// Frames refused from peers: the fleet's.
    Rejected,
}

const TROUBLES: [Trouble; 5] = [
    Trouble::Dropped,
    Trouble::KernelDropped,
    Trouble::SaveFailed,
    Trouble::JournalFailed,
    Trouble::Rejected,
];

/// One reading of every [`Trouble`]'s total, in [`TROUBLES`]' order.
type Totals = [u64; TROUBLES.len()];

impl Trouble {
    fn total(self, st: &Stats, kernel: Option<u64>) -> u64 {
        match self {
            Trouble::Dropped => st.dropped_total(),
            Trouble::KernelDropped => kernel.unwrap_or(0),
            Trouble::SaveFailed => st.get(Counter::StateSaveErrors),
            Trouble::JournalFailed => st.get(Counter::JournalErrors),
            Trouble::Rejected => st.rejected_total(),
        }
    }

    fn is_fleets(self) -> bool {
        self == Trouble::Rejected
    }

    /// The reason, as a sentence, for `n` of it in the window.
    fn reason(self, n: u64) -> String {
        let window = DEGRADED_WINDOW.as_secs();
        let s = if n == 1 { "" } else { "s" };
        match self {
            Trouble::Dropped => format!("{n} frame{s} dropped by musterd in the last {window} s"),
            Trouble::KernelDropped => {
                format!("{n} frame{s} dropped by the kernel in the last {window} s")
            }
            Trouble::SaveFailed => {
                format!("{n} save{s} of the worker state failed in the last {window} s")
            }
            Trouble::JournalFailed => {
                format!("{n} task journal write{s} failed in the last {window} s")
            }
            Trouble::Rejected => format!("{n} frame{s} rejected in the last {window} s"),
        }
    }
}

/// Why the daemon and why the fleet are degraded; empty when healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub daemon: Vec<String>,
    pub fleet: Vec<String>,
}

/// The values and verdict a body was rendered from, and the body.
type Rendered = (Vec<u64>, Verdict, Arc<[u8]>);

pub struct Health {
    started: Instant,
    /// Inode of the heartbeat UDP socket, to find its kernel drop count.
    udp_inode: Option<u64>,
    udp_drops: Option<(Instant, Option<u64>)>,
    counts: Option<(u64, Counts)>,
    /// Readings of the troubles' totals, one a second at most while
    /// polled, back to the newest one older than [`DEGRADED_WINDOW`].
    readings: std::collections::VecDeque<(Instant, Totals)>,
    /// The values the last body was rendered from, and the body.
    body: Option<Rendered>,
    /// This node's cluster membership, in cluster mode.
    cluster: Option<Arc<Cluster>>,
}

impl Health {
    pub fn new(started: Instant, udp_inode: Option<u64>, cluster: Option<Arc<Cluster>>) -> Health {
        Health {
            started,
            udp_inode,
            cluster,
            udp_drops: None,
            counts: None,
            readings: [(started, [0; TROUBLES.len()])].into(),
            body: None,
        }
    }

    /// How much each total grew since the reference reading: the newest
    /// one older than the window, or the previous poll's when that is
    /// older.
    fn recent(&mut self, now: Totals, at: Instant) -> Totals {
        if self
            .readings
            .back()
            .is_none_or(|(t, _)| at.duration_since(*t) >= Duration::from_secs(1))
        {
            self.readings.push_back((at, now));
        }
        while self
            .readings
            .get(1)
            .is_some_and(|(t, _)| at.duration_since(*t) >= DEGRADED_WINDOW)
        {
            self.readings.pop_front();
        }
        let since = self
            .readings
            .front()
            .map_or([0; TROUBLES.len()], |(_, l)| *l);
        std::array::from_fn(|i| now[i].saturating_sub(since[i]))
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The kernel's count of datagrams it dropped on the heartbeat socket.
    pub fn udp_kernel_drops(&mut self) -> Option<u64> {
        if let Some((at, v)) = self.udp_drops {
            if at.elapsed() < UDP_DROPS_TTL {
                return v;
            }
        }
        let v = self.udp_inode.and_then(procfs::read_udp_drops);
        self.udp_drops = Some((Instant::now(), v));
        v
    }

    /// Workers by state, counted again only after the fleet changed.
    pub fn counts(&mut self, registry: &Registry, shared: &Shared) -> Counts {
        let version = shared.changes.version();
        match self.counts {
            Some((v, c)) if v == version => c,
            _ => {
                let c = registry.fleet_counts();
                self.counts = Some((version, c));
                c
            }
        }
    }

    /// The `/health` body, rendered again only when a value in it changed.
    pub fn body(&mut self, registry: &Registry, shared: &Shared, max_workers: usize) -> Arc<[u8]> {
        let c = self.counts(registry, shared);
        let drops = self.udp_kernel_drops();
        let time = unix_ms() / 1000;
        let uptime = self.started.elapsed().as_secs();
        let st = &shared.stats;
        let mut values = st.reading();
        values.extend([
            time,
            uptime,
            c.total as u64,
            c.active as u64,
            c.inactive as u64,
            c.terminated as u64,
            max_workers as u64,
            drops.map_or(u64::MAX, |d| d),
            self.cluster.as_ref().map_or(0, |c| c.version()),
        ]);
        let totals = TROUBLES.map(|t| t.total(st, drops));
        let mut verdict = verdict(c, self.recent(totals, Instant::now()));
        if let Some(cl) = &self.cluster {
            verdict.daemon.extend(cl.troubles());
        }
        if let Some((last, said, body)) = &self.body {
            if *last == values && *said == verdict {
                return body.clone();
            }
        }
        let figures = Figures {
            counts: c,
            max_workers,
            udp_drops: drops,
            time,
            uptime,
            cluster: self
                .cluster
                .as_ref()
                .map(|c| (c.node_id().to_string(), c.view())),
        };
        let body: Arc<[u8]> = render(st, &figures, &verdict).into();
        self.body = Some((values, verdict, body.clone()));
        body
    }
}

/// The daemon's and the fleet's reasons, from the counts and what grew in
/// the window.
fn verdict(c: Counts, recent: Totals) -> Verdict {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut v = Verdict::default();
    if c.error > 0 {
        v.fleet.push(format!(
            "{} worker{} report error",
            c.error,
            plural(c.error)
        ));
    }
    if c.inactive > 0 {
        v.fleet.push(format!(
            "{} worker{} inactive",
            c.inactive,
            plural(c.inactive)
        ));
    }
    for (t, n) in TROUBLES.iter().zip(recent) {
        if n > 0 {
            let whose = if t.is_fleets() {
                &mut v.fleet
            } else {
                &mut v.daemon
            };
            whose.push(t.reason(n));
        }
    }
    v
}

/// What the body shows besides the counter table.
struct Figures {
    counts: Counts,
    max_workers: usize,
    udp_drops: Option<u64>,
    time: u64,
    uptime: u64,
    /// This node's name and its view of the cluster, in cluster mode.
    cluster: Option<(String, crate::cluster::View)>,
}

fn status(reasons: &[String]) -> &'static str {
    if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    }
}

/// The body, in the order people read it: the verdicts first, then the
/// figures, then the counter table group by group.
#[derive(Serialize)]
struct Body<'a> {
    status: &'static str,
    reasons: &'a [String],
    fleet: Fleet<'a>,
    time: u64,
    uptime_seconds: u64,
    version: &'static str,
    workers: Rows<'a, 6>,
    frames: Frames<'a>,
    udp_kernel_drops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterPart<'a>>,
    #[serde(flatten)]
    groups: Groups<'a>,
}

/// `cluster`: this node, the leader, how many nodes are alive, and the
/// database.
#[derive(Serialize)]
struct ClusterPart<'a> {
    node: &'a str,
    leader: Option<&'a str>,
    epoch: Option<i64>,
    nodes: usize,
    database: crate::cluster::Database<'a>,
}

#[derive(Serialize)]
struct Fleet<'a> {
    status: &'static str,
    reasons: &'a [String],
}

/// A group's figures of its own, then its rows of the counter table.
struct Rows<'a, const N: usize> {
    st: &'a Stats,
    group: Group,
    head: [(&'static str, u64); N],
}

impl<const N: usize> Rows<'_, N> {
    fn entries(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let rows = COUNTERS.iter().filter(move |r| r.group == self.group);
        self.head
            .into_iter()
            .chain(rows.map(|r| (r.key, self.st.get(r.counter))))
    }
}

impl<const N: usize> Serialize for Rows<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries())
    }
}

/// `frames`: the totals and the table's rows, then the counts by reason.
struct Frames<'a>(Rows<'a, 2>);

impl Serialize for Frames<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0.st;
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.entries() {
            m.serialize_entry(k, &v)?;
        }
        let rejected = RejectReason::ALL.map(|r| (r.as_str(), st.rejected(r)));
        m.serialize_entry("rejected_by_reason", &Pairs(&rejected))?;
        let dropped = DropReason::ALL.map(|r| (r.as_str(), st.dropped(r)));
        m.serialize_entry("dropped_by_reason", &Pairs(&dropped))?;
        m.end()
    }
}

struct Pairs<'a>(&'a [(&'static str, u64)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().copied())
    }
}

/// The groups made of the table's rows alone.
struct Groups<'a>(&'a Stats);

impl Serialize for Groups<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Group::PLAIN.len()))?;
        for group in Group::PLAIN {
            let rows = Rows {
                st: self.0,
                group,
                head: [],
            };
            m.serialize_entry(group.as_str(), &rows)?;
        }
        m.end()
    }
}

fn render(st: &Stats, f: &Figures, v: &Verdict) -> Vec<u8> {
    let c = f.counts;
    let body = Body {
        status: status(&v.daemon),
        reasons: &v.daemon,
        fleet: Fleet {
            status: status(&v.fleet),
            reasons: &v.fleet,
        },
        time: f.time,
        uptime_seconds: f.uptime,
        version: VERSION,
        workers: Rows {
            st,
            group: Group::Workers,
            head: [
                ("total", c.total as u64),
                ("active", c.active as u64),
                ("inactive", c.inactive as u64),
                ("terminated", c.terminated as u64),
                ("error", c.error as u64),
                ("max", f.max_workers as u64),
            ],
        },
        frames: Frames(Rows {
            st,
            group: Group::Frames,
            head: [
                ("rejected", st.rejected_total()),
                ("dropped", st.dropped_total()),
            ],
        }),
        udp_kernel_drops: f.udp_drops,
        cluster: f.cluster.as_ref().map(|(node, v)| {
            let leader = v.leader.as_ref().filter(|l| l.held);
            ClusterPart {
                node,
                leader: leader.map(|l| l.node_id.as_str()),
                epoch: leader.map(|l| l.epoch),
                nodes: v.nodes.iter().filter(|n| n.alive).count(),
                database: v.database(),
            }
        }),
        groups: Groups(st),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: Trouble, n: u64) -> Totals {
        let mut t = [0; TROUBLES.len()];
        t[TROUBLES.iter().position(|x| *x == i).unwrap()] = n;
        t
    }

    #[test]
    fn the_fleets_troubles_never_degrade_the_daemon() {
        let quiet = Counts {
            total: 3,
            active: 3,
            ..Counts::default()
        };
        assert_eq!(verdict(quiet, [0; TROUBLES.len()]), Verdict::default());
        let bad = Counts {
            total: 10_004,
            active: 3,
            inactive: 10_001,
            error: 2,
            ..Counts::default()
        };
        let v = verdict(bad, at(Trouble::Rejected, 1));
        assert!(v.daemon.is_empty(), "{v:?}");
        assert_eq!(
            v.fleet,
            [
                "2 workers report error",
                "10001 workers inactive",
                "1 frame rejected in the last 60 s"
            ]
        );
        for (t, said) in [
            (
                Trouble::KernelDropped,
                "7 frames dropped by the kernel in the last 60 s",
            ),
            (
                Trouble::Dropped,
                "7 frames dropped by musterd in the last 60 s",
            ),
            (
                Trouble::SaveFailed,
                "7 saves of the worker state failed in the last 60 s",
            ),
            (
                Trouble::JournalFailed,
                "7 task journal writes failed in the last 60 s",
            ),
        ] {
            let v = verdict(quiet, at(t, 7));
            assert_eq!(
                (v.daemon, v.fleet.is_empty()),
                (vec![said.to_string()], true)
            );
        }
    }

    #[test]
    fn troubles_count_within_the_window_or_since_the_last_poll() {
        let long_ago = Instant::now() - Duration::from_secs(300);
        let mut h = Health::new(long_ago, None, None);
        let t = |d: u64, k: u64, r: u64| {
            let mut x = [0; TROUBLES.len()];
            x[0] = d;
            x[1] = k;
            x[4] = r;
            x
        };
        let now = Instant::now();
        // The first poll, five minutes after the start, sees everything
        // since the start: there was no earlier poll.
        assert_eq!(h.recent(t(5, 0, 2), now), t(5, 0, 2));
        // A second poll at once compares with the start still, as the
        // reading just taken is younger than the window.
        assert_eq!(h.recent(t(6, 0, 2), now), t(6, 0, 2));
        // Once the readings are older than the window, only what came
        // after the newest of them counts.
        h.readings = [
            (now - Duration::from_secs(200), t(5, 0, 2)),
            (now - Duration::from_secs(61), t(6, 0, 2)),
        ]
        .into();
        assert_eq!(h.recent(t(6, 0, 2), now), t(0, 0, 0));
        assert_eq!(h.readings.len(), 2, "the older reading let go");
        assert_eq!(h.recent(t(9, 1, 2), now), t(3, 1, 0));
    }
}
