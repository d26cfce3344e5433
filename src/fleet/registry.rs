//! The registry: worker id → handle (inbox + latest snapshot), and the
//! worker threads behind the handles.
//!
//! The map is behind an `RwLock` held only for lookups, inserts and removals,
//! never while a snapshot is serialised or a frame applied. A new worker gets
//! its thread here, after the `max_workers` check; a thread that cannot be
//! spawned is a refusal, counted, never a panic.
//!
//! New UDP workers start on probation: while `max_workers` is reached, one
//! that has sent a single frame and nothing for `heartbeat_interval` is
//! evicted to make room, oldest first, so that ids spoofed one datagram
//! each cannot lock real workers out. A second frame ends the probation.
//!
//! When none is on probation, a worker that is not live (inactive,
//! terminated, or restored and not heard from since) makes room for a live
//! newcomer, the longest silent first: a registry full of the dead must not
//! refuse the living. A newcomer is live once it said hello over TCP, or
//! sent a second frame over UDP (its first is refused and remembered in a
//! bounded list), so one datagram per spoofed id cannot push out a worker's
//! history. A live worker is never displaced. The candidates are listed by
//! the sweeper as it finds them not live ([`Registry::note_not_live`]) and
//! by a restore, so making room costs no scan of the fleet.
//!
//! The registry does not decide when a worker is silent or old (the
//! sweeper does) and does not apply frames (the worker's thread does).
//!
//! In cluster mode it also keeps the other nodes' workers, as the database
//! last had them ([`Registry::set_remote`]): no thread, no inbox, only
//! their snapshots, shown beside this node's by [`Registry::fleet`].

use super::Shared;
use super::inbox;
use super::snapshot::{Snapshot, Transport};
use super::worker::{self, Handle, STACK_BYTES, Series};
use crate::logging::RateLimit;
use crate::proto::{RejectReason, Status, WorkerId};
use crate::stats::Counter;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Entry {
    handle: Arc<Handle>,
    /// `None` once [`Registry::finish`] has taken it to wait for it.
    thread: Option<JoinHandle<()>>,
}

/// Counts of workers by what the daemon judges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub active: usize,
    pub inactive: usize,
    pub terminated: usize,
    /// Active workers whose last report says `error`.
    pub error: usize,
    /// By the status each is shown with, in [`Status::ALL`]'s order.
    pub by_status: [usize; Status::ALL.len()],
}

impl Counts {
    /// Count one worker by the state the daemon judges.
    pub fn add(&mut self, s: &Snapshot) {
        self.total += 1;
        self.by_status[s.status() as usize] += 1;
        if s.terminated {
            self.terminated += 1;
        } else if s.inactive {
            self.inactive += 1;
        } else {
            self.active += 1;
            self.error += usize::from(s.reported == Some(crate::proto::Reported::Error));
        }
    }
}

pub struct Registry {
    workers: RwLock<HashMap<WorkerId, Entry>>,
    /// UDP workers in the order they came, for probation; taken under the
    /// map's write lock.
    probation: Mutex<VecDeque<WorkerId>>,
    /// Workers that are not live, the longest silent first: who may make
    /// room while full. Taken under the map's write lock.
    displaceable: Mutex<VecDeque<WorkerId>>,
    /// UDP newcomers refused while full, remembered so that a second frame
    /// finds them live.
    knocked: Mutex<Knocked>,
    /// Workers started since the sweeper last looked, while it looks
    /// ([`Registry::take_started`]): it learns of each worker once, not by
    /// a pass over the map.
    started: Mutex<Option<Vec<WorkerId>>>,
    /// For the threads it starts, and the `max_workers` in force.
    shared: Arc<Shared>,
    log_limit: RateLimit,
    /// In cluster mode, this node's id, which its workers' snapshots carry.
    node: OnceLock<Arc<str>>,
    /// Other nodes' workers, by id.
    remote: RwLock<HashMap<WorkerId, Arc<Snapshot>>>,
}

/// Which of two snapshots of one worker the fleet shows: this node's while
/// it is active here or was heard from here last.
fn local_wins(local: &Snapshot, remote: &Snapshot) -> bool {
    local.is_active() || local.last_update >= remote.last_update
}

