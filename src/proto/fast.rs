//! The common frame, a heartbeat as workers send it (plain fields and the
//! nested `resource_usage`, `current_job`, `labels` and `running_tasks`),
//! decoded without building a `serde_json::Value` tree for the frame: keys
//! and strings are borrowed from the input and numbers are read as
//! [`serde_json::Number`], exactly as the tree would hold them; only the
//! entries of `running_tasks`, kept as values, are trees. Anything else
//! (another type, a key given twice at any depth, an escaped string, a
//! value out of range or of another type, any syntax error) returns `None`
//! and takes the general path, which decides and explains.
//! So the fast path only ever agrees with the general one; the tests check
//! that on generated frames.

use super::decode::in_range;
use super::frame::{
    CurrentJob, Heartbeat, Labels, MAX_CPU_PERCENT, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS,
    MAX_RUNNING_TASKS, MAX_TEXT, Reported, ResourceUsage,
};
use super::id::{WorkerId, check_worker_id};
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use std::fmt;

/// The fields this path reads; any other field is checked and ignored,
/// as the general path ignores it.
const FIELDS: [&str; 13] = [
    "type",
    "worker_id",
    "seq",
    "status",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "queue_depth",
    "token",
    "resource_usage",
    "current_job",
    "running_tasks",
    "labels",
];

/// The fields of `resource_usage` the general path reads.
const USAGE: [&str; 9] = [
    "rss_mb",
    "heap_used_mb",
    "heap_total_mb",
    "external_mb",
    "peak_rss_mb",
    "threads",
    "fds",
    "io_read_bytes",
    "io_write_bytes",
];

/// The fields of `current_job` the general path reads.
const JOB: [&str; 4] = ["id", "type", "files", "started_at"];

pub fn heartbeat(text: &str) -> Option<Heartbeat> {
    let mut de = serde_json::Deserializer::from_str(text);
    let beat = de.deserialize_map(Beat).ok()??;
    de.end().ok()?;
    Some(beat)
}

struct Beat;

/// A number as the general path reads it: `null` is absent.
fn float(n: Option<Number>, max: f64) -> Option<Option<f64>> {
    match n {
        None => Some(None),
        Some(n) => {
            let x = n.as_f64()?;
            in_range(x, max).then_some(Some(x))
        }
    }
}

fn whole(n: Option<Number>) -> Option<Option<u64>> {
    match n {
        None => Some(None),
        Some(n) => Some(Some(n.as_u64()?)),
    }
}

/// Inside a nested object, "not for this path" is an error: it ends the
/// parse, and the frame goes to the general path.
fn general<E: Error>() -> E {
    E::custom("for the general path")
}

/// Marks key `i` of a nested object seen; a key given twice (which the
/// general path's tree would keep the last of) is not for this path.
fn once<E: Error>(seen: &mut u16, i: usize) -> Result<(), E> {
    if *seen & (1 << i) != 0 {
        return Err(general());
    }
    *seen |= 1 << i;
    Ok(())
}

/// A borrowed string of at most `max` bytes, or `null`.
fn text<'de, A: MapAccess<'de>>(map: &mut A, max: usize) -> Result<Option<String>, A::Error> {
    match map.next_value::<Option<&str>>()? {
        Some(s) if s.len() > max => Err(general()),
        s => Ok(s.map(str::to_string)),
    }
}

/// `resource_usage`: every figure in MB from 0 up, and whole counts.
struct Usage(ResourceUsage);

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Usage, D::Error> {
        d.deserialize_map(Usage(ResourceUsage::default()))
    }
}

impl<'de> Visitor<'de> for Usage {
    type Value = Usage;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("resource_usage")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Usage, A::Error> {
        let r = &mut self.0;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<&str>()? {
            let Some(i) = USAGE.iter().position(|f| *f == key) else {
                map.next_value::<Checked>()?;
                continue;
            };
            once(&mut seen, i)?;
            let mb = |n: Option<Number>| float(n, f64::MAX).ok_or_else(general);
            let count = |n: Option<Number>| whole(n).ok_or_else(general);
            match i {
                0 => r.rss_mb = mb(map.next_value()?)?,
                1 => r.heap_used_mb = mb(map.next_value()?)?,
                2 => r.heap_total_mb = mb(map.next_value()?)?,
                3 => r.external_mb = mb(map.next_value()?)?,
                4 => r.peak_rss_mb = mb(map.next_value()?)?,
                5 => r.threads = count(map.next_value()?)?,
                6 => r.fds = count(map.next_value()?)?,
                7 => r.io_read_bytes = count(map.next_value()?)?,
                _ => r.io_write_bytes = count(map.next_value()?)?,
            }
        }
        Ok(self)
    }
}

