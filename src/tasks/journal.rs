//! The task journal: an append-only file in `state_dir`, one record per
//! change, each framed as `length u32, crc32 u32, JSON` (little-endian), so
//! that a torn or damaged tail is found and cut at start.
//!
//! One thread writes it. Callers hand it encoded records and, when they
//! must know the record is on disk (a `201`), an acknowledgement to call.
//! With `task_fsync = always` the thread takes every record waiting, writes
//! them, calls `fdatasync` once, then acknowledges them all (group commit:
//! the more callers wait, the more each sync carries). `batch` syncs every
//! 10 ms and acknowledges after the write; `off` leaves it to the kernel.

use super::task::{Progress, Task, TaskId};
pub use crate::config::Fsync;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The journal's name in `state_dir`.
pub const FILE: &str = "tasks.journal";
/// Largest record read back: a task of `max_task_bytes` and its frame.
pub const MAX_RECORD: u32 = 64 << 20;
const BATCH_SYNC: Duration = Duration::from_millis(10);

/// One change. Externally tagged, and a task stored with its progress
/// nested (see [`Task`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Submit {
        task: Box<Task>,
    },
    Progress {
        id: TaskId,
        progress: Progress,
    },
    Log {
        id: TaskId,
        lines: Vec<String>,
    },
    Forget {
        id: TaskId,
    },
    /// A task type paused or resumed (`/api/queues/{type}/pause`).
    Pause {
        kind: String,
        paused: bool,
    },
    /// A schedule made, changed, or as it is after a tick.
    Schedule {
        schedule: Box<super::schedule::Schedule>,
    },
    /// A schedule deleted.
    Unschedule {
        name: String,
    },
    /// A dispatch limit set, or removed (`None`).
    Limit {
        scope: super::limit::Scope,
        limit: Option<super::limit::Limit>,
    },
}

pub fn encode(r: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(r).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// What replaying a journal found.
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    pub records: usize,
    /// Records whose checksum or JSON was bad, skipped.
    pub skipped: usize,
    /// Where the good part ends, when a torn or unreadable tail follows.
    pub cut_at: Option<u64>,
}

/// Read records from `bytes`, calling `each` per good one. A record whose
/// frame is whole but whose checksum or content is wrong is skipped; a
/// frame that runs past the end, or whose length is impossible, ends the
/// good part there.
pub fn replay(bytes: &[u8], mut each: impl FnMut(Record)) -> Replay {
    let mut out = Replay::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            out.cut_at = Some(at as u64);
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let end = at + 8 + len as usize;
        if len > MAX_RECORD || end > bytes.len() {
            out.cut_at = Some(at as u64);
            break;
        }
        let body = &bytes[at + 8..end];
        match serde_json::from_slice::<Record>(body) {
            Ok(r) if crc32fast::hash(body) == crc => {
                out.records += 1;
                each(r);
            }
            _ => out.skipped += 1,
        }
        at = end;
    }
    out
}

/// How a submission fared where it is kept.
#[derive(Debug)]
pub enum Kept {
    /// Written (and, with `always`, synced), or committed.
    Stored,
    /// Not stored: writing failed, or the store is closed or away.
    NotStored,
    /// Cluster mode: the database holds a task with the same key, which a
    /// node had not read yet; the submission was left out.
    Taken(Box<Task>, Clash),
    /// Cluster mode: a task it depends on is not in the database (this
    /// node had not read it, and no node has it).
    Unknown(TaskId),
}

/// Which key a submission shares with a task already kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clash {
    /// Its `Idempotency-Key`: the submission repeats that task.
    Idempotency,
    /// Its `unique_key`, held by that task, not ended.
    Unique,
}

impl Kept {
    pub fn stored(ok: bool) -> Kept {
        if ok { Kept::Stored } else { Kept::NotStored }
    }
}

/// Called once a submission's record is kept, or is not.
pub type Ack = Box<dyn FnOnce(Kept) + Send>;

pub struct Append {
    pub bytes: Vec<u8>,
    pub ack: Option<Ack>,
    /// Instead of appending: rewrite the journal as these records (every
    /// live task as it is now, and its log), then go on appending there.
    pub compact: Option<(PathBuf, Vec<Record>)>,
}

/// The journal's length now, and when the last compaction was asked.
#[derive(Default)]
pub struct Size {
    pub now: std::sync::atomic::AtomicU64,
    pub base: std::sync::atomic::AtomicU64,
}

impl Size {
    /// Compaction is due when the file is twice the live tasks' size (and
    /// past a floor, so a small journal is left alone), and it grew since
    /// the last one was asked (one that could not shrink it is not
    /// retried at every turn).
    pub fn due(&self, live: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.now.load(Relaxed);
        now > 2 * live.max(COMPACT_FLOOR) && now > self.base.load(Relaxed) + COMPACT_FLOOR / 2
    }
}

/// Journals smaller than twice this are never compacted.
pub const COMPACT_FLOOR: u64 = 4 << 20;