impl Registry {
    pub fn new(shared: Arc<Shared>) -> Registry {
        Registry {
            workers: RwLock::new(HashMap::new()),
            probation: Mutex::new(VecDeque::new()),
            displaceable: Mutex::new(VecDeque::new()),
            knocked: Mutex::new(Knocked::default()),
            started: Mutex::new(None),
            shared,
            log_limit: RateLimit::new(Duration::from_secs(10)),
            node: OnceLock::new(),
            remote: RwLock::new(HashMap::new()),
        }
    }

    /// Cluster mode: this node's id, carried by every worker started after.
    pub fn set_node(&self, node: &str) {
        let _ = self.node.set(Arc::from(node));
    }

    pub fn node(&self) -> Option<&str> {
        self.node.get().map(|n| &**n)
    }

    fn remote_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<WorkerId, Arc<Snapshot>>> {
        self.remote.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Other nodes' workers as the database has them now: `changed` replace
    /// what was known of them, `gone` are forgotten. Each change the fleet
    /// shows goes to the change feed.
    pub fn set_remote(&self, changed: Vec<Arc<Snapshot>>, gone: Vec<WorkerId>) {
        if changed.is_empty() && gone.is_empty() {
            return;
        }
        {
            let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
            for s in &changed {
                remote.insert(s.id.clone(), s.clone());
            }
            for id in &gone {
                remote.remove(id);
            }
        }
        for s in changed {
            let shadowed = self
                .handle(&s.id)
                .map(|h| h.snapshot())
                .is_some_and(|l| l.is_shown() && local_wins(&l, &s));
            if !shadowed {
                self.shared.changes.changed(&s);
            }
        }
        for id in gone {
            if self.snapshot(&id).is_none() {
                self.shared.changes.removed(&id);
            }
        }
    }

    /// Every shown worker of the fleet, sorted by id: this node's and, in
    /// cluster mode, the other nodes' (a worker known to both is shown as
    /// [`local_wins`] says).
    pub fn fleet(&self) -> Vec<Arc<Snapshot>> {
        let mut snaps = self.fleet_unsorted();
        snaps.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        snaps
    }

    /// [`Self::fleet`] in no order, for what needs none (the summary
    /// stream, the counts): sorting 95,000 ids costs more than the pass.
    pub fn fleet_unsorted(&self) -> Vec<Arc<Snapshot>> {
        let mut snaps = self.shown_unsorted();
        let remote = self.remote_map();
        if remote.is_empty() {
            return snaps;
        }
        let mut at: HashMap<&str, usize> = HashMap::with_capacity(snaps.len());
        for (i, s) in snaps.iter().enumerate() {
            at.insert(&s.id, i);
        }
        let mut replace = Vec::new();
        let mut add = Vec::new();
        for (id, r) in remote.iter() {
            match at.get(&**id) {
                Some(&i) if !local_wins(&snaps[i], r) => replace.push((i, r.clone())),
                Some(_) => {}
                None => add.push(r.clone()),
            }
        }
        drop(at);
        drop(remote);
        for (i, r) in replace {
            snaps[i] = r;
        }
        snaps.extend(add);
        snaps
    }

    /// One worker of the fleet, wherever it is ([`Self::fleet`]'s rule).
    pub fn fleet_snapshot(&self, id: &str) -> Option<Arc<Snapshot>> {
        let local = self.snapshot(id);
        let remote = self.remote_map().get(id).cloned();
        match (local, remote) {
            (Some(l), Some(r)) if !local_wins(&l, &r) => Some(r),
            (Some(l), _) => Some(l),
            (None, r) => r,
        }
    }

    /// The fleet's workers by state ([`Self::fleet`]).
    pub fn fleet_counts(&self) -> Counts {
        if self.remote_map().is_empty() {
            return self.counts();
        }
        let mut c = Counts::default();
        for s in self.fleet_unsorted() {
            c.add(&s);
        }
        c
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<WorkerId, Entry>> {
        self.workers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<WorkerId, Entry>> {
        self.workers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle of `id`, also while its first frame is still on its way
    /// to its thread (for those who deliver to it).
    pub fn handle(&self, id: &str) -> Option<Arc<Handle>> {
        self.read().get(id).map(|e| e.handle.clone())
    }

    /// When a local worker was last heard, quiet beats its thread has not
    /// applied yet included ([`super::inbox`]); `None` for a worker not
    /// here or never heard.
    pub fn heard(&self, s: &Snapshot) -> Option<Instant> {
        let h = self.handle(&s.id)?.inbox.heard()?;
        Some(h.max(s.last_seen))
    }

    /// The handle of `id` once the worker can be shown: its first frame
    /// applied, or restored. Readers use this, so that a worker never
    /// reads as an empty `created` one in the moment between its first
    /// datagram and its thread applying it.
    pub fn shown(&self, id: &str) -> Option<Arc<Handle>> {
        self.handle(id).filter(|h| h.snapshot().is_shown())
    }

    /// The handle of `id`, creating the worker (and its thread) if it is new.
    pub fn route(&self, id: &WorkerId, transport: Transport) -> Result<Arc<Handle>, RejectReason> {
        if let Some(h) = self.handle(id) {
            return Ok(h);
        }
        let mut map = self.write();
        if let Some(e) = map.get(id) {
            return Ok(e.handle.clone());
        }
        let cfg = self.shared.config.get();
        let max = cfg.fleet.max_workers;
        let mut probation = self.probation.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= max
            && !self.evict_on_probation(&mut map, &mut probation, cfg.fleet.heartbeat_interval)
            && !self.displace_for(id, transport, &mut map)
        {
            self.log_limit.warn("worker_cap", || {
                format!("max_workers={max} reached: refusing new worker id={id}")
            });
            return Err(RejectReason::WorkerCap);
        }
        let first = Snapshot::new(id.clone(), transport, Instant::now());
        let handle = self.start(&mut map, first, Series::default())?;
        if transport == Transport::Udp {
            probation.push_back(id.clone());
            // Forgotten workers leave their ids behind: when those could
            // outnumber the fleet, keep only the ones still on probation.
            // Bounded by twice the fleet, and O(1) a worker amortised.
            if probation.len() > 2 * map.len() + 64 {
                probation.retain(|id| map.get(id).is_some_and(|e| on_probation(&e.handle)));
            }
        }
        drop(probation);
        drop(map);
        self.shared.changes.bump();
        log::debug!("new worker id={id} transport={transport:?}");
        Ok(handle)
    }

    /// Make room by evicting the oldest worker still on probation, if it
    /// has been silent for `interval` since its one frame. Workers that
    /// sent more, or are gone, leave the queue as they are met.
    fn evict_on_probation(
        &self,
        map: &mut HashMap<WorkerId, Entry>,
        probation: &mut VecDeque<WorkerId>,
        interval: Duration,
    ) -> bool {
        while let Some(id) = probation.front().cloned() {
            let Some(e) = map.get(&id) else {
                probation.pop_front();
                continue;
            };
            if !on_probation(&e.handle) {
                probation.pop_front();
                continue;
            }
            if e.handle.snapshot().last_seen.elapsed() < interval {
                // The oldest on probation is still young; so are the rest.
                return false;
            }
            probation.pop_front();
            if let Some(entry) = map.remove(&id) {
                entry.handle.stop();
                self.shared.changes.removed(&id);
                self.shared.stats.incr(Counter::WorkersProbationEvicted);
                self.log_limit.warn("probation_evicted", || {
                    format!(
                        "max_workers reached: evicted worker id={id}, one frame and silent since"
                    )
                });
            }
            return true;
        }
        false
    }

    /// Make room for `id` by forgetting the longest silent worker that is
    /// not live, if `id` is live itself: a TCP hello, or a UDP worker's
    /// second frame (the first is remembered and refused).
    fn displace_for(
        &self,
        id: &WorkerId,
        transport: Transport,
        map: &mut HashMap<WorkerId, Entry>,
    ) -> bool {
        if transport == Transport::Udp {
            let mut knocked = self.knocked.lock().unwrap_or_else(|p| p.into_inner());
            if !knocked.take(id) {
                knocked.note(id.clone());
                return false;
            }
        }
        let mut list = self.displaceable.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(victim) = list.pop_front() {
            let Some(e) = map.get(&victim) else { continue };
            if is_live(&e.handle.snapshot()) {
                continue;
            }
            if let Some(entry) = map.remove(&victim) {
                entry.handle.stop();
                self.shared.changes.removed(&victim);
                self.shared.stats.incr(Counter::WorkersDisplaced);
                self.log_limit.warn("displaced", || {
                    format!("max_workers reached: forgot worker id={victim}, not live, to make room for id={id}")
                });
                return true;
            }
        }
        false
    }

    /// The workers that may make room while full, the longest silent
    /// first: the sweeper's list from its pass over the fleet.
    pub fn set_displaceable(&self, ids: VecDeque<WorkerId>) {
        *self.displaceable.lock().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    /// The sweeper found `id` not live: it may make room, after those
    /// found before it. A worker found live again stays listed until
    /// making room meets it and passes it by; once the list holds twice
    /// the fleet, it keeps only the ids still there and not live, once each.
    pub fn note_not_live(&self, id: WorkerId) {
        let map = self.read();
        let mut list = self.displaceable.lock().unwrap_or_else(|p| p.into_inner());
        list.push_back(id);
        if list.len() > 2 * map.len().max(512) {
            let mut seen = std::collections::HashSet::new();
            list.retain(|id| {
                map.get(id).is_some_and(|e| !is_live(&e.handle.snapshot()))
                    && seen.insert(id.clone())
            });
        }
    }

    /// The workers started since the last call (all of them at the first),
    /// for the sweeper; from then on each start is kept for it.
    pub fn take_started(&self) -> Vec<WorkerId> {
        if let Some(list) = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            return std::mem::take(list);
        }
        // The map first, as a start takes them: one meanwhile waits for
        // the map, and is then listed.
        let map = self.read();
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
        map.keys().cloned().collect()
    }

    /// Start a worker's thread from `first` and put it in the map.
    fn start(
        &self,
        map: &mut HashMap<WorkerId, Entry>,
        first: Snapshot,
        series: Series,
    ) -> Result<Arc<Handle>, RejectReason> {
        let id = first.id.clone();
        let mut first = first;
        first.node = self.node.get().cloned();
        let (tx, rx) = inbox::inbox();
        let handle = Arc::new(Handle::with(tx, first, series));
        let (h, shared) = (handle.clone(), self.shared.clone());
        let spawned = std::thread::Builder::new()
            .name(thread_name(&id))
            .stack_size(STACK_BYTES)
            .spawn(move || {
                shared.stats.incr(Counter::WorkerThreads);
                worker::run(h, rx, shared.clone(), shared.clone());
                shared.stats.decr(Counter::WorkerThreads);
            });
        match spawned {
            Ok(thread) => {
                if let Some(list) = self
                    .started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                {
                    list.push(id.clone());
                }
                map.insert(
                    id,
                    Entry {
                        handle: handle.clone(),
                        thread: Some(thread),
                    },
                );
                Ok(handle)
            }
            Err(e) => {
                self.log_limit.warn("spawn_failed", || {
                    format!("cannot start a thread for worker id={id}: {e}")
                });
                Err(RejectReason::WorkerCap)
            }
        }
    }

    /// Bring back workers saved by an earlier run, before any frame
    /// arrives. Returns how many came back (at most `max_workers`).
    pub fn restore(&self, mut workers: Vec<(Snapshot, Series)>) -> usize {
        let max = self.shared.config.get().fleet.max_workers;
        // Restored workers are not live until heard from: the longest
        // silent of them may make room first.
        workers.sort_by_key(|(s, _)| s.last_seen);
        let mut map = self.write();
        let mut displaceable = VecDeque::new();
        for (snap, series) in workers {
            if map.len() >= max || map.contains_key(&snap.id) {
                continue;
            }
            let id = snap.id.clone();
            if self.start(&mut map, snap, series).is_err() {
                break;
            }
            displaceable.push_back(id);
        }
        let n = map.len();
        drop(map);
        self.set_displaceable(displaceable);
        self.shared.changes.bump();
        n
    }

    /// The snapshot of `id`, once it can be shown ([`Self::shown`]).
    pub fn snapshot(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.handle(id)
            .map(|h| h.snapshot())
            .filter(|s| s.is_shown())
    }

    /// Every shown worker's snapshot, sorted by id. O(n) clones of `Arc`s
    /// under the read lock, then the sort outside it.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        let mut snaps = self.shown_unsorted();
        snaps.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        snaps
    }

    /// Every shown worker's snapshot, in no order.
    pub fn shown_unsorted(&self) -> Vec<Arc<Snapshot>> {
        let handles: Vec<Arc<Handle>> = self.read().values().map(|e| e.handle.clone()).collect();
        handles
            .iter()
            .map(|h| h.snapshot())
            .filter(|s| s.is_shown())
            .collect()
    }

    pub fn handles(&self) -> Vec<Arc<Handle>> {
        self.read().values().map(|e| e.handle.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Every worker's id.
    pub fn ids(&self) -> Vec<WorkerId> {
        self.read().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shown workers by state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for h in self.handles() {
            let s = h.snapshot();
            if s.is_shown() {
                c.add(&s);
            }
        }
        c
    }

    /// Remove a worker and end its thread without waiting for it.
    /// Returns whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        let Some(entry) = self.write().remove(id) else {
            return false;
        };
        entry.handle.stop();
        // The thread ends on its own; its JoinHandle is dropped (detached).
        drop(entry.thread);
        self.shared.changes.removed(&WorkerId::from(id));
        true
    }

    /// Stop every worker thread and wait for them, at most until `deadline`.
    /// Returns how many did not end in time.
    pub fn shutdown(&self, deadline: Instant) -> usize {
        let entries: Vec<Entry> = self.write().drain().map(|(_, e)| e).collect();
        for e in &entries {
            e.handle.stop();
        }
        Self::join(
            entries.into_iter().filter_map(|e| e.thread).collect(),
            deadline,
        )
    }

    /// Let every worker thread apply what its inbox holds, then end, and
    /// wait for them, at most until `deadline` (then they are stopped).
    /// The workers stay in the map, so their final state can be saved.
    /// Call when nothing feeds the inboxes any more. Returns how many did
    /// not end in time.
    pub fn finish(&self, deadline: Instant) -> usize {
        let handles = self.handles();
        for h in &handles {
            h.finish(deadline);
        }
        let threads: Vec<JoinHandle<()>> = self
            .write()
            .values_mut()
            .filter_map(|e| e.thread.take())
            .collect();
        let late = Self::join(threads, deadline);
        for h in &handles {
            h.stop();
        }
        late
    }

    fn join(threads: Vec<JoinHandle<()>>, deadline: Instant) -> usize {
        let mut late = 0;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                late += 1;
            }
        }
        late
    }
}

/// Whether a worker is live: judged active and heard from since any
/// restore. Only workers that are not live make room for newcomers.
pub fn is_live(s: &Snapshot) -> bool {
    s.is_active() && !s.restored
}

/// UDP newcomers refused while the registry was full, the newest
/// [`KNOCKED`] of them: a second frame from one finds it live.
#[derive(Default)]
struct Knocked {
    ids: std::collections::HashSet<WorkerId>,
    order: VecDeque<WorkerId>,
}

/// Refused newcomers remembered at most.
const KNOCKED: usize = 4096;

impl Knocked {
    fn note(&mut self, id: WorkerId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > KNOCKED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Whether `id` knocked before; it is forgotten either way.
    fn take(&mut self, id: &WorkerId) -> bool {
        if !self.ids.remove(id) {
            return false;
        }
        self.order.retain(|x| x != id);
        true
    }
}

/// Whether a worker is still on probation: over UDP, one frame at most.
fn on_probation(h: &Handle) -> bool {
    let s = h.snapshot();
    s.transport == Transport::Udp && s.messages_processed <= 1 && !s.restored
}

/// Linux thread names are at most 15 bytes; ids are ASCII, so byte cuts are
/// character cuts.
fn thread_name(id: &str) -> String {
    id[..id.len().min(15)].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::inbox::Msg;
    use crate::proto::decode;

    fn registry(max: usize) -> Registry {
        let mut cfg = config::defaults();
        cfg.fleet.max_workers = max;
        Registry::new(Arc::new(Shared::new(cfg)))
    }

    /// Hand a frame to a worker's inbox, as ingest does.
    fn deliver(h: &Handle, frame: &[u8]) {
        let f = decode(frame, 1024).unwrap();
        h.inbox
            .try_send(Msg::frame(f, Transport::Udp, Instant::now()))
            .unwrap_or_else(|_| panic!("room"));
    }

    fn wait_for(mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Workers that come and go keep nothing behind: the ids remembered
    /// for probation stay within twice the fleet, however many came.
    #[test]
    fn forgotten_workers_leave_no_probation_ids_behind() {
        let r = registry(10_000);
        for i in 0..3_000 {
            let id: WorkerId = format!("w_{i}").into();
            r.route(&id, Transport::Udp).unwrap();
            assert!(r.remove(&id));
            let kept = r.probation.lock().unwrap().len();
            assert!(kept <= 2 * (r.len() + 1) + 64, "{kept} ids kept after {i}");
        }
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn routes_caps_and_removes() {
        let r = registry(2);
        let a: WorkerId = "a".into();
        let h = r.route(&a, Transport::Udp).unwrap();
        assert!(Arc::ptr_eq(&h, &r.route(&a, Transport::Udp).unwrap()));
        r.route(&"b".into(), Transport::Udp).unwrap();
        assert_eq!(
            r.route(&"c".into(), Transport::Udp).err(),
            Some(RejectReason::WorkerCap)
        );
        wait_for(|| r.shared.stats.get(Counter::WorkerThreads) == 2);

        deliver(&h, br#"{"type":"heartbeat","worker_id":"a","cpu_usage":3}"#);
        wait_for(|| r.snapshot("a").is_some_and(|s| s.cpu_usage == Some(3.0)));
        assert_eq!(r.shared.stats.get(Counter::FramesApplied), 1);

        assert!(r.remove("a"));
        assert!(!r.remove("a"));
        wait_for(|| r.shared.stats.get(Counter::WorkerThreads) == 1);
        assert!(r.route(&"c".into(), Transport::Udp).is_ok(), "room again");
        assert_eq!(r.shutdown(Instant::now() + Duration::from_secs(5)), 0);
        assert_eq!(r.shared.stats.get(Counter::WorkerThreads), 0);
        assert!(r.is_empty());
    }

    /// Route worker `id` and have its thread apply one heartbeat.
    fn beat(r: &Registry, id: &str) {
        let h = r.route(&id.into(), Transport::Udp).unwrap();
        deliver(
            &h,
            format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#).as_bytes(),
        );
        wait_for(|| r.snapshot(id).is_some());
    }

    #[test]
    fn snapshots_are_sorted() {
        let r = registry(10);
        for id in ["c", "a", "b"] {
            beat(&r, id);
        }
        let ids: Vec<String> = r.snapshots().iter().map(|s| s.id.to_string()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(r.counts().total, 3);
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn a_worker_is_shown_once_its_first_frame_is_applied() {
        let r = registry(10);
        let h = r.route(&"n".into(), Transport::Udp).unwrap();
        assert!(r.snapshot("n").is_none() && r.shown("n").is_none());
        assert!(r.snapshots().is_empty() && r.counts().total == 0);
        assert!(r.handle("n").is_some(), "deliverable meanwhile");
        deliver(
            &h,
            br#"{"type":"heartbeat","worker_id":"n","queue_depth":4}"#,
        );
        wait_for(|| r.snapshot("n").is_some());
        assert_eq!(
            r.snapshot("n").unwrap().queue_depth,
            4,
            "first seen with its fields"
        );
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    /// Welcomed is shown: a TCP worker exists from its hello on.
    #[test]
    fn a_worker_that_said_hello_is_shown_at_once() {
        let r = registry(10);
        r.route(&"t".into(), Transport::Tcp).unwrap();
        let s = r
            .snapshot("t")
            .expect("shown before its thread applied anything");
        assert_eq!(s.status(), crate::proto::Status::Created);
        assert_eq!(r.counts().total, 1);
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn a_full_registry_of_the_silent_makes_room_for_the_live() {
        let r = registry(2);
        beat(&r, "old");
        beat(&r, "live");
        // `old` goes inactive; `live` keeps beating.
        let h = r.handle("old").unwrap();
        let _ = h.inbox.try_send(Msg::Sweep { timeout_ms: 0 });
        wait_for(|| r.snapshot("old").is_some_and(|s| !s.is_active()));
        let mut sweeper = crate::fleet::sweeper::Sweeper::default();
        let grace = Err(Instant::now() + Duration::from_secs(60));
        sweeper.tick(&r, &r.shared, Instant::now(), grace);
        // A UDP newcomer's first frame is refused and remembered; its
        // second finds it live, and the inactive worker makes room.
        let new: WorkerId = "new".into();
        assert_eq!(
            r.route(&new, Transport::Udp).err(),
            Some(RejectReason::WorkerCap)
        );
        assert!(r.route(&new, Transport::Udp).is_ok());
        assert!(r.handle("old").is_none() && r.handle("live").is_some());
        assert_eq!(r.shared.stats.get(Counter::WorkersDisplaced), 1);
        // Only live workers left: a TCP hello is refused, never makes room.
        beat(&r, "new");
        sweeper.tick(&r, &r.shared, Instant::now(), grace);
        r.set_displaceable(["live".into(), "new".into()].into());
        assert_eq!(
            r.route(&"tcp".into(), Transport::Tcp).err(),
            Some(RejectReason::WorkerCap)
        );
        assert!(r.handle("live").is_some() && r.handle("new").is_some());
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn thread_names_fit_the_kernel() {
        assert_eq!(thread_name("short"), "short");
        assert_eq!(thread_name(&"x".repeat(128)).len(), 15);
    }
}