/// `current_job`: a job id is text or a number (kept as its text).
struct Job(CurrentJob);

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Job, D::Error> {
        d.deserialize_map(Job(CurrentJob::default()))
    }
}

impl<'de> Visitor<'de> for Job {
    type Value = Job;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("current_job")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Job, A::Error> {
        let j = &mut self.0;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<&str>()? {
            let Some(i) = JOB.iter().position(|f| *f == key) else {
                map.next_value::<Checked>()?;
                continue;
            };
            once(&mut seen, i)?;
            match i {
                0 => j.id = map.next_value::<Option<JobId>>()?.map(|id| id.0),
                1 => j.kind = text(&mut map, MAX_TEXT)?,
                2 => j.files = whole(map.next_value()?).ok_or_else(general)?,
                _ => j.started_at = whole(map.next_value()?).ok_or_else(general)?,
            }
        }
        Ok(self)
    }
}

/// A job id: a string of at most [`MAX_TEXT`] bytes, or a number written
/// as the general path writes it.
struct JobId(String);

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JobId, D::Error> {
        d.deserialize_any(JobIdVisitor)
    }
}

struct JobIdVisitor;

impl<'de> Visitor<'de> for JobIdVisitor {
    type Value = JobId;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a job id")
    }

    fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<JobId, E> {
        if s.len() > MAX_TEXT {
            return Err(general());
        }
        Ok(JobId(s.to_string()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<JobId, E> {
        Ok(JobId(Number::from(n).to_string()))
    }

    fn visit_i64<E>(self, n: i64) -> Result<JobId, E> {
        Ok(JobId(Number::from(n).to_string()))
    }

    fn visit_f64<E: Error>(self, x: f64) -> Result<JobId, E> {
        Number::from_f64(x)
            .map(|n| JobId(n.to_string()))
            .ok_or_else(general)
    }
}

/// `labels`: at most [`MAX_LABELS`] keys of 1-128 bytes, string values of
/// at most 1024.
struct LabelMap(Labels);

impl<'de> Deserialize<'de> for LabelMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LabelMap, D::Error> {
        d.deserialize_map(LabelMap(Labels::new()))
    }
}

impl<'de> Visitor<'de> for LabelMap {
    type Value = LabelMap;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("labels")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<LabelMap, A::Error> {
        while let Some(key) = map.next_key::<&str>()? {
            let value = map.next_value::<&str>()?;
            let fits = !key.is_empty() && key.len() <= MAX_LABEL_KEY;
            if !fits || value.len() > MAX_LABEL_VALUE || self.0.len() == MAX_LABELS {
                return Err(general());
            }
            if self.0.insert(key.to_string(), value.to_string()).is_some() {
                return Err(general());
            }
        }
        Ok(self)
    }
}

impl<'de> Visitor<'de> for Beat {
    /// `None`: not for the fast path.
    type Value = Option<Heartbeat>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a heartbeat object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut beat = Heartbeat::default();
        let (mut typed, mut seen) = (false, 0u16);
        while let Some(key) = map.next_key::<&str>()? {
            let Some(i) = FIELDS.iter().position(|f| *f == key) else {
                map.next_value::<Checked>()?;
                continue;
            };
            if seen & (1 << i) != 0 {
                return Ok(None);
            }
            seen |= 1 << i;
            let ok = match key {
                "type" => {
                    typed = map.next_value::<Option<&str>>()? == Some("heartbeat");
                    typed
                }
                "worker_id" => match map.next_value::<Option<&str>>()? {
                    Some(id) if check_worker_id(id).is_ok() => {
                        beat.worker_id = Some(WorkerId::from(id));
                        true
                    }
                    _ => false,
                },
                "status" => match map.next_value::<Option<&str>>()? {
                    None => true,
                    Some(s) => {
                        beat.status = Reported::parse(s);
                        beat.status.is_some()
                    }
                },
                "seq" => whole(map.next_value()?).map(|v| beat.seq = v).is_some(),
                "queue_depth" => whole(map.next_value()?)
                    .map(|v| beat.queue_depth = v)
                    .is_some(),
                "cpu_usage" => float(map.next_value()?, MAX_CPU_PERCENT)
                    .map(|v| beat.cpu_usage = v)
                    .is_some(),
                "memory_usage" => float(map.next_value()?, 100.0)
                    .map(|v| beat.memory_usage = v)
                    .is_some(),
                "gpu_usage" => float(map.next_value()?, 100.0)
                    .map(|v| beat.gpu_usage = v)
                    .is_some(),
                "token" => match map.next_value::<Option<&str>>()? {
                    None => true,
                    Some(t) if t.len() <= MAX_TEXT => {
                        beat.token = Some(t.to_string());
                        true
                    }
                    Some(_) => false,
                },
                "resource_usage" => {
                    beat.resource_usage = map.next_value::<Option<Usage>>()?.map(|u| u.0);
                    true
                }
                // `null` clears the job: present, and empty.
                "current_job" => {
                    beat.current_job = Some(map.next_value::<Option<Job>>()?.map(|j| j.0));
                    true
                }
                "labels" => {
                    beat.labels = map.next_value::<Option<LabelMap>>()?.map(|l| l.0);
                    true
                }
                "running_tasks" => match map.next_value::<Option<Vec<Value>>>()? {
                    Some(list) if list.len() > MAX_RUNNING_TASKS => false,
                    Some(list) if !list.iter().all(Value::is_object) => false,
                    list => {
                        beat.running_tasks = list;
                        true
                    }
                },
                // Not in FIELDS: cannot happen; the general path decides.
                _ => false,
            };
            if !ok {
                return Ok(None);
            }
        }
        Ok(typed.then_some(beat))
    }
}

