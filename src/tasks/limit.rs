//! Limits on dispatch, per task type and per `concurrency_key` (a tenant,
//! a customer): at most `concurrency` held (assigned or running) at once,
//! and at most `rate` started per `per_ms` (a token bucket: `rate` tokens,
//! refilled evenly over `per_ms`). A key limit named `*` applies to each
//! key on its own. Changed at run time through `/api/limits`; kept in the
//! journal, or in cluster mode in the database, where every node's claim
//! counts the cluster's held tasks under a lock on the limits.

use super::task::{BadField, Task, valid_key};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The most a limit may say: tasks at once, or started per interval.
pub const MAX_LIMIT: u64 = 1_000_000;
/// Limits kept at most.
pub const MAX_LIMITS: usize = 10_000;

/// What a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Tasks of this type.
    Type(String),
    /// Tasks with this `concurrency_key`; `*`: each key on its own.
    ConcurrencyKey(String),
}

impl Scope {
    /// The scope as the database keys it: `type:NAME`, `key:NAME`.
    pub fn text(&self) -> String {
        match self {
            Scope::Type(t) => format!("type:{t}"),
            Scope::ConcurrencyKey(k) => format!("key:{k}"),
        }
    }

    pub fn from_text(s: &str) -> Option<Scope> {
        match s.split_once(':')? {
            ("type", t) => Some(Scope::Type(t.to_string())),
            ("key", k) => Some(Scope::ConcurrencyKey(k.to_string())),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Held at once, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// Started per `per_ms`, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    #[serde(default = "second")]
    pub per_ms: u64,
}

fn second() -> u64 {
    1000
}

/// One limit as `/api/limits` shows and takes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct View {
    #[serde(flatten)]
    pub scope: Scope,
    #[serde(flatten)]
    pub limit: Limit,
    /// Held now under it (for `*`: the most under one key).
    pub held: u64,
}

/// Read a `PUT /api/limits` body: a scope (`type` or `concurrency_key`),
/// and `concurrency` and `rate` (with `per`, a duration such as `1s`, or
/// `per_ms`); both null or absent removes the limit.
pub fn parse(body: &[u8]) -> Result<(Scope, Option<Limit>), BadField> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| BadField("body", format!("not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(BadField("body", "a limit is one JSON object".into()));
    };
    let scope = match (m.get("type"), m.get("concurrency_key")) {
        (Some(Value::String(t)), None) if !t.is_empty() && t.len() <= 128 => Scope::Type(t.clone()),
        (None, Some(Value::String(k))) if valid_key(k) => Scope::ConcurrencyKey(k.clone()),
        (Some(_), None) => return Err(BadField("type", "a task type, 1-128 bytes".into())),
        (None, Some(_)) => {
            return Err(BadField(
                "concurrency_key",
                "1-255 printable ASCII characters, or * for each key".into(),
            ));
        }
        _ => {
            return Err(BadField(
                "type",
                "name either a type or a concurrency_key".into(),
            ));
        }
    };
    let count = |k: &'static str| match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
            _ => Err(BadField(k, format!("a whole number from 1 to {MAX_LIMIT}"))),
        },
    };
    let concurrency = count("concurrency")?;
    let rate = count("rate")?;
    let per_ms = match (m.get("per"), m.get("per_ms")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => 1000,
        (Some(Value::String(p)), None) => crate::config::units::parse_duration(p)
            .ok()
            .map(|d| d.as_millis() as u64)
            .filter(|ms| (1..=86_400_000).contains(ms))
            .ok_or_else(|| BadField("per", "a duration from 1ms to 1d, such as 1s".into()))?,
        (None, Some(v)) => v
            .as_u64()
            .filter(|ms| (1..=86_400_000).contains(ms))
            .ok_or_else(|| BadField("per_ms", "1 to 86400000".into()))?,
        _ => return Err(BadField("per", "per or per_ms, a duration".into())),
    };
    let limit = (concurrency.is_some() || rate.is_some()).then_some(Limit {
        concurrency,
        rate,
        per_ms,
    });
    Ok((scope, limit))
}

