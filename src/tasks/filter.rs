//! Which tasks a search or a bulk action means: by state, type, worker,
//! label, created and finished ranges, and a text match on id, type and
//! error. `GET /api/tasks` reads one from its query string,
//! `POST /api/tasks/bulk` from its body's `filter`; both the same way.

use super::task::{BadField, State, Task};
use serde_json::{Map, Value};

/// Longest text match, in bytes.
pub const MAX_Q: usize = 256;

/// What a task must be to match; an empty filter matches every task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    /// Any of these states (none: any state).
    pub states: Vec<State>,
    pub kind: Option<String>,
    pub worker: Option<String>,
    /// Every one of these among the task's `labels`.
    pub labels: Vec<(String, String)>,
    /// Unix ms, inclusive.
    pub created_after: Option<u64>,
    pub created_before: Option<u64>,
    pub finished_after: Option<u64>,
    pub finished_before: Option<u64>,
    /// In the id, the type or the error, ASCII case ignored.
    pub q: Option<String>,
}

/// The keys a filter has, as the query string and a body's `filter` name
/// them.
pub const KEYS: &[&str] = &[
    "state",
    "type",
    "worker_id",
    "label",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
    "q",
];

impl Filter {
    /// Read a filter from its keys: `get(key)` is the text given for
    /// `key`, if any. `state` is one state or several, comma-separated;
    /// `label` is `key:value`, several comma-separated; times are RFC
    /// 3339 or Unix ms.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Filter, BadField> {
        let mut f = Filter::default();
        if let Some(s) = get("state") {
            for one in s.split(',').filter(|s| !s.is_empty()) {
                f.states.push(State::parse(one).ok_or_else(|| {
                    BadField("state", format!("{one:?} is not a state: {}", states()))
                })?);
            }
        }
        f.kind = get("type").filter(|s| !s.is_empty());
        f.worker = get("worker_id").filter(|s| !s.is_empty());
        if let Some(l) = get("label") {
            for pair in l.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = pair
                    .split_once(':')
                    .ok_or_else(|| BadField("label", format!("{pair:?}: a label is key:value")))?;
                f.labels.push((k.to_string(), v.to_string()));
            }
        }
        f.created_after = time("created_after", get("created_after"))?;
        f.created_before = time("created_before", get("created_before"))?;
        f.finished_after = time("finished_after", get("finished_after"))?;
        f.finished_before = time("finished_before", get("finished_before"))?;
        if let Some(q) = get("q").filter(|s| !s.is_empty()) {
            if q.len() > MAX_Q {
                return Err(BadField("q", format!("at most {MAX_Q} bytes")));
            }
            f.q = Some(q.to_ascii_lowercase());
        }
        Ok(f)
    }

    /// Read a filter from a JSON object with the same keys (a `label`
    /// may also be an object of key to value). Unknown keys are refused.
    pub fn from_json(m: &Map<String, Value>) -> Result<Filter, BadField> {
        for k in m.keys() {
            if !KEYS.contains(&k.as_str()) {
                return Err(BadField(
                    "filter",
                    format!("unknown key {k:?}: one of {}", KEYS.join(", ")),
                ));
            }
        }
        let text = |k: &str| match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if k.ends_with("_after") || k.ends_with("_before") => {
                Ok(Some(n.to_string()))
            }
            Some(Value::Array(a)) if k == "state" => a
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(v.join(",")))
                .ok_or_else(|| BadField("state", "a list of states as text".into())),
            Some(Value::Object(o)) if k == "label" => o
                .iter()
                .map(|(k, v)| v.as_str().map(|v| format!("{k}:{v}")))
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(v.join(",")))
                .ok_or_else(|| BadField("label", "label values are text".into())),
            Some(_) => Err(BadField(
                match k {
                    "state" => "state",
                    "type" => "type",
                    "worker_id" => "worker_id",
                    "label" => "label",
                    "q" => "q",
                    _ => "filter",
                },
                format!("{k}: not a value it can be"),
            )),
        };
        let mut given = Vec::new();
        for k in KEYS {
            given.push((*k, text(k)?));
        }
        Filter::read(|k| {
            given
                .iter()
                .find(|(g, _)| *g == k)
                .and_then(|(_, v)| v.clone())
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, t: &Task) -> bool {
        let p = &t.progress;
        let within = |v: Option<u64>, after: Option<u64>, before: Option<u64>| {
            (after.is_none() && before.is_none())
                || v.is_some_and(|v| after.is_none_or(|a| v >= a) && before.is_none_or(|b| v <= b))
        };
        (self.states.is_empty() || self.states.contains(&p.state))
            && self.kind.as_deref().is_none_or(|k| t.kind == k)
            && self
                .worker
                .as_deref()
                .is_none_or(|w| p.worker_id.as_deref() == Some(w))
            && self
                .labels
                .iter()
                .all(|(k, v)| t.target.labels.get(k).is_some_and(|have| have == v))
            && within(Some(t.created_at), self.created_after, self.created_before)
            && within(p.finished_at, self.finished_after, self.finished_before)
            && self.q.as_deref().is_none_or(|q| {
                t.id.to_string().contains(q)
                    || t.kind.to_ascii_lowercase().contains(q)
                    || p.error
                        .as_deref()
                        .is_some_and(|e| e.to_ascii_lowercase().contains(q))
            })
    }
}

