//! The registry and series files, byte by byte. Pure: records in, bytes
//! out, and back.
//!
//! ```text
//! header   "MUSTREG\0"  version u32  saved_at_ms u64
//! worker*  meta_len u32  meta (JSON)
//!          samples u32   samples × 24 bytes (t u32, cpu, memory, gpu, rss_mb f32, queue u32)
//!          runs u32      runs × 8 bytes (age_ms u32: saved_at_ms − at_ms;
//!                        duration_ms f32, negative when the run failed)
//! trailer  "MUSTEND\0"  workers u64
//! ```
//!
//! The series file (`"MUSTSER\0"`) is the same with each worker's id (UTF-8)
//! where the registry has its state: it holds the bulk, the histories and
//! run windows, and is saved less often; the registry file is then saved
//! with empty series. A registry file with its series in place (as every
//! save wrote them before the series file) still reads.
//!
//! Little-endian throughout. The numeric series are fixed-size binary, so
//! a fleet of 10,000 workers with full histories (about 170 MB of samples)
//! is written at the speed of a copy; the per-worker state is JSON, so a
//! field added later reads as its default. A file that ends before its
//! trailer, holds a length past its bounds, or has bytes after the trailer
//! is corrupt; a version above [`VERSION`] is from a newer musterd. Either
//! way the caller keeps the file aside and starts empty.

use crate::fleet::history::Sample;
use crate::fleet::runs::{MAX_RUNS, Run};
use crate::fleet::snapshot::{HelloInfo, RunCounts, Snapshot, Transport};
use crate::proto::{CurrentJob, Labels, Reported, ResourceUsage, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

pub const MAGIC: &[u8; 8] = b"MUSTREG\0";
pub const SERIES_MAGIC: &[u8; 8] = b"MUSTSER\0";
pub const END: &[u8; 8] = b"MUSTEND\0";
pub const VERSION: u32 = 1;
/// Bounds a reader holds a file to.
const MAX_META: u32 = 16 << 20;
const MAX_SAMPLES: u32 = 100_000;
const MAX_WORKERS: u64 = 10_000_000;
pub const SAMPLE_BYTES: usize = 24;
pub const RUN_BYTES: usize = 8;

/// A worker's state as saved: everything in its snapshot but the clocks
/// that only mean something inside one process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    #[serde(default)]
    pub reported: Option<Reported>,
    #[serde(default)]
    pub inactive: bool,
    #[serde(default)]
    pub terminated: bool,
    #[serde(default)]
    pub cpu_usage: Option<f64>,
    #[serde(default)]
    pub memory_usage: Option<f64>,
    #[serde(default)]
    pub gpu_usage: Option<f64>,
    #[serde(default)]
    pub resource_usage: Option<ResourceUsage>,
    #[serde(default)]
    pub queue_depth: u64,
    #[serde(default)]
    pub current_job: Option<CurrentJob>,
    #[serde(default)]
    pub running_tasks: Vec<Value>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub hello: Option<HelloInfo>,
    pub transport: Transport,
    pub created_at: u64,
    pub last_update: u64,
    #[serde(default)]
    pub messages_processed: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub missed_beats: u64,
    #[serde(default)]
    pub seq_restarts: u64,
    #[serde(default)]
    pub seq_jumps: u64,
    #[serde(default)]
    pub times_inactive: u64,
    #[serde(default)]
    pub runs: RunCounts,
}

impl Meta {
    pub fn of(s: &Snapshot) -> Meta {
        Meta {
            id: s.id.to_string(),
            reported: s.reported,
            inactive: s.inactive,
            terminated: s.terminated,
            cpu_usage: s.cpu_usage,
            memory_usage: s.memory_usage,
            gpu_usage: s.gpu_usage,
            resource_usage: s.resource_usage.clone(),
            queue_depth: s.queue_depth,
            current_job: s.current_job.as_deref().cloned(),
            running_tasks: s.running_tasks.to_vec(),
            labels: (*s.labels).clone(),
            hello: s.hello.as_deref().cloned(),
            transport: s.transport,
            created_at: s.created_at,
            last_update: s.last_update,
            messages_processed: s.messages_processed,
            errors: s.errors,
            last_seq: s.last_seq,
            missed_beats: s.missed_beats,
            seq_restarts: s.seq_restarts,
            seq_jumps: s.seq_jumps,
            times_inactive: s.times_inactive,
            runs: s.runs,
        }
    }