/// Open the journal for appending after reading it whole: the caller
/// replays the bytes, then cuts a torn tail with [`cut`].
pub fn open(dir: &Path) -> io::Result<(File, Vec<u8>)> {
    let path = dir.join(FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok((f, bytes))
}

/// Cut the file at `len` (a torn tail) and sync.
pub fn cut(f: &File, len: u64) -> io::Result<()> {
    f.set_len(len)?;
    f.sync_all()
}

/// Write `records` to a new journal beside the old and put it in place:
/// compaction, and the rewrite after a cut.
pub fn rewrite(dir: &Path, records: impl Iterator<Item = Vec<u8>>) -> io::Result<File> {
    let tmp: PathBuf = dir.join(format!("{FILE}.tmp"));
    let mut w = BufWriter::new(File::create(&tmp)?);
    for r in records {
        w.write_all(&r)?;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()?;
    let mut f = OpenOptions::new().append(true).open(dir.join(FILE))?;
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

/// The journal thread: write what arrives, sync as `mode` says, and
/// acknowledge; `written` hears of each batch's bytes and whether its
/// write (and sync) succeeded. Ends when every sender is gone, after a
/// last sync.
pub fn run(
    file: File,
    rx: Receiver<Append>,
    mode: impl Fn() -> Fsync,
    written: impl Fn(u64, bool),
    size: std::sync::Arc<Size>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut dirty = false;
    let mut last_sync = Instant::now();
    loop {
        let first = if dirty {
            match rx.recv_timeout(BATCH_SYNC.saturating_sub(last_sync.elapsed())) {
                Ok(a) => Some(a),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(a) => Some(a),
                Err(_) => break,
            }
        };
        let mut batch: Vec<Append> = first.into_iter().collect();
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        let mut ok = true;
        let mut bytes = 0u64;
        for a in &mut batch {
            if let Some((dir, records)) = a.compact.take() {
                ok &= out.flush().is_ok();
                let started = Instant::now();
                let encoded: Vec<Vec<u8>> = records.iter().map(encode).collect();
                let len: u64 = encoded.iter().map(|r| r.len() as u64).sum();
                match rewrite(&dir, encoded.into_iter()) {
                    Ok(f) => {
                        out = BufWriter::with_capacity(1 << 20, f);
                        size.now.store(len, Relaxed);
                        size.base.store(0, Relaxed);
                        log::info!(
                            "task journal compacted: {} records, {len} bytes, in {} ms",
                            records.len(),
                            started.elapsed().as_millis()
                        );
                    }
                    Err(e) => {
                        // The old journal stays whole: appending goes on there.
                        log::error!("task journal: compaction failed, keeping the journal: {e}");
                    }
                }
                continue;
            }
            ok &= out.write_all(&a.bytes).is_ok();
            bytes += a.bytes.len() as u64;
        }
        size.now.fetch_add(bytes, Relaxed);
        ok &= out.flush().is_ok();
        dirty |= !batch.is_empty();
        let mode = mode();
        let sync_now = match mode {
            Fsync::Always => !batch.is_empty(),
            Fsync::Batch => dirty && last_sync.elapsed() >= BATCH_SYNC,
            Fsync::Off => false,
        };
        if sync_now {
            ok &= out.get_ref().sync_data().is_ok();
            dirty = false;
            last_sync = Instant::now();
        } else if mode == Fsync::Off {
            dirty = false;
        }
        if !ok {
            log::error!("task journal: a write or sync failed; the tasks involved are refused");
        }
        written(bytes, ok);
        for a in batch {
            if let Some(ack) = a.ack {
                ack(Kept::stored(ok));
            }
        }
    }
    let _ = out.flush();
    let _ = out.get_ref().sync_data();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::{TaskId, parse_submit};

    fn records() -> Vec<Record> {
        let id = TaskId(1);
        let task = parse_submit(br#"{"type":"scan","payload":[1,2]}"#, id, 5).unwrap();
        let mut p = task.progress.clone();
        p.state = crate::tasks::task::State::Running;
        vec![
            Record::Submit {
                task: Box::new(task),
            },
            Record::Progress { id, progress: p },
            Record::Log {
                id,
                lines: vec!["hello".into()],
            },
            Record::Forget { id },
            Record::Pause {
                kind: "scan".into(),
                paused: true,
            },
        ]
    }

    #[test]
    fn replays_what_was_written() {
        let bytes: Vec<u8> = records().iter().flat_map(encode).collect();
        let mut got = Vec::new();
        let r = replay(&bytes, |x| got.push(x));
        assert_eq!(got, records());
        assert_eq!(
            r,
            Replay {
                records: 5,
                skipped: 0,
                cut_at: None
            }
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_flipped_byte_skipped() {
        let bytes: Vec<u8> = records().iter().flat_map(encode).collect();
        let first = encode(&records()[0]).len();
        for cut in first + 1..first + 8 + 3 {
            let r = replay(&bytes[..cut], |_| {});
            assert_eq!(
                (r.records, r.cut_at),
                (1, Some(first as u64)),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[first + 12] ^= 0x20;
        let mut got = Vec::new();
        let r = replay(&flipped, |x| got.push(x));
        assert_eq!((r.records, r.skipped, r.cut_at), (4, 1, None));
        assert_eq!(got[0], records()[0]);
        let mut huge = bytes.clone();
        huge[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(replay(&huge, |_| {}).cut_at, Some(first as u64));
    }
}