/// A value of a field this path does not read, parsed as strictly as the
/// general path's `Value` tree parses it (escapes decoded, numbers in
/// range) but kept nowhere. `IgnoredAny` would skip it unchecked, and the
/// fast path would then accept a frame the general path refuses.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Frame;
    use crate::proto::decode::general;

    /// Generated frames around the fast path's edges: whenever it decodes
    /// one, the general path must decode the very same frame.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let values: &[(&str, &[&str])] = &[
            (
                "type",
                &[
                    r#""heartbeat""#,
                    r#""hello""#,
                    "null",
                    "7",
                    r#""heart\u0062eat""#,
                ],
            ),
            (
                "worker_id",
                &[
                    r#""w-1""#,
                    r#""registry""#,
                    r#""a b""#,
                    "null",
                    "12",
                    r#""w\u002d1""#,
                ],
            ),
            (
                "seq",
                &[
                    "0",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-1",
                    "1.0",
                    "1e3",
                    "null",
                    r#""1""#,
                ],
            ),
            (
                "status",
                &[
                    r#""idle""#,
                    r#""working""#,
                    r#""error""#,
                    r#""busy""#,
                    "null",
                    "1",
                ],
            ),
            (
                "cpu_usage",
                &[
                    "0", "12.5", "409600", "409600.1", "-0.0", "-1", "1e308", "null", "true",
                ],
            ),
            (
                "memory_usage",
                &["100", "100.0000001", "3", "null", r#""3""#],
            ),
            ("gpu_usage", &["0.5", "101", "null"]),
            ("queue_depth", &["0", "7", "7.5", "null", "-3"]),
            (
                "labels",
                &[
                    r#"{"a":"b"}"#,
                    r#"{"pool":"scan","zone":"eu-1"}"#,
                    r#"{"a":"b","a":"c"}"#,
                    r#"{"":"b"}"#,
                    r#"{"a":1}"#,
                    r#"{"a":null}"#,
                    r#"{"a\u0062":"b"}"#,
                    r#"{"a":"\u0062"}"#,
                    "null",
                    "[]",
                ],
            ),
            (
                "current_job",
                &[
                    "null",
                    r#"{"id":"j1"}"#,
                    r#"{"id":789,"type":"scan","files":1000,"started_at":1733808005000}"#,
                    r#"{"id":-3}"#,
                    r#"{"id":1.5e3}"#,
                    r#"{"id":true}"#,
                    r#"{"id":null,"type":null}"#,
                    r#"{"id":"a","id":"b"}"#,
                    r#"{"files":-1}"#,
                    r#"{"files":1.0}"#,
                    r#"{"started_at":"1"}"#,
                    r#"{"type":7}"#,
                    r#"{"other":[1,{"x":2}]}"#,
                    r#""x""#,
                    "[]",
                ],
            ),
            (
                "running_tasks",
                &[
                    "[]",
                    "null",
                    r#"[{"task_id":"t1"},{"task_id":"t2","n":{"a":1,"a":2}}]"#,
                    "[1]",
                    r#"[{"s":"\ud800"}]"#,
                    "{}",
                ],
            ),
            (
                "resource_usage",
                &[
                    r#"{"rss_mb":5}"#,
                    r#"{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5}"#,
                    r#"{"peak_rss_mb":1,"threads":6,"fds":7,"io_read_bytes":8,"io_write_bytes":9}"#,
                    r#"{"rss_mb":-2}"#,
                    r#"{"rss_mb":null,"threads":null}"#,
                    r#"{"threads":1.5}"#,
                    r#"{"threads":-1}"#,
                    r#"{"rss_mb":"5"}"#,
                    r#"{"rss_mb":1,"rss_mb":2}"#,
                    r#"{"unknown":{"deep":[1]}}"#,
                    "null",
                    "[]",
                    "3",
                ],
            ),
            (
                "pad",
                &[
                    r#""xxxx""#,
                    r#"{"deep":[1,{"x":null}]}"#,
                    "[1,2",
                    "tru",
                    r#""\ud800""#,
                    r#"["\udc00"]"#,
                    "1e999",
                    r#"{"n":-1e400}"#,
                ],
            ),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut fast_taken, mut cases) = (0, 0);
        for _ in 0..20_000 {
            let mut fields = vec![r#""type":"heartbeat""#.to_string()];
            fields.push(r#""worker_id":"w-1""#.to_string());
            for _ in 0..next(8) {
                let (k, vs) = values[next(values.len())];
                fields.push(format!(r#""{k}":{}"#, vs[next(vs.len())]));
            }
            // Shuffle, and now and then drop the leading type or id.
            for i in (1..fields.len()).rev() {
                fields.swap(i, next(i + 1));
            }
            if next(10) == 0 {
                fields.remove(next(fields.len()));
            }
            let mut text = format!(
                "{{{}}}",
                fields.join(if next(4) == 0 { " , " } else { "," })
            );
            match next(20) {
                0 => text.push_str(" x"),
                1 => text.push_str("\n "),
                _ => {}
            }
            cases += 1;
            let general = general(&text);
            if let Some(beat) = heartbeat(&text) {
                fast_taken += 1;
                assert_eq!(Some(Frame::Heartbeat(beat)), general, "{text}");
            }
        }
        // The generator reaches both paths.
        assert!(
            fast_taken > cases / 10,
            "fast path took {fast_taken} of {cases}"
        );
        assert!(
            fast_taken < cases * 9 / 10,
            "fast path took {fast_taken} of {cases}"
        );
    }

    /// A heartbeat shaped as workers send it: the nested objects too.
    #[test]
    fn a_full_heartbeat_takes_the_fast_path() {
        let text = r#"{"type":"heartbeat","worker_id":"w1","seq":3,"status":"working","cpu_usage":12.5,"memory_usage":3.2,"queue_depth":4,"resource_usage":{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5},"current_job":{"id":789,"type":"scan","files":1000,"started_at":1733808005000},"running_tasks":[{"task_id":"t1"}],"labels":{"pool":"scan","zone":"eu-1"}}"#;
        let beat = heartbeat(text).expect("fast path");
        assert_eq!(
            beat.current_job.clone().unwrap().unwrap().id.as_deref(),
            Some("789")
        );
        assert_eq!(beat.labels.as_ref().unwrap()["zone"], "eu-1");
        assert_eq!(
            beat.resource_usage.as_ref().unwrap().heap_used_mb,
            Some(80.25)
        );
        assert_eq!(Some(Frame::Heartbeat(beat)), general(text));
        // `null` clears the job on both paths.
        let cleared = r#"{"type":"heartbeat","worker_id":"w1","current_job":null}"#;
        let beat = heartbeat(cleared).expect("fast path");
        assert_eq!(beat.current_job, Some(None));
        assert_eq!(Some(Frame::Heartbeat(beat)), general(cleared));
    }

    #[test]
    fn a_plain_heartbeat_takes_the_fast_path() {
        let text = r#"{"type":"heartbeat","worker_id":"w1","seq":3,"status":"working","cpu_usage":12.5,"memory_usage":3.2,"queue_depth":4,"pad":"xx"}"#;
        let beat = heartbeat(text).expect("fast path");
        assert_eq!(Some(Frame::Heartbeat(beat)), general(text));
    }
}
