//! State across restarts: two files in `state_dir`, saved by their own
//! thread and once more at shutdown, and read back at start. The registry
//! file holds each worker's state (its snapshot, a few hundred bytes) and
//! is saved every `state_save_interval`; the series file holds the
//! histories and run windows (up to 17 KiB and 8 KiB a worker, the bulk)
//! and is saved every `state_series_interval`, since rewriting them every
//! few seconds rewrote gigabytes for a large fleet (2.4 GB every 10 s for
//! 95,000 workers with full windows) to keep a minute more of history.
//!
//! - `format`: the files, byte by byte (pure).
//!
//! A save walks the registry: per worker it takes the published snapshot,
//! or copies the numeric series under that worker's lock (microseconds),
//! then writes outside every lock to a temporary file, which is synced,
//! renamed over the last save, and the directory synced; a crash at any
//! moment leaves the last complete save of each file in place. Ingest and
//! HTTP never wait on a save. A save is skipped when nothing changed since
//! the last of its file.
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
use crate::fleet::history::Sample;
use crate::fleet::registry::Registry;
use crate::fleet::runs::Run;
use crate::fleet::snapshot::Snapshot;
use crate::fleet::worker::Series;
use crate::proto::WorkerId;
use crate::stats::Counter;
use crate::sys::usage::thread_cpu;
use format::Meta;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The registry file's name in `state_dir`.
pub const REGISTRY: &str = "registry";
/// The series file's name in `state_dir`.
pub const SERIES: &str = "series";

/// Which file a save writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Each worker's state, with empty series.
    Registry,
    /// Each worker's history and run window.
    Series,
}

impl Part {
    /// The file's name in `state_dir`.
    pub fn file(self) -> &'static str {
        match self {
            Part::Registry => REGISTRY,
            Part::Series => SERIES,
        }
    }
}

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

    /// Read the registry file, and the series file into the workers it
    /// names. A missing file is an empty fleet (or empty series); a file
    /// that cannot be read is moved aside (its new name is logged): an
    /// unreadable registry starts the fleet empty, an unreadable series
    /// file only its histories and run windows.
    pub fn load(&self, cfg: &Config) -> Loaded {
        let (now_ms, now) = (unix_ms(), Instant::now());
        let forget_ms = cfg.fleet.forget_after.as_millis() as u64;
        let mut loaded = Loaded::default();
        let read = self.read_part(REGISTRY, "no workers", |file| {
            format::read(file, |rec| {
                let age = now_ms.saturating_sub(rec.meta.last_update);
                if age > forget_ms {
                    loaded.expired += 1;
                    return;
                }
                let last_seen = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
                let series = series_of(rec.samples, rec.runs, cfg, now_ms);
                loaded
                    .workers
                    .push((rec.meta.into_snapshot(last_seen), series));
            })
        });
        let Some((saved_at, _)) = read else {
            return Loaded::default();
        };
        loaded.saved_at = Some(saved_at);
        if loaded.workers.is_empty() {
            return loaded;
        }
        let at: HashMap<WorkerId, usize> = loaded
            .workers
            .iter()
            .enumerate()
            .map(|(i, (s, _))| (s.id.clone(), i))
            .collect();
        let mut found = Vec::new();
        let read = self.read_part(SERIES, "no histories", |file| {
            format::read_series(file, |rec| {
                if let Some(&i) = at.get(rec.meta.as_str()) {
                    found.push((i, series_of(rec.samples, rec.runs, cfg, now_ms)));
                }
            })
        });
        if read.is_some() {
            for (i, series) in found {
                loaded.workers[i].1 = series;
            }
        }
        loaded
    }

    /// Read the file `name` with `read`; `None` when it is missing or
    /// cannot be read, and a damaged file is moved aside. `without` says
    /// what the daemon starts with then.
    fn read_part<T>(
        &self,
        name: &str,
        without: &str,
        read: impl FnOnce(&mut BufReader<File>) -> Result<T, format::FormatError>,
    ) -> Option<T> {
        let path = self.dir.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!(
                    "cannot read {}: {e}; starting with {without}",
                    path.display()
                );
                return None;
            }
        };
        match read(&mut BufReader::with_capacity(1 << 20, file)) {
            Ok(v) => Some(v),
            Err(e) => {
                let aside = self.dir.join(format!("{name}.bad-{}", unix_ms()));
                let moved = fs::rename(&path, &aside);
                log::warn!(
                    "{} is unreadable ({e}); {}; starting with {without}",
                    path.display(),
                    match moved {
                        Ok(()) => format!("kept it as {}", aside.display()),
                        Err(m) => format!("could not move it aside: {m}"),
                    }
                );
                None
            }
        }
    }

    /// Write every worker in `registry` to the file of `part`, atomically.
    pub fn save(&self, registry: &Registry, part: Part) -> io::Result<Saved> {
        let (started, cpu0) = (Instant::now(), thread_cpu());
        let name = part.file();
        let magic = match part {
            Part::Registry => format::MAGIC,
            Part::Series => format::SERIES_MAGIC,
        };
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let saved_at = unix_ms();
        format::write_header(&mut out, magic, saved_at)?;
        let (mut series, mut samples, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        let mut workers = 0u64;
        let mut max_hold = Duration::ZERO;
        for handle in registry.handles() {
            // Under the lock only copies: about 30 KB for a full worker's
            // series.
            samples.clear();
            runs.clear();
            let p = handle.read();
            let held = Instant::now();
            if part == Part::Series {
                samples.extend(p.series.history.samples());
                runs.extend(p.series.runs.runs().copied());
            }
            let snap = p.snapshot.clone();
            drop(p);
            if !snap.is_shown() {
                continue;
            }
            max_hold = max_hold.max(held.elapsed());
            series.clear();
            format::put_series(&mut series, saved_at, &samples, &runs);
            match part {
                Part::Registry => format::write_worker(&mut out, &Meta::of(&snap), &series)?,
                Part::Series => format::write_series(&mut out, &snap.id, &series)?,
            }
            workers += 1;
        }
        format::write_trailer(&mut out, workers)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Saved {
            workers,
            bytes,
            took: started.elapsed(),
            cpu: thread_cpu().saturating_sub(cpu0),
            max_hold,
        })
    }

    /// Save one file and count it; failures are counted and logged, never
    /// fatal.
    pub fn save_counted(&self, registry: &Registry, shared: &Shared, part: Part) -> Option<Saved> {
        match self.save(registry, part) {
            Ok(s) => {
                shared.stats.incr(Counter::StateSaves);
                let last = match part {
                    Part::Registry => Counter::StateLastSaveMs,
                    Part::Series => Counter::StateLastSeriesSaveMs,
                };
                shared.stats.set(last, s.took.as_millis() as u64);
                log::debug!(
                    "saved {} workers to {} ({} bytes) in {} ms, cpu {} ms",
                    s.workers,
                    part.file(),
                    s.bytes,
                    s.took.as_millis(),
                    s.cpu.as_millis()
                );
                Some(s)
            }
            Err(e) => {
                shared.stats.incr(Counter::StateSaveErrors);
                log::warn!("cannot save {}: {e}", self.dir.join(part.file()).display());
                None
            }
        }
    }
}

