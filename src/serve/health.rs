//! `GET /health`: the daemon's state in one small object, as monitors poll
//! it, and the readings it shares with `/metrics` (worker counts, the
//! kernel's UDP drop count).
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
use crate::fleet::Shared;
use crate::fleet::registry::{Counts, Registry};
use crate::proto::RejectReason;
use crate::stats::{COUNTERS, DropReason};
use crate::sys::procfs;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reading of /proc/net/udp is reused.
const UDP_DROPS_TTL: Duration = Duration::from_secs(1);

pub struct Health {
    started: Instant,
    /// Inode of the heartbeat UDP socket, to find its kernel drop count.
    udp_inode: Option<u64>,
    udp_drops: Option<(Instant, Option<u64>)>,
    counts: Option<(u64, Counts)>,
    /// The values the last body was rendered from, and the body.
    body: Option<(Vec<u64>, Arc<[u8]>)>,
}

impl Health {
    pub fn new(started: Instant, udp_inode: Option<u64>) -> Health {
        Health {
            started,
            udp_inode,
            udp_drops: None,
            counts: None,
            body: None,
        }
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
                let c = registry.counts();
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
        let mut values = shared.stats.reading();
        values.extend([
            time,
            uptime,
            c.total as u64,
            c.active as u64,
            c.inactive as u64,
            c.terminated as u64,
            max_workers as u64,
            drops.map_or(u64::MAX, |d| d),
        ]);
        if let Some((last, body)) = &self.body {
            if *last == values {
                return body.clone();
            }
        }
        let body: Arc<[u8]> = render(shared, c, max_workers, drops, time, uptime)
            .into_bytes()
            .into();
        self.body = Some((values, body.clone()));
        body
    }
}

/// The body, walking the counter table group by group. Keys are static
/// names that need no JSON escaping.
fn render(
    shared: &Shared,
    c: Counts,
    max_workers: usize,
    udp_drops: Option<u64>,
    time: u64,
    uptime: u64,
) -> String {
    let st = &shared.stats;
    let mut o = String::with_capacity(1536);
    let _ = write!(
        o,
        "{{\"status\":\"healthy\",\"time\":{time},\"uptime_seconds\":{uptime},\"version\":\"{VERSION}\""
    );
    // Each row's `"key":value`, after a comma unless it opens its object.
    let rows = |o: &mut String, group: &str, mut first: bool| {
        for r in COUNTERS.iter().filter(|r| r.group == group) {
            let comma = if first { "" } else { "," };
            let _ = write!(o, "{comma}\"{}\":{}", r.key, st.get(r.counter));
            first = false;
        }
    };
    let _ = write!(
        o,
        ",\"workers\":{{\"total\":{},\"active\":{},\"inactive\":{},\"terminated\":{},\"max\":{max_workers}",
        c.total, c.active, c.inactive, c.terminated
    );
    rows(&mut o, "workers", false);
    o.push_str("},\"frames\":{");
    let _ = write!(
        o,
        "\"rejected\":{},\"dropped\":{}",
        st.rejected_total(),
        st.dropped_total()
    );
    rows(&mut o, "frames", false);
    o.push_str(",\"rejected_by_reason\":");
    object(
        &mut o,
        RejectReason::ALL.map(|r| (r.as_str(), st.rejected(r))),
    );
    o.push_str(",\"dropped_by_reason\":");
    object(&mut o, DropReason::ALL.map(|r| (r.as_str(), st.dropped(r))));
    match udp_drops {
        Some(d) => {
            let _ = write!(o, "}},\"udp_kernel_drops\":{d}");
        }
        None => o.push_str("},\"udp_kernel_drops\":null"),
    }
    for group in ["connections", "access", "state", "tasks", "pool"] {
        let _ = write!(o, ",\"{group}\":{{");
        rows(&mut o, group, true);
        o.push('}');
    }
    o.push('}');
    o
}

fn object<const N: usize>(o: &mut String, pairs: [(&str, u64); N]) {
    o.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        let _ = write!(o, "{}\"{k}\":{v}", if i > 0 { "," } else { "" });
    }
    o.push('}');
}
