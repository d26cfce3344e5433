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
//!
//! `status` is `healthy`, or `degraded` with `reasons` when a worker reports
//! `error`, a worker is inactive, or frames were dropped (by musterd or the
//! kernel) or rejected within [`DEGRADED_WINDOW`], or since the previous
//! poll when that was longer ago. Degraded is still a 200: the daemon
//! serves, a load balancer must not take it out; monitors read `status`
//! (`muster health` exits 3).

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

/// Drops and rejections this recent make the daemon `degraded`.
pub const DEGRADED_WINDOW: Duration = Duration::from_secs(60);

/// Frames dropped by musterd, dropped by the kernel, rejected.
type Losses = [u64; 3];

/// The values and reasons a body was rendered from, and the body.
type Rendered = (Vec<u64>, Vec<String>, Arc<[u8]>);

pub struct Health {
    started: Instant,
    /// Inode of the heartbeat UDP socket, to find its kernel drop count.
    udp_inode: Option<u64>,
    udp_drops: Option<(Instant, Option<u64>)>,
    counts: Option<(u64, Counts)>,
    /// Readings of [`Losses`], one a second at most while polled, back to
    /// the newest one older than [`DEGRADED_WINDOW`].
    losses: std::collections::VecDeque<(Instant, Losses)>,
    /// The values the last body was rendered from, and the body.
    body: Option<Rendered>,
}

impl Health {
    pub fn new(started: Instant, udp_inode: Option<u64>) -> Health {
        Health {
            started,
            udp_inode,
            udp_drops: None,
            counts: None,
            losses: [(started, [0; 3])].into(),
            body: None,
        }
    }

    /// What was lost since the reference reading: the newest one older
    /// than the window, or the previous poll's when that is older.
    fn recent_losses(&mut self, now: Losses) -> Losses {
        let at = Instant::now();
        if self
            .losses
            .back()
            .is_none_or(|(t, _)| at.duration_since(*t) >= Duration::from_secs(1))
        {
            self.losses.push_back((at, now));
        }
        while self
            .losses
            .get(1)
            .is_some_and(|(t, _)| at.duration_since(*t) >= DEGRADED_WINDOW)
        {
            self.losses.pop_front();
        }
        let since = self.losses.front().map_or([0; 3], |(_, l)| *l);
        [0, 1, 2].map(|i| now[i].saturating_sub(since[i]))
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
        let lost = self.recent_losses([
            shared.stats.dropped_total(),
            drops.unwrap_or(0),
            shared.stats.rejected_total(),
        ]);
        let reasons = reasons(c, lost);
        if let Some((last, said, body)) = &self.body {
            if *last == values && *said == reasons {
                return body.clone();
            }
        }
        let body: Arc<[u8]> = render(shared, c, max_workers, drops, time, uptime, &reasons)
            .into_bytes()
            .into();
        self.body = Some((values, reasons, body.clone()));
        body
    }
}

/// Why the daemon is degraded; empty when it is healthy.
fn reasons(c: Counts, lost: Losses) -> Vec<String> {
    let window = DEGRADED_WINDOW.as_secs();
    let mut out = Vec::new();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if c.error > 0 {
        out.push(format!(
            "{} worker{} report error",
            c.error,
            plural(c.error)
        ));
    }
    if c.inactive > 0 {
        out.push(format!(
            "{} worker{} inactive",
            c.inactive,
            plural(c.inactive)
        ));
    }
    for (n, what) in [
        (lost[0], "dropped by musterd"),
        (lost[1], "dropped by the kernel"),
        (lost[2], "rejected"),
    ] {
        if n > 0 {
            let s = plural(n as usize);
            out.push(format!("{n} frame{s} {what} in the last {window} s"));
        }
    }
    out
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
    reasons: &[String],
) -> String {
    let st = &shared.stats;
    let mut o = String::with_capacity(1536);
    let status = if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    let reasons = serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into());
    let _ = write!(
        o,
        "{{\"status\":\"{status}\",\"reasons\":{reasons},\"time\":{time},\"uptime_seconds\":{uptime},\"version\":\"{VERSION}\""
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
        ",\"workers\":{{\"total\":{},\"active\":{},\"inactive\":{},\"terminated\":{},\"error\":{},\"max\":{max_workers}",
        c.total, c.active, c.inactive, c.terminated, c.error
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
    for group in ["connections", "access", "state", "tasks", "pool", "alerts"] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_reasons_name_each_cause() {
        let quiet = Counts {
            total: 3,
            active: 3,
            ..Counts::default()
        };
        assert!(reasons(quiet, [0; 3]).is_empty());
        let bad = Counts {
            total: 4,
            active: 3,
            inactive: 1,
            error: 2,
            ..Counts::default()
        };
        assert_eq!(
            reasons(bad, [0, 7, 1]),
            [
                "2 workers report error",
                "1 worker inactive",
                "7 frames dropped by the kernel in the last 60 s",
                "1 frame rejected in the last 60 s"
            ]
        );
    }

    #[test]
    fn losses_count_within_the_window_or_since_the_last_poll() {
        let long_ago = Instant::now() - Duration::from_secs(300);
        let mut h = Health::new(long_ago, None);
        // The first poll, five minutes after the start, sees everything
        // since the start: there was no earlier poll.
        assert_eq!(h.recent_losses([5, 0, 2]), [5, 0, 2]);
        // A second poll at once compares with the start still, as the
        // reading just taken is younger than the window.
        assert_eq!(h.recent_losses([6, 0, 2]), [6, 0, 2]);
        // Once the readings are older than the window, only what came
        // after the newest of them counts.
        h.losses = [
            (Instant::now() - Duration::from_secs(200), [5, 0, 2]),
            (Instant::now() - Duration::from_secs(61), [6, 0, 2]),
        ]
        .into();
        assert_eq!(h.recent_losses([6, 0, 2]), [0, 0, 0]);
        assert_eq!(h.losses.len(), 2, "the older reading let go");
        assert_eq!(h.recent_losses([9, 1, 2]), [3, 1, 0]);
    }
}