/// A worker's series from what a file held, its runs pruned to the window.
fn series_of(samples: Vec<Sample>, runs: Vec<Run>, cfg: &Config, now_ms: u64) -> Series {
    let mut series = Series::default();
    for s in samples {
        series.history.push(s, cfg.fleet.history_samples);
    }
    for r in runs {
        series.runs.record(r);
    }
    series.runs.prune(now_ms);
    series
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

/// The saver thread: the registry file every `state_save_interval`, and
/// the series file every `state_series_interval` (and at its first turn),
/// each only when the fleet changed since that file's last save; until
/// `stop` receives a message or its sender is dropped.
pub fn run(store: Arc<Store>, registry: Arc<Registry>, shared: Arc<Shared>, stop: Receiver<()>) {
    let first = shared.changes.version();
    let (mut saved, mut series_saved) = (first, first);
    let mut series_due = Instant::now();
    loop {
        let cfg = shared.config.get();
        match stop.recv_timeout(cfg.daemon.state_save_interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let version = shared.changes.version();
        // The series first: a registry file written before them would
        // drop the series an older one held inside, were the daemon to
        // stop between the two.
        if version != series_saved && Instant::now() >= series_due {
            if store
                .save_counted(&registry, &shared, Part::Series)
                .is_some()
            {
                series_saved = version;
            }
            series_due = Instant::now() + cfg.daemon.state_series_interval;
        }
        if version != saved
            && store
                .save_counted(&registry, &shared, Part::Registry)
                .is_some()
        {
            saved = version;
        }
    }
}

/// Both files, at shutdown, the series first (as in [`run`]); what the
/// registry's save did.
pub fn save_all(store: &Store, registry: &Registry, shared: &Shared) -> Option<Saved> {
    store.save_counted(registry, shared, Part::Series);
    store.save_counted(registry, shared, Part::Registry)
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
        let saved = save_all(&store, &r, &shared).unwrap();
        assert_eq!(saved.workers, 2);
        assert_eq!(shared.stats.get(Counter::StateSaves), 2, "both files");
        assert!(!d.join("registry.tmp").exists() && !d.join("series.tmp").exists());

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
        store.save(&r, Part::Registry).unwrap();
        let (shared2, r2) = fleet();
        assert_eq!(restore(&store, &r2, &shared2), 1);
        assert!(r2.snapshot("new").is_some() && r2.snapshot("old").is_none());
        let _ = shared;
        r.shutdown(Instant::now() + Duration::from_secs(5));
        r2.shutdown(Instant::now() + Duration::from_secs(5));
        fs::remove_dir_all(&d).unwrap();
    }

    /// A worker that beat `n` times, each beat with a run; returns once
    /// its thread applied them.
    fn beaten(r: &Registry, id: &str, n: usize) {
        let h = r.route(&id.into(), Transport::Udp).unwrap();
        let runs = r.snapshot(id).map_or(0, |s| s.runs.total) + n as u64;
        for k in 0..n {
            let beat = format!(r#"{{"type":"heartbeat","worker_id":"{id}","queue_depth":{k}}}"#);
            let run = r#"{"type":"run","duration_ms":20,"ok":true}"#;
            for f in [beat.as_str(), run] {
                h.inbox
                    .try_send(Msg::frame(frame(f), Transport::Udp, Instant::now()))
                    .unwrap();
            }
        }
        let until = Instant::now() + Duration::from_secs(5);
        while r.snapshot(id).is_none_or(|s| s.runs.total < runs) {
            assert!(Instant::now() < until, "{id}'s frames not applied");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kept(r: &Registry, id: &str) -> (u64, usize, usize) {
        let queue = r.snapshot(id).unwrap().queue_depth;
        let h = r.handle(id).unwrap();
        let p = h.read();
        (queue, p.series.history.len(), p.series.runs.len())
    }

    #[test]
    fn the_series_come_from_their_own_file_saved_apart() {
        let d = dir("series");
        let store = Store::open(&d).unwrap();
        let (shared, r) = fleet();
        beaten(&r, "a", 1);
        store.save(&r, Part::Series).unwrap();
        // Later: the state moves on and only the registry file is saved.
        beaten(&r, "a", 3);
        beaten(&r, "b", 2);
        assert_eq!(r.finish(Instant::now() + Duration::from_secs(5)), 0);
        store.save(&r, Part::Registry).unwrap();

        let (shared2, r2) = fleet();
        assert_eq!(restore(&store, &r2, &shared2), 2);
        assert_eq!(
            kept(&r2, "a"),
            (2, 1, 1),
            "a's latest state, and the series of the last series save (1 run, not 4)"
        );
        assert_eq!(kept(&r2, "b"), (1, 0, 0), "b was in no series save");
        r2.shutdown(Instant::now() + Duration::from_secs(5));

        // A damaged series file costs the series, never the fleet.
        let mut bytes = fs::read(d.join(SERIES)).unwrap();
        bytes.truncate(bytes.len() - 3);
        fs::write(d.join(SERIES), bytes).unwrap();
        let (shared3, r3) = fleet();
        assert_eq!(restore(&store, &r3, &shared3), 2);
        assert_eq!(kept(&r3, "a"), (2, 0, 0));
        assert!(!d.join(SERIES).exists(), "moved aside");
        let _ = shared;
        r.shutdown(Instant::now() + Duration::from_secs(5));
        r3.shutdown(Instant::now() + Duration::from_secs(5));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_registry_file_with_its_series_inside_still_restores_them() {
        // What every save wrote before the series file.
        let d = dir("inline");
        let store = Store::open(&d).unwrap();
        let mut s = Snapshot::new("w".into(), Transport::Udp, Instant::now());
        s.messages_processed = 1;
        let sample = Sample {
            t: (unix_ms() / 1000) as u32,
            cpu: 1.0,
            memory: 2.0,
            gpu: f32::NAN,
            rss_mb: 3.0,
            queue: 4,
        };
        let mut out = Vec::new();
        format::write_header(&mut out, format::MAGIC, unix_ms()).unwrap();
        let mut series = Vec::new();
        format::put_series(&mut series, unix_ms(), &[sample], &[]);
        format::write_worker(&mut out, &Meta::of(&s), &series).unwrap();
        format::write_trailer(&mut out, 1).unwrap();
        fs::write(store.path(), out).unwrap();
        let (shared, r) = fleet();
        assert_eq!(restore(&store, &r, &shared), 1);
        assert_eq!(r.handle("w").unwrap().read().series.history.len(), 1);
        r.shutdown(Instant::now() + Duration::from_secs(5));
        fs::remove_dir_all(&d).unwrap();
    }
}