    /// The snapshot this state restores to, last heard from at `last_seen`
    /// on this process's clock, marked `restored`.
    pub fn into_snapshot(self, last_seen: Instant) -> Snapshot {
        let mut s = Snapshot::new(WorkerId::from(self.id.as_str()), self.transport, last_seen);
        s.reported = self.reported;
        s.inactive = self.inactive;
        s.terminated = self.terminated;
        s.cpu_usage = self.cpu_usage;
        s.memory_usage = self.memory_usage;
        s.gpu_usage = self.gpu_usage;
        s.resource_usage = self.resource_usage;
        s.queue_depth = self.queue_depth;
        s.current_job = self.current_job.map(Arc::new);
        s.running_tasks = Arc::new(self.running_tasks);
        s.labels = Arc::new(self.labels);
        s.hello = self.hello.map(Arc::new);
        s.created_at = self.created_at;
        s.last_update = self.last_update;
        s.messages_processed = self.messages_processed;
        s.errors = self.errors;
        s.last_seq = self.last_seq;
        s.missed_beats = self.missed_beats;
        s.seq_restarts = self.seq_restarts;
        s.seq_jumps = self.seq_jumps;
        s.times_inactive = self.times_inactive;
        s.runs = self.runs;
        s.restored = true;
        s
    }
}

/// One worker as read back.
#[derive(Debug, PartialEq)]
pub struct Record<H = Meta> {
    /// The worker's state (the registry file) or its id (the series file).
    pub meta: H,
    pub samples: Vec<Sample>,
    pub runs: Vec<Run>,
}

/// Why a file could not be read.
#[derive(Debug)]
pub enum FormatError {
    /// Written by a newer musterd (its version).
    Newer(u32),
    /// Not a registry file, or damaged: what was wrong.
    Corrupt(String),
    Io(io::Error),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Newer(v) => write!(
                f,
                "written by a newer musterd (format {v}, this one reads {VERSION})"
            ),
            FormatError::Corrupt(m) => write!(f, "corrupt: {m}"),
            FormatError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn corrupt(m: impl Into<String>) -> FormatError {
    FormatError::Corrupt(m.into())
}

impl From<io::Error> for FormatError {
    fn from(e: io::Error) -> FormatError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("the file ends early (truncated)")
        } else {
            FormatError::Io(e)
        }
    }
}

/// The header of a registry file (`MAGIC`) or a series file
/// (`SERIES_MAGIC`).
pub fn write_header(out: &mut impl Write, magic: &[u8; 8], saved_at_ms: u64) -> io::Result<()> {
    out.write_all(magic)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&saved_at_ms.to_le_bytes())
}

pub fn write_trailer(out: &mut impl Write, workers: u64) -> io::Result<()> {
    out.write_all(END)?;
    out.write_all(&workers.to_le_bytes())
}

/// The numeric series of one worker, appended to `buf`; run times are
/// kept as their age at `saved_at_ms` (a run window spans an hour).
pub fn put_series(buf: &mut Vec<u8>, saved_at_ms: u64, samples: &[Sample], runs: &[Run]) {
    buf.reserve(8 + samples.len() * SAMPLE_BYTES + runs.len() * RUN_BYTES);
    buf.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    for s in samples {
        let mut b = [0u8; SAMPLE_BYTES];
        b[0..4].copy_from_slice(&s.t.to_le_bytes());
        b[4..8].copy_from_slice(&s.cpu.to_le_bytes());
        b[8..12].copy_from_slice(&s.memory.to_le_bytes());
        b[12..16].copy_from_slice(&s.gpu.to_le_bytes());
        b[16..20].copy_from_slice(&s.rss_mb.to_le_bytes());
        b[20..24].copy_from_slice(&s.queue.to_le_bytes());
        buf.extend_from_slice(&b);
    }
    buf.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for r in runs {
        let age = saved_at_ms.saturating_sub(r.at_ms).min(u64::from(u32::MAX)) as u32;
        // Durations are never negative: the sign carries the outcome.
        let d = if r.ok {
            r.duration_ms.abs()
        } else {
            -r.duration_ms.abs()
        };
        let mut b = [0u8; RUN_BYTES];
        b[0..4].copy_from_slice(&age.to_le_bytes());
        b[4..8].copy_from_slice(&d.to_le_bytes());
        buf.extend_from_slice(&b);
    }
}