/// A token bucket: tokens now, and when it was last filled.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: u64,
}

/// The limits, what is held under each, and their buckets.
#[derive(Default)]
pub struct Limits {
    by_scope: BTreeMap<Scope, Limit>,
    /// Held tasks by type and by key.
    held_type: HashMap<String, u64>,
    held_key: HashMap<String, u64>,
    /// By the scope a start is counted under (`*` limits: per key).
    buckets: HashMap<Scope, Bucket>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_scope.len()
    }

    pub fn set(&mut self, scope: Scope, limit: Option<Limit>) {
        self.buckets.retain(|s, _| match (&scope, s) {
            (Scope::ConcurrencyKey(k), Scope::ConcurrencyKey(_)) if k == "*" => false,
            _ => *s != scope,
        });
        match limit {
            Some(l) => self.by_scope.insert(scope, l),
            None => self.by_scope.remove(&scope),
        };
    }

    pub fn all(&self) -> impl Iterator<Item = (&Scope, &Limit)> {
        self.by_scope.iter()
    }

    pub fn views(&self) -> Vec<View> {
        self.by_scope
            .iter()
            .map(|(s, l)| View {
                scope: s.clone(),
                limit: *l,
                held: match s {
                    Scope::Type(t) => self.held_type.get(t).copied().unwrap_or(0),
                    Scope::ConcurrencyKey(k) if k == "*" => {
                        self.held_key.values().copied().max().unwrap_or(0)
                    }
                    Scope::ConcurrencyKey(k) => self.held_key.get(k).copied().unwrap_or(0),
                },
            })
            .collect()
    }

    /// A task began (`+1`) or stopped (`-1`) being held.
    pub fn held(&mut self, t: &Task, delta: i64) {
        let bump = |m: &mut HashMap<String, u64>, k: &str| {
            let n = m.entry(k.to_string()).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                m.remove(k);
            }
        };
        bump(&mut self.held_type, &t.kind);
        if let Some(k) = &t.concurrency_key {
            bump(&mut self.held_key, k);
        }
    }

    /// The limits over `t`, and the scope a start of it is counted under.
    fn over<'a>(&'a self, t: &'a Task) -> impl Iterator<Item = (Scope, &'a Limit, u64)> + 'a {
        let by_type = self.by_scope.get(&Scope::Type(t.kind.clone())).map(|l| {
            let held = self.held_type.get(&t.kind).copied().unwrap_or(0);
            (Scope::Type(t.kind.clone()), l, held)
        });
        let by_key = t.concurrency_key.iter().flat_map(move |k| {
            let held = self.held_key.get(k).copied().unwrap_or(0);
            let own = Scope::ConcurrencyKey(k.clone());
            let exact = self.by_scope.get(&own).map(|l| (own.clone(), l, held));
            let each = self
                .by_scope
                .get(&Scope::ConcurrencyKey("*".into()))
                .map(|l| (own.clone(), l, held));
            exact.into_iter().chain(each)
        });
        by_type.into_iter().chain(by_key)
    }

    fn tokens(&self, scope: &Scope, l: &Limit, now_ms: u64) -> f64 {
        let Some(rate) = l.rate else {
            return f64::INFINITY;
        };
        let full = rate as f64;
        self.buckets.get(scope).map_or(full, |b| {
            let since = now_ms.saturating_sub(b.at) as f64;
            (b.tokens + since * full / l.per_ms as f64).min(full)
        })
    }

    /// Whether `t` may start now.
    pub fn admits(&self, t: &Task, now_ms: u64) -> bool {
        if self.by_scope.is_empty() {
            return true;
        }
        self.over(t).all(|(scope, l, held)| {
            l.concurrency.is_none_or(|c| held < c) && self.tokens(&scope, l, now_ms) >= 1.0
        })
    }

    /// Whether no task of `kind` may start now, whatever its key: its
    /// type's queue need not be read.
    pub fn type_closed(&self, kind: &str, now_ms: u64) -> bool {
        let scope = Scope::Type(kind.to_string());
        self.by_scope.get(&scope).is_some_and(|l| {
            let held = self.held_type.get(kind).copied().unwrap_or(0);
            l.concurrency.is_some_and(|c| held >= c) || self.tokens(&scope, l, now_ms) < 1.0
        })
    }

    /// Cluster mode: what is held under each type and key, as the
    /// database counted it.
    pub fn set_held(&mut self, by_type: HashMap<String, u64>, by_key: HashMap<String, u64>) {
        self.held_type = by_type;
        self.held_key = by_key;
    }

    /// Cluster mode: a bucket as the database keeps it.
    pub fn set_bucket(&mut self, scope: Scope, tokens: f64, at: u64) {
        self.buckets.insert(scope, Bucket { tokens, at });
    }

    /// The buckets, to write back: scope, tokens, when.
    pub fn buckets(&self) -> impl Iterator<Item = (&Scope, f64, u64)> {
        self.buckets.iter().map(|(s, b)| (s, b.tokens, b.at))
    }

    /// The types no task of which may start now.
    pub fn closed_types(&self, now_ms: u64) -> Vec<String> {
        self.by_scope
            .keys()
            .filter_map(|s| match s {
                Scope::Type(t) if self.type_closed(t, now_ms) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// `t` starts: a token from each bucket over it.
    pub fn started(&mut self, t: &Task, now_ms: u64) {
        if self.by_scope.is_empty() {
            return;
        }
        let taken: Vec<(Scope, f64)> = self
            .over(t)
            .filter(|(_, l, _)| l.rate.is_some())
            .map(|(s, l, _)| {
                let left = self.tokens(&s, l, now_ms) - 1.0;
                (s, left)
            })
            .collect();
        for (s, left) in taken {
            self.buckets.insert(
                s,
                Bucket {
                    tokens: left.max(0.0),
                    at: now_ms,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::{TaskId, parse_submit};

    fn task(body: &str) -> Task {
        parse_submit(body.as_bytes(), TaskId(1), 0).unwrap()
    }

    #[test]
    fn concurrency_and_rate_per_type_and_key() {
        let mut l = Limits::default();
        let (s, lim) = parse(br#"{"type":"scan","concurrency":2}"#).unwrap();
        l.set(s, lim);
        let (s, lim) = parse(br#"{"concurrency_key":"*","rate":2,"per":"1s"}"#).unwrap();
        l.set(s, lim);
        let a = task(r#"{"type":"scan","concurrency_key":"acme"}"#);
        let b = task(r#"{"type":"scan","concurrency_key":"bolt"}"#);
        assert!(l.admits(&a, 0));
        l.started(&a, 0);
        l.held(&a, 1);
        l.started(&a, 0);
        l.held(&a, 1);
        assert!(!l.admits(&b, 0), "the type holds 2");
        assert!(l.type_closed("scan", 0));
        l.held(&a, -1);
        assert!(l.admits(&b, 0), "bolt has its own bucket");
        assert!(!l.admits(&a, 0), "acme took both tokens");
        assert!(l.admits(&a, 500), "one back after half a second");
        let other = task(r#"{"type":"resize"}"#);
        assert!(l.admits(&other, 0));
        let v = l.views();
        assert_eq!(v.len(), 2);
        l.set(Scope::Type("scan".into()), None);
        assert!(!l.type_closed("scan", 0));
    }

    #[test]
    fn bad_limits_name_their_field() {
        for (body, field) in [
            (&br#"{"concurrency":2}"#[..], "type"),
            (br#"{"type":"a","concurrency":0}"#, "concurrency"),
            (br#"{"type":"a","rate":-1}"#, "rate"),
            (br#"{"type":"a","rate":1,"per":"soon"}"#, "per"),
            (br#"{"concurrency_key":"","rate":1}"#, "concurrency_key"),
            (br#"{"type":"a","concurrency_key":"b"}"#, "type"),
            (b"[]", "body"),
        ] {
            assert_eq!(
                parse(body).unwrap_err().0,
                field,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse(br#"{"type":"a"}"#).unwrap().1,
            None,
            "nothing: removed"
        );
    }
}
