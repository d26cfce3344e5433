//! State across restarts: the registry file in `state_dir`, saved every
//! `state_save_interval` by its own thread and once more at shutdown, and
//! read back at start.
//!
//! - `format`: the file, byte by byte (pure).
//!
//! A save walks the registry: per worker it takes the published snapshot
//! and copies the numeric series under that worker's lock (microseconds),
//! then writes outside every lock to a temporary file, which is synced,
//! renamed over the last save, and the directory synced; a crash at any
//! moment leaves the last complete save in place. Ingest and HTTP never
//! wait on a save. A save is skipped when nothing changed since the last.
//!
//! At start, workers silent for longer than `forget_after` are left out;
//! the rest come back `restored`, last seen as long ago as they were when
//! saved, and the sweeper gives them one inactivity timeout of grace. A
//! file that cannot be read is moved aside with a warning and the daemon
//! starts empty: a bad file never keeps the daemon down.

pub mod cluster;
pub mod format;

use crate::clock::unix_ms;
use crate::config::Config;
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::Snapshot;
use crate::fleet::worker::Series;
use crate::stats::Counter;
use crate::sys::usage::thread_cpu;
use format::Meta;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The registry file's name in `state_dir`.
pub const REGISTRY: &str = "registry";

/// What one save did.
#[derive(Debug)]
pub struct Saved {
    pub workers: u64,
    pub bytes: u64,
    /// Wall time, and CPU time of the saving thread.
    pub took: Duration,
    pub cpu: Duration,
    /// The longest the save held one worker's lock (that worker's thread
    /// and HTTP readers of it wait this long at most).
    pub max_hold: Duration,
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub workers: Vec<(Snapshot, Series)>,
    /// Left out: silent for longer than `forget_after`.
    pub expired: usize,
    /// When the file was saved (Unix ms), if one was read.
    pub saved_at: Option<u64>,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(REGISTRY)
    }

    /// Read the registry file. A missing file is an empty fleet; a file
    /// that cannot be read is moved aside (its new name is logged) and the
    /// fleet starts empty.
    pub fn load(&self, cfg: &Config) -> Loaded {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::default(),
            Err(e) => {
                log::warn!(
                    "cannot read {}: {e}; starting with no workers",
                    path.display()
                );
                return Loaded::default();
            }
        };
        let (now_ms, now) = (unix_ms(), Instant::now());
        let forget_ms = cfg.fleet.forget_after.as_millis() as u64;
        let mut loaded = Loaded::default();
        let read = format::read(&mut BufReader::with_capacity(1 << 20, file), |rec| {
            let age = now_ms.saturating_sub(rec.meta.last_update);
            if age > forget_ms {
                loaded.expired += 1;
                return;
            }
            let last_seen = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
            let mut series = Series::default();
            for s in rec.samples {
                series.history.push(s, cfg.fleet.history_samples);
            }
            for r in rec.runs {
                series.runs.record(r);
            }
            series.runs.prune(now_ms);
            loaded
                .workers
                .push((rec.meta.into_snapshot(last_seen), series));
        });
        match read {
            Ok((saved_at, _)) => {
                loaded.saved_at = Some(saved_at);
                loaded
            }
            Err(e) => {
                let aside = self.dir.join(format!("{REGISTRY}.bad-{now_ms}"));
                let moved = fs::rename(&path, &aside);
                log::warn!(
                    "{} is unreadable ({e}); {}; starting with no workers",
                    path.display(),
                    match moved {
                        Ok(()) => format!("kept it as {}", aside.display()),
                        Err(m) => format!("could not move it aside: {m}"),
                    }
                );
                Loaded::default()
            }
        }
    }

    /// Write every worker in `registry` to the registry file, atomically.
    pub fn save(&self, registry: &Registry) -> io::Result<Saved> {
        let (started, cpu0) = (Instant::now(), thread_cpu());
        let tmp = self.dir.join(format!("{REGISTRY}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let saved_at = unix_ms();
        format::write_header(&mut out, saved_at)?;
        let (mut series, mut samples, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        let mut workers = 0u64;
        let mut max_hold = Duration::ZERO;
        for handle in registry.handles() {
            // Under the lock only copies: about 30 KB for a full worker.
            samples.clear();
            runs.clear();
            let p = handle.read();
            let held = Instant::now();
            samples.extend(p.series.history.samples());
            runs.extend(p.series.runs.runs().copied());
            let snap = p.snapshot.clone();
            drop(p);
            if !snap.is_shown() {
                continue;
            }
            max_hold = max_hold.max(held.elapsed());
            series.clear();
            format::put_series(&mut series, saved_at, &samples, &runs);
            format::write_worker(&mut out, &Meta::of(&snap), &series)?;
            workers += 1;
        }
        format::write_trailer(&mut out, workers)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Saved {
            workers,
            bytes,
            took: started.elapsed(),
            cpu: thread_cpu().saturating_sub(cpu0),
            max_hold,
        })
    }

    /// Save and count it; failures are counted and logged, never fatal.
    pub fn save_counted(&self, registry: &Registry, shared: &Shared) -> Option<Saved> {
        match self.save(registry) {
            Ok(s) => {
                shared.stats.incr(Counter::StateSaves);
                shared
                    .stats
                    .set(Counter::StateLastSaveMs, s.took.as_millis() as u64);
                log::debug!(
                    "saved {} workers ({} bytes) in {} ms, cpu {} ms",
                    s.workers,
                    s.bytes,
                    s.took.as_millis(),
                    s.cpu.as_millis()
                );
                Some(s)
            }
            Err(e) => {
                shared.stats.incr(Counter::StateSaveErrors);
                log::warn!("cannot save the registry to {}: {e}", self.dir.display());
                None
            }
        }
    }
}

/// Bring back what the last run saved. Returns how many workers came back.
pub fn restore(store: &Store, registry: &Registry, shared: &Shared) -> usize {
    let cfg = shared.config.get();
    let loaded = store.load(&cfg);
    let offered = loaded.workers.len();
    let n = registry.restore(loaded.workers);
    shared.stats.set(Counter::StateRestored, n as u64);
    if let Some(at) = loaded.saved_at {
        log::info!(
            "restored {n} workers from {} (saved {} s ago; {} silent past forget_after left out{})",
            store.path().display(),
            unix_ms().saturating_sub(at) / 1000,
            loaded.expired,
            if n < offered {
                format!("; {} over max_workers left out", offered - n)
            } else {
                String::new()
            }
        );
    }
    n
}

/// The saver thread: save every `state_save_interval` while the fleet
/// changed, until `stop` receives a message or its sender is dropped.
pub fn run(store: Arc<Store>, registry: Arc<Registry>, shared: Arc<Shared>, stop: Receiver<()>) {
    let mut saved_version = shared.changes.version();
    loop {
        let every = shared.config.get().daemon.state_save_interval;
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let version = shared.changes.version();
        if version == saved_version {
            continue;
        }
        if store.save_counted(&registry, &shared).is_some() {
            saved_version = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::inbox::Msg;
    use crate::fleet::snapshot::Transport;
    use crate::fleet::snapshot::tests::frame;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("muster-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn fleet() -> (Arc<Shared>, Registry) {
        let mut cfg = config::defaults();
        cfg.fleet.max_workers = 100;
        let shared = Arc::new(Shared::new(cfg));
        let r = Registry::new(shared.clone());
        (shared, r)
    }

    #[test]
    fn save_then_restore() {
        let d = dir("round");
        let store = Store::open(&d).unwrap();
        let (shared, r) = fleet();
        for id in ["a", "b"] {
            let h = r.route(&id.into(), Transport::Udp).unwrap();
            let beat = format!(
                r#"{{"type":"heartbeat","worker_id":"{id}","status":"working","queue_depth":3}}"#
            );
            h.inbox
                .try_send(Msg::frame(frame(&beat), Transport::Udp, Instant::now()))
                .unwrap();
            let run = r#"{"type":"run","duration_ms":20,"ok":true}"#;
            h.inbox
                .try_send(Msg::frame(frame(run), Transport::Udp, Instant::now()))
                .unwrap();
        }
        assert_eq!(r.finish(Instant::now() + Duration::from_secs(5)), 0);
        let saved = store.save_counted(&r, &shared).unwrap();
        assert_eq!(saved.workers, 2);
        assert_eq!(shared.stats.get(Counter::StateSaves), 1);
        assert!(!d.join("registry.tmp").exists());

        let (shared2, r2) = fleet();
        assert_eq!(restore(&store, &r2, &shared2), 2);
        let a = r2.snapshot("a").unwrap();
        assert!(a.restored);
        assert_eq!(
            (a.status().as_str(), a.queue_depth, a.runs.total),
            ("working", 3, 1)
        );
        let h = r2.handle("a").unwrap();
        assert_eq!(h.read().series.runs.len(), 1);
        assert_eq!(h.read().series.history.len(), 1);
        r.shutdown(Instant::now() + Duration::from_secs(5));
        r2.shutdown(Instant::now() + Duration::from_secs(5));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bad_file_is_kept_aside() {
        let d = dir("bad");
        let store = Store::open(&d).unwrap();
        fs::write(store.path(), b"MUSTREG\0garbage").unwrap();
        let (shared, r) = fleet();
        assert_eq!(restore(&store, &r, &shared), 0);
        assert!(!store.path().exists());
        let aside: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("registry.bad-"))
            .collect();
        assert_eq!(aside.len(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_long_silent_are_not_restored() {
        let d = dir("old");
        let store = Store::open(&d).unwrap();
        let (shared, r) = fleet();
        let mut old = Snapshot::new("old".into(), Transport::Udp, Instant::now());
        old.last_update = unix_ms() - 2 * 3_600_000;
        old.messages_processed = 1;
        let mut new = Snapshot::new("new".into(), Transport::Udp, Instant::now());
        new.messages_processed = 1;
        r.restore(vec![(old, Series::default()), (new, Series::default())]);
        store.save(&r).unwrap();
        let (shared2, r2) = fleet();
        assert_eq!(restore(&store, &r2, &shared2), 1);
        assert!(r2.snapshot("new").is_some() && r2.snapshot("old").is_none());
        let _ = shared;
        r.shutdown(Instant::now() + Duration::from_secs(5));
        r2.shutdown(Instant::now() + Duration::from_secs(5));
        fs::remove_dir_all(&d).unwrap();
    }
}