/// One worker: its state as JSON, then the series from [`put_series`].
pub fn write_worker(out: &mut impl Write, meta: &Meta, series: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    out.write_all(&(json.len() as u32).to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(series)
}

/// One worker of a series file: its id, then the series from
/// [`put_series`].
pub fn write_series(out: &mut impl Write, id: &str, series: &[u8]) -> io::Result<()> {
    out.write_all(&(id.len() as u32).to_le_bytes())?;
    out.write_all(id.as_bytes())?;
    out.write_all(series)
}

fn u32_of(r: &mut impl Read) -> Result<u32, FormatError> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_of(r: &mut impl Read) -> Result<u64, FormatError> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn f32_of(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Read a whole registry file: when it was saved, and every worker in it,
/// calling `each` per worker so that the caller need not hold them all at
/// once.
pub fn read(r: &mut impl Read, each: impl FnMut(Record)) -> Result<(u64, u64), FormatError> {
    read_file(r, MAGIC, "registry", each, |buf, count| {
        let meta: Meta =
            serde_json::from_slice(buf).map_err(|e| corrupt(format!("worker {count}: {e}")))?;
        Ok((meta.id.clone(), meta))
    })
}

/// Read a whole series file, as [`read`] does a registry file.
pub fn read_series(
    r: &mut impl Read,
    each: impl FnMut(Record<String>),
) -> Result<(u64, u64), FormatError> {
    read_file(r, SERIES_MAGIC, "series", each, |buf, count| {
        let id = std::str::from_utf8(buf)
            .map_err(|_| corrupt(format!("worker {count}: id not UTF-8")))?;
        Ok((id.to_string(), id.to_string()))
    })
}

/// Either file: `head` reads a worker's head (its state or its id) into
/// the worker's id and what the record carries.
fn read_file<H>(
    r: &mut impl Read,
    want: &[u8; 8],
    what: &str,
    mut each: impl FnMut(Record<H>),
    head: impl Fn(&[u8], u64) -> Result<(String, H), FormatError>,
) -> Result<(u64, u64), FormatError> {
    let mut magic = [0; 8];
    r.read_exact(&mut magic)
        .map_err(|_| corrupt(format!("too short to be a {what} file")))?;
    if &magic != want {
        return Err(corrupt(format!("not a muster {what} file")));
    }
    let version = u32_of(r)?;
    if version > VERSION {
        return Err(FormatError::Newer(version));
    }
    if version == 0 {
        return Err(corrupt("format version 0"));
    }
    let saved_at = u64_of(r)?;
    let mut count = 0u64;
    let mut buf = Vec::new();
    loop {
        let mut tag = [0; 4];
        r.read_exact(&mut tag)?;
        if tag == END[..4] {
            let mut rest = [0; 4];
            r.read_exact(&mut rest)?;
            if rest != END[4..] {
                return Err(corrupt("damaged trailer"));
            }
            let told = u64_of(r)?;
            if told != count {
                return Err(corrupt(format!(
                    "trailer says {told} workers, found {count}"
                )));
            }
            if r.read(&mut [0; 1])? != 0 {
                return Err(corrupt("bytes after the trailer"));
            }
            return Ok((saved_at, count));
        }
        count += 1;
        if count > MAX_WORKERS {
            return Err(corrupt("too many workers"));
        }
        let meta_len = u32::from_le_bytes(tag);
        if meta_len > MAX_META {
            return Err(corrupt(format!(
                "worker {count}: state of {meta_len} bytes"
            )));
        }
        buf.resize(meta_len as usize, 0);
        r.read_exact(&mut buf)?;
        let (id, meta) = head(&buf, count)?;
        if crate::proto::check_worker_id(&id).is_err() {
            return Err(corrupt(format!("worker {count}: bad id")));
        }
        let n = u32_of(r)?;
        if n > MAX_SAMPLES {
            return Err(corrupt(format!("worker {id}: {n} samples")));
        }
        buf.resize(n as usize * SAMPLE_BYTES, 0);
        r.read_exact(&mut buf)?;
        let samples = buf
            .chunks_exact(SAMPLE_BYTES)
            .map(|c| Sample {
                t: u32_at(c),
                cpu: f32_of(&c[4..]),
                memory: f32_of(&c[8..]),
                gpu: f32_of(&c[12..]),
                rss_mb: f32_of(&c[16..]),
                queue: u32_at(&c[20..]),
            })
            .collect();
        let n = u32_of(r)?;
        if n as usize > MAX_RUNS {
            return Err(corrupt(format!("worker {id}: {n} runs")));
        }
        buf.resize(n as usize * RUN_BYTES, 0);
        r.read_exact(&mut buf)?;
        let mut runs = Vec::with_capacity(n as usize);
        for c in buf.chunks_exact(RUN_BYTES) {
            let d = f32_of(&c[4..]);
            if !d.is_finite() {
                return Err(corrupt(format!("worker {id}: bad run")));
            }
            runs.push(Run {
                at_ms: saved_at.saturating_sub(u64::from(u32_at(c))),
                duration_ms: d.abs(),
                ok: d.is_sign_positive(),
            });
        }
        each(Record {
            meta,
            samples,
            runs,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::tests::{frame, fresh};

    fn sample(t: u32) -> Sample {
        Sample {
            t,
            cpu: 1.5,
            memory: f32::NAN,
            gpu: 3.0,
            rss_mb: 4.0,
            queue: 7,
        }
    }

    fn file(records: &[(Meta, Vec<Sample>, Vec<Run>)]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, MAGIC, 42).unwrap();
        for (m, s, r) in records {
            let mut series = Vec::new();
            put_series(&mut series, 42, s, r);
            write_worker(&mut out, m, &series).unwrap();
        }
        write_trailer(&mut out, records.len() as u64).unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, FormatError> {
        let mut v = Vec::new();
        read(&mut &bytes[..], |r| v.push(r))?;
        Ok(v)
    }

    #[test]
    fn round_trip() {
        let mut s = fresh();
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","status":"working","cpu_usage":12.5,"labels":{"pool":"a"},"current_job":{"id":"j","type":"scan"}}"#),
            Transport::Tcp,
            Instant::now(),
        );
        s.apply(
            frame(r#"{"type":"run","duration_ms":250,"ok":false}"#),
            Transport::Tcp,
            Instant::now(),
        );
        let meta = Meta::of(&s);
        let runs = vec![Run {
            at_ms: 5,
            duration_ms: 250.0,
            ok: false,
        }];
        let bytes = file(&[(meta.clone(), vec![sample(1), sample(2)], runs.clone())]);
        let back = read_all(&bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].meta, meta);
        assert_eq!(back[0].runs, runs);
        assert_eq!(back[0].samples[1].t, 2);
        assert!(back[0].samples[0].memory.is_nan());
        let restored = back[0].meta.clone().into_snapshot(Instant::now());
        assert!(restored.restored);
        assert_eq!(restored.status(), crate::proto::Status::Working);
        assert_eq!(restored.runs.failed, 1);
        assert_eq!(restored.labels["pool"], "a");
        assert_eq!(Meta::of(&restored), meta);
    }

    #[test]
    fn damage_is_named_never_a_panic() {
        let meta = Meta::of(&fresh());
        let good = file(&[
            (meta.clone(), vec![sample(1)], vec![]),
            (meta, vec![], vec![]),
        ]);
        assert_eq!(read_all(&good).unwrap().len(), 2);
        // Every truncation is corrupt, never a short success.
        for cut in 0..good.len() {
            assert!(
                matches!(read_all(&good[..cut]), Err(FormatError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(read_all(&extra), Err(FormatError::Corrupt(_))));
        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(read_all(&newer), Err(FormatError::Newer(2))));
        assert!(matches!(
            read_all(b"garbage garbage garbage"),
            Err(FormatError::Corrupt(_))
        ));
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_all(&huge), Err(FormatError::Corrupt(_))));
    }

    #[test]
    fn a_series_file_reads_back_and_names_its_damage() {
        let mut out = Vec::new();
        write_header(&mut out, SERIES_MAGIC, 1_000).unwrap();
        let runs = vec![Run {
            at_ms: 400,
            duration_ms: 20.0,
            ok: true,
        }];
        for id in ["w1", "w2"] {
            let mut series = Vec::new();
            put_series(&mut series, 1_000, &[sample(1), sample(2)], &runs);
            write_series(&mut out, id, &series).unwrap();
        }
        write_trailer(&mut out, 2).unwrap();
        let mut back = Vec::new();
        let (saved_at, n) = read_series(&mut &out[..], |r| back.push(r)).unwrap();
        assert_eq!((saved_at, n), (1_000, 2));
        assert_eq!(back[1].meta, "w2");
        assert_eq!(back[1].samples.len(), 2);
        assert_eq!(back[1].runs, runs);
        // Neither file reads as the other.
        assert!(matches!(read_all(&out), Err(FormatError::Corrupt(_))));
        let registry = file(&[(Meta::of(&fresh()), vec![], vec![])]);
        assert!(matches!(
            read_series(&mut &registry[..], |_| {}),
            Err(FormatError::Corrupt(_))
        ));
        for cut in 0..out.len() {
            assert!(
                matches!(
                    read_series(&mut &out[..cut], |_| {}),
                    Err(FormatError::Corrupt(_))
                ),
                "cut at {cut}"
            );
        }
        let mut bad_id = out.clone();
        bad_id[24] = 0xff;
        assert!(matches!(
            read_series(&mut &bad_id[..], |_| {}),
            Err(FormatError::Corrupt(_))
        ));
    }
}
