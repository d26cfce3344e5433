//! The audit log: who changed what, when, from where, and the answer.
//!
//! Every change made through the API is recorded (the task submissions
//! excepted: a task keeps its own `submitted_by`, so the record of a
//! submission is the task). An entry names the actor (a token's name, or
//! `loopback`), its role, the peer's address, the action, its target, a
//! short detail (a bulk action's filter, a scale's count), and the status
//! answered. It never holds a token: the actor is the token's name.
//!
//! Where it is kept:
//! - **single node**: appended as JSON lines to `audit.log` in
//!   `state_dir` (one `write` per entry, as the change is answered), and
//!   read back at start; without a `state_dir`, in memory only.
//! - **cluster mode**: in the database (`muster_audit`). The HTTP thread
//!   hands each entry to the `audit` thread, which inserts what has
//!   gathered in one statement and then reads every node's rows written
//!   since its last look (at least every second), so every node serves
//!   the whole cluster's log.
//!
//! Both are bounded by `audit_retention`: older entries leave memory on
//! the HTTP loop's tick, the file is rewritten without them once it holds
//! twice what is kept, and the leader deletes them from the database each
//! minute. At most [`KEPT`] entries are held in memory for
//! `GET /api/audit`. Each entry is also logged at notice level (`audit:`
//! lines), for journald.

use crate::clock::unix_ms;
use crate::cluster::Cluster;
use crate::fleet::Shared;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Entries kept in memory at most.
pub const KEPT: usize = 100_000;
/// The file's name in `state_dir`.
pub const FILE: &str = "audit.log";
/// The longest detail kept, in bytes of JSON.
const MAX_DETAIL: usize = 2048;

/// One change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Increasing: this node's count, or the database's row id.
    pub id: u64,
    /// Unix ms.
    pub at: u64,
    /// The node that took the change (cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub actor: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub peer: Option<String>,
    pub action: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    pub status: u16,
}

/// A request body as an entry's detail: JSON of at most [`MAX_DETAIL`]
/// bytes, else nothing.
pub fn detail(body: &[u8]) -> Option<Value> {
    if body.is_empty() || body.len() > MAX_DETAIL {
        return None;
    }
    serde_json::from_slice(body).ok()
}

struct Inner {
    entries: VecDeque<Entry>,
    next_id: u64,
    file: Option<File>,
    /// Lines in the file, for when to rewrite it.
    lines: usize,
}

impl Inner {
    fn empty() -> Inner {
        Inner {
            entries: VecDeque::new(),
            next_id: 1,
            file: None,
            lines: 0,
        }
    }
}

pub struct Audit {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
    /// To the `audit` thread, in cluster mode.
    to_db: Option<Mutex<Sender<Entry>>>,
    node: Option<String>,
}

/// The `audit` thread of cluster mode; [`Writer::stop`] ends it, once
/// what it was handed is in the database (or could not be).
pub struct Writer {
    thread: JoinHandle<()>,
    stopping: Arc<AtomicBool>,
}

impl Writer {
    pub fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

impl Audit {
    /// The audit log of a single node: in `dir` when there is one.
    pub fn open(dir: Option<&Path>, retention: Duration) -> Audit {
        let mut inner = Inner::empty();
        let path = dir.map(|d| d.join(FILE));
        if let Some(p) = &path {
            let (entries, lines) = read(p, unix_ms().saturating_sub(ms(retention)));
            inner.next_id = entries.back().map_or(1, |e| e.id + 1);
            inner.entries = entries;
            inner.lines = lines;
            match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => inner.file = Some(f),
                Err(e) => log::warn!(
                    "cannot open {} ({e}): the audit log is kept in memory only",
                    p.display()
                ),
            }
        }
        Audit {
            inner: Mutex::new(inner),
            path,
            to_db: None,
            node: None,
        }
    }

