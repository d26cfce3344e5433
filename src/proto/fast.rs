//! The common frame, a heartbeat of plain fields, decoded without building
//! a `serde_json::Value` tree: keys and strings are borrowed from the input
//! and numbers are read as [`serde_json::Number`], exactly as the tree
//! would hold them. Anything else (another type, a nested field, a key
//! given twice, an escaped string, a value out of range, any syntax error)
//! returns `None` and takes the general path, which decides and explains.
//! So the fast path only ever agrees with the general one; the tests check
//! that on generated frames.

use super::decode::in_range;
use super::frame::{Heartbeat, MAX_CPU_PERCENT, MAX_TEXT, Reported};
use super::id::{WorkerId, check_worker_id};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use std::fmt;

/// The fields this path reads; any other field the general path
/// reads sends the frame there.
const FIELDS: [&str; 9] = [
    "type",
    "worker_id",
    "seq",
    "status",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "queue_depth",
    "token",
];

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
                if matches!(
                    key,
                    "resource_usage" | "current_job" | "running_tasks" | "labels"
                ) {
                    return Ok(None);
                }
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
            ("labels", &[r#"{"a":"b"}"#, "null", "[]"]),
            ("current_job", &["null", r#"{"id":"j1"}"#]),
            ("running_tasks", &["[]", "null"]),
            ("resource_usage", &[r#"{"rss_mb":5}"#, "null"]),
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

    #[test]
    fn a_plain_heartbeat_takes_the_fast_path() {
        let text = r#"{"type":"heartbeat","worker_id":"w1","seq":3,"status":"working","cpu_usage":12.5,"memory_usage":3.2,"queue_depth":4,"pad":"xx"}"#;
        let beat = heartbeat(text).expect("fast path");
        assert_eq!(Some(Frame::Heartbeat(beat)), general(text));
    }
}