fn states() -> String {
    State::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time as a filter takes it: RFC 3339, or Unix ms.
fn time(field: &'static str, v: Option<String>) -> Result<Option<u64>, BadField> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(ms));
    }
    let at: jiff::Timestamp = v.parse().map_err(|_| {
        BadField(
            field,
            format!("{v:?}: an RFC 3339 time like 2026-12-02T10:00:00Z, or Unix ms"),
        )
    })?;
    Ok(Some(u64::try_from(at.as_millisecond()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::{TaskId, parse_submit};

    fn read(pairs: &[(&str, &str)]) -> Result<Filter, BadField> {
        Filter::read(|k| {
            pairs
                .iter()
                .find(|(g, _)| *g == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn a_filter_matches_what_it_names() {
        let mut t = parse_submit(
            br#"{"type":"Resize","labels":{"region":"eu","gpu":"a100"}}"#,
            TaskId(0xabc),
            1_000,
        )
        .unwrap();
        t.progress.state = State::Failed;
        t.progress.finished_at = Some(5_000);
        t.progress.error = Some("Out of memory".into());
        let yes = [
            vec![],
            vec![("state", "failed")],
            vec![("state", "dead,failed")],
            vec![("type", "Resize")],
            vec![("label", "region:eu")],
            vec![("label", "region:eu,gpu:a100")],
            vec![("created_after", "1000"), ("created_before", "1000")],
            vec![("finished_after", "1970-01-01T00:00:04Z")],
            vec![("q", "MEMORY")],
            vec![("q", "resize")],
            vec![("q", "abc")],
        ];
        for f in yes {
            assert!(read(&f).unwrap().matches(&t), "{f:?}");
        }
        let no = [
            vec![("state", "queued")],
            vec![("type", "resize")],
            vec![("worker_id", "w1")],
            vec![("label", "region:us")],
            vec![("label", "zone:a")],
            vec![("created_after", "1001")],
            vec![("finished_before", "4999")],
            vec![("q", "disk")],
        ];
        for f in no {
            assert!(!read(&f).unwrap().matches(&t), "{f:?}");
        }
        // A task not finished is outside any finished range.
        t.progress.finished_at = None;
        assert!(!read(&[("finished_after", "0")]).unwrap().matches(&t));
    }

    #[test]
    fn bad_filters_name_their_field() {
        for (pairs, field) in [
            (vec![("state", "sleeping")], "state"),
            (vec![("label", "region")], "label"),
            (vec![("created_after", "yesterday")], "created_after"),
            (
                vec![("finished_before", "2026-13-01T00:00:00Z")],
                "finished_before",
            ),
        ] {
            assert_eq!(read(&pairs).unwrap_err().0, field, "{pairs:?}");
        }
        let long = "q".repeat(MAX_Q + 1);
        assert_eq!(read(&[("q", &long)]).unwrap_err().0, "q");
    }

    #[test]
    fn a_json_filter_reads_as_the_query_does() {
        let v: Value = serde_json::json!({
            "state": ["dead", "failed"],
            "label": {"region": "eu"},
            "created_after": 5,
            "q": "oom"
        });
        let f = Filter::from_json(v.as_object().unwrap()).unwrap();
        assert_eq!(
            f,
            read(&[
                ("state", "dead,failed"),
                ("label", "region:eu"),
                ("created_after", "5"),
                ("q", "oom")
            ])
            .unwrap()
        );
        let v = serde_json::json!({"colour": "red"});
        assert_eq!(
            Filter::from_json(v.as_object().unwrap()).unwrap_err().0,
            "filter"
        );
        let v = serde_json::json!({"type": 7});
        assert_eq!(
            Filter::from_json(v.as_object().unwrap()).unwrap_err().0,
            "type"
        );
    }
}