    /// The audit log of a cluster node: in the database, through the
    /// `audit` thread.
    pub fn clustered(
        cluster: Arc<Cluster>,
        shared: Arc<Shared>,
    ) -> std::io::Result<(Arc<Audit>, Writer)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let audit = Arc::new(Audit {
            inner: Mutex::new(Inner::empty()),
            path: None,
            to_db: Some(Mutex::new(tx)),
            node: Some(cluster.node_id().to_string()),
        });
        let (a, stopping) = (audit.clone(), Arc::new(AtomicBool::new(false)));
        let st = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || mirror(&cluster, &shared, &a, &rx, &st))?;
        Ok((audit, Writer { thread, stopping }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a change; `entry.id` and `entry.node` are filled in here.
    pub fn record(&self, mut entry: Entry) {
        entry.node = self.node.clone();
        log::info!(
            "audit: {} ({}) {} {} from {}: {}",
            entry.actor,
            entry.role.as_deref().unwrap_or("no role"),
            entry.action,
            entry.target.as_deref().unwrap_or("-"),
            entry.peer.as_deref().unwrap_or("?"),
            entry.status
        );
        if let Some(tx) = &self.to_db {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            if tx.send(entry).is_err() {
                log::warn!("audit: the audit thread is gone; an entry is in the log only");
            }
            return;
        }
        let mut inner = self.lock();
        entry.id = inner.next_id;
        inner.next_id += 1;
        if let Some(f) = &mut inner.file {
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                log::warn!("audit: cannot append to {FILE} ({e}); the entry is in memory");
            }
            inner.lines += 1;
        }
        push(&mut inner.entries, entry);
    }

    /// Entries newest first: those before `before` (an id), at most
    /// `limit`, that `keep` accepts.
    pub fn list(
        &self,
        before: Option<u64>,
        limit: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<Entry> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .rev()
            .filter(|e| before.is_none_or(|b| e.id < b))
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop what is older than `retention`; rewrite the file once it
    /// holds twice what is kept (and at least a thousand lines).
    pub fn prune(&self, retention: Duration) {
        let cut = unix_ms().saturating_sub(ms(retention));
        let mut inner = self.lock();
        while inner.entries.front().is_some_and(|e| e.at < cut) {
            inner.entries.pop_front();
        }
        let (Some(path), true) = (
            &self.path,
            inner.lines >= 1000 && inner.lines > 2 * inner.entries.len(),
        ) else {
            return;
        };
        match rewrite(path, &inner.entries) {
            Ok(f) => {
                inner.file = Some(f);
                inner.lines = inner.entries.len();
            }
            Err(e) => {
                log::warn!("audit: cannot rewrite {} ({e})", path.display());
                // Not again at every tick.
                inner.lines = 2 * inner.entries.len().max(1000);
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn push(entries: &mut VecDeque<Entry>, e: Entry) {
    if entries.len() >= KEPT {
        entries.pop_front();
    }
    entries.push_back(e);
}

/// The file's entries from `cut` on, and how many lines it has. A line
/// that does not read (a torn last write) is skipped and counted.
fn read(path: &Path, cut: u64) -> (VecDeque<Entry>, usize) {
    let mut entries = VecDeque::new();
    let Ok(f) = File::open(path) else {
        return (entries, 0);
    };
    let (mut lines, mut bad) = (0, 0);
    for line in BufReader::new(f).split(b'\n') {
        let Ok(line) = line else { break };
        lines += 1;
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) if e.at >= cut => push(&mut entries, e),
            Ok(_) => {}
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        log::warn!(
            "audit: {bad} unreadable lines in {} skipped",
            path.display()
        );
    }
    (entries, lines)
}

/// Write `entries` to a new file and put it in the old one's place.
fn rewrite(path: &Path, entries: &VecDeque<Entry>) -> std::io::Result<File> {
    let tmp = path.with_extension("log.tmp");
    let mut f = File::create(&tmp)?;
    let mut out = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut out, e)?;
        out.push(b'\n');
    }
    f.write_all(&out)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

/// Rows a statement inserts at most.
const BATCH: usize = 500;
const LOOK: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The `audit` thread: insert this node's entries, read every node's.
fn mirror(
    cluster: &Cluster,
    shared: &Shared,
    audit: &Audit,
    rx: &Receiver<Entry>,
    stopping: &AtomicBool,
) {
    let mut link = cluster.link("audit");
    let mut waiting: Vec<Entry> = Vec::new();
    let mut last_id: i64 = 0;
    let mut first = true;
    let mut last_prune: Option<Instant> = None;
    loop {
        // Stopping: the HTTP loop has ended, so what it handed over is
        // all there is; it goes in if it can.
        if stopping.load(Ordering::Acquire) {
            waiting.extend(rx.try_iter());
            if let Ok(c) = link.get()
                && let Err(e) = insert(c, &waiting)
            {
                log::warn!("audit: {} entries not written at stop: {e}", waiting.len());
            }
            return;
        }
        match rx.recv_timeout(LOOK) {
            Ok(e) => {
                waiting.push(e);
                waiting.extend(rx.try_iter().take(BATCH * 4));
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Not while the thread holds the Audit, whose sender it is.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(LOOK),
        }
        let Ok(c) = link.get() else {
            if waiting.len() > KEPT {
                let over = waiting.len() - KEPT;
                waiting.drain(..over);
                log::warn!("audit: the database is out of reach; {over} entries dropped");
            }
            continue;
        };
        if !waiting.is_empty() {
            match insert(c, &waiting) {
                Ok(()) => waiting.clear(),
                Err(e) => {
                    let d = link.failed(&e);
                    log::warn!("audit: cannot write to the database ({d}); trying again");
                    continue;
                }
            }
        }
        let Ok(c) = link.get() else { continue };
        let retention = shared.config.get().http.audit_retention;
        match since(c, last_id, first.then_some(retention)) {
            Ok(rows) => {
                first = false;
                let mut inner = audit.lock();
                for (id, mut e) in rows {
                    last_id = last_id.max(id);
                    e.id = id as u64;
                    push(&mut inner.entries, e);
                }
            }
            Err(e) => {
                let d = link.failed(&e);
                log::warn!("audit: cannot read the cluster's audit log ({d})");
                continue;
            }
        }
        if cluster.leading().is_some() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let cut = unix_ms().saturating_sub(ms(retention)) as i64;
            if let Ok(c) = link.get()
                && let Err(e) = c.execute("DELETE FROM muster_audit WHERE at < $1", &[&cut])
            {
                let d = link.failed(&e);
                log::warn!("audit: cannot prune the audit log ({d})");
            }
        }
    }
}

fn insert(c: &mut postgres::Client, entries: &[Entry]) -> Result<(), postgres::Error> {
    for chunk in entries.chunks(BATCH) {
        let ats: Vec<i64> = chunk.iter().map(|e| e.at as i64).collect();
        let bodies: Vec<String> = chunk
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        c.execute(
            "INSERT INTO muster_audit (at, entry) \
             SELECT at, entry::jsonb FROM unnest($1::bigint[], $2::text[]) AS r (at, entry)",
            &[&ats, &bodies],
        )?;
    }
    Ok(())
}

/// Rows after `last_id`; on the first look, only those within `retention`
/// (and at most [`KEPT`] of them, the newest).
fn since(
    c: &mut postgres::Client,
    last_id: i64,
    first: Option<Duration>,
) -> Result<Vec<(i64, Entry)>, postgres::Error> {
    let rows = match first {
        Some(retention) => {
            let cut = unix_ms().saturating_sub(ms(retention)) as i64;
            c.query(
                "SELECT id, entry::text FROM (SELECT id, entry FROM muster_audit WHERE at >= $1 \
                 ORDER BY id DESC LIMIT $2) r ORDER BY id",
                &[&cut, &(KEPT as i64)],
            )?
        }
        None => c.query(
            "SELECT id, entry::text FROM muster_audit WHERE id > $1 ORDER BY id LIMIT 10000",
            &[&last_id],
        )?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let id: i64 = r.get(0);
            let v: &str = r.get(1);
            serde_json::from_str::<Entry>(v).ok().map(|e| (id, e))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, action: &str) -> Entry {
        Entry {
            id: 0,
            at,
            node: None,
            actor: "oncall".into(),
            role: Some("operate".into()),
            peer: Some("10.0.0.2".into()),
            action: action.into(),
            target: Some("0000000000000001".into()),
            detail: None,
            status: 200,
        }
    }

    #[test]
    fn kept_across_a_restart_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86400);
        let a = Audit::open(Some(dir.path()), day);
        let now = unix_ms();
        a.record(entry(now - 2 * 86_400_000, "task.cancel"));
        a.record(entry(now, "queue.pause"));
        a.record(entry(now, "queue.resume"));
        let ids: Vec<u64> = a.list(None, 10, |_| true).iter().map(|e| e.id).collect();
        assert_eq!(ids, [3, 2, 1], "newest first");
        assert_eq!(a.list(Some(3), 1, |_| true)[0].action, "queue.pause");
        drop(a);
        // Read back: the entry older than the retention is left out, and
        // ids go on from the last.
        let a = Audit::open(Some(dir.path()), day);
        assert_eq!(a.len(), 2);
        a.record(entry(now, "worker.forget"));
        assert_eq!(a.list(None, 1, |_| true)[0].id, 4);
        // A torn last line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"{\"id\":5,\"at\"")
            .unwrap();
        drop(a);
        let a = Audit::open(Some(dir.path()), day);
        assert_eq!(a.len(), 3);
        a.prune(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        a.prune(Duration::from_millis(1));
        assert!(a.is_empty());
    }

    #[test]
    fn the_file_is_rewritten_once_mostly_old() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(Some(dir.path()), Duration::from_secs(3600));
        let now = unix_ms();
        for i in 0..1500 {
            let at = if i < 1400 { now - 7_200_000 } else { now };
            a.record(entry(at, "task.retry"));
        }
        a.prune(Duration::from_secs(3600));
        assert_eq!(a.len(), 100);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 100);
        a.record(entry(now, "task.retry"));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 101, "appends go to the new file");
    }

    #[test]
    fn detail_is_small_json_only() {
        assert_eq!(
            detail(br#"{"count":3}"#),
            Some(serde_json::json!({"count": 3}))
        );
        assert_eq!(detail(b"not json"), None);
        assert_eq!(detail(&vec![b' '; 4096]), None);
    }
}
